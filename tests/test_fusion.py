"""Pointwise fusion: the ``fuse`` pass, the C++ backend, and running fused graphs.

Graphs come from ``kiln.trace`` (whose types are complete: what the example inputs had), are
fused, compiled by Kiln's code generator and compared with eager PyTorch.  Tests that need a
working C++ compiler skip cleanly without one; the fallbacks (no compiler, a failed compile, a
failed type check) are tested everywhere.  Kernels are cached in a temporary directory.
"""

from __future__ import annotations

import logging
import subprocess
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest
import torch
import torch.nn.functional as F

import kiln
from kiln.backends import cpp, toolchain
from kiln.ir.graph import Graph, Node, subgraph_of
from kiln.passes import PASSES, PIPELINES, run_pipeline
from kiln.passes.fuse import fuse_pointwise
from kiln.runtime import fusion
from kiln.runtime.codegen import CompiledFunction, compile_graph
from kiln.runtime.interpreter import interpret

F32 = "Float(2, 3, strides=[3, 1], requires_grad=0, device=cpu)"
SPECIALS = [float("nan"), float("inf"), -float("inf"), -0.0, 0.0, 1e-30, -1e-30, 1e30, -1e30,
            3.0, -3.0, 0.5, -0.5, 20.0, -20.0, 100.0, -100.0]


pytestmark = pytest.mark.usefixtures("kernel_cache")   # see conftest.kernel_cache


@pytest.fixture(scope="module")
def kernels_work(kernel_cache: Path) -> bool:
    if toolchain.find_compiler() is None:
        return False
    g = kiln.parse_graph(f"""graph(%x : {F32}):
  %a : {F32} = aten::relu(%x)
  return (%a)""")
    return cpp.build_kernel(g) is not None


@pytest.fixture
def compiler(kernels_work: bool) -> None:
    """Skip the test when no C++ compiler (with OpenMP) works here."""
    if not kernels_work:
        pytest.skip("no working C++ compiler (with OpenMP)")


needs_compiler = pytest.mark.usefixtures("compiler")


def fused(fn: Callable[..., Any], *example: Any) -> tuple[Graph, CompiledFunction]:
    """``fn`` traced on ``example``, fused, verified, and compiled."""
    graph = kiln.trace(fn, example).graph.copy()
    assert fuse_pointwise(graph), f"nothing fused in\n{graph}"
    kiln.verify(graph)
    return graph, compile_graph(graph, fn.__name__, self_arg=False)


def groups(graph: Graph) -> list[Node]:
    return [n for n in graph.all_nodes() if n.kind == "prim::FusionGroup"]


def check(got: Any, want: Any) -> None:
    if isinstance(want, tuple):
        assert isinstance(got, tuple) and len(got) == len(want)
        for i, (g, w) in enumerate(zip(got, want)):
            torch.testing.assert_close(g, w, equal_nan=True, msg=lambda m, i=i: f"result {i}: {m}")
    else:
        torch.testing.assert_close(got, want, equal_nan=True)


def with_specials(n: int, dtype: torch.dtype = torch.float32) -> torch.Tensor:
    return torch.cat([torch.tensor(SPECIALS), torch.randn(n) * 3]).to(dtype)


# -- the pass's structure (no compiler needed) ---------------------------------------------------------

def block_and_mm(x: torch.Tensor, y: torch.Tensor, z: torch.Tensor, w: torch.Tensor) -> torch.Tensor:
    return torch.relu(x * y + z) @ w


def example_args(n: int = 8) -> tuple[torch.Tensor, ...]:
    return torch.randn(n, n), torch.randn(n, n), torch.randn(n, n), torch.randn(n, n)


def test_one_group_behind_a_type_check_with_matmul_outside() -> None:
    graph = kiln.trace(block_and_mm, example_args()).graph.copy()
    assert fuse_pointwise(graph)
    kiln.verify(graph)
    text = str(graph)
    assert text.count("prim::FusionGroup_0(") == 1 and "with prim::FusionGroup_0 = graph(" in text
    assert "FusionGroup_1" not in text
    top = [n.kind for n in graph.nodes]
    assert top == ["prim::Constant", "prim::TypeCheck", "prim::If", "aten::matmul"], top
    branch = next(n for n in graph.nodes if n.kind == "prim::If")
    assert [n.kind for n in branch.blocks[0].nodes] == ["prim::FusionGroup"]
    assert [n.kind for n in branch.blocks[1].nodes] == ["aten::mul", "aten::add", "aten::relu"]
    sub = subgraph_of(groups(graph)[0])
    assert sub is not None
    assert [n.kind for n in sub.nodes] == ["prim::Constant", "aten::mul", "aten::add", "aten::relu"]
    check_node = next(n for n in graph.nodes if n.kind == "prim::TypeCheck")
    assert str(check_node.attrs["types"][0]) == "Float(8, 8, strides=[8, 1], requires_grad=0, device=cpu)"


def test_fused_text_round_trips_and_the_pass_is_idempotent() -> None:
    graph = kiln.trace(block_and_mm, example_args()).graph.copy()
    fuse_pointwise(graph)
    text = str(graph)
    again = kiln.parse_graph(text)
    kiln.verify(again)
    assert str(again) == text
    assert not fuse_pointwise(graph) and str(graph) == text
    assert not run_pipeline(again, ["fuse"], verify=True)


def test_registered_as_a_pass_but_not_in_exact_pipelines() -> None:
    assert PASSES["fuse"] is fuse_pointwise
    assert all("fuse" not in names for names in PIPELINES.values())


def test_docstring_example_is_what_the_pass_does() -> None:
    from kiln.passes import fuse
    from tests.test_pass_files import _snippet
    doc = fuse.__doc__ or ""
    graph = kiln.parse_graph(_snippet(doc, "Before"))
    run_pipeline(graph, ["fuse"], verify=True)
    assert str(graph) == str(kiln.parse_graph(_snippet(doc, "After")))


def test_verifier_checks_the_subgraph() -> None:
    graph = kiln.trace(block_and_mm, example_args()).graph.copy()
    fuse_pointwise(graph)
    sub = subgraph_of(groups(graph)[0])
    assert sub is not None
    sub.add_input(sub.inputs[0].type, "extra")
    with pytest.raises(kiln.IRError, match="subgraph takes 4"):
        kiln.verify(graph)


def test_interpreter_runs_type_checks_and_fusion_groups() -> None:
    graph = kiln.trace(block_and_mm, example_args()).graph.copy()
    fuse_pointwise(graph)
    args = example_args()
    check(interpret(graph, list(args)), block_and_mm(*args))
    other = example_args(5)   # the type check fails: the fallback block runs
    check(interpret(graph, list(other)), block_and_mm(*other))


TYPE_CHECK = """graph(%x : Tensor):
  %ok : bool = prim::TypeCheck[types=[Float(2, 3, strides=[3, 1], requires_grad=0, device=cpu)]](%x)
  return (%ok)"""


@pytest.mark.parametrize("make, expected", [
    (lambda: torch.randn(2, 3), True),
    (lambda: torch.randn(3, 2).t(), False),
    (lambda: torch.randn(2, 3, dtype=torch.float64), False),
    (lambda: torch.randn(2, 4), False),
    (lambda: torch.randn(2, 3, 1), False),
    (lambda: torch.randn(2, 3, requires_grad=True), False),
    (lambda: torch.randn(2, 3).to_sparse(), False),
    (lambda: torch.randn(2, 3, device="meta"), False),
    (lambda: torch.randn(4, 3)[::2], False),
], ids=["exact", "transposed", "dtype", "size", "rank", "grad", "sparse", "meta", "strided"])
def test_type_check_inline_code_agrees_with_the_interpreter(make: Callable[[], torch.Tensor],
                                                             expected: bool) -> None:
    graph = kiln.parse_graph(TYPE_CHECK)
    compiled = compile_graph(graph, "check", self_arg=False)
    x = make()
    assert interpret(graph, [x]) is expected
    assert compiled(x) is expected


def test_type_check_sees_the_effective_requires_grad() -> None:
    """As TorchScript's: a tensor requiring grad matches ``requires_grad=0`` under no_grad."""
    graph = kiln.parse_graph(TYPE_CHECK)
    compiled = compile_graph(graph, "check", self_arg=False)
    x = torch.randn(2, 3, requires_grad=True)
    assert not interpret(graph, [x]) and not compiled(x)
    with torch.no_grad():
        assert interpret(graph, [x]) and compiled(x)
    grad_graph = kiln.parse_graph(TYPE_CHECK.replace("requires_grad=0", "requires_grad=1"))
    grad_compiled = compile_graph(grad_graph, "check", self_arg=False)
    assert interpret(grad_graph, [x]) and grad_compiled(x)
    with torch.no_grad():
        assert not interpret(grad_graph, [x]) and not grad_compiled(x)


# -- kernels against eager -------------------------------------------------------------------------------

def unary_ops(x: torch.Tensor) -> tuple[torch.Tensor, ...]:
    x = x * 1.0
    return (x.relu(), x.sigmoid(), x.tanh(), x.exp(), x.log(), x.sqrt(), x.rsqrt(), x.abs(), -x,
            x.reciprocal(), x.sin(), x.cos(), x.erf(), x.expm1(), x.log1p(), x.square(),
            x ** 2, x ** 3, x ** 0.5, x ** -0.5, x ** -1, x ** -2, x ** 2.5, x.clamp(-1, 2),
            x.clamp(min=0.5), x.clamp(max=0.5), torch.clamp_min(x, -0.5), torch.clamp_max(x, -0.5),
            F.hardtanh(x), F.hardtanh(x, -2.0, 3.0), F.leaky_relu(x, 0.2), F.elu(x), F.elu(x, 0.7),
            F.gelu(x), F.gelu(x, approximate="tanh"), F.silu(x), F.hardswish(x), F.hardsigmoid(x),
            x * 2.5, x / 3, 2 - x, x + 1, x - 0.5, x.clamp(min=float("nan")))


def binary_ops(x: torch.Tensor, y: torch.Tensor) -> tuple[torch.Tensor, ...]:
    a, b = x * 1.0, y * 1.0
    return (a + b, torch.add(a, b, alpha=2.5), a - b, torch.sub(a, b, alpha=0.5),
            torch.rsub(a, b, alpha=3), a * b, a / b, torch.pow(a, b), torch.minimum(a, b),
            torch.maximum(a, b), torch.where(x > y, a, b), torch.where(y > 0, a, 0.0))


def comparisons(x: torch.Tensor, y: torch.Tensor, i: torch.Tensor) -> tuple[torch.Tensor, ...]:
    a = x * 1.0
    return (torch.where(a > y, a, y) * 2, (a >= 0.1) & (y < 0.5), torch.where(a == 0.1, 1.0, a),
            (i > 3) * a, torch.where(i <= 2.5, a, y), (a != a) * 1.0, ~(a > 0) | (y > 0),
            torch.logical_xor(a > 0, y > 0), torch.logical_not(a < y) * y)


@needs_compiler
def test_comparisons_and_logic_compute_in_the_promoted_dtype() -> None:
    x, y = with_specials(500), with_specials(500).flip(0)
    i = torch.randint(0, 6, x.shape)
    x[20] = 0.1   # a float32 0.1 compared with the literal 0.1 (rounded to float32 first)
    graph, compiled = fused(comparisons, x, y, i)
    assert len(groups(graph)) == 1
    check(compiled(x, y, i), comparisons(x, y, i))


@needs_compiler
@pytest.mark.parametrize("dtype", [torch.float32, torch.float64], ids=["float32", "float64"])
def test_unary_operators_match_eager_including_nan_and_inf(dtype: torch.dtype) -> None:
    x = with_specials(2000, dtype)
    graph, compiled = fused(unary_ops, x)
    assert len(groups(graph)) == 1
    check(compiled(x), unary_ops(x))


@needs_compiler
@pytest.mark.parametrize("dtype", [torch.float32, torch.float64], ids=["float32", "float64"])
def test_binary_operators_match_eager(dtype: torch.dtype) -> None:
    x, y = with_specials(2000, dtype), with_specials(2000, dtype).flip(0)
    graph, compiled = fused(binary_ops, x, y)
    assert len(groups(graph)) == 1
    check(compiled(x, y), binary_ops(x, y))


def bias_gelu(x: torch.Tensor, b: torch.Tensor) -> torch.Tensor:
    return F.gelu(x + b) * 2.0


def scaled_tanh(x: torch.Tensor, b: torch.Tensor) -> torch.Tensor:
    return (x * b).tanh() + b


def sigmoid_plus(x: torch.Tensor, b: torch.Tensor) -> torch.Tensor:
    return (x * b).sigmoid() + 1


def exp_of_strided(x: torch.Tensor, b: torch.Tensor) -> torch.Tensor:
    return (x[:, ::2] * b).exp() + 1


BROADCASTS = {
    "row": (bias_gelu, (torch.randn(64, 300), torch.randn(300))),
    "column": (sigmoid_plus, (torch.randn(64, 300), torch.randn(64, 1))),
    "outer": (sigmoid_plus, (torch.randn(64, 1), torch.randn(1, 300))),
    "3d": (sigmoid_plus, (torch.randn(4, 1, 50), torch.randn(1, 30, 50))),
    "zero-dim": (scaled_tanh, (torch.randn(1000), torch.tensor(2.0))),
    "zero-dim-double": (scaled_tanh, (torch.randn(1000), torch.tensor(2.0, dtype=torch.float64))),
    "promote": (scaled_tanh, (torch.randn(1000), torch.randn(1000, dtype=torch.float64))),
    "int-input": (sigmoid_plus, (torch.randint(0, 10, (1000,)), torch.randn(1000))),
    "strided-input": (exp_of_strided, (torch.randn(64, 600), torch.randn(64, 300))),
    "one-element": (sigmoid_plus, (torch.randn(1), torch.randn(1))),
    "empty": (sigmoid_plus, (torch.randn(0, 3), torch.randn(0, 3))),
}


@needs_compiler
@pytest.mark.parametrize("case", list(BROADCASTS))
def test_broadcasting_and_mixed_operands(case: str) -> None:
    fn, args = BROADCASTS[case]
    graph, compiled = fused(fn, *args)
    runner = fusion.build_runner(groups(graph)[0])
    assert runner.__code__.co_filename == "<kiln kernel runner>"   # a kernel, not the fallback
    check(compiled(*args), fn(*args))


@needs_compiler
def test_scalar_graph_input_and_multiple_outputs() -> None:
    graph = kiln.parse_graph(f"""graph(%x : {F32},
      %s : float):
  %one : int = prim::Constant[value=1]()
  %a : {F32} = aten::mul(%x, %s)
  %b : {F32} = aten::add(%a, %x, %s)
  %c : {F32} = aten::tanh(%b)
  %r : ({F32}, {F32}) = prim::TupleConstruct(%a, %c)
  return (%r)""")
    assert fuse_pointwise(graph)
    compiled = compile_graph(graph, "g", self_arg=False)
    x = torch.randn(2, 3)
    for s in (2.5, -1.0, 0.0):
        a = x * s
        check(compiled(x, s), (a, torch.tanh(torch.add(a, x, alpha=s))))


@needs_compiler
@pytest.mark.parametrize("threads", [1, 2])
def test_large_inputs_on_one_and_several_threads(threads: int) -> None:
    before = torch.get_num_threads()
    try:
        torch.set_num_threads(threads)
        x, y = torch.randn(300_000), torch.randn(300_000)
        _, compiled = fused(binary_ops, x, y)
        check(compiled(x, y), binary_ops(x, y))
        big = (torch.randn(512, 300), torch.randn(300))
        _, compiled = fused(bias_gelu, *big)
        check(compiled(*big), bias_gelu(*big))
    finally:
        torch.set_num_threads(before)


# -- fallbacks -------------------------------------------------------------------------------------------

@needs_compiler
def test_type_check_failure_runs_the_unfused_operators() -> None:
    graph, compiled = fused(block_and_mm, *example_args(64))
    args = example_args(64)
    check(compiled(*args), block_and_mm(*args))
    smaller = (torch.randn(3, 64), torch.randn(3, 64), torch.randn(3, 64), torch.randn(64, 64))
    check(compiled(*smaller), block_and_mm(*smaller))
    doubles = tuple(a.double() for a in args)
    check(compiled(*doubles), block_and_mm(*doubles))
    transposed = (args[0].t(), args[1], args[2], args[3])
    check(compiled(*transposed), block_and_mm(*transposed))


@needs_compiler
def test_inputs_requiring_grad_take_the_fallback_and_get_gradients() -> None:
    _, compiled = fused(block_and_mm, *example_args(16))
    x, y, z, w = example_args(16)
    x.requires_grad_(True)
    compiled(x, y, z, w).sum().backward()
    assert x.grad is not None
    x2 = x.detach().clone().requires_grad_(True)
    block_and_mm(x2, y, z, w).sum().backward()
    torch.testing.assert_close(x.grad, x2.grad)


def test_without_a_compiler_the_group_runs_unfused(monkeypatch: pytest.MonkeyPatch,
                                                   caplog: pytest.LogCaptureFixture) -> None:
    monkeypatch.setattr(toolchain, "find_compiler", lambda: None)
    monkeypatch.setattr(toolchain, "_noted", set())
    caplog.set_level(logging.DEBUG, logger="kiln.fusion")
    graph, compiled = fused(block_and_mm, *example_args(16))
    args = example_args(16)
    check(compiled(*args), block_and_mm(*args))
    assert fusion.build_runner(groups(graph)[0]).__code__.co_filename != "<kiln kernel runner>"
    compile_graph(graph, "again", self_arg=False)
    notes = [r for r in caplog.records if r.name == "kiln.fusion"]
    assert len(notes) == 1 and "no working C++ compiler" in notes[0].getMessage()


def test_a_failed_compile_runs_unfused(monkeypatch: pytest.MonkeyPatch, tmp_path: Path,
                                       caplog: pytest.LogCaptureFixture) -> None:
    if toolchain.find_compiler() is None or toolchain.compiler_version(toolchain.find_compiler() or "") is None:
        pytest.skip("the failure is simulated around a real compiler lookup")
    monkeypatch.setenv("KILN_CACHE_DIR", str(tmp_path))
    monkeypatch.setattr(toolchain, "_noted", set())
    monkeypatch.setattr(toolchain, "run_compiler", lambda args: subprocess.CompletedProcess(
        args, 1, "", "error: simulated"))
    toolchain.clear_memory_cache()
    caplog.set_level(logging.DEBUG, logger="kiln.fusion")
    _, compiled = fused(block_and_mm, *example_args(16))
    args = example_args(16)
    check(compiled(*args), block_and_mm(*args))
    assert any("simulated" in r.getMessage() for r in caplog.records)
    assert list(tmp_path.iterdir()) == []   # no half-written library left behind


@needs_compiler
def test_the_disk_cache_is_reused(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    monkeypatch.setenv("KILN_CACHE_DIR", str(tmp_path))
    calls: list[list[str]] = []
    real = toolchain.run_compiler

    def counting(args: list[str]) -> subprocess.CompletedProcess[str]:
        calls.append(args)
        return real(args)
    monkeypatch.setattr(toolchain, "run_compiler", counting)
    graph = kiln.trace(block_and_mm, example_args(16)).graph.copy()
    fuse_pointwise(graph)
    sub = subgraph_of(groups(graph)[0])
    assert sub is not None
    toolchain.clear_memory_cache()
    assert cpp.build_kernel(sub) is not None and len(calls) == 1
    assert cpp.build_kernel(sub) is not None and len(calls) == 1    # in-process cache
    toolchain.clear_memory_cache()
    kernel = cpp.build_kernel(sub)
    assert kernel is not None and len(calls) == 1                   # from disk
    names = sorted(p.suffix for p in tmp_path.iterdir())
    assert names == [".cpp", ".so"], names                          # no temporary files left
    args = example_args(16)
    (out,) = kernel(*args[:3])
    check(out, torch.relu(args[0] * args[1] + args[2]))


@needs_compiler
def test_a_fusion_group_without_a_type_check_checks_its_inputs() -> None:
    graph = kiln.parse_graph(f"""graph(%x : Tensor):
  %f : Tensor = prim::FusionGroup_0(%x)
  return (%f)
with prim::FusionGroup_0 = graph(%x : {F32}):
  %a : {F32} = aten::neg(%x)
  %b : {F32} = aten::exp(%a)
  return (%b)""")
    kiln.verify(graph)
    compiled = compile_graph(graph, "g", self_arg=False)
    for x in (torch.randn(2, 3), torch.randn(5), torch.randn(3, 2).t(), torch.randn(2, 3).double()):
        check(compiled(x), torch.exp(-x))
        check(interpret(graph, [x]), torch.exp(-x))


def test_generated_source_shapes() -> None:
    """Flat loops take the element count as a parameter (one library for every size);
    broadcasting gives a loop nest with the sizes baked in."""
    graph = kiln.trace(bias_gelu, (torch.randn(64, 300), torch.randn(300))).graph.copy()
    fuse_pointwise(graph)
    sub = subgraph_of(groups(graph)[0])
    assert sub is not None
    nested = cpp.generate(sub).source
    assert "for (int64_t j = 0; j < 300; ++j)" in nested and "erff(" in nested
    flat1 = kiln.trace(scaled_tanh, (torch.randn(100), torch.tensor(2.0))).graph.copy()
    flat2 = kiln.trace(scaled_tanh, (torch.randn(5000), torch.tensor(2.0))).graph.copy()
    sources = []
    for g in (flat1, flat2):
        fuse_pointwise(g)
        s = subgraph_of(groups(g)[0])
        assert s is not None
        sources.append(cpp.generate(s).source)
    assert sources[0] == sources[1] and "i < n" in sources[0]
