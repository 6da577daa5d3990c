"""Constant folding: run pure operators on constant inputs now, and fold constant control flow.

Before::

    graph(%x : Tensor):
      %two : int = prim::Constant[value=2]()
      %three : int = prim::Constant[value=3]()
      %six : int = aten::mul(%two, %three)
      %big : bool = aten::gt(%six, %three)
      %y : Tensor = prim::If(%big)
        block0():
          %r : Tensor = aten::relu(%x)
          -> (%r)
        block1():
          -> (%x)
      %z : Tensor = aten::add(%y, %x, %six)
      return (%z)

After (the inputs of folded nodes are left for :mod:`kiln.passes.dce`)::

    graph(%x : Tensor):
      %two : int = prim::Constant[value=2]()
      %three : int = prim::Constant[value=3]()
      %six : int = prim::Constant[value=6]()
      %big : bool = prim::Constant[value=1]()
      %r : Tensor = aten::relu(%x)
      %z : Tensor = aten::add(%r, %x, %six)
      return (%z)

An explicit walk in program order, so a folded result feeds the folding of its users in the
same sweep.  Three rewrites:

* **Operators.**  A node whose inputs are all ``prim::Constant`` and whose operator is
  effect-free (:func:`kiln.passes.cse.is_effect_free`: pure, deterministic, writes nothing)
  runs its ``impl`` (with gradients off and warnings silenced) and becomes a constant.  Not
  folded: operators that allocate uninitialized or random memory or take a ``Generator``;
  tensor factories with ``dtype=None`` (their dtype is the process default at run time); a
  result that is not a literal, a tuple or list of literals, or a small tensor -- more than
  :data:`MAX_TENSOR_ELEMENTS` elements stays computed, as does a tensor that requires grad or
  sits in a container (device moves convert top-level tensor constants only); and an op
  that raises (the error stays where it happens at run time).
* **Aliasing** (:class:`~kiln.passes.cse.AliasSets`).  A constant is one object shared by
  every run of the graph, so a mutable input or result (tensor, list) may be folded only if
  nothing in the graph writes it, and a mutable result only if the graph does not return it
  either (the caller could change it, and with it the next call's result).
* **Control flow.**  ``prim::If`` on a constant condition is replaced by the nodes of the
  branch it takes; ``prim::Loop`` whose trip count is a constant ``<= 0`` or whose start
  condition is a constant ``False`` is replaced by its initial carried values.
"""

from __future__ import annotations

import warnings
from typing import Any, Optional

import torch

from kiln.ir.graph import Graph, Node, Value
from kiln.ir.types import (
    FloatType,
    GeneratorType,
    ListType,
    OptionalType,
    TensorType,
    TupleType,
    Type,
    is_subtype,
    strip_optional,
    type_of_value,
)
from kiln.passes.cse import AliasSets, is_effect_free, is_mutable_type

MAX_TENSOR_ELEMENTS = 64

_NEVER_FOLD = frozenset({
    "aten::empty", "aten::empty_like", "aten::empty_strided", "aten::new_empty",
    "aten::new_empty_strided", "aten::empty_permuted", "prim::GetAttr",
})
_LITERALS = (bool, int, float, complex, str, torch.device, torch.dtype, torch.layout,
             torch.memory_format)


def constant_fold(graph: Graph) -> bool:
    """Fold constant operators, Ifs and Loops everywhere in ``graph``; return whether any was."""
    aliases = AliasSets(graph)
    changed = False
    for node in list(graph.all_nodes()):
        if node.owner is None:
            continue   # destroyed with the branch an If did not take
        if node.kind == "prim::If":
            changed |= _fold_if(node)
        elif node.kind == "prim::Loop":
            changed |= _fold_loop(node)
        elif _foldable(node, aliases):
            changed |= _fold_op(node, aliases)
    return changed


# -- operators ------------------------------------------------------------------------------------

def _foldable(node: Node, aliases: AliasSets) -> bool:
    op = node.op
    if op is None or op.impl is None or node.blocks or not node.outputs or node.kind in _NEVER_FOLD:
        return False
    if not is_effect_free(node) or any(strip_optional(a.type) == GeneratorType for a in op.schema.arguments):
        return False
    if not all(v.node.kind == "prim::Constant" and _plain(v.node.attrs.get("value")) for v in node.inputs):
        return False
    if any(aliases.is_written(v) for v in node.inputs):
        return False
    return not any(aliases.is_written(v) or aliases.escapes(v) for v in node.outputs)


def _plain(value: Any) -> bool:
    """A value an impl can compute with: literals, tensors not recording gradients and
    containers of them (an opaque payload read from text is not one)."""
    if isinstance(value, torch.Tensor):
        return not value.requires_grad
    if value is None or isinstance(value, _LITERALS):
        return True
    return isinstance(value, (list, tuple)) and all(_plain(x) for x in value)


def _fold_op(node: Node, aliases: AliasSets) -> bool:
    args = [v.node.attrs["value"] for v in node.inputs]
    if _default_dtype_factory(node, args):
        return False
    try:
        with warnings.catch_warnings(), torch.no_grad():
            warnings.simplefilter("ignore")
            results = _call(node, args)
    except Exception:   # the op fails on these inputs: leave the failure to run time
        return False
    if results is None or len(results) != len(node.outputs):
        return False
    constants = [_constant_for(r, out.type) for r, out in zip(results, node.outputs)]
    if any(c is None for c in constants):
        return False
    for out, c in zip(node.outputs, constants):
        assert c is not None
        const = node.graph.create("prim::Constant", (), [c[1]], {"value": c[0]})
        const.source, const.scope = node.source, node.scope
        const.insert_before(node)
        const.output.name = out.name
        aliases.stand_in(out, const.output)
        out.replace_all_uses_with(const.output)
    node.destroy()
    return True


def _call(node: Node, args: list[Any]) -> Optional[list[Any]]:
    """Run the operator as Kiln's drivers do: schema order, the impl's keyword arguments by
    name, the node's attributes as keywords; several results are spread over the outputs."""
    op = node.op
    schema = op.schema
    kw: dict[int, str] = {}
    if op.kw_names and not schema.is_vararg:
        kw = {i: a.name for i, a in enumerate(schema.arguments[:len(args)]) if a.name in op.kw_names}
    positional = [a for i, a in enumerate(args) if i not in kw]
    result = op.impl(*positional, **{name: args[i] for i, name in kw.items()}, **node.attrs)
    if schema.is_varret or len(schema.returns) > 1:
        return list(result) if isinstance(result, (list, tuple)) else None
    return [result]


def _default_dtype_factory(node: Node, args: list[Any]) -> bool:
    """A tensor-producing op given ``dtype=None``: its result's dtype is whatever the process
    default is when the graph runs, so it is not a constant."""
    if not any(isinstance(v.type, TensorType) for v in node.outputs):
        return False
    return any(a.name == "dtype" and value is None for a, value in zip(node.op.schema.arguments, args))


def _constant_for(result: Any, declared: Type) -> Optional[tuple[Any, Type]]:
    """The constant's value and type for ``result`` of an output declared ``declared``; None
    when it has no constant form or its type would not fit where the output was used."""
    if declared == FloatType and type(result) is int:
        result = float(result)   # an int-valued impl result for a float output
    form = _constant_form(result)
    if form is None:
        return None
    t = _constant_type(form[0], declared)
    fits = is_subtype(t, declared) or (isinstance(t, TensorType) and isinstance(declared, TensorType))
    return (form[0], t) if fits else None


def _constant_form(value: Any, top: bool = True) -> Optional[tuple[Any]]:
    """``(value to store,)`` when ``value`` can be a constant, else None.  A tensor is a
    detached copy, so the constant never shares memory with (or keeps alive) a larger input;
    only a top-level one, as device moves (``ScriptModule.to``) convert top-level tensor
    constants only."""
    if value is None or isinstance(value, _LITERALS):
        return (value,)
    if isinstance(value, torch.Tensor):
        if not top or value.numel() > MAX_TENSOR_ELEMENTS or value.requires_grad \
                or value.layout != torch.strided or value.is_quantized:
            return None
        copy = value.detach().clone()
        return (copy,) if copy.stride() == value.stride() else None
    if isinstance(value, (list, tuple)):
        items = [_constant_form(x, top=False) for x in value]
        if any(i is None for i in items):
            return None
        elems = [i[0] for i in items if i is not None]
        return (elems if isinstance(value, list) else tuple(elems),)
    return None


def _constant_type(value: Any, declared: Type) -> Type:
    """The folded constant's type: the value's own for tensors (the declared one was observed
    on some input), the declared one for lists (an empty list has no element type of its own),
    element-wise for tuples, and the value's own where the declared type is wider (``Scalar``,
    ``Any``, ``int?``)."""
    if isinstance(value, torch.Tensor):
        return TensorType.of(value)
    if isinstance(declared, ListType):
        return declared
    if isinstance(value, tuple) and isinstance(declared, TupleType) and len(declared.elems) == len(value):
        return TupleType(tuple(_constant_type(v, t) for v, t in zip(value, declared.elems)))
    own = type_of_value(value)
    if isinstance(declared, OptionalType) and value is not None and own == declared.elem:
        return own
    return own if own != declared and not is_mutable_type(own) else declared


# -- control flow ---------------------------------------------------------------------------------

def _constant(v: Value) -> tuple[bool, Any]:
    if v.node.kind != "prim::Constant":
        return False, None
    return True, v.node.attrs.get("value")


def _fold_if(node: Node) -> bool:
    known, cond = _constant(node.inputs[0])
    if not known or not isinstance(cond, bool):
        return False
    taken = node.blocks[0 if cond else 1]
    for inner in list(taken.nodes):
        inner.move_before(node)
    for out, result in zip(node.outputs, taken.outputs):
        out.replace_all_uses_with(result)
    node.destroy()
    return True


def _fold_loop(node: Node) -> bool:
    known_trip, trip = _constant(node.inputs[0])
    known_cond, cond = _constant(node.inputs[1])
    never = (known_trip and isinstance(trip, int) and not isinstance(trip, bool) and trip <= 0) or \
        (known_cond and cond is False)
    if not never:
        return False
    for out, init in zip(node.outputs, node.inputs[2:]):
        out.replace_all_uses_with(init)
    node.destroy()
    return True
