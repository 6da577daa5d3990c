"""Instances share compilations only where their graphs would be the same.

Module instances whose type keys are equal share each method's graph; instances whose
constants differ share a method's graph only when the method (or a method of ``self`` it calls)
does not read the constants that differ.  Loading an archive shares the same way between the
mangled classes TorchScript writes for variants of one module class.  Every case compares the
outputs with eager PyTorch (and with ``torch.jit.load`` for archives), so a graph shared where
it must not be fails here.
"""

from __future__ import annotations

import io

import pytest
import torch
from torch import nn

import kiln


def _graph(m: nn.Module, name: str = "forward") -> object:
    return m.__dict__["_kiln_graphs"][name]


class Scale(nn.Module):
    __constants__ = ["k", "width"]

    def __init__(self, k: float, width: int) -> None:
        super().__init__()
        self.k = k
        self.width = width

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return x * self.k


class Shift(nn.Module):
    """forward does not read ``width``; the helper reads ``k``."""

    __constants__ = ["k", "width"]

    def __init__(self, k: float, width: int) -> None:
        super().__init__()
        self.k = k
        self.width = width

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.helper(x) + 1

    def helper(self, x: torch.Tensor) -> torch.Tensor:
        return x - self.k


class Pair(nn.Module):
    def __init__(self, a: nn.Module, b: nn.Module) -> None:
        super().__init__()
        self.a = a
        self.b = b

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return torch.cat([self.a(x), self.b(x)])


def test_constants_the_method_does_not_read_do_not_split_the_compilation() -> None:
    eager = Pair(Scale(2.0, 16), Scale(2.0, 32))
    m = kiln.script(eager)
    x = torch.randn(3)
    torch.testing.assert_close(m(x), eager(x))
    assert _graph(m.a) is _graph(m.b)


def test_constants_the_method_reads_split_the_compilation() -> None:
    eager = Pair(Scale(2.0, 16), Scale(3.0, 16))
    m = kiln.script(eager)
    x = torch.randn(3)
    torch.testing.assert_close(m(x), eager(x))
    assert _graph(m.a) is not _graph(m.b)


def test_a_constant_read_by_a_helper_splits_its_caller() -> None:
    eager = Pair(Shift(1.0, 8), Shift(5.0, 8))
    m = kiln.script(eager)
    x = torch.randn(4)
    torch.testing.assert_close(m(x), eager(x))
    torch.testing.assert_close(m.b.helper(x), eager.b.helper(x))


def test_a_shared_compilation_brings_the_helpers_it_calls() -> None:
    eager = Pair(Shift(1.0, 8), Shift(1.0, 9))     # differ in width only, which nothing reads
    m = kiln.script(eager)
    x = torch.randn(4)
    torch.testing.assert_close(m(x), eager(x))
    assert _graph(m.a) is _graph(m.b)
    torch.testing.assert_close(m.b.helper(x), eager.b.helper(x))


@pytest.mark.parametrize(("ka", "kb"), [(0.0, -0.0), (1, True), (1, 1.0)])
def test_constants_equal_in_python_but_not_the_same_value_are_kept_apart(ka: object, kb: object) -> None:
    class Div(nn.Module):
        __constants__ = ["k"]

        def __init__(self, k: object) -> None:
            super().__init__()
            self.k = k

        def forward(self, x: torch.Tensor) -> torch.Tensor:
            return torch.full_like(x, 1.0) / self.k

    eager = Pair(Div(ka), Div(kb))
    m = kiln.script(eager)
    x = torch.randn(2)
    torch.testing.assert_close(m(x), eager(x), equal_nan=True)
    assert torch.equal(torch.signbit(m(x)), torch.signbit(eager(x)))


class Net(nn.Module):
    """BatchNorms and convolutions of several widths: TorchScript writes a class per width."""

    def __init__(self) -> None:
        super().__init__()
        self.c1 = nn.Conv2d(3, 8, 3, padding=1)
        self.b1 = nn.BatchNorm2d(8)
        self.c2 = nn.Conv2d(8, 16, 3, padding=1, stride=2)
        self.b2 = nn.BatchNorm2d(16, eps=1e-3)
        self.c3 = nn.Conv2d(16, 16, 1)
        self.b3 = nn.BatchNorm2d(16)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = torch.relu(self.b1(self.c1(x)))
        x = torch.relu(self.b2(self.c2(x)))
        return self.b3(self.c3(x))


def _randomized(net: nn.Module) -> nn.Module:
    torch.manual_seed(0)
    for m in net.modules():
        if isinstance(m, nn.BatchNorm2d):
            m.running_mean.uniform_(-1, 1)
            m.running_var.uniform_(0.5, 2)
    return net.eval()


@pytest.mark.parametrize("capture", ["script", "trace"])
def test_loaded_variants_share_compilations_and_run_like_torch(capture: str) -> None:
    eager = _randomized(Net())
    x = torch.randn(2, 3, 8, 8)
    ts = torch.jit.script(eager) if capture == "script" else torch.jit.trace(eager, x)
    buf = io.BytesIO()
    torch.jit.save(ts, buf)
    loaded = kiln.load(buf.getvalue())
    with torch.no_grad():
        torch.testing.assert_close(loaded(x), eager(x))
        torch.testing.assert_close(loaded(x), torch.jit.load(io.BytesIO(buf.getvalue()))(x))
    # BatchNorm's code has its eps and momentum written in; b1/b3 and b2 differ in eps
    assert _graph(loaded.b1) is _graph(loaded.b3)
    assert _graph(loaded.b1) is not _graph(loaded.b2) or capture == "trace"
    # saving again writes each class's own text (its own constants)
    again = kiln.serialize(loaded)
    assert kiln.serialize(kiln.load(again)) == again
    with torch.no_grad():
        torch.testing.assert_close(torch.jit.load(io.BytesIO(again))(x), eager(x))
