"""Conformance of ``kiln.script`` on the corpus: Python's own execution is the oracle.

For every case of ``tests/script/corpus``:

* ``test_python_baseline``: the program runs under plain Python (and raises where it should);
* ``test_kiln_matches_python``: ``kiln.script`` of it gives the same results as Python;
* ``test_torchscript_matches_python``: where this PyTorch still has ``torch.jit`` and the case is
  TorchScript (``torchscript=True``), ``torch.jit.script`` gives the same results too, which
  checks that the program is valid TorchScript with TorchScript's meaning;
* ``test_torchscript_rejects_beyond_ts``: the ``torchscript=False`` programs really are beyond
  TorchScript (``torch.jit.script`` refuses them);
* ``test_code_round_trip``: the TorchScript text Kiln prints (``.code``) compiles back
  (``kiln.compile`` for functions, ``ScriptModule.define`` for modules) to the same behaviour.

Every contender gets its own deep copy of the inputs, and module factories run under
``torch.manual_seed(0)``, so programs may mutate their arguments and modules may hold random
parameters.
"""

from __future__ import annotations

import copy
import enum
import math
from collections.abc import Callable
from typing import Any

import pytest
import torch
from conftest import has_torch_jit, suppress_jit_warnings

import kiln

from .corpus import Case, all_cases

CASES = all_cases()


def _params(cases: list[Case]) -> list[Any]:
    return [pytest.param(case, id=f"{case.group}.{case.id}") for case in cases]


ALL = _params(CASES)


def _kiln_params(cases: list[Case]) -> list[Any]:
    """As ``_params``; a case with a known Kiln gap is a strict xfail (it must start failing
    loudly once the gap is closed)."""
    return [pytest.param(case, id=f"{case.group}.{case.id}",
                         marks=[pytest.mark.xfail(strict=True, reason=case.kiln_gap)] if case.kiln_gap else [])
            for case in cases]


KILN = _kiln_params(CASES)

# -- running a case ------------------------------------------------------------------------------

_RAISED = object()  # stands for "this call raised, with the expected message"


def _build(case: Case, compile_: Callable[[Any], Any]) -> Callable[..., Any]:
    """The callable under test: ``compile_`` of the function, or the method of ``compile_(module)``."""
    if case.kind == "module":
        torch.manual_seed(0)
        module = case.obj()
        assert isinstance(module, torch.nn.Module), f"factory {case.id} returned {type(module).__name__}"
        return getattr(compile_(module), case.method)
    return compile_(case.obj)


def _run(fn: Callable[..., Any], case: Case, who: str) -> list[Any]:
    """Make every call of ``case`` on ``fn`` (each on a fresh deep copy of its arguments)."""
    results: list[Any] = []
    for i, args in enumerate(case.inputs):
        args = copy.deepcopy(args)
        if case.raises is None:
            results.append(fn(*args))
            continue
        with pytest.raises(Exception) as info:
            fn(*args)
        message = str(info.value)
        assert case.raises in message, (
            f"{who}, call {i}: expected an error mentioning {case.raises!r}, got "
            f"{type(info.value).__name__}: {message}")
        results.append(_RAISED)
    return results


def _python(case: Case) -> list[Any]:
    return _run(_build(case, lambda obj: obj), case, "python")


# -- comparing results ---------------------------------------------------------------------------

def _is_namedtuple(value: Any) -> bool:
    return isinstance(value, tuple) and hasattr(type(value), "_fields")


def assert_same(actual: Any, expected: Any, tol: tuple[float, float] | None = None, path: str = "result") -> None:
    """``actual`` is ``expected``: same types all the way down and equal values.

    Tensors: same dtype and ``assert_close``; floats: exactly equal (NaN equals NaN) unless
    ``tol`` gives ``(rtol, atol)``; containers: same type and length, elementwise (dicts also in
    the same key order); NamedTuples: same type name and fields; Enum members: same type name,
    name and value.
    """
    if isinstance(expected, torch.Tensor):
        assert isinstance(actual, torch.Tensor), f"{path}: expected a Tensor, got {type(actual).__name__}"
        assert actual.dtype == expected.dtype, f"{path}: dtype {actual.dtype} != {expected.dtype}"
        rtol, atol = tol if tol is not None else (None, None)
        torch.testing.assert_close(actual, expected, rtol=rtol, atol=atol, equal_nan=True, msg=lambda m: f"{path}: {m}")
        return
    if isinstance(expected, enum.Enum):
        assert isinstance(actual, enum.Enum), f"{path}: expected an Enum member, got {actual!r}"
        assert type(actual).__name__ == type(expected).__name__, f"{path}: {actual!r} != {expected!r}"
        assert (actual.name, actual.value) == (expected.name, expected.value), f"{path}: {actual!r} != {expected!r}"
        return
    if _is_namedtuple(expected):
        assert _is_namedtuple(actual), f"{path}: expected NamedTuple {type(expected).__name__}, got {actual!r}"
        assert type(actual).__name__ == type(expected).__name__, f"{path}: {type(actual).__name__} != {type(expected).__name__}"
        assert actual._fields == expected._fields, f"{path}: fields {actual._fields} != {expected._fields}"
        for field, a, e in zip(expected._fields, actual, expected):
            assert_same(a, e, tol, f"{path}.{field}")
        return
    if isinstance(expected, (list, tuple)):
        assert type(actual) is type(expected), f"{path}: expected {type(expected).__name__}, got {type(actual).__name__} ({actual!r})"
        assert len(actual) == len(expected), f"{path}: length {len(actual)} != {len(expected)} ({actual!r} vs {expected!r})"
        for i, (a, e) in enumerate(zip(actual, expected)):
            assert_same(a, e, tol, f"{path}[{i}]")
        return
    if isinstance(expected, dict):
        assert type(actual) is dict, f"{path}: expected a dict, got {type(actual).__name__}"
        assert list(actual) == list(expected), f"{path}: keys {list(actual)} != {list(expected)}"
        for key, e in expected.items():
            assert_same(actual[key], e, tol, f"{path}[{key!r}]")
        return
    assert type(actual) is type(expected), (
        f"{path}: expected {type(expected).__name__} {expected!r}, got {type(actual).__name__} {actual!r}")
    if isinstance(expected, float):
        if math.isnan(expected):
            assert math.isnan(actual), f"{path}: {actual!r} != nan"
        elif tol is not None:
            assert math.isclose(actual, expected, rel_tol=tol[0], abs_tol=tol[1]), f"{path}: {actual!r} != {expected!r}"
        else:
            assert actual == expected, f"{path}: {actual!r} != {expected!r}"
        return
    assert actual == expected, f"{path}: {actual!r} != {expected!r}"


def _check(actual: list[Any], expected: list[Any], case: Case) -> None:
    for i, (a, e) in enumerate(zip(actual, expected)):
        if e is _RAISED:
            continue
        assert_same(a, e, case.tol, f"call {i}")


# -- the corpus itself ---------------------------------------------------------------------------

def test_corpus_is_large_enough() -> None:
    assert len(CASES) >= 150, f"only {len(CASES)} conformance cases"


def test_case_ids_are_unique() -> None:
    seen: dict[str, str] = {}
    duplicates = []
    for case in CASES:
        if case.id in seen:
            duplicates.append(f"{case.id} ({seen[case.id]} and {case.group})")
        seen[case.id] = case.group
    assert not duplicates, f"duplicate case ids: {duplicates}"


@pytest.mark.parametrize("case", ALL)
def test_python_baseline(case: Case) -> None:
    """The oracle itself: every program runs (or raises as the case says) under plain Python."""
    assert len(_python(case)) == len(case.inputs)


# -- the contenders ------------------------------------------------------------------------------

@pytest.mark.parametrize("case", KILN)
def test_kiln_matches_python(case: Case) -> None:
    expected = _python(case)
    actual = _run(_build(case, kiln.script), case, "kiln.script")
    _check(actual, expected, case)


@pytest.mark.parametrize("case", ALL)
def test_torchscript_matches_python(case: Case) -> None:
    if not case.torchscript:
        pytest.skip("beyond TorchScript: torch.jit.script rejects this program")
    if not has_torch_jit():
        pytest.skip("this PyTorch has no working torch.jit")
    expected = _python(case)
    with suppress_jit_warnings():
        actual = _run(_build(case, torch.jit.script), case, "torch.jit.script")
    _check(actual, expected, case)


@pytest.mark.parametrize("case", _params([case for case in CASES if not case.torchscript]))
def test_torchscript_rejects_beyond_ts(case: Case) -> None:
    """A program marked beyond TorchScript must really be one: ``torch.jit.script`` refuses it, or
    (for the few programs where TorchScript silently gives Python syntax another meaning) the
    compiled program fails or returns something other than Python does on some call."""
    if not has_torch_jit():
        pytest.skip("this PyTorch has no working torch.jit")
    expected = _python(case)
    with suppress_jit_warnings():
        try:
            fn = _build(case, torch.jit.script)
        except Exception:
            return  # rejected at compile time
        try:
            actual = _run(fn, case, "torch.jit.script")
            _check(actual, expected, case)
        except (Exception, pytest.fail.Exception):
            return  # fails at run time or disagrees with Python
    pytest.fail("torch.jit.script compiles this program and agrees with Python: it is not beyond TorchScript")


@pytest.mark.parametrize("case", KILN)
def test_code_round_trip(case: Case) -> None:
    """``.code`` is TorchScript source that compiles back to a program with the same behaviour."""
    expected = _python(case)
    if case.kind == "module":
        torch.manual_seed(0)
        scripted = kiln.script(case.obj())
        again = copy.deepcopy(scripted)
        again.define(scripted.code)  # forward's code
        if case.method != "forward":
            again.define(getattr(scripted, case.method).code)
        fn = getattr(again, case.method)
    else:
        scripted = kiln.script(case.obj)
        unit = kiln.compile(scripted.code)
        fn = getattr(unit, scripted.name)
    actual = _run(fn, case, "kiln round trip")
    _check(actual, expected, case)
