"""Peephole rewrites: local rules, one table, one worklist driver.

Before::

    graph(%x : Tensor, %n : int, %c : bool):
      %zero : int = prim::Constant[value=0]()
      %m : int = aten::add(%n, %zero)
      %t : (Tensor, int) = prim::TupleConstruct(%x, %m)
      %a : Tensor, %b : int = prim::TupleUnpack(%t)
      %l : int[] = prim::ListConstruct(%b, %b)
      %k : int = aten::len(%l)
      %nc : bool = aten::__not__(%c)
      %c2 : bool = aten::__not__(%nc)
      return (%a, %k, %c2)

After (dead nodes are left for :mod:`kiln.passes.dce`)::

    graph(%x : Tensor, %n : int, %c : bool):
      %zero : int = prim::Constant[value=0]()
      %t : (Tensor, int) = prim::TupleConstruct(%x, %n)
      %l : int[] = prim::ListConstruct(%n, %n)
      %1 : int = prim::Constant[value=2]()
      %nc : bool = aten::__not__(%c)
      return (%x, %1, %c)

The rules are data: :data:`RULES` maps a node kind to a function ``rule(node, rewriter) ->
bool`` that either rewrites through the :class:`Rewriter` (replacing the node's results) and
returns True, or leaves the graph alone and returns False.  :func:`run_rules` starts from
every node (nested blocks included, in program order) and, after each rewrite, revisits the
nodes that now read the replacement values, until no rule applies.

The rules:

* ``x + 0``, ``0 + x``, ``x - 0``, ``x * 1``, ``1 * x`` on ints, and the float forms that are
  exact for every float (``x * 1.0``, ``x * 1``, ``x - 0.0``, ``x - 0``, ``x + -0.0``; ``x + 0.0``
  and ``x + 0`` are not ``x`` when ``x`` is ``-0.0``);
* ``prim::TupleUnpack`` / ``prim::TupleIndex`` (constant index) of a
  ``prim::TupleConstruct`` -> the elements;
* ``aten::len`` of a ``prim::ListConstruct`` -> a constant, and ``aten::__getitem__`` with a
  constant index -> the element, both only when no node may write the list
  (:class:`~kiln.passes.cse.AliasSets`: an ``append`` would change both answers);
* ``prim::If`` whose two blocks return the same (outer) value for an output -> that value;
  an If left with empty blocks and unused results is removed;
* ``aten::Int(prim::NumToTensor(x))`` -> ``x`` for an int ``x`` (likewise ``Float`` of a
  float and ``Bool`` of a bool); ``not not b`` -> ``b``.

Deliberately absent: ``aten::len(aten::size(x))`` or ``aten::dim(x)`` from the rank in ``x``'s
type -- traced types are observations of one example, not facts about every input.
"""

from __future__ import annotations

import math
from collections import deque
from collections.abc import Callable, Mapping, Sequence
from typing import Any, Optional

from kiln.ir.graph import Graph, Node, Value
from kiln.ir.types import BoolType, FloatType, IntType, TensorType, Type, is_subtype
from kiln.passes.cse import AliasSets


class Rewriter:
    """What a rule may do to the graph: replace a node's results, make constants.  It keeps
    the driver's worklist up to date."""

    def __init__(self, graph: Graph) -> None:
        self.graph = graph
        self.aliases = AliasSets(graph)
        self.work: deque[Node] = deque(graph.all_nodes())

    def redirect(self, old: Value, new: Value) -> bool:
        """Make every use of ``old`` read ``new``; False when ``old`` had no uses, or when
        ``new``'s type would not fit where ``old`` was read."""
        if not old.uses or not _fits(new.type, old.type):
            return False
        users = [u.user for u in old.uses]
        old.replace_all_uses_with(new)
        self.work.extend(users)
        return True

    def replace(self, node: Node, values: Sequence[Value]) -> bool:
        """Replace all of ``node``'s results by ``values`` and remove it (all or nothing)."""
        if len(values) != len(node.outputs) or not all(_fits(n.type, o.type)
                                                        for n, o in zip(values, node.outputs)):
            return False
        for old, new in zip(node.outputs, values):
            self.redirect(old, new)
        node.destroy()
        return True

    def constant(self, before: Node, value: Any, type: Type) -> Value:
        """A new ``prim::Constant`` just before ``before``."""
        const = self.graph.create("prim::Constant", (), [type], {"value": value})
        const.source, const.scope = before.source, before.scope
        return const.insert_before(before).output


Rule = Callable[[Node, Rewriter], bool]


def _fits(new: Type, old: Type) -> bool:
    return is_subtype(new, old) or (isinstance(new, TensorType) and isinstance(old, TensorType))


def _constant(v: Value) -> tuple[bool, Any]:
    if v.node.kind != "prim::Constant":
        return False, None
    return True, v.node.attrs.get("value")


def _overload(node: Node) -> str:
    return node.op.schema.overload if node.op is not None else ""


# -- arithmetic identities -------------------------------------------------------------------------

def _is_unit(v: Value, unit: float, negative_zero: bool = False) -> bool:
    known, value = _constant(v)
    if not known or type(value) not in (int, float) or value != unit:
        return False
    if negative_zero:   # only -0.0 leaves every float alone: the int 0 adds like +0.0
        return type(value) is float and math.copysign(1.0, value) == -1.0
    return type(value) is int or math.copysign(1.0, value) == 1.0


def _scalar_identity(node: Node, rw: Rewriter, unit: float, commutes: bool, negzero: bool = False) -> bool:
    """``x op unit`` (and ``unit op x`` when ``commutes``) -> ``x`` for an int or float ``x``
    of the result's own type."""
    if len(node.inputs) != 2 or len(node.outputs) != 1:
        return False
    out_type = node.output.type
    if out_type not in (IntType, FloatType):
        return False
    a, b = node.inputs
    nz = negzero and out_type == FloatType
    if a.type == out_type and _is_unit(b, unit, nz):
        return rw.replace(node, [a])
    if commutes and b.type == out_type and _is_unit(a, unit, nz):
        return rw.replace(node, [b])
    return False


def _add_zero(node: Node, rw: Rewriter) -> bool:
    # float: only -0.0 is an identity for addition (-0.0 + 0.0 and -0.0 + 0 are 0.0)
    return _scalar_identity(node, rw, 0, commutes=True, negzero=True)


def _sub_zero(node: Node, rw: Rewriter) -> bool:
    return _scalar_identity(node, rw, 0, commutes=False)


def _mul_one(node: Node, rw: Rewriter) -> bool:
    return _scalar_identity(node, rw, 1, commutes=True)


# -- tuples and lists -------------------------------------------------------------------------------

def _tuple_unpack(node: Node, rw: Rewriter) -> bool:
    tup = node.inputs[0].node
    if tup.kind != "prim::TupleConstruct" or len(tup.inputs) != len(node.outputs):
        return False
    return rw.replace(node, list(tup.inputs))


def _element(container: Node, index: Value) -> Optional[Value]:
    known, i = _constant(index)
    if not known or type(i) is not int or not -len(container.inputs) <= i < len(container.inputs):
        return None
    return container.inputs[i]


def _tuple_index(node: Node, rw: Rewriter) -> bool:
    tup = node.inputs[0].node
    if tup.kind != "prim::TupleConstruct" or len(node.inputs) != 2:
        return False
    elem = _element(tup, node.inputs[1])
    return elem is not None and rw.replace(node, [elem])


def _unwritten_list(node: Node, rw: Rewriter) -> Optional[Node]:
    """The ``prim::ListConstruct`` making ``node``'s first input, if nothing may write it."""
    lst = node.inputs[0] if node.inputs else None
    if lst is None or lst.node.kind != "prim::ListConstruct" or rw.aliases.is_written(lst):
        return None
    return lst.node


def _list_len(node: Node, rw: Rewriter) -> bool:
    lst = _unwritten_list(node, rw) if _overload(node) == "t" else None
    if lst is None or node.output.type != IntType:
        return False
    return rw.replace(node, [rw.constant(node, len(lst.inputs), IntType)])


def _list_getitem(node: Node, rw: Rewriter) -> bool:
    lst = _unwritten_list(node, rw) if _overload(node) == "t" and len(node.inputs) == 2 else None
    elem = _element(lst, node.inputs[1]) if lst is not None else None
    return elem is not None and rw.replace(node, [elem])


# -- control flow and conversions ------------------------------------------------------------------

def _same_branches(node: Node, rw: Rewriter) -> bool:
    then, other = node.blocks
    changed = False
    for j, out in enumerate(node.outputs):
        if then.outputs[j] is other.outputs[j]:
            changed |= rw.redirect(out, then.outputs[j])
    empty = next(then.nodes, None) is None and next(other.nodes, None) is None
    if empty and not any(out.uses for out in node.outputs):
        node.destroy()
        changed = True
    return changed


_ROUND_TRIPS = {"aten::Int": IntType, "aten::Float": FloatType, "aten::Bool": BoolType}


def _num_to_tensor_and_back(node: Node, rw: Rewriter) -> bool:
    """``aten::Int(prim::NumToTensor(x))`` -> ``x`` when ``x`` is an int (the tensor holds it
    exactly); a float through ``Int`` truncates, so the types must match the conversion."""
    if _overload(node) != "Tensor" or not node.inputs:
        return False
    producer = node.inputs[0].node
    if producer.kind != "prim::NumToTensor" or not producer.inputs:
        return False
    x = producer.inputs[0]
    return x.type == _ROUND_TRIPS[node.kind] and rw.replace(node, [x])


def _double_not(node: Node, rw: Rewriter) -> bool:
    inner = node.inputs[0].node if node.inputs else None
    if inner is None or inner.kind != "aten::__not__" or not inner.inputs:
        return False
    x = inner.inputs[0]
    return x.type == BoolType and rw.replace(node, [x])


RULES: dict[str, Rule] = {
    "aten::add": _add_zero,
    "aten::sub": _sub_zero,
    "aten::mul": _mul_one,
    "prim::TupleUnpack": _tuple_unpack,
    "prim::TupleIndex": _tuple_index,
    "aten::len": _list_len,
    "aten::__getitem__": _list_getitem,
    "prim::If": _same_branches,
    "aten::Int": _num_to_tensor_and_back,
    "aten::Float": _num_to_tensor_and_back,
    "aten::Bool": _num_to_tensor_and_back,
    "aten::__not__": _double_not,
}


def run_rules(graph: Graph, rules: Mapping[str, Rule]) -> bool:
    """The worklist driver: apply ``rules`` (kind -> rule) until none applies."""
    rw = Rewriter(graph)
    changed = False
    while rw.work:
        node = rw.work.popleft()
        rule = rules.get(node.kind)
        if rule is not None and node.owner is not None and rule(node, rw):
            changed = True
    return changed


def peephole(graph: Graph) -> bool:
    """Apply :data:`RULES` everywhere in ``graph``; return whether anything changed."""
    return run_rules(graph, RULES)
