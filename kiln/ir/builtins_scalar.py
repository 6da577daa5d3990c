"""TorchScript's builtins on numbers: arithmetic, comparisons, ``math`` and conversions.

Each family is one table row listing TorchScript's overloads as ``overload:result`` pairs,
where the overload name says the operand types (``int_float`` is ``(int a, float b)``, ``-``
the default overload on ``Scalar``).  See :mod:`kiln.ir.builtins` for the semantics rules:
Python's results and exceptions, typed as the schema says.
"""

from __future__ import annotations

import cmath
import math
import operator
from collections.abc import Callable
from typing import Any, Optional

import torch

from kiln.errors import KilnRuntimeError
from kiln.ir.builtins import Emit, builtin, call, named

Number = Any   # an int, float or complex, known only at run time

# operand types for each overload name
_OPERANDS: dict[str, tuple[str, ...]] = {
    "int": ("int", "int"), "float": ("float", "float"), "complex": ("complex", "complex"),
    "bool": ("bool", "bool"), "-": ("Scalar", "Scalar"), "Scalar_Scalar": ("Scalar", "Scalar"),
    "int_to_int": ("int", "int"), "str": ("str", "str"), "device": ("Device", "Device"),
    **{f"{x}_{y}": (x, y) for x in ("int", "float", "complex") for y in ("int", "float", "complex")},
}
_CLOSED = ("int:int complex:complex float:float int_complex:complex complex_int:complex "
           "float_complex:complex complex_float:complex int_float:float float_int:float -:Scalar")
_REAL2 = "int:float float:float int_float:float float_int:float"
_MIXED = "float:float int_float:float float_int:float"


def _schemas(ns_op: str, spec: str, names: str = "a b") -> list[str]:
    """Schema strings for ``spec`` ("int:int float:float ..."), arguments named ``names``."""
    out = []
    for item in spec.split():
        overload, _, ret = item.partition(":")
        types = _OPERANDS[overload]
        args = ", ".join(f"{t} {n}" for t, n in zip(types, names.split()))
        suffix = "" if overload == "-" else f".{overload}"
        out.append(f"{ns_op}{suffix}({args}) -> {ret}")
    return out


def _fn(name: str, body: Callable[..., Any]) -> Callable[..., Any]:
    return named(body, name, __name__)


def _binary(symbol: str) -> Emit:
    return lambda n, a: f"({a[0]} {symbol} {a[1]})"


# -- arithmetic on two numbers ---------------------------------------------------------------------

def pow_float(a: Number, b: Number) -> float:
    """``a ** b`` typed float (``aten::pow.int`` is float in TorchScript); a real power that
    Python would make complex (``(-8.0) ** (1 / 3)``) is an error, as in ``math.pow``."""
    r = a ** b
    if isinstance(r, complex):
        raise ValueError(f"{a!r} ** {b!r} is not a real number")
    return float(r)


def round_to_zero_floordiv(a: int, b: int) -> int:
    """Integer division rounding toward zero (C's ``/`` on ints)."""
    q = abs(a) // abs(b)
    return q if (a < 0) == (b < 0) else -q


def log_base(a: Number, b: Number) -> Number:
    """``math.log(a, b)`` (``cmath.log`` for complex operands)."""
    if isinstance(a, complex) or isinstance(b, complex):
        return cmath.log(a, b)
    return math.log(a, b)


_BINARY_ROWS: tuple[tuple[str, Callable[..., Any], Optional[Emit], str], ...] = (
    ("add", operator.add, _binary("+"), _CLOSED),
    ("sub", operator.sub, _binary("-"), _CLOSED),
    ("mul", operator.mul, _binary("*"), _CLOSED),
    ("div", operator.truediv, _binary("/"), "int:float complex:complex float:float -:float"),
    ("floordiv", operator.floordiv, _binary("//"), f"int:int {_MIXED} -:Scalar"),
    ("remainder", operator.mod, _binary("%"), f"int:int {_MIXED} -:Scalar"),
    ("pow", pow_float, None, "int:float float:float int_float:float float_int:float Scalar_Scalar:float"),
    ("pow", operator.pow, _binary("**"), "complex:complex float_complex:complex complex_float:complex "
     "int_to_int:int"),
    ("__round_to_zero_floordiv", round_to_zero_floordiv, None, "int:int"),
    ("log", log_base, None, "int_int:float float_float:float complex_complex:complex int_float:float "
     "float_int:float int_complex:complex complex_int:complex float_complex:complex "
     "complex_float:complex Scalar_Scalar:float"),
    ("polar", cmath.rect, None, "int:complex float:complex int_float:complex "
     "float_int:complex Scalar_Scalar:Scalar"),
)


# -- math functions of one argument ---------------------------------------------------------

def angle(a: float) -> float:
    """The argument of a real number: 0 for non-negative values, pi for negative ones."""
    return a if a != a else (math.pi if a < 0 else 0.0)


# (op, function on reals, function on complex numbers or None); each op has .int and .float
# overloads returning float, .Scalar, and .complex where a complex function is given
_UNARY_ROWS: tuple[tuple[str, Callable[[Any], Any], Optional[Callable[[complex], Any]]], ...] = (
    ("sqrt", math.sqrt, cmath.sqrt), ("log", math.log, cmath.log), ("log10", math.log10, cmath.log10),
    ("log1p", math.log1p, None), ("exp", math.exp, cmath.exp), ("expm1", math.expm1, None),
    ("sin", math.sin, cmath.sin), ("cos", math.cos, cmath.cos), ("tan", math.tan, cmath.tan),
    ("asin", math.asin, cmath.asin), ("acos", math.acos, cmath.acos), ("atan", math.atan, cmath.atan),
    ("sinh", math.sinh, cmath.sinh), ("cosh", math.cosh, cmath.cosh), ("tanh", math.tanh, cmath.tanh),
    ("asinh", math.asinh, cmath.asinh), ("acosh", math.acosh, cmath.acosh),
    ("atanh", math.atanh, cmath.atanh), ("erf", math.erf, None), ("erfc", math.erfc, None),
    ("gamma", math.gamma, None), ("lgamma", math.lgamma, None), ("degrees", math.degrees, None),
    ("radians", math.radians, None), ("fabs", math.fabs, None), ("angle", angle, cmath.phase),
)


def _scalar_dispatch(name: str, real: Callable[..., Any],
                     cplx: Optional[Callable[..., Any]]) -> Callable[..., Any]:
    """The ``.Scalar`` overload: the typed overload's result for whichever number it gets."""
    def scalar(a: Any) -> Any:
        if isinstance(a, complex):
            if cplx is None:
                raise TypeError(f"{name}() does not take a complex number")
            return cplx(a)
        return real(a)
    return _fn(f"{name}_scalar", scalar)


def _register_unary() -> None:
    for op, real, cplx in _UNARY_ROWS:
        emit = call(f"math.{op}") if real.__module__ == "math" else None
        builtin(f"aten::{op}.int(int a) -> float", real, emit)
        builtin(f"aten::{op}.float(float a) -> float", real, emit)
        if cplx is not None:
            ret = "float" if op == "angle" else "complex"
            builtin(f"aten::{op}.complex(complex a) -> {ret}", cplx)
        builtin(f"aten::{op}.Scalar(Scalar a) -> Scalar", _scalar_dispatch(op, real, cplx))


def _register_binary() -> None:
    for op, impl, emit, spec in _BINARY_ROWS:
        for schema in _schemas(f"aten::{op}", spec):
            builtin(schema, impl, emit)


_register_unary()
_register_binary()


# -- comparisons, min/max, bitwise ----------------------------------------------------------------

_COMPARE_SPEC = {"eq": "int float int_float float_int complex float_complex complex_float - str bool device",
                 "ne": "int float int_float float_int complex float_complex complex_float - str bool device"}
_ORDER_SPEC = "int float int_float float_int - str"
_COMPARISONS: tuple[tuple[str, Callable[[Any, Any], bool], str], ...] = (
    ("eq", operator.eq, "=="), ("ne", operator.ne, "!="), ("lt", operator.lt, "<"),
    ("gt", operator.gt, ">"), ("le", operator.le, "<="), ("ge", operator.ge, ">="),
)

for _op, _fn_cmp, _sym in _COMPARISONS:
    for _schema in _schemas(f"aten::{_op}", " ".join(
            f"{k}:bool" for k in _COMPARE_SPEC.get(_op, _ORDER_SPEC).split())):
        builtin(_schema, _fn_cmp, _binary(_sym))

def min_float(a: Number, b: Number) -> float:
    """``min`` of an int and a float, typed float as the schema says (``min(-3, 2.5)`` is -3.0)."""
    return float(min(a, b))


def max_float(a: Number, b: Number) -> float:
    return float(max(a, b))


def _mixed_emit(op: str) -> Emit:
    return lambda n, a: f"float({op}({a[0]}, {a[1]}))"


for _op, _fn_mm, _mixed in (("min", min, min_float), ("max", max, max_float)):
    for _schema in _schemas(f"prim::{_op}", "int:int float:float int_float:float float_int:float -:Scalar"):
        if "_" in _schema.split("(")[0].split(".")[-1]:   # int_float, float_int
            builtin(_schema, _mixed, _mixed_emit(_op))
        else:
            builtin(_schema, _fn_mm, call(_op))
    for _t in ("int", "float", "bool"):
        builtin(f"prim::{_op}.{_t}_list({_t}[] l, {_t}[] r) -> {_t}[]", _fn_mm, call(_op))
        builtin(f"prim::{_op}.self_{_t}({_t}[] self) -> {_t}", _fn_mm, call(_op))

for _op, _fn_bit, _sym, _kinds in (("__and__", operator.and_, "&", "bool int"),
                                   ("__or__", operator.or_, "|", "bool int"),
                                   ("__xor__", operator.xor, "^", "bool int"),
                                   ("__lshift__", operator.lshift, "<<", "int"),
                                   ("__rshift__", operator.rshift, ">>", "int")):
    for _k in _kinds.split():
        builtin(f"aten::{_op}.{_k}({_k} a, {_k} b) -> {_k}", _fn_bit, _binary(_sym))

builtin("aten::__not__(bool self) -> bool", operator.not_, lambda n, a: f"(not {a[0]})")
builtin("aten::__is__(t1 self, t2 obj) -> bool", operator.is_, _binary("is"))
builtin("aten::__isnot__(t1 self, t2 obj) -> bool", operator.is_not, _binary("is not"))


# -- one-argument arithmetic, rounding and number theory -------------------------------------------

def round_float(a: float) -> float:
    """Round half to even (as Python and TorchScript do), typed float: ``round(a, 0)``."""
    return round(a, 0)


def to_float(a: Any) -> float:
    return float(a)


def round_scalar(a: Any) -> Any:
    return round_float(a) if isinstance(a, float) else float(a)


def floor_scalar(a: Any) -> int:
    return int(math.floor(a))


def ceil_scalar(a: Any) -> int:
    return int(math.ceil(a))


def range_length(lo: int, hi: int, step: int) -> int:
    """How many values ``range(lo, hi, step)`` has (``for`` loops over ranges use it)."""
    return len(range(lo, hi, step))


def derive_index(index: int, start: int, step: int) -> int:
    return start + index * step


def rangelist(n: int) -> list[int]:
    return list(range(n))


builtin("aten::neg.int(int a) -> int", operator.neg, lambda n, a: f"(-{a[0]})")
builtin("aten::neg.float(float a) -> float", operator.neg, lambda n, a: f"(-{a[0]})")
builtin("aten::neg.complex(complex a) -> complex", operator.neg, lambda n, a: f"(-{a[0]})")
builtin("aten::neg.Scalar(Scalar a) -> Scalar", operator.neg, lambda n, a: f"(-{a[0]})")
for _t, _r in (("int", "int"), ("float", "float"), ("complex", "float"), ("Scalar", "Scalar")):
    builtin(f"prim::abs.{_t}({_t} a) -> {_r}", abs, call("abs"))
builtin("aten::floor.int(int a) -> int", operator.index, lambda n, a: a[0])
builtin("aten::floor.float(float a) -> int", math.floor, call("math.floor"))
builtin("aten::floor.Scalar(Scalar a) -> Scalar", floor_scalar, call("math.floor"))
builtin("aten::ceil.int(int a) -> int", operator.index, lambda n, a: a[0])
builtin("aten::ceil.float(float a) -> int", math.ceil, call("math.ceil"))
builtin("aten::ceil.Scalar(Scalar a) -> Scalar", ceil_scalar, call("math.ceil"))
builtin("aten::round.int(int a) -> float", to_float, call("float"))
builtin("aten::round.float(float a) -> float", round_float, lambda n, a: f"round({a[0]}, 0)")
builtin("aten::round.Scalar(Scalar a) -> Scalar", round_scalar)
for _name, _impl in (("isnan", (math.isnan, cmath.isnan)), ("isinf", (math.isinf, cmath.isinf)),
                     ("isfinite", (math.isfinite, cmath.isfinite))):
    builtin(f"aten::{_name}.float(float a) -> bool", _impl[0], call(f"math.{_name}"))
    builtin(f"aten::{_name}.complex(complex a) -> bool", _impl[1])
builtin("aten::gcd.int(int a, int b) -> int", math.gcd, call("math.gcd"))
builtin("aten::factorial.int(int a) -> int", math.factorial, call("math.factorial"))
builtin("aten::ldexp(float x, int i) -> float", math.ldexp, call("math.ldexp"))
builtin("aten::modf(float a) -> (float, float)", math.modf, call("math.modf"))
builtin("aten::frexp(float a) -> (float, int)", math.frexp, call("math.frexp"))
for _op, _impl2 in (("fmod", math.fmod), ("mathremainder", math.remainder),
                    ("copysign", math.copysign), ("atan2", math.atan2)):
    _default = "Scalar_Scalar" if _op == "atan2" else "-"
    for _schema in _schemas(f"aten::{_op}", f"{_REAL2} {_default}:float"):
        builtin(_schema, _impl2, call(f"math.{_impl2.__name__}"))
for _spec in ("int:(int, int)", "float:(float, float)", "int_float:(float, float)",
              "float_int:(float, float)"):
    _k, _, _ret = _spec.partition(":")
    _ta, _tb = _OPERANDS[_k]
    builtin(f"aten::divmod.{_k}({_ta} x, {_tb} y) -> {_ret}", divmod, call("divmod"))
builtin("aten::__range_length(int lo, int hi, int step) -> int", range_length)
builtin("aten::__derive_index(int index, int start, int step) -> int", derive_index,
        lambda n, a: f"({a[1]} + {a[0]} * {a[2]})")
builtin("prim::rangelist(int n) -> int[]", rangelist, lambda n, a: f"list(range({a[0]}))")


# -- conversions ------------------------------------------------------------------------------------

def to_int(a: Any) -> int:
    return int(a)


def to_bool(a: Any) -> bool:
    return bool(a)


def to_complex(x: Any, y: Any = 0) -> complex:
    """``complex(x, y)``; tensors give their single value."""
    def value(v: Any) -> Any:
        return v.item() if isinstance(v, torch.Tensor) else v
    return complex(value(x), value(y))


def _implicit_check(t: torch.Tensor, what: str) -> None:
    if t.dim() != 0:
        raise KilnRuntimeError(f"Cannot input a tensor of dimension other than 0 as a scalar argument "
                               f"(expected {what}, got a tensor of {t.dim()} dimensions)")


def int_implicit(t: torch.Tensor) -> int:
    """A 0-dim integer tensor passed where an int is expected."""
    _implicit_check(t, "int")
    if t.is_floating_point() or t.is_complex():
        raise KilnRuntimeError(f"Cannot input a tensor of type {t.dtype} as an integral argument")
    return int(t.item())


def float_implicit(t: torch.Tensor) -> float:
    _implicit_check(t, "float")
    return float(t.item())


def complex_implicit(t: torch.Tensor) -> complex:
    _implicit_check(t, "complex")
    return complex(t.item())


def scalar_tensor(t: Any, dtype: Optional[torch.dtype] = None, device: Optional[torch.device] = None,
                  requires_grad: bool = False) -> torch.Tensor:
    """``torch.tensor(number)``: int64 for ints, the default dtype for floats, as in Python."""
    return torch.tensor(t, dtype=dtype, device=device, requires_grad=requires_grad)


def scalar_as_tensor(t: Any, dtype: Optional[torch.dtype] = None,
                     device: Optional[torch.device] = None) -> torch.Tensor:
    return torch.as_tensor(t, dtype=dtype, device=device)


for _t in ("bool", "float", "Scalar", "str"):
    builtin(f"aten::Int.{_t}({_t} a) -> int", to_int, call("int"))
for _t in ("Scalar", "int", "bool", "str"):
    builtin(f"aten::Float.{_t}({_t} a) -> float", to_float, call("float"))
for _t in ("int", "float"):
    builtin(f"aten::Bool.{_t}({_t} a) -> bool", to_bool, call("bool"))
builtin("aten::Complex.Scalar(Scalar a) -> complex", to_complex, call("complex"))
for _pair in ("int_bool bool_int float_bool bool_float float_int int_float int_int bool_bool float_float "
              "Tensor_float float_Tensor Tensor_int int_Tensor Tensor_bool bool_Tensor").split():
    _x, _, _y = _pair.partition("_")
    builtin(f"aten::Complex.{_pair}({_x} x, {_y} y) -> complex", to_complex)
builtin("aten::Complex.Tensor_Tensor(Tensor a, Tensor b) -> complex", to_complex)
builtin("aten::IntImplicit(Tensor a) -> int", int_implicit)
builtin("aten::FloatImplicit(Tensor a) -> float", float_implicit)
builtin("aten::ComplexImplicit(Tensor a) -> complex", complex_implicit)
for _t in ("bool", "float", "int", "complex"):
    builtin(f"aten::tensor.{_t}({_t} t, *, ScalarType? dtype=None, Device? device=None, "
            "bool requires_grad=False) -> Tensor", scalar_tensor)
    builtin(f"aten::as_tensor.{_t}({_t} t, *, ScalarType? dtype=None, Device? device=None) -> Tensor",
            scalar_as_tensor)
