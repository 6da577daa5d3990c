"""Lower ``return``/``break``/``continue`` (and ``with``) to structured control flow.

The emitter only knows structured blocks: an ``if`` whose branches fall through or end in a
``return``/``raise``, and loops whose body runs to its end.  This AST-to-AST lowering
removes every other exit, so the emitter never has to jump:

* the rest of a statement list after an ``if`` with one branch that always exits moves into
  the other branch (``if x is None: return 0`` / rest  ->  ``if ...: return 0 else: rest``),
  which also keeps the refinement of ``x`` in force for the rest;
* ``break`` sets a per-loop flag, and the loop's condition tests it; ``continue`` ends the
  body (the rest already moved into the other branch);
* where an exit sits deeper (inside a loop, or an ``if`` whose branch only *sometimes*
  exits), flags are used: ``return e`` becomes ``result = e; returned = True``, the rest of
  each enclosing list is guarded by ``if not returned:``, and loops test the flag too;
* ``with ctx: body`` becomes enter/exit calls around the body, with the exit call placed
  before every exit that leaves the body.

The flag names start with ``__kiln_`` and cannot clash with user names.  A result whose
type is not known before the loop starts as the special name :data:`UNINITIALIZED`; the
emitter gives it the right type once the body has assigned it.
"""

from __future__ import annotations

import ast
import copy
import itertools
from dataclasses import dataclass
from typing import Optional

RETURNED = "__kiln_returned"
RESULT = "__kiln_result"
UNINITIALIZED = "__kiln_uninitialized__"
WITH_ENTER = "__kiln_with_enter__"
WITH_EXIT = "__kiln_with_exit__"

_EXITS = (ast.Return, ast.Break, ast.Continue)


class _NeedsReturnFlags(Exception):
    pass


class _NeedsContinueFlag(Exception):
    def __init__(self, loop: _Loop) -> None:
        self.loop = loop


@dataclass(eq=False)
class _Loop:
    brk: str
    cont: Optional[str]


def _name(n: str, store: bool = False) -> ast.Name:
    return ast.Name(id=n, ctx=ast.Store() if store else ast.Load())


def _assign(n: str, value: ast.expr, like: ast.AST) -> ast.stmt:
    node = ast.Assign(targets=[_name(n, True)], value=value)
    return ast.copy_location(node, like)


def _const(v: Optional[bool]) -> ast.expr:
    return ast.Constant(value=v)


def _not_any(flags: list[str]) -> ast.expr:
    test: ast.expr = _name(flags[0]) if len(flags) == 1 else \
        ast.BoolOp(op=ast.Or(), values=[_name(f) for f in flags])
    return ast.UnaryOp(op=ast.Not(), operand=test)


_STATEMENT_LISTS = ("body", "orelse", "finalbody", "handlers", "cases")


def _walk_own(stmts: list[ast.stmt], loops: bool) -> list[ast.AST]:
    """Statements of ``stmts``, nested ones included, not inside nested functions or classes
    or (unless ``loops``) loops.  Expressions are not entered: the exits looked for are
    statements, and a lambda's body cannot hold one."""
    out: list[ast.AST] = []
    todo: list[ast.AST] = list(stmts)
    while todo:
        n = todo.pop()
        out.append(n)
        for field in _STATEMENT_LISTS:
            for c in getattr(n, field, None) or ():
                if isinstance(c, (ast.FunctionDef, ast.AsyncFunctionDef, ast.ClassDef)):
                    continue
                if not loops and isinstance(c, (ast.For, ast.While, ast.AsyncFor)):
                    todo.extend(c.orelse)   # a loop's else belongs to the enclosing loop
                    continue
                todo.append(c)
    return out


def contains_return(stmts: list[ast.stmt]) -> bool:
    return any(isinstance(n, ast.Return) for n in _walk_own(stmts, True))


def _contains_own(stmts: list[ast.stmt], kind: type) -> bool:
    return any(isinstance(n, kind) for n in _walk_own(stmts, False))


class _Lowering:
    def __init__(self, flag_returns: bool) -> None:
        self.flag_returns = flag_returns
        self.counter = itertools.count()

    # -- what a statement list does ----------------------------------------------------
    def terminates(self, stmts: list[ast.stmt]) -> bool:
        """Whether every path through ``stmts`` leaves it (return, raise, break, continue)."""
        if not stmts:
            return False
        last = stmts[-1]
        if isinstance(last, (*_EXITS, ast.Raise)):
            return True
        if isinstance(last, ast.If):
            return self.terminates(last.body) and self.terminates(last.orelse)
        return False

    def may_exit(self, s: ast.stmt, loop: Optional[_Loop]) -> list[str]:
        """The flags ``s`` may set by an exit inside it (after lowering)."""
        flags: list[str] = []
        if contains_return([s]):
            if not self.flag_returns:
                raise _NeedsReturnFlags()
            flags.append(RETURNED)
        if loop is not None and not isinstance(s, (ast.For, ast.While)):
            if _contains_own([s], ast.Break):
                flags.append(loop.brk)
            if _contains_own([s], ast.Continue):
                if loop.cont is None:
                    raise _NeedsContinueFlag(loop)
                flags.append(loop.cont)
        return flags

    # -- lowering ----------------------------------------------------------------------
    def block(self, stmts: list[ast.stmt], loop: Optional[_Loop]) -> list[ast.stmt]:
        out: list[ast.stmt] = []
        for i, s in enumerate(stmts):
            rest = stmts[i + 1:]
            if isinstance(s, (*_EXITS, ast.Raise)):
                out.extend(self.exit(s, loop))
                return out        # what follows an exit is dead
            if isinstance(s, ast.If) and self._has_exit(s, loop):
                out.extend(self.if_(s, rest, loop))
                return out
            if isinstance(s, (ast.For, ast.While)):
                lowered, flags = self.loop(s, loop)
                out.extend(lowered)
                if flags and rest:
                    out.append(ast.copy_location(
                        ast.If(test=_not_any(flags), body=self.block(rest, loop), orelse=[]), s))
                    return out
                continue
            out.append(s)
        return out

    def _has_exit(self, s: ast.stmt, loop: Optional[_Loop]) -> bool:
        nodes = _walk_own([s], False)
        if any(isinstance(n, ast.Raise) for n in nodes) or contains_return([s]):
            return True
        return loop is not None and any(isinstance(n, (ast.Break, ast.Continue)) for n in nodes)

    def exit(self, s: ast.stmt, loop: Optional[_Loop]) -> list[ast.stmt]:
        if isinstance(s, ast.Raise):
            return [s]
        if isinstance(s, ast.Return):
            if loop is not None and not self.flag_returns:
                raise _NeedsReturnFlags()
            if not self.flag_returns:
                return [s]
            value = s.value if s.value is not None else _const(None)
            return [_assign(RESULT, value, s), _assign(RETURNED, _const(True), s)]
        assert loop is not None, "break/continue outside a loop is rejected before lowering"
        if isinstance(s, ast.Break):
            return [_assign(loop.brk, _const(True), s)]
        return [] if loop.cont is None else [_assign(loop.cont, _const(True), s)]

    def if_(self, s: ast.If, rest: list[ast.stmt], loop: Optional[_Loop]) -> list[ast.stmt]:
        then_t, else_t = self.terminates(s.body), self.terminates(s.orelse)
        body, orelse = s.body, s.orelse
        tail: list[ast.stmt] = []
        if then_t and not else_t:
            orelse = orelse + rest
        elif else_t and not then_t:
            body = body + rest
        elif not (then_t and else_t) and rest:
            flags = self.may_exit(s, loop)
            tail = [ast.copy_location(ast.If(test=_not_any(flags), body=rest, orelse=[]), s)] \
                if flags else rest
        new = ast.copy_location(
            ast.If(test=s.test, body=self.block(body, loop) or [ast.Pass()],
                   orelse=self.block(orelse, loop)), s)
        return [new, *self.block(tail, loop)] if tail else [new]

    def loop(self, s: ast.For | ast.While, outer: Optional[_Loop]) -> tuple[list[ast.stmt], list[str]]:
        """The lowered loop (with its set-up) and the flags the statements after it must test."""
        k = next(self.counter)
        body: list[ast.stmt] = []
        inner = _Loop(f"__kiln_break{k}", None)
        for flag_continue in (False, True):
            inner = _Loop(f"__kiln_break{k}", f"__kiln_continue{k}" if flag_continue else None)
            try:
                body = self.block(list(s.body), inner)
                break
            except _NeedsContinueFlag as e:
                if e.loop is not inner:
                    raise
        uses_break = _contains_own(list(s.body), ast.Break)
        conds: list[str] = [inner.brk] if uses_break else []
        if self.flag_returns and contains_return(list(s.body)):
            conds.append(RETURNED)
        if inner.cont is not None:
            body = [_assign(inner.cont, _const(False), s), *body]
        pre = [_assign(inner.brk, _const(False), s)] if uses_break else []
        if isinstance(s, ast.While):
            test = s.test if not conds else ast.BoolOp(op=ast.And(), values=[_not_any(conds), s.test])
            new: ast.stmt = ast.copy_location(ast.While(test=test, body=body or [ast.Pass()], orelse=[]), s)
        else:
            new = ast.copy_location(ast.For(target=s.target, iter=s.iter, body=body or [ast.Pass()],
                                            orelse=[]), s)
            new.kiln_cond = _not_any(conds) if conds else None  # type: ignore[attr-defined]
        out = [*pre, new]
        if s.orelse:
            els = list(s.orelse)
            out.extend([ast.copy_location(ast.If(test=_not_any([inner.brk]), body=els, orelse=[]), s)]
                       if uses_break else els)
        after = [RETURNED] if RETURNED in conds else []
        return out, after


def lower_with(stmts: list[ast.stmt]) -> list[ast.stmt]:
    """Replace ``with`` statements by enter/exit calls (recursively)."""
    out: list[ast.stmt] = []
    for s in stmts:
        for field in ("body", "orelse", "finalbody"):
            if isinstance(getattr(s, field, None), list) and not isinstance(s, ast.With):
                setattr(s, field, lower_with(getattr(s, field)))
        if not isinstance(s, ast.With):
            out.append(s)
            continue
        body = lower_with(list(s.body))
        enters: list[ast.stmt] = []
        exits: list[str] = []
        for j, item in enumerate(s.items):
            tmp = f"__kiln_ctx{s.lineno}_{s.col_offset}_{j}"
            call = ast.Call(func=_name(WITH_ENTER), args=[item.context_expr], keywords=[])
            enters.append(_assign(tmp, call, s))
            if item.optional_vars is not None:
                bind = ast.Assign(targets=[item.optional_vars], value=_name(tmp))
                enters.append(ast.copy_location(bind, s))
            exits.append(tmp)
        exit_calls: list[ast.stmt] = []
        for t in reversed(exits):
            exit_call = ast.Call(func=_name(WITH_EXIT), args=[_name(t)], keywords=[])
            exit_calls.append(ast.copy_location(ast.Expr(value=exit_call), s))
        out.extend([*enters, *_before_exits(body, exit_calls, in_loop=False), *exit_calls])
    return out


def _before_exits(stmts: list[ast.stmt], calls: list[ast.stmt], in_loop: bool) -> list[ast.stmt]:
    out: list[ast.stmt] = []
    for s in stmts:
        leaves = isinstance(s, ast.Return) or (not in_loop and isinstance(s, (ast.Break, ast.Continue)))
        if leaves:
            out.extend(calls)
        # (copies: the tree is the function's own, lowered again on every inlining)
        if isinstance(s, ast.If):
            s = copy.copy(s)
            s.body = _before_exits(s.body, calls, in_loop)
            s.orelse = _before_exits(s.orelse, calls, in_loop)
        elif isinstance(s, (ast.For, ast.While)):
            s = copy.copy(s)
            s.body = _before_exits(s.body, calls, True)
        out.append(s)
    return out


def lower_exits(body: list[ast.stmt], where: ast.AST) -> list[ast.stmt]:
    """The lowered body of a function (see the module docstring); it ends in a ``return``."""
    body = lower_with(list(body))
    if not _Lowering(False).terminates(body):
        body = [*body, ast.copy_location(ast.Return(value=None), body[-1] if body else where)]
    try:
        return _Lowering(False).block(body, None)
    except _NeedsReturnFlags:
        pass
    pre = [_assign(RETURNED, _const(False), where), _assign(RESULT, _name(UNINITIALIZED), where)]
    lowered = _Lowering(True).block(body, None)
    return [*pre, *lowered, ast.copy_location(ast.Return(value=_name(RESULT)), where)]
