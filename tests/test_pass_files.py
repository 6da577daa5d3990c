"""IR-in / IR-out tests of the passes: one case per file under ``tests/passes/<group>/``.

A case file (read by :func:`kiln.cli.split_ir_file`, so ``kiln opt CASE.ir`` runs it too)::

    # passes: cse,dce
    # what the case shows (more comment lines)
    graph(%x : Tensor):
      ...
    --- expected ---
    graph(%x : Tensor):
      ...

Each case parses its input, runs the passes as ``kiln opt`` does (:func:`run_pipeline` to a
fixed point), verifying the graph after every pass, prints the result and compares it exactly
with the expected half after parse + print normalisation.  The input and the result must also
*behave* the same when the reference interpreter runs both on sample inputs (where the graph's
inputs are tensors, ints, floats and bools) -- so an expected half regenerated with
``--update`` cannot bless a rewrite that changes meaning.

Regenerating the expected halves (then review the diff)::

    python -m pytest tests/passes tests/test_pass_files.py --update
    KILN_UPDATE_PASS_TESTS=1 python -m pytest tests/test_pass_files.py
"""

from __future__ import annotations

import difflib
import importlib
import itertools
import os
import textwrap
from pathlib import Path
from typing import Any, Optional

import pytest
import torch

import kiln
from kiln.cli import split_ir_file
from kiln.ir.graph import Graph
from kiln.ir.printer import Opaque
from kiln.ir.types import BoolType, FloatType, IntType, TensorType
from kiln.passes import PASSES, expand, run_pipeline
from kiln.runtime.interpreter import interpret

CASE_DIR = Path(__file__).parent / "passes"
CASES = sorted(CASE_DIR.rglob("*.ir"))
NEW_PASSES = ("constant_fold", "cse", "peephole")
MIN_CASES_PER_PASS = 8


def _update_requested(config: pytest.Config) -> bool:
    return bool(config.getoption("--update", default=False) or os.environ.get("KILN_UPDATE_PASS_TESTS"))


@pytest.mark.parametrize("path", CASES, ids=lambda p: p.relative_to(CASE_DIR).as_posix())
def test_pass_file(path: Path, request: pytest.FixtureRequest) -> None:
    case = split_ir_file(path.read_text(encoding="utf-8"))
    assert case.passes, f"{path}: no '# passes: ...' line in the header"
    graph = kiln.parse_graph(case.input)
    kiln.verify(graph)
    original = graph.copy()
    ran: list[str] = []

    def after_each(name: str, round_: int, changed: bool, g: Graph) -> None:
        kiln.verify(g)
        ran.append(name)

    run_pipeline(graph, case.passes, verify=True, after_each=after_each)
    assert ran, "no pass ran"
    actual = str(graph)
    assert str(kiln.parse_graph(actual)) == actual, "the result does not round-trip through the text form"
    _check_same_behaviour(original, graph)

    if _update_requested(request.config):
        if case.expected is None or str(kiln.parse_graph(case.expected)) != actual:
            path.write_text(case.with_expected(actual), encoding="utf-8")
        return
    assert case.expected is not None, f"{path}: no expected half; run with --update to write it"
    expected = str(kiln.parse_graph(case.expected))
    if actual != expected:
        diff = "".join(difflib.unified_diff(expected.splitlines(True), actual.splitlines(True),
                                            "expected", "actual"))
        pytest.fail(f"{path.name}: the passes' output differs from the expected half:\n{diff}")


def test_every_new_pass_has_enough_cases() -> None:
    for name in NEW_PASSES:
        cases = list((CASE_DIR / name).glob("*.ir"))
        assert len(cases) >= MIN_CASES_PER_PASS, f"{name}: {len(cases)} cases"


def test_case_headers_name_known_passes() -> None:
    for path in CASES:
        spec = split_ir_file(path.read_text(encoding="utf-8")).passes
        assert spec and set(expand(spec)) <= set(PASSES), path


def test_case_groups_run_their_own_pass() -> None:
    for path in CASES:
        group = path.parent.name
        if group in PASSES:
            spec = split_ir_file(path.read_text(encoding="utf-8")).passes
            assert spec is not None and group in expand(spec), f"{path}: does not run {group}"


# -- behaviour: the interpreter on both graphs -------------------------------------------------------

def _samples(graph: Graph) -> Optional[list[list[Any]]]:
    """Argument lists covering each bool input both ways; None when an input type has no
    sample (objects, containers) or a constant has no payload (``<Tensor>``)."""
    if any(isinstance(n.attrs.get("value"), Opaque) for n in graph.all_nodes()):
        return None
    choices: list[list[Any]] = []
    for v in graph.inputs:
        t = v.type
        if isinstance(t, TensorType):
            shape = t.shape if t.shape is not None and all(d is not None for d in t.shape) else (2, 3)
            choices.append([torch.randn(tuple(shape)).to(t.dtype or torch.float32)])
        elif t == BoolType:
            choices.append([True, False])
        elif t == IntType:
            choices.append([3])
        elif t == FloatType:
            choices.append([1.5])
        else:
            return None
    return [list(args) for args in itertools.islice(itertools.product(*choices), 8)]


def _run(graph: Graph, args: list[Any]) -> tuple[str, Any]:
    torch.manual_seed(0)
    fresh = [a.clone() if isinstance(a, torch.Tensor) else a for a in args]
    try:
        return "ok", interpret(graph, fresh)
    except Exception as e:
        return "raised", type(e)


def _check_same_behaviour(before: Graph, after: Graph) -> None:
    for args in _samples(before) or []:
        want, got = _run(before, args), _run(after, args)
        assert want[0] == got[0], f"on {args}: before {want}, after {got}"
        _assert_same(got[1], want[1])


def _assert_same(got: Any, want: Any) -> None:
    if isinstance(want, torch.Tensor):
        torch.testing.assert_close(got, want, equal_nan=True, rtol=0, atol=0)
    elif isinstance(want, (list, tuple)):
        assert type(got) is type(want) and len(got) == len(want), (got, want)
        for g, w in zip(got, want):
            _assert_same(g, w)
    else:
        assert type(got) is type(want) and (got == want or got != got and want != want), (got, want)


# -- the passes' own docstrings ----------------------------------------------------------------------

def _snippet(doc: str, label: str) -> str:
    """The indented IR block after the line starting with ``label`` and ending with ``::``."""
    lines = doc.splitlines()
    start = next(i for i, line in enumerate(lines) if line.startswith(label) and line.rstrip().endswith("::"))
    block: list[str] = []
    for line in lines[start + 1:]:
        if line.strip() and not line.startswith(" "):
            break
        block.append(line)
    return textwrap.dedent("\n".join(block)).strip("\n") + "\n"


@pytest.mark.parametrize("name", NEW_PASSES)
def test_docstring_example_is_what_the_pass_does(name: str) -> None:
    module = importlib.import_module(f"kiln.passes.{name}")
    doc = module.__doc__ or ""
    graph = kiln.parse_graph(_snippet(doc, "Before"))
    run_pipeline(graph, [name], verify=True)
    assert str(graph) == str(kiln.parse_graph(_snippet(doc, "After")))
