"""The profiling executor: specializations behind guards, fallbacks, graph_for, the switches.

Oracles: eager PyTorch for every output and gradient, and the general code (the executor
switched off) for errors.
"""

from __future__ import annotations

import copy
import os
import shutil
import subprocess
import sys
import threading
import warnings
from collections.abc import Iterator
from typing import Any, Optional

import pytest
import torch
from torch import nn
from torch.testing import assert_close

import kiln
from kiln.errors import InputError, KilnRuntimeError
from kiln.ir.types import TensorType
from kiln.ir.verify import verify
from kiln.passes import PASSES
from kiln.runtime import executor as ex_mod
from kiln.runtime.executor import Executor, SpecializationWarning, optimized_execution, set_profiling
from kiln.runtime.module import ScriptFunction, ScriptModule

# -- fixtures and helpers ---------------------------------------------------------------------------


@pytest.fixture(autouse=True)
def profiling_on() -> Iterator[None]:
    """Each test starts with the executor on and default settings, and any failure to build a
    specialization is an error (in production it is a warning and a fallback)."""
    saved = (ex_mod.SETTINGS.enabled, ex_mod.SETTINGS.profile_runs, ex_mod.SETTINGS.max_specializations)
    set_profiling(True, profile_runs=1, max_specializations=8)
    with warnings.catch_warnings():
        warnings.simplefilter("error", SpecializationWarning)
        yield
    set_profiling(saved[0], profile_runs=saved[1], max_specializations=saved[2])


def executor_of(obj: Any, method: str = "forward") -> Executor:
    if isinstance(obj, ScriptFunction):
        assert obj._executor is not None
        return obj._executor
    assert isinstance(obj, ScriptModule)
    return obj._kiln_executors[method]


def kinds(graph: kiln.Graph) -> list[str]:
    return [n.kind for n in graph.all_nodes()]


class MLP(nn.Module):
    def __init__(self) -> None:
        super().__init__()
        self.fc1 = nn.Linear(3, 8)
        self.fc2 = nn.Linear(8, 2)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return torch.sigmoid(self.fc2(torch.relu(self.fc1(x))))


class Flatten(nn.Module):
    """Uses sizes of its input: the specialization folds them."""

    def __init__(self) -> None:
        super().__init__()
        self.fc = nn.Linear(12, 4)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.fc(x.reshape(x.size(0), -1)) * x.size(1)


class Loopy(nn.Module):
    """Control flow, a loop and a list, decided by sizes and dtypes of the input."""

    def __init__(self) -> None:
        super().__init__()
        self.fc = nn.Linear(4, 4)

    def forward(self, x: torch.Tensor, n: int) -> tuple[torch.Tensor, torch.Tensor]:
        sums: list[torch.Tensor] = []
        for i in range(n):
            if x.size(0) > 2:
                x = self.fc(x) * 0.5
            else:
                x = x + float(i)
            sums.append(x.sum())
        if x.dtype == torch.float64:
            x = x * 2.0
        return torch.stack(sums), x.view(x.size(0), -1)


class Counter(nn.Module):
    """Writes a buffer on every call: a call must happen exactly once."""

    def __init__(self) -> None:
        super().__init__()
        self.register_buffer("calls", torch.zeros(()))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        self.calls.add_(1)
        return x.view(x.size(0), -1) + self.calls


def sized(x: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
    return x.reshape(x.size(0), x.size(1) * x.size(2)) @ y


def second_dim(x: torch.Tensor) -> torch.Tensor:
    return x * x.size(1)


def second_dim_again(x: torch.Tensor) -> torch.Tensor:   # kiln.script caches per function
    return x * x.size(1)


# -- outputs agree with eager -----------------------------------------------------------------------

def test_traced_module_first_and_later_calls_match_eager() -> None:
    eager = MLP().eval()
    x = torch.randn(5, 3)
    m = kiln.trace(eager, (x,))
    for _ in range(3):
        assert_close(m(x), eager(x))
    ex = executor_of(m)
    assert len(ex.specializations) == 1 and ex.specializations[0].guard.empty
    # nothing was specialized on the input: the entry is compiled code, with no guard in front
    assert m.__dict__["_kiln_forward"] is ex.specializations[0].entry
    y = torch.randn(7, 3, dtype=torch.float64)
    assert_close(m.double()(y), eager.double()(y))


def test_scripted_control_flow_loops_and_lists() -> None:
    eager = Loopy()
    m = kiln.script(eager)
    cases = [(torch.randn(3, 4), 2), (torch.randn(3, 4), 2), (torch.randn(2, 4), 3),
             (torch.randn(3, 4, dtype=torch.float64), 1), (torch.randn(1, 4), 1)]
    for x, n in cases:
        m.to(x.dtype)
        eager.to(x.dtype)
        assert_close(m(x, n), eager(x, n))
    assert executor_of(m).specializations   # made specializations along the way


def test_input_shape_and_dtype_changes_specialize_again() -> None:
    eager = Flatten()
    m = kiln.trace(eager, (torch.randn(2, 3, 4),))
    shapes = [(2, 3, 4), (2, 3, 4), (5, 4, 3), (1, 12), (5, 4, 3)]
    for shape in shapes:
        x = torch.randn(*shape)
        assert_close(m(x), eager(x))
    ex = executor_of(m)
    assert len(ex.specializations) == 3
    assert all(s.compiled is not None for s in ex.specializations)
    half = torch.randn(2, 3, 4, dtype=torch.float64)
    with pytest.raises(RuntimeError):     # the parameters are float32: the general code's error
        m(half)
    with optimized_execution(False), pytest.raises(RuntimeError):
        m(half)


def test_traced_function_specializes_on_sizes() -> None:
    x, y = torch.randn(2, 3, 4), torch.randn(12, 5)
    f = kiln.trace(sized, (x, y))
    assert isinstance(f, ScriptFunction)
    for a, b in [(x, y), (x, y), (torch.randn(3, 2, 2), torch.randn(4, 1))]:
        assert_close(f(a, b), sized(a, b))
    g = f.graph_for(x, y)
    assert "aten::size" not in kinds(g) and "aten::mul" not in kinds(g)   # 3 * 4 folded
    assert "prim::Constant[value=[2, 12]]" in str(g)
    assert len(executor_of(f).specializations) == 2


def test_only_the_sizes_used_are_guarded() -> None:
    f = kiln.script(second_dim)
    for batch in (1, 2, 3, 9):
        x = torch.randn(batch, 5)
        assert_close(f(x), x * 5)
    ex = executor_of(f)
    assert len(ex.specializations) == 1          # the batch size is not relied on
    check = ex.specializations[0].guard.inputs[0]
    assert check.rank == 2 and check.dims == ((1, 5),) and check.dtype is None
    assert_close(f(torch.ones(2, 6)), torch.full((2, 6), 6.0))
    assert_close(f(torch.ones(2, 5, 1)), torch.full((2, 5, 1), 5.0))
    assert len(ex.specializations) == 3


def grows(x: torch.Tensor) -> int:
    x.unsqueeze_(0)
    return x.size(0) * 10 + x.dim()


def test_inputs_written_in_place_are_not_folded() -> None:
    f = kiln.script(grows)
    for _ in range(3):
        assert f(torch.zeros(2, 3)) == 13
    g = f.graph_for(torch.zeros(2, 3))
    assert "aten::size" in kinds(g) and "aten::dim" in kinds(g)


def test_profile_runs_generalize() -> None:
    set_profiling(True, profile_runs=2)
    f = kiln.script(second_dim_again)
    a, b = torch.randn(2, 5), torch.randn(3, 5)
    assert_close(f(a), a * 5)
    assert not executor_of(f).specializations       # one run so far
    assert_close(f(b), b * 5)
    (spec,) = executor_of(f).specializations
    assert "Float(*, 5, strides=[5, 1]" in str(spec.graph)
    assert "aten::size" not in kinds(spec.graph)     # dimension 1 agreed: still folded


# -- autograd --------------------------------------------------------------------------------------

def test_requires_grad_inputs_and_grad_mode() -> None:
    eager = Flatten()
    m = kiln.trace(eager, (torch.randn(2, 3, 4),))
    with torch.no_grad():
        m(torch.randn(2, 3, 4))                     # specialized without gradients first
    for _ in range(2):
        x = torch.randn(2, 3, 4, requires_grad=True)
        x2 = x.detach().clone().requires_grad_(True)
        m(x).sum().backward()
        eager(x2).sum().backward()
        assert x.grad is not None and x2.grad is not None
        assert_close(x.grad, x2.grad)
        for p, q in zip(m.parameters(), eager.parameters()):
            assert p is q                          # shared: gradients accumulate on the same tensors


def test_module_to_float64_after_specialization() -> None:
    eager = Flatten()
    m = kiln.trace(eager, (torch.randn(2, 3, 4),))
    m(torch.randn(2, 3, 4))
    before = executor_of(m)
    m.to(torch.float64)
    assert "forward" not in m._kiln_executors      # dropped with the compiled code
    x = torch.randn(2, 3, 4, dtype=torch.float64)
    assert_close(m(x), eager(x))
    after = executor_of(m)
    assert after is not before and "Double(2, 3, 4" in str(m.graph_for(x))


def test_more_signatures_than_the_cache_holds() -> None:
    set_profiling(True, max_specializations=2)
    eager = Flatten()
    m = kiln.trace(eager, (torch.randn(2, 3, 4),))
    xs = [torch.randn(b, 12) for b in (1, 2, 3, 4)]
    for _ in range(2):
        for x in xs:
            assert_close(m(x), eager(x))
    ex = executor_of(m)
    assert len(ex.specializations) == 2
    assert ex.find((m, xs[3])) is None                # runs the general code
    g = m.graph_for(xs[3])                          # still shows what a specialization would be
    assert "Float(4, 12" in str(g) and len(ex.specializations) == 2


# -- graph_for ------------------------------------------------------------------------------------

def test_graph_for_shows_refined_types_and_folded_sizes() -> None:
    m = kiln.trace(Flatten(), (torch.randn(2, 3, 4),))
    general = str(m.graph)
    x = torch.randn(2, 3, 4)
    g = m.graph_for(x)
    verify(g)
    text = str(g)
    assert "%x : Float(2, 3, 4, strides=[12, 4, 1], requires_grad=0, device=cpu)" in text
    assert "aten::size" not in kinds(g)
    assert "prim::Constant[value=[2, -1]]" in text and "prim::Constant[value=3]" in text
    assert "Float(2, 4, strides=[4, 1], requires_grad=1, device=cpu) = aten::linear" in text
    with torch.no_grad():
        assert "Float(2, 4, strides=[4, 1], requires_grad=0, device=cpu) = aten::linear" in str(m.graph_for(x))
    other = str(m.graph_for(torch.randn(5, 2, 6)))   # other inputs, their own graph
    assert "%x : Float(5, 2, 6, strides=[12, 6, 1]" in other and "prim::Constant[value=[5, -1]]" in other
    assert str(m.graph) == general and "aten::size" in kinds(m.graph)   # m.graph is the general one
    assert str(m.forward.graph_for(x)) == text


def test_graph_for_runs_the_model_once() -> None:
    m = kiln.script(Counter())
    x = torch.zeros(2, 2)
    g = m.graph_for(x)                              # profiles: one real call
    assert m.calls.item() == 1 and "aten::size" not in kinds(g)
    m.graph_for(x)                                  # specialized already: still one real call
    assert m.calls.item() == 2
    assert_close(m(x), torch.full((2, 2), 3.0))


def test_graph_for_of_a_loop_is_valid_ir() -> None:
    m = kiln.script(Loopy())
    g = m.graph_for(torch.randn(3, 4), 3)
    verify(g)
    assert g.inputs[1].type == TensorType.of(torch.randn(3, 4)) and str(g.inputs[2].type) == "int"
    loop = next(n for n in g.nodes if n.kind == "prim::Loop")
    assert isinstance(loop.outputs[-1].type, TensorType)   # carried: wide enough for every iteration
    g = m.graph_for(torch.randn(2, 4), 1)           # one branch never ran: declared types stay there
    verify(g)


# -- switches -------------------------------------------------------------------------------------

def test_optimized_execution_false_bypasses() -> None:
    eager = Flatten()
    m = kiln.trace(eager, (torch.randn(2, 3, 4),))
    x = torch.randn(2, 3, 4)
    m(x)
    ex = executor_of(m)
    assert m.__dict__["_kiln_forward"] is not ex.general.entry
    with optimized_execution(False):
        assert not ex_mod.profiling_enabled()
        assert m.__dict__["_kiln_forward"] is ex.general.entry and m.forward.fn is ex.general.fn
        assert_close(m(x), eager(x))
        assert "aten::size" in kinds(m.graph_for(x))   # what runs: the general graph
        n = kiln.trace(eager, (x,))
        n(x)
        assert not executor_of(n).specializations
    assert ex_mod.profiling_enabled() and m.__dict__["_kiln_forward"] is not ex.general.entry
    assert_close(n(x), eager(x)) and executor_of(n).specializations


def test_environment_variable_turns_profiling_off() -> None:
    code = "import kiln.runtime.executor as e; print(e.profiling_enabled())"
    root = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
    env = {**os.environ, "KILN_PROFILING": "0", "PYTHONPATH": root}
    out = subprocess.run([sys.executable, "-c", code], env=env, capture_output=True, text=True, check=True)
    assert out.stdout.strip() == "False"


def test_set_profiling_rejects_bad_settings() -> None:
    with pytest.raises(kiln.KilnError, match="profile_runs"):
        set_profiling(True, profile_runs=0)
    assert kiln.set_profiling(True) is True and kiln.optimized_execution is optimized_execution


# -- errors ---------------------------------------------------------------------------------------

def _error(fn: Any, *args: Any) -> BaseException:
    with pytest.raises(Exception) as info:
        fn(*args)
    return info.value


def test_errors_match_the_general_path() -> None:
    x, y = torch.randn(2, 3, 4), torch.randn(12, 5)
    f = kiln.trace(sized, (x, y))
    bad_y = torch.randn(11, 5)
    first = _error(f, x, bad_y)                      # raised while profiling
    f(x, y)
    specialized = _error(f, x, bad_y)                # raised by the specialized code
    with optimized_execution(False):
        general = _error(f, x, bad_y)
    for e in (first, specialized):
        assert type(e) is type(general) and str(e) == str(general)
        assert getattr(e, "__notes__", None) == getattr(general, "__notes__", None)
    for args, kind in (((x,), InputError), ((x, 3), InputError), ((x, y, y), InputError)):
        with optimized_execution(False):
            want = _error(f, *args)
        got = _error(f, *args)
        assert type(got) is type(want) is kind and str(got) == str(want)


def test_module_errors_match_the_general_path() -> None:
    m = kiln.trace(Flatten(), (torch.randn(2, 3, 4),))
    m(torch.randn(2, 3, 4))
    for args in [(torch.randn(2, 3, 5),), (torch.randn(2, 3, 4), 1), ("x",), ()]:
        with optimized_execution(False):
            want = _error(m, *args)
        got = _error(m, *args)
        assert type(got) is type(want) and str(got) == str(want)


def test_trace_guard_failures_still_raise() -> None:
    def picky(x: torch.Tensor) -> torch.Tensor:
        return x * 2 if x.size(0) > 2 else x - 1

    with pytest.warns(kiln.TracerWarning):
        f = kiln.trace(picky, (torch.randn(3, 2),))
    assert_close(f(torch.ones(4, 2)), torch.full((4, 2), 2.0))
    with pytest.raises(KilnRuntimeError):
        f(torch.ones(1, 2))
    with pytest.raises(KilnRuntimeError):
        f(torch.ones(1, 2))


# -- integration with the module runtime ----------------------------------------------------------

def test_hooks_kwargs_and_methods_after_specialization() -> None:
    eager = Flatten()
    m = kiln.trace(eager, (torch.randn(2, 3, 4),))
    x = torch.randn(2, 3, 4)
    m(x)
    seen: list[Any] = []
    handle = m.register_forward_hook(lambda mod, inp, out: seen.append(out))
    assert_close(m(x), eager(x)) and len(seen) == 1
    handle.remove()
    assert_close(m(x=x), eager(x)) and assert_close(m.forward(x), eager(x))
    assert len(seen) == 1


def test_deepcopy_after_specialization() -> None:
    eager = Flatten()
    m = kiln.trace(eager, (torch.randn(2, 3, 4),))
    x = torch.randn(2, 3, 4)
    m(x)
    c = copy.deepcopy(m)
    assert c._kiln_executors == {}
    assert_close(c(x), eager(x)) and executor_of(c) is not executor_of(m)


def test_concurrent_first_calls() -> None:
    eager = Flatten()
    m = kiln.trace(eager, (torch.randn(2, 3, 4),))
    xs = [torch.randn(b, 12) for b in (1, 2, 1, 2, 3, 3, 1, 2)]
    results: list[Optional[torch.Tensor]] = [None] * len(xs)
    barrier = threading.Barrier(len(xs))

    def work(i: int) -> None:
        barrier.wait()
        results[i] = m(xs[i])

    threads = [threading.Thread(target=work, args=(i,)) for i in range(len(xs))]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    for x, r in zip(xs, results):
        assert r is not None
        assert_close(r, eager(x))
    assert len(executor_of(m).specializations) <= 8


# -- fusion ---------------------------------------------------------------------------------------

def pointwise(x: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
    return torch.relu(x * y + 1.0)


def test_fusion_waits_for_a_call_without_gradients(monkeypatch: pytest.MonkeyPatch) -> None:
    """Fused kernels have no backward: a call profiled with grad mode on and values requiring
    grad is not fused, and its specialization is guarded by the grad mode, so that a later
    ``no_grad`` call gets one of its own.  (A stand-in fuser records when it runs.)"""
    runs: list[bool] = []

    def fake_fuse(graph: kiln.Graph) -> bool:
        runs.append(torch.is_grad_enabled())
        return False

    monkeypatch.setitem(PASSES, "fuse", fake_fuse)
    f = kiln.script(pointwise)
    a, b = torch.randn(2, 3), torch.randn(2, 3)
    x, x2 = a.clone().requires_grad_(True), a.clone().requires_grad_(True)
    f(x, b).sum().backward()
    pointwise(x2, b).sum().backward()
    assert x.grad is not None and x2.grad is not None
    assert_close(x.grad, x2.grad)
    ex = executor_of(f)
    assert runs == [] and ex.specializations[0].guard.grad_enabled is True
    assert "grad mode on" in ex.describe()
    with torch.no_grad():
        for p, q in [(a, b), (a.t(), b.t()), (a.double(), b.double())]:
            assert_close(f(p, q), pointwise(p, q))
    assert runs == [False] and len(ex.specializations) == 2 and ex.specializations[1].guard.empty
    assert f._runner is ex.general.fn             # both run the general code: no dispatcher left


# -- fusion (when the fuse pass and a C++ compiler are there) ---------------------------------------

needs_fusion = pytest.mark.skipif(
    "fuse" not in PASSES or not (shutil.which("c++") or shutil.which("g++")),
    reason="needs the fuse pass and a C++ compiler")


def fused(x: torch.Tensor, y: torch.Tensor, w: torch.Tensor) -> torch.Tensor:
    return torch.relu(x * y + 1.0) @ w


@needs_fusion
def test_graph_for_fuses_the_pointwise_chain() -> None:
    x, y, w = torch.randn(4, 8), torch.randn(4, 8), torch.randn(8, 3)
    f = kiln.trace(fused, (x, y, w))
    with torch.no_grad():
        g = f.graph_for(x, y, w)
        assert_close(f(x, y, w), fused(x, y, w))
    top = [n.kind for n in g.nodes]
    assert kinds(g).count("prim::FusionGroup") == 1 and "aten::matmul" in top


@needs_fusion
def test_fused_specialization_keeps_autograd() -> None:
    x, y, w = torch.randn(4, 8), torch.randn(4, 8), torch.randn(8, 3)
    f = kiln.trace(fused, (x, y, w))
    with torch.no_grad():
        f(x, y, w)                                  # specialized (and fused) without gradients
    xs = [t.clone().requires_grad_(True) for t in (x, y, w)]
    es = [t.clone().requires_grad_(True) for t in (x, y, w)]
    f(*xs).sum().backward()
    fused(*es).sum().backward()
    for a, b in zip(xs, es):
        assert a.grad is not None and b.grad is not None
        assert_close(a.grad, b.grad)


@needs_fusion
def test_each_signature_gets_fused_code_of_its_own() -> None:
    """The first fused specialization takes every call (no guard at all) until a call of
    another signature reaches its unfused branch; then it narrows to its own signature and
    the next such call gets a fused specialization of its own."""
    x, y, w = torch.randn(4, 8), torch.randn(4, 8), torch.randn(8, 3)
    f = kiln.trace(fused, (x, y, w))
    ex = executor_of(f)
    with torch.no_grad():
        assert f._runner is ex.specializations[0].fn          # guard-free
        for rows in (4, 5, 5, 4, 6, 6, 5):
            a, b = torch.randn(rows, 8), torch.randn(rows, 8)
            assert_close(f(a, b, w), fused(a, b, w))
        fused_for = sorted(s.guard.inputs[0].dims[0][1] for s in ex.specializations if not s.guard.empty)
        assert fused_for == [4, 5] and ex.specializations[-1].guard.empty
        for s in ex.specializations:
            assert kinds(s.graph).count("prim::FusionGroup") == 1
