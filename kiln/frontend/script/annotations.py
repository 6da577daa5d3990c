"""Type annotations -> Kiln IR types.

Annotations come as Python objects (``typing.List[int]``, ``list[int]``, ``torch.Tensor``,
a NamedTuple class ...) when a live Python function is scripted, and as AST expressions when
TorchScript source text is compiled.  Both paths end in the same table; nothing is ever
evaluated -- a name is looked up with the caller's ``lookup`` (a function's globals, or
the classes a compilation unit defines).
"""

from __future__ import annotations

import ast
import enum
import typing
from collections.abc import Callable
from typing import Any, Optional

import torch

from kiln import syntax
from kiln.ir.types import (
    TENSOR,
    AnyType,
    BoolType,
    ClassType,
    ComplexType,
    DeviceType,
    DictType,
    DtypeType,
    EnumType,
    FloatType,
    FutureType,
    IntType,
    LayoutType,
    ListType,
    MemoryFormatType,
    NamedTupleType,
    NoneType,
    NumberType,
    OptionalType,
    StrType,
    TupleType,
    Type,
    UnionType,
)

Lookup = Callable[[str], Any]
ClassTypeOf = Callable[[type], Optional[Type]]

_SIMPLE: dict[str, Type] = {
    "int": IntType, "float": FloatType, "bool": BoolType, "str": StrType, "complex": ComplexType,
    "None": NoneType, "NoneType": NoneType, "Tensor": TENSOR, "Any": AnyType, "number": NumberType,
    "Device": DeviceType, "device": DeviceType, "dtype": DtypeType, "ScalarType": DtypeType,
    "Layout": LayoutType, "layout": LayoutType, "MemoryFormat": MemoryFormatType,
    "memory_format": MemoryFormatType,
}
_PY_SIMPLE: dict[Any, Type] = {
    int: IntType, float: FloatType, bool: BoolType, str: StrType, complex: ComplexType,
    type(None): NoneType, None: NoneType, torch.Tensor: TENSOR, typing.Any: AnyType,
    torch.device: DeviceType, torch.dtype: DtypeType, torch.layout: LayoutType,
    torch.memory_format: MemoryFormatType, torch.nn.Parameter: TENSOR,
}
_GENERIC = {"List", "list", "Optional", "Tuple", "tuple", "Dict", "dict", "Union", "Future", "Final",
            "BroadcastingList1", "BroadcastingList2", "BroadcastingList3"}


class AnnotationError(Exception):
    """An annotation Kiln cannot turn into a type; the message says what was found."""


def is_final(ann: Any) -> bool:
    return ann is typing.Final or typing.get_origin(ann) is typing.Final or \
        getattr(ann, "__name__", "") == "Final"


def from_python(ann: Any, class_type: ClassTypeOf) -> Type:
    """The type a live annotation object stands for."""
    if isinstance(ann, str):
        return from_ast(syntax.parse(ann, mode="eval").body, lambda n: None, class_type)
    if isinstance(ann, typing.ForwardRef):
        return from_ast(syntax.parse(ann.__forward_arg__, mode="eval").body, lambda n: None, class_type)
    try:
        simple = _PY_SIMPLE.get(ann)
    except TypeError:   # unhashable annotation objects
        simple = None
    if simple is not None:
        return simple
    origin = typing.get_origin(ann)
    args = typing.get_args(ann)
    if origin is not None:
        return _generic(_origin_name(origin), [from_python(a, class_type) for a in args
                                                 if a is not Ellipsis], args)
    if isinstance(ann, type):
        t = class_type(ann)
        if t is not None:
            return t
    raise AnnotationError(f"unsupported type annotation {ann!r}")


def _origin_name(origin: Any) -> str:
    """The generic's name for ``typing.get_origin`` of an annotation (``list`` for both
    ``List[int]`` and ``list[int]``)."""
    if origin is list:
        return "List"
    if origin is tuple:
        return "Tuple"
    if origin is dict:
        return "Dict"
    if origin is typing.Union or type(origin).__name__ == "UnionType" or \
            getattr(origin, "__name__", "") == "UnionType":
        return "Union"
    if origin is typing.Final:
        return "Final"
    name = getattr(origin, "__name__", str(origin))
    if name == "Future":
        return "Future"
    raise AnnotationError(f"unsupported generic type {origin!r}")


def _generic(name: str, args: list[Type], raw: tuple[Any, ...] = ()) -> Type:
    if name in ("List", "list") or name.startswith("BroadcastingList"):
        return ListType(args[0] if args else AnyType)
    if name in ("Tuple", "tuple"):
        if raw == ((),):    # Tuple[()]
            return TupleType(())
        return TupleType(tuple(args))
    if name in ("Dict", "dict"):
        if len(args) != 2:
            raise AnnotationError("Dict takes a key and a value type")
        return DictType(args[0], args[1])
    if name == "Optional":
        return OptionalType(args[0])
    if name == "Final":
        return args[0] if args else AnyType
    if name == "Future":
        return FutureType(args[0])
    return _union(args)


def _union(args: list[Type]) -> Type:
    """``Union[...]``: Optional when it is ``X | None``; nested unions are flattened."""
    members = [a for a in args if a != NoneType]
    if len(members) == 1 and len(args) == 2:
        return OptionalType(members[0])
    flat: list[Type] = []
    for a in args:
        for m in (a.elems if isinstance(a, UnionType) else (a,)):
            if m not in flat:
                flat.append(m)
    return UnionType(tuple(flat))


def from_ast(node: ast.expr, lookup: Lookup, class_type: ClassTypeOf) -> Type:
    """The type an annotation expression (from source text) stands for."""
    if isinstance(node, ast.Constant):
        if node.value is None:
            return NoneType
        if isinstance(node.value, str):
            return from_ast(syntax.parse(node.value, mode="eval").body, lookup, class_type)
        raise AnnotationError(f"unsupported type annotation {node.value!r}")
    if isinstance(node, ast.BinOp) and isinstance(node.op, ast.BitOr):
        return _generic("Union", [from_ast(node.left, lookup, class_type),
                                  from_ast(node.right, lookup, class_type)])
    if isinstance(node, ast.Subscript):
        base = _dotted(node.value)
        last = base.rsplit(".", 1)[-1]
        if last not in _GENERIC:
            raise AnnotationError(f"unsupported generic type {base}")
        sl = node.slice
        elts = sl.elts if isinstance(sl, ast.Tuple) else [sl]
        raw: tuple[Any, ...] = ((),) if isinstance(sl, ast.Tuple) and not sl.elts else ()
        return _generic(last, [from_ast(e, lookup, class_type) for e in elts
                               if not (isinstance(e, ast.Constant) and e.value is Ellipsis)], raw)
    name = _dotted(node)
    last = name.rsplit(".", 1)[-1]
    obj = lookup(name)
    if obj is not None and not isinstance(obj, Type):
        try:
            return from_python(obj, class_type)
        except AnnotationError:
            pass
    if isinstance(obj, Type):
        return obj
    if name in _SIMPLE or last in _SIMPLE and name.split(".")[0] in ("torch", "typing", "t", "builtins"):
        return _SIMPLE[last]
    if last in _GENERIC:
        return _generic(last, [AnyType, AnyType] if last in ("Dict", "dict") else [AnyType])
    raise AnnotationError(f"unknown type {name!r}")


def _dotted(node: ast.expr) -> str:
    if isinstance(node, ast.Name):
        return node.id
    if isinstance(node, ast.Attribute):
        return f"{_dotted(node.value)}.{node.attr}"
    raise AnnotationError(f"unsupported type annotation {ast.unparse(node)!r}")


def is_namedtuple_class(cls: Any) -> bool:
    return isinstance(cls, type) and issubclass(cls, tuple) and hasattr(cls, "_fields")


def is_enum_class(cls: Any) -> bool:
    return isinstance(cls, type) and issubclass(cls, enum.Enum)


def enum_type(cls: type, qualname: str) -> EnumType:
    return EnumType(qualname)


def namedtuple_type(cls: type, qualname: str, class_type: ClassTypeOf) -> NamedTupleType:
    hints = getattr(cls, "__annotations__", {})
    fields = tuple((f, from_python(hints[f], class_type) if f in hints else TENSOR)
                   for f in cls._fields)  # type: ignore[attr-defined]
    return NamedTupleType(qualname, fields)


def qualname(cls: type) -> str:
    """A class's qualified name as TorchScript spells it (``__torch__.pkg.Class``), the same
    for the tracer and the script compiler."""
    from kiln.frontend.tracer import qualified_class_name
    return qualified_class_name(cls)


def class_type_name(cls: type) -> ClassType:
    return ClassType(qualname(cls))
