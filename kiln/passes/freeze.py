"""``kiln.freeze``: a module's methods as self-contained graphs with its state baked in.

TorchScript's ``torch.jit.freeze`` for Kiln modules.  Freezing takes an eval-mode
:class:`~kiln.runtime.module.ScriptModule` and returns a *new* one whose ``forward`` (and each
method named in ``preserved_attrs``) runs a graph in which

1. submodule calls are inlined (:meth:`ScriptModule._kiln_inline`);
2. every ``prim::GetAttr`` chain from ``self`` that reads a parameter, a buffer, the
   ``training`` flag or a plain attribute with a literal value is replaced by a
   ``prim::Constant`` holding a detached *clone* of the value (so the frozen module can never
   write to the original's tensors, and the original can change without affecting it); the
   tensor constants the graphs already had are cloned too;
3. a ``prim::If`` whose condition became a constant is replaced by the branch it takes (this
   is what makes ``kiln.trace(..., respect_mode=True)`` modules freeze to their eval path);
4. the graph passes ``remove_dropout``, ``fold_conv_bn``, ``dce`` and ``inplace_activations`` run.

Before (a traced ``Conv2d`` + ``BatchNorm2d``, inlined)::

    graph(%self : __torch__.Net, %x : Float(1, 3, 8, 8)):
      %conv : __torch__.Conv2d = prim::GetAttr[name="conv"](%self)
      %weight : Float(4, 3, 3, 3) = prim::GetAttr[name="weight"](%conv)
      ...
      %y : Float(1, 4, 6, 6) = aten::conv2d(%x, %weight, %bias, ...)
      %bn : __torch__.BatchNorm2d = prim::GetAttr[name="bn"](%self)
      %running_mean : Float(4) = prim::GetAttr[name="running_mean"](%bn)
      ...
      %z : Float(1, 4, 6, 6) = aten::batch_norm(%y, %weight.1, %bias.1, %running_mean, ...)
      return (%z)

After::

    graph(%self : __torch__.Net, %x : Float(1, 3, 8, 8)):
      %weight : Float(4, 3, 3, 3) = prim::Constant[value=<Tensor>]()
      %bias : Float(4) = prim::Constant[value=<Tensor>]()
      ...
      %y : Float(1, 4, 6, 6) = aten::conv2d(%x, %weight, %bias, ...)
      return (%y)

``self`` stays graph input 0, unused, so frozen methods keep the calling convention of every
other method.  What is *not* folded stays an attribute of the frozen module (a copy of the
original's): names in ``preserved_attrs`` (a dotted name keeps everything under it), members
some frozen method writes (a ``prim::SetAttr``, or an in-place operator on the tensor or on a
value computed from it), and values with no constant form (lists, arbitrary objects).
"""

from __future__ import annotations

import copy
from collections.abc import Iterable, Sequence
from typing import Any, Optional

import torch

from kiln.errors import KilnError
from kiln.ir.graph import Graph, Node, Value, tensor_constants
from kiln.ir.types import AnyType, Type, type_of_value
from kiln.passes import run_pipeline
from kiln.runtime.members import slot_of
from kiln.runtime.module import ScriptModule

Path = tuple[str, ...]

# exact rewrites first, so fold_conv_bn sees batch norms no longer separated by dropout;
# activations go in place last, once folding has settled which results are fresh
OPTIMIZATIONS = ("remove_dropout", "fold_conv_bn", "dce", "inplace_activations")
_EXACT = ("remove_dropout", "dce", "inplace_activations")
_LITERALS = (bool, int, float, complex, str, torch.device, torch.dtype, torch.layout,
             torch.memory_format)


def freeze(mod: ScriptModule, preserved_attrs: Optional[Sequence[str]] = None,
           optimize_numerics: bool = True) -> ScriptModule:
    """A frozen copy of ``mod`` (see the module docstring); ``mod`` itself is not changed.

    ``preserved_attrs`` names methods to freeze besides ``forward`` and attributes to keep
    live.  ``optimize_numerics=False`` skips the rewrites that change results by rounding
    (folding batch norm into convolutions), as ``torch.jit.freeze``'s flag does."""
    _check_freezable(mod)
    preserved = list(preserved_attrs or ())
    _check_preserved(mod, preserved)
    names = [n for n in mod.method_names if n == "forward" or n in preserved]
    if not names:
        raise KilnError(f"freeze: {mod.original_name} has no forward method and preserved_attrs "
                        "names none of its methods; there is nothing to freeze")
    graphs = {name: mod._kiln_inline(name) for name in names}
    mutated: set[Path] = set()
    for graph in graphs.values():
        mutated |= mutated_paths(graph)
    folder = AttributeFolder(mod, [tuple(p.split(".")) for p in preserved] + sorted(mutated))
    for graph in graphs.values():
        folder.fold(graph)
        fold_constant_ifs(graph)
        run_pipeline(graph, OPTIMIZATIONS if optimize_numerics else _EXACT)
    frozen = ScriptModule(mod.qualified_name, mod.original_name)
    frozen.train(False)
    live = {p.split(".")[0] for p in preserved if p not in graphs}
    for graph in graphs.values():
        live |= {path[0] for path in attribute_paths(graph)}
    _copy_members(mod, frozen, sorted(live - {"training"}))
    for name, graph in graphs.items():
        frozen._kiln_define_method(name, graph, mod.__dict__["_kiln_defaults"].get(name))
    frozen.__dict__["_kiln_frozen"] = True     # (past nn.Module.__setattr__) see is_frozen
    return frozen


def is_frozen(mod: Any) -> bool:
    """Whether ``mod`` is the result of :func:`freeze`."""
    return bool(getattr(mod, "__dict__", {}).get("_kiln_frozen", False))


def _check_freezable(mod: Any) -> None:
    if not isinstance(mod, ScriptModule):
        raise KilnError(f"freeze expects a kiln.ScriptModule (from kiln.trace), got "
                        f"{type(mod).__name__}")
    training = [name or "(the module itself)" for name, m in mod.named_modules() if m.training]
    if training:
        raise KilnError("freeze expects a module in eval mode; call .eval() first "
                        f"(in training mode: {', '.join(training[:5])})")


def _check_preserved(mod: ScriptModule, preserved: Iterable[str]) -> None:
    for name in preserved:
        if name in mod.method_names:
            continue
        obj: Any = mod
        for part in name.split("."):
            found, obj = lookup_member(obj, part)
            if not found:
                raise KilnError(f"freeze: preserved attribute {name!r} does not exist on "
                                f"{mod.original_name}")


# -- reading attributes -------------------------------------------------------------------------

def lookup_member(obj: Any, name: str) -> tuple[bool, Any]:
    """``(True, value)`` of member ``name`` of module ``obj`` -- a parameter, buffer, submodule
    or plain attribute (methods are not members) -- else ``(False, None)``."""
    if not isinstance(obj, torch.nn.Module):
        return False, None
    slot = slot_of(obj, name)
    if slot is not None:
        return True, obj.__dict__[slot][name]
    if name in obj.__dict__ and not callable(obj.__dict__[name]):
        return True, obj.__dict__[name]
    return False, None


def attribute_path(v: Value, root: Value) -> Optional[Path]:
    """The names of the ``prim::GetAttr`` chain from ``root`` that produces ``v``, if any."""
    names: list[str] = []
    while v is not root:
        if v.node.kind != "prim::GetAttr":
            return None
        names.append(v.node.attrs["name"])
        v = v.node.inputs[0]
    return tuple(reversed(names))


def attribute_paths(graph: Graph) -> set[Path]:
    """Every attribute path read from ``self`` (graph input 0) in ``graph``."""
    if not graph.inputs:
        return set()
    root = graph.inputs[0]
    paths = (attribute_path(n.output, root) for n in graph.all_nodes() if n.kind == "prim::GetAttr")
    return {p for p in paths if p}


def mutated_paths(graph: Graph) -> set[Path]:
    """Attribute paths that ``graph`` may write: targets of ``prim::SetAttr``, and members read
    by GetAttr that reach a written operator argument.

    Aliasing is approximated conservatively: every result of an operator whose first input
    comes from a member is taken to come from that member too (views and in-place results
    do; other results merely keep the member unfolded)."""
    if not graph.inputs:
        return set()
    root = graph.inputs[0]
    origin: dict[Value, Path] = {}
    written: set[Path] = set()
    for n in graph.all_nodes():
        if n.kind in ("prim::GetAttr", "prim::SetAttr"):
            path = attribute_path(n.inputs[0], root)
            if path is not None and n.kind == "prim::SetAttr":
                written.add((*path, n.attrs["name"]))
            elif path is not None:
                origin[n.output] = (*path, n.attrs["name"])
            continue
        if n.op is None or not n.inputs:
            continue
        for v, arg in zip(n.inputs, n.op.schema.arguments):
            if arg.is_write and v in origin:
                written.add(origin[v])
        source = origin.get(n.inputs[0])
        if source is not None:
            origin.update((o, source) for o in n.outputs)
    return written


# -- folding --------------------------------------------------------------------------------------

class AttributeFolder:
    """Replaces GetAttr chains from ``self`` by constants of the module's current values.

    One folder serves all methods of one freeze, so a tensor read in several places (or by
    several methods, or tied between submodules) becomes one cloned tensor."""

    def __init__(self, mod: ScriptModule, kept: Iterable[Path]) -> None:
        self.mod = mod
        self.kept = {".".join(p) for p in kept}
        self.memo: dict[int, Any] = {}    # id(original value) -> its frozen copy

    def fold(self, graph: Graph) -> bool:
        """Fold every foldable chain in ``graph``; return whether any was."""
        if not graph.inputs:
            return False
        root, changed = graph.inputs[0], False
        for const in tensor_constants(graph):
            # graph copies share tensor constants with the original's graphs
            const.attrs["value"] = self._frozen_copy(const.attrs["value"])
        for node in list(graph.all_nodes()):
            if node.kind != "prim::GetAttr" or node.owner is None:
                continue
            path = attribute_path(node.output, root)
            if path is None or self._is_kept(path):
                continue
            found, value = self._lookup(path)
            if found and _has_constant_form(value):
                _replace_by_constant(node, self._frozen_copy(value))
                changed = True
        return changed

    def _is_kept(self, path: Path) -> bool:
        return any(".".join(path[:i]) in self.kept for i in range(1, len(path) + 1))

    def _lookup(self, path: Path) -> tuple[bool, Any]:
        obj: Any = self.mod
        for name in path:
            found, obj = lookup_member(obj, name)
            if not found:
                return False, None
        return True, obj

    def _frozen_copy(self, value: Any) -> Any:
        if isinstance(value, tuple):
            return tuple(self._frozen_copy(v) for v in value)
        if not isinstance(value, torch.Tensor):
            return value   # literals are immutable
        if id(value) not in self.memo:
            with torch.no_grad():
                self.memo[id(value)] = value.detach().clone()
        return self.memo[id(value)]


def _has_constant_form(value: Any) -> bool:
    if isinstance(value, tuple):
        return all(_has_constant_form(v) for v in value)
    return value is None or isinstance(value, (torch.Tensor, *_LITERALS))


def _constant_type(value: Any, declared: Type) -> Type:
    """The frozen value's own type for tensors (the GetAttr's type recorded requires_grad);
    otherwise the declared one, which may be wider (``int?``) and so fits every use."""
    if isinstance(value, torch.Tensor) or declared == AnyType:
        return type_of_value(value)
    if isinstance(value, tuple) and any(isinstance(v, torch.Tensor) for v in value):
        return type_of_value(value)
    return declared


def _replace_by_constant(node: Node, value: Any) -> None:
    out = node.output
    const = node.graph.create("prim::Constant", (), [_constant_type(value, out.type)],
                              {"value": value})
    const.source, const.scope = node.source, node.scope
    const.insert_before(node)
    const.output.name = out.name
    out.replace_all_uses_with(const.output)
    node.destroy()


def fold_constant_ifs(graph: Graph) -> bool:
    """Replace each ``prim::If`` on a constant condition by the nodes of the branch it takes."""
    changed = False
    for node in list(graph.all_nodes()):
        if node.kind != "prim::If" or node.owner is None:
            continue
        cond = node.inputs[0].node
        if cond.kind != "prim::Constant" or not isinstance(cond.attrs.get("value"), bool):
            continue
        taken = node.blocks[0 if cond.attrs["value"] else 1]
        for inner in list(taken.nodes):
            inner.move_before(node)
        for out, result in zip(node.outputs, taken.outputs):
            out.replace_all_uses_with(result)
        node.destroy()
        changed = True
    return changed


# -- the frozen module's own members ----------------------------------------------------------------

def _copy_members(src: ScriptModule, dst: ScriptModule, names: Iterable[str]) -> None:
    """Give ``dst`` private copies of ``src``'s top-level members ``names``, each of the same
    kind (parameter, buffer, submodule, plain attribute)."""
    memo: dict[int, Any] = {}
    for name in names:
        found, value = lookup_member(src, name)
        if not found:
            continue   # a chain the graph guards or never runs; compiling it reports it
        if name in src._parameters:
            dst.register_parameter(name, None if value is None else torch.nn.Parameter(
                value.detach().clone(), requires_grad=value.requires_grad))
        elif name in src._buffers:
            dst.register_buffer(name, None if value is None else value.detach().clone(),
                                persistent=name not in src._non_persistent_buffers_set)
        elif name in src._modules:
            dst.add_module(name, copy.deepcopy(value, memo))
        else:
            dst._kiln_set_attribute(name, copy.deepcopy(value, memo))
