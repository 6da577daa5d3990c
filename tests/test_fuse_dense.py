"""Dense fusion (kiln.passes.fuse_dense) and its C++ backend (kiln.backends.dense)."""

from __future__ import annotations

import logging
from pathlib import Path
from typing import Any

import pytest
import torch
from torch import nn

import kiln
from kiln.backends import dense, toolchain
from kiln.ir.graph import Graph, Node, subgraph_of
from kiln.passes import PASSES
from kiln.passes.fuse_dense import MAX_ROWS, fuse_dense
from kiln.passes.inplace_activations import functional_activations
from kiln.runtime import fusion

pytestmark = pytest.mark.usefixtures("kernel_cache")   # see conftest.kernel_cache


@pytest.fixture(scope="module")
def kernels_work(kernel_cache: Path) -> bool:
    return toolchain.find_compiler() is not None and toolchain.build_library('extern "C" int f() { return 1; }')\
        is not None


@pytest.fixture
def compiler(kernels_work: bool) -> None:
    if not kernels_work:
        pytest.skip("no working C++ compiler")


needs_compiler = pytest.mark.usefixtures("compiler")


class Net(nn.Module):
    def __init__(self, sizes: tuple[int, ...], act: str, bias: bool = True) -> None:
        super().__init__()
        self.layers = nn.ModuleList(nn.Linear(a, b, bias=bias) for a, b in zip(sizes, sizes[1:]))
        self.act = act

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        for i, layer in enumerate(self.layers):
            x = layer(x)
            if self.act == "relu":
                x = torch.relu(x)
            elif self.act == "tanh":
                x = torch.tanh(x) * 0.5 + 1.0
            elif self.act == "silu":
                x = nn.functional.silu(x)
            if i == len(self.layers) - 1:
                x = torch.sigmoid(x)
        return x


def optimized(model: nn.Module, x: torch.Tensor) -> Any:
    torch.manual_seed(0)
    return kiln.optimize_for_inference(kiln.trace(model.eval(), x))


def groups(graph: Graph) -> list[Node]:
    return [n for n in graph.all_nodes() if n.kind == "prim::FusionGroup"]


def linears_in_groups(graph: Graph) -> int:
    return sum(1 for g in groups(graph) for n in (subgraph_of(g) or Graph()).nodes if n.kind == "aten::linear")


CASES = [((3, 8, 16, 1), "relu", (1, 3)), ((5, 12, 7), "tanh", (4, 5)), ((6, 32, 32, 4), "silu", (16, 6)),
         ((4, 9), "relu", (4,)), ((3, 8, 2), "none", (2, 3))]


@pytest.mark.parametrize(("sizes", "act", "shape"), CASES)
def test_mlps_match_eager_and_fuse_into_one_group(sizes: tuple[int, ...], act: str, shape: tuple[int, ...]) -> None:
    torch.manual_seed(1)
    model = Net(sizes, act).eval()
    x = torch.randn(shape)
    with torch.no_grad():
        k = optimized(model, x)
        graph = k.graph_for(x)
        for _ in range(3):
            x2 = torch.randn(shape)
            torch.testing.assert_close(k(x2), model(x2))
    linears = len(sizes) - 1
    assert linears_in_groups(graph) == linears
    assert len([g for g in groups(graph) if dense.handles(subgraph_of(g) or Graph())]) == 1
    assert not [n for n in graph.all_nodes() if n.kind == "aten::linear" and n.owner is graph.block]


def test_no_bias_and_one_dimensional_input() -> None:
    torch.manual_seed(2)
    model = Net((7, 5, 3), "relu", bias=False).eval()
    x = torch.randn(7)
    with torch.no_grad():
        k = optimized(model, x)
        graph = k.graph_for(x)
        torch.testing.assert_close(k(x), model(x))
    assert linears_in_groups(graph) == 2


@pytest.mark.parametrize(("sizes", "shape"), [((200, 100, 2), (1, 200)), ((3, 8, 2), (MAX_ROWS + 1, 3))])
def test_sizes_above_the_limits_stay_unfused(sizes: tuple[int, ...], shape: tuple[int, ...]) -> None:
    torch.manual_seed(3)
    model = Net(sizes, "relu").eval()
    x = torch.randn(shape)
    with torch.no_grad():
        k = optimized(model, x)
        graph = k.graph_for(x)
        torch.testing.assert_close(k(x), model(x))
    first = [n for n in graph.all_nodes() if n.kind == "aten::linear"][0]
    assert first.owner is graph.block   # the first linear (too big here) is not in a group
    if sizes[0] == 200:   # the second layer alone is small enough
        assert linears_in_groups(graph) == 1


def test_a_shape_change_falls_back() -> None:
    torch.manual_seed(4)
    model = Net((3, 8, 16, 1), "relu").eval()
    with torch.no_grad():
        k = optimized(model, torch.randn(1, 3))
        for shape in [(1, 3), (5, 3), (1, 3), (3,), (40, 3), (1, 3)]:
            x = torch.randn(shape)
            torch.testing.assert_close(k(x), model(x))
        x = torch.randn(3, 1).t()   # the shape it was made for, other strides
        assert x.shape == (1, 3) and x.stride() != (3, 1)
        torch.testing.assert_close(k(x), model(x))


def test_with_grad_enabled_nothing_fuses_and_backward_works() -> None:
    torch.manual_seed(5)
    model = Net((3, 8, 16, 1), "relu").eval()
    k = optimized(model, torch.randn(1, 3))
    x = torch.randn(1, 3, requires_grad=True)
    graph = k.graph_for(x)
    assert linears_in_groups(graph) == 0
    x = torch.randn(2, 3, requires_grad=True)
    x_ref = x.detach().clone().requires_grad_(True)
    out = k(x)
    want = model(x_ref)
    torch.testing.assert_close(out, want)
    out.sum().backward()
    want.sum().backward()
    torch.testing.assert_close(x.grad, x_ref.grad)


def test_without_a_compiler_the_results_are_right(monkeypatch: pytest.MonkeyPatch,
                                                   caplog: pytest.LogCaptureFixture) -> None:
    monkeypatch.setattr(toolchain, "find_compiler", lambda: None)
    monkeypatch.setattr(toolchain, "_noted", set())
    toolchain.clear_memory_cache()
    caplog.set_level(logging.DEBUG, logger="kiln.fusion")
    torch.manual_seed(6)
    model = Net((3, 8, 16, 1), "relu").eval()
    x = torch.randn(2, 3)
    with torch.no_grad():
        k = optimized(model, x)
        graph = k.graph_for(x)
        torch.testing.assert_close(k(x), model(x))
    assert linears_in_groups(graph) == 3
    runner = fusion.build_runner(groups(graph)[0])
    assert runner.__code__.co_filename != "<kiln kernel runner>"
    assert any("no working C++ compiler" in r.getMessage() for r in caplog.records)
    toolchain.clear_memory_cache()


@needs_compiler
def test_the_kernel_is_compiled_and_exact_on_special_values() -> None:
    torch.manual_seed(7)
    model = Net((4, 6, 3), "relu").eval()
    x = torch.randn(3, 4)
    with torch.no_grad():
        k = optimized(model, x)
        graph = k.graph_for(x)
        runner = fusion.build_runner(groups(graph)[0])
        assert runner.__code__.co_filename == "<kiln kernel runner>"
        special = torch.tensor([[float("nan"), 1.0, 2.0, 3.0], [float("inf"), 0.0, -1.0, 1e30],
                                [0.0, -0.0, 1e-30, -5.0]])
        torch.testing.assert_close(runner(special)[0], model(special), equal_nan=True)


@needs_compiler
def test_weights_round_trip_exactly() -> None:
    lin = nn.Linear(2, 3).eval()
    with torch.no_grad():
        lin.weight.copy_(torch.tensor([[1e-38, 3.4e38], [-0.0, 0.1], [1 / 3, 2.0 ** -149]]))
        lin.bias.copy_(torch.tensor([0.7, -1e-7, 12345.678]))
    model = nn.Sequential(lin, nn.ReLU()).eval()
    x = torch.tensor([[1.0, 0.0]])
    with torch.no_grad():
        k = optimized(model, x)
        k(x)
        got = k(x)
    assert torch.equal(got, model(x))


def test_the_pass_is_idempotent_and_skips_grad_graphs() -> None:
    torch.manual_seed(8)
    model = Net((3, 8, 16, 1), "relu").eval()
    x = torch.randn(1, 3)
    traced = kiln.optimize_for_inference(kiln.trace(model, x))
    assert not fuse_dense(traced.graph.copy())   # traced with grad on: results require grad
    with torch.no_grad():
        graph = kiln.optimize_for_inference(kiln.trace(model, x)).graph.copy()
    functional_activations(graph)
    assert PASSES["fuse_dense"] is fuse_dense
    assert fuse_dense(graph)
    kiln.verify(graph)
    assert not fuse_dense(graph)
    assert linears_in_groups(graph) == 3
