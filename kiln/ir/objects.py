"""Operators for objects, enums, futures and grad mode (used by script-compiled code).

Registered like the prims in :mod:`kiln.ir.prims`: schema, semantics, and the inline Python
the code generator writes.
"""

from __future__ import annotations

from typing import Any

import torch

from kiln.ir.prims import prim


class ScriptObject:
    """An instance of a script class at run time: a named bag of attributes."""

    def __init__(self, qualname: str) -> None:
        self._kiln_type = qualname

    def __repr__(self) -> str:
        fields = ", ".join(f"{k}={v!r}" for k, v in vars(self).items() if k != "_kiln_type")
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
    cls = NAMEDTUPLES.get(t.qualname)
    if cls is None:
        import collections
        cls = collections.namedtuple(t.qualname.rsplit(".", 1)[-1], [f for f, _ in t.fields])  # type: ignore[misc]
        NAMEDTUPLES[t.qualname] = cls
    return cls


def create_object(*, qualname: str = "") -> ScriptObject:
    return ScriptObject(qualname)


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


def set_grad_enabled(flag: bool) -> None:
    torch.set_grad_enabled(flag)


def is_grad_enabled() -> bool:
    return torch.is_grad_enabled()


def _emit_create(node: Any, a: list[str]) -> str:
    return f"_objects.create_object(qualname={node.output.type.qualname!r})"


prim("prim::CreateObject() -> Any", create_object, _emit_create)
prim("prim::kiln_completed_future(t value) -> Future(t)", completed_future,
     lambda n, a: f"_objects.Future({a[0]})")
prim("aten::wait(Future(t) self) -> t", wait, lambda n, a: f"{a[0]}.value")
prim("prim::EnumName(Any enum) -> str", enum_name, lambda n, a: f"{a[0]}.name")
prim("prim::EnumValue(Any enum) -> Any", enum_value, lambda n, a: f"{a[0]}.value")
prim("prim::kiln_argsort(t[] keys, bool reverse) -> int[]", argsort)
prim("aten::_set_grad_enabled(bool enabled) -> ()", set_grad_enabled,
     lambda n, a: f"torch.set_grad_enabled({a[0]})", side_effects=True)
prim("aten::is_grad_enabled() -> bool", is_grad_enabled, lambda n, a: "torch.is_grad_enabled()",
     side_effects=True)
