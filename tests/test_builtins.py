"""TorchScript's builtin operators on numbers, lists, dicts and strings (``kiln.ir.builtins*``).

* Schemas: every overload Kiln registers exists in TorchScript under the same qualified name
  with the same arguments, defaults, mutability and results (TorchScript's own schema list is
  the oracle, where this PyTorch still has it).
* Semantics: each operator runs as one node through generated code (which uses the ops'
  inline ``emit`` forms) and through the reference interpreter (which calls ``impl``), and
  both must give what Python itself computes -- the same value of the same type, the same
  mutation of the arguments, or the same exception type.
* ``.code``: TorchScript's own ``.code`` of small scripted programs is reproduced, and Kiln's
  text compiles back in TorchScript to the same results.
"""

from __future__ import annotations

import cmath
import copy
import math
import operator
import warnings
from collections.abc import Callable, Iterator
from fractions import Fraction
from types import ModuleType
from typing import Any

import pytest
import torch

import kiln
from kiln.ir import builtins as B
from kiln.ir.builder import Builder
from kiln.ir.graph import Graph
from kiln.ir.ops import OpInfo, Schema, parse_schema, registry, schema_from_torch
from kiln.ir.parser import parse_graph, resolve_overload
from kiln.ir.types import (
    AnyType,
    BoolType,
    ComplexType,
    DeviceType,
    DictType,
    FloatType,
    IntType,
    ListType,
    NumberType,
    OptionalType,
    StrType,
    TensorType,
    TupleType,
    Type,
    VarType,
    type_of_value,
)
from kiln.ir.verify import verify
from kiln.passes.dce import eliminate_dead_code
from kiln.runtime.interpreter import interpret

MINE = {info.schema.qualified: info for info in B.REGISTERED}


# -- TorchScript's schema list as the oracle --------------------------------------------------------

def _torchscript_schemas() -> dict[str, Any]:
    get_all = getattr(torch._C, "_jit_get_all_schemas", None)
    if get_all is None:
        return {}
    return {s.name + (f".{s.overload_name}" if s.overload_name else ""): s for s in get_all()}


TS_SCHEMAS = _torchscript_schemas()
requires_schemas = pytest.mark.skipif(not TS_SCHEMAS, reason="this PyTorch has no TorchScript schema list")


def _shape(s: Schema, vararg: bool) -> tuple[Any, ...]:
    args = tuple((a.name, a.type, repr(a.default), a.kwarg_only, a.is_write) for a in s.arguments)
    return s.name, s.overload, args, tuple(r.type for r in s.returns), vararg


@requires_schemas
def test_every_schema_is_torchscripts() -> None:
    assert len(MINE) == len(B.REGISTERED), "an overload was registered twice"
    unknown = sorted(q for q in MINE if q not in TS_SCHEMAS)
    assert not unknown, f"not TorchScript operators: {unknown}"
    for q, info in MINE.items():
        theirs = TS_SCHEMAS[q]
        # torch's Python FunctionSchema does not expose is_vararg: read it from the text
        vararg = "..." in str(theirs).split("->")[0]
        assert _shape(info.schema, info.schema.is_vararg) == _shape(schema_from_torch(theirs), vararg), q


@requires_schemas
@pytest.mark.parametrize("qualified", [
    "prim::TupleIndex", "prim::RaiseException", "prim::NumToTensor.Scalar", "prim::NumToTensor.bool",
    "aten::Int.Tensor", "aten::Float.Tensor", "aten::Bool.Tensor", "aten::ScalarImplicit", "aten::size",
    "aten::len.Tensor", "prim::device"])
def test_prims_agree_with_torchscript(qualified: str) -> None:
    """``prims.py``'s entries with a TorchScript namesake match it (``prim::dtype`` does not:
    Kiln gives a ScalarType value where TorchScript gives an int)."""
    theirs = TS_SCHEMAS[qualified]
    assert _shape(registry.get(qualified).schema, False) == _shape(schema_from_torch(theirs), False)


@requires_schemas
def test_torchscripts_builtins_are_covered() -> None:
    """Every JIT-only TorchScript builtin on non-tensor values is registered, except these:
    ``is_scripting`` and tracing state (the script compiler decides them), internal
    fusion/profiling/shape/module-container ops, ``hash`` (process-specific), ``save`` (file
    output) and enum ops (enums are classes, not builtins)."""
    left_out = {
        "aten::Size", "aten::_get_cpu_capability", "aten::_get_tracing_state", "aten::_infer_size",
        "aten::_size_if_not_equal", "aten::_unwrap_optional", "aten::broadcast_shapes",
        "aten::dequantize.any", "aten::hash.generic", "aten::is_scripting", "aten::save",
        "prim::AddStatValue", "prim::AutogradAdd", "prim::BailoutTemplate", "prim::IfThenElse",
        "prim::ModuleContainerIndex.dict", "prim::ModuleContainerIndex.list", "prim::ReductionSizes",
        "prim::TimePoint", "aten::eq.enum", "aten::ne.enum",
    }   # also aten::tensor / aten::as_tensor.list of a list (filtered out below as tensor ops):
    # an empty list's tensor dtype comes from its static element type, which the op cannot see
    simple = {"int", "float", "bool", "str", "complex", "Scalar", "number", "t", "t1", "t2", "tVal",
              "Device", "Any", "NoneType", "Tensor"}
    dispatcher = set(torch._C._dispatch_get_all_op_names())
    missing = []
    for q, s in TS_SCHEMAS.items():
        if q in dispatcher or q in registry._by_qualified or q in left_out:
            continue
        types = [str(a.type) for a in s.arguments] + [str(r.type) for r in s.returns]
        words = {w for t in types for w in t.replace("[", " ").replace("]", " ").replace("(", " ")
                 .replace(")", " ").replace(",", " ").replace("?", " ").replace("Dict", " ")
                 .replace("List", " ").replace("Tuple", " ").replace("Optional", " ").split()}
        if words <= simple and "Tensor" not in words and "..." not in str(s):
            missing.append(str(s))
    assert not missing, "\n".join(missing)


def test_schemas_parse_alias_annotations() -> None:
    s = parse_schema("aten::append.t(t[](a!) self, t(c -> *) el) -> t[](a!)")
    assert [a.is_write for a in s.arguments] == [True, False]
    assert s.arguments[0].type == ListType(VarType("t")) and s.returns[0].type == ListType(VarType("t"))
    s = parse_schema("aten::get.str(Dict(str, t) self, str key) -> t(*)?")
    assert s.returns[0].type == OptionalType(VarType("t")) and not s.is_mutable
    s = parse_schema('aten::strip(str self, str chars=" \\n\\t\\f\\v") -> str')
    assert s.arguments[1].default == " \n\t\f\v"
    assert parse_schema("aten::wait(Future(t) self) -> t").arguments[0].type.annotation() == "Future[t]"


def test_mutating_ops_are_impure_and_survive_dce() -> None:
    for q in ("aten::append.t", "aten::_set_item.str", "aten::sort.int", "aten::clear.t",
              "aten::pop.Dict_str", "aten::update.int", "aten::Delete.t", "prim::Print", "aten::warn"):
        assert not registry.get(q).pure, q
    for q in ("aten::len.t", "aten::add.int", "aten::keys.str", "aten::__getitem__.t", "aten::format"):
        assert registry.get(q).pure, q
    g = Graph()
    lst = g.add_input(ListType(IntType), "l")
    b = Builder(g)
    b.op("aten::append.t", [lst, b.constant(3)], [ListType(IntType)])   # result unused
    b.value("aten::len.t", [lst])                                         # pure and unused
    eliminate_dead_code(g)
    assert [n.kind for n in g.nodes] == ["prim::Constant", "aten::append"]


def test_bindings_name_their_impls() -> None:
    for q, info in MINE.items():
        assert info.binding_name, f"{q} has no binding name"
        assert B.resolve_binding(info.binding_name) is info.impl, q
    assert registry.get("aten::__range_length").binding_name == "kiln.ir.builtins_scalar.range_length"


# -- running one node --------------------------------------------------------------------------------

_RAISED = "raised"


def _has_var(t: Type) -> bool:
    if isinstance(t, VarType):
        return True
    inner = [getattr(t, f) for f in ("elem", "key", "value") if hasattr(t, f)]
    return any(_has_var(x) for x in inner + list(getattr(t, "elems", ())))


def _input_type(declared: Type, value: Any) -> Type:
    """The schema's type with its type variables (and ``Any``) made concrete from ``value``."""
    if isinstance(declared, VarType) or declared == AnyType:
        return type_of_value(value)
    if isinstance(declared, ListType) and _has_var(declared):
        return ListType(_input_type(declared.elem, value[0]) if value else TensorType())
    if isinstance(declared, DictType) and _has_var(declared):
        first = next(iter(value.items()), (None, torch.zeros(())))
        return DictType(_input_type(declared.key, first[0]), _input_type(declared.value, first[1]))
    if isinstance(declared, TupleType) and _has_var(declared):
        return TupleType(tuple(_input_type(t, v) for t, v in zip(declared.elems, value)))
    return declared


def _graph_for(info: OpInfo, args: tuple[Any, ...], expected: Any) -> Graph:
    g = Graph()
    declared = [a.type for a in info.schema.arguments]
    if info.schema.is_vararg:
        declared = [a.type for a in info.schema.arguments] + [AnyType] * (len(args) - len(declared))
    inputs = [g.add_input(_input_type(t, v), f"x{i}") for i, (t, v) in enumerate(zip(declared, args))]
    rets = [r.type for r in info.schema.returns]
    if expected is not _RAISED:
        values = expected if len(rets) > 1 else (expected,)
        rets = [_input_type(t, v) for t, v in zip(rets, values)]
    node = Builder(g).op(info, inputs, rets)
    for out in node.outputs:
        g.register_output(out)
    verify(g)
    return g


def _outcome(fn: Callable[..., Any], args: tuple[Any, ...]) -> tuple[Any, Any, Any]:
    """(result, the arguments afterwards, exception type) of ``fn`` on a copy of ``args``."""
    mine = copy.deepcopy(args)
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            result = fn(*mine)
    except Exception as e:
        return _RAISED, None, type(e)
    return result, mine, None


def same(a: Any, b: Any) -> bool:
    """Equal values of identical types; NaN equals NaN, -0.0 differs from 0.0."""
    if type(a) is not type(b):
        return False
    if isinstance(a, torch.Tensor):
        return a.dtype == b.dtype and a.shape == b.shape and bool(torch.equal(a, b))
    if isinstance(a, float):
        return (math.isnan(a) and math.isnan(b)) or (a == b and math.copysign(1, a) == math.copysign(1, b))
    if isinstance(a, complex):
        return same(a.real, b.real) and same(a.imag, b.imag)
    if isinstance(a, (list, tuple)):
        return len(a) == len(b) and all(same(x, y) for x, y in zip(a, b))
    if isinstance(a, dict):
        return same(list(a.items()), list(b.items()))
    return bool(a == b)


def check(qualified: str, reference: Callable[..., Any], *args: Any) -> None:
    """Run ``qualified`` on ``args`` in generated code and in the interpreter; both must do
    what ``reference`` (Python's own computation) does."""
    info = registry.get(qualified)
    expected, args_after, error = _outcome(reference, args)
    g = _graph_for(info, args, expected)
    n_out = len(g.outputs)
    fn = kiln.ScriptFunction("f", g)
    for who, run in (("generated code", fn), ("interpreter", lambda *a: interpret(g, a))):
        got, got_args, got_error = _outcome(run, args)
        where = f"{qualified}{args!r} in {who}"
        if error is not None:
            assert got_error is not None and issubclass(got_error, error), f"{where}: expected {error}"
            continue
        assert got_error is None, f"{where} raised {got_error}"
        if n_out == 0:
            got = None
        assert same(got, expected), f"{where}: {got!r} != {expected!r}"
        assert same(got_args, args_after), f"{where}: arguments became {got_args!r}, not {args_after!r}"
        _check_result_type(info, got)


_PY_TYPES: dict[Type, tuple[type, ...]] = {
    IntType: (int,), FloatType: (float,), BoolType: (bool,), StrType: (str,), ComplexType: (complex,),
    NumberType: (int, float, complex), DeviceType: (torch.device,)}


def _check_result_type(info: OpInfo, result: Any) -> None:
    """A result has the Python type its schema says (an int is no float, a bool no int)."""
    rets = info.schema.returns
    values = result if len(rets) > 1 else (result,)
    for r, v in zip(rets, values):
        kinds = _PY_TYPES.get(r.type)
        if kinds is not None:
            assert type(v) in kinds, f"{info.schema.qualified} returned {type(v).__name__}, schema says {r.type}"


# -- numbers --------------------------------------------------------------------------------------

POOL: dict[str, list[Any]] = {
    "int": [7, -3, 0, 2, 2 ** 70],
    "float": [2.5, -0.75, 0.0, 1e308, float("nan")],
    "complex": [1 + 2j, -0.5j],
    "bool": [True, False],
    "Scalar": [3, -1.5],
}


def _pairs(ta: str, tb: str, op: str) -> Iterator[tuple[Any, Any]]:
    for a in POOL[ta]:
        for b in POOL[tb]:
            if op in ("pow", "__lshift__") and isinstance(b, int) and abs(b) > 64:
                continue   # Python would compute a gigantic number
            yield a, b


def _as_float(fn: Callable[..., Any]) -> Callable[..., Any]:
    return lambda *a: float(fn(*a))


def _pow_float(a: Any, b: Any) -> float:
    r = a ** b
    if isinstance(r, complex):
        raise ValueError("complex")
    return float(r)


_BINARY_REFERENCE: dict[str, Callable[..., Any]] = {
    "add": operator.add, "sub": operator.sub, "mul": operator.mul, "div": operator.truediv,
    "floordiv": operator.floordiv, "remainder": operator.mod,
    "eq": operator.eq, "ne": operator.ne, "lt": operator.lt, "gt": operator.gt, "le": operator.le,
    "ge": operator.ge, "__and__": operator.and_, "__or__": operator.or_, "__xor__": operator.xor,
    "__lshift__": operator.lshift, "__rshift__": operator.rshift, "min": min, "max": max,
    "fmod": math.fmod, "mathremainder": math.remainder, "copysign": math.copysign, "atan2": math.atan2,
    "divmod": divmod, "gcd": math.gcd, "polar": cmath.rect,
    "__round_to_zero_floordiv": lambda a, b: int(Fraction(a) / Fraction(b)),
    "log": lambda a, b: cmath.log(a, b) if complex in (type(a), type(b)) else math.log(a, b),
}


def _binary_cases() -> Iterator[Any]:
    for q, info in MINE.items():
        s = info.schema
        op = s.opname
        types = [str(a.type) for a in s.arguments]
        if op not in _BINARY_REFERENCE and op != "pow" or len(types) != 2:
            continue
        if not all(t in ("int", "float", "complex", "bool", "Scalar") for t in types):
            continue
        ref = _BINARY_REFERENCE.get(op, operator.pow)
        if op == "pow" and str(s.returns[0].type) == "float":
            ref = _pow_float
        if op in ("min", "max") and s.overload in ("int_float", "float_int"):
            ref = _as_float(ref)   # Python's min(-3, 2.5) is -3; the schema says float
        pairs = list(_pairs(*types, op))
        if s.overload == "int_to_int":   # a negative power is a float in Python (and TorchScript)
            pairs = [(a, b) for a, b in pairs if b >= 0]
        yield pytest.param(q, ref, pairs, id=q)


@pytest.mark.parametrize(("qualified", "reference", "cases"), list(_binary_cases()))
def test_binary_numbers(qualified: str, reference: Callable[..., Any], cases: list[Any]) -> None:
    for a, b in cases:
        check(qualified, reference, a, b)


def _round(a: Any) -> Any:
    return round(a, 0) if isinstance(a, float) else float(a)


_UNARY_REFERENCE: dict[str, Callable[..., Any]] = {
    "neg": operator.neg, "abs": abs, "floor": math.floor, "ceil": math.ceil, "round": _round,
    "isnan": math.isnan, "isinf": math.isinf, "isfinite": math.isfinite, "factorial": math.factorial,
    "modf": math.modf, "frexp": math.frexp, "__not__": operator.not_,
    "angle": lambda a: cmath.phase(a) if isinstance(a, complex) else (math.pi if a < 0 else 0.0) if a == a else a,
    "Int": int, "Float": float, "Bool": bool, "Complex": complex, "str": str,
    "chr": chr, "ord": ord, "hex": hex, "bin": bin, "oct": oct,
}


def _unary_reference(op: str, arg_type: str) -> Callable[..., Any]:
    if op in _UNARY_REFERENCE:
        fn = _UNARY_REFERENCE[op]
    else:
        real, cplx = getattr(math, op), getattr(cmath, op, None)
        fn = (lambda a: cplx(a) if isinstance(a, complex) else real(a)) if cplx else real
    if op in ("isnan", "isinf", "isfinite") and arg_type == "complex":
        fn = getattr(cmath, op)
    return fn


def _unary_cases() -> Iterator[Any]:
    for q, info in MINE.items():
        s = info.schema
        types = [str(a.type) for a in s.arguments]
        if len(types) != 1 or types[0] not in POOL or not info.pure or \
                s.opname in ("tensor", "as_tensor", "rangelist"):
            continue
        values = POOL[types[0]] + ([1.5, -2.5, 0.5, float("inf")] if types[0] == "float" else [])
        yield pytest.param(q, _unary_reference(s.opname, types[0]), values, id=q)


@pytest.mark.parametrize(("qualified", "reference", "values"), list(_unary_cases()))
def test_unary_numbers(qualified: str, reference: Callable[..., Any], values: list[Any]) -> None:
    for v in values:
        check(qualified, reference, v)


def test_number_conversions_and_ranges() -> None:
    for s in ("12", "-3", " 4 ", "x", "1.5"):
        check("aten::Int.str", int, s)
        check("aten::Float.str", float, s)
    check("aten::Float.str", float, "inf")
    for x, y in ((1, 2.5), (True, 3), (0.5, False)):
        q = f"aten::Complex.{type(x).__name__}_{type(y).__name__}"
        check(q, complex, x, y)
    for lo, hi, step in ((0, 10, 3), (10, 0, -3), (5, 5, 1), (-4, 7, 2), (0, 3, 0)):
        check("aten::__range_length", lambda a, b, c: len(range(a, b, c)), lo, hi, step)
    check("aten::__derive_index", lambda i, start, step: start + i * step, 3, 10, -2)
    check("prim::rangelist", lambda n: list(range(n)), 4)
    check("aten::ldexp", math.ldexp, 0.75, 3)
    for t in ("int", "float", "bool", "complex"):
        check(f"aten::tensor.{t}", torch.tensor, POOL[t][0])
        check(f"aten::as_tensor.{t}", torch.as_tensor, POOL[t][0])
    check("aten::tensor.float", lambda v, d: torch.tensor(v, dtype=d), 2.5, torch.float64)


def test_implicit_tensor_conversions() -> None:
    check("aten::IntImplicit", lambda t: int(t.item()), torch.tensor(3))
    check("aten::FloatImplicit", lambda t: float(t.item()), torch.tensor(2.5))
    check("aten::ComplexImplicit", lambda t: complex(t.item()), torch.tensor(1 + 1j))
    with pytest.raises(kiln.KilnRuntimeError, match="dimension"):
        kiln.ScriptFunction("f", _graph_for(registry.get("aten::IntImplicit"), (torch.ones(2),), 0))(torch.ones(2))
    with pytest.raises(kiln.KilnRuntimeError, match="integral"):
        kiln.ScriptFunction("f", _graph_for(registry.get("aten::IntImplicit"), (torch.tensor(1.5),), 0))(
            torch.tensor(1.5))


def test_is_and_not() -> None:
    check("aten::__is__", operator.is_, None, None)
    check("aten::__is__", operator.is_, 3, None)
    check("aten::__isnot__", operator.is_not, "a", None)


def test_min_max_of_lists() -> None:
    for t, values in (("int", [[3, 1, 2], [], [5]]), ("float", [[0.5, -1.0], [float("nan"), 1.0]]),
                      ("bool", [[True, False]])):
        for op, fn in (("min", min), ("max", max)):
            for v in values:
                check(f"prim::{op}.self_{t}", fn, v)
                check(f"prim::{op}.{t}_list", fn, v, v[::-1])


# -- lists ------------------------------------------------------------------------------------------

def _mutating(method: str) -> Callable[..., Any]:
    """Python's ``l.method(*rest)``, returning what the TorchScript op returns (None or ``l``)."""
    def ref(lst: Any, *rest: Any) -> Any:
        return getattr(lst, method)(*rest)
    return ref


def _returning_self(method: str) -> Callable[..., Any]:
    def ref(lst: Any, *rest: Any) -> Any:
        getattr(lst, method)(*rest)
        return lst
    return ref


def _set_item(c: Any, k: Any, v: Any) -> Any:
    c[k] = v
    return c


def _delete(c: Any, k: Any) -> None:
    del c[k]


def _iadd(a: list[Any], b: list[Any]) -> list[Any]:
    a += b
    return a


def _imul(a: list[Any], n: int) -> list[Any]:
    a *= n
    return a


LIST_CASES: list[tuple[str, Callable[..., Any], list[tuple[Any, ...]]]] = [
    ("aten::len.t", len, [([1, 2, 3],), ([],)]),
    ("aten::len.any", len, [([1, "a"],)]),
    ("aten::__getitem__.t", operator.getitem, [([1, 2, 3], 1), ([1, 2, 3], -1), ([1], 5)]),
    ("aten::select.t", operator.getitem, [(["a", "b"], 0)]),
    ("aten::_set_item.t", _set_item, [([1, 2, 3], 0, 9), ([1, 2], -1, 0), ([1], 3, 0)]),
    ("aten::append.t", _returning_self("append"), [([1, 2], 3), ([[1]], [2])]),
    ("aten::extend.t", _mutating("extend"), [([1], [2, 3])]),
    ("aten::insert.t", _mutating("insert"), [([1, 2], 1, 7), ([1, 2], -5, 7), ([], 3, 1)]),
    ("aten::pop.t", _mutating("pop"), [([1, 2, 3],), ([1, 2, 3], 0), ([],), ([1], 4)]),
    ("aten::clear.t", _mutating("clear"), [([1, 2],)]),
    ("aten::Delete.t", _delete, [([1, 2, 3], 1), ([1], 2)]),
    ("aten::reverse.t", _mutating("reverse"), [([1, 2, 3],)]),
    ("aten::sort.any", lambda lst, r=False: lst.sort(reverse=r), [([(2, "b"), (1, "a")],), ([3, 1, 2], True)]),
    ("aten::sorted.any", sorted, [([(2, "b"), (1, "a")],)]),
    ("aten::copy.t", list.copy, [([1, [2]],)]),
    ("aten::list.t", list, [([1, 2],)]),
    ("aten::list", list, [("abc",)]),
    ("aten::add.t", operator.add, [([1], [2, 3])]),
    ("aten::add_.t", _iadd, [([1], [2, 3])]),
    ("aten::mul.left_t", operator.mul, [([1, 2], 3), ([1], 0), ([1], -2)]),
    ("aten::mul.right_", operator.mul, [(2, [1, 2])]),
    ("aten::mul_.t", _imul, [([1, 2], 2)]),
    ("aten::slice.t", lambda lst, a=None, b=None, c=1: lst[a:b:c],
     [([0, 1, 2, 3, 4], 1, 4), ([0, 1, 2, 3, 4], None, None, -2), ([0, 1, 2], 1), ([0, 1], None, None, 0)]),
    ("aten::sum.int", sum, [([1, 2, 3],), ([],)]),
    ("aten::sum.float", lambda v: float(sum(v)), [([0.1, 0.2, 0.3],), ([],)]),
    ("aten::sum.bool", sum, [([True, True, False],)]),
    ("aten::sum.complex", sum, [([1j, 2.0 + 0j],)]),
    ("aten::any.str", any, [(["", "a"],), ([""],)]),
    ("aten::any.int", any, [([0, 0],), ([0, 3],)]),
    ("aten::all.float", all, [([1.0, 0.0],), ([],)]),
    ("aten::all.bool", all, [([True, True],)]),
    ("aten::__contains__.int_list", lambda lst, x: x in lst, [([1, 2], 2), ([1, 2], 5)]),
    ("aten::__contains__.str_list", lambda lst, x: x in lst, [(["a"], "a")]),
    ("aten::__contains__.float_list", lambda lst, x: x in lst, [([1.5], 1.5), ([float("nan")], float("nan"))]),
    ("aten::eq.int_list", operator.eq, [([1, 2], [1, 2]), ([1], [1, 2])]),
    ("aten::ne.str_list", operator.ne, [(["a"], ["b"])]),
    ("aten::eq.float_list", operator.eq, [([1.0, float("nan")], [1.0, float("nan")])]),
    ("aten::eq.Tensor_list", operator.eq, [([torch.tensor(1.0)], [torch.tensor(1.0)]),
                                           ([torch.ones(2)], [torch.ones(2)])]),
]
for _t, _vals, _absent in (("int", ([3, 1, 2, 1], 1), 99), ("float", ([2.5, -1.0, 2.5], 2.5), 9.5),
                           ("bool", ([True, True], False), False), ("str", (["b", "a", "b"], "b"), "zz")):
    LIST_CASES += [
        (f"aten::remove.{_t}", _mutating("remove"), [_vals, (_vals[0], _absent)]),
        (f"aten::index.list_{_t}", _mutating("index"), [_vals]),
        (f"aten::count.{_t}", _mutating("count"), [_vals]),
        (f"aten::sort.{_t}", lambda lst, r=False: lst.sort(reverse=r), [(_vals[0],), (_vals[0], True)]),
        (f"aten::sorted.{_t}", sorted, [(_vals[0],)]),
    ]


@pytest.mark.parametrize(("qualified", "reference", "cases"), LIST_CASES, ids=[c[0] for c in LIST_CASES])
def test_list_ops(qualified: str, reference: Callable[..., Any], cases: list[tuple[Any, ...]]) -> None:
    for args in cases:
        check(qualified, reference, *args)


def test_tensor_list_ops_use_identity_and_values() -> None:
    a, b = torch.tensor([1.0]), torch.tensor([2.0])
    check("aten::count.Tensor", _mutating("count"), [a, b, a], a)
    check("aten::index.list_Tensor", _mutating("index"), [b, a], a)
    check("aten::remove.Tensor", _mutating("remove"), [b, a], a)
    check("aten::sort.Tensor", lambda lst, r=False: lst.sort(reverse=r), [b, a])


# -- dicts ------------------------------------------------------------------------------------------

def _dict_cases(k1: Any, k2: Any) -> list[tuple[str, Callable[..., Any], list[tuple[Any, ...]]]]:
    d = {k1: 1.5, k2: -2.0}
    return [
        ("len.Dict_{K}", len, [(d,), ({},)]),
        ("__getitem__.Dict_{K}", operator.getitem, [(d, k1), ({}, k1)]),
        ("_set_item.{K}", lambda c, k, v: c.__setitem__(k, v), [(d, k1, 9.0), (d, k2, 0.5)]),
        ("keys.{K}", lambda c: list(c.keys()), [(d,)]),
        ("values.{K}", lambda c: list(c.values()), [(d,)]),
        ("items.{K}", lambda c: list(c.items()), [(d,)]),
        ("get.{K}", lambda c, k: c.get(k), [(d, k1), ({}, k1)]),
        ("get.default_{K}", lambda c, k, v: c.get(k, v), [(d, k1, 0.0), ({}, k1, 0.0)]),
        ("setdefault.{K}", lambda c, k, v: c.setdefault(k, v), [(d, k1, 0.0), ({k2: 1.0}, k1, 0.0)]),
        ("pop.Dict_{K}", lambda c, k: c.pop(k), [(d, k1), ({}, k1)]),
        ("pop.Dict_default_{K}", lambda c, k, v: c.pop(k, v), [(d, k2, 0.0), ({}, k1, 0.0)]),
        ("popitem.{K}", lambda c: c.popitem(), [(d,), ({},)]),
        ("update.{K}", lambda c, o: c.update(o), [(d, {k1: 3.0}), ({}, d)]),
        ("clear.{K}", lambda c: c.clear(), [(d,)]),
        ("copy.Dict_{K}", lambda c: c.copy(), [(d,)]),
        ("__contains__.{K}", lambda c, k: k in c, [(d, k1), ({}, k1)]),
        ("Delete.Dict_{K}", _delete, [(d, k1), ({}, k1)]),
        ("dict.{K}", dict, [([(k1, 1.0), (k2, 2.0), (k1, 3.0)],)]),
        ("dict.Dict_{K}", dict, [(d,)]),
    ]


@pytest.mark.parametrize(("key", "k1", "k2"), [("str", "a", "b"), ("int", 3, -1), ("bool", True, False),
                                                ("float", 1.5, -0.0), ("complex", 1j, 2 + 0j)])
def test_dict_ops(key: str, k1: Any, k2: Any) -> None:
    for template, reference, cases in _dict_cases(k1, k2):
        for args in cases:
            check("aten::" + template.replace("{K}", key), reference, *args)


def test_dict_ops_with_tensor_keys() -> None:
    a, b = torch.ones(1), torch.zeros(1)
    check("aten::__getitem__.Dict_Tensor", operator.getitem, {a: 1, b: 2}, a)
    check("aten::__contains__.Tensor", lambda c, k: k in c, {a: 1}, b)
    check("aten::dict", dict)


# -- strings ----------------------------------------------------------------------------------------

STR_CASES: list[tuple[str, Callable[..., Any], list[tuple[Any, ...]]]] = [
    ("aten::len.str", len, [("héllo",), ("",)]),
    ("aten::__getitem__.str", operator.getitem, [("abc", 1), ("abc", -1), ("abc", 3)]),
    ("prim::StringIndex", operator.getitem, [("abc", 0)]),
    ("aten::slice.str", lambda s, a=None, b=None, c=1: s[a:b:c], [("abcdef", 1, 4), ("abcdef", None, None, -1)]),
    ("aten::add.str", operator.add, [("ab", "cd")]),
    ("aten::eq.str", operator.eq, [("a", "a"), ("a", "b")]),
    ("aten::lt.str", operator.lt, [("a", "b"), ("b", "a")]),
    ("aten::split.str", lambda s, sep=None, m=-1: s.split(sep, m),
     [("a,b,,c", ","), ("  a  b\tc\n",), ("a,b,c", ",", 1), ("ab", "")]),
    ("aten::rsplit", lambda s, sep=" ", m=-1: s.rsplit(sep, m), [("a b c", " ", 1), ("a  b",)]),
    ("aten::join", lambda sep, v: sep.join(v), [(",", ["a", "b"]), ("", [])]),
    ("aten::replace", lambda s, a, b, m=-1: s.replace(a, b, m), [("aaaa", "a", "x", 2), ("ab", "", "-")]),
    ("aten::splitlines", lambda s, k=False: s.splitlines(k), [("a\nb\r\nc",), ("a\nb\n", True)]),
    ("aten::zfill", str.zfill, [("-12", 5), ("7", 3)]),
    ("aten::expandtabs", lambda s, n=8: s.expandtabs(n), [("a\tbc\td",), ("a\tb", 4)]),
    ("aten::partition", str.partition, [("a=b=c", "="), ("abc", "=")]),
    ("aten::rpartition", str.rpartition, [("a=b=c", "=")]),
    ("aten::ord", ord, [("A",), ("é",), ("ab",)]),
    ("aten::chr", chr, [(65,), (300,), (-1,)]),
    ("aten::hex", hex, [(255,), (-5,)]),
    ("aten::bin", bin, [(5,)]),
    ("aten::oct", oct, [(8,)]),
    ("aten::str", str, [(1.0,), (0.1,), ([1.5, "a"],), ((1, "x"),), ({"k": 2.0},), (None,), (True,)]),
    ("aten::format", lambda f, *a: f.format(*a),
     [("{} and {}", 1.0, "x"), ("{:.2f}|{:>4}|{:x}", 2.0 / 3.0, 7, 255), ("{0}{0}", "ab"), ("{}", [1, 2])]),
    ("aten::percentFormat", lambda f, v: f % v, [("%s-%d-%.1f", ("a", 3, 2.25)), ("%s", 1.5), ("%d", "x")]),
    ("aten::strip", lambda s, c=" \n\t\f\v": s.strip(c), [("\r x \x0b",), ("xxaxx", "x")]),
    ("aten::lstrip", lambda s, c=" \n\t\f\v": s.lstrip(c), [("  a ",)]),
    ("aten::rstrip", lambda s, c=" \n\t\f\v": s.rstrip(c), [("  a \n",), ("ayy", "y")]),
    ("aten::center", lambda s, w, f=" ": s.center(w, f), [("abc", 6, "*"), ("abc", 7)]),
    ("aten::ljust", lambda s, w, f=" ": s.ljust(w, f), [("abc", 5)]),
    ("aten::rjust", lambda s, w, f=" ": s.rjust(w, f), [("abc", 5, "0")]),
    ("aten::find", lambda s, x, a=0: s.find(x, a), [("banana", "an"), ("banana", "an", 2), ("banana", "z")]),
    ("aten::rfind", lambda s, x, a=0: s.rfind(x, a), [("banana", "an")]),
    ("aten::index.str", lambda s, x, a=0: s.index(x, a), [("banana", "n"), ("banana", "z")]),
    ("aten::rindex", lambda s, x, a=0: s.rindex(x, a), [("banana", "n")]),
    ("aten::count", lambda s, x, a=0: s.count(x, a), [("banana", "a"), ("banana", "a", 2), ("ab", "")]),
    ("aten::startswith", lambda s, x, a=0: s.startswith(x, a), [("banana", "ba"), ("banana", "an", 1)]),
    ("aten::endswith", lambda s, x, a=0: s.endswith(x, a), [("banana", "na"), ("banana", "x")]),
]
STR_CASES += [(f"aten::{m}", getattr(str, m), [("Hello World",), ("abc1",), ("",), ("ÀB½ x",)])
              for m in ("lower upper title capitalize swapcase isdigit isalpha isalnum isspace islower isupper "
                        "istitle isdecimal isnumeric isidentifier isprintable").split()]


@pytest.mark.parametrize(("qualified", "reference", "cases"), STR_CASES, ids=[c[0] for c in STR_CASES])
def test_string_ops(qualified: str, reference: Callable[..., Any], cases: list[tuple[Any, ...]]) -> None:
    for args in cases:
        check(qualified, reference, *args)


def test_negative_end_follows_torchscript() -> None:
    """``end=-1`` (the schema default) means the end of the string, ``-2`` one before it."""
    cases = [("banana", "a", 0, -1), ("banana", "a", 0, -2), ("banana", "na", 1, -3), ("abc", "c", 0, 2)]
    for s, sub, start, end in cases:
        cut = len(s) + end + 1 if end < 0 else end
        check("aten::find", lambda *a, c=cut: a[0].find(a[1], a[2], c), s, sub, start, end)
        check("aten::count", lambda *a, c=cut: a[0].count(a[1], a[2], c), s, sub, start, end)
        check("aten::endswith", lambda *a, c=cut: a[0].endswith(a[1], a[2], c), s, sub, start, end)
        if TS_SCHEMAS:
            assert registry.get("aten::find").impl(s, sub, start, end) == torch.ops.aten.find(s, sub, start, end)


# -- prims ------------------------------------------------------------------------------------------

def test_print_warn_and_casts(capsys: pytest.CaptureFixture[str]) -> None:
    check("prim::Print", lambda *a: print(*a), "value:", 1, 2.5, [1.0], torch.ones(1))
    out = capsys.readouterr().out
    assert out == 3 * "value: 1 2.5 [1.0] tensor([1.])\n"   # Python, generated code, the interpreter
    g = Graph()
    b = Builder(g)
    b.op("aten::warn", [b.constant("careful")])
    with pytest.warns(UserWarning, match="careful"):
        kiln.ScriptFunction("f", g)()
    check("prim::unchecked_cast", lambda x: x, [1, 2])
    check("prim::Uninitialized", lambda: None)
    check("aten::device", torch.device, "cpu")
    check("aten::is_grad_enabled", torch.is_grad_enabled)
    check("aten::is_autocast_enabled", torch.is_autocast_enabled)
    check("aten::get_autocast_dtype", torch.get_autocast_dtype, "cpu")
    with torch.no_grad():
        check("aten::is_grad_enabled", torch.is_grad_enabled)
    assert not registry.get("aten::is_grad_enabled").pure
    check("aten::device.with_index", torch.device, "cpu", 0)


@pytest.mark.parametrize("attr", ["is_cuda", "is_cpu", "is_meta", "is_sparse", "is_quantized", "is_nested",
                                  "layout", "requires_grad", "data", "grad", "itemsize", "nbytes"])
def test_tensor_attributes(attr: str) -> None:
    x = torch.ones(2, requires_grad=True)
    (x * 2).sum().backward()
    check(f"prim::{attr}", lambda t: getattr(t, attr), x)


def test_device_attributes() -> None:
    check("prim::type", lambda d: d.type, torch.device("cpu"))
    check("prim::index", lambda d: d.index, torch.device("cpu", 0))


# -- overload resolution and IR text -------------------------------------------------------------------

def test_overloads_resolve_by_argument_types() -> None:
    assert resolve_overload("aten::add", [IntType, FloatType], 1).schema.overload == "int_float"
    assert resolve_overload("aten::add", [StrType, StrType], 1).schema.overload == "str"
    assert resolve_overload("aten::add", [ListType(IntType), ListType(IntType)], 1).schema.overload == "t"
    assert resolve_overload("aten::len", [DictType(IntType, TensorType())], 1).schema.overload == "Dict_int"
    assert resolve_overload("aten::len", [ListType(IntType)], 1).schema.overload == "t"
    assert resolve_overload("prim::min", [ListType(FloatType)], 1).schema.overload == "self_float"
    assert resolve_overload("aten::__getitem__", [StrType, IntType], 1).schema.overload == "str"
    assert resolve_overload("aten::eq", [ListType(StrType), ListType(StrType)], 1).schema.overload == "str_list"
    assert resolve_overload("aten::Int", [TensorType()], 1).schema.overload == "Tensor"


def test_ir_text_with_builtins_round_trips_and_runs() -> None:
    text = """graph(%s : str,
      %d : Dict(str, int),
      %l : int[]):
  %c : str = prim::Constant[value=","]()
  %parts : str[] = aten::split(%s, %c)
  %n : int = aten::len(%parts)
  %k : int = aten::__getitem__(%d, %s)
  %t : int = aten::add(%n, %k)
  %l2 : int[] = aten::append(%l, %t)
  %m : int = prim::max(%l2)
  %r : float = aten::pow(%m, %k)
  return (%r, %l2)
"""
    g = parse_graph(text)
    verify(g)
    qualified = [n.op.schema.qualified for n in g.nodes if n.op is not None]
    assert qualified == ["aten::split.str", "aten::len.t", "aten::__getitem__.Dict_str", "aten::add.int",
                         "aten::append.t", "prim::max.self_int", "aten::pow.int"]

    def python(s: str, d: dict[str, int], lst: list[int]) -> tuple[float, list[int]]:
        t = len(s.split(",")) + d[s]
        lst.append(t)
        return float(max(lst) ** d[s]), lst
    args = ("a,b", {"a,b": 2}, [1, 9])
    for run in (kiln.ScriptFunction("f", g), lambda *a: interpret(g, a)):
        assert same(run(*copy.deepcopy(args)), python(*copy.deepcopy(args)))


# -- .code, with TorchScript as the oracle -------------------------------------------------------------

_PROGRAMS = '''
import math
import warnings
from typing import Dict, List, Optional, Tuple
import torch
from torch import Tensor


def lists(l: List[int], x: Tensor) -> Tuple[List[int], int, int, bool, int]:
    l.append(3)
    l.insert(0, 9)
    v = l.pop()
    l.extend([4, 5])
    del l[0]
    l.sort()
    s = sorted(l)
    l[0] = 7
    return l[1:3], l.index(4), len(s), 5 in l, l[x]


def dicts(d: Dict[str, int], k: str) -> Tuple[List[str], Optional[int], int, bool]:
    d["z"] = 1
    g = d.get(k)
    p = d.pop("z", 3)
    return list(d.keys()), g, d.setdefault(k, 0), k in d


def strings(s: str, a: int) -> Tuple[str, List[str], int, str, str]:
    return s.upper(), s.split(","), s.find("b"), str(a), "{} and {}".format(s, a)


def numbers(a: int, b: float, x: Tensor) -> Tuple[int, float, int, float, bool]:
    return math.floor(b), math.sqrt(b), abs(a), max(b, x), math.isnan(b)


def loops(n: int, m: int) -> List[int]:
    out: List[int] = []
    for i in range(m, n, 2):
        out.append(i)
    warnings.warn("looped")
    return out
'''

_CALLS = {
    "lists": ([3, 1, 4], torch.tensor(1)),
    "dicts": ({"a": 1, "b": 2}, "b"),
    "strings": ("a,b,c", 4),
    "numbers": (-3, 2.25, torch.tensor(7.5)),
    "loops": (9, 2),
}


@pytest.fixture(scope="module")
def programs(tmp_path_factory: pytest.TempPathFactory) -> ModuleType:
    import importlib.util
    path = tmp_path_factory.mktemp("builtins") / "builtin_programs.py"
    path.write_text(_PROGRAMS)
    spec = importlib.util.spec_from_file_location("builtin_programs", path)
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


@pytest.mark.parametrize("name", list(_CALLS))
def test_code_matches_torchscript(jit: ModuleType, programs: ModuleType, name: str) -> None:
    """Kiln prints TorchScript's graph of the program as TorchScript does, and runs it (in
    generated code and in the interpreter) to what TorchScript computes.  (``.code`` compiles
    back only through an archive loader: ``torch.len`` & co. are not Python functions.)"""
    from test_pycode import code_of, from_torch
    scripted = jit.script(getattr(programs, name))
    g = from_torch(scripted.graph)
    verify(g)
    code = code_of(g, name)
    assert code == scripted.code
    args = _CALLS[name]
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        expected = scripted(*copy.deepcopy(args))
        assert same(kiln.ScriptFunction(name, g)(*copy.deepcopy(args)), expected)
        assert same(interpret(g, copy.deepcopy(args)), expected)


def test_code_of_builtin_forms() -> None:
    """Kiln's own forms where TorchScript has special ones (``str(x)``, ``sorted(l)``,
    ``annotate(int, t)``); everything else is ``torch.<op>(...)`` / ``ops.prim.<op>(...)``."""
    from test_pycode import code_of
    g = Graph()
    x, lst, t = g.add_input(IntType, "x"), g.add_input(ListType(IntType), "l"), g.add_input(TensorType(), "t")
    b = Builder(g)
    outs = [b.value("aten::str", [x], StrType), b.value("aten::sorted.int", [lst]),
            b.value("aten::IntImplicit", [t]), b.value("aten::ScalarImplicit", [t]),
            b.value("prim::min.self_int", [lst]), b.value("aten::len.t", [lst]),
            b.value("prim::is_cuda", [t]), b.value("aten::slice.t", [lst, b.constant(1)], ListType(IntType))]
    g.register_output(b.tuple(outs))
    code = code_of(g)
    assert ("(str(x), sorted(l), annotate(int, t), annotate(number, t), ops.prim.min(l), torch.len(l), "
            "ops.prim.is_cuda(t), torch.slice(l, 1))") in code


def test_scalar_results_keep_their_schema_types() -> None:
    """Where TorchScript's type differs from Python's (``int ** int`` is float, ``round`` of a
    float is a float) the schema's type wins; the value is Python's."""
    check("aten::pow.int", lambda a, b: float(a ** b), 3, 4)
    check("aten::pow.int_to_int", operator.pow, 3, 4)
    check("aten::round.float", lambda a: round(a, 0), 2.5)
    check("aten::floor.Scalar", math.floor, 2.5)
    check("aten::div.int", operator.truediv, 7, 2)
    if TS_SCHEMAS:
        for q, args in (("aten::pow.int", (3, 4)), ("aten::round.float", (2.5,)), ("aten::floor.Scalar", (2.5,)),
                        ("aten::ceil.Scalar", (2,)), ("aten::round.Scalar", (3,)), ("aten::sum.float", ([],))):
            ns, _, rest = q.partition("::")
            op, _, overload = rest.partition(".")
            theirs = getattr(getattr(getattr(torch.ops, ns), op), overload or "default")(*args)
            assert same(registry.get(q).impl(*args), theirs), q
