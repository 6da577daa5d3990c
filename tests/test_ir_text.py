"""The IR text form: printer and parser round-trip exactly, errors name the line and column."""

from __future__ import annotations

import math
from pathlib import Path
from typing import Any

import pytest
import torch
from hypothesis import given
from hypothesis import strategies as st

from kiln.errors import IRParseError
from kiln.ir.builder import Builder
from kiln.ir.graph import Graph, Node, SourceRange, Value
from kiln.ir.ops import registry
from kiln.ir.parser import parse_graph, resolve_overload
from kiln.ir.printer import Opaque, print_graph, value_names
from kiln.ir.types import (
    TENSOR,
    AnyType,
    BoolType,
    DeviceType,
    DictType,
    EnumType,
    FloatType,
    FutureType,
    IntType,
    ListType,
    NamedTupleType,
    NoneType,
    NumberType,
    OptionalType,
    StrType,
    TensorType,
    TupleType,
    Type,
    UnionType,
    parse_type,
    type_of_value,
)


def round_trip(g: Graph) -> tuple[str, Graph]:
    """Print, parse and print again; the two texts must be identical."""
    text = print_graph(g)
    parsed = parse_graph(text)
    assert print_graph(parsed) == text
    return text, parsed


def same_value(a: Any, b: Any) -> bool:
    """Equality that also tells nan from nan, -0.0 from 0.0 and compares tensors fully."""
    if isinstance(a, torch.Tensor):
        return (isinstance(b, torch.Tensor) and a.dtype == b.dtype and a.shape == b.shape
                and a.device == b.device and bool(torch.allclose(a, b, rtol=0, atol=0, equal_nan=True)))
    if isinstance(a, float):
        return isinstance(b, float) and (math.isnan(a) and math.isnan(b) or
                                         (a == b and math.copysign(1, a) == math.copysign(1, b)))
    if isinstance(a, (list, tuple)):
        return type(a) is type(b) and len(a) == len(b) and all(map(same_value, a, b))
    return type(a) is type(b) and bool(a == b)


def constant_graph(value: Any, type: Type | None = None) -> Graph:
    g = Graph()
    g.register_output(Builder(g).constant(value, type))
    return g


# -- constants ----------------------------------------------------------------------------------

CONSTANTS: list[Any] = [
    0, 1, -7, 2**70, 1.5, 0.1, -0.0, 1e300, 5e-324, float("inf"), float("-inf"), True, False,
    "", "plain", 'q"uote', "back\\slash", "new\nline\ttab\r", "\x00\x7f\u2028\U0001f600", "é中",
    None, torch.device("cpu"), torch.device("cuda:1"), torch.float32, torch.bfloat16, torch.int8,
    torch.strided, torch.channels_last, complex(1.5, -2.0),
    [1, 2, 3], [], [1.5, float("inf")], [True, False], ["a", "b"], [[1], [2, 3]],
    (1, 2.0), (True,), (), (1, "a", None, (False, 2.5)), [torch.float16, torch.int64],
    torch.tensor(3), torch.tensor(2.5), torch.tensor(0.1, dtype=torch.float32),
    torch.tensor(True), torch.tensor(-4, dtype=torch.int8), torch.tensor(1.5, dtype=torch.float16),
    torch.tensor(1 + 2j), torch.tensor(float("nan")),
]


@pytest.mark.parametrize("value", CONSTANTS, ids=repr)
def test_constants_round_trip_with_their_value(value: Any) -> None:
    text, parsed = round_trip(constant_graph(value))
    node = next(parsed.nodes)
    assert node.kind == "prim::Constant" and node.op is None
    assert same_value(value, node.attrs["value"]), text


def test_nan_round_trips() -> None:
    _, parsed = round_trip(constant_graph(float("nan")))
    assert math.isnan(next(parsed.nodes).attrs["value"])


def test_constant_spellings_follow_torchscript() -> None:
    text = print_graph(constant_graph(True))
    assert "%1 : bool = prim::Constant[value=1]()" in text
    assert "%1 : NoneType = prim::Constant()\n" in print_graph(constant_graph(None))
    assert 'prim::Constant[value="cpu"]()' in print_graph(constant_graph(torch.device("cpu")))
    assert "Long(strides=[], requires_grad=0, device=cpu) = prim::Constant[value={3}]()" in \
        print_graph(constant_graph(torch.tensor(3)))
    assert 'value="a\\"b\\\\c\\nd"' in print_graph(constant_graph('a"b\\c\nd'))
    assert "value=[1, 0]" in print_graph(constant_graph([True, False]))
    assert "value=(1, True)" in print_graph(constant_graph((1, True), AnyType))


def test_many_element_tensor_prints_as_placeholder() -> None:
    text, parsed = round_trip(constant_graph(torch.ones(2, 3)))
    assert "prim::Constant[value=<Tensor>]()" in text
    assert next(parsed.nodes).attrs["value"] == Opaque("Tensor")
    assert "value=<object>" in print_graph(constant_graph(object(), AnyType))


def test_one_element_tensor_keeps_declared_shape() -> None:
    t = torch.tensor([[2.5]], dtype=torch.float64)
    text, parsed = round_trip(constant_graph(t))
    assert "value={2.5}" in text
    assert same_value(t, next(parsed.nodes).attrs["value"])
    # without a declared shape only a 0-dim tensor can be spelled
    assert "value=<Tensor>" in print_graph(constant_graph(t, TENSOR))


def test_literal_coerced_by_declared_type() -> None:
    g = Graph()
    b = Builder(g)
    outs = [b.constant(1, BoolType), b.constant("cpu", DeviceType), b.constant([1, 0], ListType(BoolType)),
            b.constant((0, "cuda"), TupleType((BoolType, DeviceType))), b.constant(3, OptionalType(IntType)),
            b.constant(1, IntType)]
    for v in outs:
        g.register_output(v)
    _, parsed = round_trip(g)
    values = [n.attrs["value"] for n in parsed.nodes]
    assert values == [True, torch.device("cpu"), [True, False], (False, torch.device("cuda")), 3, 1]
    assert type(values[-1]) is int


# -- structure ----------------------------------------------------------------------------------

def control_flow_graph() -> Graph:
    g = Graph()
    b = Builder(g)
    x = g.add_input(TensorType.of(torch.zeros(3, 4)), "x")
    n = g.add_input(IntType, "n")
    one = b.constant(1)
    true = b.constant(True)
    cond = b.value("aten::gt.int", [n, one])
    if_node = b.if_(cond, [TENSOR, IntType])
    with b.at_end(if_node.blocks[0]):
        inner = b.if_(b.value("aten::eq.int", [n, one]), [TENSOR])
        with b.at_end(inner.blocks[0]):
            inner.blocks[0].register_output(b.value("aten::relu", [x]))
        with b.at_end(inner.blocks[1]):
            inner.blocks[1].register_output(b.value("aten::tanh", [x]))
        if_node.blocks[0].register_output(inner.output)
        if_node.blocks[0].register_output(b.value("aten::add.int", [n, one]))
    with b.at_end(if_node.blocks[1]):
        b.raise_exception("n too small", "ValueError")
        if_node.blocks[1].register_output(x)
        if_node.blocks[1].register_output(one)
    loop = b.insert(g.create("prim::Loop", [n, true, if_node.outputs[0]], [TENSOR]))
    body = loop.add_block()
    i = body.add_input(IntType, "i")
    carried = body.add_input(TENSOR, "y")
    with b.at_end(body):
        y = b.value("aten::add.Scalar", [carried, i, one], TENSOR)
        y.name = "y"
        body.register_output(b.value("aten::lt.int", [i, if_node.outputs[1]]))
        body.register_output(y)
    pair = b.tuple([loop.output, x])
    unpack = b.op("prim::TupleUnpack", [pair], [TENSOR, TensorType.of(torch.zeros(3, 4))])
    items = b.list(unpack.outputs)
    g.register_output(b.value("aten::cat", [items, one]))
    g.register_output(pair)
    return g


def test_nested_control_flow_round_trips() -> None:
    g = control_flow_graph()
    text, parsed = round_trip(g)
    assert print_graph(g) == text  # printing is deterministic
    assert str(g) == text
    kinds = [n.kind for n in parsed.all_nodes()]
    assert kinds == [n.kind for n in g.all_nodes()]
    loop = next(n for n in parsed.nodes if n.kind == "prim::Loop")
    assert [v.name for v in loop.blocks[0].inputs] == ["i", "y"]
    assert len(loop.blocks[0].outputs) == 2 and len(loop.outputs) == 1
    assert "    block1():\n" in text and "      -> (%i, %x)" not in text
    for a, b in zip(g.all_nodes(), parsed.all_nodes()):
        assert (a.op is None) == (b.op is None)
        if a.op is not None:
            assert a.op.schema.qualified == b.op.schema.qualified


def test_multiple_and_zero_outputs() -> None:
    text, _ = round_trip(control_flow_graph())
    assert ": Tensor, %" in text and "= prim::TupleUnpack(" in text
    assert "\n       = prim::RaiseException(%" in text


def test_golden_text() -> None:
    g = Graph()
    b = Builder(g)
    x = g.add_input(TENSOR, "x")
    b.source = SourceRange("/path/file.py", 12, 4)
    b.scope = "__module.linear"
    two = b.constant(2.0)
    y = b.value("aten::mul.Scalar", [x, two])
    b.source = b.scope = None
    g.register_output(b.tuple([y, x]))
    assert print_graph(g) == (
        "graph(%x : Tensor):\n"
        "  %1 : float = prim::Constant[value=2.0](), scope: __module.linear # /path/file.py:12:4\n"
        "  %2 : Tensor = aten::mul(%x, %1), scope: __module.linear # /path/file.py:12:4\n"
        "  %3 : (Tensor, Tensor) = prim::TupleConstruct(%2, %x)\n"
        "  return (%3)\n")
    assert print_graph(Graph()) == "graph():\n  return ()\n"
    round_trip(Graph())


def test_sources_and_scopes_survive() -> None:
    g = Graph()
    b = Builder(g)
    x = g.add_input(TENSOR, "x")
    b.source = SourceRange("C:\\dir with space\\a:b.py", 3, 0)
    v = b.value("aten::relu", [x])
    b.scope = "__module.a.0"
    b.source = SourceRange("f.py", 7, 9)
    w = b.value("aten::tanh", [v])
    b.source = None
    g.register_output(b.value("aten::neg", [w]))
    _, parsed = round_trip(g)
    nodes = list(parsed.nodes)
    assert nodes[0].source == SourceRange("C:\\dir with space\\a:b.py", 3, 0) and nodes[0].scope is None
    assert nodes[1].source == SourceRange("f.py", 7, 9) and nodes[1].scope == "__module.a.0"
    assert nodes[2].source is None and nodes[2].scope == "__module.a.0"


def test_unprintable_scope_and_file_still_round_trip() -> None:
    g = Graph()
    b = Builder(g)
    b.scope = "bad#scope\n"
    b.source = SourceRange("we # ird\nfile", 1, 2)
    g.register_output(b.constant(1))
    text, parsed = round_trip(g)
    assert text.count("\n") == 3
    assert next(parsed.nodes).scope == "bad?scope?"


def test_names_are_unique_deterministic_and_kept() -> None:
    g = Graph()
    b = Builder(g)
    hints = ["x", "x", "x.1", "3", None, "a b", "", "x", "self.1", "self.1", "ünï"]
    inputs = [g.add_input(IntType, h) for h in hints]
    for v in inputs:
        g.register_output(b.value("aten::neg.int", [v]))
    names = value_names(g)
    assert [names[v] for v in inputs] == [
        "x", "x.2", "x.1", "3", "1", "a_b", "2", "x.3", "self.1", "self.2", "_n_"]
    assert len(set(names.values())) == len(names)
    text, parsed = round_trip(g)
    assert [v.name for v in parsed.inputs] == [names[v] for v in inputs]
    assert print_graph(g) == text


def test_value_used_but_not_defined_still_prints() -> None:
    other = Graph()
    stray = other.add_input(IntType, "stray")
    g = Graph()
    g.register_output(Builder(g).value("aten::neg.int", [stray]))
    text = print_graph(g)
    assert "aten::neg(%stray" not in text  # the stray value was not named by this graph
    with pytest.raises(IRParseError, match="line 2, col 24: value %2 is used before it is defined"):
        parse_graph(text)


# -- overload resolution ------------------------------------------------------------------------

def test_add_resolves_by_input_types() -> None:
    text = """graph(%a : Float(2, strides=[1], requires_grad=0, device=cpu),
      %b : Tensor,
      %i : int,
      %f : float):
  %one : int = prim::Constant[value=1]()
  %t : Tensor = aten::add(%a, %b, %one)
  %s : Tensor = aten::add(%a, %i, %one)
  %n : int = aten::add(%i, %i)
  %g : float = aten::add(%f, %f)
  %l : int[] = prim::ListConstruct(%i, %n)
  %p : int, %q : int = prim::ListUnpack(%l)
  %k : int = aten::len(%l)
  return (%t, %s, %n, %g, %p, %q, %k)
"""
    g = parse_graph(text)
    assert print_graph(g) == text
    ops = [n.op.schema.qualified for n in g.nodes if n.op is not None]
    assert ops == ["aten::add.Tensor", "aten::add.Scalar", "aten::add.int", "aten::add.float",
                   "prim::ListConstruct", "prim::ListUnpack", "aten::len.t"]


def test_resolve_overload_directly() -> None:
    assert resolve_overload("aten::add", [TENSOR, TENSOR, IntType], 1) is registry.get("aten::add.Tensor")
    assert resolve_overload("aten::add", [IntType, IntType], 1) is registry.get("aten::add.int")
    # TorchScript passes dtypes as int
    to = resolve_overload("aten::to", [TENSOR, IntType, BoolType, BoolType, NoneType], 1)
    assert to.schema.qualified == "aten::to.dtype"
    # a list argument takes a list (the verifier applies the same rule: kiln.ir.types.accepts)
    pool = resolve_overload("aten::max_pool2d", [TENSOR, ListType(IntType)], 1)
    assert pool is registry.get("aten::max_pool2d")
    with pytest.raises(IRParseError, match="no overload of aten::max_pool2d"):
        resolve_overload("aten::max_pool2d", [TENSOR, TupleType((IntType, IntType))], 1)
    with pytest.raises(IRParseError, match="unknown operator"):
        resolve_overload("nosuch::op", [], 1)
    with pytest.raises(IRParseError, match="no overload of aten::add accepts"):
        resolve_overload("aten::add", [StrType, IntType], 1)


# -- errors -------------------------------------------------------------------------------------

GOOD = """graph(%x : Tensor):
  %y : Tensor = aten::relu(%x)
  return (%y)
"""

ERRORS = [
    ("graph(%x : Tensor):\n  %y : Tensor = aten::relu(%z)\n  return (%y)\n",
     "line 2, col 28: value %z is used before it is defined"),
    ("graph(%x : Tensor):\n  %y : Tensor = aten::relu(%y)\n  return (%y)\n",
     "line 2, col 28: value %y is used before it is defined"),
    ("graph(%c : bool):\n  %y : int = prim::If(%c)\n    block0():\n      -> (%y)\n    block1():\n      -> (%y)\n"
     "  return (%y)\n", "line 4, col 11: value %y is not in scope"),
    ("graph(%x : Tensor):\n  %y : Tensor = nosuch::op(%x)\n  return (%y)\n",
     "line 2, col 17: unknown operator nosuch::op"),
    ("graph(%x : Tensor):\n  %y : Tensor = aten::relu(%x, %x)\n  return (%y)\n",
     "line 2, col 17: no overload of aten::relu accepts"),
    ("graph(%x : Tensor):\n  %x : Tensor = aten::relu(%x)\n  return (%x)\n",
     "line 2, col 3: value %x is defined twice"),
    ("graph(%x : Tensor):\n  %y : Tensor = aten::relu(%x)\n", "line 3, col 1: unexpected end of text"),
    ("graph(%x : Dict(int)):\n  return (%x)\n", "line 1, col 21: malformed type"),
    ("graph(%x : Tensr[):\n  return (%x)\n", "line 1, col 17: expected '\\)'"),
    ("graph(%x : int):\n  %y : int = prim::Constant[value=foo]()\n  return (%y)\n",
     "line 2, col 35: unknown literal 'foo'"),
    ("graph(%x : int):\n  %y : str = prim::Constant[value=\"abc]()\n  return (%y)\n",
     "line 2, col 42: unterminated string"),
    ("graph(%x : int):\n  %y : str = prim::Constant[value=\"a\\qb\"]()\n  return (%y)\n",
     "line 2, col 37: bad escape"),
    ("graph(%x : Tensor):\n  return (%x)\n  %y : Tensor = aten::relu(%x)\n",
     "line 3, col 3: unexpected text after the graph's return"),
    ("graph(%x : Tensor):\n  %y : Tensor = aten::relu(%x) # nowhere\n  return (%y)\n",
     "line 2, col 34: expected a source location"),
    ("graph(%x : Tensor):\n  %y : Tensor = aten::relu(%x) extra\n  return (%y)\n",
     "line 2, col 32: unexpected text at end of statement"),
    ("gruph(%x : Tensor):\n  return (%x)\n", "line 1, col 1: expected 'graph\\('"),
    ("graph(%c : bool, %x : Tensor):\n  %y : Tensor = prim::If(%c)\n    block0():\n      %z : Tensor = aten::relu(%x)\n"
     "      -> (%z)\n    block1():\n      -> (%z)\n  return (%y)\n",
     "line 7, col 11: value %z is not in scope"),
    ("graph(%c : bool, %x : Tensor):\n  %y : Tensor = prim::If(%c)\n    block0():\n      -> (%x)\n"
     "    block2():\n      -> (%x)\n  return (%y)\n", "line 5, col 5: expected block1"),
    ("graph(%c : bool, %x : Tensor):\n  %y : Tensor = prim::If(%c)\n    block0():\n      return (%x)\n"
     "  return (%y)\n", "line 4, col 7: expected '->' to end this block"),
    ("graph(%x : Tensor):\n  %y : Tensor = prim::Param()\n  return (%y)\n", "line 2, col 17: prim::Param is implicit"),
]


@pytest.mark.parametrize("text,message", ERRORS)
def test_parse_errors_name_line_and_column(text: str, message: str) -> None:
    with pytest.raises(IRParseError, match=message):
        parse_graph(text)


def test_good_text_parses() -> None:
    assert print_graph(parse_graph(GOOD)) == GOOD
    assert print_graph(parse_graph(GOOD.replace("\n", "\r\n"))) == GOOD


# -- types --------------------------------------------------------------------------------------

TYPES: list[Type] = [
    IntType, FloatType, BoolType, StrType, NoneType, NumberType, DeviceType, AnyType, TENSOR,
    TensorType(dtype=torch.float32), TensorType(shape=(2, None)), TensorType.of(torch.zeros(2, 3)),
    TensorType(dtype=torch.uint16), TensorType(dtype=torch.float8_e4m3fn, shape=(1,)),
    TensorType(dtype=torch.int64, shape=(), requires_grad=False), ListType(OptionalType(IntType)),
    OptionalType(TupleType((IntType, TENSOR))), TupleType(()), TupleType((BoolType,)),
    DictType(StrType, ListType(TENSOR)), UnionType((IntType, StrType)), FutureType(TENSOR),
    NamedTupleType("__torch__.P", (("a", IntType), ("b", TENSOR))), EnumType("__torch__.Color"),
    parse_type("__torch__.torch.nn.modules.linear.Linear"),
]


@pytest.mark.parametrize("t", TYPES, ids=str)
def test_types_round_trip(t: Type) -> None:
    assert parse_type(str(t)) == t
    g = Graph()
    g.register_output(g.add_input(t, "v"))
    round_trip(g)


# -- property tests -----------------------------------------------------------------------------

NAMES = st.one_of(st.none(), st.sampled_from(["x", "x.1", "y", "1", "2", "a-b", "self.1", ""]))
UNARY = ["aten::relu", "aten::tanh", "aten::neg", "aten::sigmoid"]
BINARY = ["aten::add.Tensor", "aten::mul.Tensor", "aten::sub.Tensor"]


@st.composite
def straight_line_graphs(draw: st.DrawFn) -> Graph:
    g = Graph()
    b = Builder(g)
    shape = draw(st.sampled_from([None, (2, 3), (4,)]))
    in_type = TENSOR if shape is None else TensorType(torch.float32, shape, None, torch.device("cpu"), False)
    values: list[Value] = [g.add_input(in_type, draw(NAMES)) for _ in range(draw(st.integers(1, 3)))]
    for _ in range(draw(st.integers(0, 12))):
        pick = st.sampled_from(values)
        kind = draw(st.sampled_from(["unary", "binary", "scalar", "cat"]))
        if kind == "unary":
            v = b.value(draw(st.sampled_from(UNARY)), [draw(pick)])
        elif kind == "binary":
            op = draw(st.sampled_from(BINARY))
            alpha = [b.constant(draw(st.integers(-3, 3)))] if op != "aten::mul.Tensor" else []
            v = b.value(op, [draw(pick), draw(pick), *alpha], draw(st.sampled_from([TENSOR, in_type])))
        elif kind == "scalar":
            v = b.value("aten::mul.Scalar", [draw(pick), b.constant(draw(st.floats(allow_nan=True)))])
        else:
            items = b.list(draw(st.lists(pick, min_size=1, max_size=3)), TENSOR)
            v = b.value("aten::cat", [items, b.constant(draw(st.integers(-1, 0)))])
        v.name = draw(NAMES)
        values.append(v)
    for v in draw(st.lists(st.sampled_from(values), min_size=1, max_size=3)):
        g.register_output(v)
    return g


def op_names(g: Graph) -> list[str | None]:
    return [None if n.op is None else n.op.schema.qualified for n in g.all_nodes()]


@given(straight_line_graphs())
def test_random_straight_line_graphs_round_trip(g: Graph) -> None:
    _, parsed = round_trip(g)
    assert op_names(parsed) == op_names(g)


SCALARS = st.one_of(st.none(), st.booleans(), st.integers(), st.floats(), st.text(max_size=6),
                    st.sampled_from([torch.float32, torch.int64, torch.strided]))


def literals(scalars: st.SearchStrategy[Any]) -> st.SearchStrategy[Any]:
    return st.recursive(scalars, lambda inner: st.one_of(
        st.lists(inner, max_size=3), st.tuples(inner, inner), st.tuples(inner)), max_leaves=8)


@given(literals(SCALARS), st.booleans())
def test_random_literals_round_trip_with_their_value(value: Any, typed: bool) -> None:
    text, parsed = round_trip(constant_graph(value, type_of_value(value) if typed else AnyType))
    assert same_value(value, next(parsed.nodes).attrs["value"]), text


@given(literals(st.one_of(SCALARS, st.just(torch.device("cpu")))), st.booleans())
def test_random_literals_with_devices_round_trip_as_text(value: Any, typed: bool) -> None:
    # a device is read back as a device only where its position is declared Device
    round_trip(constant_graph(value, type_of_value(value) if typed else AnyType))


# -- TorchScript's own text ---------------------------------------------------------------------

class _Cell(torch.nn.Module):
    def __init__(self) -> None:
        super().__init__()
        self.linear = torch.nn.Linear(4, 4)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return torch.cat([self.linear(x).relu() + torch.tensor([1.0, 2, 3, 4]), x * torch.tensor(2.0)], 1)


def _scripted(x: torch.Tensor, n: int) -> tuple[torch.Tensor, str, list[float], int]:
    y = x
    for _ in range(n):
        y = y * 2
    z = y + 1 if n > 2 else y
    return z, "s\x01\t", [1.5, 2.0], 3


@pytest.mark.torch_jit
def test_parses_torchscript_text(jit: Any) -> None:
    import warnings
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        traced = jit.trace(_Cell(), torch.randn(3, 4))
    for graph in (traced.graph, traced.inlined_graph, jit.script(_scripted).graph):
        ts_text = str(graph)
        parsed = parse_graph(ts_text)
        assert [n.kind() for n in graph.nodes()] == [n.kind for n in parsed.nodes]
        round_trip(parsed)
    lines = str(traced.inlined_graph).splitlines()
    assert any("scope: __module.linear" in line for line in lines)
    parsed = parse_graph(str(traced.inlined_graph))
    assert any(n.scope == "__module.linear" for n in parsed.nodes)
    tensor_constants = [n.attrs["value"] for n in parsed.nodes
                        if n.kind == "prim::Constant" and isinstance(n.output.type, TensorType)]
    assert Opaque("Tensor") in tensor_constants  # TorchScript's "1 2 3 4 [ CPUFloatType{4} ]"
    assert any(isinstance(v, torch.Tensor) and v.item() == 2.0 for v in tensor_constants)


def _node(g: Graph, kind: str) -> Node:
    return next(n for n in g.all_nodes() if n.kind == kind)


def test_torchscript_spellings_accepted() -> None:
    text = """graph(%x.1 : Tensor):
  %f : float = prim::Constant[value=1.]()
  %z : float = prim::Constant[value=-0.]()
  %e : float = prim::Constant[value=1.0000000000000001e-05]()
  %t : Float(1, strides=[1], requires_grad=0, device=cpu) = prim::Constant[value={2}]()
  %d : Tensor = prim::Constant[value= 1  2  3 [ CPUFloatType{3} ]]()
  %s : str = prim::Constant[value='it\\'s \\303\\251']()
  %u : (int, float) = prim::Constant[value=(1, 2.)]()
  %c : Device = prim::Constant[value="cuda:0"]()
  return (%f, %z, %e, %t, %d, %s, %u, %c)
"""
    g = parse_graph(text)
    values = [n.attrs["value"] for n in g.nodes]
    assert values[:3] == [1.0, -0.0, 1e-05] and math.copysign(1, values[1]) == -1
    assert same_value(values[3], torch.tensor([2.0]))
    assert values[4] == Opaque("Tensor")
    assert values[5] == "it's é"
    assert values[6] == (1, 2.0)
    assert values[7] == torch.device("cuda:0")
    round_trip(g)
    assert _node(g, "prim::Constant").op is None


def test_docs_example_round_trips_exactly() -> None:
    doc = (Path(__file__).resolve().parent.parent / "docs" / "ir.md").read_text()
    example = doc.split("## Example\n\n```\n", 1)[1].split("```", 1)[0]
    g = parse_graph(example)
    assert print_graph(g) == example
    assert _node(g, "aten::add").op is registry.get("aten::add.Tensor")
