"""The runtime: generated code == reference interpreter == eager PyTorch.

Graphs are built by hand with the Builder; every expected value is computed independently
with eager PyTorch, so each comparison can fail.
"""

from __future__ import annotations

import copy
import threading
import time
from collections.abc import Callable, Sequence
from typing import Any, Optional

import pytest
import torch
from hypothesis import given
from hypothesis import strategies as st
from torch.testing import assert_close

import kiln.runtime.module as runtime_module
from kiln.errors import InputError, IRError, KilnRuntimeError
from kiln.ir.builder import Builder
from kiln.ir.graph import Block, Graph, Node, SourceRange, Value
from kiln.ir.types import (
    TENSOR,
    BoolType,
    ClassType,
    IntType,
    ListType,
    OptionalType,
    StrType,
    TupleType,
    Type,
)
from kiln.ir.verify import verify
from kiln.passes import PASSES, run_pipeline
from kiln.passes.dce import eliminate_dead_code
from kiln.passes.inline import inline_calls
from kiln.runtime.codegen import CompiledFunction, compile_graph
from kiln.runtime.interpreter import interpret
from kiln.runtime.module import ScriptFunction, ScriptModule

# -- helpers ----------------------------------------------------------------------------------------

def new_graph(*inputs: tuple[str, Type]) -> tuple[Graph, Builder, list[Value]]:
    g = Graph()
    return g, Builder(g), [g.add_input(t, n) for n, t in inputs]


def add_loop(b: Builder, trip: Value, cond: Value, carried: Sequence[Value]) -> tuple[Node, Block]:
    """A prim::Loop with an empty body; the caller fills it and registers its returns."""
    node = b.graph.create("prim::Loop", [trip, cond, *carried], [v.type for v in carried])
    b.insert(node)
    body = node.add_block()
    body.add_input(IntType, "i")
    for v in carried:
        body.add_input(v.type, v.name)
    return node, body


def check_all(graph: Graph, args: Sequence[Any], expected: Any) -> CompiledFunction:
    """The graph verifies; generated code and the interpreter both give ``expected``."""
    verify(graph)
    cf = compile_graph(graph, "fn", self_arg=False)
    assert_close(cf(*args), expected)
    assert_close(interpret(graph, args), expected)
    return cf


def nodes_of(graph: Graph, kind: str) -> list[Node]:
    return [n for n in graph.all_nodes() if n.kind == kind]


# -- straight-line code -----------------------------------------------------------------------------

def test_straight_line_aten_ops() -> None:
    g, b, (x, y) = new_graph(("x", TENSOR), ("y", TENSOR))
    r = b.value("aten::relu", [x])
    s = b.value("aten::add.Tensor", [r, y, b.constant(2)])        # alpha=2 must be passed
    m = b.value("aten::mul.Scalar", [s, b.constant(0.5)])
    v = b.value("aten::view", [m, b.constant([-1, 2])])
    t = b.value("aten::transpose.int", [v, b.constant(0), b.constant(1)])
    total = b.value("aten::sum.dim_IntList", [t, b.constant([1]), b.constant(False), b.constant(torch.float64)])
    g.register_output(total)
    xs, ys = torch.randn(2, 3), torch.randn(2, 3)
    expected = ((torch.relu(xs) + 2 * ys) * 0.5).view(-1, 2).t().double().sum(1)
    check_all(g, [xs, ys], expected)


def test_default_keyword_left_out_but_other_values_kept() -> None:
    g, b, (x, y) = new_graph(("x", TENSOR), ("y", TENSOR))
    g.register_output(b.tuple([b.value("aten::sub.Tensor", [x, y, b.constant(1)]),
                               b.value("aten::sub.Tensor", [x, y, b.constant(3)])]))
    xs, ys = torch.randn(3), torch.randn(3)
    cf = check_all(g, [xs, ys], (xs - ys, xs - 3 * ys))
    assert "alpha=3" in cf.source and "alpha=1" not in cf.source


def test_multiple_results_and_tensor_constant() -> None:
    const = torch.tensor([[1.0, -2.0, 3.0]])
    g, b, (x,) = new_graph(("x", TENSOR))
    shifted = b.value("aten::add.Tensor", [x, b.constant(const), b.constant(1)])
    values, indices = b.op("aten::max.dim", [shifted, b.constant(1), b.constant(False)]).outputs
    g.register_output(b.tuple([values, indices]))
    xs = torch.randn(4, 3)
    expected = torch.max(xs + const, 1)
    check_all(g, [xs], (expected.values, expected.indices))


def test_scalar_prims_and_graph_without_nodes() -> None:
    g, b, (n, x) = new_graph(("n", IntType), ("x", TENSOR))
    k = b.value("aten::mul.int", [b.value("aten::add.int", [n, b.constant(3)]), b.constant(-2)])
    g.register_output(b.tuple([k, b.value("aten::mul.Scalar", [x, k])]))
    xs = torch.randn(2)
    check_all(g, [4, xs], (-14, xs * -14))
    g2, _, (a,) = new_graph(("a", TENSOR))
    g2.register_output(a)
    assert check_all(g2, [xs], xs).fn(xs) is xs


# -- control flow -----------------------------------------------------------------------------------

def if_graph() -> Graph:
    g, b, (x, flag) = new_graph(("x", TENSOR), ("flag", BoolType))
    node = b.if_(flag, [TENSOR, IntType])
    with b.at_end(node.blocks[0]):
        node.blocks[0].register_output(b.value("aten::sigmoid", [x]))
        node.blocks[0].register_output(b.constant(1))
    with b.at_end(node.blocks[1]):
        node.blocks[1].register_output(b.value("aten::neg", [x]))
        node.blocks[1].register_output(b.constant(2))
    g.register_output(b.tuple(node.outputs))
    return g


@pytest.mark.parametrize("flag", [True, False])
def test_if(flag: bool) -> None:
    xs = torch.randn(5)
    check_all(if_graph(), [xs, flag], (torch.sigmoid(xs), 1) if flag else (-xs, 2))


def test_counted_loop_with_carried_values_and_index() -> None:
    g, b, (x, n) = new_graph(("x", TENSOR), ("n", IntType))
    node, body = add_loop(b, n, b.constant(True), [x, b.constant(0)])
    with b.at_end(body):
        i, acc, total = body.inputs
        body.register_output(b.constant(True))
        body.register_output(b.value("aten::mul.Scalar", [acc, b.constant(2.0)]))
        body.register_output(b.value("aten::add.int", [total, i]))
    g.register_output(b.tuple(node.outputs))
    xs = torch.randn(3)
    for n_ in (0, 1, 5):
        cf = check_all(g, [xs, n_], (xs * 2.0 ** n_, sum(range(n_))))
    assert "for " in cf.source


def test_while_loop_with_data_dependent_condition() -> None:
    # while total < limit (at most 100 trips): total = total + i ; the index is a carried value too
    g, b, (limit,) = new_graph(("limit", IntType))
    start = b.value("aten::lt.int", [b.constant(0), limit])
    node, body = add_loop(b, b.constant(100), start, [b.constant(0), b.constant(0)])
    with b.at_end(body):
        i, total, last = body.inputs
        new_total = b.value("aten::add.int", [total, i])
        body.register_output(b.value("aten::lt.int", [new_total, limit]))
        body.register_output(new_total)
        body.register_output(i)
    g.register_output(b.tuple(node.outputs))

    def eager(lim: int) -> tuple[int, int]:
        total, last, i = 0, 0, 0
        cond = 0 < lim
        while cond and i < 100:
            total, last = total + i, i
            cond = total < lim
            i += 1
        return total, last

    for lim in (0, 1, 10, 10**9):
        cf = check_all(g, [lim], eager(lim))
    assert "while " in cf.source


def test_loop_returning_swapped_carried_values() -> None:
    # (a, b) = (b, a) each trip: the carried assignment must read the old values
    g, b, (x, y, n) = new_graph(("x", TENSOR), ("y", TENSOR), ("n", IntType))
    node, body = add_loop(b, n, b.constant(True), [x, y])
    with b.at_end(body):
        body.register_output(b.constant(True))
        body.register_output(body.inputs[2])
        body.register_output(body.inputs[1])
    g.register_output(b.tuple(node.outputs))
    xs, ys = torch.randn(2), torch.randn(2)
    check_all(g, [xs, ys, 3], (ys, xs))
    check_all(g, [xs, ys, 4], (xs, ys))


# -- containers -------------------------------------------------------------------------------------

def test_tuples_and_lists() -> None:
    g, b, (pair, x) = new_graph(("pair", TupleType((TENSOR, TENSOR))), ("x", TENSOR))
    a, c = b.unpack(pair, [TENSOR, TENSOR])
    cat = b.value("aten::cat", [b.list([a, c, x]), b.constant(0)])
    parts = b.unpack(b.list([x, a]), [TENSOR, TENSOR])
    g.register_output(b.tuple([cat, parts[1]]))
    p, q, xs = torch.randn(2), torch.randn(3), torch.randn(1)
    check_all(g, [(p, q), xs], (torch.cat([p, q, xs]), p))


def list_unpack_graph() -> Graph:
    g, b, (xs,) = new_graph(("xs", ListType(TENSOR)))
    b.source = SourceRange("model.py", 7, 4)
    first, second = b.unpack(xs, [TENSOR, TENSOR])
    g.register_output(b.value("aten::add.Tensor", [first, second, b.constant(1)]))
    return g


def test_list_unpack_of_wrong_length_raises() -> None:
    g = list_unpack_graph()
    a, c = torch.randn(2), torch.randn(2)
    check_all(g, [[a, c]], a + c)
    cf = compile_graph(g, "fn", self_arg=False)
    with pytest.raises(KilnRuntimeError, match="3 elements") as info:
        cf([a, c, a])
    assert any("prim::ListUnpack" in n and "model.py:7" in n for n in info.value.__notes__)
    with pytest.raises(KilnRuntimeError, match="3 elements"):
        interpret(g, [[a, c, a]])


def test_runtime_error_keeps_type_and_names_the_node() -> None:
    g, b, (x, y) = new_graph(("x", TENSOR), ("y", TENSOR))
    b.source = SourceRange("net.py", 42, 8)
    g.register_output(b.value("aten::mm", [x, y]))
    cf = compile_graph(g, "fn", self_arg=False)
    with pytest.raises(RuntimeError) as info:
        cf(torch.randn(2, 3), torch.randn(2, 3))
    notes = "\n".join(info.value.__notes__)
    assert "aten::mm" in notes and "net.py:42:8" in notes
    tb = info.value.__traceback__
    while tb is not None and tb.tb_frame.f_code.co_filename != cf.filename:
        tb = tb.tb_next
    assert tb is not None and cf.node_at(tb.tb_lineno) is next(iter(g.nodes))


# -- input checking ---------------------------------------------------------------------------------

def typed_graph() -> Graph:
    g, b, (x, k, name, maybe, pair) = new_graph(
        ("x.1", TENSOR), ("k", IntType), ("name", StrType), ("maybe", OptionalType(TENSOR)),
        ("pair", TupleType((IntType, IntType))))
    g.register_output(b.tuple([x, k, name, maybe, pair]))
    return g


def test_inputs_of_right_kinds_pass() -> None:
    cf = compile_graph(typed_graph(), "forward", self_arg=False)
    xs = torch.randn(1)
    assert cf(xs, 1, "a", None, (1, 2))[3] is None
    assert cf(torch.nn.Parameter(xs), 1, "a", xs, (1, 2))[3] is xs


@pytest.mark.parametrize("args, culprit, expected", [
    ((3, 1, "a", None, (1, 2)), "'x'", "Tensor"),
    ((torch.ones(1), 1.5, "a", None, (1, 2)), "'k'", "int"),
    ((torch.ones(1), 1, 2, None, (1, 2)), "'name'", "str"),
    ((torch.ones(1), 1, "a", 3, (1, 2)), "'maybe'", "Optional[Tensor]"),
    ((torch.ones(1), 1, "a", None, (1, 2, 3)), "'pair'", "Tuple[int, int]"),
    ((torch.ones(1), 1, "a", None, [1, 2]), "'pair'", "Tuple[int, int]"),
])
def test_input_of_wrong_kind_names_the_input(args: tuple[Any, ...], culprit: str, expected: str) -> None:
    cf = compile_graph(typed_graph(), "forward", self_arg=False)
    with pytest.raises(InputError, match=f"{culprit}.*expected {expected}".replace("[", r"\[")):
        cf(*args)
    fn = ScriptFunction("forward", typed_graph())
    with pytest.raises(InputError, match=culprit):
        fn(*args)


def test_wrong_number_of_inputs() -> None:
    fn = ScriptFunction("forward", typed_graph())
    with pytest.raises(InputError, match=r"takes 5 inputs \(x, k, name, maybe, pair\) but 1 was given"):
        fn(torch.ones(1))
    with pytest.raises(InputError, match="but 6 were given"):
        fn(torch.ones(1), 1, "a", None, (1, 2), 7)


def test_keyword_arguments() -> None:
    fn = ScriptFunction("forward", typed_graph())
    xs = torch.ones(1)
    assert fn(xs, 1, pair=(3, 4), name="n", maybe=None)[4] == (3, 4)
    with pytest.raises(InputError, match="unexpected keyword argument 'z'"):
        fn(xs, 1, "n", None, (1, 2), z=1)
    with pytest.raises(InputError, match="missing input"):
        fn(xs, name="n")


# -- property: random elementwise programs ----------------------------------------------------------

_UNARY: dict[str, Callable[[torch.Tensor], torch.Tensor]] = {
    "aten::relu": torch.relu, "aten::tanh": torch.tanh, "aten::neg": torch.neg, "aten::sigmoid": torch.sigmoid}
_BINARY: dict[str, Callable[[torch.Tensor, torch.Tensor], torch.Tensor]] = {
    "aten::mul.Tensor": torch.mul, "aten::maximum": torch.maximum, "aten::add.Tensor": torch.add}


@given(st.lists(st.tuples(st.sampled_from(sorted(_UNARY) + sorted(_BINARY)),
                          st.integers(0, 50), st.integers(0, 50)), min_size=1, max_size=12))
def test_random_programs_agree(program: list[tuple[str, int, int]]) -> None:
    g, b, inputs = new_graph(("x", TENSOR), ("y", TENSOR))
    xs = [torch.linspace(-2, 2, 6), torch.linspace(3, -1, 6)]
    values, eager = list(inputs), list(xs)
    for op, i, j in program:
        a, c = i % len(values), j % len(values)
        if op in _UNARY:
            values.append(b.value(op, [values[a]]))
            eager.append(_UNARY[op](eager[a]))
        else:
            extra = [b.constant(1)] if op == "aten::add.Tensor" else []
            values.append(b.value(op, [values[a], values[c], *extra]))
            eager.append(_BINARY[op](eager[a], eager[c]))
    g.register_output(values[-1])
    check_all(g, xs, eager[-1])


# -- modules ------------------------------------------------------------------------------------------

def linear_module(lin: torch.nn.Linear) -> ScriptModule:
    """A hand-built equivalent of what the tracer makes of nn.Linear."""
    m = ScriptModule("__torch__.Linear", "Linear")
    m.register_parameter("weight", lin.weight)
    m.register_parameter("bias", lin.bias)
    g, b, (s, x) = new_graph(("self", ClassType("__torch__.Linear")), ("input", TENSOR))
    g.register_output(b.value("aten::linear", [x, b.get_attr(s, "weight", TENSOR), b.get_attr(s, "bias", TENSOR)]))
    m._kiln_define_method("forward", g)
    return m


class Eager(torch.nn.Module):
    """The eager reference: y = relu(fc(x)) * scale + offset, plus a second method."""

    def __init__(self) -> None:
        super().__init__()
        self.fc = torch.nn.Linear(3, 4)
        self.register_buffer("offset", torch.randn(4))
        self.scale = 3

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return torch.relu(self.fc(x)) * self.scale + self.offset

    def score(self, x: torch.Tensor) -> torch.Tensor:
        return self.forward(x).sum()


def build_module(eager: Eager) -> ScriptModule:
    m = ScriptModule("__torch__.Eager", "Eager")
    m.add_module("fc", linear_module(eager.fc))
    m.register_buffer("offset", eager.offset)
    m._kiln_set_attribute("scale", eager.scale)
    self_t = ClassType("__torch__.Eager")
    g, b, (s, x) = new_graph(("self", self_t), ("x", TENSOR))
    fc = b.get_attr(s, "fc", ClassType("__torch__.Linear"))
    h = b.value("aten::relu", [b.call_method(fc, "forward", [x], TENSOR)])
    h = b.value("aten::mul.Scalar", [h, b.get_attr(s, "scale", IntType)])
    g.register_output(b.value("aten::add.Tensor", [h, b.get_attr(s, "offset", TENSOR), b.constant(1)]))
    m._kiln_define_method("forward", g)
    g2, b2, (s2, x2) = new_graph(("self", self_t), ("x", TENSOR))
    y = b2.call_method(s2, "forward", [x2], TENSOR)
    g2.register_output(b2.value("aten::sum", [y, b2.constant(None)]))
    m._kiln_define_method("score", g2)
    return m


@pytest.fixture
def pair() -> tuple[Eager, ScriptModule]:
    eager = Eager()
    return eager, build_module(eager)


def test_module_matches_eager_and_interpreter(pair: tuple[Eager, ScriptModule]) -> None:
    eager, m = pair
    x = torch.randn(2, 3)
    assert_close(m(x), eager(x))
    assert_close(m.forward(x), eager(x))
    assert_close(m.score(x), eager.score(x))
    assert_close(interpret(m.inlined_graph, [x], self_obj=m), eager(x))
    assert_close(interpret(m.graph, [x], self_obj=m), eager(x))   # CallMethod through the module
    assert not nodes_of(m.inlined_graph, "prim::CallMethod")
    assert nodes_of(m.graph, "prim::CallMethod")                   # the method's own graph is untouched
    assert not nodes_of(m.score.inlined_graph, "prim::CallMethod")


def test_module_behaves_like_nn_module(pair: tuple[Eager, ScriptModule]) -> None:
    eager, m = pair
    assert [n for n, _ in m.named_parameters()] == ["fc.weight", "fc.bias"]
    assert all(p is q for p, q in zip(m.parameters(), eager.parameters()))
    assert list(m.state_dict()) == ["offset", "fc.weight", "fc.bias"]
    assert m.original_name == "Eager" and m.fc.original_name == "Linear"
    assert "KilnScriptModule(" in repr(m) and "original_name=Linear" in repr(m)
    fresh = Eager()
    m.load_state_dict(fresh.state_dict())
    x = torch.randn(1, 3)
    assert_close(m(x), fresh(x))


def test_gradients_match_eager(pair: tuple[Eager, ScriptModule]) -> None:
    eager, m = pair
    twin = copy.deepcopy(eager)       # separate parameters for the eager run
    x = torch.randn(5, 3)
    m(x).pow(2).sum().backward()
    twin(x).pow(2).sum().backward()
    for (name, p), q in zip(m.named_parameters(), twin.parameters()):
        assert p.grad is not None, name
        assert_close(p.grad, q.grad)
    # training steps follow eager's trajectory exactly
    opts = [torch.optim.SGD(mod.parameters(), lr=0.05) for mod in (m, twin)]
    for _ in range(3):
        for mod, opt in zip((m, twin), opts):
            opt.zero_grad()
            mod(x).pow(2).sum().backward()
            opt.step()
    for p, q in zip(m.parameters(), twin.parameters()):
        assert_close(p, q)
    assert not torch.equal(m.fc.weight, eager.fc.weight) or m.fc.weight is eager.fc.weight


def test_hooks_are_honoured(pair: tuple[Eager, ScriptModule]) -> None:
    eager, m = pair
    x = torch.randn(1, 3)
    seen: list[torch.Tensor] = []
    handle = m.register_forward_hook(lambda mod, args, out: seen.append(out))
    out = m(x)
    assert len(seen) == 1 and seen[0] is out
    handle.remove()
    m(x)
    assert len(seen) == 1
    pre = m.register_forward_pre_hook(lambda mod, args: (args[0] * 0,))
    assert_close(m(x), eager(x * 0))
    pre.remove()
    expected = eager(x) + 1            # submodule calls are inlined: only m's own hook runs
    glob = torch.nn.modules.module.register_module_forward_hook(lambda mod, a, o: o + 1)
    try:
        assert_close(m(x), expected)
    finally:
        glob.remove()
    assert_close(m(x), eager(x))


def test_training_flag_read_by_graph() -> None:
    m = ScriptModule("__torch__.Flag", "Flag")
    g, b, (s, x) = new_graph(("self", ClassType("__torch__.Flag")), ("x", TENSOR))
    node = b.if_(b.get_attr(s, "training", BoolType), [TENSOR])
    with b.at_end(node.blocks[0]):
        node.blocks[0].register_output(b.value("aten::neg", [x]))
    with b.at_end(node.blocks[1]):
        node.blocks[1].register_output(x)
    g.register_output(node.output)
    m._kiln_define_method("forward", g)
    xs = torch.randn(2)
    assert_close(m(xs), -xs)
    m.eval()
    assert_close(m(xs), xs)
    m.train()
    assert_close(m(xs), -xs)


def test_member_changes_are_seen(pair: tuple[Eager, ScriptModule]) -> None:
    eager, m = pair
    x = torch.randn(2, 3)
    m(x)
    new_weight = torch.nn.Parameter(torch.randn(4, 3))
    m.fc.weight = new_weight                          # same kind: read on every call
    assert_close(m(x), torch.relu(torch.nn.functional.linear(x, new_weight, eager.fc.bias)) * 3 + eager.offset)
    other = torch.nn.Linear(3, 4)
    m.fc = linear_module(other)                       # a new submodule: recompiled
    assert_close(m(x), torch.relu(other(x)) * 3 + eager.offset)
    m.scale = 5                                       # plain attribute
    assert_close(m(x), torch.relu(other(x)) * 5 + eager.offset)
    g, b, (_, xv) = new_graph(("self", ClassType("__torch__.Eager")), ("x", TENSOR))
    g.register_output(b.value("aten::neg", [xv]))
    m._kiln_define_method("forward", g)               # redefined method; score calls it
    assert_close(m(x), -x)
    assert_close(m.score(x), (-x).sum())


def test_recursive_methods_are_rejected(pair: tuple[Eager, ScriptModule]) -> None:
    _, m = pair
    m._kiln_define_method("forward", m.score.graph.copy())   # forward -> forward -> ...
    with pytest.raises(IRError, match="recursion"):
        m(torch.randn(1, 3))


def test_to_float64_converts_constants() -> None:
    const = torch.tensor([1.5, -2.0])
    index = torch.tensor([1, 0])
    m = ScriptModule("__torch__.C", "C")
    m.register_parameter("w", torch.nn.Parameter(torch.ones(2)))
    g, b, (s, x) = new_graph(("self", ClassType("__torch__.C")), ("x", TENSOR))
    y = b.value("aten::add.Tensor", [b.value("aten::mul.Tensor", [x, b.get_attr(s, "w", TENSOR)]),
                                     b.constant(const), b.constant(1)])
    g.register_output(b.tuple([y, b.constant(index)]))
    m._kiln_define_method("forward", g)
    out, idx = m(torch.ones(2))
    assert out.dtype == torch.float32
    assert m.to(torch.float64) is m
    out, idx = m(torch.ones(2, dtype=torch.float64))
    assert out.dtype == torch.float64 and idx.dtype == torch.int64    # only floating constants cast
    assert_close(out, torch.ones(2, dtype=torch.float64) + const.double())
    consts = [n.attrs["value"] for n in nodes_of(m.graph, "prim::Constant") if isinstance(n.attrs["value"], torch.Tensor)]
    assert consts[0].dtype == torch.float64 and consts[1].dtype == torch.int64
    assert m.w.dtype == torch.float64
    m.float()
    assert m(torch.ones(2))[0].dtype == torch.float32


def test_deepcopy_is_independent(pair: tuple[Eager, ScriptModule]) -> None:
    eager, m = pair
    x = torch.randn(2, 3)
    m(x)
    twin = copy.deepcopy(m)
    assert_close(twin(x), eager(x))
    with torch.no_grad():
        twin.fc.bias.add_(1.0)
    assert_close(m(x), eager(x))
    assert twin.forward.owner is twin and twin.fc.weight is not m.fc.weight


def test_module_input_errors(pair: tuple[Eager, ScriptModule]) -> None:
    _, m = pair
    with pytest.raises(InputError, match="'x'.*expected Tensor but got int"):
        m(3)
    with pytest.raises(InputError, match=r"takes 1 input \(x\) but 2 were given"):
        m(torch.ones(1, 3), torch.ones(1, 3))
    with pytest.raises(InputError, match="but 0 were given"):
        m.forward()
    assert_close(m(x=torch.ones(1, 3)), m(torch.ones(1, 3)))


def test_sixteen_threads_compile_once(pair: tuple[Eager, ScriptModule], monkeypatch: pytest.MonkeyPatch) -> None:
    eager, m = pair
    calls: list[str] = []
    real = runtime_module.compile_graph

    def slow_compile(*args: Any, **kwargs: Any) -> CompiledFunction:
        calls.append(args[1])
        time.sleep(0.05)               # widen the window in which other threads arrive
        return real(*args, **kwargs)

    monkeypatch.setattr(runtime_module, "compile_graph", slow_compile)
    x = torch.randn(2, 3)
    barrier = threading.Barrier(16)
    results: list[Optional[torch.Tensor]] = [None] * 16

    def worker(i: int) -> None:
        barrier.wait()
        results[i] = m(x)

    threads = [threading.Thread(target=worker, args=(i,)) for i in range(16)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert calls == ["forward"]
    for r in results:
        assert_close(r, eager(x))
    fn = ScriptFunction("f", if_graph())
    barrier = threading.Barrier(16)
    outs: list[Any] = [None] * 16

    def call_fn(i: int) -> None:
        barrier.wait()
        outs[i] = fn(x, True)

    threads = [threading.Thread(target=call_fn, args=(i,)) for i in range(16)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert calls == ["forward", "f"] and all(o is not None for o in outs)


def test_script_function_views() -> None:
    fn = ScriptFunction("double_it", if_graph())
    assert fn.name == "double_it" and "double_it" in repr(fn)
    assert fn.graph is not fn.inlined_graph
    assert "def double_it(" in fn.source and "def double_it(" in fn.code


def test_module_views(pair: tuple[Eager, ScriptModule]) -> None:
    _, m = pair
    assert m.graph is m.forward.graph
    assert "def forward(self" in m.code and "def score(self" in m.score.code
    for name in ("forward", "score"):
        verify(getattr(m, name).inlined_graph)
    assert m.method_names == ["forward", "score"]
    assert "self._modules" not in m.forward.source       # pinned: dicts are closure cells


# -- passes ---------------------------------------------------------------------------------------

def test_dce_removes_unused_pure_nodes_and_constants() -> None:
    g, b, (x,) = new_graph(("x", TENSOR))
    b.value("aten::neg", [b.value("aten::tanh", [x])])          # dead chain
    b.constant(7)
    kept = b.value("aten::relu", [x])
    b.op("aten::dropout", [x, b.constant(0.5), b.constant(True)])   # nondeterministic: kept
    g.register_output(kept)
    assert run_pipeline(g, ["dce"], verify=True)
    assert [n.kind for n in g.nodes] == ["aten::relu", "prim::Constant", "prim::Constant", "aten::dropout"]
    assert not eliminate_dead_code(g)
    assert "dce" in PASSES


def test_dce_prunes_if_outputs_and_keeps_effects() -> None:
    g, b, (x, flag) = new_graph(("x", TENSOR), ("flag", BoolType))
    node = b.if_(flag, [TENSOR, TENSOR])
    with b.at_end(node.blocks[0]):
        node.blocks[0].register_output(x)
        node.blocks[0].register_output(b.value("aten::tanh", [x]))
    with b.at_end(node.blocks[1]):
        b.raise_exception("boom", "ValueError")
        node.blocks[1].register_output(b.value("aten::neg", [x]))
        node.blocks[1].register_output(x)
    pure_if = b.if_(flag, [TENSOR])                              # unused and effect-free: removed
    for blk in pure_if.blocks:
        with b.at_end(blk):
            blk.register_output(b.value("aten::sigmoid", [x]))
    g.register_output(node.outputs[0])
    xs = torch.randn(3)
    assert eliminate_dead_code(g)
    assert len(nodes_of(g, "prim::If")) == 1 and len(node.outputs) == 1
    assert not nodes_of(g, "aten::tanh") and not nodes_of(g, "aten::sigmoid")
    assert nodes_of(g, "prim::RaiseException")
    check_all(g, [xs, True], xs)
    with pytest.raises(KilnRuntimeError, match="boom"):
        compile_graph(g, "fn", self_arg=False)(xs, False)


def test_dce_removes_dead_loop_carried_values() -> None:
    g, b, (x, n) = new_graph(("x", TENSOR), ("n", IntType))
    node, body = add_loop(b, n, b.constant(True), [x, b.constant(0)])
    with b.at_end(body):
        _, acc, count = body.inputs
        body.register_output(b.constant(True))
        body.register_output(b.value("aten::mul.Scalar", [acc, b.constant(2.0)]))
        body.register_output(b.value("aten::add.int", [count, b.constant(1)]))   # feeds only itself
    g.register_output(node.outputs[0])
    xs = torch.randn(2)
    assert eliminate_dead_code(g)
    assert len(node.outputs) == 1 and len(node.inputs) == 3 and len(body.inputs) == 2
    assert not nodes_of(g, "aten::add")
    check_all(g, [xs, 3], xs * 8)
    g2, b2, (x2, n2) = new_graph(("x", TENSOR), ("n", IntType))
    loop2, body2 = add_loop(b2, n2, b2.constant(True), [x2])
    with b2.at_end(body2):
        body2.register_output(b2.constant(True))
        body2.register_output(b2.value("aten::neg", [body2.inputs[1]]))
    g2.register_output(x2)
    assert eliminate_dead_code(g2) and not list(g2.nodes)    # a loop computing nothing used
    g3, b3, (x3, n3) = new_graph(("x", TENSOR), ("n", IntType))
    loop3, body3 = add_loop(b3, n3, b3.constant(True), [x3])
    with b3.at_end(body3):
        body3.register_output(b3.constant(True))
        body3.register_output(b3.op("aten::dropout", [body3.inputs[1], b3.constant(0.5), b3.constant(True)]).output)
    g3.register_output(x3)
    eliminate_dead_code(g3)
    assert nodes_of(g3, "prim::Loop") and nodes_of(g3, "aten::dropout")   # an effect inside: kept
    verify(g3)


def nested_modules() -> tuple[ScriptModule, torch.nn.Module]:
    """outer.inner.fc: three levels of CallMethod, and the eager equivalent."""
    lin = torch.nn.Linear(2, 2)
    inner = ScriptModule("__torch__.Inner", "Inner")
    inner.add_module("fc", linear_module(lin))
    g, b, (s, x) = new_graph(("self", ClassType("__torch__.Inner")), ("x", TENSOR))
    fc = b.get_attr(s, "fc", ClassType("__torch__.Linear"))
    g.register_output(b.value("aten::tanh", [b.call_method(fc, "forward", [x], TENSOR)]))
    inner._kiln_define_method("forward", g)
    outer = ScriptModule("__torch__.Outer", "Outer")
    outer.add_module("inner", inner)
    g, b, (s, x) = new_graph(("self", ClassType("__torch__.Outer")), ("x", TENSOR))
    sub = b.get_attr(s, "inner", ClassType("__torch__.Inner"))
    once = b.call_method(sub, "forward", [x], TENSOR)
    g.register_output(b.call_method(sub, "forward", [once], TENSOR))
    outer._kiln_define_method("forward", g)
    eager = torch.nn.Sequential(lin, torch.nn.Tanh(), lin, torch.nn.Tanh())
    return outer, eager


def test_inline_nested_calls() -> None:
    outer, eager = nested_modules()
    inlined = outer.inlined_graph
    assert not nodes_of(inlined, "prim::CallMethod")
    assert len(nodes_of(inlined, "aten::linear")) == 2
    x = torch.randn(3, 2)
    assert_close(interpret(inlined, [x], self_obj=outer), eager(x))
    assert_close(outer(x), eager(x))
    assert not inline_calls(outer.graph.copy(), lambda node: None)
    verify(inlined)


def test_inline_leaves_calls_on_plain_modules() -> None:
    outer = ScriptModule("__torch__.Outer", "Outer")
    outer.add_module("act", torch.nn.Softplus())
    g, b, (s, x) = new_graph(("self", ClassType("__torch__.Outer")), ("x", TENSOR))
    act = b.get_attr(s, "act", ClassType("__torch__.Softplus"))
    g.register_output(b.call_method(act, "forward", [x], TENSOR))
    outer._kiln_define_method("forward", g)
    assert nodes_of(outer.inlined_graph, "prim::CallMethod")
    x = torch.randn(4)
    assert_close(outer(x), torch.nn.functional.softplus(x))


def test_generated_source_is_safe_from_hostile_names() -> None:
    hostile = "x; import os; os._exit(3)"
    g, b, (x,) = new_graph(("x); import os; (", TENSOR))
    holder = b.constant("it's \"quoted\"\n")
    got = b.get_attr(x, hostile, TENSOR)
    g.register_output(b.tuple([holder, got]))
    cf = compile_graph(g, hostile, self_arg=False)
    assert "import os" not in cf.source.replace(repr(hostile), "")
    with pytest.raises(AttributeError):
        cf(torch.ones(1))
    call = b.graph.create("prim::CallMethod", [x], [TENSOR], {"name": hostile})
    call.op = b.op("prim::CallMethod", [x], [TENSOR], name="m").op
    b.insert(call)
    g.register_output(call.output)
    with pytest.raises(AttributeError):
        compile_graph(g, "fn", self_arg=False)(torch.ones(1))


def test_changes_deep_in_the_tree_recompile_only_dependents() -> None:
    outer, eager = nested_modules()
    bystander, _ = nested_modules()
    x = torch.randn(3, 2)
    assert_close(outer(x), eager(x))
    bystander(x)
    other = torch.nn.Linear(2, 2)
    outer.inner.fc = linear_module(other)             # two levels down
    assert not outer._kiln_compiled and bystander._kiln_compiled
    assert_close(outer(x), torch.tanh(other(torch.tanh(other(x)))))


@pytest.mark.gpu
def test_cuda_moves_constants() -> None:
    m = ScriptModule("__torch__.C", "C")
    g, b, (_, x) = new_graph(("self", ClassType("__torch__.C")), ("x", TENSOR))
    g.register_output(b.value("aten::add.Tensor", [x, b.constant(torch.ones(2)), b.constant(1)]))
    m._kiln_define_method("forward", g)
    m.cuda()
    assert m(torch.zeros(2, device="cuda")).device.type == "cuda"
    m.cpu()
    assert_close(m(torch.zeros(2)), torch.ones(2))
