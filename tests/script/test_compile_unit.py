"""``kiln.compile``: TorchScript source text whose functions call one another.

The oracle is the same source run as Python (``exec`` of the test's own text) and, where this
PyTorch still has it, ``torch.jit.CompilationUnit``.
"""

from __future__ import annotations

from typing import Any

import pytest
import torch
from conftest import has_torch_jit, suppress_jit_warnings

import kiln

SOURCE = '''
def scale(x: Tensor, n: int = 2) -> Tensor:
    return x * n

def clip_sum(xs: List[Tensor], limit: float) -> Tensor:
    total = torch.zeros_like(xs[0])
    for x in xs:
        total = total + torch.clamp(x, max=limit)
    return total

def count_positive(x: Tensor) -> int:
    n = 0
    values: List[float] = x.tolist()
    for v in values:
        if v > 0:
            n += 1
    return n

def entry(x: Tensor, limit: float) -> Tuple[Tensor, int]:
    y = scale(x, 3) + scale(x)
    z = clip_sum([x, y, scale(y, n=-1)], limit)
    return z, count_positive(z)
'''


def _python_unit() -> dict[str, Any]:
    namespace: dict[str, Any] = {"torch": torch, "Tensor": torch.Tensor}
    namespace.update(List=list, Tuple=tuple)     # the names the source text uses
    exec(compile(SOURCE, "<test source>", "exec"), namespace)  # noqa: S102  (the test's own text)
    return namespace


def _check(got: Any, want: Any) -> None:
    assert type(got) is type(want)
    if isinstance(want, tuple):
        assert len(got) == len(want)
        for g, w in zip(got, want):
            _check(g, w)
    elif isinstance(want, torch.Tensor):
        torch.testing.assert_close(got, want)
    else:
        assert got == want


@pytest.mark.parametrize("limit", [0.5, 3.0])
def test_functions_call_each_other(limit: float) -> None:
    x = torch.linspace(-1.0, 1.0, 7)
    unit = kiln.compile(SOURCE)
    python = _python_unit()
    _check(unit.entry(x, limit), python["entry"](x, limit))
    _check(unit.scale(x), python["scale"](x))
    _check(unit.count_positive(x), python["count_positive"](x))


def test_code_of_caller_compiles_back() -> None:
    x = torch.linspace(-1.0, 1.0, 5)
    unit = kiln.compile(SOURCE)
    again = kiln.compile(unit.entry.code)
    _check(again.entry(x, 0.25), unit.entry(x, 0.25))


def test_matches_torchscript() -> None:
    if not has_torch_jit():
        pytest.skip("this PyTorch has no working torch.jit")
    x = torch.linspace(-2.0, 2.0, 9)
    with suppress_jit_warnings():
        ts = torch.jit.CompilationUnit(SOURCE)
        want = ts.entry(x, 1.0)
    _check(kiln.compile(SOURCE).entry(x, 1.0), want)
