"""Method overloads (``@_overload_method`` declarations): PyTorch's recurrent modules and a
module of the test's own, compared with eager PyTorch."""

from __future__ import annotations

from typing import Optional

import pytest
import torch
from torch import nn
from torch._jit_internal import _overload_method

import kiln


class Either(nn.Module):
    """``forward`` declared for a Tensor and for an int; one body serves both."""

    @_overload_method
    def forward(self, x: torch.Tensor) -> torch.Tensor:
        pass

    @_overload_method
    def forward(self, x: int) -> torch.Tensor:  # noqa: F811
        pass

    def forward(self, x):  # type: ignore[no-untyped-def]  # noqa: F811
        if isinstance(x, int):
            return torch.full((2,), float(x))
        return x * 2


class UsesEither(nn.Module):
    def __init__(self) -> None:
        super().__init__()
        self.either = Either()

    def forward(self, t: torch.Tensor, n: int) -> torch.Tensor:
        return self.either(t) + self.either(n)


class UsesEitherWrongly(nn.Module):
    def __init__(self) -> None:
        super().__init__()
        self.either = Either()

    def forward(self, s: str) -> torch.Tensor:
        return self.either(s)


def test_call_picks_the_overload_by_argument_type() -> None:
    m = UsesEither()
    t = torch.tensor([1.0, -2.0])
    torch.testing.assert_close(kiln.script(m)(t, 3), m(t, 3))


def test_no_overload_fits_names_the_overloads() -> None:
    with pytest.raises(kiln.CompileError) as info:
        kiln.script(UsesEitherWrongly())
    message = str(info.value)
    assert "no overload of Either.forward takes arguments of types (str)" in message
    assert "(Tensor) or (int)" in message


@pytest.mark.parametrize("batch_first", [True, False])
def test_lstm_scripted_alone(batch_first: bool) -> None:
    torch.manual_seed(0)
    m = nn.LSTM(4, 6, num_layers=2, batch_first=batch_first).eval()
    x = torch.randn(2, 3, 4)
    s = kiln.script(m)
    out, (h, c) = s(x, None)
    want, (wh, wc) = m(x)
    torch.testing.assert_close(out, want)
    torch.testing.assert_close(h, wh)
    torch.testing.assert_close(c, wc)
    state: Optional[tuple[torch.Tensor, torch.Tensor]] = (wh, wc)
    torch.testing.assert_close(s(x, state)[0], m(x, state)[0])


def test_gru_inside_a_module_keeps_gradients() -> None:
    torch.manual_seed(0)

    class Net(nn.Module):
        def __init__(self) -> None:
            super().__init__()
            self.gru = nn.GRU(3, 5)

        def forward(self, x: torch.Tensor) -> torch.Tensor:
            out, h = self.gru(x)
            return out.sum() + h.sum()

    m = Net()
    x = torch.randn(4, 2, 3)
    s = kiln.script(m)
    s(x).backward()
    got = m.gru.weight_hh_l0.grad.clone()
    m.zero_grad()
    m(x).backward()
    torch.testing.assert_close(got, m.gru.weight_hh_l0.grad)
