"""``examples/cpp``: libtorch, with no Python, loads the archives ``kiln.save`` writes and runs them.

The example is built once with CMake against the libtorch inside the installed torch wheel (about
half a minute on two cores) and the binary is kept in ``$KILN_CACHE_DIR/cpp-example/<hash>`` or
``~/.cache/kiln/cpp-example/<hash>``, the hash covering the example's sources, the torch install
and the compiler, so later sessions start at once.  The tests skip when there is no C++ compiler,
no cmake, or no CMake config in the torch wheel; a failing build is a failure.

I/O convention of ``run_model <model.pt> <inputs.pt> <outputs.pt>``: the inputs are a list of
tensors written by ``torch.save``; the output of ``forward`` comes back in a file ``torch.load``
reads (see ``examples/cpp/run_model.cpp``).
"""

from __future__ import annotations

import hashlib
import os
import shutil
import subprocess
import tempfile
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import pytest
import torch

import kiln
from kiln.backends.toolchain import compiler_version, find_compiler

EXAMPLE_DIR = Path(__file__).resolve().parent.parent / "examples" / "cpp"
SOURCES = ("CMakeLists.txt", "run_model.cpp")
CONFIGURE_TIMEOUT_S = 300
BUILD_TIMEOUT_S = 900
RUN_TIMEOUT_S = 120


# -- building the example (once, then cached on disk) ----------------------------------------------

def _cache_root() -> Path:
    """Beside the kernel cache of ``kiln.backends.toolchain``: ``$KILN_CACHE_DIR`` or ``~/.cache/kiln``."""
    env = os.environ.get("KILN_CACHE_DIR")
    base = Path(env) if env else Path.home() / ".cache" / "kiln"
    return base / "cpp-example"


def _build_key(cxx: str, prefix_path: str) -> str:
    digest = hashlib.sha256()
    for name in SOURCES:
        digest.update((EXAMPLE_DIR / name).read_bytes())
        digest.update(b"\0")
    for text in (torch.__version__, prefix_path, cxx, compiler_version(cxx) or "", str(_cmake_version())):
        digest.update(text.encode() + b"\0")
    return digest.hexdigest()[:24]


def _cmake_version() -> str:
    done = subprocess.run(["cmake", "--version"], capture_output=True, text=True, timeout=60, check=False)
    return done.stdout.splitlines()[0] if done.stdout else ""


def _check(done: subprocess.CompletedProcess[str], what: str) -> None:
    if done.returncode != 0:
        pytest.fail(f"{what} failed (exit {done.returncode}):\n{done.stdout[-6000:]}\n{done.stderr[-6000:]}",
                    pytrace=False)


def _build(build_dir: Path, cxx: str, prefix_path: str) -> Path:
    """Configure and build ``run_model`` in ``build_dir``; fails the test with the compiler's output."""
    configure = subprocess.run(
        ["cmake", "-S", str(EXAMPLE_DIR), "-B", str(build_dir), "-DCMAKE_BUILD_TYPE=Release",
         f"-DCMAKE_PREFIX_PATH={prefix_path}", f"-DCMAKE_CXX_COMPILER={cxx}"],
        capture_output=True, text=True, timeout=CONFIGURE_TIMEOUT_S, check=False)
    _check(configure, "configuring examples/cpp with cmake")
    build = subprocess.run(["cmake", "--build", str(build_dir), "--target", "run_model", "-j2"],
                           capture_output=True, text=True, timeout=BUILD_TIMEOUT_S, check=False)
    _check(build, "building examples/cpp")
    binary = build_dir / "run_model"
    assert binary.is_file(), f"the build succeeded but left no {binary}"
    return binary


def _store(binary: Path, cached: Path) -> Path:
    """Copy the built binary into the cache atomically; the build's own copy when that fails."""
    try:
        cached.parent.mkdir(parents=True, exist_ok=True)
        fd, tmp_name = tempfile.mkstemp(prefix="run_model.", suffix=".tmp", dir=cached.parent)
        os.close(fd)
        shutil.copy2(binary, tmp_name)
        os.replace(tmp_name, cached)
    except OSError:
        return binary
    return cached


@pytest.fixture(scope="session")
def run_model(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """The path of the built ``run_model`` binary."""
    cxx = find_compiler()
    if cxx is None:
        pytest.skip("no C++ compiler ($CXX, c++, g++, clang++) on PATH")
    if shutil.which("cmake") is None:
        pytest.skip("no cmake on PATH")
    prefix_path = getattr(getattr(torch, "utils", None), "cmake_prefix_path", None)
    if prefix_path is None or not (Path(prefix_path) / "Torch" / "TorchConfig.cmake").is_file():
        pytest.skip("this torch install ships no CMake config (TorchConfig.cmake)")
    cached = _cache_root() / _build_key(cxx, prefix_path) / "run_model"
    if cached.is_file() and os.access(cached, os.X_OK):
        return cached
    binary = _build(tmp_path_factory.mktemp("cpp-example-build"), cxx, prefix_path)
    return _store(binary, cached)


# -- running it ---------------------------------------------------------------------------------------

def _save(module: Any, path: Path) -> None:
    if not hasattr(kiln, "save"):
        pytest.skip("kiln.save not available")
    kiln.save(module, str(path))


def _run(binary: Path, model: Path, inputs: Sequence[torch.Tensor], workdir: Path) -> Any:
    """Run ``forward`` of the archive ``model`` on ``inputs`` in the C++ program; return its output."""
    in_path, out_path = workdir / "inputs.pt", workdir / "outputs.pt"
    out_path.unlink(missing_ok=True)
    torch.save(list(inputs), in_path)
    done = subprocess.run([str(binary), str(model), str(in_path), str(out_path)],
                          capture_output=True, text=True, timeout=RUN_TIMEOUT_S, check=False)
    assert done.returncode == 0, f"run_model failed (exit {done.returncode}):\n{done.stderr}"
    return torch.load(out_path, weights_only=True)


def _check_against(binary: Path, eager: torch.nn.Module, compiled: Any,
                   inputs_list: Sequence[Sequence[torch.Tensor]], tmp_path: Path) -> None:
    """Save ``compiled``; on each inputs, C++ agrees with Kiln's own run and with eager PyTorch."""
    model = tmp_path / "model.pt"
    _save(compiled, model)
    for inputs in inputs_list:
        with torch.no_grad():
            expected = eager(*inputs)
            ours = compiled(*inputs)
        got = _run(binary, model, inputs, tmp_path)
        assert type(got) is type(expected), \
            f"C++ returned a {type(got).__name__}, eager PyTorch a {type(expected).__name__}"
        torch.testing.assert_close(got, ours)
        torch.testing.assert_close(got, expected)


# -- the models -----------------------------------------------------------------------------------------

class Loop(torch.nn.Module):
    """A loop over the rows of ``x`` with a branch on the index, then a branch on the data."""

    def __init__(self) -> None:
        super().__init__()
        self.scale = torch.nn.Parameter(torch.randn(4))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        h = torch.zeros(x.size(1))
        for i in range(x.size(0)):
            if i % 2 == 0:
                h = h + x[i] * self.scale
            else:
                h = torch.tanh(h - x[i])
        if bool(x.sum() > 0):
            h = h * 2.0
        else:
            h = torch.sigmoid(h) - 1.0
        return h


class TwoOutputs(torch.nn.Module):
    """A tuple of two tensors of different dtypes."""

    def __init__(self) -> None:
        super().__init__()
        self.lin = torch.nn.Linear(6, 3)

    def forward(self, x: torch.Tensor, y: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        z = self.lin(x) + y
        return torch.softmax(z, dim=-1), z.argmax(dim=-1)


def test_traced_mlp(run_model: Path, tmp_path: Path) -> None:
    mlp = torch.nn.Sequential(torch.nn.Linear(8, 16), torch.nn.ReLU(), torch.nn.Linear(16, 4)).eval()
    traced = kiln.trace(mlp, (torch.randn(3, 8),))
    _check_against(run_model, mlp, traced, [(torch.randn(3, 8),), (torch.randn(7, 8),)], tmp_path)


def test_scripted_control_flow(run_model: Path, tmp_path: Path) -> None:
    loop = Loop().eval()
    scripted = kiln.script(loop)
    pos = torch.randn(5, 4).abs()
    # Loops of one, four and five rows; both sides of the branch on the data.
    _check_against(run_model, loop, scripted, [(pos[:1],), (-pos[:4],), (pos,)], tmp_path)


def test_tuple_of_two_tensors(run_model: Path, tmp_path: Path) -> None:
    two = TwoOutputs().eval()
    scripted = kiln.script(two)
    _check_against(run_model, two, scripted, [(torch.randn(5, 6), torch.randn(3))], tmp_path)


def test_traced_tuple_output(run_model: Path, tmp_path: Path) -> None:
    two = TwoOutputs().eval()
    x, y = torch.randn(2, 6), torch.randn(3)
    traced = kiln.trace(two, (x, y))
    _check_against(run_model, two, traced, [(torch.randn(4, 6), torch.randn(3))], tmp_path)


def test_not_an_archive_is_a_clean_error(run_model: Path, tmp_path: Path) -> None:
    bogus, inputs, outputs = tmp_path / "bogus.pt", tmp_path / "inputs.pt", tmp_path / "outputs.pt"
    bogus.write_bytes(b"this is not a TorchScript archive\n")
    torch.save([torch.ones(2)], inputs)
    done = subprocess.run([str(run_model), str(bogus), str(inputs), str(outputs)],
                          capture_output=True, text=True, timeout=RUN_TIMEOUT_S, check=False)
    assert done.returncode == 1, f"exit {done.returncode}; stderr:\n{done.stderr}"
    assert done.stderr.startswith("run_model: "), done.stderr
    assert len(done.stderr.strip()) > len("run_model:"), "no message after the prefix"
    assert done.stdout == ""
    assert not outputs.exists()
