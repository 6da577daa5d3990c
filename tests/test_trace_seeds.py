"""The seed examples of the tracer, checked against eager PyTorch and torch.jit.trace."""

from __future__ import annotations

import warnings

import pytest
import torch
import torch.nn.functional as F
from conftest import has_torch_jit

import kiln
from kiln.ir.parser import parse_graph
from kiln.ir.verify import verify


def roundtrip(g: kiln.Graph) -> None:
    verify(g)
    text = str(g)
    assert str(parse_graph(text)) == text


class MyCell(torch.nn.Module):
    def __init__(self) -> None:
        super().__init__()
        self.linear = torch.nn.Linear(4, 4)

    def forward(self, x: torch.Tensor, h: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        new_h = torch.tanh(self.linear(x) + h)
        return new_h, new_h


def test_mycell_graph_code_values() -> None:
    cell = MyCell()
    x, h = torch.rand(3, 4), torch.rand(3, 4)
    traced = kiln.trace(cell, (x, h))
    torch.testing.assert_close(traced(x, h), cell(x, h))
    text = str(traced.graph)
    assert 'prim::GetAttr[name="linear"]' in text
    assert 'prim::CallMethod[name="forward"]' in text
    assert "aten::tanh" in text and "aten::add" in text
    assert "test_trace_seeds.py:" in text  # the user's file:line on nodes
    inlined = str(traced.inlined_graph)
    assert "aten::linear" in inlined and "prim::CallMethod" not in inlined
    code = traced.code
    assert "def forward(self" in code and "torch.tanh" in code
    for g in (traced.graph, traced.inlined_graph, traced.linear.graph):
        roundtrip(g)
    x5, h5 = torch.rand(5, 4), torch.rand(5, 4)
    torch.testing.assert_close(traced(x5, h5), cell(x5, h5))
    if has_torch_jit():
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            ts = torch.jit.trace(cell, (x, h))
        torch.testing.assert_close(traced(x5, h5), ts(x5, h5))


class DropoutMLP(torch.nn.Module):
    def __init__(self) -> None:
        super().__init__()
        self.net = torch.nn.Sequential(
            torch.nn.Linear(8, 16), torch.nn.ReLU(), torch.nn.Dropout(0.5),
            torch.nn.Linear(16, 16), torch.nn.ReLU(), torch.nn.Dropout(0.5),
            torch.nn.Linear(16, 1))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.net(x)


def test_dropout_mlp_trained_then_traced_in_eval() -> None:
    model = DropoutMLP()
    opt = torch.optim.SGD(model.parameters(), lr=0.1)
    x, y = torch.randn(32, 8), torch.randn(32, 1)
    for _ in range(5):
        opt.zero_grad()
        F.mse_loss(model(x), y).backward()
        opt.step()
    model.eval()
    with pytest.warns(kiln.TracerWarning, match="eval mode"):
        traced = kiln.trace(model, (x,))
    xs = torch.randn(7, 8)
    torch.testing.assert_close(traced(xs), model(xs))
    assert "aten::dropout" in str(traced.inlined_graph)
    roundtrip(traced.inlined_graph)


def branchy(x: torch.Tensor) -> torch.Tensor:
    if x.sum() > 0:
        return x * 2
    return x - 1


def test_tensor_condition_warns_bakes_and_guards() -> None:
    x = torch.ones(3)
    with pytest.warns(kiln.TracerWarning, match="test_trace_seeds.py"):
        traced = kiln.trace(branchy, (x,))
    torch.testing.assert_close(traced(x * 3), branchy(x * 3))
    # TorchScript would silently return x * 2 here; Kiln's trace refuses.
    with pytest.raises(kiln.KilnRuntimeError, match="other branch"):
        traced(-x)
    roundtrip(traced.graph)


def sum_rows(x: torch.Tensor) -> torch.Tensor:
    return torch.stack([y.sum() for y in torch.unbind(x)])


def test_unbind_stack_never_silently_wrong() -> None:
    traced = kiln.trace(sum_rows, (torch.rand(10, 5, 5),))
    x = torch.rand(10, 5, 5)
    torch.testing.assert_close(traced(x), sum_rows(x))
    with pytest.raises(kiln.KilnError, match="10"):
        traced(torch.rand(11, 5, 5))


class TwoMethods(torch.nn.Module):
    def __init__(self) -> None:
        super().__init__()
        self.proj = torch.nn.Linear(4, 3)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return torch.relu(self.proj(x))

    def score(self, x: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
        return (self.proj(x) * y).sum(-1)


def test_trace_module_two_methods() -> None:
    m = TwoMethods()
    x, y = torch.rand(2, 4), torch.rand(2, 3)
    traced = kiln.trace_module(m, {"forward": x, "score": (x, y)})
    torch.testing.assert_close(traced(x), m(x))
    torch.testing.assert_close(traced.score(x, y), m.score(x, y))
    assert "aten::sum" in str(traced.score.graph)
    roundtrip(traced.score.graph)


class ModeNet(torch.nn.Module):
    def __init__(self) -> None:
        super().__init__()
        self.bn = torch.nn.BatchNorm1d(4)
        self.drop = torch.nn.Dropout(0.5)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.drop(self.bn(x))


def test_baked_mode_versus_respect_mode() -> None:
    torch.manual_seed(0)
    m = ModeNet()
    x = torch.randn(8, 4)
    m.eval()
    with pytest.warns(kiln.TracerWarning):
        baked = kiln.trace(m, (x,))
    follows = kiln.trace(m, (x,), respect_mode=True)
    assert "prim::If" in str(follows.inlined_graph) or "prim::If" in str(follows.bn.graph)
    # eval: both agree with eager
    torch.testing.assert_close(baked(x), m(x))
    torch.testing.assert_close(follows(x), m(x))
    # train: the baked trace stays in eval mode, the respect_mode one follows .train()
    baked.train()
    follows.train()
    torch.manual_seed(1)
    out_follow = follows(x)
    m.train()
    torch.manual_seed(1)
    out_eager = m(x)
    torch.testing.assert_close(out_follow, out_eager)
    m.eval()
    torch.testing.assert_close(baked(x), m(x))
    roundtrip(follows.bn.graph)


class Reshaper(torch.nn.Module):
    def forward(self, x: torch.Tensor) -> torch.Tensor:
        b = x.size(0)
        return x.reshape(b, -1) * x.shape[-1]


def test_sizes_are_recorded_as_size_ops() -> None:
    traced = kiln.trace(Reshaper(), (torch.rand(2, 3, 4),))
    assert "aten::size" in str(traced.graph)
    x = torch.rand(6, 3, 4)
    torch.testing.assert_close(traced(x), Reshaper()(x))


def test_wrong_inputs_name_the_graph_input() -> None:
    traced = kiln.trace(MyCell(), (torch.rand(3, 4), torch.rand(3, 4)))
    with pytest.raises(kiln.InputError, match="h"):
        traced(torch.rand(3, 4), 3)
    with pytest.raises(kiln.InputError):
        traced(torch.rand(3, 4))


def test_gradients_flow_like_eager() -> None:
    torch.manual_seed(0)
    cell = MyCell()
    x, h = torch.rand(3, 4), torch.rand(3, 4)
    traced = kiln.trace(cell, (x, h))
    traced(x, h)[0].sum().backward()
    grads = [p.grad.clone() for p in cell.parameters()]  # shared parameters
    for p in cell.parameters():
        p.grad = None
    cell(x, h)[0].sum().backward()
    for g, p in zip(grads, cell.parameters()):
        torch.testing.assert_close(g, p.grad)


def test_check_inputs_catch_a_trace_that_does_not_generalize() -> None:
    with pytest.raises(kiln.TracingCheckError):
        kiln.trace(sum_rows, (torch.rand(3, 2),), check_inputs=[(torch.rand(4, 2),)])


@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs CUDA")
def test_cpu_trace_runs_on_cuda() -> None:
    cell = MyCell()
    traced = kiln.trace(cell, (torch.rand(3, 4), torch.rand(3, 4)))
    traced.cuda()
    cell.cuda()
    x, h = torch.rand(3, 4, device="cuda"), torch.rand(3, 4, device="cuda")
    torch.testing.assert_close(traced(x, h), cell(x, h))


# -- each Python conversion of a tensor warns at the user's line -----------------------------------

def uses_int(x: torch.Tensor) -> torch.Tensor:
    n = int(x.sum())
    return x * n


def uses_float(x: torch.Tensor) -> torch.Tensor:
    return x + float(x.max())


def uses_item(x: torch.Tensor) -> torch.Tensor:
    return x - x.mean().item()


def uses_tolist(x: torch.Tensor) -> torch.Tensor:
    return x * len(x.tolist())


BAKED = torch.arange(4.0)


def uses_global_tensor(x: torch.Tensor) -> torch.Tensor:
    return x + BAKED


@pytest.mark.parametrize("fn,kind", [(uses_int, "guarded"), (uses_float, "guarded"), (uses_item, "dynamic"),
                                     (uses_tolist, "baked"), (uses_global_tensor, "baked")])
def test_python_conversions_warn_at_the_user_line(fn: object, kind: str) -> None:
    x = torch.arange(4.0)
    with pytest.warns(kiln.TracerWarning, match=r"test_trace_seeds\.py:\d+"):
        traced = kiln.trace(fn, (x,))  # type: ignore[arg-type]
    torch.testing.assert_close(traced(x), fn(x))  # type: ignore[operator]
    y = torch.arange(4.0) * 3 + 1
    if kind == "dynamic":  # .item() stays a value computed from the input
        torch.testing.assert_close(traced(y), fn(y))  # type: ignore[operator]
    elif kind == "guarded":  # int(t) / float(t) are fixed, and checked: never silently wrong
        with pytest.raises(kiln.KilnRuntimeError, match="other branch"):
            traced(y)


def test_keyword_example_inputs() -> None:
    def f(x: torch.Tensor, scale: torch.Tensor) -> torch.Tensor:
        return x * scale
    x, s = torch.rand(3), torch.rand(3)
    traced = kiln.trace(f, example_kwarg_inputs={"scale": s, "x": x})
    assert [v.name for v in traced.graph.inputs] == ["x", "scale"]
    torch.testing.assert_close(traced(x, s), f(x, s))


def test_traced_size_comparison_is_guarded() -> None:
    def f(x: torch.Tensor) -> torch.Tensor:
        if x.size(0) > 2:
            return x * 2
        return x
    with pytest.warns(kiln.TracerWarning, match="traced size"):
        traced = kiln.trace(f, (torch.rand(4, 3),))
    y = torch.rand(6, 3)
    torch.testing.assert_close(traced(y), f(y))
    with pytest.raises(kiln.KilnRuntimeError, match="other branch"):
        traced(torch.rand(2, 3))
