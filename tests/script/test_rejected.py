"""Programs ``kiln.script`` must reject, and how it must report them.

For every entry of ``tests/script/rejected``:

* ``test_kiln_rejects``: ``kiln.script`` raises :class:`kiln.CompileError` (never another
  exception type, and never accepts the program); ``lineno`` and ``filename`` are the line marked
  ``# error`` and its file; ``cause`` contains the expected reason; the message shows the file,
  the marked source line with a caret line under it, and -- for errors inside called functions --
  the caller's line (marked ``# call``) in its chain of calls.
* ``test_torchscript_rejects``: where the entry says TorchScript rejects the program too and this
  PyTorch has a working ``torch.jit``, ``torch.jit.script`` raises.

Entries Kiln does not reject well today are strict xfails with the reason, so the list of gaps is
visible in the test output and a fix shows up as an XPASS (which fails: update the entry).

``kiln.compile`` (source text rather than Python objects) is checked at the end: syntax errors,
type errors, errors in called functions and unsupported top-level statements.
"""

from __future__ import annotations

import re
import textwrap

import pytest
import torch

import kiln

from .rejected import Rejected, all_rejected
from .rejected._rejected import MARKER

ENTRIES = all_rejected()


def _params(entries: list[Rejected], *, with_xfail: bool) -> list[object]:
    params = []
    for e in entries:
        marks = [pytest.mark.xfail(strict=True, reason=e.xfail)] if with_xfail and e.xfail else []
        params.append(pytest.param(e, id=f"{e.group}.{e.id}", marks=marks))
    return params


def _compile_error(entry: Rejected) -> kiln.CompileError:
    """The CompileError ``kiln.script`` raises for ``entry``; fails the test on anything else."""
    target = entry.target()
    try:
        kiln.script(target)
    except kiln.CompileError as e:
        return e
    except Exception as e:  # any other exception type is the failure under test
        pytest.fail(f"kiln.script raised {type(e).__name__} instead of CompileError: {e}")
    pytest.fail("kiln.script accepted a program it must reject")


def _code_of(line: str) -> str:
    """The source line as the message shows it, without indentation or the ``# error`` marker."""
    code = line.strip()
    if code.endswith(MARKER):
        code = code[: -len(MARKER)].rstrip()
    return code


def check_rejection(entry: Rejected) -> None:
    """Every assertion of ``test_kiln_rejects`` (also used to check that the harness can fail)."""
    filename, lineno, line = entry.location()
    e = _compile_error(entry)
    message = str(e)
    assert e.lineno == lineno, f"error at line {e.lineno}, expected line {lineno}:\n{message}"
    assert e.filename == filename, f"error in {e.filename!r}, expected {filename!r}:\n{message}"
    assert entry.cause in e.cause, f"cause {e.cause!r} does not contain {entry.cause!r}"
    assert f'File "{filename}", line {lineno}' in message, f"no file/line header:\n{message}"
    lines = message.splitlines()
    code = _code_of(line)
    shown = [i for i, text in enumerate(lines) if code in text]
    assert shown, f"the message does not show the source line {code!r}:\n{message}"
    assert any(i + 1 < len(lines) and re.fullmatch(r"\s*\^+", lines[i + 1]) for i in shown), (
        f"no caret line under the source line:\n{message}")
    if entry.caller is not None:
        cfile, cline, _ = entry.call_site()
        site = f'File "{cfile}", line {cline}, in {entry.caller.__qualname__}'
        assert site in message, f"the message does not name the call {site!r}:\n{message}"


@pytest.mark.parametrize("entry", _params(ENTRIES, with_xfail=True))
def test_kiln_rejects(entry: Rejected) -> None:
    check_rejection(entry)


@pytest.mark.torch_jit
@pytest.mark.parametrize("entry", _params([e for e in ENTRIES if e.torchscript], with_xfail=False))
def test_torchscript_rejects(entry: Rejected) -> None:
    with pytest.raises(Exception):  # TorchScript's exception types vary
        torch.jit.script(entry.target())


# -- the corpus itself -------------------------------------------------------------------------------

def test_corpus_size_and_shape() -> None:
    """Enough programs, unique ids, each marked line found once, xfails a minority."""
    assert len(ENTRIES) >= 45
    ids = [f"{e.group}.{e.id}" for e in ENTRIES]
    assert len(ids) == len(set(ids)), "duplicate ids"
    for e in ENTRIES:
        e.location()  # raises unless exactly one line carries the marker
        if e.caller is not None:
            e.call_site()
    assert sum(1 for e in ENTRIES if e.xfail) * 3 < len(ENTRIES)


def test_harness_catches_a_wrong_line() -> None:
    """The checks can fail: the same program with the expected line moved is caught."""
    good = next(e for e in ENTRIES if e.id == "undefined_name")
    check_rejection(good)
    moved = Rejected(good.obj, 0, good.cause)   # the `def` line, not the marked one
    with pytest.raises(AssertionError, match="expected line"):
        check_rejection(moved)
    wrong_cause = Rejected(good.obj, cause="some other reason")
    with pytest.raises(AssertionError, match="does not contain"):
        check_rejection(wrong_cause)


def test_harness_catches_an_accepted_program() -> None:
    def fine(x: torch.Tensor) -> torch.Tensor:
        return x + 1  # error

    with pytest.raises(pytest.fail.Exception, match="accepted"):
        check_rejection(Rejected(fine, cause="anything"))


# -- kiln.compile: source text -----------------------------------------------------------------------

def _marked_line(source: str, marker: str = MARKER) -> tuple[int, str]:
    hits = [(i + 1, text) for i, text in enumerate(source.splitlines()) if text.rstrip().endswith(marker)]
    assert len(hits) == 1, f"expected one line marked {marker!r}"
    return hits[0]


def _compile_fails(source: str, filename: str) -> kiln.CompileError:
    try:
        kiln.compile(source, filename)
    except kiln.CompileError as e:
        return e
    except Exception as e:
        pytest.fail(f"kiln.compile raised {type(e).__name__} instead of CompileError: {e}")
    pytest.fail("kiln.compile accepted source it must reject")


SYNTAX_ERROR = textwrap.dedent("""\
    def ok(x: Tensor) -> Tensor:
        return x * 2

    def broken(x: Tensor) -> Tensor:
        y = x +  # error
        return y
""")

TYPE_ERROR = textwrap.dedent("""\
    def first(x: Tensor) -> Tensor:
        return x + 1

    def second(x: Tensor, n: int) -> str:
        if n > 0:
            return x  # error
        return "none"
""")

# ``entry`` comes first: kiln.compile compiles the functions in source order, so the error is
# found while compiling ``entry``'s call (a standalone ``helper`` would fail without a chain).
ERROR_IN_CALLEE = textwrap.dedent("""\
    def entry(x: Tensor) -> int:
        return helper([1, 2])  # call

    def helper(xs: List[int]) -> int:
        return xs + 1  # error
""")

TOP_LEVEL_STATEMENT = textwrap.dedent("""\
    def f(x: Tensor) -> Tensor:
        return x

    SCALE = 2.0  # error
""")


def test_compile_syntax_error() -> None:
    lineno, text = _marked_line(SYNTAX_ERROR)
    e = _compile_fails(SYNTAX_ERROR, "syntax_error.py")
    assert (e.filename, e.lineno) == ("syntax_error.py", lineno)
    assert "syntax error" in e.cause
    assert 'File "syntax_error.py", line 5' in str(e)
    assert _code_of(text) in str(e)


def test_compile_type_error() -> None:
    lineno, text = _marked_line(TYPE_ERROR)
    e = _compile_fails(TYPE_ERROR, "type_error.py")
    assert (e.filename, e.lineno) == ("type_error.py", lineno)
    assert "expected to be str, but it is Tensor" in e.cause
    message = str(e)
    assert f'File "type_error.py", line {lineno}, in second' in message
    lines = message.splitlines()
    i = next(i for i, line in enumerate(lines) if _code_of(text) in line)
    assert re.fullmatch(r"\s*\^+", lines[i + 1]), message


def test_compile_error_in_called_function() -> None:
    lineno, _ = _marked_line(ERROR_IN_CALLEE)
    call_line, _ = _marked_line(ERROR_IN_CALLEE, "# call")
    e = _compile_fails(ERROR_IN_CALLEE, "callee.py")
    assert (e.filename, e.lineno) == ("callee.py", lineno)
    assert "unsupported operand types for +: List[int] and int" in e.cause
    assert f'File "callee.py", line {call_line}, in entry' in str(e)


def test_compile_rejects_top_level_statement() -> None:
    lineno, _ = _marked_line(TOP_LEVEL_STATEMENT)
    e = _compile_fails(TOP_LEVEL_STATEMENT, "top_level.py")
    assert (e.filename, e.lineno) == ("top_level.py", lineno)
    assert "top-level" in e.cause


@pytest.mark.torch_jit
@pytest.mark.parametrize("source", [SYNTAX_ERROR, TYPE_ERROR, ERROR_IN_CALLEE],
                         ids=["syntax", "type", "callee"])
def test_torchscript_compile_rejects(source: str) -> None:
    with pytest.raises(Exception):
        torch.jit.CompilationUnit(source)
