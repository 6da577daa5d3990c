"""Apply activations in place on fresh, single-use results (a rewrite for inference graphs).

Before::

    %y : Tensor = aten::conv2d(%x, %w, %b, %stride, %padding, %dilation, %groups)
    %z : Tensor = aten::relu(%y)
    return (%z)

After::

    %y : Tensor = aten::conv2d(%x, %w, %b, %stride, %padding, %dilation, %groups)
    %z : Tensor = aten::relu_(%y)
    return (%z)

The out-of-place activation allocates a new tensor and writes it; the in-place form reuses
``%y``'s memory.  That is only correct when nothing else can see ``%y``: it has this one use,
it was just made by an operator that returns a new tensor (a convolution, linear, a matrix
product, arithmetic, a normalization -- none of which keep their own result for a backward
pass), and both nodes sit in the same block, so a loop cannot apply the activation twice.
The result is bit-identical.  :func:`kiln.freeze` runs it: frozen graphs serve inference.
"""

from __future__ import annotations

from kiln.errors import SchemaError
from kiln.ir.graph import Graph, Node, Value
from kiln.ir.ops import OpInfo, registry
from kiln.ir.types import TensorType

_IN_PLACE = {
    "aten::relu": "aten::relu_", "aten::relu6": "aten::relu6_", "aten::hardtanh": "aten::hardtanh_",
    "aten::leaky_relu": "aten::leaky_relu_", "aten::elu": "aten::elu_", "aten::silu": "aten::silu_",
    "aten::hardswish": "aten::hardswish_", "aten::hardsigmoid": "aten::hardsigmoid_",
    "aten::gelu": "aten::gelu_", "aten::sigmoid": "aten::sigmoid_", "aten::tanh": "aten::tanh_",
}
_FRESH = frozenset({
    "aten::conv1d", "aten::conv2d", "aten::conv3d", "aten::convolution", "aten::_convolution",
    "aten::conv_transpose1d", "aten::conv_transpose2d", "aten::conv_transpose3d",
    "aten::linear", "aten::addmm", "aten::mm", "aten::bmm", "aten::matmul",
    "aten::add", "aten::sub", "aten::mul", "aten::div",
    "aten::batch_norm", "aten::layer_norm", "aten::group_norm", "aten::instance_norm",
})


# activations whose result is floating point even for an integer input
_PROMOTING = frozenset({"aten::sigmoid", "aten::tanh"})


def _floating(v: Value) -> bool:
    t = v.type
    return isinstance(t, TensorType) and t.dtype is not None and t.dtype.is_floating_point


def inplace_activations(graph: Graph) -> bool:
    """Rewrite each qualifying activation to its in-place form; return whether any changed."""
    changed = False
    for node in list(graph.all_nodes()):
        replacement = _in_place_form(node)
        if replacement is not None:
            _rewrite(node, replacement)
            changed = True
    return changed


def _in_place_form(node: Node) -> OpInfo | None:
    name = _IN_PLACE.get(node.kind)
    if name is None or node.op is None or not node.inputs:
        return None
    y = node.inputs[0]
    producer = y.node
    if producer.kind not in _FRESH or producer.owner is not node.owner or len(y.uses) != 1:
        return None
    if producer.op is None or producer.op.schema.is_mutable:
        return None
    if node.kind in _PROMOTING and not _floating(y):
        return None   # sigmoid/tanh of an integer tensor is a new float tensor, not an in-place op
    overload = node.op.schema.overload
    try:
        info = registry.get(f"{name}.{overload}" if overload else name)
    except SchemaError:
        return None
    same_args = [a.type for a in info.schema.arguments] == [a.type for a in node.op.schema.arguments]
    return info if same_args else None


def _rewrite(node: Node, info: OpInfo) -> None:
    graph = node.graph
    new = graph.create(info.schema.name, list(node.inputs), [v.type for v in node.outputs], node.attrs)
    new.op, new.source, new.scope = info, node.source, node.scope
    new.insert_before(node)
    for old, fresh in zip(node.outputs, new.outputs):
        fresh.name = old.name
        old.replace_all_uses_with(fresh)
    node.destroy()


_OUT_OF_PLACE = {v: k for k, v in _IN_PLACE.items()}


def functional_activations(graph: Graph) -> bool:
    """The inverse rewrite, for the fuser: ``aten::relu_(%y)`` becomes ``aten::relu(%y)`` where
    ``%y`` has no other use (so no one can tell the difference), letting the activation join a
    fused pointwise chain.  :func:`inplace_activations` afterwards takes back what stayed out
    of fusion groups."""
    changed = False
    for node in list(graph.all_nodes()):
        name = _OUT_OF_PLACE.get(node.kind)
        if name is None or node.op is None or not node.inputs or len(node.inputs[0].uses) != 1:
            continue
        overload = node.op.schema.overload
        try:
            info = registry.get(f"{name}.{overload}" if overload else name)
        except SchemaError:
            continue
        if [a.type for a in info.schema.arguments] == [a.type for a in node.op.schema.arguments]:
            _rewrite(node, info)
            changed = True
    return changed
