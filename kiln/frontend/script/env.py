"""Scopes and the compile-time values the script compiler works with.

A name in scope is bound to an IR :class:`~kiln.ir.graph.Value` or to one of the few
compile-time values below -- the closed set DESIGN.md asks for:

* :class:`PyObj` -- a Python object known while compiling: a module (``math``, ``torch``),
  a function to compile, a torch builtin, a class, or a constant (``N = 3`` at module level);
* :class:`ModuleVal` -- ``self`` or a submodule, with the IR value that holds it;
* :class:`ObjectVal` -- an instance of a script class, with the IR value that holds it;
* :class:`Bound` -- ``base.name`` awaiting its call (a method);
* :class:`Items` -- a fixed sequence unrolled at compile time (a tuple being iterated, an
  ``nn.ModuleList``);
* :class:`LambdaVal` -- a lambda, inlined where it is called;
* :class:`SuperVal` -- ``super()`` inside a method;
* :class:`Undefined` -- a name some path does not define; using it is an error that says why;
* :class:`~kiln.frontend.script.builtins.RangeVal` and
  :class:`~kiln.frontend.script.builtins.ZipVal` -- ``range(...)``, ``zip(...)`` and
  ``enumerate(...)`` about to be iterated (they live with the builtins that make them).
"""

from __future__ import annotations

import ast
import enum
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any, Optional, Protocol, Union

import torch

from kiln.ir.graph import Value
from kiln.ir.types import Type

if TYPE_CHECKING:
    from kiln.frontend.script.builtins import RangeVal, ZipVal
    from kiln.frontend.script.compiler import ClassInfo
    from kiln.frontend.script.emitter import FunctionEmitter
    from kiln.frontend.script.modules import ModuleInfo
    from kiln.frontend.script.source import Source


@dataclass(frozen=True, eq=False)
class PyObj:
    obj: Any


@dataclass(frozen=True, eq=False)
class ModuleVal:
    value: Value
    info: ModuleInfo


@dataclass(frozen=True, eq=False)
class ObjectVal:
    value: Value
    info: ClassInfo


@dataclass(frozen=True, eq=False)
class Bound:
    base: Union[Value, Sugar]
    name: str


@dataclass(frozen=True, eq=False)
class Items:
    items: tuple[Union[Value, Sugar], ...]
    keys: Optional[tuple[str, ...]] = None      # ModuleDict keys


@dataclass(frozen=True, eq=False)
class LambdaVal:
    node: ast.Lambda
    scope: Scope
    emitter: FunctionEmitter    # the emitter whose source the lambda is in


@dataclass(frozen=True, eq=False)
class SuperVal:
    base: Union[ModuleVal, ObjectVal]
    cls: type           # super() of this class: look methods up after it in the MRO


class Unit(Protocol):
    """Where a source function's names are looked up (a CompilationUnit, an archive)."""

    def namespace(self) -> dict[str, Any]: ...


@dataclass(eq=False)
class SourceFunction:
    """A function given as source text (``kiln.compile``): no Python object behind it."""

    name: str
    source: Source
    fdef: ast.FunctionDef
    unit: Unit


@dataclass(frozen=True, eq=False)
class Undefined:
    name: str
    why: str


Sugar = Union[PyObj, ModuleVal, ObjectVal, Bound, Items, LambdaVal, SuperVal, Undefined,
              "RangeVal", "ZipVal"]
Binding = Union[Value, Sugar]


def is_constant(v: Any) -> bool:
    """Whether a Python value can be used as a constant of compiled code (a PyObj that
    becomes a ``prim::Constant``): numbers, strings, None, devices, dtypes, enum members
    and tuples of those."""
    return isinstance(v, (bool, int, float, str, type(None), torch.device, torch.dtype, enum.Enum)) or \
        (isinstance(v, tuple) and all(is_constant(x) for x in v))


@dataclass(eq=False)
class Scope:
    """The names one block binds; lookups walk out to the enclosing blocks of the function."""

    parent: Optional[Scope] = None
    vars: dict[str, Binding] = field(default_factory=dict)
    refined: dict[str, Value] = field(default_factory=dict)    # narrowed types (x is not None)
    declared: dict[str, Type] = field(default_factory=dict)    # a name's type, fixed once

    def get(self, name: str) -> Optional[Binding]:
        s: Optional[Scope] = self
        while s is not None:
            if name in s.refined:
                return s.refined[name]
            if name in s.vars:
                return s.vars[name]
            s = s.parent
        return None

    def declared_type(self, name: str) -> Optional[Type]:
        s: Optional[Scope] = self
        while s is not None:
            if name in s.declared:
                return s.declared[name]
            s = s.parent
        return None

    def child(self) -> Scope:
        return Scope(self)
