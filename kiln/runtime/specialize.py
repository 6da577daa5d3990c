"""Specializing a graph to the types seen while it ran: the IR half of the profiling executor.

:class:`Profile` records, for every tensor value of a graph, the type of what it was bound
to in one or more runs of the reference interpreter (``TensorType.of``: dtype, sizes,
strides, device, requires_grad).  Runs that disagree generalize: a property seen with two
values is dropped (a dimension of two sizes becomes ``*``).

:func:`specialize` turns a copy of the graph plus a profile into a specialized graph::

    graph(%x : Tensor):                          graph(%x : Float(2, 3, strides=[3, 1], ...)):
      %0 : int = prim::Constant[value=0]()         %n : int = prim::Constant[value=2]()
      %n : int = aten::size(%x, %0)        ==>     %y : Float(2, 3, ...) = aten::mul(%x, %n)
      %y : Tensor = aten::mul(%x, %n)              return (%y)
      return (%y)

1. every profiled tensor value takes its recorded type (values in blocks that never ran keep
   their declared ones), then ``prim::If``/``prim::Loop`` outputs and loop-carried values are
   widened so that each still covers every value that may flow into it;
2. questions asked of a graph *input* whose answer the profile knows -- ``aten::size``,
   ``dim``, ``numel``, ``len``, ``prim::dtype``, ``prim::device``, ``is_cuda``,
   ``requires_grad``, ``is_floating_point`` -- become constants.  That is only legal because
   the executor then checks, on every call, exactly what was used: each fold adds its
   requirement to the returned :class:`Guard` (the input's rank and the folded sizes, its
   dtype, ...).  Nothing else the specialized graph does relies on the recorded types except
   fusion, whose ``prim::TypeCheck`` checks its own inputs;
3. the caller then optimizes (``default`` pipeline, fusion) and compiles.

Only plain tensors (``torch.Tensor`` or ``Parameter`` exactly) are folded: a subclass may
answer ``size()`` its own way, which the general code would honour.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from typing import Any, Optional

import torch

from kiln.ir.graph import Block, Graph, Node, Value, clone_block_into
from kiln.ir.ops import registry
from kiln.ir.types import AnyType, TensorType
from kiln.passes.cse import AliasSets

PLAIN_TENSORS = (torch.Tensor, torch.nn.Parameter)
_MAX_WIDENING = 16   # rounds; each drops at least one property, so few are ever needed


def generalize(a: TensorType, b: TensorType) -> TensorType:
    """The most precise type describing both ``a`` and ``b``, dimension by dimension."""
    if a == b:
        return a
    return TensorType(a.dtype if a.dtype == b.dtype else None, _dims(a.shape, b.shape),
                      _dims(a.strides, b.strides), a.device if a.device == b.device else None,
                      a.requires_grad if a.requires_grad == b.requires_grad else None)


def _dims(a: Optional[tuple[Optional[int], ...]],
          b: Optional[tuple[Optional[int], ...]]) -> Optional[tuple[Optional[int], ...]]:
    if a is None or b is None or len(a) != len(b):
        return None
    return tuple(x if x == y else None for x, y in zip(a, b))


def _join(a: TensorType, b: TensorType) -> TensorType:
    """A common supertype for control flow: sizes and strides are kept only when equal (the
    IR's subtyping compares them whole)."""
    if a == b:
        return a
    g = generalize(a, b)
    return TensorType(g.dtype, a.shape if a.shape == b.shape else None,
                      a.strides if a.strides == b.strides else None, g.device, g.requires_grad)


@dataclass
class Profile:
    """The tensor types one or more runs bound to the values of one graph."""

    types: dict[Value, TensorType] = field(default_factory=dict)
    odd: set[Value] = field(default_factory=set)   # values seen holding a tensor subclass
    runs: int = 0
    grad_modes: set[bool] = field(default_factory=set)   # grad mode of each run
    requires_grad: bool = False      # some recorded tensor required grad

    @property
    def grad_enabled(self) -> bool:
        """Whether some run had grad mode on."""
        return True in self.grad_modes

    def observe(self, values: Sequence[Value], results: Sequence[Any]) -> None:
        """The interpreter's observer (:data:`kiln.runtime.interpreter.Observer`)."""
        for v, x in zip(values, results):
            if isinstance(x, torch.Tensor) and isinstance(v.type, TensorType):
                self._record(v, x)

    def _record(self, v: Value, x: torch.Tensor) -> None:
        try:
            t = TensorType.of(x)
        except Exception:   # a tensor without sizes or strides (nested, ...): not specialized
            self.odd.add(v)
            return
        if type(x) not in PLAIN_TENSORS:
            self.odd.add(v)
        old = self.types.get(v)
        self.types[v] = t if old is None else generalize(old, t)
        self.requires_grad = self.requires_grad or x.requires_grad

    def merge(self, other: Profile) -> None:
        for v, t in other.types.items():
            old = self.types.get(v)
            self.types[v] = t if old is None else generalize(old, t)
        self.odd |= other.odd
        self.runs += other.runs
        self.grad_modes |= other.grad_modes
        self.requires_grad |= other.requires_grad


# -- guards ---------------------------------------------------------------------------------------

@dataclass(frozen=True)
class InputCheck:
    """What a specialization requires of one tensor input (None / empty: nothing)."""

    index: int
    rank: Optional[int] = None
    dims: tuple[tuple[int, int], ...] = ()      # (dimension, size), sorted
    dtype: Optional[torch.dtype] = None
    device: Optional[torch.device] = None
    requires_grad: Optional[bool] = None
    strides: Optional[tuple[int, ...]] = None

    def describe(self) -> str:
        parts = []
        if self.rank is not None:
            sizes = dict(self.dims)
            parts.append("shape (" + ", ".join(str(sizes.get(d, "*")) for d in range(self.rank)) + ")")
        for name in ("strides", "dtype", "device", "requires_grad"):
            if getattr(self, name) is not None:
                parts.append(f"{name} {getattr(self, name)}")
        return f"input {self.index}: " + ", ".join(parts)


@dataclass(frozen=True)
class Guard:
    """Everything a specialized graph relies on: checks of tensor inputs (plain tensors of the
    given rank, sizes, dtype, ...) and, optionally, the grad mode.  Empty: valid for any call."""

    inputs: tuple[InputCheck, ...] = ()
    grad_enabled: Optional[bool] = None

    @property
    def empty(self) -> bool:
        return not self.inputs and self.grad_enabled is None

    def __str__(self) -> str:
        parts = [c.describe() for c in self.inputs]
        if self.grad_enabled is not None:
            parts.append(f"grad mode {'on' if self.grad_enabled else 'off'}")
        return "; ".join(parts) or "(always)"


@dataclass
class _Needs:
    """What the folds of one input used."""

    dims: set[int] = field(default_factory=set)
    props: set[str] = field(default_factory=set)   # "rank", "dtype", "device", "requires_grad"

    def check(self, index: int, t: TensorType) -> InputCheck:
        shape = t.shape or ()
        uses = self.props
        return InputCheck(index, len(shape) if "rank" in uses or self.dims else None,
                          tuple(sorted((d, int(shape[d] or 0)) for d in self.dims)),
                          t.dtype if "dtype" in uses else None, t.device if "device" in uses else None,
                          t.requires_grad if "requires_grad" in uses else None)


# -- folding questions asked of inputs --------------------------------------------------------------

Fold = tuple[Any, tuple[Any, ...]]   # (the answer, what it used: "rank"/"dtype"/... or a dim)
Folder = Callable[[TensorType, list[Any]], Optional[Fold]]


def _known(shape: Optional[tuple[Optional[int], ...]]) -> Optional[tuple[int, ...]]:
    return None if shape is None or any(d is None for d in shape) else tuple(int(d or 0) for d in shape)


def _fold_sizes(t: TensorType, args: list[Any]) -> Optional[Fold]:
    shape = _known(t.shape)
    return None if shape is None else (list(shape), ("rank", *range(len(shape))))


def _fold_size(t: TensorType, args: list[Any]) -> Optional[Fold]:
    dim = args[1] if len(args) > 1 else None
    if t.shape is None or type(dim) is not int or not -len(t.shape) <= dim < len(t.shape):
        return None   # out of range: the error stays where it happens at run time
    dim %= len(t.shape)
    size = t.shape[dim]
    return None if size is None else (size, ("rank", dim))


def _fold_numel(t: TensorType, args: list[Any]) -> Optional[Fold]:
    shape = _known(t.shape)
    return None if shape is None else (math.prod(shape), ("rank", *range(len(shape))))


def _fold_len(t: TensorType, args: list[Any]) -> Optional[Fold]:
    if not t.shape or t.shape[0] is None:
        return None   # len() of a 0-d tensor raises
    return t.shape[0], ("rank", 0)


def _fold_attr(name: str, answer: Callable[[Any], Any]) -> Folder:
    def fold(t: TensorType, args: list[Any]) -> Optional[Fold]:
        known = getattr(t, name)
        return None if known is None else (answer(known), (name,))
    return fold


_FOLDERS: dict[str, Folder] = {
    "aten::size": _fold_sizes,
    "aten::size.int": _fold_size,
    "aten::dim": lambda t, a: None if t.shape is None else (len(t.shape), ("rank",)),
    "aten::numel": _fold_numel,
    "aten::len.Tensor": _fold_len,
    "prim::dtype": _fold_attr("dtype", lambda d: d),
    "aten::is_floating_point": _fold_attr("dtype", lambda d: d.is_floating_point),
    "prim::device": _fold_attr("device", lambda d: d),
    "prim::is_cuda": _fold_attr("device", lambda d: d.type == "cuda"),
    "prim::is_cpu": _fold_attr("device", lambda d: d.type == "cpu"),
    "prim::requires_grad": _fold_attr("requires_grad", lambda r: r),
}


def fold_input_queries(graph: Graph, known: dict[Value, TensorType]) -> dict[Value, _Needs]:
    """Replace questions about the inputs in ``known`` by their answers; return what each
    input's answers used.  Nothing is folded when the graph may write an input (or an alias
    of one): an in-place op (``unsqueeze_``, ``resize_``...) can change what is asked.  A
    folded size list must be one nothing writes or returns (a constant is one object shared
    by every call)."""
    aliases = AliasSets(graph)
    needs: dict[Value, _Needs] = {}
    if any(aliases.is_written(v) for v in known):
        return needs   # (inputs may be one tensor passed twice: a write to any may resize all)
    for node in list(graph.all_nodes()):
        folder = _FOLDERS.get(node.op.schema.qualified) if node.op is not None else None
        if folder is None or not node.inputs or node.inputs[0] not in known or len(node.outputs) != 1:
            continue
        args = [v.node.attrs.get("value") if v.node.kind == "prim::Constant" else None for v in node.inputs]
        fold = folder(known[node.inputs[0]], args)
        out = node.outputs[0]
        if fold is None or aliases.is_written(out) or aliases.escapes(out):
            continue
        need = needs.setdefault(node.inputs[0], _Needs())
        _replace_with_constant(node, fold[0])
        for used in fold[1]:
            (need.dims.add if isinstance(used, int) else need.props.add)(used)
    return needs


def _replace_with_constant(node: Node, value: Any) -> None:
    out = node.outputs[0]
    const = node.graph.create("prim::Constant", (), [out.type], {"value": value})
    const.source, const.scope = node.source, node.scope
    const.insert_before(node)
    const.outputs[0].name = out.name
    out.replace_all_uses_with(const.outputs[0])
    node.destroy()


# -- the specialized graph ------------------------------------------------------------------------

def copy_with_map(graph: Graph) -> tuple[Graph, dict[Value, Value]]:
    """A copy of ``graph`` and the map from its values to the copy's."""
    g = Graph()
    env: dict[Value, Value] = {}
    for v in graph.inputs:
        env[v] = g.add_input(v.type, v.name)
    clone_block_into(graph.block, g.block, env)
    return g, env


@dataclass
class Specialized:
    """A specialized graph; the guard its folds need; and a guard describing its inputs as
    completely as the profile does (and the grad mode), for code chosen for exactly those."""

    graph: Graph
    guard: Guard
    full_guard: Guard


def full_check(index: int, t: TensorType) -> InputCheck:
    """Every property of input ``index`` that ``t`` knows."""
    dims = tuple((d, n) for d, n in enumerate(t.shape or ()) if n is not None)
    return InputCheck(index, None if t.shape is None else len(t.shape), dims, t.dtype, t.device,
                      t.requires_grad, _known(t.strides))


def specialize(graph: Graph, profile: Profile) -> Specialized:
    """A copy of ``graph`` typed by ``profile``, with questions about its inputs answered, and
    its guards (the grad mode in ``guard`` is the caller's business)."""
    g, env = copy_with_map(graph)
    for v, t in profile.types.items():
        if v in env:
            env[v].type = t
    for _ in range(_MAX_WIDENING):
        if not _widen_control_flow(g.block):
            break
    known = {env[v]: profile.types[v] for v in graph.inputs
             if v in profile.types and v not in profile.odd}
    needs = fold_input_queries(g, known)
    index = {v: i for i, v in enumerate(g.inputs)}
    checks = sorted((need.check(index[v], known[v]) for v, need in needs.items()), key=lambda c: c.index)
    full = sorted((full_check(index[v], t) for v, t in known.items()), key=lambda c: c.index)
    grad = profile.grad_enabled if len(profile.grad_modes) == 1 else None
    return Specialized(g, Guard(tuple(checks)), Guard(tuple(full), grad))


def _widen_control_flow(block: Block) -> bool:
    """Widen ``If`` outputs and loop-carried values (params and outputs) to cover everything
    that may flow into them -- a branch that never ran kept its declared type; return whether
    any type changed.  Types only widen, so repeating this reaches a fixed point."""
    changed = False
    for node in block.nodes:
        for b in node.blocks:
            changed |= _widen_control_flow(b)
        if node.kind == "prim::If":
            for i, out in enumerate(node.outputs):
                changed |= _widen([out], [out, *(b.outputs[i] for b in node.blocks)])
        elif node.kind == "prim::Loop":
            body = node.blocks[0]
            for i, out in enumerate(node.outputs):
                param = body.inputs[i + 1]
                changed |= _widen([out, param], [node.inputs[i + 2], param, body.outputs[i + 1], out])
    return changed


def _widen(targets: list[Value], flows: list[Value]) -> bool:
    types = [v.type for v in flows]
    joined = types[0]
    for t in types[1:]:
        if not (isinstance(joined, TensorType) and isinstance(t, TensorType)):
            return False
        joined = _join(joined, t)
    changed = False
    for v in targets:
        if v.type != joined:
            v.type, changed = joined, True
    return changed


# -- noticing the unfused branch --------------------------------------------------------------------

def with_fallback_hook(graph: Graph, hook: Callable[[], None]) -> Graph:
    """A copy of ``graph`` in which every unfused branch -- the ``else`` of a ``prim::If`` on a
    ``prim::TypeCheck`` -- first calls ``hook()``.  The fused branch is unchanged, so the hook
    costs nothing until a call's types differ from those the kernels were made for."""
    g = graph.copy()
    call = registry.get("prim::CallFunction")
    for node in list(g.all_nodes()):
        if node.kind != "prim::If" or node.inputs[0].node.kind != "prim::TypeCheck":
            continue
        fallback = node.blocks[1]
        const = g.create("prim::Constant", (), [AnyType], {"value": hook})
        notify = g.create("prim::CallFunction", [const.outputs[0]], [AnyType])
        notify.op = call
        first = next(iter(fallback.nodes), None)
        for n in (const, notify):
            if first is None:
                fallback.append(n)
            else:
                n.insert_before(first)
    return g


# -- comparing graphs -------------------------------------------------------------------------------

def same_structure(a: Graph, b: Graph) -> bool:
    """Whether ``a`` and ``b`` run the same operators on the same wiring and constant values
    (types aside, and where constants sit): then a specialization brings nothing and the
    general code serves."""
    if len(a.inputs) != len(b.inputs):
        return False
    return _same_block(a.block, b.block, dict(zip(a.inputs, b.inputs)))


def _same_block(x: Block, y: Block, env: dict[Value, Value]) -> bool:
    xs = [n for n in x.nodes if n.kind != "prim::Constant"]
    ys = [n for n in y.nodes if n.kind != "prim::Constant"]
    if len(xs) != len(ys) or len(x.inputs) != len(y.inputs):
        return False
    env.update(zip(x.inputs, y.inputs))
    for m, n in zip(xs, ys):
        if not _same_node(m, n, env):
            return False
        env.update(zip(m.outputs, n.outputs))
        if not all(_same_block(p, q, env) for p, q in zip(m.blocks, n.blocks)):
            return False
    return len(x.outputs) == len(y.outputs) and \
        all(_same_value(v, w, env) for v, w in zip(x.outputs, y.outputs))


def _same_value(v: Value, w: Value, env: dict[Value, Value]) -> bool:
    if v.node.kind == "prim::Constant" and w.node.kind == "prim::Constant":
        return _same_attr(v.node.attrs.get("value"), w.node.attrs.get("value"))
    return env.get(v) is w


def _same_node(m: Node, n: Node, env: dict[Value, Value]) -> bool:
    if (m.kind, m.op, len(m.inputs), len(m.outputs), len(m.blocks)) != \
            (n.kind, n.op, len(n.inputs), len(n.outputs), len(n.blocks)):
        return False
    if m.attrs.keys() != n.attrs.keys():
        return False
    if not all(_same_value(v, w, env) for v, w in zip(m.inputs, n.inputs)):
        return False
    return all(_same_attr(m.attrs[k], n.attrs[k]) for k in m.attrs)


def _same_attr(a: Any, b: Any) -> bool:
    if a is b:
        return True
    if isinstance(a, torch.Tensor) or type(a) is not type(b):
        return False
    if isinstance(a, Graph):   # a fusion group's subgraph
        return same_structure(a, b)
    return repr(a) == repr(b)   # literals: keeps 0.0 and -0.0, 1 and True apart
