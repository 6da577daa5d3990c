"""Module interfaces: an attribute typed by a ``@torch.jit.interface`` holds any module that
implements it; archives that use one load in Kiln, run, and save again (also for torch)."""

# TorchScript reads typing names in class annotations; no future import here.
# ruff: noqa: UP006, UP035

import io

import pytest
import torch
from conftest import has_torch_jit, suppress_jit_warnings
from torch import Tensor, nn

import kiln

if has_torch_jit():
    with suppress_jit_warnings():
        @torch.jit.interface
        class Scaler(nn.Module):
            def forward(self, x: Tensor) -> Tensor:
                pass

    class Double(nn.Module):
        def forward(self, x: Tensor) -> Tensor:
            return x * 2

    class Negate(nn.Module):
        def forward(self, x: Tensor) -> Tensor:
            return -x

    class UsesInterface(nn.Module):
        impl: Scaler

        def __init__(self, impl: nn.Module) -> None:
            super().__init__()
            self.impl = impl

        def forward(self, x: Tensor) -> Tensor:
            return self.impl.forward(x) + 1


@pytest.mark.parametrize("make", ["double", "negate"])
def test_module_interface_round_trip(jit, make: str) -> None:
    impl = Double() if make == "double" else Negate()
    eager = UsesInterface(impl)
    buf = io.BytesIO()
    jit.save(jit.script(eager), buf)
    loaded = kiln.load(buf.getvalue())
    x = torch.randn(3)
    torch.testing.assert_close(loaded(x), eager(x))
    blob = kiln.serialize(loaded)
    torch.testing.assert_close(jit.load(io.BytesIO(blob))(x), eager(x))
    assert kiln.serialize(kiln.load(blob)) == blob

