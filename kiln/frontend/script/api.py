"""The public face of the script compiler: ``kiln.script``, ``kiln.compile`` and the markers.

``kiln.script`` takes a function, an ``nn.Module`` instance or a class; ``kiln.compile``
takes TorchScript source text.  The markers (``export``, ``ignore``, ``unused``) tag Python
functions the way ``torch.jit``'s do, and Kiln honours ``torch.jit``'s own markers as well,
so code written for TorchScript needs no change.
"""

from __future__ import annotations

import ast
import functools
import threading
import weakref
from collections.abc import Callable
from typing import Any, TypeVar

import torch

from kiln import syntax
from kiln.errors import CompileError
from kiln.frontend.script.compiler import Compiler, SourceFunction
from kiln.frontend.script.source import Source
from kiln.runtime.executor import without_gc

F = TypeVar("F", bound=Callable[..., Any])

_lock = threading.RLock()
_function_cache: weakref.WeakKeyDictionary[Any, Any] = weakref.WeakKeyDictionary()


def script(obj: Any, optimize: Any = None, _frames_up: int = 0, _rcb: Any = None,
           example_inputs: Any = None) -> Any:
    """Compile ``obj`` -- a function, an ``nn.Module`` instance or a class -- to Kiln IR.

    Functions become :class:`~kiln.ScriptFunction`; modules become
    :class:`~kiln.ScriptModule` (sharing parameters and buffers with the original); a class
    is returned as it is, checked and registered so that compiled code can create and use
    its objects.  Rejected programs raise :class:`~kiln.CompileError`.
    """
    from kiln.runtime.module import ScriptFunction, ScriptModule
    if isinstance(obj, (ScriptModule, ScriptFunction)):
        return obj
    with _lock, without_gc():
        return _script(obj)


def _script(obj: Any) -> Any:
    from kiln.runtime.module import ScriptFunction
    if isinstance(obj, torch.nn.Module):
        return Compiler().script_module(obj)
    if isinstance(obj, type):
        Compiler().class_info(obj)
        return obj
    if callable(obj):
        cached = _function_cache.get(obj)
        if cached is not None:
            return cached
        comp = Compiler()
        graph = comp.compile_function(obj)
        fn = ScriptFunction(getattr(obj, "__name__", "fn"), graph, comp.defaults_of(obj))
        functools.update_wrapper(fn, obj, updated=())
        _function_cache[obj] = fn
        return fn
    raise CompileError(f"kiln.script cannot compile {obj!r}: expected a function, a module or a class",
                       cause="not scriptable")


class CompilationUnit:
    """Functions compiled from TorchScript source text; each is an attribute."""

    def __init__(self, source: str = "", filename: str = "<kiln.compile>") -> None:
        self._functions: dict[str, Any] = {}
        self._sources: dict[str, SourceFunction] = {}
        if source:
            self.define(source, filename)

    def namespace(self) -> dict[str, Any]:
        """What a name in the source may refer to: the other functions of this unit, and the
        names TorchScript source may use (``torch``, ``math``, typing names)."""
        import math
        import typing

        from kiln.frontend.script.builtins import UNCHECKED_CAST, UNINITIALIZED, OpsNamespace
        from kiln.frontend.script.compiler import KNOWN_TYPES, TorchNamespace
        # The typing aliases themselves (not list/dict/tuple): what the names mean in Python.
        ns: dict[str, Any] = {"torch": torch, "math": math, "Tensor": torch.Tensor,
                              "List": typing.List, "Dict": typing.Dict,  # noqa: UP006
                              "Tuple": typing.Tuple,  # noqa: UP006
                              "Optional": typing.Optional, "Union": typing.Union, "Any": typing.Any,
                              "ops": OpsNamespace(""), "annotate": annotate, "Future": torch.jit.Future,
                              "uninitialized": UNINITIALIZED, "unchecked_cast": UNCHECKED_CAST,
                              "number": float, "inf": math.inf, "nan": math.nan,
                              "__torch__": TorchNamespace("__torch__", KNOWN_TYPES),
                              "Device": torch.device, "NoneType": type(None)}
        ns.update(self._sources)
        return ns

    def define(self, source: str, filename: str = "<kiln.compile>") -> None:
        try:
            tree = syntax.parse(source, filename=filename, type_comments=True)
        except SyntaxError as e:
            raise CompileError(f'File "{filename}", line {e.lineno}\n    {(e.text or "").strip()}\n'
                               f"syntax error: {e.msg}", cause=f"syntax error: {e.msg}",
                               filename=filename, lineno=e.lineno or 0) from None
        src = Source(source, filename)
        fdefs = [n for n in tree.body if isinstance(n, ast.FunctionDef)]
        for n in tree.body:
            if not isinstance(n, (ast.FunctionDef, ast.Import, ast.ImportFrom, ast.Expr)):
                raise CompileError(f'File "{filename}", line {n.lineno}\nonly function definitions '
                                   f"are supported at the top level of compiled source, found "
                                   f"{type(n).__name__}", cause="unsupported top-level statement",
                                   filename=filename, lineno=n.lineno)
        for f in fdefs:
            self._sources[f.name] = SourceFunction(f.name, src, f, self)
        from kiln.runtime.module import ScriptFunction
        with _lock:
            for f in fdefs:
                comp = Compiler()
                graph = comp.compile_function(self._sources[f.name])
                self._functions[f.name] = ScriptFunction(f.name, graph,
                                                         comp.defaults_of(self._sources[f.name]))

    def __getattr__(self, name: str) -> Any:
        fns = self.__dict__.get("_functions", {})
        if name in fns:
            return fns[name]
        raise AttributeError(f"the compilation unit has no function {name!r}")

    def __dir__(self) -> list[str]:
        return [*super().__dir__(), *self._functions]


def compile(source: str, filename: str = "<kiln.compile>") -> CompilationUnit:  # noqa: A001
    """Compile TorchScript source text; its functions are attributes of the result."""
    return CompilationUnit(source, filename)


def define_methods(module: Any, source: str, filename: str = "<kiln.define>") -> None:
    """(Re)define methods of a ScriptModule from TorchScript source (``ScriptModule.define``)."""
    try:
        tree = syntax.parse(source, filename=filename, type_comments=True)
    except SyntaxError as e:
        raise CompileError(f'File "{filename}", line {e.lineno}\nsyntax error: {e.msg}',
                           cause=f"syntax error: {e.msg}", filename=filename,
                           lineno=e.lineno or 0) from None
    src = Source(source, filename)
    unit = CompilationUnit()
    with _lock:
        comp = Compiler()
        info = comp.module_info(module)
        for f in (n for n in tree.body if isinstance(n, ast.FunctionDef)):
            sf = SourceFunction(f.name, src, f, unit)
            graph, sig = comp.compile_method(info, sf, f.name)
            info.sigs[f.name] = sig
            module._kiln_define_method(f.name, graph, sig.defaults())


# -- interfaces ------------------------------------------------------------------------------

T = TypeVar("T")


def interface(obj: T) -> T:
    """Declare an interface, as ``torch.jit.interface`` does: a class whose methods (bodies
    ignored, parameters annotated) every implementation must have with the same signatures.

    A plain class is a *class interface*: an attribute, parameter, result or list element of
    its type holds an object of any script class implementing it, and a method call on it runs
    the method of the object's class at run time.  An ``nn.Module`` subclass is a *module
    interface*: a submodule annotated with it may be any module implementing its methods.
    ``kiln.save`` writes both as TorchScript does."""
    if not isinstance(obj, type):
        raise CompileError(f"kiln.interface takes a class, got {type(obj).__name__}", cause="not a class")
    module = issubclass(obj, torch.nn.Module)
    expected: tuple[type, ...] = (torch.nn.Module, object) if module else (object,)
    if obj.__mro__[1:] != expected:
        raise CompileError(f"interface {obj.__qualname__} must derive directly from "
                           f"{'nn.Module' if module else 'object'} (interfaces have no inheritance)",
                           cause="interface with bases")
    setattr(obj, "_kiln_interface", "module" if module else "class")   # noqa: B010 (a class we do not own)
    return obj


# -- markers ---------------------------------------------------------------------------------

def _mark(kind: str) -> Callable[[F], F]:
    def mark(fn: F) -> F:
        fn._kiln_modifier = kind  # type: ignore[attr-defined]
        return fn
    return mark


export = _mark("export")
unused = _mark("unused")


def ignore(drop: Any = False, **kwargs: Any) -> Any:
    """Leave a method to Python (``@kiln.ignore``); ``@kiln.ignore(drop=True)`` is ``unused``."""
    if callable(drop):
        return _mark("ignore")(drop)
    return _mark("unused" if drop else "ignore")


def script_if_tracing(fn: F) -> F:
    """Compile ``fn`` when it is called during a trace, so its control flow is kept;
    outside a trace it runs as plain Python."""
    @functools.wraps(fn)
    def wrapper(*args: Any, **kwargs: Any) -> Any:
        from kiln.frontend.values import active_recorder
        if active_recorder() is None:
            return fn(*args, **kwargs)
        return script(fn)(*args, **kwargs)
    wrapper.__kiln_original__ = fn  # type: ignore[attr-defined]
    return wrapper  # type: ignore[return-value]


def annotate(the_type: Any, the_value: Any) -> Any:
    """``kiln.annotate(List[int], [])``: the value, with its type stated for the compiler."""
    return the_value


annotate._kiln_annotate = True  # type: ignore[attr-defined]


def fork(fn: Callable[..., Any], *args: Any, **kwargs: Any) -> Any:
    from kiln.ir.objects import Future
    return Future(fn(*args, **kwargs))


def wait(fut: Any) -> Any:
    return fut.wait()


def is_scripting() -> bool:
    """False in Python; compiled code sees True."""
    return False


def _register_builtins() -> None:
    """Kiln's own ``fork``/``wait``/``is_scripting`` compile as ``torch.jit``'s do."""
    from kiln.frontend.script import builtins
    builtins.register_builtin(fork, builtins._fork)
    builtins.register_builtin(wait, builtins._wait)
    builtins.CONSTANT_CALLS[is_scripting] = True


_register_builtins()
