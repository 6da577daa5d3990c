"""The system C++ compiler, and the caches of what it built.

:func:`build_library` turns C++ source into a loaded shared library, or None when no compiler
is found or the compile fails -- callers then run the unfused operators; it never raises for
those reasons.  A note goes to the ``kiln.fusion`` logger (debug level), once per kind of
problem per process.

* **Compiler**: ``$CXX`` if set, else the first of ``c++``, ``g++``, ``clang++`` on ``PATH``.
* **Flags** (:data:`FLAGS`): ``-O3 -march=native`` for the vector units of this machine,
  ``-fopenmp`` for the threaded loop and for ``#pragma omp declare simd`` (which makes gcc call
  glibc's vector math, ``libmvec``), and ``-fno-math-errno`` so ``sqrt`` and the math calls have
  no ``errno`` side effect.  Not ``-ffast-math``: it would let the compiler assume there are no
  NaNs or infinities, which eager PyTorch propagates.
* **Disk cache**: ``$KILN_CACHE_DIR`` or ``~/.cache/kiln/kernels``; a library is named by a hash
  of its source, the flags, the compiler's version and this CPU's feature flags (``-march=native``
  code must not be loaded on another CPU sharing the directory).  Written atomically: compiled
  to a temporary name in the same directory, then renamed.
* **In-process cache**: a loaded library per hash, so building the same kernel twice (another
  graph, another shape of a flat kernel) costs a dictionary lookup.
"""

from __future__ import annotations

import ctypes
import functools
import hashlib
import logging
import os
import shutil
import subprocess
import tempfile
import threading
from pathlib import Path
from typing import Optional

LOG = logging.getLogger("kiln.fusion")

FLAGS: tuple[str, ...] = ("-O3", "-march=native", "-fopenmp", "-fno-math-errno", "-std=c++17",
                          "-shared", "-fPIC")
LIBS: tuple[str, ...] = ("-lm",)   # libm's linker script pulls in libmvec when it is used
COMPILE_TIMEOUT_S = 120

_lock = threading.Lock()
_loaded: dict[str, ctypes.CDLL] = {}
_noted: set[str] = set()


def note_once(kind: str, message: str) -> None:
    """Log ``message`` at debug level the first time a problem of this ``kind`` is seen."""
    if kind not in _noted:
        _noted.add(kind)
        LOG.debug("%s", message)


def find_compiler() -> Optional[str]:
    """The C++ compiler to use: ``$CXX``, else ``c++``/``g++``/``clang++`` on ``PATH``; None if none."""
    env = os.environ.get("CXX")
    candidates = [env] if env else ["c++", "g++", "clang++"]
    for name in candidates:
        path = shutil.which(name)
        if path is not None:
            return path
    return None


@functools.lru_cache(maxsize=8)
def compiler_version(cxx: str) -> Optional[str]:
    """The first line of ``cxx --version``; None when it does not run."""
    try:
        done = subprocess.run([cxx, "--version"], capture_output=True, text=True, timeout=30, check=False)
    except (OSError, subprocess.SubprocessError):
        return None
    lines = done.stdout.splitlines()
    return lines[0] if done.returncode == 0 and lines else None


@functools.lru_cache(maxsize=1)
def _cpu_fingerprint() -> str:
    """This CPU's feature flags (Linux), so ``-march=native`` libraries stay on their CPU."""
    try:
        with open("/proc/cpuinfo", encoding="utf-8", errors="replace") as f:
            for line in f:
                if line.startswith(("flags", "Features")):
                    return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return os.uname().machine


def cache_dir() -> Path:
    """Where built libraries are kept: ``$KILN_CACHE_DIR`` or ``~/.cache/kiln/kernels``."""
    env = os.environ.get("KILN_CACHE_DIR")
    return Path(env) if env else Path.home() / ".cache" / "kiln" / "kernels"


def library_key(source: str, cxx: str, version: str) -> str:
    text = "\0".join([source, cxx, version, *FLAGS, *LIBS, _cpu_fingerprint()])
    return hashlib.sha256(text.encode()).hexdigest()[:32]


def build_library(source: str) -> Optional[ctypes.CDLL]:
    """Compile ``source`` (or find it compiled) and load it; None when that is not possible."""
    cxx = find_compiler()
    version = compiler_version(cxx) if cxx is not None else None
    if cxx is None or version is None:
        note_once("no-compiler", "kiln.fusion: no working C++ compiler ($CXX, c++, g++, clang++); "
                                 "fusion groups run their operators unfused")
        return None
    key = library_key(source, cxx, version)
    with _lock:
        lib = _loaded.get(key)
        if lib is not None:
            return lib
        path = cache_dir() / f"kiln_{key}.so"
        if not path.exists() and not _compile(cxx, source, path):
            return None
        try:
            lib = ctypes.CDLL(str(path))
        except OSError as e:
            note_once(f"load:{key}", f"kiln.fusion: cannot load {path}: {e}")
            return None
        _loaded[key] = lib
        return lib


def run_compiler(args: list[str]) -> subprocess.CompletedProcess[str]:
    """Run the compiler (a seam for tests)."""
    return subprocess.run(args, capture_output=True, text=True, timeout=COMPILE_TIMEOUT_S, check=False)


def _compile(cxx: str, source: str, path: Path) -> bool:
    """Compile ``source`` into ``path`` atomically; False (with a note) when it fails."""
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        fd, tmp_name = tempfile.mkstemp(prefix=path.stem + ".", suffix=".tmp.so", dir=path.parent)
        os.close(fd)
    except OSError as e:
        note_once("cache-dir", f"kiln.fusion: cannot write to the kernel cache {path.parent}: {e}")
        return False
    tmp = Path(tmp_name)
    src = tmp.with_suffix(".cpp")
    try:
        src.write_text(source, encoding="utf-8")
        done = run_compiler([cxx, *FLAGS, "-o", str(tmp), str(src), *LIBS])
        if done.returncode != 0:
            note_once(f"compile:{path.name}", f"kiln.fusion: {cxx} failed on a kernel "
                                              f"(fusion group runs unfused):\n{done.stderr[-4000:]}")
            return False
        os.replace(src, path.with_suffix(".cpp"))   # kept beside the library, for reading
        os.replace(tmp, path)
        return True
    except (OSError, subprocess.SubprocessError) as e:
        note_once(f"compile:{path.name}", f"kiln.fusion: compiling a kernel failed: {e}")
        return False
    finally:
        for leftover in (tmp, src):
            leftover.unlink(missing_ok=True)


def clear_memory_cache() -> None:
    """Forget the libraries loaded in this process (the disk cache stays); for tests."""
    with _lock:
        _loaded.clear()
