"""The types of Kiln's IR.

Types are immutable, hashable values.  Each has two spellings:

* ``str(t)`` -- the graph form TorchScript prints in ``graph(...)`` text
  (``int[]``, ``Tensor?``, ``(int, Tensor)``, ``Float(3, 4, strides=[4, 1], ...)``);
* ``t.annotation()`` -- the Python annotation form used by ``.code``
  (``List[int]``, ``Optional[Tensor]``, ``Tuple[int, Tensor]``).

:func:`parse_type` reads either spelling (and the dispatcher's schema spellings such as
``number`` and ``int[1]?``), so the printer, the IR parser and the operator registry share it.
"""

from __future__ import annotations

import functools
from collections.abc import Iterator
from dataclasses import dataclass, field
from typing import Optional as Opt

import torch

from kiln.errors import IRParseError


class Type:
    """Base of all IR types."""

    def annotation(self) -> str:
        return str(self)


@dataclass(frozen=True)
class _Named(Type):
    name: str
    ann: str

    def __str__(self) -> str:
        return self.name

    def annotation(self) -> str:
        return self.ann


IntType = _Named("int", "int")
FloatType = _Named("float", "float")
BoolType = _Named("bool", "bool")
StrType = _Named("str", "str")
ComplexType = _Named("complex", "complex")
NoneType = _Named("NoneType", "None")
NumberType = _Named("Scalar", "number")
DeviceType = _Named("Device", "Device")
DtypeType = _Named("ScalarType", "int")
LayoutType = _Named("Layout", "int")
MemoryFormatType = _Named("MemoryFormat", "int")
GeneratorType = _Named("Generator", "Generator")
StorageType = _Named("Storage", "Storage")
AnyType = _Named("Any", "Any")

_DTYPE_NAMES: dict[torch.dtype, str] = {
    torch.float32: "Float", torch.float64: "Double", torch.float16: "Half",
    torch.bfloat16: "BFloat16", torch.int64: "Long", torch.int32: "Int",
    torch.int16: "Short", torch.int8: "Char", torch.uint8: "Byte", torch.bool: "Bool",
    torch.complex64: "ComplexFloat", torch.complex128: "ComplexDouble",
    torch.complex32: "ComplexHalf",
}
# The rarer dtypes, by their c10 names: without a name a dtype prints as ``Tensor(...)`` and
# is lost (or changes the text) when the type is parsed back.
for _attr, _cname in (("uint16", "UInt16"), ("uint32", "UInt32"), ("uint64", "UInt64"),
                      ("float8_e5m2", "Float8_e5m2"), ("float8_e4m3fn", "Float8_e4m3fn"),
                      ("float8_e5m2fnuz", "Float8_e5m2fnuz"), ("float8_e4m3fnuz", "Float8_e4m3fnuz"),
                      ("float8_e8m0fnu", "Float8_e8m0fnu"), ("float4_e2m1fn_x2", "Float4_e2m1fn_x2"),
                      ("qint8", "QInt8"), ("quint8", "QUInt8"), ("qint32", "QInt32"),
                      ("quint4x2", "QUInt4x2"), ("quint2x4", "QUInt2x4")):
    if isinstance(getattr(torch, _attr, None), torch.dtype):
        _DTYPE_NAMES[getattr(torch, _attr)] = _cname
_DTYPE_BY_NAME = {v: k for k, v in _DTYPE_NAMES.items()}


@dataclass(frozen=True)
class TensorType(Type):
    """A tensor, optionally refined with what is known about it.

    ``shape`` is ``None`` when the rank is unknown; a ``None`` entry is an unknown size.
    Traced graphs record what was observed at trace time (as TorchScript does); those
    refinements describe the example, they are not checked at run time.
    """

    dtype: Opt[torch.dtype] = None
    shape: Opt[tuple[Opt[int], ...]] = None
    strides: Opt[tuple[Opt[int], ...]] = None
    device: Opt[torch.device] = None
    requires_grad: Opt[bool] = None

    @staticmethod
    def of(t: torch.Tensor) -> TensorType:
        """The complete type of a concrete tensor."""
        strides = tuple(t.stride()) if t.layout == torch.strided else None
        return TensorType(t.dtype, tuple(t.shape), strides, t.device, t.requires_grad)

    def is_plain(self) -> bool:
        return self == TENSOR

    def __str__(self) -> str:
        if self.is_plain():
            return "Tensor"
        base = _DTYPE_NAMES.get(self.dtype, "Tensor") if self.dtype else "Tensor"
        parts: list[str] = []
        if self.shape is None:
            parts.append("...")
        else:
            parts.extend("*" if d is None else str(d) for d in self.shape)
        if self.strides is not None:
            parts.append("strides=[" + ", ".join("*" if s is None else str(s) for s in self.strides) + "]")
        if self.requires_grad is not None:
            parts.append(f"requires_grad={int(self.requires_grad)}")
        if self.device is not None:
            parts.append(f"device={self.device}")
        return f"{base}({', '.join(parts)})"

    def annotation(self) -> str:
        return "Tensor"


TENSOR = TensorType()


@dataclass(frozen=True)
class ListType(Type):
    elem: Type

    def __str__(self) -> str:
        return f"{self.elem}[]"

    def annotation(self) -> str:
        return f"List[{self.elem.annotation()}]"


@dataclass(frozen=True)
class OptionalType(Type):
    elem: Type

    def __str__(self) -> str:
        return f"{self.elem}?"

    def annotation(self) -> str:
        return f"Optional[{self.elem.annotation()}]"


@dataclass(frozen=True)
class TupleType(Type):
    elems: tuple[Type, ...]

    def __str__(self) -> str:
        return "(" + ", ".join(map(str, self.elems)) + ")"

    def annotation(self) -> str:
        return "Tuple[" + ", ".join(e.annotation() for e in self.elems) + "]"


@dataclass(frozen=True)
class NamedTupleType(Type):
    """A NamedTuple: a qualified class name plus named, typed fields."""

    qualname: str
    fields: tuple[tuple[str, Type], ...]

    @property
    def elems(self) -> tuple[Type, ...]:
        return tuple(t for _, t in self.fields)

    def __str__(self) -> str:
        inner = ", ".join(f"{n} : {t}" for n, t in self.fields)
        return f"NamedTuple[{self.qualname}]({inner})"

    def annotation(self) -> str:
        return self.qualname


@dataclass(frozen=True)
class UnionType(Type):
    elems: tuple[Type, ...]

    def __str__(self) -> str:
        return "Union(" + ", ".join(map(str, self.elems)) + ")"

    def annotation(self) -> str:
        return "Union[" + ", ".join(e.annotation() for e in self.elems) + "]"


@dataclass(frozen=True)
class DictType(Type):
    key: Type
    value: Type

    def __str__(self) -> str:
        return f"Dict({self.key}, {self.value})"

    def annotation(self) -> str:
        return f"Dict[{self.key.annotation()}, {self.value.annotation()}]"


@dataclass(frozen=True)
class FutureType(Type):
    elem: Type

    def __str__(self) -> str:
        return f"Future({self.elem})"

    def annotation(self) -> str:
        return f"Future[{self.elem.annotation()}]"


@dataclass(frozen=True)
class ClassType(Type):
    """A class or module, by qualified name (``__torch__.MyCell``)."""

    qualname: str

    def __str__(self) -> str:
        return self.qualname


# One method of an interface: its name, its parameters after ``self`` (name, type), its result.
InterfaceMethod = tuple[str, tuple[tuple[str, Type], ...], Type]


@dataclass(frozen=True)
class InterfaceType(ClassType):
    """A TorchScript interface (``@kiln.interface``): a value of any class -- or, for a module
    interface, any module -- whose methods include these, with these signatures.

    Equality is by qualified name (``methods`` and ``module`` ride along: a type parsed from
    graph text has none).  A class is a subtype once the compiler has checked that it
    implements the interface (:func:`register_implementation`); an interface is a subtype of
    another whose methods it has."""

    methods: tuple[InterfaceMethod, ...] = field(default=(), compare=False)
    module: bool = field(default=False, compare=False)

    def __str__(self) -> str:
        return f"InterfaceType<{self.qualname}>"

    def annotation(self) -> str:
        return self.qualname

    def method(self, name: str) -> Opt[InterfaceMethod]:
        return next((m for m in self.methods if m[0] == name), None)


# (class qualname, interface qualname) pairs the compiler has checked
_IMPLEMENTS: set[tuple[str, str]] = set()


def register_implementation(cls: str, interface: str) -> None:
    """Record that class ``cls`` implements ``interface`` (checked by the compiler)."""
    if (cls, interface) not in _IMPLEMENTS:
        _IMPLEMENTS.add((cls, interface))
        accepts.cache_clear()


def _implements(sub: Type, sup: InterfaceType) -> bool:
    if isinstance(sub, InterfaceType):
        return bool(sup.methods) and all(sub.method(m[0]) == m for m in sup.methods)
    return isinstance(sub, ClassType) and (sub.qualname, sup.qualname) in _IMPLEMENTS


@dataclass(frozen=True)
class EnumType(Type):
    qualname: str

    def __str__(self) -> str:
        return f"Enum<{self.qualname}>"

    def annotation(self) -> str:
        return self.qualname


@dataclass(frozen=True)
class VarType(Type):
    """A schema type variable (``t``, ``t1``, ``tVal``): matches any type, and every use of
    the same name in one schema must bind the same type (see ``kiln.frontend.resolve``)."""

    name: str

    def __str__(self) -> str:
        return self.name


def strip_optional(t: Type) -> Type:
    """``T`` for ``Optional[T]``, else ``t`` itself."""
    return t.elem if isinstance(t, OptionalType) else t


def list_elem(t: Type) -> Opt[Type]:
    """The element type of a (possibly optional) list type, else None."""
    t = strip_optional(t)
    return t.elem if isinstance(t, ListType) else None


def is_subtype(sub: Type, sup: Type) -> bool:
    """Whether a value of type ``sub`` may be used where ``sup`` is expected."""
    if sub == sup or sup == AnyType or isinstance(sup, VarType):
        return True
    if isinstance(sup, TensorType) and isinstance(sub, TensorType):
        return all(
            getattr(sup, f) is None or getattr(sup, f) == getattr(sub, f)
            for f in ("dtype", "shape", "strides", "device", "requires_grad")
        )
    if isinstance(sup, OptionalType):
        return sub == NoneType or is_subtype(sub, sup.elem) or (
            isinstance(sub, OptionalType) and is_subtype(sub.elem, sup.elem))
    if isinstance(sup, UnionType):
        members = sub.elems if isinstance(sub, UnionType) else (sub,)
        return all(any(is_subtype(m, e) for e in sup.elems) for m in members)
    if sup == NumberType:
        return sub in (IntType, FloatType, BoolType, ComplexType)
    if isinstance(sup, InterfaceType):
        return _implements(sub, sup)
    if isinstance(sup, TupleType) and isinstance(sub, (TupleType, NamedTupleType)):
        return len(sub.elems) == len(sup.elems) and all(
            is_subtype(a, b) for a, b in zip(sub.elems, sup.elems))
    if isinstance(sup, ListType) and isinstance(sub, ListType):
        # Lists are invariant, except that refined tensors fit a Tensor list and any list fits Any[].
        return sub.elem == sup.elem or sup.elem == AnyType or (
            isinstance(sup.elem, TensorType) and is_subtype(sub.elem, sup.elem))
    return False


def unify(a: Type, b: Type) -> Opt[Type]:
    """The most precise type both ``a`` and ``b`` are subtypes of, or None."""
    if is_subtype(a, b):
        return b
    if is_subtype(b, a):
        return a
    if isinstance(a, TensorType) and isinstance(b, TensorType):
        keep = {f: getattr(a, f) if getattr(a, f) == getattr(b, f) else None
                for f in ("dtype", "device", "requires_grad")}
        same_rank = a.shape is not None and b.shape is not None and len(a.shape) == len(b.shape)
        shape = None
        if same_rank:
            shape = tuple(x if x == y else None for x, y in zip(a.shape or (), b.shape or ()))
        return TensorType(shape=shape, **keep)
    if b == NoneType:
        return OptionalType(a)
    if a == NoneType:
        return OptionalType(b)
    if isinstance(a, TupleType) and isinstance(b, TupleType) and len(a.elems) == len(b.elems):
        parts = [unify(x, y) for x, y in zip(a.elems, b.elems)]
        if all(p is not None for p in parts):
            return TupleType(tuple(p for p in parts if p is not None))
    return None


_INT_ENUMS = (DtypeType, LayoutType, MemoryFormatType)


@functools.lru_cache(maxsize=4096)   # types are immutable and few; graphs repeat them a lot
def accepts(expected: Type, actual: Type, *, fixed_size: Opt[int] = None) -> bool:
    """Whether a value of type ``actual`` may be passed where a schema expects ``expected``.

    This is :func:`is_subtype` plus the conversions TorchScript applies at call sites: an int
    where a float is expected, ints for dtypes/layouts/memory formats (and back), None for
    an Optional, a single int for a fixed-size ``int[N]`` argument, and covariant containers
    (``List[Float(3)]`` for ``List[Tensor]``, any list for ``t[]``).  ``Any`` -- the dynamic
    type -- is accepted everywhere: the runtime checks it.
    """
    if actual == AnyType or isinstance(actual, VarType) or is_subtype(actual, expected):
        return True
    if expected == FloatType and actual == IntType:
        return True
    if (expected in _INT_ENUMS and actual == IntType) or (expected == IntType and actual in _INT_ENUMS):
        return True
    if isinstance(expected, OptionalType):
        inner = actual.elem if isinstance(actual, OptionalType) else actual
        return inner == NoneType or accepts(expected.elem, inner, fixed_size=fixed_size)
    if isinstance(expected, ListType) and fixed_size is not None and actual == expected.elem:
        return True
    if isinstance(expected, UnionType):
        members = actual.elems if isinstance(actual, UnionType) else (actual,)
        return all(any(accepts(e, m) for e in expected.elems) for m in members)
    return _accepts_container(expected, actual)


def _accepts_container(expected: Type, actual: Type) -> bool:
    """Covariant containers; elements get no scalar conversions (``List[int]`` is no ``List[float]``)."""
    def elem_ok(e: Type, a: Type) -> bool:
        return a == AnyType or e == AnyType or is_subtype(a, e) or (
            isinstance(e, (OptionalType, UnionType, ListType, TupleType, DictType))
            and _accepts_container_or_optional(e, a))
    if isinstance(expected, ListType) and isinstance(actual, ListType):
        return elem_ok(expected.elem, actual.elem)
    if isinstance(expected, TupleType) and isinstance(actual, (TupleType, NamedTupleType)):
        return len(expected.elems) == len(actual.elems) and all(
            elem_ok(e, a) for e, a in zip(expected.elems, actual.elems))
    if isinstance(expected, DictType) and isinstance(actual, DictType):
        return elem_ok(expected.key, actual.key) and elem_ok(expected.value, actual.value)
    if isinstance(expected, FutureType) and isinstance(actual, FutureType):
        return elem_ok(expected.elem, actual.elem)
    return False


def _accepts_container_or_optional(expected: Type, actual: Type) -> bool:
    if isinstance(expected, OptionalType):
        inner = actual.elem if isinstance(actual, OptionalType) else actual
        return inner == NoneType or is_subtype(inner, expected.elem) or \
            _accepts_container(expected.elem, inner)
    if isinstance(expected, UnionType):
        return any(is_subtype(actual, e) or _accepts_container(e, actual) for e in expected.elems)
    return _accepts_container(expected, actual)


def walk_types(t: Type) -> Iterator[Type]:
    """``t`` and every type inside it (elements, fields, keys and values), depth first."""
    stack = [t]
    while stack:
        cur = stack.pop()
        yield cur
        if isinstance(cur, (ListType, OptionalType, FutureType)):
            stack.append(cur.elem)
        elif isinstance(cur, (TupleType, UnionType, NamedTupleType)):
            stack.extend(reversed(cur.elems))
        elif isinstance(cur, DictType):
            stack += [cur.value, cur.key]


def type_of_value(v: object) -> Type:
    """The IR type of a concrete Python/torch value (used for constants and traces)."""
    if isinstance(v, torch.Tensor):
        return TensorType.of(v)
    for py, t in ((bool, BoolType), (int, IntType), (float, FloatType), (complex, ComplexType),
                  (str, StrType), (torch.device, DeviceType), (torch.dtype, DtypeType),
                  (torch.layout, LayoutType), (torch.memory_format, MemoryFormatType)):
        if isinstance(v, py):
            return t
    if v is None:
        return NoneType
    if isinstance(v, tuple):
        return TupleType(tuple(type_of_value(x) for x in v))
    if isinstance(v, list):
        return ListType(_common_type([type_of_value(x) for x in v]))
    if isinstance(v, dict):
        key = StrType if all(isinstance(k, str) for k in v) else IntType
        return DictType(key, _common_type([type_of_value(x) for x in v.values()]))
    return AnyType


def _common_type(types: list[Type]) -> Type:
    """The type all ``types`` unify to: Tensor for none (an empty tensor list), else Any."""
    if not types:
        return TENSOR
    out: Opt[Type] = types[0]
    for t in types[1:]:
        out = unify(out, t) if out is not None else None
    return out or AnyType


# ---------------------------------------------------------------------------------------
# parsing


_SIMPLE: dict[str, Type] = {
    "int": IntType, "SymInt": IntType, "float": FloatType, "bool": BoolType, "str": StrType,
    "complex": ComplexType, "NoneType": NoneType, "None": NoneType, "Scalar": NumberType,
    "number": NumberType, "Device": DeviceType, "ScalarType": DtypeType, "Layout": LayoutType,
    "MemoryFormat": MemoryFormatType, "Generator": GeneratorType, "Storage": StorageType,
    "Any": AnyType, "Tensor": TENSOR,
    "SymFloat": FloatType, "SymBool": BoolType, "ScalarTypeType": DtypeType,
}


# The type variables TorchScript's builtin schemas use.
_TYPE_VARS = frozenset({"t", "t1", "t2", "tVal", "K", "V", "T"})


class TypeParser:
    """Recursive-descent parser for type spellings; ``pos`` is advanced in ``text``."""

    def __init__(self, text: str, pos: int = 0) -> None:
        self.text = text
        self.pos = pos

    def error(self, msg: str) -> IRParseError:
        return IRParseError(f"{msg} at column {self.pos + 1} in type {self.text!r}")

    def skip(self) -> None:
        while self.pos < len(self.text) and self.text[self.pos] == " ":
            self.pos += 1

    def peek(self, s: str) -> bool:
        self.skip()
        return self.text.startswith(s, self.pos)

    def expect(self, s: str) -> None:
        if not self.peek(s):
            raise self.error(f"expected {s!r}")
        self.pos += len(s)

    def word(self) -> str:
        self.skip()
        start = self.pos
        while self.pos < len(self.text) and (self.text[self.pos].isalnum() or self.text[self.pos] in "_.:"):
            self.pos += 1
        if start == self.pos:
            raise self.error("expected a type name")
        return self.text[start:self.pos]

    def parse(self) -> Type:
        t = self._primary()
        while True:
            if self.peek("[]"):
                self.pos += 2
                t = ListType(t)
            elif self.peek("[") and self._fixed_size_list():
                t = ListType(t)
            elif self.peek("?"):
                self.pos += 1
                t = OptionalType(t)
            else:
                return t

    def _fixed_size_list(self) -> bool:
        """Schema spelling ``int[2]``: a list whose length the schema suggests."""
        end = self.text.find("]", self.pos)
        if end > self.pos + 1 and self.text[self.pos + 1:end].isdigit():
            self.pos = end + 1
            return True
        return False

    def _list_of(self, close: str) -> list[Type]:
        items: list[Type] = []
        while not self.peek(close):
            items.append(self.parse())
            if not self.peek(close):
                self.expect(",")
        self.expect(close)
        return items

    def _primary(self) -> Type:
        if self.peek("("):
            self.pos += 1
            return TupleType(tuple(self._list_of(")")))
        name = self.word()
        if name in _DTYPE_BY_NAME or (name == "Tensor" and self.peek("(")):
            return self._tensor(name)
        if name in _SIMPLE:
            return _SIMPLE[name]
        if name in _TYPE_VARS:
            return VarType(name)
        return self._generic(name)

    def _generic(self, name: str) -> Type:
        if name in ("List", "Optional", "Tuple", "Dict", "Union", "Future") and self.peek("["):
            self.pos += 1
            args = self._list_of("]")
        elif name in ("Dict", "Union", "Future") and self.peek("("):
            self.pos += 1
            args = self._list_of(")")
        elif name == "NamedTuple":
            return self._named_tuple()
        elif name == "InterfaceType" and self.peek("<"):
            self.pos += 1
            qual = self.word()
            self.expect(">")
            return InterfaceType(qual)
        elif name == "Enum" and self.peek("<"):
            self.pos += 1
            qual = self.word()
            self.expect(">")
            return EnumType(qual)
        else:
            return ClassType(name)
        return self._build(name, args)

    def _build(self, name: str, args: list[Type]) -> Type:
        arity = {"List": 1, "Optional": 1, "Future": 1, "Dict": 2}
        if name in arity and len(args) != arity[name]:
            raise self.error(f"{name} takes {arity[name]} type argument(s), got {len(args)}")
        if name == "List":
            return ListType(args[0])
        if name == "Optional":
            return OptionalType(args[0])
        if name == "Future":
            return FutureType(args[0])
        if name == "Dict":
            return DictType(args[0], args[1])
        if name == "Tuple":
            return TupleType(tuple(args))
        return UnionType(tuple(args))

    def _named_tuple(self) -> Type:
        self.expect("[")
        qual = self.word()
        self.expect("]")
        self.expect("(")
        fields: list[tuple[str, Type]] = []
        while not self.peek(")"):
            fname = self.word()
            self.expect(":")
            fields.append((fname, self.parse()))
            if not self.peek(")"):
                self.expect(",")
        self.expect(")")
        return NamedTupleType(qual, tuple(fields))

    def _tensor(self, name: str) -> Type:
        dtype = _DTYPE_BY_NAME.get(name)
        if not self.peek("("):
            return TensorType(dtype=dtype)
        self.pos += 1
        shape: Opt[list[Opt[int]]] = []
        kw: dict[str, object] = {}
        while not self.peek(")"):
            self._tensor_part(shape, kw)
            if shape is not None and kw.get("_unknown_rank"):
                shape = None
            if not self.peek(")"):
                self.expect(",")
        self.expect(")")
        kw.pop("_unknown_rank", None)
        return TensorType(dtype=dtype, shape=None if shape is None else tuple(shape), **kw)  # type: ignore[arg-type]

    def _tensor_part(self, shape: Opt[list[Opt[int]]], kw: dict[str, object]) -> None:
        if self.peek("..."):
            self.pos += 3
            kw["_unknown_rank"] = True
        elif self.peek("*"):
            self.pos += 1
            if shape is not None:
                shape.append(None)
        elif self.peek("strides=["):
            self.pos += len("strides=[")
            kw["strides"] = tuple(self._dims("]"))
        elif self.peek("requires_grad="):
            self.pos += len("requires_grad=")
            kw["requires_grad"] = self.word() == "1"
        elif self.peek("device="):
            self.pos += len("device=")
            kw["device"] = torch.device(self.word())
        else:
            if shape is not None:
                shape.append(self._int())

    def _dims(self, close: str) -> list[Opt[int]]:
        dims: list[Opt[int]] = []
        while not self.peek(close):
            if self.peek("*"):
                self.pos += 1
                dims.append(None)
            else:
                dims.append(self._int())
            if not self.peek(close):
                self.expect(",")
        self.expect(close)
        return dims

    def _int(self) -> int:
        self.skip()
        start = self.pos
        if self.pos < len(self.text) and self.text[self.pos] == "-":
            self.pos += 1
        while self.pos < len(self.text) and self.text[self.pos].isdigit():
            self.pos += 1
        try:
            return int(self.text[start:self.pos])
        except ValueError:
            raise self.error("expected an integer") from None


def parse_type(text: str) -> Type:
    """Parse a whole type spelling (graph form, annotation form or schema form)."""
    p = TypeParser(text)
    t = p.parse()
    p.skip()
    if p.pos != len(text):
        raise p.error("unexpected text after type")
    return t
