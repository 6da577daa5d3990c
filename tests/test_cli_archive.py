"""``kiln inspect`` / ``kiln run`` / ``kiln graph``: the command line on ``.pt`` archives."""

from __future__ import annotations

import os
import re
import shutil
import stat
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest
import torch
from torch import Tensor

import kiln
from kiln.cli import main
from kiln.graphviz import quote_label, to_dot

REPO = Path(__file__).resolve().parent.parent
EXTRA = {"meta.txt": "trained on nothing at all"}
_ANSI = re.compile(r"\x1b\[[0-9;?]*[A-Za-z]")


class Net(torch.nn.Module):
    def __init__(self) -> None:
        super().__init__()
        self.lin = torch.nn.Linear(3, 4)
        self.register_buffer("steps", torch.zeros(5, dtype=torch.int64))

    def forward(self, x: Tensor) -> Tensor:
        y = self.lin(x)
        if bool(y.sum() > 0):
            y = y * 2
        for _ in range(2):
            y = y.relu() + 1
        return y

    @kiln.export
    def scale(self, x: Tensor, k: float) -> Tensor:
        return x * k


class Small(torch.nn.Module):
    def __init__(self) -> None:
        super().__init__()
        self.fc = torch.nn.Linear(3, 2)

    def forward(self, x: Tensor) -> Tensor:
        return torch.relu(self.fc(x))


class Pair(torch.nn.Module):
    def forward(self, a: Tensor, b: Tensor) -> tuple[Tensor, Tensor]:
        return a + b, a.sum(0)


@pytest.fixture(autouse=True)
def _plain_console(monkeypatch: pytest.MonkeyPatch) -> None:
    """rich must not think it writes to a terminal (colour codes, wrapping at 80 columns)."""
    for name in ("FORCE_COLOR", "TTY_COMPATIBLE", "TTY_INTERACTIVE", "COLUMNS"):
        monkeypatch.delenv(name, raising=False)
    monkeypatch.setenv("NO_COLOR", "1")


@pytest.fixture
def model(tmp_path: Path) -> Path:
    path = tmp_path / "net.pt"
    kiln.save(kiln.script(Net()), str(path), extra_files=EXTRA)
    return path


def _plain(text: str) -> str:
    return _ANSI.sub("", text)


def _one_line_error(err: str) -> str:
    lines = err.strip().splitlines()
    assert len(lines) == 1, err
    assert "Traceback" not in err
    return lines[0]


def _out(capsys: pytest.CaptureFixture[str]) -> str:
    captured = capsys.readouterr()
    assert captured.err == ""
    return _plain(captured.out)


def _row(out: str, first: str) -> list[str]:
    """The cells of the table row whose first cell is ``first``."""
    for line in out.splitlines():
        cells = [c.strip() for c in re.split(r"[│|┃]", line)]
        if len(cells) > 1 and cells[0] == first:
            return cells
    raise AssertionError(f"no row {first!r} in:\n{out}")


# -- inspect ------------------------------------------------------------------------------------

def test_inspect_describes_the_archive(model: Path, capsys: pytest.CaptureFixture[str]) -> None:
    from kiln.serialization.archive import open_archive
    from kiln.serialization.load import archive_version

    assert main(["inspect", str(model)]) == 0
    out = _out(capsys)
    loaded = kiln.load(str(model))
    version = archive_version(open_archive(str(model)))
    assert loaded.qualified_name in out
    assert re.search(rf"format version\s+{version}\b", out)
    assert re.search(r"methods\s+forward, scale|methods\s+scale, forward", out)
    # the code of both methods, one line each
    assert next(line for line in loaded.code.splitlines() if "def forward" in line).strip() in out
    assert "def scale" in out
    assert _row(out, "lin.weight")[1:5] == ["parameter", "[4, 3]", "float32", "48"]
    assert _row(out, "lin.bias")[1:5] == ["parameter", "[4]", "float32", "16"]
    assert _row(out, "steps")[1:5] == ["buffer", "[5]", "int64", "40"]
    total = _row(out, "total")
    assert total[1] == "3 tensors" and total[4] == "104"
    assert _row(out, "meta.txt")[1] == str(len(EXTRA["meta.txt"]))
    assert "graph(" not in out


def test_inspect_options(model: Path, capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["inspect", str(model), "--no-code", "--graph"]) == 0
    out = _out(capsys)
    assert "def forward" not in out and "def scale" not in out
    assert "graph(%self" in out and "prim::If" in out and "aten::mul" in out
    assert main(["inspect", str(model), "--method", "scale"]) == 0
    out = _out(capsys)
    assert "def scale" in out and "def forward" not in out
    assert "lin.weight" in out      # the tensors and extra files are shown whatever the method
    assert main(["inspect", str(model), "--method", "nope"]) == 2
    line = _one_line_error(capsys.readouterr().err)
    assert line.startswith("kiln inspect: error:") and "no method 'nope'" in line and "forward" in line


def test_inspect_without_extra_files_and_a_traced_model(tmp_path: Path,
                                                        capsys: pytest.CaptureFixture[str]) -> None:
    path = tmp_path / "small.pt"
    kiln.save(kiln.trace(Small(), torch.randn(1, 3)), str(path))
    assert main(["inspect", str(path), "--graph"]) == 0
    out = _out(capsys)
    assert "graph(%self" in out and "Small" in out
    assert _row(out, "fc.weight")[1:5] == ["parameter", "[2, 3]", "float32", "24"]
    assert "(none)" in out.split("extra files")[-1]


# -- run ----------------------------------------------------------------------------------------

def test_run_random_input_matches_a_direct_call(model: Path, tmp_path: Path,
                                                capsys: pytest.CaptureFixture[str]) -> None:
    out_path = tmp_path / "out.pt"
    assert main(["run", str(model), "2x3", "--seed", "5", "--save-output", str(out_path)]) == 0
    out = _out(capsys)
    assert _row(out, "input[0]")[1:4] == ["Tensor", "[2, 3]", "float32"]
    assert _row(out, "output")[1:4] == ["Tensor", "[2, 4]", "float32"]
    saved = torch.load(out_path, weights_only=True)
    x = torch.randn(2, 3, generator=torch.Generator().manual_seed(5))
    with torch.no_grad():
        torch.testing.assert_close(saved, kiln.load(str(model))(x))

    again = tmp_path / "again.pt"
    assert main(["run", str(model), "2x3", "--seed", "5", "--save-output", str(again)]) == 0
    torch.testing.assert_close(torch.load(again, weights_only=True), saved)
    assert main(["run", str(model), "2x3", "--seed", "6", "--save-output", str(again)]) == 0
    assert not torch.equal(torch.load(again, weights_only=True), saved)
    capsys.readouterr()


def test_run_pt_file_inputs(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    eager = Pair()
    path = tmp_path / "pair.pt"
    kiln.save(kiln.script(eager), str(path))
    a, b = torch.randn(3, 2), torch.randn(3, 2)
    torch.save((a, b), tmp_path / "ab.pt")           # a tuple: one input per tensor
    torch.save([a, b], tmp_path / "a_list.pt")       # a list: the same
    torch.save(a, tmp_path / "a.pt")                 # lone tensors
    torch.save(b, tmp_path / "b.pt")
    for inputs in (["ab.pt"], ["a_list.pt"], ["a.pt", "b.pt"]):
        out_path = tmp_path / "out.pt"
        argv = ["run", str(path), *(str(tmp_path / i) for i in inputs), "--save-output", str(out_path)]
        assert main(argv) == 0, inputs
        out = _out(capsys)
        assert _row(out, "output[0]")[1:4] == ["Tensor", "[3, 2]", "float32"]
        assert _row(out, "output[1]")[1:4] == ["Tensor", "[2]", "float32"]
        saved = torch.load(out_path, weights_only=True)
        torch.testing.assert_close(saved, eager(a, b))


def test_run_other_method_with_typed_specs(model: Path, tmp_path: Path,
                                           capsys: pytest.CaptureFixture[str]) -> None:
    out_path = tmp_path / "out.pt"
    argv = ["run", str(model), "4:int64", "float:0.5", "--method", "scale", "--save-output", str(out_path)]
    assert main(argv) == 0
    out = _out(capsys)
    assert _row(out, "input[0]")[1:4] == ["Tensor", "[4]", "int64"]
    assert _row(out, "input[1]")[1] == "float"
    x = torch.load(out_path, weights_only=True) * 2
    assert x.dtype == torch.float32 and torch.equal(x, x.round()) and 0 <= x.min() and x.max() <= 9
    assert main(["run", str(model), "1x3:float64", "--method", "scale", "float:2"]) == 0
    assert _row(_out(capsys), "output")[1:4] == ["Tensor", "[1, 3]", "float64"]


def test_run_npy_input(model: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    numpy = pytest.importorskip("numpy")
    x = numpy.arange(6, dtype=numpy.float32).reshape(2, 3)
    numpy.save(tmp_path / "x.npy", x)
    out_path = tmp_path / "out.pt"
    assert main(["run", str(model), str(tmp_path / "x.npy"), "--save-output", str(out_path)]) == 0
    capsys.readouterr()
    with torch.no_grad():
        expected = kiln.load(str(model))(torch.from_numpy(x))
    torch.testing.assert_close(torch.load(out_path, weights_only=True), expected)


@pytest.mark.parametrize("spec, message", [
    ("2y3", "bad input '2y3'"),
    ("2x3:floaty", "unknown dtype 'floaty'"),
    ("int:three", "'three' is not an int"),
    ("bool:maybe", "bad input 'bool:maybe'"),
    ("missing.pt", "cannot read"),
])
def test_run_bad_input_specs(model: Path, spec: str, message: str,
                             capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["run", str(model), spec]) == 2
    captured = capsys.readouterr()
    line = _one_line_error(captured.err)
    assert line.startswith("kiln run: error:") and message in line
    assert captured.out == ""


def test_run_bad_files_and_failing_calls(model: Path, tmp_path: Path,
                                         capsys: pytest.CaptureFixture[str]) -> None:
    torch.save({"x": torch.ones(1)}, tmp_path / "dict.pt")
    (tmp_path / "junk.pt").write_text("not a pickle")
    for name, message in (("dict.pt", "expected a tensor"), ("junk.pt", "cannot read")):
        assert main(["run", str(model), str(tmp_path / name)]) == 2
        assert message in _one_line_error(capsys.readouterr().err)
    assert main(["run", str(model)]) == 2                      # forward needs an input
    assert _one_line_error(capsys.readouterr().err).startswith("kiln run: error:")
    assert main(["run", str(model), "2x5"]) == 1               # the model itself fails: exit 1
    line = _one_line_error(capsys.readouterr().err)
    assert line.startswith("kiln run: error: forward raised") and "Error" in line
    assert main(["run", str(model), "2x3", "--method", "nope"]) == 2
    assert "no method 'nope'" in _one_line_error(capsys.readouterr().err)


# -- graph --------------------------------------------------------------------------------------

_STATEMENT = re.compile(r'^\s*(\w+) \[.*label="((?:[^"\\]|\\.)*)".*\];$')
_EDGE = re.compile(r"^\s*(\w+) -> (\w+)( \[.*\])?;$")


def _parse_dot(text: str) -> tuple[dict[str, str], list[tuple[str, str, str]]]:
    """Node id -> label, and edges (from, to, attributes), read loosely; checks the structure."""
    lines = text.strip().splitlines()
    assert lines[0].startswith("digraph \"") and lines[-1] == "}"
    assert text.count("{") == text.count("}")
    nodes: dict[str, str] = {}
    edges: list[tuple[str, str, str]] = []
    for line in lines[1:-1]:
        edge = _EDGE.match(line)
        if edge is not None:
            edges.append((edge.group(1), edge.group(2), edge.group(3) or ""))
            continue
        node = _STATEMENT.match(line)
        if node is not None:
            nodes[node.group(1)] = node.group(2)
    for a, b, _ in edges:
        assert a in nodes and b in nodes, (a, b)
    return nodes, edges


def _expected_edges(graph: Any) -> int:
    uses = sum(len(n.inputs) for n in graph.all_nodes())
    block_outputs = sum(len(b.outputs) for n in graph.all_nodes() for b in n.blocks)
    return uses + block_outputs + len(graph.outputs)


@pytest.mark.parametrize("inlined", [False, True])
def test_graph_writes_dot(model: Path, tmp_path: Path, inlined: bool,
                          capsys: pytest.CaptureFixture[str]) -> None:
    out_path = tmp_path / "net.dot"
    assert main(["graph", str(model), "-o", str(out_path), *(["--inlined"] if inlined else [])]) == 0
    assert capsys.readouterr().err == ""
    text = out_path.read_text()
    loaded = kiln.load(str(model))
    graph = loaded.inlined_graph if inlined else loaded.graph
    nodes, edges = _parse_dot(text)
    kinds = {n.kind for n in graph.all_nodes()}
    assert {"prim::If", "prim::Loop"} <= kinds
    assert ("aten::linear" in kinds) == inlined
    labels = list(nodes.values())
    for kind in kinds:
        assert any(label.split("\\n")[0] == kind for label in labels), kind
    boxes = [line for line in text.splitlines() if "shape=box" in line]
    assert len(boxes) == len(list(graph.all_nodes()))
    assert sum(1 for *_, attrs in edges if "dashed" not in attrs) == _expected_edges(graph)
    assert text.count("subgraph cluster_") == sum(len(n.blocks) for n in graph.all_nodes())
    assert any(label.startswith("input 1: %x : Tensor") for label in labels)
    assert any(label.startswith("output 0: ") for label in labels)
    if not inlined:
        assert "prim::GetAttr\\nname=lin" in labels and "prim::CallMethod\\nname=forward" in labels


def test_graph_other_method_and_errors(model: Path, tmp_path: Path,
                                       capsys: pytest.CaptureFixture[str]) -> None:
    out_path = tmp_path / "scale.dot"
    assert main(["graph", str(model), "-o", str(out_path), "--method", "scale"]) == 0
    nodes, _ = _parse_dot(out_path.read_text())
    assert "aten::mul" in nodes.values() and "prim::If" not in nodes.values()
    assert main(["graph", str(model), "-o", str(tmp_path / "g.txt")]) == 2
    assert "must end in .dot, .svg, .png or .pdf" in _one_line_error(capsys.readouterr().err)
    assert main(["graph", str(model), "-o", str(tmp_path / "no" / "dir" / "g.dot")]) == 2
    assert "cannot write" in _one_line_error(capsys.readouterr().err)
    assert main(["graph", str(model)]) == 2                    # argparse: -o is required
    assert "required" in capsys.readouterr().err


def test_graph_svg_without_graphviz(model: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch,
                                    capsys: pytest.CaptureFixture[str]) -> None:
    monkeypatch.setattr(shutil, "which", lambda name, *a, **k: None)
    out_path = tmp_path / "net.svg"
    assert main(["graph", str(model), "-o", str(out_path)]) == 2
    line = _one_line_error(capsys.readouterr().err)
    assert line == "kiln graph: error: graphviz 'dot' not found; install graphviz or write .dot"
    assert not out_path.exists()


def _fake_dot(tmp_path: Path, status: int = 0) -> Path:
    """A stand-in for Graphviz's dot: echoes its argument and input size into an 'SVG'."""
    script = tmp_path / "fake-dot"
    script.write_text(
        f"#!{sys.executable}\n"
        "import sys\n"
        "text = sys.stdin.read()\n"
        "assert text.startswith('digraph')\n"
        f"if {status}:\n"
        "    sys.stderr.write('Error: <stdin>: syntax error in line 1\\n')\n"
        f"    sys.exit({status})\n"
        "sys.stdout.write(f'<svg><!-- {sys.argv[1]} {len(text)} --></svg>')\n")
    script.chmod(script.stat().st_mode | stat.S_IXUSR)
    return script


@pytest.mark.skipif(os.name == "nt", reason="the fake dot is a POSIX script")
def test_graph_svg_with_graphviz(model: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch,
                                 capsys: pytest.CaptureFixture[str]) -> None:
    dot = _fake_dot(tmp_path)
    monkeypatch.setattr(shutil, "which", lambda name, *a, **k: str(dot) if name == "dot" else None)
    out_path = tmp_path / "net.svg"
    assert main(["graph", str(model), "-o", str(out_path)]) == 0
    assert capsys.readouterr().err == ""
    expected = len(to_dot(kiln.load(str(model)).graph, "x"))   # up to the title's length
    m = re.fullmatch(r"<svg><!-- -Tsvg (\d+) --></svg>", out_path.read_text())
    assert m is not None and abs(int(m.group(1)) - expected) < 200

    failing = _fake_dot(tmp_path, status=3)
    monkeypatch.setattr(shutil, "which", lambda name, *a, **k: str(failing))
    assert main(["graph", str(model), "-o", str(out_path)]) == 2
    line = _one_line_error(capsys.readouterr().err)
    assert "'dot -Tsvg' failed (exit status 3)" in line and "syntax error" in line
    assert out_path.read_text().startswith("<svg>")            # the old file is left as it was


def test_quote_label_escapes() -> None:
    assert quote_label('a"b\\c\nd') == '"a\\"b\\\\c\\nd"'
    assert quote_label("x\x00y\tz") == '"x\\\\x00y\\\\x09z"'
    assert quote_label("prim::If") == '"prim::If"'


# -- bad archives -------------------------------------------------------------------------------

@pytest.mark.parametrize("command", [["inspect"], ["run", "--seed", "1"], ["graph", "-o", "OUT.dot"]])
def test_bad_archives(command: list[str], tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    name, *options = command
    options = [str(tmp_path / o) if o == "OUT.dot" else o for o in options]
    text_file = tmp_path / "model.pt"
    text_file.write_text("this is not a zip archive\n")
    truncated = tmp_path / "truncated.pt"
    kiln.save(kiln.script(Net()), str(truncated))
    truncated.write_bytes(truncated.read_bytes()[:-30])
    for path, message in ((text_file, str(text_file)), (truncated, str(truncated)),
                          (tmp_path / "missing.pt", "cannot read"), (tmp_path, "cannot read")):
        assert main([name, str(path), *options]) == 2, path
        captured = capsys.readouterr()
        line = _one_line_error(captured.err)
        assert line.startswith(f"kiln {name}: error:") and message in line, line
        assert captured.out == ""
    assert not (tmp_path / "OUT.dot").exists()


def test_archive_whose_code_does_not_compile(model: Path, tmp_path: Path,
                                             capsys: pytest.CaptureFixture[str]) -> None:
    from kiln.serialization.archive import ArchiveWriter, open_archive
    reader = open_archive(str(model))
    writer = ArchiveWriter(reader.prefix)
    for name in reader.names():
        data = reader.read(name)
        if name.startswith("code/") and b"def scale" in data:
            data = data.replace(b"torch.mul(x, k)", b"torch.mul(x, no_such_name)")
            assert b"no_such_name" in data
        writer.add(name, data)
    bad = tmp_path / "bad_code.pt"
    bad.write_bytes(writer.finish())
    for command in (["inspect"], ["run"], ["graph", "-o", str(tmp_path / "g.dot")]):
        assert main([command[0], str(bad), *command[1:]]) == 2
        line = _one_line_error(capsys.readouterr().err)
        assert line.startswith(f"kiln {command[0]}: error: {bad}: cannot compile the archive's code:"), line
        assert "no_such_name" in line


def _run_module(*args: str) -> subprocess.CompletedProcess[str]:
    env = {**os.environ, "PYTHONPATH": str(REPO) + os.pathsep + os.environ.get("PYTHONPATH", ""),
           "NO_COLOR": "1"}
    env.pop("FORCE_COLOR", None)
    return subprocess.run([sys.executable, "-m", "kiln", *args], capture_output=True, text=True,
                          cwd=REPO, env=env, timeout=300)


def test_python_dash_m_kiln(model: Path, tmp_path: Path) -> None:
    done = _run_module("inspect", str(model))
    assert done.returncode == 0, done.stderr
    assert "lin.weight" in done.stdout and "meta.txt" in done.stdout and done.stderr == ""
    done = _run_module("graph", str(model), "-o", str(tmp_path / "g.dot"))
    assert done.returncode == 0, done.stderr
    assert (tmp_path / "g.dot").read_text().startswith("digraph")
    bad = tmp_path / "bad.pt"
    bad.write_bytes(b"PK\x03\x04 definitely not a zip")
    done = _run_module("inspect", str(bad))
    assert done.returncode == 2 and done.stdout == ""
    assert _one_line_error(done.stderr).startswith("kiln inspect: error:")
