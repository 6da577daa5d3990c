"""Pointwise fusion: chains of elementwise operators become one kernel behind a type check.

Before::

    graph(%x : Float(1024, strides=[1], requires_grad=0, device=cpu)):
      %two : float = prim::Constant[value=2.0]()
      %one : int = prim::Constant[value=1]()
      %m : Float(1024, strides=[1], requires_grad=0, device=cpu) = aten::mul(%x, %two)
      %a : Float(1024, strides=[1], requires_grad=0, device=cpu) = aten::add(%m, %x, %one)
      %r : Float(1024, strides=[1], requires_grad=0, device=cpu) = aten::relu(%a)
      return (%r)

After (``kiln opt -p fuse``)::

    graph(%x : Float(1024, strides=[1], requires_grad=0, device=cpu)):
      %two : float = prim::Constant[value=2.0]()
      %one : int = prim::Constant[value=1]()
      %1 : bool = prim::TypeCheck[types=[Float(1024, strides=[1], requires_grad=0, device=cpu)]](%x)
      %r : Float(1024, strides=[1], requires_grad=0, device=cpu) = prim::If(%1)
        block0():
          %2 : Float(1024, strides=[1], requires_grad=0, device=cpu) = prim::FusionGroup_0(%x)
          -> (%2)
        block1():
          %m : Float(1024, strides=[1], requires_grad=0, device=cpu) = aten::mul(%x, %two)
          %a : Float(1024, strides=[1], requires_grad=0, device=cpu) = aten::add(%m, %x, %one)
          %r.1 : Float(1024, strides=[1], requires_grad=0, device=cpu) = aten::relu(%a)
          -> (%r.1)
      return (%r)
    with prim::FusionGroup_0 = graph(%x : Float(1024, strides=[1], requires_grad=0, device=cpu)):
      %two : float = prim::Constant[value=2.0]()
      %one : int = prim::Constant[value=1]()
      %m : Float(1024, strides=[1], requires_grad=0, device=cpu) = aten::mul(%x, %two)
      %a : Float(1024, strides=[1], requires_grad=0, device=cpu) = aten::add(%m, %x, %one)
      %r : Float(1024, strides=[1], requires_grad=0, device=cpu) = aten::relu(%a)
      return (%r)

The input is a graph whose tensor values carry complete types -- a trace, or a graph the
profiling executor specialized to the types it saw.  A node is *fusible* when the C++ backend
computes it (:func:`kiln.backends.cpp.fusible`: the operator, its constant arguments, a
float/double result -- bool for comparisons), its result is a contiguous CPU tensor without
``requires_grad``, its tensor inputs have complete CPU types
broadcasting to that result, and its other inputs are literals or int/float/bool values.  A
graph without complete types is left as it is.

**Grouping** is one explicit walk per block, in program order.  A fusible node joins the open
groups that produced its tensor inputs (merging them) when they have its result shape, or
starts a group.  A group closes as soon as a node outside it uses one of its values: the group
will run where its last node stands, so it may not grow past a use of its results.  Groups of
at least two operators with a result used outside are rewritten:

* a **subgraph** holding copies of the group's nodes (literal constants copied in; other outside
  values become its inputs) -- the body of a ``prim::FusionGroup``;
* a ``prim::TypeCheck`` of the tensor inputs against the types the group was built for, and a
  ``prim::If``: the fusion group when the check holds, copies of the original nodes otherwise
  (the **fallback**), so a call with other shapes or dtypes still gets eager's answer.

A group's reads move to where its last node stood, so no node reading a tensor that the
graph writes in place (or anything aliasing it, :class:`~kiln.passes.cse.AliasSets`) is
fused.  The fallback block of such an ``If`` is never fused again, which makes the pass
idempotent.
Nodes with blocks, in-place operators and everything the backend cannot compute stay unfused
(for instance the ``matmul`` in ``relu(x * y + z) @ w``).
"""

from __future__ import annotations

from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from typing import Optional

import torch

from kiln.backends import cpp
from kiln.ir import prims as _prims  # noqa: F401  (registers prim::TypeCheck and prim::FusionGroup)
from kiln.ir.graph import SUBGRAPH_ATTR, Block, Graph, Node, Value, clone_node
from kiln.ir.ops import registry
from kiln.ir.types import BoolType, TensorType, Type
from kiln.passes.cse import AliasSets

__all__ = ["MIN_GROUP_SIZE", "fuse_pointwise"]

MIN_GROUP_SIZE = 2   # operators; a single operator gains nothing from a kernel of its own

_LITERALS = (bool, int, float, str, torch.dtype, torch.memory_format)


def fuse_pointwise(graph: Graph) -> bool:
    """Replace each maximal group of fusible pointwise operators by a type-checked fusion
    group with an unfused fallback; return whether anything changed."""
    changed = False
    aliases = AliasSets(graph)
    for block in list(_blocks(graph.block)):
        for group in _find_groups(block, aliases):
            changed |= _rewrite(group)
    return changed


def _blocks(block: Block) -> Iterator[Block]:
    yield block
    for node in block.nodes:
        for i, b in enumerate(node.blocks):
            if not (i == 1 and _is_guarded_fusion(node)):
                yield from _blocks(b)


def _is_guarded_fusion(node: Node) -> bool:
    """``prim::If(prim::TypeCheck(...))`` as this pass writes it (its block1 is a fallback)."""
    return node.kind == "prim::If" and bool(node.inputs) and node.inputs[0].node.kind == "prim::TypeCheck"


# -- which nodes fuse ----------------------------------------------------------------------------

def _complete_cpu(t: Type) -> Optional[tuple[int, ...]]:
    """The shape of a complete, CPU, no-grad tensor type; None for any other type."""
    if not isinstance(t, TensorType) or t.dtype is None or t.shape is None or t.strides is None:
        return None
    if t.device is None or t.device.type != "cpu" or t.requires_grad is not False:
        return None
    if any(d is None for d in (*t.shape, *t.strides)):
        return None
    return tuple(int(d or 0) for d in t.shape)


def _is_literal(v: Value) -> bool:
    if v.node.kind != "prim::Constant":
        return False
    value = v.node.attrs.get("value")
    return value is None or isinstance(value, _LITERALS)


def _input_ok(v: Value, shape: tuple[int, ...]) -> bool:
    if isinstance(v.type, TensorType):
        in_shape = _complete_cpu(v.type)
        return in_shape is not None and v.type.dtype in cpp.C_TYPES and \
            len(in_shape) <= len(shape) and \
            all(d in (1, s) for d, s in zip(reversed(in_shape), reversed(shape)))
    return _is_literal(v) or v.type in cpp.SCALAR_TYPES


def fusion_key(node: Node) -> Optional[tuple[int, ...]]:
    """The result shape of a fusible node (nodes of one group share it); None if not fusible."""
    if node.blocks or len(node.outputs) != 1 or node.op is None or not node.op.pure:
        return None
    out = node.outputs[0].type
    shape = _complete_cpu(out)
    if shape is None or not isinstance(out, TensorType) or \
            tuple(out.strides or ()) != cpp.contiguous_strides(shape):
        return None
    if not all(_input_ok(v, shape) for v in node.inputs) or not cpp.fusible(node):
        return None
    return shape


# -- grouping -------------------------------------------------------------------------------------

@dataclass(eq=False)
class _Group:
    shape: tuple[int, ...]
    nodes: list[Node] = field(default_factory=list)
    open: bool = True


def _used_values(node: Node) -> Iterator[Value]:
    """Every value ``node`` reads, including inside its blocks."""
    yield from node.inputs
    for b in node.blocks:
        for inner in b.nodes:
            yield from _used_values(inner)
        yield from b.outputs


def _find_groups(block: Block, aliases: AliasSets) -> list[_Group]:
    position = {n: i for i, n in enumerate(block.nodes)}
    owner: dict[Node, _Group] = {}
    for node in block.nodes:
        # a group runs where its last node stood: its reads move later, past any write to
        # what it reads -- so nothing reading a tensor the graph writes (or its aliases) fuses
        written = any(aliases.is_written(v) for v in node.inputs)
        shape = None if written else fusion_key(node)
        joined: Optional[_Group] = None
        if shape is not None:
            joined = _join(node, shape, owner, position)
        for v in _used_values(node):
            g = owner.get(v.node)
            if g is not None and g is not joined:
                g.open = False   # it may not grow past this use of its result
    groups = {id(g): g for g in owner.values()}.values()
    return [g for g in groups if len(g.nodes) >= MIN_GROUP_SIZE]


def _join(node: Node, shape: tuple[int, ...], owner: dict[Node, _Group],
          position: dict[Node, int]) -> _Group:
    """Add ``node`` to the open groups of its producers (merged into one), or a new group."""
    candidates: list[_Group] = []
    for v in node.inputs:
        g = owner.get(v.node)
        if g is not None and g.open and g.shape == shape and g not in candidates:
            candidates.append(g)
    group = candidates[0] if candidates else _Group(shape)
    for other in candidates[1:]:
        group.nodes.extend(other.nodes)
        for n in other.nodes:
            owner[n] = group
    group.nodes.sort(key=position.__getitem__)
    group.nodes.append(node)
    owner[node] = group
    return group


# -- the rewrite ----------------------------------------------------------------------------------

def _boundary(nodes: list[Node], copy_in: Optional[Callable[[Value], bool]] = None
              ) -> tuple[list[Value], list[Value], list[Value]]:
    """The group's outside inputs, the outside values to copy into it instead (``copy_in``:
    literal constants by default), and its results used outside it, in program order."""
    members = set(nodes)
    inputs: list[Value] = []
    copied: list[Value] = []
    for n in nodes:
        for v in n.inputs:
            if v.node not in members and v not in inputs and v not in copied:
                (copied if (copy_in or _is_literal)(v) else inputs).append(v)
    outputs = [v for n in nodes for v in n.outputs if any(u.user not in members for u in v.uses)]
    return inputs, copied, outputs


def _subgraph(nodes: list[Node], inputs: list[Value], literals: list[Value], outputs: list[Value]) -> Graph:
    sub = Graph()
    env: dict[Value, Value] = {v: sub.add_input(v.type, v.name) for v in inputs}
    for v in literals:
        const = sub.create("prim::Constant", output_types=[v.type], attrs=dict(v.node.attrs))
        const.output.name = v.name
        env[v] = sub.block.append(const).output
    for n in nodes:
        sub.block.append(clone_node(n, sub, env))
    for v in outputs:
        sub.register_output(env[v])
    return sub


def _rewrite(group: _Group) -> bool:
    nodes = group.nodes
    return replace_group(nodes, *_boundary(nodes))


def replace_group(nodes: list[Node], inputs: list[Value], literals: list[Value],
                  outputs: list[Value]) -> bool:
    """Replace ``nodes`` (in program order) by ``prim::If(prim::TypeCheck(tensor inputs))``
    holding a ``prim::FusionGroup`` of them and, as the fallback, copies of them.  ``literals``
    are constants the subgraph gets copies of; ``outputs`` are the values used outside."""
    if not outputs:
        return False   # dead code; dce removes it
    graph, last = nodes[-1].graph, nodes[-1]
    assert last.next is not None
    tensors = [v for v in inputs if isinstance(v.type, TensorType)]
    check = graph.create("prim::TypeCheck", tensors, [BoolType], attrs={"types": [v.type for v in tensors]})
    check.op = registry.get("prim::TypeCheck")
    check.insert_before(last.next)
    branch = graph.create("prim::If", [check.output], [v.type for v in outputs])
    assert check.next is not None
    branch.insert_before(check.next)
    fused = graph.create("prim::FusionGroup", inputs, [v.type for v in outputs],
                         attrs={SUBGRAPH_ATTR: _subgraph(nodes, inputs, literals, outputs)})
    fused.op = registry.get("prim::FusionGroup")
    _fill(branch.add_block(), [fused], fused.outputs)
    env: dict[Value, Value] = {v: v for v in (*inputs, *literals)}
    copies = [clone_node(n, graph, env) for n in nodes]
    _fill(branch.add_block(), copies, [env[v] for v in outputs])
    members = set(nodes)
    for v, result in zip(outputs, branch.outputs):
        result.name = v.name
        for use in list(v.uses):
            if use.user not in members:
                use.user.replace_input(use.index, result)
    for n in reversed(nodes):
        n.destroy()
    return True


def _fill(block: Block, nodes: list[Node], results: list[Value]) -> None:
    for n in nodes:
        block.append(n)
    for v in results:
        block.register_output(v)

