"""Statements and control flow: Python AST -> Kiln IR, directly in SSA form.

One :class:`FunctionEmitter` emits one function body (a scripted function, a method, or a
function inlined at its call site) through a :class:`~kiln.ir.builder.Builder`.  The body is
first lowered by :mod:`kiln.frontend.script.exits`, so control flow is structured:

* ``if``: each branch is emitted in a child :class:`Scope`; names either branch assigns
  become outputs of the ``prim::If`` (their types unified), a branch that ends in ``return``
  yields the returned value as an extra output, and a branch that ends in ``raise`` yields
  ``prim::Uninitialized`` placeholders;
* loops: names the body assigns that exist before the loop are carried (block parameters
  and loop outputs).  A carried name whose type the body decides (a return value first set
  inside a loop) is emitted twice: the first pass learns the type;
* refinement: ``x is not None``, ``isinstance(x, T)`` and friends narrow ``x`` inside the
  branch (and after an ``assert``) through ``prim::unchecked_cast``.

Expressions, calls and subscripts live in :mod:`.exprs`, :mod:`.calls` and :mod:`.subscripts`,
mixins of this class on :class:`~kiln.frontend.script.base.EmitterBase` (the shared state).
"""

from __future__ import annotations

import ast
import copy
from collections.abc import Callable
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, Optional

from kiln.frontend.script import exits
from kiln.frontend.script.calls import CallMixin
from kiln.frontend.script.env import (
    Binding,
    Bound,
    Items,
    ModuleVal,
    ObjectVal,
    PyObj,
    Scope,
    Undefined,
)
from kiln.frontend.script.exprs import ExprMixin
from kiln.frontend.script.subscripts import SubscriptMixin
from kiln.ir.graph import Block, Node, Value
from kiln.ir.types import (
    AnyType,
    BoolType,
    ClassType,
    InterfaceType,
    IntType,
    NoneType,
    OptionalType,
    TupleType,
    Type,
    is_subtype,
    unify,
)

if TYPE_CHECKING:
    from kiln.frontend.script.compiler import ParsedFunction

INT_MAX = 9223372036854775807


@dataclass
class Exit:
    """How a statement list ends: it falls through, returns ``value``, or raises."""

    kind: str                      # "fall" | "return" | "raise"
    value: Optional[Value] = None
    where: Optional[ast.AST] = None    # the `return` statement, for errors


FALL = Exit("fall")


class FunctionEmitter(ExprMixin, CallMixin, SubscriptMixin):
    """Emits one function body; its state and constructor are :class:`EmitterBase`'s."""

    # -- a whole body ------------------------------------------------------------------
    def emit_body(self, body: list[ast.stmt], where: ast.AST,
                  parsed: Optional[ParsedFunction] = None) -> Value:
        """Emit a function body; returns the value it returns.  ``parsed`` (a
        ``ParsedFunction``) caches the lowered body, as a function is often inlined many times."""
        lowered = parsed.lowered if parsed is not None else None
        if lowered is None:
            # Lowering rewrites the tree: a copy, except for an archive's code, whose trees
            # belong to the load alone (and are lowered once, cached on ``parsed``).
            own = parsed is not None and self.restricted
            lowered = exits.lower_exits(body if own else copy.deepcopy(body), where)
            if parsed is not None:
                parsed.lowered = lowered
        if self.return_type is not None:    # every `return` converts to the declared type
            self.scope.declared[exits.RESULT] = self.return_type
        ex = self.emit_stmts(lowered)
        if ex.kind == "raise" or ex.value is None:
            return self.uninitialized(self.return_type or NoneType)
        return ex.value

    def emit_stmts(self, stmts: list[ast.stmt]) -> Exit:
        for s in stmts:
            self.at(s)
            ex = self.emit_stmt(s)
            if ex.kind != "fall":
                return ex
        return FALL

    def emit_stmt(self, s: ast.stmt) -> Exit:
        method = getattr(self, "stmt_" + type(s).__name__, None)
        if method is None:
            raise self.fail(s, self._unsupported_stmt(s))
        result: Exit = method(s)
        return result

    def _unsupported_stmt(self, s: ast.stmt) -> str:
        hints = {
            "Try": "try/except is not supported in compiled code: check the condition with `if` "
                   "and raise (or return a default) instead",
            "FunctionDef": "nested function definitions are not supported: define the function at "
                           "module level (it is compiled when called) or use a lambda",
            "ClassDef": "classes must be defined at module level",
            "Global": "`global` is not supported: pass the value in, or make it a module attribute",
            "Nonlocal": "`nonlocal` is not supported: return the new value instead",
            "Import": "import statements are not supported inside compiled code: import at module level",
            "ImportFrom": "import statements are not supported inside compiled code: import at module level",
            "AsyncFunctionDef": "async functions are not supported",
            "Match": "match statements are not supported: use if/elif",
        }
        kind = type(s).__name__
        return hints.get(kind, f"{kind} statements are not supported in compiled code")

    # -- simple statements -------------------------------------------------------------
    def stmt_Pass(self, s: ast.Pass) -> Exit:
        return FALL

    def stmt_Expr(self, s: ast.Expr) -> Exit:
        if isinstance(s.value, ast.Constant) and isinstance(s.value.value, str):
            return FALL   # a docstring
        self.expr(s.value)
        return FALL

    def stmt_Return(self, s: ast.Return) -> Exit:
        if s.value is None:
            return Exit("return", self.b.constant(None), s)
        v = self.value(s.value)
        if self.return_type is not None:
            v = self.convert(v, self.return_type, s.value, "the return value")
        return Exit("return", v, s)

    def stmt_Raise(self, s: ast.Raise) -> Exit:
        cls, msg = self.exception_parts(s.exc, s)
        self.b.raise_exception(msg, cls) if isinstance(msg, str) else self._raise_value(msg, cls)
        return Exit("raise")

    def _raise_value(self, msg: Value, cls: Optional[str]) -> None:
        from kiln.ir.types import StrType
        cls_v = self.b.constant(cls, StrType if cls is not None else OptionalType(StrType))
        self.b.op("prim::RaiseException", [msg, cls_v])

    def stmt_Assert(self, s: ast.Assert) -> Exit:
        cond, true_refs, _ = self.condition(s.test)
        const = self.constant_of(cond)
        if const is True:
            self.apply_refinements(true_refs)
            return FALL
        node = self.b.if_(cond)
        with self.b.at_end(node.blocks[1]):
            if s.msg is None:
                self.b.raise_exception(ast.unparse(s.test), "AssertionError")
            else:
                m = self.value(s.msg)
                m = self.str_of(m, s.msg)
                self._raise_value(m, "AssertionError")
        self.apply_refinements(true_refs)
        return FALL

    def stmt_Delete(self, s: ast.Delete) -> Exit:
        for t in s.targets:
            if isinstance(t, ast.Name):
                self.scope.vars[t.id] = Undefined(t.id, f"{t.id!r} was deleted (`del {t.id}`)")
            elif isinstance(t, ast.Subscript):
                self.delete_item(t)
            else:
                raise self.fail(t, "`del` takes a name or a subscript (`del x`, `del xs[i]`, `del d[k]`)")
        return FALL

    # -- assignment --------------------------------------------------------------------
    def stmt_Assign(self, s: ast.Assign) -> Exit:
        if isinstance(s.value, ast.Name) and s.value.id == exits.UNINITIALIZED:
            for t in s.targets:
                assert isinstance(t, ast.Name)
                self.scope.vars[t.id] = self.uninitialized(AnyType)
            return FALL
        value = self.expr(s.value)
        type_comment = getattr(s, "type_comment", None)
        declared = self.annotation_from_comment(type_comment, s) if type_comment else None
        for t in s.targets:
            self.assign(t, value, s.value, declared)
        return FALL

    def stmt_AnnAssign(self, s: ast.AnnAssign) -> Exit:
        declared = self.annotation(s.annotation)
        if s.value is None:
            if isinstance(s.target, ast.Name):
                self.scope.declared[s.target.id] = declared
                return FALL
            raise self.fail(s, "an annotated attribute needs a value")
        self.expected_type = declared
        try:
            value = self.expr(s.value, expected=declared)
        finally:
            self.expected_type = None
        self.assign(s.target, value, s.value, declared)
        return FALL

    def stmt_AugAssign(self, s: ast.AugAssign) -> Exit:
        target = s.target
        load: ast.expr     # the target, read
        if isinstance(target, ast.Name):
            load = ast.Name(id=target.id, ctx=ast.Load())
        elif isinstance(target, ast.Attribute):
            load = ast.Attribute(value=target.value, attr=target.attr, ctx=ast.Load())
        elif isinstance(target, ast.Subscript):
            load = ast.Subscript(value=target.value, slice=target.slice, ctx=ast.Load())
        else:
            raise self.fail(target, "augmented assignment needs a name, attribute or subscript")
        result = self.augmented(ast.copy_location(load, target), s.op, s.value, s)
        self.assign(target, result, s, None)
        return FALL

    def assign(self, target: ast.expr, value: Binding, where: ast.AST, declared: Optional[Type]) -> None:
        if isinstance(target, ast.Name):
            self.assign_name(target.id, value, where, declared)
        elif isinstance(target, (ast.Tuple, ast.List)):
            self.assign_unpack(target, value, where)
        elif isinstance(target, ast.Attribute):
            self.assign_attribute(target, self.to_value(value, where), where, declared)
        elif isinstance(target, ast.Subscript):
            self.assign_subscript(target, self.to_value(value, where), where)
        elif isinstance(target, ast.Starred):
            raise self.fail(target, "a starred target must be inside a tuple or list target")
        else:
            raise self.fail(target, f"cannot assign to {type(target).__name__}")

    def assign_name(self, name: str, value: Binding, where: ast.AST, declared: Optional[Type]) -> None:
        self.scope.refined.pop(name, None)
        if isinstance(value, PyObj) and _is_data(value.obj):
            value = self.to_value(value, where)    # a variable holds data, not a compile-time object
        if isinstance(value, ObjectVal) and _holds_interface(declared or self.scope.declared_type(name)):
            value = self.to_value(value, where)    # a variable of an interface type: any implementation
        if not isinstance(value, Value):
            self.scope.vars[name] = value
            return
        prev = self.scope.declared_type(name)
        if declared is None and _holds_interface(prev) and value not in self.uninit:
            declared = prev           # a variable of an interface type takes any implementation
        if declared is not None:
            value = self.upcast(self.convert(value, declared, where, f"{name!r}"), declared)
            self.scope.declared[name] = declared
        elif prev is not None and value not in self.uninit:
            if not is_subtype(value.type, prev):
                raise self.fail(where, f"variable {name!r} previously had type "
                                f"{prev.annotation()} but is now being assigned a value of type "
                                f"{value.type.annotation()}; use a new name, or annotate the first "
                                f"assignment with a type both fit (e.g. `{name}: "
                                f"{_suggest(prev, value.type)} = ...`)")
        elif value not in self.uninit:
            self.scope.declared[name] = value.type if value.type != NoneType else NoneType
        if value.name is None and value.node.kind != "prim::Param":
            value.name = name
        self.scope.vars[name] = value

    def upcast(self, v: Value, t: Type) -> Value:
        """A script-class object stored in a variable of an interface type is typed as the
        interface from there on (``unchecked_cast``), so that the branches of an ``if`` that
        store objects of different classes agree, in the graph and in the code printed from it."""
        if _holds_interface(t) and isinstance(v.type, ClassType) and not isinstance(v.type, InterfaceType):
            return self.b.value("prim::unchecked_cast", [v], t)
        return v

    def assign_unpack(self, target: ast.Tuple | ast.List, value: Binding, where: ast.AST) -> None:
        elts = target.elts
        star = [i for i, e in enumerate(elts) if isinstance(e, ast.Starred)]
        if len(star) > 1:
            raise self.fail(target, "only one starred target is allowed")
        parts = self.unpack_for_assignment(value, where, len(elts), star[0] if star else None)
        for e, p in zip(elts, parts):
            if isinstance(e, ast.Starred):
                self.assign(e.value, p, where, None)
            else:
                self.assign(e, p, where, None)

    # -- if ----------------------------------------------------------------------------
    def stmt_If(self, s: ast.If) -> Exit:
        cond, true_refs, false_refs = self.condition(s.test)
        const = self.constant_of(cond)
        if const is True or const is False:
            # A condition known while compiling (`torch.jit.is_scripting()`, `x is None` for a
            # non-Optional x, a Final flag): only the taken branch is compiled.
            self.apply_refinements(true_refs if const else false_refs)
            return self.emit_stmts(s.body if const else s.orelse)
        return self.emit_if(cond, s.body, s.orelse, true_refs, false_refs)

    def emit_if(self, cond: Value, body: list[ast.stmt], orelse: list[ast.stmt],
                true_refs: dict[str, Type], false_refs: dict[str, Type]) -> Exit:
        node = self.b.if_(cond)
        outer = self.scope
        results: list[tuple[Scope, Exit, Block]] = []
        for block, stmts, refs in ((node.blocks[0], body, true_refs), (node.blocks[1], orelse, false_refs)):
            self.scope = outer.child()
            with self.b.at_end(block):
                self.apply_refinements(refs)
                ex = self.emit_stmts(stmts)
            results.append((self.scope, ex, block))
        self.scope = outer
        return self.merge_if(node, results)

    def merge_if(self, node: Node, results: list[tuple[Scope, Exit, Block]]) -> Exit:
        (sa, ea, ba), (sb, eb, bb) = results
        live = [(s, e, b) for s, e, b in results if e.kind == "fall"]
        names = list(dict.fromkeys([*sa.vars, *sb.vars]))
        for name in names:
            if len(live) == 1:
                s, _, _ = live[0]
                v = s.get(name)
                self._merge_one_sided(node, name, v, results, live[0])
                continue
            if not live:
                continue
            va, vb = sa.get(name), sb.get(name)
            self._merge_name(node, name, va, vb, ba, bb)
        returning = [e for e in (ea, eb) if e.kind == "return"]
        if returning and all(e.kind in ("return", "raise") for e in (ea, eb)):
            return Exit("return", self._merge_returns(node, ea, eb, ba, bb))
        if ea.kind == "raise" and eb.kind == "raise":
            return Exit("raise")
        if returning:
            raise self.fail(None, "internal error: a branch returns while the other falls through")
        return FALL

    def _merge_one_sided(self, node: Node, name: str, v: Optional[Binding],
                         results: list[tuple[Scope, Exit, Block]], live: tuple[Scope, Exit, Block]) -> None:
        """Only one branch continues past the ``if``: its binding wins (the other raised)."""
        if v is None or not isinstance(v, Value):
            if v is not None:
                self.scope.vars[name] = v
            return
        outer = self.scope.get(name)
        if outer is v:
            return
        out = node.add_output(v.type, name)
        for s, e, b in results:
            if (s, e, b) == live:
                b.register_output(v)
            else:
                with self.b.at_end(b):
                    b.register_output(self.uninitialized(v.type))
        self.scope.vars[name] = out
        decl = live[0].declared.get(name)
        if decl is not None and self.scope.declared_type(name) is None:
            self.scope.declared[name] = decl

    def _merge_name(self, node: Node, name: str, va: Optional[Binding], vb: Optional[Binding],
                    ba: Block, bb: Block) -> None:
        if va is vb:
            return
        if va is None or vb is None or isinstance(va, Undefined) or isinstance(vb, Undefined):
            branch = "false" if (va is not None and not isinstance(va, Undefined)) else "true"
            why = (f"{name!r} is not defined in the {branch} branch of an earlier `if`; "
                   "assign it in both branches or before the `if`")
            self.scope.vars[name] = Undefined(name, why)
            return
        if not isinstance(va, Value) or not isinstance(vb, Value):
            if _same_sugar(va, vb):
                self.scope.vars[name] = va
                return
            self.scope.vars[name] = Undefined(name, f"{name!r} is bound to different compile-time values "
                                                    "in the two branches of an earlier `if`")
            return
        declared = self.scope.declared_type(name)
        t = self._join_types(va, vb, declared)
        if t is None:
            self.scope.vars[name] = Undefined(
                name, f"{name!r} is {va.type.annotation()} in the true branch and "
                      f"{vb.type.annotation()} in the false branch of an earlier `if`; annotate it "
                      f"before the `if` with a type both fit, e.g. Optional[...] or Union[...]")
            return
        for b, v in ((ba, va), (bb, vb)):
            with self.b.at_end(b):
                b.register_output(self._fill_uninit(v, t))
        out = node.add_output(t, name)
        self.scope.vars[name] = out
        if declared is None:
            self.scope.declared[name] = t

    def _join_types(self, va: Value, vb: Value, declared: Optional[Type]) -> Optional[Type]:
        if va in self.uninit:
            return vb.type if vb not in self.uninit else AnyType
        if vb in self.uninit:
            return va.type
        if declared is not None and is_subtype(va.type, declared) and is_subtype(vb.type, declared) \
                and va.type != vb.type:
            return declared
        return unify(va.type, vb.type)

    def _fill_uninit(self, v: Value, t: Type) -> Value:
        if v in self.uninit and v.type != t:
            return self.uninitialized(t)
        return v

    def _merge_returns(self, node: Node, ea: Exit, eb: Exit, ba: Block, bb: Block) -> Value:
        exits = [e for e in (ea, eb) if e.kind == "return" and e.value is not None]
        vals = [e.value for e in exits if e.value is not None]
        t: Optional[Type] = vals[0].type
        for v in vals[1:]:
            t = self._join_types(vals[0], v, self.return_type) if t is not None else None
        if t is None:
            raise self.fail(exits[-1].where,
                            f"the function returns {vals[0].type.annotation()} on one path and "
                            f"{vals[1].type.annotation()} on another; annotate its return type "
                            "with a type both fit (e.g. Optional[...])")
        for e, b in ((ea, ba), (eb, bb)):
            with self.b.at_end(b):
                v = e.value if e.kind == "return" and e.value is not None else self.uninitialized(t)
                b.register_output(self._fill_uninit(v, t))
        return node.add_output(t)

    # -- loops -------------------------------------------------------------------------
    def stmt_While(self, s: ast.While) -> Exit:
        return self.emit_loop(s, None)

    def stmt_For(self, s: ast.For) -> Exit:
        it = self.expr(s.iter)
        unrolled = self.unrolled_items(it, s.iter)
        if unrolled is not None:
            return self.emit_unrolled(s, unrolled)
        return self.emit_loop(s, it)

    def emit_unrolled(self, s: ast.For, items: list[Binding]) -> Exit:
        cond = getattr(s, "kiln_cond", None)
        for i, item in enumerate(items):
            for n in ast.walk(s.target):
                if isinstance(n, ast.Name):
                    self.scope.declared.pop(n.id, None)
            self.assign(s.target, item, s, None)
            if i and cond is not None:
                guard = ast.copy_location(ast.If(test=cond, body=list(s.body), orelse=[]), s)
                ex = self.stmt_If(guard)
            else:
                ex = self.emit_stmts(list(s.body))
            if ex.kind != "fall":
                return ex
        return FALL

    def emit_loop(self, s: ast.For | ast.While, it: Optional[Binding]) -> Exit:
        carried = self.carried_names(s)
        forced: dict[str, Type] = {}
        for _attempt in range(6):
            node, needs = self._try_loop(s, it, carried, forced)
            if not needs:
                return FALL
            node.destroy()
            for name, t in needs.items():
                if t is None:
                    carried.remove(name)
                else:
                    forced[name] = t
        raise self.fail(s, "internal error: loop-carried types did not settle")

    def carried_names(self, s: ast.For | ast.While) -> list[str]:
        """Names the body assigns that are bound before the loop, and the loop's targets
        (which start uninitialized, so that they are defined after the loop as in Python)."""
        assigned: list[str] = []
        for n in ast.walk(ast.Module(body=list(s.body), type_ignores=[])):
            if isinstance(n, ast.Name) and isinstance(n.ctx, ast.Store) and n.id not in assigned:
                assigned.append(n.id)
        if isinstance(s, ast.For):
            assigned.extend(n.id for n in ast.walk(s.target)
                            if isinstance(n, ast.Name) and n.id not in assigned)
        targets = {n.id for n in ast.walk(s.target) if isinstance(n, ast.Name)} \
            if isinstance(s, ast.For) else set()
        out = []
        for name in assigned:
            v = self.scope.get(name)
            if isinstance(v, Value) or (name in targets and not name.startswith("__kiln_c")):
                out.append(name)     # a for loop's target stays defined after it, as in Python
        return out

    def _try_loop(self, s: ast.For | ast.While, it: Optional[Binding], carried: list[str],
                  forced: dict[str, Type]) -> tuple[Node, dict[str, Optional[Type]]]:
        """Emit the loop once.  Returns the ``prim::Loop`` and what the next attempt needs:
        name -> the type the body gave a value first assigned in it (None: not carried)."""
        entry, types = self._loop_entry(carried, forced)
        trip, start_cond, iterate = self.loop_header(s, it)
        node = self.b.graph.create("prim::Loop", [trip, start_cond, *entry], types)
        self.b.insert(node)
        body = node.add_block()
        index = body.add_input(IntType, "i")
        outer = self.scope
        self.scope = outer.child()
        for name, t, v in zip(carried, types, entry):
            p = body.add_input(t, name)
            self.scope.vars[name] = p
            if t == AnyType and v in self.uninit:
                self.uninit.add(p)
        with self.b.at_end(body):
            iterate(index)
            ex = self.emit_stmts(list(s.body))
            next_cond = self.loop_next_condition(s) if ex.kind == "fall" else self.b.constant(False)
            body.register_output(next_cond)
            needs = self._loop_results(s, body, carried, types, entry)
        inner = self.scope
        self.scope = outer
        if not needs:
            self._after_loop(node, carried, inner)
        return node, needs

    def _loop_entry(self, carried: list[str], forced: dict[str, Type]) -> tuple[list[Value], list[Type]]:
        """The values the carried names enter the loop with, and the carried types (Any for a
        name first assigned in the body, until an attempt has learned its type)."""
        entry: list[Value] = []
        for name in carried:
            v = self.scope.get(name)
            if not isinstance(v, Value):
                v = self.uninitialized(AnyType)   # first assigned in the body
            if name in forced and v in self.uninit:
                v = self.uninitialized(forced[name])
            entry.append(v)
        types = [forced.get(n) or self.scope.declared_type(n) or v.type for n, v in zip(carried, entry)]
        types = [t if not (v in self.uninit and n not in forced) else AnyType
                 for n, v, t in zip(carried, entry, types)]
        return entry, types

    def _loop_results(self, s: ast.For | ast.While, body: Block, carried: list[str], types: list[Type],
                      entry: list[Value]) -> dict[str, Optional[Type]]:
        """Register the carried values at the end of the body; return what the loop must be
        emitted again for (see ``_try_loop``)."""
        needs: dict[str, Optional[Type]] = {}
        for name, t, before in zip(carried, types, entry):
            v = self.scope.get(name)
            if not isinstance(v, Value):
                if before in self.uninit:
                    needs[name] = None     # a compile-time value local to the body: not carried
                    body.register_output(before)
                    continue
                raise self.fail(s, f"{name!r} is bound to a compile-time value inside the loop; "
                                   "compile-time values cannot change in a loop")
            if t == AnyType and v not in self.uninit and v.type != AnyType:
                needs[name] = v.type
            body.register_output(self._fill_uninit(v, t))
        return needs

    def _after_loop(self, node: Node, carried: list[str], inner: Scope) -> None:
        """Bind the carried names to the loop's outputs; names only the body assigned are
        undefined after the loop."""
        for name, out in zip(carried, node.outputs):
            out.name = name
            self.scope.vars[name] = out
            if out.type == AnyType and inner.get(name) in self.uninit:
                self.uninit.add(out)
        for name in inner.vars:
            if name not in carried and not name.startswith("__kiln_"):
                self.scope.vars[name] = Undefined(
                    name, f"{name!r} is first assigned inside a loop, so it may be undefined after it; "
                          "assign it before the loop")

    def loop_header(self, s: ast.For | ast.While,
                    it: Optional[Binding]) -> tuple[Value, Value, Callable[[Value], None]]:
        """(max trip count, start condition, a function that binds the target in the body)."""
        if isinstance(s, ast.While):
            cond, _, _ = self.condition(s.test)
            return self.b.constant(INT_MAX), cond, lambda index: None
        assert it is not None
        trip, element = self.iteration(it, s.iter)
        start = self.b.constant(True)

        def bind(index: Value) -> None:
            self.assign(s.target, element(index), s.target, None)
        return trip, start, bind

    def loop_next_condition(self, s: ast.For | ast.While) -> Value:
        if isinstance(s, ast.While):
            cond, _, _ = self.condition(s.test)
            return cond
        extra = getattr(s, "kiln_cond", None)
        if extra is None:
            return self.b.constant(True)
        cond, _, _ = self.condition(extra)
        return cond

    # -- names -------------------------------------------------------------------------
    def lookup_name(self, node: ast.Name) -> Binding:
        v = self.scope.get(node.id)
        if v is not None:
            if isinstance(v, Undefined):
                raise self.fail(node, v.why)
            return v
        if node.id in self.closure:
            return PyObj(self.closure[node.id])
        if node.id in self.globals:
            return PyObj(self.globals[node.id])
        import builtins
        if hasattr(builtins, node.id):
            return PyObj(getattr(builtins, node.id))
        if node.id in (exits.WITH_ENTER, exits.WITH_EXIT):
            return PyObj(node.id)
        raise self.fail(node, f"undefined name {node.id!r}")


def _holds_interface(t: Optional[Type]) -> bool:
    return isinstance(t.elem if isinstance(t, OptionalType) else t, InterfaceType)


def _is_data(obj: Any) -> bool:
    import enum

    import torch
    return isinstance(obj, (bool, int, float, str, complex, enum.Enum, torch.device, torch.dtype)) or (
        isinstance(obj, tuple) and not hasattr(obj, "_fields") and all(_is_data(x) for x in obj))


def _same_sugar(a: Binding, b: Binding) -> bool:
    if isinstance(a, PyObj) and isinstance(b, PyObj):
        return a.obj is b.obj
    if isinstance(a, (ModuleVal, ObjectVal)) and isinstance(b, (ModuleVal, ObjectVal)):
        return a.value is b.value
    if isinstance(a, (Bound, Items)):
        return a is b
    return False


def _suggest(a: Type, b: Type) -> str:
    if a == NoneType:
        return f"Optional[{b.annotation()}]"
    if b == NoneType:
        return f"Optional[{a.annotation()}]"
    return f"Union[{a.annotation()}, {b.annotation()}]"


__all__ = ["FunctionEmitter", "Exit", "TupleType", "BoolType"]
