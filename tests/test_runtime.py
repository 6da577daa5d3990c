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
from kiln.ir.types import (BoolType, ClassType, IntType, ListType, OptionalType, StrType, TENSOR,
                           TensorType, TupleType, Type)
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
    """Generated code and the interpreter both give ``expected`` (computed eagerly)."""
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
    d = b.value("aten::to.dtype", [t, b.constant(torch.float64), b.constant(False), b.constant(False),
                                   b.constant(None)])
    total = b.value("aten::sum.dim_IntList", [d, b.constant([1]), b.constant(False), b.constant(None)])
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
    assert cf.node_at(info.value.__traceback__.tb_next.tb_next.tb_lineno) is not None  # type: ignore[union-attr]


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
