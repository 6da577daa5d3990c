"""Method overloads: ``@_overload_method`` declarations in a module class's source.

PyTorch's own modules (``nn.LSTM``, ``nn.GRU``, ...) declare typed signatures of ``forward``
before its untyped implementation::

    @overload
    @torch._jit_internal._overload_method
    def forward(self, input: Tensor, hx: Optional[tuple[Tensor, Tensor]] = None) -> ...: pass

    @overload
    @torch._jit_internal._overload_method
    def forward(self, input: PackedSequence, hx: ...) -> ...: pass

    def forward(self, input, hx=None): ...   # the body every overload runs

Only the last definition survives in the class, so the declarations are read back from the
class's source.  Each becomes a function with the declaration's signature and the
implementation's body, compiled as ``forward__0``, ``forward__1`` ... (TorchScript's names);
a call picks the first overload whose parameters accept the arguments' types.
"""

from __future__ import annotations

import ast
import copy
import functools
from dataclasses import dataclass
from typing import Optional

from kiln.errors import CompileError
from kiln.frontend.script.source import Source, class_source


@dataclass(frozen=True)
class Overloads:
    owner: type                       # the class whose source declares them
    source: Source
    functions: tuple[ast.FunctionDef, ...]   # declaration signature + implementation body


def _is_overload_decl(fdef: ast.FunctionDef) -> bool:
    return any(ast.unparse(d).endswith("_overload_method") for d in fdef.decorator_list)


@functools.lru_cache(maxsize=256)
def _declared(owner: type, name: str) -> Optional[Overloads]:
    try:
        src, cdef = class_source(owner)
    except (CompileError, SyntaxError, StopIteration):
        return None
    defs = [n for n in cdef.body if isinstance(n, ast.FunctionDef) and n.name == name]
    decls = [d for d in defs if _is_overload_decl(d)]
    impls = [d for d in defs if not _is_overload_decl(d)]
    if not decls or not impls:
        return None
    impl = impls[-1]
    functions = []
    for decl in decls:
        fdef = copy.copy(impl)
        fdef.args, fdef.returns, fdef.decorator_list = decl.args, decl.returns, []
        functions.append(fdef)
    return Overloads(owner, src, tuple(functions))


def method_overloads(cls: type, name: str) -> Optional[Overloads]:
    """The overloads of method ``name`` of ``cls`` (from the class that defines it), if any."""
    owner = next((c for c in cls.__mro__ if name in c.__dict__), None)
    if owner is None or owner.__module__ == "builtins":
        return None
    return _declared(owner, name)


def overload_name(name: str, index: int) -> str:
    return f"{name}__{index}"


__all__ = ["Overloads", "method_overloads", "overload_name"]
