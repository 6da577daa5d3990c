"""``kiln.optimize_for_inference`` and the constant-folding seed, against eager PyTorch and
(where this PyTorch has it) ``torch.jit.optimize_for_inference``."""

from __future__ import annotations

import pytest
import torch
from conftest import has_torch_jit, suppress_jit_warnings
from torch import nn

import kiln
from kiln.passes import run_pipeline


def folding(x: torch.Tensor) -> torch.Tensor:
    a = 7
    b = 6
    c = 7
    d = a + b + c
    e = a * c  # noqa: F841  (unused: the optimizer drops it)
    return x + d


def _ops(graph: kiln.Graph) -> list[str]:
    return [n.kind for n in graph.nodes if n.kind != "prim::Constant"]


def test_folding_seed_leaves_one_add_of_20() -> None:
    f = kiln.script(folding)
    g = f.graph.copy()
    run_pipeline(g, "default", verify=True)
    assert _ops(g) == ["aten::add"], g
    add = next(n for n in g.nodes if n.kind == "aten::add")
    consts = [v.node.attrs.get("value") for v in add.inputs if v.node.kind == "prim::Constant"]
    assert 20 in consts, g
    x = torch.arange(3.0)
    torch.testing.assert_close(f(x), folding(x))


class Block(nn.Module):
    def __init__(self) -> None:
        super().__init__()
        self.conv = nn.Conv2d(3, 8, 3, padding=1)
        self.bn = nn.BatchNorm2d(8)
        self.drop = nn.Dropout(0.3)
        self.fc = nn.Linear(8, 4)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        y = torch.relu(self.bn(self.conv(x)))
        y = self.drop(y).mean(dim=(2, 3))
        return torch.sigmoid(self.fc(y) * 2.0 + 1.0)

    @torch.jit.export
    def features(self, x: torch.Tensor) -> torch.Tensor:
        return self.conv(x).relu()


def _model() -> Block:
    torch.manual_seed(0)
    m = Block()
    with torch.no_grad():
        m.bn.running_mean.uniform_(-0.5, 0.5)
        m.bn.running_var.uniform_(0.5, 2.0)
    return m.eval()


@pytest.mark.parametrize("capture", ["trace", "script"])
def test_matches_eager(capture: str) -> None:
    m = _model()
    x = torch.randn(2, 3, 6, 6)
    captured = kiln.trace(m, (x,)) if capture == "trace" else kiln.script(m)
    opt = kiln.optimize_for_inference(captured)
    kinds = [n.kind for n in opt.graph.nodes]
    assert "aten::dropout" not in kinds, opt.graph
    if capture == "trace":    # scripted, the BatchNorm's input-rank check stands in the way
        assert "aten::batch_norm" not in kinds, opt.graph
    with torch.no_grad():
        for shape in [(2, 3, 6, 6), (1, 3, 5, 7), (2, 3, 6, 6)]:
            x = torch.randn(shape)
            torch.testing.assert_close(opt(x), m(x))


def test_keeps_other_methods_and_leaves_the_original_alone() -> None:
    m = _model()
    s = kiln.script(m)
    opt = kiln.optimize_for_inference(s, other_methods=["features"])
    x = torch.randn(1, 3, 4, 4)
    with torch.no_grad():
        torch.testing.assert_close(opt.features(x), m.features(x))
    assert any(n.kind == "prim::GetAttr" for n in s.graph.nodes)    # the original is not frozen


def test_frozen_module_is_not_frozen_again() -> None:
    m = _model()
    frozen = kiln.freeze(kiln.trace(m, (torch.randn(1, 3, 4, 4),)))
    assert kiln.optimize_for_inference(frozen) is frozen


def test_rejects_a_plain_module() -> None:
    with pytest.raises(kiln.KilnError, match="expects a Kiln module"):
        kiln.optimize_for_inference(_model())  # type: ignore[arg-type]


def test_matches_torchscript() -> None:
    if not has_torch_jit():
        pytest.skip("this PyTorch has no working torch.jit")
    m = _model()
    x = torch.randn(2, 3, 6, 6)
    with suppress_jit_warnings():
        ts = torch.jit.optimize_for_inference(torch.jit.freeze(torch.jit.trace(m, (x,))))
        want = ts(x)
    opt = kiln.optimize_for_inference(kiln.trace(m, (x,)))
    with torch.no_grad():
        torch.testing.assert_close(opt(x), want)


def mul_add_relu_matmul(a: torch.Tensor, b: torch.Tensor, c: torch.Tensor, w: torch.Tensor) -> torch.Tensor:
    return torch.relu(a * b + c) @ w


@pytest.mark.parametrize("capture", ["trace", "script"])
def test_fusion_seed_graph_for(capture: str) -> None:
    """The pointwise chain becomes one fusion group behind its type check, with the unfused
    ops as the fallback; the matmul stays outside the group."""
    from kiln.backends.toolchain import find_compiler
    if find_compiler() is None:
        pytest.skip("no C++ compiler: the unfused graph runs")
    torch.manual_seed(0)
    xs = tuple(torch.randn(4, 4) for _ in range(4))
    f = kiln.trace(mul_add_relu_matmul, xs) if capture == "trace" else kiln.script(mul_add_relu_matmul)
    with torch.no_grad():
        g = f.graph_for(*xs)
        top = [n.kind for n in g.nodes if n.kind != "prim::Constant"]
        assert top == ["prim::TypeCheck", "prim::If", "aten::matmul"], g
        branch = next(n for n in g.nodes if n.kind == "prim::If")
        fused, fallback = ([n.kind for n in b.nodes if n.kind != "prim::Constant"] for b in branch.blocks)
        assert fused == ["prim::FusionGroup"], g
        assert [k.rstrip("_") for k in fallback] == ["aten::mul", "aten::add", "aten::relu"], g
        group = next(n for n in branch.blocks[0].nodes if n.kind == "prim::FusionGroup")
        assert [n.kind for n in group.attrs["Subgraph"].nodes if n.kind != "prim::Constant"] == \
            ["aten::mul", "aten::add", "aten::relu"]
        assert "with prim::FusionGroup_0 = graph(" in str(g)
        for shape in [(4, 4), (4, 4), (3, 4)]:     # the same types, then a fallback shape
            args = tuple(torch.randn(shape) for _ in range(3)) + (torch.randn(4, 2),)
            torch.testing.assert_close(f(*args), mul_add_relu_matmul(*args))
