"""Dense fusion: chains of tiny constant-weight ``aten::linear`` and activations become one kernel.

At batch 1, a small MLP spends its time in per-operator overhead, not arithmetic.  This pass
puts a chain of ``aten::linear`` calls with constant (frozen) float32 weights, interleaved with
pointwise operators, into one ``prim::FusionGroup`` behind a type check -- the same shape
:mod:`kiln.passes.fuse` writes -- which :mod:`kiln.backends.dense` runs as one generated C++
function with the weights baked in.

Before::

    graph(%x : Float(1, 3, strides=[3, 1], requires_grad=0, device=cpu)):
      %w1 : Float(8, 3, strides=[3, 1], requires_grad=0, device=cpu) = prim::Constant[value=<Tensor>]()
      %b1 : Float(8, strides=[1], requires_grad=0, device=cpu) = prim::Constant[value=<Tensor>]()
      %w2 : Float(1, 8, strides=[8, 1], requires_grad=0, device=cpu) = prim::Constant[value=<Tensor>]()
      %h : Float(1, 8, strides=[8, 1], requires_grad=0, device=cpu) = aten::linear(%x, %w1, %b1)
      %r : Float(1, 8, strides=[8, 1], requires_grad=0, device=cpu) = aten::relu(%h)
      %none : NoneType = prim::Constant()
      %y : Float(1, 1, strides=[1, 1], requires_grad=0, device=cpu) = aten::linear(%r, %w2, %none)
      %s : Float(1, 1, strides=[1, 1], requires_grad=0, device=cpu) = aten::sigmoid(%y)
      return (%s)

After (``kiln opt -p fuse_dense``; the constants are left to ``dce``)::

    graph(%x : Float(1, 3, strides=[3, 1], requires_grad=0, device=cpu)):
      ...
      %1 : bool = prim::TypeCheck[types=[Float(1, 3, strides=[3, 1], requires_grad=0, device=cpu)]](%x)
      %s : Float(1, 1, strides=[1, 1], requires_grad=0, device=cpu) = prim::If(%1)
        block0():
          %2 : Float(1, 1, ...) = prim::FusionGroup_0(%x)
          -> (%2)
        block1():
          %h.1 : Float(1, 8, ...) = aten::linear(%x, %w1, %b1)
          ... (the original nodes: the fallback)
          -> (%s.1)
      return (%s)
    with prim::FusionGroup_0 = graph(%x : Float(1, 3, strides=[3, 1], requires_grad=0, device=cpu)):
      %w1 : Float(8, 3, ...) = prim::Constant[value=<Tensor>]()
      ... (constants copied in, then the chain's nodes)
      return (%s)

**What joins a group.**  A group starts at a *dense* ``aten::linear``: input a contiguous
float32 CPU tensor without ``requires_grad`` of rank 1 or 2 with at most :data:`MAX_ROWS` rows,
weight a 2-D contiguous float32 ``prim::Constant`` of at most :data:`MAX_WEIGHT` elements,
bias such a 1-D constant or None.  Later nodes of the block join the open group when they are
dense linears reading one of its values, or pointwise operators the C++ backend computes
(:func:`kiln.passes.fuse.fusion_key`) whose tensor inputs are all values of the group of the
result's exact shape (no broadcasting) and whose other inputs are literals.  As in the
pointwise pass, a group closes at the first use of one of its values from outside it, and
nothing reading a tensor the graph writes (or an alias of one) joins.  Every group with at
least one linear and at least :data:`MIN_GROUP_SIZE` operators is rewritten; its tensor
constants are copied into the subgraph, so only the chain's input is type-checked.

Not in any exact pipeline: the kernel's dot products round differently from eager's BLAS.
The profiling executor runs it before ``fuse`` when gradients are not needed.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Optional

import torch

from kiln.ir.graph import Block, Graph, Node, Value
from kiln.ir.types import TensorType
from kiln.passes.cse import AliasSets
from kiln.passes.fuse import _blocks, _boundary, _complete_cpu, _is_literal, fusion_key, replace_group

__all__ = ["MAX_ROWS", "MAX_WEIGHT", "MIN_GROUP_SIZE", "dense_linear", "fuse_dense"]

MAX_ROWS = 16          # rows of a linear's input; beyond this BLAS wins
MAX_WEIGHT = 16384     # elements of one weight matrix (baked into the kernel's source)
MIN_GROUP_SIZE = 2     # operators


def fuse_dense(graph: Graph) -> bool:
    """Replace each chain of tiny constant-weight linears and pointwise operators by a
    type-checked fusion group with an unfused fallback; return whether anything changed."""
    changed = False
    aliases = AliasSets(graph)
    for block in list(_blocks(graph.block)):
        for group in _find_groups(block, aliases):
            changed |= _rewrite(group.nodes)
    return changed


# -- which nodes join -----------------------------------------------------------------------------

def _float_contiguous(t: object) -> Optional[tuple[int, ...]]:
    """The shape of a complete, contiguous, float32, CPU, no-grad tensor type; else None."""
    if not isinstance(t, TensorType) or t.dtype != torch.float32:
        return None
    shape = _complete_cpu(t)
    if shape is None or tuple(t.strides or ()) != _contiguous(shape):
        return None
    return shape


def _contiguous(shape: tuple[int, ...]) -> tuple[int, ...]:
    strides, step = [], 1
    for d in reversed(shape):
        strides.append(step)
        step *= max(d, 1)
    return tuple(reversed(strides))


def _constant_tensor(v: Value, rank: int) -> Optional[torch.Tensor]:
    value = v.node.attrs.get("value") if v.node.kind == "prim::Constant" else None
    if not isinstance(value, torch.Tensor) or value.dim() != rank or value.dtype != torch.float32 or \
            value.device.type != "cpu" or value.requires_grad or not value.is_contiguous():
        return None
    return value


def dense_linear(node: Node) -> bool:
    """Whether ``node`` is an ``aten::linear`` the dense backend computes (see the module doc)."""
    if node.kind != "aten::linear" or len(node.inputs) != 3 or len(node.outputs) != 1:
        return False
    x, w, b = node.inputs
    in_shape = _float_contiguous(x.type)
    out_shape = _float_contiguous(node.output.type)
    weight = _constant_tensor(w, 2)
    if in_shape is None or out_shape is None or weight is None or len(in_shape) not in (1, 2):
        return False
    rows = in_shape[0] if len(in_shape) == 2 else 1
    n, k = weight.shape
    if not 1 <= rows <= MAX_ROWS or weight.numel() > MAX_WEIGHT or n == 0 or k == 0 or \
            in_shape[-1] != k or out_shape != (*in_shape[:-1], n):
        return False
    if b.node.kind == "prim::Constant" and b.node.attrs.get("value") is None:
        return True
    bias = _constant_tensor(b, 1)
    return bias is not None and tuple(bias.shape) == (n,)


def _pointwise_ok(node: Node, owner: dict[Node, _Group], group: _Group) -> bool:
    shape = fusion_key(node)
    if shape is None or node.output.type != node.inputs[0].type or \
            not isinstance(node.output.type, TensorType) or node.output.type.dtype != torch.float32:
        return False
    for v in node.inputs:
        if isinstance(v.type, TensorType):
            if owner.get(v.node) is not group or v.type != node.output.type:
                return False
        elif not _is_literal(v):
            return False
    return True


# -- grouping -------------------------------------------------------------------------------------

@dataclass(eq=False)
class _Group:
    nodes: list[Node] = field(default_factory=list)
    open: bool = True


def _find_groups(block: Block, aliases: AliasSets) -> list[_Group]:
    owner: dict[Node, _Group] = {}
    for node in block.nodes:
        joined = None if any(aliases.is_written(v) for v in node.inputs) else _join(node, owner)
        for v in _used(node):
            g = owner.get(v.node)
            if g is not None and g is not joined:
                g.open = False
    groups = {id(g): g for g in owner.values()}.values()
    return [g for g in groups if len(g.nodes) >= MIN_GROUP_SIZE]


def _used(node: Node) -> list[Value]:
    found = list(node.inputs)
    for b in node.blocks:
        for inner in b.nodes:
            found += _used(inner)
        found += b.outputs
    return found


def _join(node: Node, owner: dict[Node, _Group]) -> Optional[_Group]:
    """The group ``node`` joins (a new one for a linear reading no open group), or None."""
    first = node.inputs[0].node if node.inputs else None
    group = owner.get(first) if first is not None else None
    if group is not None and not group.open:
        group = None
    if dense_linear(node):
        group = group or _Group()
    elif group is None or not _pointwise_ok(node, owner, group):
        return None
    group.nodes.append(node)
    owner[node] = group
    return group


# -- the rewrite ----------------------------------------------------------------------------------

def _rewrite(nodes: list[Node]) -> bool:
    # every constant is copied in, tensors (the weights) included
    return replace_group(nodes, *_boundary(nodes, lambda v: v.node.kind == "prim::Constant"))
