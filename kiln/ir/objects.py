"""Operators for objects, enums, futures and grad mode (used by script-compiled code).

Registered like the prims in :mod:`kiln.ir.prims`: schema, semantics, and the inline Python
the code generator writes.
"""

from __future__ import annotations

import types
from typing import Any, Optional

import torch

from kiln.ir.prims import prim

# Declared field types of script classes loaded from archives, by qualified name (what saving
# their objects again needs: the values alone do not say List[int] from an empty list).
FIELD_TYPES: dict[str, dict[str, Any]] = {}


class ScriptClass:
    """A script class at run time: what its objects need beyond their fields.

    ``methods`` are the methods compiled on their own (a method call on an interface-typed
    value runs the one of the object's class: ``prim::CallMethod`` looks it up on the object);
    ``graphs`` are their graphs and default values, and ``fields`` the declared field types,
    for saving.  ``text`` is the class's definition in the archive it was loaded from (saving
    writes it again unchanged), with ``archive`` the texts it may refer to.  One record per
    class and compilation session or loaded archive: two classes that share a name never share
    methods."""

    def __init__(self, qualname: str) -> None:
        self.qualname = qualname
        self.fields: dict[str, Any] = {}
        self.methods: dict[str, Any] = {}
        self.graphs: dict[str, tuple[Any, dict[str, Any]]] = {}
        self.text: Optional[str] = None
        self.archive: Any = None

    def define(self, name: str, fn: Any, graph: Any, defaults: dict[str, Any]) -> None:
        self.methods[name] = fn
        self.graphs[name] = (graph, defaults)

    def __repr__(self) -> str:
        return f"ScriptClass({self.qualname})"

    def __deepcopy__(self, memo: dict[int, Any]) -> ScriptClass:
        return self         # a class, shared by the copies of its objects


class ScriptObject:
    """An instance of a script class at run time: a named bag of attributes, and its class's
    compiled methods (when it has a :class:`ScriptClass`)."""

    def __init__(self, qualname: str, cls: Optional[ScriptClass] = None) -> None:
        self._kiln_type = qualname
        if cls is not None:
            self._kiln_class = cls

    def __getattr__(self, name: str) -> Any:
        # only reached for names that are not fields: a method of the object's class
        cls = self.__dict__.get("_kiln_class")
        fn = cls.methods.get(name) if cls is not None and not name.startswith("__") else None
        if fn is None:
            raise AttributeError(f"{self.__dict__.get('_kiln_type', 'ScriptObject')} object has no "
                                 f"attribute or compiled method {name!r}")
        return types.MethodType(fn, self)

    def __repr__(self) -> str:
        fields = ", ".join(f"{k}={v!r}" for k, v in vars(self).items() if not k.startswith("_kiln"))
        return f"{self._kiln_type.rsplit('.', 1)[-1]}({fields})"

    def __eq__(self, other: object) -> bool:
        return self is other


class Future:
    """A completed future (``fork`` runs its function at once; ``wait`` returns the value)."""

    __slots__ = ("value",)

    def __init__(self, value: Any) -> None:
        self.value = value

    def wait(self) -> Any:
        return self.value


NAMEDTUPLES: dict[str, type] = {}


def namedtuple_class(t: Any) -> type:
    """The Python class of a NamedTuple type: the user's own when Kiln saw it, else a new one."""
    known = NAMEDTUPLES.get(t.qualname)
    if known is not None:
        return known
    import collections
    # (mypy only follows namedtuple() with a literal name; this class is made from a type.)
    cls: type = collections.namedtuple(  # type: ignore[misc]
        t.qualname.rsplit(".", 1)[-1], [f for f, _ in t.fields])
    NAMEDTUPLES[t.qualname] = cls
    return cls


def create_object(*, qualname: str = "", cls: Optional[ScriptClass] = None) -> ScriptObject:
    return ScriptObject(cls.qualname if cls is not None else qualname, cls)


def completed_future(value: Any) -> Future:
    return Future(value)


def wait(fut: Future) -> Any:
    return fut.value


def enum_name(e: Any) -> str:
    return str(e.name)


def enum_value(e: Any) -> Any:
    return e.value


def argsort(keys: list[Any], reverse: bool) -> list[int]:
    """Indices that sort ``keys`` stably (ties keep their order, also when reversed)."""
    return sorted(range(len(keys)), key=keys.__getitem__, reverse=reverse)


def del_slice(lst: list[Any], start: Any, end: Any, step: int) -> None:
    del lst[start:end:step]


_TYPE_CACHE: dict[str, Any] = {}


def value_is(v: Any, types: tuple[str, ...]) -> bool:
    """``isinstance`` against IR type spellings, decided on the run-time value."""
    from kiln.ir.types import parse_type
    for spelling in types:
        t = _TYPE_CACHE.get(spelling)
        if t is None:
            t = _TYPE_CACHE[spelling] = parse_type(spelling)
        if _fits(v, t):
            return True
    return False


def _fits(v: Any, t: Any) -> bool:
    from kiln.ir import types as T
    if t == T.AnyType:
        return True
    if isinstance(t, T.TensorType):
        return isinstance(v, torch.Tensor)
    if isinstance(t, T.OptionalType):
        return v is None or _fits(v, t.elem)
    if isinstance(t, T.UnionType):
        return any(_fits(v, e) for e in t.elems)
    if isinstance(t, T.ListType):
        return isinstance(v, list) and all(_fits(x, t.elem) for x in v)
    if isinstance(t, T.TupleType):
        return isinstance(v, tuple) and (not t.elems or (len(v) == len(t.elems) and
                                                         all(_fits(x, e) for x, e in zip(v, t.elems))))
    if isinstance(t, T.DictType):
        return isinstance(v, dict)
    simple = {T.IntType: int, T.FloatType: float, T.BoolType: bool, T.StrType: str, T.NoneType: type(None),
              T.DeviceType: torch.device, T.ComplexType: complex}
    py = simple.get(t)
    if py is not None:
        return isinstance(v, py) and not (py is int and isinstance(v, bool))
    if isinstance(t, T.ClassType):
        return getattr(v, "_kiln_type", None) == t.qualname or \
            type(v).__name__ == t.qualname.rsplit(".", 1)[-1]
    return False


def set_grad_enabled(flag: bool) -> None:
    torch.set_grad_enabled(flag)


def is_grad_enabled() -> bool:
    return torch.is_grad_enabled()


def _lower_create(node: Any, a: list[str], bind: Any) -> str:
    cls = node.attrs.get("cls")
    if isinstance(cls, ScriptClass):
        return f"{bind(ScriptObject, 'ScriptObject')}({cls.qualname!r}, {bind(cls, 'cls')})"
    return f"_objects.create_object(qualname={node.output.type.qualname!r})"


prim("prim::CreateObject() -> Any", create_object, lower=_lower_create)
prim("prim::kiln_completed_future(t value) -> Future(t)", completed_future,
     lambda n, a: f"_objects.Future({a[0]})")
prim("aten::wait(Future(t) self) -> t", wait, lambda n, a: f"{a[0]}.value")
prim("prim::EnumName(Any enum) -> str", enum_name, lambda n, a: f"{a[0]}.name")
prim("prim::EnumValue(Any enum) -> Any", enum_value, lambda n, a: f"{a[0]}.value")
prim("aten::eq.enum(Any a, Any b) -> bool", lambda a, b: a is b, lambda n, a: f"({a[0]} is {a[1]})")
prim("aten::ne.enum(Any a, Any b) -> bool", lambda a, b: a is not b,
     lambda n, a: f"({a[0]} is not {a[1]})")
prim("prim::isinstance(Any to_check) -> bool", lambda v, *, types=(): value_is(v, types),
     lambda n, a: f"_objects.value_is({a[0]}, {tuple(n.attrs.get('types', ()))!r})")
prim("prim::kiln_del_slice(t[] l, int? start, int? end, int step) -> ()", del_slice,
     lambda n, a: f"_objects.del_slice({', '.join(a)})", side_effects=True)
_tensor = prim("aten::tensor(t[] data, *, ScalarType? dtype=None, Device? device=None, "
               "bool requires_grad=False) -> Tensor", torch.tensor)
_tensor.kw_names = ("dtype", "device", "requires_grad")
prim("prim::kiln_tensor_flag(Tensor self) -> bool", lambda t, *, name: bool(getattr(t, name)),
     lambda n, a: f"{a[0]}.{n.attrs['name']}")
prim("prim::kiln_round_ndigits(float x, int n) -> float", lambda x, n: round(x, n))
prim("prim::kiln_python_call(...) -> Any", lambda *a, fn: fn(*a), side_effects=True)
prim("prim::kiln_argsort(t[] keys, bool reverse) -> int[]", argsort)
prim("aten::_set_grad_enabled(bool enabled) -> ()", set_grad_enabled,
     lambda n, a: f"torch.set_grad_enabled({a[0]})", side_effects=True)
prim("aten::is_grad_enabled() -> bool", is_grad_enabled, lambda n, a: "torch.is_grad_enabled()",
     side_effects=True)
