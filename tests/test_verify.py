"""The IR verifier: valid graphs pass, and each kind of corruption is caught with a message
that names the node and shows the IR around it."""

from __future__ import annotations

import re
from collections.abc import Callable

import pytest
import torch
from hypothesis import given
from hypothesis import strategies as st

from kiln.errors import IRError
from kiln.ir.builder import Builder
from kiln.ir.graph import Graph, Node, SourceRange, Use, Value
from kiln.ir.ops import registry
from kiln.ir.types import (
    TENSOR,
    AnyType,
    BoolType,
    ClassType,
    DeviceType,
    DtypeType,
    FloatType,
    IntType,
    ListType,
    NoneType,
    OptionalType,
    StrType,
    TensorType,
    TupleType,
)
from kiln.ir.verify import accepts, compact_listing, verify

# -- builders -----------------------------------------------------------------------------------


def straight_line() -> tuple[Graph, dict[str, Value]]:
    """graph(x, y): z = relu(x + y); return (z * x, y)"""
    g = Graph()
    x, y = g.add_input(TENSOR, "x"), g.add_input(TENSOR, "y")
    b = Builder(g)
    b.source = SourceRange("model.py", 3, 4)
    s = b.value("aten::add.Tensor", [x, y, b.constant(1)])
    z = b.value("aten::relu", [s])
    m = b.value("aten::mul.Tensor", [z, x])
    g.register_output(b.tuple([m, y]))
    return g, {"x": x, "y": y, "s": s, "z": z, "m": m}


def add_loop(b: Builder, trip: Value, cond: Value, carried: list[Value]) -> Node:
    """A ``prim::Loop`` with an empty body (iter param plus one param per carried value)."""
    node = b.graph.create("prim::Loop", [trip, cond, *carried], [v.type for v in carried])
    body = node.add_block()
    body.add_input(IntType, "i")
    for v in carried:
        body.add_input(v.type, v.name)
    return b.insert(node)


def nested() -> tuple[Graph, dict[str, Value | Node]]:
    """graph(x, n): acc = x; for i in range(n): if i < 2: acc = acc + 1 else: acc = relu(acc)"""
    g = Graph()
    x, n = g.add_input(TENSOR, "x"), g.add_input(IntType, "n")
    b = Builder(g)
    true = b.constant(True)
    loop = add_loop(b, n, true, [x])
    body = loop.blocks[0]
    i, acc = body.inputs
    with b.at_end(body):
        lt = b.value("aten::lt.int", [i, b.constant(2)])
        branch = b.if_(lt, [TENSOR])
        with b.at_end(branch.blocks[0]):
            inc = b.value("aten::add.Scalar", [acc, b.constant(1), b.constant(1)])
            branch.blocks[0].register_output(inc)
        with b.at_end(branch.blocks[1]):
            branch.blocks[1].register_output(b.value("aten::relu", [acc]))
        body.register_output(true)
        body.register_output(branch.output)
    g.register_output(loop.output)
    return g, {"loop": loop, "if": branch, "inc": inc, "acc": acc, "i": i, "lt": lt, "x": x}


def module_like() -> Graph:
    g = Graph()
    self_ = g.add_input(ClassType("__torch__.Cell"), "self")
    x = g.add_input(TENSOR, "x")
    b = Builder(g)
    lin = b.get_attr(self_, "linear", ClassType("__torch__.torch.nn.Linear"))
    y = b.call_method(lin, "forward", [x], TENSOR)
    count = b.get_attr(self_, "count", IntType)
    b.set_attr(self_, "count", b.value("aten::add.int", [count, b.constant(1)]))
    g.register_output(y)
    return g


def fails(g: Graph, *patterns: str) -> str:
    """Verify ``g`` expecting an IRError whose message matches every pattern."""
    with pytest.raises(IRError) as info:
        verify(g)
    msg = str(info.value)
    for p in patterns:
        assert re.search(p, msg), f"{p!r} not in:\n{msg}"
    return msg


# -- valid graphs -----------------------------------------------------------------------------


@pytest.mark.parametrize("make", [lambda: straight_line()[0], lambda: nested()[0], module_like])
def test_valid_graphs_verify(make: Callable[[], Graph]) -> None:
    g = make()
    verify(g)
    verify(g.copy())


def test_empty_graph_verifies() -> None:
    verify(Graph())


def test_implicit_conversions_are_accepted() -> None:
    g = Graph()
    b = Builder(g)
    x = g.add_input(TensorType(dtype=None, shape=(2, 3)), "x")
    n = g.add_input(IntType, "n")
    b.value("aten::add.float", [n, b.constant(2.0)])                   # int where float
    b.value("aten::add.Scalar", [x, n, b.constant(1)])                 # int where Scalar
    b.value("aten::to.dtype", [x, b.constant(6), b.constant(False), b.constant(False),
                               b.constant(None)])                     # int dtype, None for Optional
    b.value("aten::cat", [b.list([x, x]), b.constant(0)])              # List[Float(2, 3)] for Tensor[]
    b.value("aten::sum.dim_IntList", [x, b.constant(1), b.constant(False)])  # int for int[1]?
    verify(g)
    assert accepts(OptionalType(TENSOR), NoneType)
    assert accepts(ListType(TENSOR), ListType(TensorType(shape=(2,))))
    assert not accepts(ListType(FloatType), ListType(IntType))
    assert not accepts(IntType, FloatType)


# -- corruptions --------------------------------------------------------------------------------


def test_use_before_def() -> None:
    g, v = straight_line()
    v["z"].node.move_before(v["s"].node)
    msg = fails(g, r"aten::relu", r"model\.py:3:4", r"before its definition", r"# <-- here")
    assert "graph(" in msg


def test_value_used_outside_its_block() -> None:
    g, v = nested()
    loop = v["loop"]
    assert isinstance(loop, Node) and isinstance(v["inc"], Value)
    loop.outputs[0].uses[0].user.replace_input(0, v["inc"])   # return a value from inside the If
    fails(g, r"prim::Return", r"defined inside a block of prim::If and used outside")


def test_value_of_node_used_in_its_own_block() -> None:
    g, v = nested()
    branch = v["if"]
    assert isinstance(branch, Node)
    then = branch.blocks[0]
    then.return_node.replace_input(0, branch.output)
    fails(g, r"output of the enclosing prim::If")


def test_block_param_used_outside_its_block() -> None:
    g, v = nested()
    assert isinstance(v["i"], Value)
    b = Builder(g)
    b.value("aten::neg.int", [v["i"]])
    fails(g, r"aten::neg", r"param of a block of prim::Loop")


def test_value_from_another_graph() -> None:
    g, _ = straight_line()
    other = Graph()
    foreign = other.add_input(TENSOR, "foreign")
    Builder(g).value("aten::relu", [foreign])
    fails(g, r"another graph")


def test_use_list_missing_entry() -> None:
    g, v = straight_line()
    v["s"].uses.clear()
    fails(g, r"aten::relu", r"use list has no entry")


def test_use_list_duplicate_entry() -> None:
    g, v = straight_line()
    v["s"].uses.append(v["s"].uses[0])
    fails(g, r"twice")


def test_use_list_stale_entry() -> None:
    g, v = straight_line()
    relu = v["z"].node
    v["x"].uses.append(Use(relu, 0))          # relu's input 0 is s, not x
    fails(g, r"holds something else")


def test_use_list_names_a_node_outside_the_graph() -> None:
    g, v = straight_line()
    g.create("aten::relu", [v["z"]], [TENSOR])   # created, never inserted
    fails(g, r"not in the graph")


def test_broken_prev_link() -> None:
    g, v = straight_line()
    v["m"].node.prev = v["s"].node
    fails(g, r"aten::mul", r"prev/owner")


def test_cycle_in_node_list_terminates() -> None:
    g, v = straight_line()
    mul = v["m"].node
    mul.next = v["s"].node                    # mul -> add -> relu -> mul -> ...
    fails(g, r"appears twice|prev/owner")


def test_broken_value_offset() -> None:
    g, v = straight_line()
    v["s"].offset = 3
    fails(g, r"aten::add", r"value\.node/offset")


def test_if_with_mismatched_block_outputs() -> None:
    g, v = nested()
    branch = v["if"]
    assert isinstance(branch, Node)
    branch.blocks[1].register_output(branch.blocks[1].outputs[0])
    fails(g, r"prim::If", r"block1 of prim::If returns 2 values but the node has 1 outputs")


def test_if_with_branch_types_that_do_not_unify() -> None:
    g, v = nested()
    branch, i = v["if"], v["i"]
    assert isinstance(branch, Node) and isinstance(i, Value)
    branch.blocks[1].return_node.replace_input(0, i)   # int in one branch, Tensor in the other
    fails(g, r"the branches return Tensor and int, which do not unify")


def test_if_with_non_bool_condition() -> None:
    g = Graph()
    n = g.add_input(IntType, "n")
    node = g.create("prim::If", [n], [])
    node.add_block()
    node.add_block()
    g.block.append(node)
    fails(g, r"prim::If takes exactly one bool condition, got \(int\)")


def test_if_with_one_block() -> None:
    g = Graph()
    c = g.add_input(BoolType, "c")
    node = g.create("prim::If", [c], [])
    node.add_block()
    g.block.append(node)
    fails(g, r"two blocks")


def test_loop_with_non_bool_condition() -> None:
    g = Graph()
    n = g.add_input(IntType, "n")
    b = Builder(g)
    loop = add_loop(b, n, n, [])
    loop.blocks[0].register_output(b.constant(True))
    fails(g, r"prim::Loop's start_condition input must be bool, got %n of type int")


def test_loop_body_returning_non_bool() -> None:
    g, v = nested()
    loop, i = v["loop"], v["i"]
    assert isinstance(loop, Node) and isinstance(i, Value)
    loop.blocks[0].return_node.replace_input(0, i)
    fails(g, r"continue_condition block output must be bool")


def test_loop_with_wrong_param_count() -> None:
    g, v = nested()
    loop = v["loop"]
    assert isinstance(loop, Node)
    loop.blocks[0].add_input(TENSOR, "extra")
    fails(g, r"needs 2 block params")


def test_loop_carried_type_mismatch() -> None:
    g = Graph()
    n = g.add_input(IntType, "n")
    b = Builder(g)
    loop = add_loop(b, n, b.constant(True), [n])
    body = loop.blocks[0]
    body.register_output(b.constant(True))
    with b.at_end(body):
        body.register_output(b.value("aten::div.int", [body.inputs[1], b.constant(2)]))  # float
    fails(g, r"carried value 0", r"float")


def test_wrong_input_type_for_relu() -> None:
    g = Graph()
    n = g.add_input(IntType, "n")
    b = Builder(g)
    b.source = SourceRange("net.py", 12, 8)
    b.value("aten::relu", [n])
    fails(g, r"aten::relu at net\.py:12:8", r"input 0 \('self'\) of aten::relu expects Tensor, got %n of type int",
          r"schema: aten::relu")


def test_wrong_input_count() -> None:
    g, v = straight_line()
    v["z"].node.add_input(v["x"])
    fails(g, r"aten::relu takes 1 inputs, got 2")


def test_output_type_outside_schema() -> None:
    g = Graph()
    x = g.add_input(TENSOR, "x")
    Builder(g).value("aten::relu", [x], IntType)
    fails(g, r"output 0 of aten::relu is typed int")


def test_constant_without_value() -> None:
    g, v = straight_line()
    const = v["s"].node.inputs[2].node
    del const.attrs["value"]
    fails(g, r"prim::Constant has no 'value' attribute")


def test_constant_with_input() -> None:
    g, v = straight_line()
    v["s"].node.inputs[2].node.add_input(v["x"])
    fails(g, r"prim::Constant must have no inputs")


def test_constant_value_of_wrong_type() -> None:
    g = Graph()
    Builder(g).constant("text", IntType)
    fails(g, r"constant value 'text' does not fit its declared type int")


def test_constants_fit_loosely_typed_declarations() -> None:
    g = Graph()
    b = Builder(g)
    b.constant([1, 2], OptionalType(ListType(IntType)))
    b.constant(None, OptionalType(TENSOR))
    b.constant("cpu", DeviceType)                     # TorchScript's spelling of a device
    b.constant(torch.float32, IntType)                # dtypes are ints in TorchScript graphs
    b.constant(6, DtypeType)
    b.constant(torch.ones(2, 3), TensorType(shape=(2, 3)))
    b.constant(object(), AnyType)
    verify(g)
    b.constant(torch.ones(2), TensorType(shape=(2, 3)))
    fails(g, r"does not fit its declared type Tensor\(2, 3\)")


def test_get_attr_without_name() -> None:
    g = module_like()
    getattr_node = next(n for n in g.nodes if n.kind == "prim::GetAttr")
    del getattr_node.attrs["name"]
    fails(g, r"prim::GetAttr needs a non-empty 'name'")


def test_node_without_operator_entry() -> None:
    g, v = straight_line()
    v["z"].node.op = None
    fails(g, r"aten::relu is not a structural kind and has no operator entry")


def test_kind_disagreeing_with_operator() -> None:
    g, v = straight_line()
    v["z"].node.op = registry.get("aten::tanh")
    fails(g, r"node kind aten::relu does not match its operator aten::tanh")


def test_param_node_inside_a_block() -> None:
    g, _ = straight_line()
    g.block.append(g.create("prim::Param"))
    fails(g, r"prim::Param may appear only as a block's sentinel")


def test_message_names_nested_position_and_marks_the_node() -> None:
    g, v = nested()
    inc = v["inc"]
    assert isinstance(inc, Value)
    inc.node.inputs[1].node.attrs["value"] = "one"    # the constant 1 fed to aten::add
    msg = fails(g, r"aten::add \(node 2 of block0 of prim::If, in node 2 of block0 of prim::Loop, "
                   r"in node 1 of the graph\)|does not fit")
    assert msg.count("# <-- here") <= 1


def test_compact_listing_marks_and_survives_a_cycle() -> None:
    g, v = straight_line()
    text = compact_listing(g, v["z"].node)
    assert re.search(r"aten::relu\(.*\).*# <-- here", text)
    v["m"].node.next = v["s"].node
    assert "aten::add" in compact_listing(g)   # terminates


def test_long_graph_listing_is_windowed() -> None:
    g = Graph()
    b = Builder(g)
    x = g.add_input(TENSOR, "x")
    for _ in range(200):
        x = b.value("aten::relu", [x])
    bad = b.value("aten::relu", [g.add_input(StrType, "s")])
    g.register_output(bad)
    msg = fails(g, r"# <-- here", r"lines above")
    assert len(msg.splitlines()) < 80


def test_tuple_outputs_of_schema_nodes_are_checked() -> None:
    g = Graph()
    x = g.add_input(TENSOR, "x")
    b = Builder(g)
    b.op("aten::max.dim", [x, b.constant(1), b.constant(False)], [TENSOR])   # 1 of 2 outputs
    fails(g, r"aten::max\.dim returns 2 values but the node has 1 outputs")
    g2 = Graph()
    t = g2.add_input(TupleType((TENSOR, IntType)), "t")
    Builder(g2).unpack(t, [TENSOR, IntType])
    verify(g2)


# -- properties -----------------------------------------------------------------------------------

_UNARY = ["aten::relu", "aten::tanh", "aten::neg", "aten::sigmoid"]


@given(st.lists(st.tuples(st.integers(0, 3), st.integers(0, 1000), st.integers(0, 1000)),
                min_size=1, max_size=25),
       st.integers(0, 1000))
def test_random_dags_verify_and_reordering_breaks_them(ops: list[tuple[int, int, int]], pick: int) -> None:
    """Any graph the builder makes from valid ops verifies; moving a node before the producer
    of one of its inputs makes it fail."""
    g = Graph()
    b = Builder(g)
    values = [g.add_input(TENSOR, "a"), g.add_input(TENSOR, "b")]
    for kind, i, j in ops:
        lhs, rhs = values[i % len(values)], values[j % len(values)]
        if kind == 3:
            values.append(b.value("aten::mul.Tensor", [lhs, rhs]))
        else:
            values.append(b.value(_UNARY[kind], [lhs]))
    g.register_output(values[-1])
    verify(g)
    movable = [n for n in g.nodes if any(v.node.kind != "prim::Param" for v in n.inputs)]
    if not movable:
        return
    node = movable[pick % len(movable)]
    producer = next(v.node for v in node.inputs if v.node.kind != "prim::Param")
    node.move_before(producer)
    fails(g, r"before its definition")
