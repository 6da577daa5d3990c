"""The ``.code`` view: exact text for small graphs, valid Python always, the same meaning when
executed, and TorchScript's own ``.code`` where ``torch.jit`` is still there to compare with."""

from __future__ import annotations

import ast
import math
from collections.abc import Callable
from types import ModuleType, SimpleNamespace
from typing import Any, Optional

import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st

from kiln.errors import SchemaError
from kiln.ir.builder import Builder
from kiln.ir.graph import Block, Graph, Node, Value
from kiln.ir.ops import registry
from kiln.ir.pycode import graph_to_code, literal
from kiln.ir.types import (
    TENSOR,
    BoolType,
    ClassType,
    IntType,
    ListType,
    OptionalType,
    StrType,
    TupleType,
    parse_type,
)
from kiln.ir.verify import verify

INT64_MAX = 2**63 - 1


def code_of(g: Graph, name: str = "fn", constants: Optional[list[Any]] = None) -> str:
    verify(g)
    code = graph_to_code(g, name, constants=constants)
    ast.parse(code)
    return code


def run_code(code: str, name: str, *args: Any) -> Any:
    """Execute generated code as plain Python (test-only: product code never execs)."""
    def raise_exception(msg: str, cls: str = "builtins.RuntimeError") -> None:
        raise RuntimeError(f"{cls}: {msg}")

    ops = SimpleNamespace(prim=SimpleNamespace(RaiseException=raise_exception))
    env: dict[str, Any] = {"torch": torch, "inf": math.inf, "nan": math.nan, "ops": ops}
    exec(compile(code, "<kiln code>", "exec"), env)
    return env[name](*args)


def add_loop(b: Builder, trip: Value, cond: Value, carried: list[Value]) -> Node:
    node = b.graph.create("prim::Loop", [trip, cond, *carried], [v.type for v in carried])
    body = node.add_block()
    body.add_input(IntType, "i")
    for v in carried:
        body.add_input(v.type, v.name)
    return b.insert(node)


# -- straight-line and module-like graphs -------------------------------------------------------


def test_traced_module_shape() -> None:
    g = Graph()
    self_ = g.add_input(ClassType("__torch__.Cell"), "self.1")
    x, h = g.add_input(TENSOR, "x"), g.add_input(TENSOR, "h")
    b = Builder(g)
    linear = b.get_attr(self_, "linear", ClassType("__torch__.torch.nn.modules.linear.Linear"))
    out = b.call_method(linear, "forward", [x], TENSOR)
    t = b.value("aten::tanh", [b.value("aten::add.Tensor", [out, h, b.constant(1)])])
    g.register_output(b.tuple([t, t]))
    assert code_of(g, "forward") == (
        "def forward(self,\n"
        "    x: Tensor,\n"
        "    h: Tensor) -> Tuple[Tensor, Tensor]:\n"
        "  linear = self.linear\n"
        "  _0 = torch.tanh(torch.add((linear).forward(x, ), h))\n"
        "  return (_0, _0)\n")


def test_straight_line_function() -> None:
    g = Graph()
    x, y = g.add_input(TENSOR, "x.1"), g.add_input(TENSOR, "y")
    b = Builder(g)
    s = b.value("aten::add.Tensor", [x, y, b.constant(2)])     # alpha=2 is not the default
    r = b.value("aten::relu", [s])
    g.register_output(b.value("aten::mul.Tensor", [r, r]))     # r used twice: a variable
    code = code_of(g)
    assert code == ("def fn(x: Tensor,\n"
                    "    y: Tensor) -> Tensor:\n"
                    "  _0 = torch.relu(torch.add(x, y, alpha=2))\n"
                    "  return torch.mul(_0, _0)\n")
    a, c = torch.randn(3), torch.randn(3)
    torch.testing.assert_close(run_code(code, "fn", a, c), torch.relu(a + 2 * c) ** 2)


def test_defaults_are_dropped_only_when_exactly_equal() -> None:
    g = Graph()
    x = g.add_input(TENSOR, "x")
    b = Builder(g)
    f = b.constant(False)
    to = b.value("aten::to.dtype", [x, b.constant(torch.float64), f, f, b.constant(None)])
    alpha_float = b.value("aten::add.Tensor", [to, x, b.constant(1.0)])   # 1. is not the default 1
    zeros = b.value("aten::zeros", [b.list([b.constant(2)]), b.constant(torch.float32), b.constant(None),
                                    b.constant(None), b.constant(None)])
    g.register_output(b.tuple([alpha_float, zeros]))
    code = code_of(g)
    assert "torch.add(torch.to(x, 7), x, alpha=1.)" in code
    assert "torch.zeros([2], dtype=6)" in code


def test_names_from_hints() -> None:
    g = Graph()
    b = Builder(g)
    x = g.add_input(TENSOR, "x.1")
    v1 = b.value("aten::relu", [x])
    v1.name = "x"
    v2 = b.value("aten::relu", [v1])
    v2.name = "torch"                 # reserved: renamed
    v3 = b.value("aten::relu", [v2])
    v3.name = "my-value.3"            # not an identifier: sanitized
    v4 = b.value("aten::relu", [v3])
    v4.name = "17"                    # a number is no name
    g.register_output(b.value("aten::mul.Tensor", [v4, v4]))
    code = code_of(g)
    assert code.splitlines()[1:] == [
        "  x0 = torch.relu(x)",
        "  torch0 = torch.relu(x0)",
        "  my_value = torch.relu(torch0)",
        "  _0 = torch.relu(my_value)",
        "  return torch.mul(_0, _0)",
    ]


def test_unnamed_inputs_and_no_outputs() -> None:
    g = Graph()
    g.add_input(TENSOR)
    assert code_of(g) == "def fn(_0: Tensor) -> None:\n  pass\n"


def test_statement_forms() -> None:
    g = Graph()
    self_ = g.add_input(ClassType("__torch__.M"), "self")
    t = g.add_input(TupleType((TENSOR, IntType)), "t")
    b = Builder(g)
    x, n = b.op("prim::TupleUnpack", [t], [TENSOR, IntType]).outputs
    x.name, n.name = "x", "n"
    child = b.get_attr(self_, "0", ClassType("__torch__.Sub"))
    y = b.call_method(child, "forward", [], TENSOR)
    b.set_attr(self_, "count", n)
    b.set_attr(self_, "1", x)
    b.raise_exception("boom", "builtins.ValueError")
    g.register_output(b.value("aten::add.Tensor", [x, y, b.constant(1)]))
    assert code_of(g, "forward").splitlines()[2:] == [
        "  x, n, = t",
        '  _0 = (getattr(self, "0")).forward()',
        "  self.count = n",
        '  setattr(self, "1", x)',
        '  ops.prim.RaiseException("boom", "builtins.ValueError")',
        "  return torch.add(x, _0)",
    ]


def test_containers() -> None:
    g = Graph()
    x = g.add_input(TENSOR, "x")
    b = Builder(g)
    empty = b.list([], IntType)
    opt = b.list([x, b.constant(None)], OptionalType(TENSOR))
    one = b.tuple([x])
    g.register_output(b.tuple([empty, opt, one]))
    code = code_of(g)
    assert "annotate(List[int], [])" in code
    assert "annotate(List[Optional[Tensor]], [x, None])" in code
    assert "(x,)" in code


# -- literals and constants -----------------------------------------------------------------------


@pytest.mark.parametrize(("value", "type_", "text"), [
    (2.0, None, "2."), (-3.0, None, "-3."), (-0.0, None, "-0."), (1.5, None, "1.5"),
    (1e-5, None, "1.0000000000000001e-05"), (1e20, None, "1e+20"), (1e10, None, "10000000000."),
    (math.inf, None, "inf"), (-math.inf, None, "-inf"), (math.nan, None, "nan"),
    (3, None, "3"), (True, None, "True"), (None, None, "None"),
    ('a"b\n\x01\r', None, '"a\\"b\\n\\001\\015"'), (torch.device("cpu"), None, 'torch.device("cpu")'),
    (torch.float32, None, "6"), (torch.float16, None, "5"), (torch.int64, None, "4"),
    (torch.bool, None, "11"), (torch.bfloat16, None, "15"), (torch.strided, None, "0"),
    (torch.channels_last, None, "2"), ([1, 2], None, "[1, 2]"), ((1,), None, "(1,)"),
    ([], ListType(IntType), "annotate(List[int], [])"), ([1.0, 2.5], None, "[1., 2.5]"),
])
def test_literals(value: Any, type_: Any, text: str) -> None:
    assert literal(value, type_) == text


_TRICKY_STRINGS = ["é\t\"\\", "a\rb\x00c\x7f1", "line\u2028sep\x85"]


@pytest.mark.parametrize("value", [2.0, 1e-5, 1e10, 1e300, -7.25, 0.1, 5e-324, *_TRICKY_STRINGS, [1, (2, 3.0)]])
def test_literals_read_back_as_the_same_value(value: Any) -> None:
    text = literal(value)
    assert text is not None
    assert eval(text, {}) == value and type(eval(text, {})) is type(value)


@pytest.mark.parametrize("value", [*_TRICKY_STRINGS, 2.0, -0.0, 1e-5, 1e10, 1e20, 5e-324, 0.1])
def test_torchscript_reads_literals_back(jit: ModuleType, value: Any) -> None:
    """(``inf``/``nan`` are names of the archive importer's environment, as in TorchScript's
    own code, so a bare CompilationUnit cannot read them.)"""
    unit = jit.CompilationUnit(f"def fn() -> {type(value).__name__}:\n  return {literal(value)}\n")
    assert unit.fn() == value and repr(unit.fn()) == repr(value)


def test_tensor_constants_are_collected_and_shared() -> None:
    weight = torch.ones(2)
    g = Graph()
    x = g.add_input(TENSOR, "x")
    b = Builder(g)
    w1, w2, s = b.constant(weight), b.constant(weight), b.constant(torch.tensor(3.0))
    y = b.value("aten::mul.Tensor", [b.value("aten::add.Tensor", [x, w1, b.constant(1)]), w2])
    g.register_output(b.value("aten::mul.Tensor", [y, s]))
    table: list[Any] = [torch.zeros(1)]
    code = code_of(g, constants=table)
    assert "CONSTANTS.c1" in code and "CONSTANTS.c2" in code and "CONSTANTS.c3" not in code
    assert table[1] is weight and len(table) == 3


# -- scalar operators -------------------------------------------------------------------------------


def test_operators_are_parenthesized_by_precedence() -> None:
    g = Graph()
    a, c, d = (g.add_input(IntType, n) for n in "acd")
    b = Builder(g)
    s = b.value("aten::add.int", [a, c])
    m = b.value("aten::mul.int", [s, b.value("aten::sub.int", [c, d])])        # (a + c) * (c - d)
    r = b.value("aten::sub.int", [m, b.value("aten::sub.int", [a, b.constant(-1)])])
    lt = b.value("aten::lt.int", [r, b.value("aten::neg.int", [d])])
    g.register_output(b.value("aten::__not__", [lt]))
    code = code_of(g)
    assert "return not (a + c) * (c - d) - (a - -1) < -d" in code
    assert run_code(code, "fn", 1, 2, 3) is (not ((1 + 2) * (2 - 3) - (1 + 1) < -3))


_INT_OPS: dict[str, Callable[[int, int], int]] = {
    "add": lambda x, y: x + y, "sub": lambda x, y: x - y, "mul": lambda x, y: x * y}


def _build_expr(b: Builder, inputs: list[Value], tree: Any) -> tuple[Value, Any]:
    """Build ``tree`` (an input index, ('neg', t) or (op, t, t)) and also evaluate it lazily."""
    if isinstance(tree, int):
        return inputs[tree % len(inputs)], lambda args: int(args[tree % len(args)])
    if tree[0] == "neg":
        v, f = _build_expr(b, inputs, tree[1])
        return b.value("aten::neg.int", [v]), lambda args: -f(args)
    lv, lf = _build_expr(b, inputs, tree[1])
    rv, rf = _build_expr(b, inputs, tree[2])
    op = _INT_OPS[tree[0]]
    return b.value(f"aten::{tree[0]}.int", [lv, rv]), lambda args: op(lf(args), rf(args))


_trees = st.recursive(
    st.integers(0, 2),
    lambda sub: st.tuples(st.just("neg"), sub) | st.tuples(st.sampled_from(sorted(_INT_OPS)), sub, sub),
    max_leaves=12)


@given(_trees, st.tuples(st.integers(-9, 9), st.integers(-9, 9), st.integers(-9, 9)))
def test_int_expressions_mean_what_the_graph_means(tree: Any, args: tuple[int, int, int]) -> None:
    g = Graph()
    inputs = [g.add_input(IntType, n) for n in "abc"]
    out, reference = _build_expr(Builder(g), inputs, tree)
    g.register_output(out)
    assert run_code(code_of(g), "fn", *args) == reference(list(args))


# -- control flow -------------------------------------------------------------------------------------


def test_if_with_optional_output() -> None:
    g = Graph()
    n = g.add_input(IntType, "n")
    b = Builder(g)
    branch = b.if_(b.value("aten::gt.int", [n, b.constant(2)]), [OptionalType(IntType)])
    branch.output.name = "r"
    with b.at_end(branch.blocks[0]):
        branch.blocks[0].register_output(b.value("aten::mul.int", [n, b.constant(3)]))
    with b.at_end(branch.blocks[1]):
        branch.blocks[1].register_output(b.constant(None))
    g.register_output(branch.output)
    code = code_of(g)
    assert code == ("def fn(n: int) -> Optional[int]:\n"
                    "  if n > 2:\n"
                    "    r : Optional[int] = n * 3\n"
                    "  else:\n"
                    "    r = None\n"
                    "  return r\n")
    assert run_code(code, "fn", 5) == 15 and run_code(code, "fn", 1) is None


def test_if_without_outputs_prints_pass() -> None:
    g = Graph()
    c = g.add_input(BoolType, "c")
    b = Builder(g)
    b.guard(c, "c must hold")
    code = code_of(g)
    assert code.splitlines()[1:] == ["  if c:", "    pass", "  else:",
                                     '    ops.prim.RaiseException("c must hold", "builtins.RuntimeError")']
    run_code(code, "fn", True)
    with pytest.raises(RuntimeError, match="c must hold"):
        run_code(code, "fn", False)


def _sum_loop(trip: Optional[int], body_cond: bool) -> Graph:
    """acc = 0; loop(max=n or trip, start=c) { acc = acc + i; cond = acc < 10 or True }"""
    g = Graph()
    n = g.add_input(IntType, "n")
    start = g.add_input(BoolType, "go") if not body_cond else None
    b = Builder(g)
    true = b.constant(True)
    acc0 = b.constant(0)
    loop = add_loop(b, n if trip is None else b.constant(trip), start or true, [acc0])
    loop.output.name = "acc"
    body: Block = loop.blocks[0]
    i, acc = body.inputs
    with b.at_end(body):
        nxt = b.value("aten::add.int", [acc, i if trip is None else b.constant(1)])
        body.register_output(true if body_cond else b.value("aten::lt.int", [nxt, b.constant(10)]))
        body.register_output(nxt)
    g.register_output(loop.output)
    return g


def test_for_loop() -> None:
    code = code_of(_sum_loop(None, True))
    assert code.splitlines()[1:] == [
        "  acc = 0",
        "  for i in range(n):",
        "    acc = acc + i",
        "  return acc",
    ]
    assert run_code(code, "fn", 5) == 10 and run_code(code, "fn", 0) == 0


def test_while_loop() -> None:
    code = code_of(_sum_loop(INT64_MAX, False))
    assert code.splitlines()[2:] == [
        "  acc = 0",
        "  i = go",
        "  while i:",
        "    _0 = acc + 1",
        "    i, acc = _0 < 10, _0",
        "  return acc",
    ]
    assert run_code(code, "fn", 0, True) == 10 and run_code(code, "fn", 0, False) == 0


def test_counted_while_loop() -> None:
    """Trip count and condition both matter: TorchScript cannot print this; Kiln counts."""
    code = code_of(_sum_loop(None, False))
    assert "while _0 and i < n:" in code
    for n, go in ((3, True), (100, True), (100, False), (0, True)):
        acc, i = 0, 0
        cond = go
        while cond and i < n:
            acc += i
            cond = acc < 10
            i += 1
        assert run_code(code, "fn", n, go) == acc


def test_loop_bound_computed_inline_is_not_reevaluated() -> None:
    g = _sum_loop(None, False)
    b = Builder(g)
    loop = next(n for n in g.nodes if n.kind == "prim::Loop")
    b.before = loop
    bound = b.value("aten::mul.int", [g.inputs[0], b.constant(2)])
    loop.replace_input(0, bound)
    code = code_of(g)
    assert "_0 = n * 2" in code and "i < _0" in code


def test_nested_blocks_and_long_lines_split() -> None:
    g = Graph()
    x, n = g.add_input(TENSOR, "x"), g.add_input(IntType, "n")
    b = Builder(g)
    loop = add_loop(b, n, b.constant(True), [x])
    body = loop.blocks[0]
    with b.at_end(body):
        y = body.inputs[1]
        for op in ("aten::sigmoid", "aten::tanh", "aten::relu", "aten::exp", "aten::neg", "aten::abs"):
            y = b.value(op, [y])
        body.register_output(b.constant(True))
        body.register_output(b.value("aten::add.Tensor", [y, x, b.constant(1)]))
    g.register_output(loop.output)
    code = code_of(g)
    assert "for i in range(n):" in code
    assert all(len(line) < 100 for line in code.splitlines())
    assert code.count(" = torch.") >= 2        # the chain was split into variables
    torch.testing.assert_close(
        run_code(code, "fn", torch.ones(2), 2),
        _eager_chain(_eager_chain(torch.ones(2)) + 1) + 1)


def _eager_chain(t: torch.Tensor) -> torch.Tensor:
    return torch.abs(torch.neg(torch.exp(torch.relu(torch.tanh(torch.sigmoid(t))))))


def test_deep_chain_stays_valid_python() -> None:
    g = Graph()
    x = g.add_input(TENSOR, "x")
    b = Builder(g)
    for _ in range(3000):
        x = b.value("aten::relu", [x])
    g.register_output(x)
    code = code_of(g)
    assert max(line.count("(") for line in code.splitlines()) < 20


# -- torch.jit as the oracle ------------------------------------------------------------------------


def _qualified(node: Any) -> str:
    schema = str(node.schema())
    return schema.split("(", 1)[0] if schema and schema != "(no schema)" else str(node.kind())


def _copy_block(tblock: Any, block: Block, env: dict[Any, Value]) -> None:
    g = block.graph
    for tn in tblock.nodes():
        attrs: dict[str, Any] = {}
        if tn.hasAttribute("value"):
            attrs["value"] = tn.t("value") if tn.kindOf("value") == "t" else tn.output().toIValue()
        elif tn.kind() == "prim::Constant":
            attrs["value"] = None
        if tn.hasAttribute("name"):
            attrs["name"] = tn.s("name")
        node = g.create(tn.kind(), [env[v] for v in tn.inputs()],
                        [parse_type(str(v.type())) for v in tn.outputs()], attrs)
        if tn.kind() not in ("prim::Constant", "prim::If", "prim::Loop"):
            try:
                node.op = registry.get(_qualified(tn))
            except SchemaError:
                node.op = None
        for tv, v in zip(tn.outputs(), node.outputs):
            v.name = tv.debugName()
            env[tv] = v
        for tsub in tn.blocks():
            sub = node.add_block()
            for tv in tsub.inputs():
                env[tv] = sub.add_input(parse_type(str(tv.type())), tv.debugName())
            _copy_block(tsub, sub, env)
        block.append(node)
    for tv in tblock.outputs():
        block.register_output(env[tv])


def from_torch(tgraph: Any) -> Graph:
    """A Kiln copy of a TorchScript graph (test-only bridge: names, types, constants, ops)."""
    g = Graph()
    env: dict[Any, Value] = {}
    for tv in tgraph.inputs():
        env[tv] = g.add_input(parse_type(str(tv.type())), tv.debugName())
    _copy_block(tgraph.block(), g.block, env)
    return g


class Cell(torch.nn.Module):
    def __init__(self) -> None:
        super().__init__()
        self.linear = torch.nn.Linear(4, 4)

    def forward(self, x: torch.Tensor, h: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        y = torch.tanh(self.linear(x) + h)
        return y, y


def loops(x: torch.Tensor, n: int) -> torch.Tensor:
    y = x
    for _ in range(n):
        y = y * 2.0 + x
    while bool(y.sum() < 100.0):
        y = y + 1.5
    if bool(y.max() > 1000.0):
        y = torch.zeros_like(y)
    else:
        y = y.clamp(min=0.0, max=10.0)
    return y


def mix(x: torch.Tensor, w: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    a, b = torch.max(x, 1)
    z = torch.nn.functional.linear(x, w)
    s = torch.sum(z, dim=[0], keepdim=True, dtype=torch.float64)
    t = torch.cat([a, b.to(torch.float32)], 0)
    return s.relu() * 2 + t.sum(), torch.softmax(z, -1)


def test_traced_module_matches_torchscript(jit: ModuleType) -> None:
    traced = jit.trace(Cell(), (torch.rand(3, 4), torch.rand(3, 4)))
    assert code_of(from_torch(traced.graph), "forward") == traced.code


@pytest.mark.parametrize("fn", [loops, mix])
def test_scripted_functions_match_torchscript(jit: ModuleType, fn: Any) -> None:
    scripted = jit.script(fn)
    assert code_of(from_torch(scripted.graph), fn.__name__) == scripted.code


@pytest.mark.parametrize(("fn", "args"), [
    (loops, (torch.rand(3), 4)), (loops, (torch.full((3,), 400.0), 1)),
])
def test_torchscript_compiles_kiln_code_back(jit: ModuleType, fn: Any, args: tuple[Any, ...]) -> None:
    """TorchScript's own frontend reads the code back, and it computes what eager does."""
    code = code_of(from_torch(jit.script(fn).graph), "fn")
    unit = jit.CompilationUnit(code)
    torch.testing.assert_close(unit.fn(*args), fn(*args))


def test_torchscript_compiles_control_flow_back(jit: ModuleType) -> None:
    for g in (_sum_loop(None, True), _sum_loop(INT64_MAX, False), _sum_loop(None, False)):
        code = code_of(g)
        unit = jit.CompilationUnit(code)
        for args in ((5,), (20,)) if len(g.inputs) == 1 else ((5, True), (20, False), (2, True)):
            assert unit.fn(*args) == run_code(code, "fn", *args)


def test_str_type_annotation_in_header() -> None:
    g = Graph()
    s = g.add_input(StrType, "s")
    g.register_output(s)
    assert code_of(g) == "def fn(s: str) -> str:\n  return s\n"


# -- random int programs with nested control flow: the code means what the graph means ----------


def evaluate(block: Block, env: dict[Value, Any]) -> list[Any]:
    """A small reference evaluator (constants, If, Loop and ops through their ``impl``)."""
    for n in block.nodes:
        if n.kind == "prim::Constant":
            env[n.output] = n.attrs["value"]
        elif n.kind == "prim::If":
            chosen = n.blocks[0 if env[n.inputs[0]] else 1]
            env.update(zip(n.outputs, evaluate(chosen, env)))
        elif n.kind == "prim::Loop":
            body = n.blocks[0]
            limit, cond = env[n.inputs[0]], env[n.inputs[1]]
            carried, i = [env[v] for v in n.inputs[2:]], 0
            while cond and i < limit:
                env.update(zip(body.inputs, [i, *carried]))
                cond, *carried = evaluate(body, env)
                i += 1
            env.update(zip(n.outputs, carried))
        else:
            env[n.output] = n.op.impl(*[env[v] for v in n.inputs])
    return [env[v] for v in block.outputs]


_HINTS = [None, None, "x", "x.1", "y", "acc", "_0"]


def _gen_block(data: Any, b: Builder, block: Block, scope: list[Value], depth: int) -> list[Value]:
    """Append random int statements to ``block``; return the values visible at its end."""
    scope = list(scope)
    with b.at_end(block):
        for _ in range(data.draw(st.integers(1, 4))):
            kind = data.draw(st.integers(0, 2 if depth < 2 else 0))
            pick = st.sampled_from(scope)
            if kind == 0:
                op = data.draw(st.sampled_from(["add", "sub", "mul"]))
                v = b.value(f"aten::{op}.int", [data.draw(pick), data.draw(pick)])
            elif kind == 1:
                cond = b.value("aten::lt.int", [data.draw(pick), data.draw(pick)])
                node = b.if_(cond, [IntType])
                for sub in node.blocks:
                    inner = _gen_block(data, b, sub, scope, depth + 1)
                    sub.register_output(data.draw(st.sampled_from(inner)))
                v = node.output
            else:
                v = _gen_loop(data, b, scope, depth)
            v.name = data.draw(st.sampled_from(_HINTS))
            scope.append(v)
    return scope


def _gen_loop(data: Any, b: Builder, scope: list[Value], depth: int) -> Value:
    pick = st.sampled_from(scope)
    start = b.constant(True) if data.draw(st.booleans()) else \
        b.value("aten::lt.int", [data.draw(pick), data.draw(pick)])
    node = add_loop(b, b.constant(data.draw(st.integers(0, 4))), start, [data.draw(pick)])
    body = node.blocks[0]
    inner = _gen_block(data, b, body, [*scope, *body.inputs], depth + 1)
    new = data.draw(st.sampled_from(inner))
    with b.at_end(body):
        again = b.constant(True) if data.draw(st.booleans()) else \
            b.value("aten::lt.int", [new, b.constant(data.draw(st.integers(-5, 50)))])
    body.register_output(again)
    body.register_output(new)
    return node.output


@given(st.data(), st.tuples(st.integers(-5, 5), st.integers(-5, 5)))
def test_random_programs_mean_what_the_graph_means(data: Any, args: tuple[int, int]) -> None:
    g = Graph()
    inputs = [g.add_input(IntType, "a"), g.add_input(IntType, "b")]
    scope = _gen_block(data, Builder(g), g.block, inputs, 0)
    g.register_output(data.draw(st.sampled_from(scope)))
    code = code_of(g)
    expected = evaluate(g.block, dict(zip(inputs, args)))[0]
    assert run_code(code, "fn", *args) == expected, code


@pytest.mark.torch_jit
@settings(max_examples=25)
@given(st.data(), st.tuples(st.integers(-5, 5), st.integers(-5, 5)))
def test_torchscript_compiles_random_programs_back(data: Any, args: tuple[int, int]) -> None:
    g = Graph()
    inputs = [g.add_input(IntType, "a"), g.add_input(IntType, "b")]
    scope = _gen_block(data, Builder(g), g.block, inputs, 0)
    g.register_output(data.draw(st.sampled_from(scope)))
    code = code_of(g)
    expected = evaluate(g.block, dict(zip(inputs, args)))[0]
    assert torch.jit.CompilationUnit(code).fn(*args) == expected, code
