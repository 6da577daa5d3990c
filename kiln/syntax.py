"""Python text to syntax trees, one thread at a time.

CPython 3.11 turns a parse into ``ast`` objects with a recursion counter kept per
interpreter, not per thread: two threads parsing at once can trip it and fail with
``SystemError: AST constructor recursion depth mismatch`` (CPython gh-106905).  Loads and
compilations may run in several threads (``kiln.load`` from a server's workers), so every
parse Kiln makes goes through :func:`parse` (and :func:`literal_eval`), under one lock.
"""

from __future__ import annotations

import ast
import threading
from typing import Any

_LOCK = threading.RLock()


def parse(source: str, filename: str = "<unknown>", mode: str = "exec", *,
          type_comments: bool = False) -> Any:
    """``ast.parse`` under the lock: an ``ast.Module`` (``mode="exec"``), ``ast.Expression``
    (``"eval"``) or ``ast.FunctionType`` (``"func_type"``)."""
    with _LOCK:
        return ast.parse(source, filename=filename, mode=mode, type_comments=type_comments)


def literal_eval(text: str) -> Any:
    """``ast.literal_eval`` of a string, under the lock (it parses)."""
    with _LOCK:
        return ast.literal_eval(text)
