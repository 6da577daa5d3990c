"""What every part of a function's emitter shares: its state, and the interface between parts.

:class:`~kiln.frontend.script.emitter.FunctionEmitter` is assembled from mixins -- expressions
(:mod:`.exprs`), calls (:mod:`.calls`), subscripts and comprehensions (:mod:`.subscripts`)
-- on top of :class:`EmitterBase`, which holds the state they all work on (the session, the
builder, the scope, the values known to be uninitialized) and the few helpers every part
uses.  The parts call one another freely (an expression calls an operator, a call evaluates
its arguments); the methods one part uses from another are declared here, for the type
checker only, so that each mixin type-checks on its own.  At run time the mixins' own
definitions are the only ones.
"""

from __future__ import annotations

import ast
from typing import TYPE_CHECKING, Any, Optional, cast

from kiln.errors import CompileError
from kiln.frontend.script.env import Binding, Scope
from kiln.frontend.script.source import Source
from kiln.ir.builder import Builder
from kiln.ir.graph import Value
from kiln.ir.types import Type

if TYPE_CHECKING:
    from kiln.frontend.script.compiler import Compiler
    from kiln.frontend.script.emitter import Exit, FunctionEmitter
    from kiln.frontend.script.exprs import Refinements


class EmitterBase:
    """The state of one function body being emitted, and the helpers every part uses."""

    def __init__(self, comp: Compiler, b: Builder, source: Source, name: str,
                 globals_: dict[str, Any], closure: Optional[dict[str, Any]] = None,
                 self_class: Optional[type] = None) -> None:
        self.comp = comp
        self.b = b
        self.source = source
        self.name = name
        self.globals = globals_
        self.closure = closure or {}
        self.self_class = self_class     # the Python class whose method this is (for super())
        self.scope = Scope()
        self.uninit: set[Value] = set()     # prim::Uninitialized placeholders (no value yet)
        self.return_type: Optional[Type] = None
        self.expected_type: Optional[Type] = None    # the annotated type of the value being built
        self.here: Optional[ast.AST] = None          # the statement or expression being emitted

    @property
    def emitter(self) -> FunctionEmitter:
        """This emitter as the whole it is a part of, which is what the session's methods and
        the builtins take: every EmitterBase is a FunctionEmitter (the mixins are never
        used alone), which the type checker cannot see from inside a mixin."""
        return cast("FunctionEmitter", self)

    # -- errors and locations -----------------------------------------------------------
    def fail(self, node: Optional[ast.AST], cause: str) -> CompileError:
        return self.comp.error(node, cause)

    def at(self, node: ast.AST) -> None:
        self.b.source = self.source.range(node)
        self.here = node

    @property
    def restricted(self) -> bool:
        """Whether this is code from an archive (see ``kiln.serialization.build.ArchiveUnit``):
        it may call operators and its own functions only -- no Python functions, no torch
        submodules, no lambdas or generators, no operators that touch files."""
        return bool(self.globals.get("__kiln_restricted__"))

    # -- values --------------------------------------------------------------------------
    def uninitialized(self, t: Type) -> Value:
        v = self.b.value("prim::Uninitialized", [], t)
        self.uninit.add(v)
        return v

    def constant_of(self, v: Value) -> Any:
        """The Python value of a ``prim::Constant`` (``...`` when ``v`` is not constant)."""
        if v.node.kind == "prim::Constant":
            return v.node.attrs.get("value")
        return ...

    def apply_refinements(self, refs: dict[str, Type]) -> None:
        for name, t in refs.items():
            v = self.scope.get(name)
            if isinstance(v, Value) and v.type != t:
                cast = self.b.value("prim::unchecked_cast", [v], t)
                cast.name = name
                self.scope.refined[name] = cast

    if TYPE_CHECKING:
        # -- defined in exprs.ExprMixin --------------------------------------------------
        def expr(self, node: ast.expr, expected: Optional[Type] = None) -> Binding: ...

        def value(self, node: ast.expr, expected: Optional[Type] = None) -> Value: ...

        def to_value(self, b: Binding, where: Optional[ast.AST]) -> Value: ...

        def str_of(self, v: Value, node: ast.AST) -> Value: ...

        def check_implements(self, v: Value, t: Type, where: Optional[ast.AST], what: str) -> None: ...

        def attribute(self, base: Binding, name: str, node: ast.AST) -> Binding: ...

        def isinstance_check(self, node: ast.Call) -> tuple[Value, Refinements, Refinements]: ...

        # -- defined in calls.CallMixin ----------------------------------------------------
        def try_op(self, name: str, args: list[Value], kwargs: dict[str, Value]) -> Optional[Value]: ...

        def op_value(self, name: str, args: list[Value], kwargs: dict[str, Value],
                     node: Optional[ast.AST]) -> Value: ...

        def enum_constant(self, v: Value, expected: Type) -> Value: ...

        def annotation(self, node: ast.expr) -> Type: ...

        def unpack_for_assignment(self, value: Binding, where: ast.AST, n: int,
                                  star: Optional[int]) -> list[Binding]: ...

        # -- defined in emitter.FunctionEmitter ------------------------------------------
        def emit_stmt(self, s: ast.stmt) -> Exit: ...

        def assign(self, target: ast.expr, value: Binding, where: ast.AST,
                   declared: Optional[Type]) -> None: ...

        def lookup_name(self, node: ast.Name) -> Binding: ...
