"""Shared test setup.

* Every test starts from ``torch.manual_seed(0)``.
* ``torch.jit`` is an oracle only where the installed PyTorch still has a working one
  (upstream deprecated it in 2.11 and may turn it into hard errors).  Tests that compare with
  it take the ``jit`` fixture, or carry ``@pytest.mark.torch_jit``, or use
  ``requires_torch_jit``; all three skip cleanly when it is gone and silence its
  DeprecationWarnings while the test runs.
* ``@pytest.mark.gpu`` (or ``requires_cuda``) skips a test on machines without CUDA.
* With ``CI`` set, hypothesis runs a fixed, deadline-free profile, so a slow shared machine
  cannot fail a property test on timing alone.

Helpers are imported in test modules as ``from conftest import has_torch_jit, requires_cuda``.
"""

from __future__ import annotations

import contextlib
import functools
import os
import warnings
from collections.abc import Iterator
from pathlib import Path
from types import ModuleType

import pytest
import torch

try:
    from hypothesis import HealthCheck, settings
except ImportError:  # hypothesis is a dev dependency; the rest of the suite runs without it
    pass
else:
    settings.register_profile("ci", deadline=None, derandomize=True, print_blob=True,
                              suppress_health_check=[HealthCheck.too_slow])
    settings.register_profile("dev", deadline=None)
    settings.load_profile("ci" if os.environ.get("CI") else "dev")


# -- torch.jit as an oracle ---------------------------------------------------------------------

@functools.cache
def has_torch_jit() -> bool:
    """Whether ``torch.jit.trace`` (and ``freeze``) work in this PyTorch."""
    with suppress_jit_warnings():
        try:
            fn = torch.jit.trace(lambda x: x * 2 + 1, (torch.ones(2),))
            ok = bool(torch.equal(fn(torch.ones(2)), torch.full((2,), 3.0)))
            module = torch.jit.trace(torch.nn.Linear(2, 2).eval(), (torch.ones(1, 2),))
            torch.jit.freeze(module)
        except Exception:  # any failure (missing module, hard deprecation error) means "no"
            return False
    return ok


@contextlib.contextmanager
def suppress_jit_warnings() -> Iterator[None]:
    """Silence torch.jit's DeprecationWarnings (and only those) inside the block."""
    with warnings.catch_warnings():
        warnings.filterwarnings("ignore", category=DeprecationWarning, module=r"torch\.jit")
        warnings.filterwarnings("ignore", message=r".*torch\.jit.*deprecated", category=DeprecationWarning)
        yield


requires_torch_jit = pytest.mark.skipif(not has_torch_jit(), reason="this PyTorch has no working torch.jit")
requires_cuda = pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA device")


@pytest.fixture
def jit() -> Iterator[ModuleType]:
    """``torch.jit``, with its DeprecationWarnings silenced; skips the test where it is gone."""
    if not has_torch_jit():
        pytest.skip("this PyTorch has no working torch.jit")
    with suppress_jit_warnings():
        yield torch.jit


# -- seeding and markers --------------------------------------------------------------------------

@pytest.fixture(scope="module")
def kernel_cache(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Path]:
    """The C++ kernels built by one test module go to a fresh directory (``KILN_CACHE_DIR``),
    not the user's cache, so the module builds every kernel it uses."""
    from kiln.backends import toolchain
    path = tmp_path_factory.mktemp("kernels")
    with pytest.MonkeyPatch.context() as mp:
        mp.setenv("KILN_CACHE_DIR", str(path))
        toolchain.clear_memory_cache()
        yield path
    toolchain.clear_memory_cache()


@pytest.fixture(autouse=True)
def _seed() -> None:
    torch.manual_seed(0)


def pytest_runtest_setup(item: pytest.Item) -> None:
    if item.get_closest_marker("gpu") is not None and not torch.cuda.is_available():
        pytest.skip("needs a CUDA device")
    if item.get_closest_marker("torch_jit") is not None and not has_torch_jit():
        pytest.skip("this PyTorch has no working torch.jit")


@pytest.fixture(autouse=True)
def _quiet_jit_for_marked_tests(request: pytest.FixtureRequest) -> Iterator[None]:
    if request.node.get_closest_marker("torch_jit") is None:
        yield
        return
    with suppress_jit_warnings():
        yield


# -- every graph the tests produce is well formed and round-trips through text ---------------------

def check_graph(graph: object) -> None:
    """The verifier passes and ``parse(print(g))`` prints ``g`` identically."""
    from kiln.ir.parser import parse_graph
    from kiln.ir.verify import verify
    verify(graph)  # type: ignore[arg-type]
    text = str(graph)
    again = str(parse_graph(text))
    assert again == text, f"graph text does not round-trip:\n{text}\n---\n{again}"


@pytest.fixture(autouse=True)
def _every_graph_checked(monkeypatch: pytest.MonkeyPatch) -> None:
    """Check each graph as it becomes a Kiln function or method (traced, frozen or built by hand)."""
    from kiln.runtime import module

    define = module.ScriptModule._kiln_define_method
    init = module.ScriptFunction.__init__

    def checked_define(self: module.ScriptModule, name: str, graph: object, *rest: object) -> None:
        check_graph(graph)
        define(self, name, graph, *rest)  # type: ignore[arg-type]

    def checked_init(self: module.ScriptFunction, name: str, graph: object, *rest: object) -> None:
        check_graph(graph)
        init(self, name, graph, *rest)  # type: ignore[arg-type]

    monkeypatch.setattr(module.ScriptModule, "_kiln_define_method", checked_define)
    monkeypatch.setattr(module.ScriptFunction, "__init__", checked_init)
