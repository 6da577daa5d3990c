"""``kiln opt``: read an IR file, run passes (verifying after each), print the result."""

from __future__ import annotations

import io
import os
import subprocess
import sys
from pathlib import Path

import pytest

import kiln
from kiln.cli import main, split_ir_file
from kiln.ir.graph import Graph
from kiln.passes import PASSES

REPO = Path(__file__).resolve().parent.parent

DUPLICATES = """\
graph(%x : Tensor,
      %n : int):
  %two : int = prim::Constant[value=2]()
  %three : int = prim::Constant[value=3]()
  %k : int = aten::mul(%two, %three)
  %a : Tensor = aten::relu(%x)
  %b : Tensor = aten::relu(%x)
  %y : Tensor = aten::add(%a, %b, %k)
  return (%y)
"""

OPTIMIZED = """\
graph(%x : Tensor,
      %n : int):
  %k : int = prim::Constant[value=6]()
  %a : Tensor = aten::relu(%x)
  %y : Tensor = aten::add(%a, %a, %k)
  return (%y)
"""


@pytest.fixture
def ir_file(tmp_path: Path) -> Path:
    path = tmp_path / "g.ir"
    path.write_text(DUPLICATES)
    return path


def _one_line_error(err: str) -> str:
    lines = err.strip().splitlines()
    assert len(lines) == 1, err
    assert "Traceback" not in err
    return lines[0]


def test_opt_runs_the_listed_passes(ir_file: Path, capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["opt", str(ir_file), "-p", "constant_fold,cse"]) == 0
    out = capsys.readouterr().out
    # without dce the dead operands stay; the fold and the merge happened
    assert "prim::Constant[value=6]" in out and out.count("aten::relu") == 1
    kiln.verify(kiln.parse_graph(out))


def test_opt_named_pipeline_and_default(ir_file: Path, capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["opt", str(ir_file), "-p", "default"]) == 0
    assert capsys.readouterr().out == OPTIMIZED
    assert main(["opt", str(ir_file)]) == 0   # no -p: the default pipeline
    assert capsys.readouterr().out == OPTIMIZED
    assert main(["opt", str(ir_file), "-p", "constant_fold, dce,cse"]) == 0   # spaces are allowed
    assert capsys.readouterr().out == OPTIMIZED


def test_opt_print_after_each(ir_file: Path, capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["opt", str(ir_file), "-p", "cse,dce", "--print-after-each"]) == 0
    out = capsys.readouterr().out
    headers = [line for line in out.splitlines() if line.startswith("# ")]
    assert headers == ["# after cse (round 1): changed", "# after dce (round 1): unchanged",
                       "# after cse (round 2): unchanged", "# after dce (round 2): unchanged",
                       "# result"]
    assert out.count("graph(") == 5
    assert out.endswith(str(kiln.parse_graph(out.split("# result\n")[1])))


def test_opt_reads_a_pass_test_case(capsys: pytest.CaptureFixture[str]) -> None:
    path = REPO / "tests" / "passes" / "cse" / "nested_blocks.ir"
    case = split_ir_file(path.read_text())
    assert main(["opt", str(path)]) == 0   # the case's own '# passes:' line
    assert case.expected is not None
    assert capsys.readouterr().out == str(kiln.parse_graph(case.expected))
    assert main(["opt", str(path), "-p", "peephole"]) == 0   # -p wins over the header
    assert capsys.readouterr().out == str(kiln.parse_graph(case.input))


def test_opt_output_file_and_stdin(ir_file: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str],
                                   monkeypatch: pytest.MonkeyPatch) -> None:
    out_path = tmp_path / "out.ir"
    assert main(["opt", str(ir_file), "-o", str(out_path)]) == 0
    assert out_path.read_text() == OPTIMIZED and capsys.readouterr().out == ""
    monkeypatch.setattr(sys, "stdin", io.StringIO(DUPLICATES))
    assert main(["opt", "-", "-p", "default"]) == 0
    assert capsys.readouterr().out == OPTIMIZED


def test_opt_unknown_pass(ir_file: Path, capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["opt", str(ir_file), "-p", "cse,no_such_pass"]) == 2
    captured = capsys.readouterr()
    assert captured.out == ""
    line = _one_line_error(captured.err)
    assert line.startswith("kiln opt: error: unknown pass(es) 'no_such_pass'") and "cse" in line


def test_opt_bad_ir(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    path = tmp_path / "bad.ir"
    path.write_text("graph(%x : Tensor):\n  %y : Tensor = aten::relu(%z)\n  return (%y)\n")
    assert main(["opt", str(path), "-p", "cse"]) == 2
    line = _one_line_error(capsys.readouterr().err)
    assert line == f"kiln opt: error: {path}: line 2, col 28: value %z is used before it is defined"

    path.write_text("graph(%x : Tensor):\n  %y : Tensor = aten::no_such_op(%x)\n  return (%y)\n")
    assert main(["opt", str(path)]) == 2
    assert "unknown operator aten::no_such_op" in _one_line_error(capsys.readouterr().err)


def test_opt_graph_that_does_not_verify(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    path = tmp_path / "invalid.ir"
    path.write_text("graph(%x : Tensor, %n : int):\n"
                    "  %y : Tensor = prim::If(%n)\n"
                    "    block0():\n      -> (%x)\n    block1():\n      -> (%x)\n"
                    "  return (%y)\n")
    assert main(["opt", str(path)]) == 2
    assert "invalid graph" in _one_line_error(capsys.readouterr().err)


def test_opt_missing_file_and_usage_errors(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["opt", str(tmp_path / "missing.ir")]) == 2
    assert "cannot read" in _one_line_error(capsys.readouterr().err)
    assert main([]) == 2
    assert "a command is required" in capsys.readouterr().err
    assert main(["opt"]) == 2            # argparse: FILE is required
    assert "required" in capsys.readouterr().err
    assert main(["opt", "--help"]) == 0
    assert "--print-after-each" in capsys.readouterr().out


def test_opt_names_a_pass_that_breaks_the_graph(ir_file: Path, capsys: pytest.CaptureFixture[str],
                                                 monkeypatch: pytest.MonkeyPatch) -> None:
    def broken(graph: Graph) -> bool:
        node = next(n for n in graph.nodes if n.kind == "aten::relu")
        node.unlink()   # leaves a use of its result behind
        return True

    monkeypatch.setitem(PASSES, "broken", broken)
    assert main(["opt", str(ir_file), "-p", "broken"]) == 1
    assert "invalid after pass 'broken'" in _one_line_error(capsys.readouterr().err)


def _run_module(*args: str) -> subprocess.CompletedProcess[str]:
    env = {**os.environ, "PYTHONPATH": str(REPO) + os.pathsep + os.environ.get("PYTHONPATH", "")}
    return subprocess.run([sys.executable, "-m", "kiln", *args], capture_output=True, text=True,
                          cwd=REPO, env=env, timeout=120)


def test_python_dash_m_kiln(ir_file: Path) -> None:
    done = _run_module("opt", str(ir_file), "-p", "default")
    assert done.returncode == 0, done.stderr
    assert done.stdout == OPTIMIZED and done.stderr == ""
