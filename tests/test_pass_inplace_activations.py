"""The inplace_activations pass: rewrites only where no one else can see the input, and
leaves results bit-identical (checked with the reference interpreter and eager PyTorch)."""

from __future__ import annotations

import torch

import kiln
from kiln.ir.builder import Builder
from kiln.ir.graph import Graph
from kiln.ir.types import TENSOR, BoolType, IntType, ListType
from kiln.ir.verify import verify
from kiln.passes import PASSES
from kiln.runtime.interpreter import interpret


def conv_relu_graph(extra_use: bool = False) -> Graph:
    g = Graph()
    b = Builder(g)
    x, w = g.add_input(TENSOR, "x"), g.add_input(TENSOR, "w")
    ones = b.constant([1, 1], ListType(IntType))
    zeros = b.constant([0, 0], ListType(IntType))
    y = b.value("aten::conv2d", [x, w, b.constant(None), ones, zeros, ones, b.constant(1)])
    z = b.value("aten::relu", [y])
    g.register_output(b.tuple([z, y]) if extra_use else z)
    return g


def test_relu_after_conv_goes_in_place_with_equal_results() -> None:
    x, w = torch.randn(1, 3, 6, 6), torch.randn(4, 3, 3, 3)
    g = conv_relu_graph()
    before = interpret(g, [x, w])
    assert PASSES["inplace_activations"](g)
    verify(g)
    assert "aten::relu_" in str(g)
    after = interpret(g, [x, w])
    torch.testing.assert_close(after, before, rtol=0, atol=0)
    torch.testing.assert_close(after, torch.relu(torch.conv2d(x, w)), rtol=0, atol=0)


def test_a_result_with_another_use_is_left_alone() -> None:
    g = conv_relu_graph(extra_use=True)
    assert not PASSES["inplace_activations"](g)
    x, w = torch.randn(1, 3, 6, 6), torch.randn(4, 3, 3, 3)
    z, y = interpret(g, [x, w])
    assert (y < 0).any()  # the conv result is still intact beside its relu
    torch.testing.assert_close(z, torch.relu(y))


def test_graph_inputs_and_outer_block_values_are_left_alone() -> None:
    g = Graph()
    b = Builder(g)
    x, c = g.add_input(TENSOR, "x"), g.add_input(BoolType, "c")
    y = b.value("aten::mul.Tensor", [x, x])
    node = b.if_(c, [TENSOR])
    with b.at_end(node.blocks[0]):
        node.blocks[0].register_output(b.value("aten::sigmoid", [y]))
    with b.at_end(node.blocks[1]):
        node.blocks[1].register_output(b.value("aten::relu", [x]))
    g.register_output(node.output)
    assert not PASSES["inplace_activations"](g)  # y is outside the If's block; x is an input
    t = torch.randn(5)
    torch.testing.assert_close(interpret(g, [t, True]), torch.sigmoid(t * t))


def test_frozen_conv_net_uses_it_and_matches_eager() -> None:
    model = torch.nn.Sequential(torch.nn.Conv2d(3, 8, 3), torch.nn.BatchNorm2d(8), torch.nn.ReLU(),
                                torch.nn.Flatten(), torch.nn.Linear(8 * 4 * 4, 5), torch.nn.Tanh()).eval()
    x = torch.randn(2, 3, 6, 6)
    frozen = kiln.freeze(kiln.trace(model, (x,)))
    text = str(frozen.graph)
    assert "aten::relu_" in text and "aten::tanh_" in text
    y = torch.randn(3, 3, 6, 6)
    kept = y.clone()
    with torch.no_grad():
        torch.testing.assert_close(frozen(y), model(kept))
    assert torch.equal(y, kept)  # in-place activations never write the caller's input
