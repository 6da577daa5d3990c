"""Resolve a torch API call to one operator overload.

Shared by every frontend.  Given the Python callable the user called (``torch.add``,
``Tensor.__add__``, ``torch._C._nn.linear`` ...) and its arguments, :func:`resolve_call`
finds the ``aten::`` operator it stands for and the overload whose schema accepts the
arguments, and returns the arguments bound to that schema (defaults filled in).

Python-level torch functions (``torch.nn.functional.relu``, ``Tensor.split`` ...) are not
operators: :func:`unchecked` gives a copy of such a function that skips its own
``__torch_function__`` check, so a frontend can run its body and see the operators it calls.
"""

from __future__ import annotations

import types
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any, Optional

import torch

from kiln.ir import prims as _prims  # noqa: F401  (registers Kiln's own operators)
from kiln.ir.ops import OpInfo, registry
from kiln.ir.types import (
    AnyType,
    BoolType,
    ComplexType,
    DeviceType,
    DictType,
    DtypeType,
    FloatType,
    GeneratorType,
    IntType,
    LayoutType,
    ListType,
    MemoryFormatType,
    NoneType,
    NumberType,
    OptionalType,
    StrType,
    TensorType,
    TupleType,
    Type,
    list_elem,
    strip_optional,
)

# Python operator methods and the ATen operator they call.  ``swap`` marks reflected forms.
_DUNDER: dict[str, tuple[str, bool]] = {
    "__add__": ("add", False), "__radd__": ("add", True), "__iadd__": ("add_", False),
    "__sub__": ("sub", False), "__isub__": ("sub_", False),
    "__mul__": ("mul", False), "__rmul__": ("mul", True), "__imul__": ("mul_", False),
    "__truediv__": ("div", False), "__itruediv__": ("div_", False),
    "__floordiv__": ("floor_divide", False), "__mod__": ("remainder", False),
    "__pow__": ("pow", False), "__rpow__": ("pow", True), "__ipow__": ("pow_", False),
    "__matmul__": ("matmul", False), "__rmatmul__": ("matmul", True),
    "__neg__": ("neg", False), "__abs__": ("abs", False), "__invert__": ("bitwise_not", False),
    "__and__": ("bitwise_and", False), "__or__": ("bitwise_or", False),
    "__xor__": ("bitwise_xor", False), "__rand__": ("bitwise_and", True),
    "__ror__": ("bitwise_or", True), "__rxor__": ("bitwise_xor", True),
    "__iand__": ("bitwise_and_", False), "__ior__": ("bitwise_or_", False),
    "__lshift__": ("__lshift__", False), "__rshift__": ("__rshift__", False),
    "__eq__": ("eq", False), "__ne__": ("ne", False), "__lt__": ("lt", False),
    "__le__": ("le", False), "__gt__": ("gt", False), "__ge__": ("ge", False),
}

# Tensor methods that are spelled differently as operators: name -> (op, extra kwargs).
_METHOD_ALIASES: dict[str, tuple[str, dict[str, Any]]] = {
    "float": ("to", {"dtype": torch.float32}), "double": ("to", {"dtype": torch.float64}),
    "half": ("to", {"dtype": torch.float16}), "bfloat16": ("to", {"dtype": torch.bfloat16}),
    "long": ("to", {"dtype": torch.int64}), "int": ("to", {"dtype": torch.int32}),
    "short": ("to", {"dtype": torch.int16}), "char": ("to", {"dtype": torch.int8}),
    "byte": ("to", {"dtype": torch.uint8}), "bool": ("to", {"dtype": torch.bool}),
    "ndimension": ("dim", {}), "nelement": ("numel", {}),
    "cpu": ("to", {"device": torch.device("cpu")}), "cuda": ("to", {"device": torch.device("cuda")}),
}


@dataclass
class Resolved:
    """A call bound to one overload: ``args`` holds one Python value per schema argument."""

    op: OpInfo
    args: list[Any]


def operator_name(func: Callable[..., Any]) -> Optional[tuple[str, bool]]:
    """The ``aten::`` name a builtin torch callable stands for, and whether args are swapped."""
    if isinstance(func, (torch._ops.OpOverload, torch._ops.OpOverloadPacket)):
        # torch.ops.<ns>.<op>[.<overload>]: already an operator, in its own namespace.
        return _dispatcher_name(func), False
    name = getattr(func, "__name__", None)
    if name is None:
        return None
    if name in _DUNDER:
        op, swap = _DUNDER[name]
        return f"aten::{op}", swap
    if isinstance(func, types.FunctionType):
        return None  # Python-level: run its body (see `unchecked`)
    return f"aten::{name}", False


def _dispatcher_name(op: Any) -> str:
    if isinstance(op, torch._ops.OpOverload):
        return str(op._schema.name)
    return str(op._qualified_op_name)


def method_alias(func: Callable[..., Any]) -> Optional[tuple[str, dict[str, Any]]]:
    name = getattr(func, "__name__", "")
    owner = getattr(func, "__objclass__", None)
    if owner is not None and issubclass(torch.Tensor, owner) and name in _METHOD_ALIASES:
        return _METHOD_ALIASES[name]
    return None


def resolve_call(name: str, args: Sequence[Any], kwargs: dict[str, Any],
                 is_traced_int: Callable[[Any], bool]) -> Optional[Resolved]:
    """Bind a call to the first overload of ``name`` that accepts it, or None.

    Overloads are tried strictly first (a Python number never stands for a Tensor), then
    leniently (numbers for floats, strings for devices), as PyTorch's argument parser does."""
    overloads = [o for o in registry.overloads(name) if not o.schema.is_vararg]
    if name == "aten::to":
        args = _to_device_args(args)
    for lenient in (False, True):
        for op in _ordered(overloads):
            bound = _bind(op, args, kwargs, lenient, is_traced_int)
            if bound is not None:
                return Resolved(op, bound)
    return None


def _to_device_args(args: Sequence[Any]) -> Sequence[Any]:
    """``x.to(device)`` means ``aten::to.device(x, device, x.dtype)``: the binding fills the dtype."""
    if len(args) >= 2 and isinstance(args[1], (torch.device, str)) and isinstance(args[0], torch.Tensor) \
            and (len(args) < 3 or not isinstance(args[2], torch.dtype)):
        return (args[0], args[1], args[0].dtype, *args[2:])
    return args


def _ordered(ops: list[OpInfo]) -> list[OpInfo]:
    # Prefer the default and Tensor overloads over scalar-only (`int`, `float`) ones.
    def rank(o: OpInfo) -> int:
        first = o.schema.arguments[0].type if o.schema.arguments else AnyType
        return 0 if isinstance(first, TensorType) else 1
    return sorted(ops, key=rank)


def _bind(op: OpInfo, args: Sequence[Any], kwargs: dict[str, Any], lenient: bool,
          is_int: Callable[[Any], bool]) -> Optional[list[Any]]:
    params = op.schema.arguments
    positional = [p for p in params if not p.kwarg_only]
    args = _pack_varargs(positional, list(args))
    if len(args) > len(positional):
        return None
    values: dict[str, Any] = {p.name: a for p, a in zip(positional, args)}
    for given, v in kwargs.items():
        key = _kwarg_name(given, params)
        if key is None or key in values:
            return None
        values[key] = v
    bound: list[Any] = []
    for p in params:
        if p.name in values:
            v = values[p.name]
        elif p.has_default:
            v = p.default
        else:
            return None
        if not accepts(p.type, v, lenient, is_int, p.fixed_size):
            return None
        bound.append(_coerce(p.type, v, p.fixed_size))
    return bound


def _kwarg_name(key: str, params: Sequence[Any]) -> Optional[str]:
    names = {p.name for p in params}
    if key in names:
        return key
    if key == "input" and params and params[0].name == "self":
        return "self"
    return None


def _pack_varargs(positional: Sequence[Any], args: list[Any]) -> list[Any]:
    """``x.view(2, 3)`` means ``view(x, [2, 3])``; ``x.view(-1)`` means ``view(x, [-1])``.

    As in PyTorch's argument parser, this applies only when the int list is the last
    positional parameter (``x.roll(1, 1)`` binds ``shifts`` and ``dims`` one each)."""
    last = len(positional) - 1
    if last < 0 or positional[last].type != ListType(IntType) or len(args) <= last:
        return args
    rest = args[last:]
    if all(_is_int_like(a) for a in rest) and (len(rest) > 1 or positional[last].fixed_size is None):
        return args[:last] + [list(rest)]
    return args


def _is_int_like(a: Any) -> bool:
    """An int, or a 0-dim integer tensor (PyTorch reads those through ``__index__``)."""
    if isinstance(a, torch.Tensor):
        return a.dim() == 0 and not a.is_floating_point() and not a.is_complex() and a.dtype != torch.bool
    return isinstance(a, int) and not isinstance(a, bool)


def _coerce(t: Type, v: Any, fixed: Optional[int]) -> Any:
    if isinstance(v, torch.Size):
        return list(v)
    if fixed is not None and isinstance(v, int) and list_elem(t) == IntType:
        return [v] * fixed if fixed > 1 else [v]
    if strip_optional(t) == DeviceType and isinstance(v, str):
        return torch.device(v)
    return v


_PY_SIMPLE: dict[Type, tuple[type, ...]] = {
    StrType: (str,), DtypeType: (torch.dtype,), LayoutType: (torch.layout,),
    MemoryFormatType: (torch.memory_format,), GeneratorType: (torch.Generator,),
    ComplexType: (complex,),
}


def accepts(t: Type, v: Any, lenient: bool, is_int: Callable[[Any], bool],
            fixed: Optional[int] = None) -> bool:
    """Whether Python value ``v`` may be passed for a schema argument of type ``t``."""
    if isinstance(t, OptionalType):
        return v is None or accepts(t.elem, v, lenient, is_int, fixed)
    if isinstance(t, TensorType):
        return isinstance(v, torch.Tensor)
    if t in (IntType, FloatType, BoolType, NumberType):
        return _accepts_number(t, v, lenient)
    if t == DeviceType:
        return isinstance(v, torch.device) or (lenient and isinstance(v, str))
    if t in _PY_SIMPLE:
        return isinstance(v, _PY_SIMPLE[t])
    if isinstance(t, ListType):
        if fixed is not None and isinstance(v, int) and not isinstance(v, bool):
            return t.elem == IntType
        return isinstance(v, (list, tuple)) and all(accepts(t.elem, x, lenient, is_int) for x in v)
    if isinstance(t, TupleType):
        return isinstance(v, tuple) and len(v) == len(t.elems) and all(
            accepts(e, x, lenient, is_int) for e, x in zip(t.elems, v))
    if isinstance(t, DictType):
        return isinstance(v, dict)
    if t == NoneType:
        return v is None
    return t == AnyType


def _accepts_number(t: Type, v: Any, lenient: bool) -> bool:
    if isinstance(v, torch.Tensor):
        return lenient and t == IntType and _is_int_like(v)
    if isinstance(v, bool):
        return t in (BoolType, NumberType) or (lenient and t == IntType)
    if isinstance(v, int):
        return t in (IntType, NumberType) or (lenient and t == FloatType)
    if isinstance(v, float):
        return t in (FloatType, NumberType)
    if isinstance(v, complex):
        return t == NumberType
    return False


_UNCHECKED: dict[Callable[..., Any], Callable[..., Any]] = {}
_NO_CHECK_NAMES = ("has_torch_function", "has_torch_function_unary", "has_torch_function_variadic")


def _never(*args: Any) -> bool:
    return False


def unchecked(func: Callable[..., Any]) -> Optional[Callable[..., Any]]:
    """A copy of a Python-level torch function whose ``__torch_function__`` check is off.

    Such functions start with ``if has_torch_function(...): return handle_torch_function(...)``;
    under a torch function mode that check always fires, so running the original would only
    come back to the mode.  The copy shares code and defaults but sees globals in which the
    check answers False, so its body runs and calls the operators beneath it.  Dispatchers
    that pick between such functions through a closure (``F.max_pool2d``) get copies of the
    functions in their closure.  Returns None when ``func`` is neither kind.
    """
    cached = _UNCHECKED.get(func)
    if cached is not None:
        return cached
    if not isinstance(func, types.FunctionType):
        return None
    checks = _has_check(func)
    closure = func.__closure__
    if closure is not None:
        swapped = tuple(_unchecked_cell(c, func) for c in closure)
        if any(a is not b for a, b in zip(swapped, closure)):
            closure = swapped
    if not checks and closure is func.__closure__:
        return None
    env = func.__globals__
    if checks:
        env = dict(env)
        env.update({n: _never for n in _NO_CHECK_NAMES})
    copy = types.FunctionType(func.__code__, env, func.__name__, func.__defaults__, closure)
    copy.__kwdefaults__ = func.__kwdefaults__
    _UNCHECKED[func] = copy
    return copy


def _has_check(func: types.FunctionType) -> bool:
    return any(n in func.__code__.co_names for n in _NO_CHECK_NAMES)


def _unchecked_cell(cell: Any, owner: Callable[..., Any]) -> Any:
    try:
        inner = cell.cell_contents
    except ValueError:  # an empty cell
        return cell
    if inner is owner or not isinstance(inner, types.FunctionType) or not _has_check(inner):
        return cell
    copy = unchecked(inner)
    return cell if copy is None else types.CellType(copy)


# ---------------------------------------------------------------------------------------
# binding by types (the script compiler: arguments are IR values, not Python objects)

@dataclass
class TypedMatch:
    """A call bound to one overload by the argument *types*.

    ``slots`` has one entry per schema argument: ``("arg", i)`` (positional argument i),
    ``("kw", name)``, ``("default", value)`` or ``("pack", [i, ...])`` (several int arguments
    packed into an ``int[]``).  ``out_types`` are the result types with type variables bound."""

    op: OpInfo
    slots: list[tuple[str, Any]]
    out_types: list[Type]


def resolve_typed(name: str, arg_types: Sequence[Type], kw_types: dict[str, Type]) -> Optional[TypedMatch]:
    """Bind a call of ``name`` to the first overload that accepts the argument types, or None.

    The same order and rules as :func:`resolve_call`: strictly first (no int for a float),
    then with TorchScript's implicit conversions; positional int lists may be spread out.
    The answer depends on the types and the operator's overloads alone, so it is kept (per
    process) until an overload of ``name`` is registered."""
    overloads = registry.overloads(name)
    key = (name, tuple(arg_types), tuple(kw_types.items()))
    try:
        known = _TYPED_MATCHES.get(key)
    except TypeError:      # an unhashable type: resolve without the memo
        return _resolve_typed(name, overloads, arg_types, kw_types)
    if known is not None and known[0] == len(overloads):
        return known[1]
    m = _resolve_typed(name, overloads, arg_types, kw_types)
    if len(_TYPED_MATCHES) >= _TYPED_MATCHES_MAX:
        _TYPED_MATCHES.clear()
    _TYPED_MATCHES[key] = (len(overloads), m)
    return m


# (name, argument types, keyword types) -> (number of overloads then, the match); overloads are
# only ever added, so an unchanged count means the same overloads
_TYPED_MATCHES: dict[tuple[Any, ...], tuple[int, Optional[TypedMatch]]] = {}
_TYPED_MATCHES_MAX = 20000


def _resolve_typed(name: str, all_overloads: list[OpInfo], arg_types: Sequence[Type],
                   kw_types: dict[str, Type]) -> Optional[TypedMatch]:
    overloads = [o for o in all_overloads if not o.schema.is_vararg]
    for lenient in (False, True):
        for op in _ordered(overloads):
            m = _bind_types(op, list(arg_types), kw_types, lenient)
            if m is not None:
                return m
    return None


def _bind_types(op: OpInfo, args: list[Type], kwargs: dict[str, Type],
                lenient: bool) -> Optional[TypedMatch]:
    params = op.schema.arguments
    positional = [p for p in params if not p.kwarg_only]
    slots: dict[str, tuple[str, Any]] = {}
    types: dict[str, Type] = {}
    last = len(positional) - 1
    if len(args) >= len(positional) and last >= 0 and positional[last].type == ListType(IntType) \
            and all(t == IntType for t in args[last:]) and \
            (len(args) - last > 1 or positional[last].fixed_size is None):
        slots[positional[last].name] = ("pack", list(range(last, len(args))))
        types[positional[last].name] = ListType(IntType)
        args_pos = args[:last]
    elif len(args) > len(positional):
        return None
    else:
        args_pos = args
    for i, (p, t) in enumerate(zip(positional, args_pos)):
        slots[p.name], types[p.name] = ("arg", i), t
    for given, t in kwargs.items():
        key = _kwarg_name(given, params)
        if key is None or key in slots:
            return None
        slots[key], types[key] = ("kw", given), t
    bindings: dict[str, Type] = {}
    out: list[tuple[str, Any]] = []
    for p in params:
        if p.name not in slots:
            if not p.has_default:
                return None
            out.append(("default", p.default))
            continue
        if not _type_fits(p.type, types[p.name], lenient, bindings, p.fixed_size):
            return None
        out.append(slots[p.name])
    outs = [substitute(r.type, bindings) for r in op.schema.returns]
    return TypedMatch(op, out, outs)


def _type_fits(expected: Type, actual: Type, lenient: bool, bindings: dict[str, Type],
               fixed: Optional[int]) -> bool:
    from kiln.ir.types import accepts as type_accepts
    from kiln.ir.types import is_subtype
    if _has_var(expected):
        return _bind_var(expected, actual, bindings)
    if isinstance(expected, TensorType) and isinstance(actual, TensorType):
        return True
    if actual == AnyType:
        return True
    if lenient:
        if isinstance(expected, (ListType, OptionalType)) and isinstance(actual, TupleType):
            return _type_fits(expected, actual, False, bindings, fixed)
        return type_accepts(expected, actual, fixed_size=fixed)
    if isinstance(expected, OptionalType) and (actual == NoneType or isinstance(actual, OptionalType)):
        inner = actual.elem if isinstance(actual, OptionalType) else None
        return inner is None or _type_fits(expected.elem, inner, lenient, bindings, fixed)
    if isinstance(expected, OptionalType):
        return _type_fits(expected.elem, actual, lenient, bindings, fixed)
    if fixed is not None and isinstance(expected, ListType) and expected.elem == IntType \
            and actual == IntType:
        return True
    if isinstance(expected, ListType) and isinstance(actual, TupleType):
        return all(_type_fits(expected.elem, e, lenient, bindings, None) for e in actual.elems)
    if isinstance(expected, ListType) and isinstance(actual, ListType):
        return actual.elem == expected.elem or (isinstance(expected.elem, TensorType)
                                                and isinstance(actual.elem, TensorType)) \
            or (isinstance(expected.elem, OptionalType) and is_subtype(actual.elem, expected.elem))
    return is_subtype(actual, expected)


def _has_var(t: Type) -> bool:
    from kiln.ir.types import VarType
    if isinstance(t, VarType):
        return True
    if isinstance(t, (ListType, OptionalType)):
        return _has_var(t.elem)
    if isinstance(t, DictType):
        return _has_var(t.key) or _has_var(t.value)
    if isinstance(t, TupleType):
        return any(_has_var(e) for e in t.elems)
    from kiln.ir.types import FutureType
    if isinstance(t, FutureType):
        return _has_var(t.elem)
    return False


def _bind_var(expected: Type, actual: Type, bindings: dict[str, Type]) -> bool:
    """Match ``actual`` against a type containing type variables, extending ``bindings``."""
    from kiln.ir.types import VarType, unify
    if not _has_var(expected):
        return _type_fits(expected, actual, False, bindings, None)
    if isinstance(expected, VarType):
        bound = bindings.get(expected.name)
        if bound is None:
            bindings[expected.name] = actual
            return True
        if bound == actual or actual == AnyType:
            return True
        u = unify(bound, actual)
        if u is None:
            return False
        bindings[expected.name] = u
        return True
    if actual == AnyType:
        return True
    return _bind_var_parts(expected, actual, bindings)


def _bind_var_parts(expected: Type, actual: Type, bindings: dict[str, Type]) -> bool:
    """:func:`_bind_var` for a container type with type variables: match it part by part."""
    from kiln.ir.types import FutureType, NamedTupleType
    if isinstance(expected, ListType):
        return isinstance(actual, ListType) and _bind_var(expected.elem, actual.elem, bindings)
    if isinstance(expected, OptionalType):
        if actual == NoneType:
            return True
        return _bind_var(expected.elem, actual.elem if isinstance(actual, OptionalType) else actual, bindings)
    if isinstance(expected, DictType):
        return isinstance(actual, DictType) and _bind_var(expected.key, actual.key, bindings) \
            and _bind_var(expected.value, actual.value, bindings)
    if isinstance(expected, FutureType):
        return isinstance(actual, FutureType) and _bind_var(expected.elem, actual.elem, bindings)
    if isinstance(expected, TupleType):
        if not isinstance(actual, (TupleType, NamedTupleType)) or len(actual.elems) != len(expected.elems):
            return False
        return all(_bind_var(e, a, bindings) if _has_var(e) else _type_fits(e, a, False, bindings, None)
                   for e, a in zip(expected.elems, actual.elems))
    return False


def substitute(t: Type, bindings: dict[str, Type]) -> Type:
    """``t`` with its type variables replaced by their bindings (unbound ones by Any)."""
    from kiln.ir.types import FutureType, VarType
    if isinstance(t, VarType):
        return bindings.get(t.name, AnyType)
    if isinstance(t, ListType):
        return ListType(substitute(t.elem, bindings))
    if isinstance(t, OptionalType):
        return OptionalType(substitute(t.elem, bindings))
    if isinstance(t, DictType):
        return DictType(substitute(t.key, bindings), substitute(t.value, bindings))
    if isinstance(t, TupleType):
        return TupleType(tuple(substitute(e, bindings) for e in t.elems))
    if isinstance(t, FutureType):
        return FutureType(substitute(t.elem, bindings))
    return t
