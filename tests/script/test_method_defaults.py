"""Module methods with default parameter values: calls may leave them out or name them, on
the scripted module, its frozen copy, and methods defined again from its ``.code``."""

from __future__ import annotations

from typing import Optional

import pytest
import torch
from conftest import has_torch_jit, suppress_jit_warnings
from torch import nn

import kiln


class Scaled(nn.Module):
    def forward(self, x: torch.Tensor, s: float = 2.0, bias: Optional[torch.Tensor] = None) -> torch.Tensor:
        y = x * s
        if bias is not None:
            y = y + bias
        return y

    @torch.jit.export
    def shifted(self, x: torch.Tensor, n: int = 3) -> torch.Tensor:
        return x + n


X = torch.arange(3.0)
CALLS = [((X,), {}), ((X, 3.0), {}), ((X,), {"bias": X}), ((X,), {"s": 0.5, "bias": X}),
         ((X, 1.0, X), {})]


@pytest.mark.parametrize("args, kwargs", CALLS)
def test_forward_defaults(args: tuple[torch.Tensor, ...], kwargs: dict[str, object]) -> None:
    m = Scaled()
    s = kiln.script(m)
    torch.testing.assert_close(s(*args, **kwargs), m(*args, **kwargs))
    torch.testing.assert_close(s.forward(*args, **kwargs), m(*args, **kwargs))


def test_exported_method_defaults_and_freeze() -> None:
    m = Scaled().eval()
    s = kiln.script(m)
    torch.testing.assert_close(s.shifted(X), m.shifted(X))
    torch.testing.assert_close(s.shifted(X, n=-1), m.shifted(X, n=-1))
    frozen = kiln.freeze(s, preserved_attrs=["shifted"])
    torch.testing.assert_close(frozen(X), m(X))
    torch.testing.assert_close(frozen.shifted(X), m.shifted(X))


def test_defaults_survive_the_code_round_trip() -> None:
    s = kiln.script(Scaled())
    assert "s: float=2." in s.code and "bias: Optional[Tensor]=None" in s.code
    other = kiln.script(Scaled())
    other.define(s.code.replace("def forward(", "def again("))
    torch.testing.assert_close(other.again(X), Scaled()(X))


def test_missing_input_without_default_is_an_input_error() -> None:
    s = kiln.script(Scaled())
    with pytest.raises(kiln.InputError, match="forward"):
        s()


def test_matches_torchscript() -> None:
    if not has_torch_jit():
        pytest.skip("this PyTorch has no working torch.jit")
    with suppress_jit_warnings():
        ts = torch.jit.script(Scaled())
        want = [ts(*a, **k) for a, k in CALLS]
    s = kiln.script(Scaled())
    for (a, k), w in zip(CALLS, want):
        torch.testing.assert_close(s(*a, **k), w)
