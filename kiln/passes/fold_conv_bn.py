"""Fold an inference-mode ``aten::batch_norm`` into the convolution (or linear) feeding it.

Before (every tensor a ``prim::Constant``, as :func:`kiln.freeze` leaves them)::

    graph(%self : __torch__.Net, %x : Float(1, 3, 8, 8)):
      %w : Float(4, 3, 3, 3) = prim::Constant[value=<Tensor>]()
      %b : NoneType = prim::Constant()
      %s : int[] = prim::Constant[value=[1, 1]]()
      %p : int[] = prim::Constant[value=[0, 0]]()
      %g : int = prim::Constant[value=1]()
      %y : Float(1, 4, 6, 6) = aten::conv2d(%x, %w, %b, %s, %p, %s, %g)
      %gamma : Float(4) = prim::Constant[value=<Tensor>]()
      %beta : Float(4) = prim::Constant[value=<Tensor>]()
      %mean : Float(4) = prim::Constant[value=<Tensor>]()
      %var : Float(4) = prim::Constant[value=<Tensor>]()
      %false : bool = prim::Constant[value=0]()
      %mom : float = prim::Constant[value=0.1]()
      %eps : float = prim::Constant[value=1e-05]()
      %true : bool = prim::Constant[value=1]()
      %z : Float(1, 4, 6, 6) = aten::batch_norm(%y, %gamma, %beta, %mean, %var, %false, %mom, %eps, %true)
      return (%z)

After (the old constants are left for :mod:`kiln.passes.dce`)::

    graph(%self : __torch__.Net, %x : Float(1, 3, 8, 8)):
      ...
      %w.1 : Float(4, 3, 3, 3) = prim::Constant[value=<Tensor>]()
      %b.1 : Float(4) = prim::Constant[value=<Tensor>]()
      %y : Float(1, 4, 6, 6) = aten::conv2d(%x, %w.1, %b.1, %s, %p, %s, %g)
      return (%y)

Batch norm with running statistics is, per output channel ``c``, the affine map
``z = (y - mean[c]) * scale[c] + beta[c]`` with ``scale = gamma * rsqrt(var + eps)``.  A
convolution is linear in its weight and adds its bias per output channel, so
``W'[c] = W[c] * scale[c]`` and ``b'[c] = (b[c] - mean[c]) * scale[c] + beta[c]`` give the same
result in one operator.  The arithmetic runs in float64 and is cast back to the weight's dtype,
so folding adds one rounding per element rather than several.

An explicit walk.  A pair is folded only when the answer cannot change at run time: the
batch norm is in inference mode (``training`` a constant False), its statistics and ``eps``
are constants, the producer's weight and bias are constant tensors (a bias may be a None
constant; so may gamma and beta, read as ones and zeros), the producer's result has no other
use (it must not be observed unscaled), and the channel dimension is known to be dim 1: the
producer's result type has a known rank, that of a batched input (``weight.dim()`` for a
convolution, 2 for ``aten::linear``).  Transposed convolutions (whose weight holds output
channels in dim 1) are left alone.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Optional

import torch

from kiln.ir.graph import Graph, Node, Value
from kiln.ir.types import TensorType, type_of_value

# producer kind -> index of its ``transposed`` input (None: never transposed)
_PRODUCERS: dict[str, Optional[int]] = {
    "aten::conv1d": None, "aten::conv2d": None, "aten::conv3d": None,
    "aten::_convolution": 6, "aten::convolution": 6, "aten::linear": None,
}
_MISSING = object()   # an input that is not a prim::Constant


@dataclass
class _BatchNorm:
    """The constant operands of one inference-mode batch norm."""

    gamma: Optional[torch.Tensor]
    beta: Optional[torch.Tensor]
    mean: torch.Tensor
    var: torch.Tensor
    eps: float


def fold_conv_bn(graph: Graph) -> bool:
    """Fold each qualifying convolution/linear + batch_norm pair; return whether any was."""
    changed = False
    for node in list(graph.all_nodes()):
        if node.kind != "aten::batch_norm" or node.owner is None:
            continue
        bn = _batch_norm_constants(node)
        producer = node.inputs[0].node
        if bn is None or not _foldable_producer(producer, node):
            continue
        weight, bias = _const(producer.inputs[1]), _const(producer.inputs[2])
        assert isinstance(weight, torch.Tensor)
        new_weight, new_bias = _folded(weight, bias if isinstance(bias, torch.Tensor) else None, bn)
        for index, value in ((1, new_weight), (2, new_bias)):
            old = producer.inputs[index]
            producer.replace_input(index, _insert_constant(graph, producer, value, old.name))
        node.output.replace_all_uses_with(producer.output)
        node.destroy()
        changed = True
    return changed


def _const(v: Value) -> Any:
    """The value of a ``prim::Constant`` input, or ``_MISSING``."""
    return v.node.attrs.get("value") if v.node.kind == "prim::Constant" else _MISSING


def _batch_norm_constants(node: Node) -> Optional[_BatchNorm]:
    """The operands of ``node`` when it is a constant, inference-mode batch norm."""
    if len(node.inputs) < 8:
        return None
    gamma, beta, mean, var, training, _, eps = (_const(v) for v in node.inputs[1:8])
    if training is not False or not isinstance(eps, float):
        return None
    if not (isinstance(mean, torch.Tensor) and isinstance(var, torch.Tensor)):
        return None   # without running statistics batch norm uses the batch's: not foldable
    if any(t is not None and not isinstance(t, torch.Tensor) for t in (gamma, beta)):
        return None
    channels = mean.numel()
    if any(t is not None and t.numel() != channels for t in (gamma, beta, var)):
        return None
    return _BatchNorm(gamma, beta, mean, var, eps)


def _foldable_producer(producer: Node, bn_node: Node) -> bool:
    """Whether ``producer`` is a constant-weight conv/linear whose only use is ``bn_node``."""
    if producer.kind not in _PRODUCERS or len(producer.outputs) != 1:
        return False
    out = producer.output
    if len(out.uses) != 1 or out.uses[0].user is not bn_node or out.uses[0].index != 0:
        return False
    transposed = _PRODUCERS[producer.kind]
    if transposed is not None and _const(producer.inputs[transposed]) is not False:
        return False
    weight, bias = _const(producer.inputs[1]), _const(producer.inputs[2])
    if not isinstance(weight, torch.Tensor) or not (bias is None or isinstance(bias, torch.Tensor)):
        return False
    if not weight.is_floating_point() or weight.dim() < 2:
        return False
    channels = _const(bn_node.inputs[3]).numel()
    if weight.shape[0] != channels or (bias is not None and bias.numel() != channels):
        return False
    batched_rank = 2 if producer.kind == "aten::linear" else weight.dim()
    return _rank(out) == batched_rank


def _rank(v: Value) -> Optional[int]:
    t = v.type
    return len(t.shape) if isinstance(t, TensorType) and t.shape is not None else None


def _folded(weight: torch.Tensor, bias: Optional[torch.Tensor],
            bn: _BatchNorm) -> tuple[torch.Tensor, torch.Tensor]:
    """``(W', b')``: the producer's weight and bias with the batch norm folded in."""
    def f64(t: torch.Tensor) -> torch.Tensor:
        return t.to(device=weight.device, dtype=torch.float64)

    with torch.no_grad():
        mean, var = f64(bn.mean), f64(bn.var)
        gamma = torch.ones_like(mean) if bn.gamma is None else f64(bn.gamma)
        beta = torch.zeros_like(mean) if bn.beta is None else f64(bn.beta)
        b = torch.zeros_like(mean) if bias is None else f64(bias)
        scale = gamma * torch.rsqrt(var + bn.eps)
        shape = (-1,) + (1,) * (weight.dim() - 1)   # broadcast over the out-channel dim
        new_weight = f64(weight) * scale.reshape(shape)
        new_bias = (b - mean) * scale + beta
        return new_weight.to(weight.dtype), new_bias.to(weight.dtype)


def _insert_constant(graph: Graph, before: Node, value: torch.Tensor, name: Optional[str]) -> Value:
    node = graph.create("prim::Constant", (), [type_of_value(value)], {"value": value})
    node.source, node.scope = before.source, before.scope
    node.insert_before(before)
    node.output.name = name
    return node.output
