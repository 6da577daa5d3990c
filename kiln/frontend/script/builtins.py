"""Python's builtins in compiled code: ``range``, ``len``, ``min``, ``int``, ``print`` ...

Each entry of the table maps a Python object (``builtins.len``, ``math.sqrt``,
``torch.jit.fork``) to a function that emits what the call means in TorchScript -- usually
the builtin operator of the same name, chosen by the argument types.  A few builtins make
compile-time values instead of IR values: ``range``, ``zip`` and ``enumerate`` being iterated
(:class:`RangeVal`, :class:`ZipVal`: a trip count and the i-th element, so the loop needs no
list), and ``zip``/``enumerate`` of sequences fixed while compiling (:class:`Items`,
unrolled).  Calls that always give the same value (``torch.jit.is_scripting()``) are
constants (``CONSTANT_CALLS``).  Operators named rather than found as Python objects --
``torch.<name>`` with no such attribute, ``ops.<ns>.<name>`` in TorchScript source -- are
:class:`AtenName` objects.

The emitter looks calls up here (:meth:`~kiln.frontend.script.calls.CallMixin.call_python`);
:func:`register_builtin` adds entries (``kiln.fork``, ``kiln.wait``).
"""

from __future__ import annotations

import ast
import builtins
import math
import warnings
from collections.abc import Callable
from typing import TYPE_CHECKING, Any, Optional

import torch

from kiln.frontend.script.env import Binding, Items, ModuleVal, ObjectVal, PyObj
from kiln.ir.graph import Value
from kiln.ir.types import (
    TENSOR,
    BoolType,
    DictType,
    FloatType,
    FutureType,
    IntType,
    ListType,
    NamedTupleType,
    StrType,
    TensorType,
    TupleType,
    Type,
)

if TYPE_CHECKING:
    from kiln.frontend.script.emitter import FunctionEmitter

    Args = list[Binding]
    Kwargs = dict[str, Binding]
    BuiltinFn = Callable[[FunctionEmitter, Args, Kwargs, ast.AST], Binding]


class _Marker:
    def __init__(self, name: str) -> None:
        self.name = name

    def __repr__(self) -> str:
        return self.name


# TorchScript source's typed builtins: ``unchecked_cast(T, x)`` and ``uninitialized(T)``.
UNCHECKED_CAST = _Marker("unchecked_cast")
UNINITIALIZED = _Marker("uninitialized")


class AtenName:
    """``torch.<name>`` that is no Python attribute: an ATen builtin by name (``torch.append``);
    ``ops.<ns>.<name>`` in TorchScript source: the operator ``ns::name``."""

    def __init__(self, name: str, namespace: str = "aten") -> None:
        self.name = name
        self.namespace = namespace

    @property
    def qualified(self) -> str:
        return f"{self.namespace}::{self.name}"


class OpsNamespace:
    """``ops`` in TorchScript source text: ``ops.prim.Name`` names the operator ``prim::Name``."""

    def __init__(self, namespace: str) -> None:
        self._namespace = namespace

    def __getattr__(self, name: str) -> Any:
        if name.startswith("__"):
            raise AttributeError(name)
        if not self._namespace:
            return OpsNamespace(name)
        return AtenName(name, self._namespace)


class RangeVal:
    """``range(...)`` being iterated: the trip count and the i-th element."""

    def __init__(self, em: FunctionEmitter, start: Value, stop: Value, step: Value, simple: bool) -> None:
        self.em = em
        self.start, self.step, self.simple = start, step, simple
        if simple:
            self.trip = stop
        else:
            self.trip = em.b.value("aten::__range_length", [start, stop, step], IntType)

    def element(self, i: Value) -> Value:
        if self.simple:
            return i
        return self.em.b.value("aten::__derive_index", [i, self.start, self.step], IntType)


class ZipVal:
    """``zip``/``enumerate`` being iterated."""

    def __init__(self, trip: Value, element: Callable[[Value], Binding]) -> None:
        self.trip = trip
        self.element = element


# -- Python builtins -------------------------------------------------------------------------

def _range(em: FunctionEmitter, args: Args, kwargs: Kwargs, node: ast.AST) -> Binding:
    vals = em.values_of(args, node)
    if not 1 <= len(vals) <= 3 or any(v.type != IntType for v in vals):
        raise em.fail(node, "range() takes 1 to 3 int arguments")
    if len(vals) == 1:
        return RangeVal(em, em.b.constant(0), vals[0], em.b.constant(1), True)
    step = vals[2] if len(vals) == 3 else em.b.constant(1)
    return RangeVal(em, vals[0], vals[1], step, False)


def _enumerate(em: FunctionEmitter, args: Args, kwargs: Kwargs, node: ast.AST) -> Binding:
    inner = args[0]
    items = em.unrolled_items(inner, node) if not isinstance(inner, (RangeVal, ZipVal)) else None
    start = em.to_value(args[1], node) if len(args) > 1 else em.b.constant(0)
    if items is not None:
        k = em.constant_of(start)
        return Items(tuple(Items((em.b.constant(k + j), it)) for j, it in enumerate(items)))
    trip, element = em.iteration(inner, node)

    def elem(i: Value) -> Binding:
        idx = i if em.constant_of(start) == 0 else em.b.value("aten::add.int", [i, start], IntType)
        return Items((idx, element(i)))
    return ZipVal(trip, elem)


def _zip(em: FunctionEmitter, args: Args, kwargs: Kwargs, node: ast.AST) -> Binding:
    unrolled = [em.unrolled_items(a, node) if not isinstance(a, (RangeVal, ZipVal)) else None for a in args]
    if all(u is not None for u in unrolled):
        n = min(len(u) for u in unrolled if u is not None)
        return Items(tuple(Items(tuple(u[j] for u in unrolled if u is not None)) for j in range(n)))
    iters = [em.iteration(a, node) for a in args]
    trip = iters[0][0]
    for t, _ in iters[1:]:
        trip = em.b.value("prim::min.int", [trip, t], IntType)

    def elem(i: Value) -> Binding:
        return Items(tuple(e(i) for _, e in iters))
    return ZipVal(trip, elem)


def _len(em: FunctionEmitter, args: Args, kwargs: Kwargs, node: ast.AST) -> Binding:
    if isinstance(args[0], Items):
        return em.b.constant(len(args[0].items))
    if isinstance(args[0], ModuleVal):
        return em.b.constant(len(args[0].info.subs))
    if isinstance(args[0], ObjectVal):
        return em.comp.call_object_method(em, args[0], "__len__", [], {}, node)
    v = em.to_value(args[0], node)
    if isinstance(v.type, (TupleType, NamedTupleType)):
        return em.b.constant(len(v.type.elems))
    if isinstance(v.type, TensorType):
        return em.b.value("aten::len.Tensor", [v], IntType)
    return em.op_value("aten::len", [v], {}, node)


def _minmax(which: str) -> BuiltinFn:
    def fn(em: FunctionEmitter, args: Args, kwargs: Kwargs, node: ast.AST) -> Binding:
        if set(kwargs) == {"key"} and len(args) == 1:
            return em.comp.sorted_by_key(em, args[0], kwargs, node, pick=which)
        if kwargs:
            raise em.fail(node, f"{which}() with default= is not supported; test for an empty "
                                "sequence first")
        if len(args) == 1 and isinstance(args[0], Items):
            args = list(args[0].items)
        vals = em.values_of(args, node)
        if len(vals) == 1:
            v = vals[0]
            if isinstance(v.type, TensorType):
                return em.op_value(f"aten::{which}", [v], {}, node)
            return em.op_value(f"prim::{which}", [v], {}, node)
        if all(isinstance(v.type, TensorType) for v in vals):
            out = vals[0]
            for v in vals[1:]:
                out = em.op_value("aten::maximum" if which == "max" else "aten::minimum", [out, v], {}, node)
            return out
        out = vals[0]
        for v in vals[1:]:
            out = em.op_value(f"prim::{which}", [out, v], {}, node)
        return out
    return fn


def _simple(op: str, arity: Optional[int] = None) -> BuiltinFn:
    def fn(em: FunctionEmitter, args: Args, kwargs: Kwargs, node: ast.AST) -> Binding:
        vals = em.values_of(args, node)
        kw = {k: em.to_value(v, node) for k, v in kwargs.items()}
        if arity is not None and len(vals) != arity:
            raise em.fail(node, f"{op.split('::')[1]}() takes {arity} argument(s)")
        return em.op_value(op, vals, kw, node)
    return fn


_ZERO: dict[Type, Any] = {IntType: 0, FloatType: 0.0, BoolType: False, StrType: ""}


def _cast(target: Type, op: str) -> BuiltinFn:
    def fn(em: FunctionEmitter, args: Args, kwargs: Kwargs, node: ast.AST) -> Binding:
        if not args:
            return em.b.constant(_ZERO[target])
        v = em.to_value(args[0], node)
        if v.type == target and len(args) == 1:
            return v
        if target == BoolType:
            return em.truth(v, node)
        if target == StrType:
            return em.op_value("aten::str", [v], {}, node)
        if isinstance(v.type, TensorType):
            return em.b.value(f"aten::{op}.Tensor", [v], target)
        return em.op_value(f"aten::{op}", em.values_of(args, node), {}, node)
    return fn


def _print(em: FunctionEmitter, args: Args, kwargs: Kwargs, node: ast.AST) -> Binding:
    if kwargs:
        raise em.fail(node, "print() with keyword arguments is not supported")
    em.b.op("prim::Print", em.values_of(args, node), [])
    return em.b.constant(None)


def _sum(em: FunctionEmitter, args: Args, kwargs: Kwargs, node: ast.AST) -> Binding:
    if isinstance(args[0], Items):
        vals = em.values_of(list(args[0].items), node)
        out = vals[0] if vals else em.b.constant(0)
        for v in vals[1:]:
            out = em.binary("add", out, v, node)
        return out
    v = em.to_value(args[0], node)
    if isinstance(v.type, TensorType):
        return em.op_value("aten::sum", [v], {}, node)
    r = em.op_value("aten::sum", [v], {}, node)
    if len(args) > 1:
        r = em.binary("add", r, em.to_value(args[1], node), node)
    return r


def _list(em: FunctionEmitter, args: Args, kwargs: Kwargs, node: ast.AST) -> Binding:
    if not args:
        lst = em.b.value("prim::ListConstruct", [], ListType(TENSOR))
        em.comp.empty_lists.add(lst)
        return lst
    items = em.unrolled_items(args[0], node) if isinstance(args[0], (Items, PyObj)) else None
    if items is not None:
        return em.b.list(em.values_of(items, node))
    if isinstance(args[0], (RangeVal, ZipVal)):
        raise em.fail(node, "list(range(...)) is not supported yet: write a list comprehension "
                            "`[i for i in range(n)]`")
    return em.op_value("aten::list", [em.to_value(args[0], node)], {}, node)


def _tuple(em: FunctionEmitter, args: Args, kwargs: Kwargs, node: ast.AST) -> Binding:
    items = em.unrolled_items(args[0], node) if args else []
    if items is None:
        raise em.fail(node, "tuple() of a sequence whose length is only known at run time is not "
                            "supported: use list(...) instead")
    return em.b.tuple(em.values_of(items, node))


def _dict(em: FunctionEmitter, args: Args, kwargs: Kwargs, node: ast.AST) -> Binding:
    if not args and not kwargs:
        d = em.b.dict([], [], DictType(StrType, TENSOR))
        em.comp.empty_lists.add(d)
        return d
    if kwargs and not args:
        keys = [em.b.constant(k) for k in kwargs]
        vals = em.values_of(list(kwargs.values()), node)
        return em.b.dict(keys, vals, DictType(StrType, vals[0].type))
    return em.op_value("aten::dict", em.values_of(args, node), {}, node)


def _sorted(em: FunctionEmitter, args: Args, kwargs: Kwargs, node: ast.AST) -> Binding:
    if "key" in kwargs:
        return em.comp.sorted_by_key(em, args[0], kwargs, node)
    v = em.to_value(args[0], node)
    out = em.op_value("aten::sorted", [v], {}, node)
    if "reverse" in kwargs:
        rev = em.to_value(kwargs["reverse"], node)
        if em.constant_of(rev) is True:
            em.op_value("aten::reverse", [out], {}, node)
    return out


def _reversed(em: FunctionEmitter, args: Args, kwargs: Kwargs, node: ast.AST) -> Binding:
    items = em.unrolled_items(args[0], node) if isinstance(args[0], (Items,)) else None
    if items is not None:
        return Items(tuple(reversed(items)))
    v = em.to_value(args[0], node)
    out = em.op_value("aten::copy", [v], {}, node)
    em.op_value("aten::reverse", [out], {}, node)
    return out


def _abs(em: FunctionEmitter, args: Args, kwargs: Kwargs, node: ast.AST) -> Binding:
    v = em.to_value(args[0], node)
    if isinstance(v.type, TensorType):
        return em.op_value("aten::abs", [v], {}, node)
    return em.op_value("prim::abs", [v], {}, node)


def _round(em: FunctionEmitter, args: Args, kwargs: Kwargs, node: ast.AST) -> Binding:
    vals = em.values_of(args, node)
    if isinstance(vals[0].type, TensorType):
        return em.op_value("aten::round", vals, {}, node)
    if len(vals) == 1:
        r = em.op_value("aten::round", vals, {}, node)
        return em.op_value("aten::Int", [r], {}, node) if r.type == FloatType else r
    return em.b.value("prim::kiln_round_ndigits", vals, vals[0].type)


def _anyall(which: str) -> BuiltinFn:
    def fn(em: FunctionEmitter, args: Args, kwargs: Kwargs, node: ast.AST) -> Binding:
        if isinstance(args[0], Items):
            vals = [em.truth(i, node) for i in args[0].items]
            out = em.b.constant(which == "all")
            for v in vals:
                out = em.op_value("aten::__and__" if which == "all" else "aten::__or__", [out, v], {}, node)
            return out
        v = em.to_value(args[0], node)
        return em.op_value(f"aten::{which}", [v], {}, node)
    return fn


def _with_enter(em: FunctionEmitter, args: Args, kwargs: Kwargs, node: ast.AST) -> Binding:
    """``with torch.no_grad():`` / ``enable_grad()``: the grad mode before, for the exit call."""
    ctx = args[0]
    if isinstance(ctx, PyObj) and isinstance(ctx.obj, (torch.no_grad, torch.enable_grad)):
        prev = em.b.value("aten::is_grad_enabled", [], BoolType)
        em.b.op("aten::_set_grad_enabled", [em.b.constant(isinstance(ctx.obj, torch.enable_grad))], [])
        return prev
    raise em.fail(node, "only `with torch.no_grad():` and `with torch.enable_grad():` are supported")


def _with_exit(em: FunctionEmitter, args: Args, kwargs: Kwargs, node: ast.AST) -> Binding:
    prev = em.to_value(args[0], node)
    em.b.op("aten::_set_grad_enabled", [prev], [])
    return em.b.constant(None)


def _warn(em: FunctionEmitter, args: Args, kwargs: Kwargs, node: ast.AST) -> Binding:
    msg = em.to_value(args[0], node)
    em.op_value("aten::warn", [msg], {}, node)
    return em.b.constant(None)


def _torch_assert(em: FunctionEmitter, args: Args, kwargs: Kwargs, node: ast.AST) -> Binding:
    cond = em.truth(args[0], node)
    n = em.b.if_(cond)
    with em.b.at_end(n.blocks[1]):
        msg = em.to_value(args[1], node) if len(args) > 1 else em.b.constant("assertion failed")
        em._raise_value(msg, "AssertionError")
    return em.b.constant(None)


def _fork(em: FunctionEmitter, args: Args, kwargs: Kwargs, node: ast.AST) -> Binding:
    result = em.call_with(args[0], list(args[1:]), kwargs, node)
    return em.comp.make_future(em, em.to_value(result, node))


def _wait(em: FunctionEmitter, args: Args, kwargs: Kwargs, node: ast.AST) -> Binding:
    fut = em.to_value(args[0], node)
    if not isinstance(fut.type, FutureType):
        raise em.fail(node, f"wait() needs a Future, got {fut.type.annotation()}")
    return em.op_value("aten::wait", [fut], {}, node)


def _divmod(em: FunctionEmitter, args: Args, kwargs: Kwargs, node: ast.AST) -> Binding:
    return em.op_value("aten::divmod", em.values_of(args, node), {}, node)


# torch.jit's stubs do not re-export these two (they live in torch._jit_internal / torch.jit._trace).
CONSTANT_CALLS: dict[Any, Any] = {
    torch.jit.is_scripting: True, torch.jit.is_tracing: False,  # type: ignore[attr-defined]
    torch._C._get_tracing_state: None,
}

BUILTINS: dict[Any, BuiltinFn] = {
    builtins.range: _range, builtins.enumerate: _enumerate, builtins.zip: _zip, builtins.len: _len,
    builtins.min: _minmax("min"), builtins.max: _minmax("max"), builtins.abs: _abs,
    builtins.sum: _sum, builtins.all: _anyall("all"), builtins.any: _anyall("any"),
    builtins.print: _print, builtins.round: _round, builtins.divmod: _divmod,
    builtins.sorted: _sorted, builtins.reversed: _reversed, builtins.list: _list,
    builtins.tuple: _tuple, builtins.dict: _dict,
    builtins.int: _cast(IntType, "Int"), builtins.float: _cast(FloatType, "Float"),
    builtins.bool: _cast(BoolType, "Bool"), builtins.str: _cast(StrType, "str"),
    builtins.ord: _simple("aten::ord", 1), builtins.chr: _simple("aten::chr", 1),
    builtins.hex: _simple("aten::hex", 1), builtins.bin: _simple("aten::bin", 1),
    builtins.oct: _simple("aten::oct", 1),
    warnings.warn: _warn, torch._assert: _torch_assert,
    torch.jit.fork: _fork, torch.jit.wait: _wait,
    "__kiln_with_enter__": _with_enter, "__kiln_with_exit__": _with_exit,
}
for _name in ("sqrt", "log", "log10", "log1p", "exp", "expm1", "sin", "cos", "tan", "asin", "acos",
              "atan", "sinh", "cosh", "tanh", "asinh", "acosh", "atanh", "erf", "erfc", "gamma",
              "lgamma", "fabs", "floor", "ceil", "trunc", "isnan", "isinf", "isfinite", "degrees",
              "radians", "atan2", "copysign", "fmod", "gcd", "factorial", "pow", "hypot", "log2",
              "remainder", "modf", "frexp", "ldexp", "comb", "perm", "prod", "dist"):
    if hasattr(math, _name):
        BUILTINS[getattr(math, _name)] = _simple(f"aten::{_name}")
BUILTINS[math.log] = lambda em, a, k, n: em.op_value("aten::log", em.values_of(a, n), {}, n)


def register_builtin(obj: Any, fn: BuiltinFn) -> None:
    """Compile calls of ``obj`` with ``fn`` (``kiln.fork`` is ``torch.jit.fork``'s builtin)."""
    BUILTINS[obj] = fn


