"""Source text for the script compiler, and the errors that point into it.

A :class:`Source` is one piece of Python text (a function's source from its file, or text
given to ``kiln.compile``) together with where it came from: every AST node's ``lineno``
is relative to the text, ``line_offset`` turns it into a line of ``filename``.

:func:`error` builds the :class:`~kiln.errors.CompileError` every rejection raises: the
file and line, the source line with a caret under the offending column, the cause, and --
when the compiler got there through calls -- the chain of calls, innermost last.
"""

from __future__ import annotations

import ast
import inspect
import textwrap
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any, Optional

from kiln import syntax
from kiln.errors import CompileError
from kiln.ir.graph import SourceRange


@dataclass
class Source:
    text: str
    filename: str
    line_offset: int = 0
    col_offset: int = 0            # columns removed by dedenting
    lines: list[str] = field(default_factory=list)

    def __post_init__(self) -> None:
        self.lines = self.text.splitlines()

    def range(self, node: ast.AST) -> SourceRange:
        line = getattr(node, "lineno", 1)
        col = getattr(node, "col_offset", 0)
        return SourceRange(self.filename, line + self.line_offset, col + self.col_offset)

    def excerpt(self, node: ast.AST) -> str:
        """The source line of ``node`` with a caret (or a run of them) under it."""
        line = getattr(node, "lineno", 0)
        if not 1 <= line <= len(self.lines):
            return ""
        text = self.lines[line - 1]
        col = getattr(node, "col_offset", 0)
        end = getattr(node, "end_col_offset", None)
        if getattr(node, "end_lineno", line) != line or end is None or end <= col:
            end = col + 1
        indent = len(text) - len(text.lstrip())
        shown = text[indent:]
        caret = " " * max(col - indent, 0) + "^" * max(end - col, 1)
        return f"    {shown}\n    {caret}"


def set_location(node: ast.AST, **where: Any) -> None:
    """Set location attributes (``lineno=``, ``col_offset=`` ...) on a node of code Kiln
    generates, so that errors inside it point at the user's code it stands for.  (Not every
    AST class declares them, hence setattr.)"""
    for name, value in where.items():
        setattr(node, name, value)


def function_source(fn: Callable[..., Any]) -> tuple[Source, ast.FunctionDef]:
    """The source and AST of a Python function (or method), as written in its file."""
    try:
        lines, first = inspect.getsourcelines(fn)
        filename = inspect.getsourcefile(fn) or "<unknown>"
    except (OSError, TypeError) as e:
        name = getattr(fn, "__qualname__", repr(fn))
        raise CompileError(f"cannot script {name}: its source is not available ({e}); "
                           "define it in a file, or pass its text to kiln.compile",
                           cause="source not available") from None
    raw = "".join(lines)
    text = textwrap.dedent(raw)
    removed = len(raw.splitlines()[0]) - len(text.splitlines()[0]) if text.strip() else 0
    src = Source(text, filename, first - 1, removed)
    tree = syntax.parse(text)
    fdef = next((n for n in tree.body if isinstance(n, (ast.FunctionDef, ast.AsyncFunctionDef))), None)
    if isinstance(fdef, ast.AsyncFunctionDef):
        raise error([Frame(fdef.name, src)], fdef, "async functions are not supported in compiled code: "
                                                   "write a plain function (kiln.fork runs a call as a task)")
    if fdef is None:
        raise CompileError(f"cannot script {fn!r}: expected a function definition in its source",
                           cause="not a function", filename=filename, lineno=first)
    return src, fdef


def class_source(cls: type) -> tuple[Source, ast.ClassDef]:
    try:
        lines, first = inspect.getsourcelines(cls)
        filename = inspect.getsourcefile(cls) or "<unknown>"
    except (OSError, TypeError) as e:
        raise CompileError(f"cannot script class {cls.__qualname__}: its source is not available ({e})",
                           cause="source not available") from None
    raw = "".join(lines)
    text = textwrap.dedent(raw)
    removed = len(raw.splitlines()[0]) - len(text.splitlines()[0]) if text.strip() else 0
    src = Source(text, filename, first - 1, removed)
    tree = syntax.parse(text)
    cdef = next(n for n in tree.body if isinstance(n, ast.ClassDef))
    return src, cdef


@dataclass(frozen=True)
class Frame:
    """One function the compiler is inside: its name, its source, and the call that led in."""

    name: str
    source: Source
    call_site: Optional[ast.AST] = None


def error(frames: list[Frame], node: Optional[ast.AST], cause: str) -> CompileError:
    """A CompileError at ``node`` of the innermost frame, with the chain of calls."""
    if not frames:
        return CompileError(cause, cause=cause)
    here = frames[-1]
    src = here.source
    line = (getattr(node, "lineno", 1) if node is not None else 1) + src.line_offset
    parts = [f'File "{src.filename}", line {line}, in {here.name}']
    if node is not None:
        ex = src.excerpt(node)
        if ex:
            parts.append(ex)
    parts.append(cause)
    chain = [f for f in frames[:-1]]
    if len(frames) > 1:
        parts.append("The compiler got here through these calls (innermost last):")
        for outer, inner in zip(chain, frames[1:]):
            site = inner.call_site
            sline = (getattr(site, "lineno", 1) if site is not None else 1) + outer.source.line_offset
            parts.append(f'  File "{outer.source.filename}", line {sline}, in {outer.name}: '
                         f"calls {inner.name}")
    return CompileError("\n".join(parts), cause=cause, filename=src.filename, lineno=line)
