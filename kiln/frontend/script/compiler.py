"""The script compiler's session: what is being compiled, and the compile-time world.

A :class:`Compiler` holds everything one ``kiln.script`` call learns: the stack of functions
being compiled (for error messages and to reject recursion), the modules and script classes
it met (their IR types, attributes and methods), and the caches of parsed functions.

Modules
    Every ``nn.Module`` becomes a :class:`~kiln.runtime.module.ScriptModule` sharing its
    parameters and buffers, with its submodules scripted recursively (a module that is
    already a ScriptModule -- traced, or scripted before -- is used as it is).  Attribute
    types come from class annotations, else from the values; ``Final`` attributes and names
    in ``__constants__`` are constants.  ``forward`` and exported methods are compiled;
    other methods when first called.  Calls between modules are ``prim::CallMethod``.

Script classes and NamedTuples
    A class is compiled on first use: its ``__init__`` is emitted once into a scratch graph
    to learn the field types; objects are ``prim::CreateObject`` plus the inlined
    ``__init__``, and methods are inlined where they are called.
"""

from __future__ import annotations

import ast
import enum
import inspect
import types
import typing
import weakref
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any, Optional

import torch

from kiln.errors import CompileError
from kiln.frontend.script import annotations as ann
from kiln.frontend.script.env import (
    Binding,
    Bound,
    Items,
    ModuleVal,
    ObjectVal,
    PyObj,
    SuperVal,
)
from kiln.frontend.script.source import Frame, Source, error, function_source
from kiln.ir.builder import Builder
from kiln.ir.graph import Graph, Value
from kiln.ir.types import (
    TENSOR,
    AnyType,
    BoolType,
    ClassType,
    EnumType,
    FutureType,
    IntType,
    ListType,
    NamedTupleType,
    NoneType,
    OptionalType,
    StrType,
    TensorType,
    Type,
    is_subtype,
    type_of_value,
)

_MAX_DEPTH = 64

# Parsed (and lowered) Python functions, for every compile in this process.
_PARSED: "weakref.WeakKeyDictionary[Any, ParsedFunction]" = weakref.WeakKeyDictionary()

# Every script class, enum and NamedTuple Kiln has compiled in this process, by qualified
# name: TorchScript source (``.code``) refers to them as ``__torch__.pkg.Class``.
KNOWN_TYPES: dict[str, type] = {}


class TorchNamespace:
    """``__torch__`` in TorchScript source: ``__torch__.a.B`` is the known type ``__torch__.a.B``."""

    def __init__(self, path: str, known: dict[str, type]) -> None:
        self._path = path
        self._known = known

    def __getattr__(self, name: str) -> Any:
        if name.startswith("__") and name.endswith("__"):
            raise AttributeError(name)
        path = f"{self._path}.{name}"
        return self._known.get(path) or TorchNamespace(path, self._known)


@dataclass(eq=False)
class SourceFunction:
    """A function given as source text (``kiln.compile``): no Python object behind it."""

    name: str
    source: Source
    fdef: ast.FunctionDef
    unit: Any     # the CompilationUnit


@dataclass(eq=False)
class ParsedFunction:
    name: str
    source: Source
    fdef: ast.FunctionDef
    globals: dict[str, Any]
    closure: dict[str, Any]
    defaults: dict[str, Any]
    hints: dict[str, Any]          # live annotation objects, when there are any
    lowered: Optional[list[ast.stmt]] = None     # the body after exits.lower_exits, once


@dataclass(eq=False)
class MethodSig:
    params: list[tuple[str, Type, Any]]      # (name, type, default or NO_DEFAULT)
    returns: Type


_NO_DEFAULT = object()


@dataclass(eq=False)
class ModuleInfo:
    module: torch.nn.Module          # the original module (or the ScriptModule itself)
    sm: Any                          # kiln.runtime.module.ScriptModule
    type: ClassType
    constants: dict[str, Any] = field(default_factory=dict)
    attr_types: dict[str, Type] = field(default_factory=dict)
    bad_attrs: dict[str, str] = field(default_factory=dict)
    sigs: dict[str, MethodSig] = field(default_factory=dict)
    compiling: set[str] = field(default_factory=set)
    subs: dict[str, ModuleInfo] = field(default_factory=dict)
    key: Any = None


@dataclass(eq=False)
class ClassInfo:
    cls: Any                         # the Python class (or a source ClassDef holder)
    type: ClassType
    fields: dict[str, Type] = field(default_factory=dict)
    ready: bool = False


class Compiler:
    def __init__(self) -> None:
        self.frames: list[Frame] = []
        self.parsed: dict[Any, ParsedFunction] = {}
        self.modules: dict[int, ModuleInfo] = {}
        self.classes: dict[Any, ClassInfo] = {}
        self.classes_by_name: dict[str, ClassInfo] = {}
        self.enums: dict[str, type] = {}
        self.empty_lists: set[Value] = set()
        self.source_types: dict[str, Any] = {}
        self.method_cache: dict[Any, dict[str, tuple[Graph, MethodSig]]] = {}

    # -- errors --------------------------------------------------------------------------
    def error(self, node: Optional[ast.AST], cause: str) -> CompileError:
        return error(self.frames, node, cause)

    # -- functions -----------------------------------------------------------------------
    def parse_function(self, fn: Any) -> ParsedFunction:
        cached = self.parsed.get(fn) or _PARSED.get(fn)
        if cached is not None:
            return cached
        if isinstance(fn, SourceFunction):
            p = ParsedFunction(fn.name, fn.source, fn.fdef, fn.unit.namespace(), {}, {}, {})
        else:
            src, fdef = function_source(fn)
            closure: dict[str, Any] = {}
            if fn.__closure__:
                for name, cell in zip(fn.__code__.co_freevars, fn.__closure__):
                    try:
                        closure[name] = cell.cell_contents
                    except ValueError:
                        pass
            sig = inspect.signature(fn)
            defaults = {k: p.default for k, p in sig.parameters.items() if p.default is not inspect.Parameter.empty}
            hints = dict(getattr(fn, "__annotations__", {}) or {})
            p = ParsedFunction(fn.__qualname__, src, fdef, fn.__globals__, closure, defaults, hints)
        self.parsed[fn] = p
        if isinstance(fn, types.FunctionType):
            _PARSED[fn] = p     # source and lowering are the same every time: kept per process
        return p

    def param_type(self, em: Any, p: ParsedFunction, arg: ast.arg, default_tensor: bool) -> Optional[Type]:
        """The declared type of a parameter: its annotation, its type comment, or None."""
        hint = p.hints.get(arg.arg)
        try:
            if hint is not None and not isinstance(hint, str):
                return ann.from_python(hint, self.class_type_for)
        except ann.AnnotationError as e:
            if p.globals.get("__name__", "").startswith("torch"):
                return None       # an annotation only TorchScript's overload machinery reads
            raise self.error(arg, str(e)) from None
        if arg.annotation is not None:
            return em.annotation(arg.annotation)
        comment = _signature_comment(p)
        if comment is not None:
            names = [a.arg for a in p.fdef.args.args if a.arg != "self"]
            if arg.arg in names and names.index(arg.arg) < len(comment[0]):
                return em.annotation(comment[0][names.index(arg.arg)])
        return TENSOR if default_tensor else None

    def return_type(self, em: Any, p: ParsedFunction) -> Optional[Type]:
        hint = p.hints.get("return", None)
        if "return" in p.hints and hint is None:
            return NoneType
        if hint is not None and not isinstance(hint, str):
            try:
                return ann.from_python(hint, self.class_type_for)
            except ann.AnnotationError as e:
                raise self.error(p.fdef, str(e)) from None
        if p.fdef.returns is not None:
            return em.annotation(p.fdef.returns)  # type: ignore[no-any-return]
        comment = _signature_comment(p)
        if comment is not None and comment[1] is not None:
            return em.annotation(comment[1])  # type: ignore[no-any-return]
        return None

    def new_emitter(self, b: Builder, p: ParsedFunction, self_class: Optional[type] = None) -> Any:
        from kiln.frontend.script.emitter import FunctionEmitter
        return FunctionEmitter(self, b, p.source, p.name, p.globals, p.closure, self_class)

    def defaults_of(self, fn: Any) -> dict[str, Any]:
        """The default values of a function's parameters (constants only, for source text)."""
        p = self.parse_function(fn)
        if p.defaults:
            return dict(p.defaults)
        a = p.fdef.args
        names = [x.arg for x in a.args][len(a.args) - len(a.defaults):]
        out = {}
        for name, d in zip(names, a.defaults):
            v = _ast_default(d)
            if v is not _NO_DEFAULT:
                out[name] = v
        return out

    def compile_function(self, fn: Any) -> Graph:
        """A free function as a graph (its parameters default to Tensor, as in TorchScript)."""
        p = self.parse_function(fn)
        graph = Graph()
        b = Builder(graph)
        em = self.new_emitter(b, p)
        self.frames.append(Frame(p.name, p.source))
        try:
            args = p.fdef.args
            if args.vararg or args.kwarg or args.kwonlyargs:
                raise self.error(p.fdef, "a scripted entry point cannot take *args, **kwargs or "
                                         "keyword-only parameters (functions it calls can)")
            for a in args.args:
                t = self.param_type(em, p, a, True)
                v = graph.add_input(t, a.arg)
                em.scope.vars[a.arg] = v
                em.scope.declared[a.arg] = t
            em.return_type = self.return_type(em, p)
            out = em.emit_body(list(p.fdef.body), p.fdef, p)
            graph.register_output(out)
        finally:
            self.frames.pop()
        finish_graph(graph)
        return graph

    def inline_function(self, caller: Any, fn: Any, args: list[Binding], kwargs: dict[str, Binding],
                        node: ast.AST, self_binding: Optional[Binding] = None,
                        self_class: Optional[type] = None) -> Binding:
        """Compile ``fn`` at the call site with its arguments bound."""
        p = self.parse_function(fn)
        if len(self.frames) > _MAX_DEPTH or any(f.name == p.name and f.source is p.source for f in self.frames):
            raise self.error(node, f"{p.name} calls itself (directly or through other functions); "
                                   "recursion is not supported in compiled code: write a loop")
        em = self.new_emitter(caller.b, p, self_class)
        # Arguments are checked at the call site (errors point at the caller's line).
        bound = self.bind_arguments(em, p, args, kwargs, node, self_binding)
        self.frames.append(Frame(p.name, p.source, node))
        saved_source = caller.b.source
        try:
            for name, (v, t) in bound.items():
                if isinstance(v, Value):
                    em.scope.vars[name] = v
                    em.scope.declared[name] = t if t is not None else v.type
                else:
                    em.scope.vars[name] = v
            em.return_type = self.return_type(em, p)
            result = em.emit_body(list(p.fdef.body), p.fdef, p)
        finally:
            self.frames.pop()
            caller.b.source = saved_source
        return result  # type: ignore[no-any-return]

    def bind_arguments(self, em: Any, p: ParsedFunction, args: list[Binding], kwargs: dict[str, Binding],
                       node: ast.AST, self_binding: Optional[Binding]) -> dict[str, tuple[Binding, Optional[Type]]]:
        a = p.fdef.args
        positional = [x for x in a.posonlyargs + a.args]
        if self_binding is not None:
            args = [self_binding, *args]
        out: dict[str, tuple[Binding, Optional[Type]]] = {}
        kwargs = dict(kwargs)
        ast_defaults = dict(zip([x.arg for x in positional][len(positional) - len(a.defaults):], a.defaults))
        ast_defaults.update({x.arg: d for x, d in zip(a.kwonlyargs, a.kw_defaults) if d is not None})
        for i, param in enumerate(positional):
            if i < len(args):
                val = args[i]
                if param.arg in kwargs:
                    raise self.error(node, f"{p.name}() got multiple values for argument {param.arg!r}")
            elif param.arg in kwargs:
                val = kwargs.pop(param.arg)
            else:
                val = self.default_of(em, p, param.arg, ast_defaults, node)
            out[param.arg] = self.typed_arg(em, p, param, val, node)
        extra = args[len(positional):]
        if extra and a.vararg is None:
            raise self.error(node, f"{p.name}() takes {len(positional)} positional argument(s) but "
                                   f"{len(args)} were given")
        if a.vararg is not None:
            out[a.vararg.arg] = (Items(tuple(extra)), None)
        for param in a.kwonlyargs:
            val = kwargs.pop(param.arg) if param.arg in kwargs else \
                self.default_of(em, p, param.arg, ast_defaults, node)
            out[param.arg] = self.typed_arg(em, p, param, val, node)
        if kwargs and a.kwarg is None:
            raise self.error(node, f"{p.name}() got an unexpected keyword argument {next(iter(kwargs))!r}")
        if a.kwarg is not None:
            out[a.kwarg.arg] = (Items(tuple(kwargs.values()), tuple(kwargs)), None)
        return out

    def default_of(self, em: Any, p: ParsedFunction, name: str, ast_defaults: dict[str, ast.expr],
                   node: ast.AST) -> Binding:
        if name in p.defaults:
            return PyObj(p.defaults[name])
        if name in ast_defaults:
            return em.expr(ast_defaults[name])  # type: ignore[no-any-return]
        raise self.error(node, f"{p.name}() is missing the argument {name!r}")

    def typed_arg(self, em: Any, p: ParsedFunction, param: ast.arg, val: Binding,
                  node: ast.AST) -> tuple[Binding, Optional[Type]]:
        t = self.param_type(em, p, param, False)
        if t is None:
            return val, None         # unannotated: generic (the function is inlined)
        if isinstance(val, PyObj) and _is_constant(val.obj) and t != AnyType:
            v = em.constant_value(val.obj, node) if val.obj is not None else em.b.constant(None, None)
        elif isinstance(val, (PyObj, Items)) and not isinstance(val, Items):
            return val, None
        else:
            v = em.to_value(val, node) if not isinstance(val, (ModuleVal, ObjectVal)) else val.value
        if p.globals.get("__name__", "").startswith("torch"):
            # PyTorch's own Python functions annotate for TorchScript's overloads
            # (BroadcastingList2, Optional[List[float]] for a float); they are inlined, so a
            # value that does not fit the annotation goes in as it is.
            try:
                return em.convert(v, t, node, f"argument {param.arg!r} of {p.name}()"), t
            except CompileError:
                return v, None
        return em.convert(v, t, node, f"argument {param.arg!r} of {p.name}()"), t

    def inline_graph(self, em: Any, fn: Any, args: list[Value], node: ast.AST) -> Value:
        """Call a Kiln function (traced or scripted): its graph, copied in."""
        from kiln.ir.graph import clone_node
        g = fn.graph
        if len(args) != len(g.inputs):
            raise self.error(node, f"{fn.name} takes {len(g.inputs)} argument(s), got {len(args)}")
        env: dict[Value, Value] = {}
        for formal, actual in zip(g.inputs, args):
            env[formal] = em.convert(actual, formal.type if not isinstance(formal.type, TensorType) else TENSOR,
                                     node, f"an argument of {fn.name}")
        for n in g.nodes:
            em.b.insert(clone_node(n, em.b.graph, env))
        outs = [env[v] for v in g.outputs]
        return outs[0] if len(outs) == 1 else em.b.tuple(outs)

    # -- classes, NamedTuples, enums ---------------------------------------------------
    def class_type_for(self, cls: type) -> Optional[Type]:
        if ann.is_namedtuple_class(cls):
            KNOWN_TYPES.setdefault(_qualname(cls), cls)
            return ann.namedtuple_type(cls, _qualname(cls), self.class_type_for)
        if ann.is_enum_class(cls):
            return self.enum_type(cls)
        if isinstance(cls, type) and issubclass(cls, torch.nn.Module):
            return ClassType(_qualname(cls))
        if isinstance(cls, type) and cls.__module__ not in ("builtins", "typing") and \
                not cls.__module__.startswith("torch"):
            return self.class_info(cls).type
        return None

    def type_of_class(self, cls: Any, node: ast.AST) -> Type:
        """The IR type an ``isinstance`` target stands for."""
        from kiln.frontend.script.annotations import _PY_SIMPLE
        if isinstance(cls, Type):
            return cls
        if cls in _PY_SIMPLE:
            return _PY_SIMPLE[cls]
        if cls is list:
            return ListType(AnyType)
        if cls is dict:
            from kiln.ir.types import DictType
            return DictType(AnyType, AnyType)
        if cls is tuple:
            from kiln.ir.types import TupleType
            return TupleType(())
        try:
            return ann.from_python(cls, self.class_type_for)
        except ann.AnnotationError:
            raise self.error(node, f"isinstance() cannot test for {cls!r}") from None

    def enum_type(self, cls: type) -> EnumType:
        q = _qualname(cls)
        self.enums[q] = cls
        KNOWN_TYPES.setdefault(q, cls)
        return EnumType(q)

    def enum_value_type(self, t: EnumType) -> Type:
        cls = self.enums.get(t.qualname) or KNOWN_TYPES.get(t.qualname)
        if cls is None:
            return AnyType
        vals = [m.value for m in cls]   # type: ignore[var-annotated]
        return type_of_value(vals[0]) if vals else AnyType

    def lookup_type_name(self, dotted: str) -> Any:
        return self.source_types.get(dotted) or KNOWN_TYPES.get(dotted)

    def class_info(self, cls: type) -> ClassInfo:
        info = self.classes.get(cls)
        if info is not None:
            return info
        info = ClassInfo(cls, ClassType(_qualname(cls)))
        KNOWN_TYPES.setdefault(info.type.qualname, cls)
        self.classes[cls] = info
        self.classes_by_name[info.type.qualname] = info
        self._learn_fields(info)
        return info

    def class_info_by_name(self, qualname: str) -> Optional[ClassInfo]:
        return self.classes_by_name.get(qualname)

    def _learn_fields(self, info: ClassInfo) -> None:
        """Emit ``__init__`` into a scratch graph once: its attribute stores give the field types."""
        cls = info.cls
        for name, hint in getattr(cls, "__annotations__", {}).items():
            try:
                info.fields[name] = ann.from_python(hint, self.class_type_for)
            except ann.AnnotationError:
                pass
        init = cls.__dict__.get("__init__")
        if init is None:
            info.ready = True
            return
        p = self.parse_function(init)
        graph = Graph()
        b = Builder(graph)
        em = self.new_emitter(b, p, cls)
        me = graph.add_input(info.type, "self")
        args: list[Binding] = []
        for a in p.fdef.args.args[1:]:
            t = self.param_type(em, p, a, True) or TENSOR
            args.append(graph.add_input(t, a.arg))
        self.frames.append(Frame(p.name, p.source))
        try:
            bound = self.bind_arguments(em, p, args, {}, p.fdef, ObjectVal(me, info))
            for name, (v, t) in bound.items():
                em.scope.vars[name] = v
            em.return_type = NoneType
            em.emit_body(list(p.fdef.body), p.fdef, p)
        finally:
            self.frames.pop()
        info.ready = True

    def construct(self, em: Any, cls: type, args: list[Binding], kwargs: dict[str, Binding], node: ast.AST) -> Binding:
        if ann.is_namedtuple_class(cls):
            return self.make_namedtuple(em, cls, args, kwargs, node)
        if issubclass(cls, BaseException):
            raise self.error(node, "exceptions can only be raised (`raise ValueError(...)`)")
        if issubclass(cls, torch.nn.Module):
            raise self.error(node, "creating modules inside compiled code is not supported; create "
                                   "them in __init__")
        if ann.is_enum_class(cls):
            raise self.error(node, "enum members are accessed as attributes (`Color.RED`)")
        if cls.__module__ in ("builtins",) or cls.__module__.startswith("torch"):
            raise self.error(node, f"{cls.__name__}(...) cannot be called in compiled code")
        info = self.class_info(cls)
        obj = em.b.value("prim::CreateObject", [], info.type)
        ov = ObjectVal(obj, info)
        init = cls.__dict__.get("__init__")
        if init is not None:
            self.inline_function(em, init, args, kwargs, node, ov, cls)
        return ov

    def make_namedtuple(self, em: Any, cls: type, args: list[Binding], kwargs: dict[str, Binding],
                        node: ast.AST) -> Value:
        t = ann.namedtuple_type(cls, _qualname(cls), self.class_type_for)
        defaults = getattr(cls, "_field_defaults", {})
        vals: list[Value] = []
        for i, (fname, ftype) in enumerate(t.fields):
            if i < len(args):
                b = args[i]
            elif fname in kwargs:
                b = kwargs[fname]
            elif fname in defaults:
                b = PyObj(defaults[fname])
            else:
                raise self.error(node, f"{cls.__name__}() is missing the field {fname!r}")
            vals.append(em.convert(em.to_value(b, node), ftype, node, f"field {fname!r} of {cls.__name__}"))
        from kiln.ir.objects import NAMEDTUPLES
        NAMEDTUPLES[t.qualname] = cls
        return em.b.value("prim::TupleConstruct", vals, t)  # type: ignore[no-any-return]

    def object_attribute(self, em: Any, ov: ObjectVal, name: str, node: ast.AST) -> Binding:
        info = ov.info
        if name in info.fields:
            return em.b.value("prim::GetAttr", [ov.value], info.fields[name], name=name)  # type: ignore[no-any-return]
        cls = info.cls
        attr = inspect.getattr_static(cls, name, None)
        if isinstance(attr, (types.FunctionType, staticmethod, classmethod, property)):
            if isinstance(attr, property) and attr.fget is not None:
                return self.inline_function(em, attr.fget, [], {}, node, ov, cls)
            return Bound(ov, name)
        if attr is not None and _is_constant(attr):
            return PyObj(attr)
        raise self.error(node, f"{cls.__name__} object has no attribute {name!r}"
                               + ("" if info.ready else "; assign it in __init__ first"))

    def call_object_method(self, em: Any, ov: ObjectVal, name: str, args: list[Binding],
                           kwargs: dict[str, Binding], node: ast.AST) -> Binding:
        cls = ov.info.cls
        attr = inspect.getattr_static(cls, name)
        if isinstance(attr, staticmethod):
            return self.inline_function(em, attr.__func__, args, kwargs, node)
        owner = next(c for c in cls.__mro__ if name in c.__dict__)
        return self.inline_function(em, attr, args, kwargs, node, ov, owner)

    def set_attribute(self, em: Any, base: Any, name: str, value: Value, node: ast.AST,
                      declared: Optional[Type] = None) -> None:
        if isinstance(base, ObjectVal):
            info = base.info
            t = info.fields.get(name)
            if t is None and declared is not None and not info.ready:
                info.fields[name] = t = declared
            if t is None:
                if info.ready:
                    raise self.error(node, f"{info.cls.__name__} object has no attribute {name!r}; "
                                           "attributes must be assigned in __init__")
                info.fields[name] = t = value.type if value.type != NoneType else NoneType
            value = em.convert(value, t, node, f"attribute {name!r}")
            em.b.set_attr(base.value, name, value)
            return
        info_m: ModuleInfo = base.info
        t = self.module_attr_type(info_m, name, node)
        if name in info_m.sm._parameters or name in info_m.sm._buffers:
            t = TENSOR
        value = em.convert(value, t, node, f"attribute {name!r}")
        em.b.set_attr(base.value, name, value)

    # -- modules -------------------------------------------------------------------------
    def script_module(self, module: torch.nn.Module) -> Any:
        info = self.module_info(module)
        self.compile_entry_methods(info)
        return info.sm

    def module_info(self, module: torch.nn.Module) -> ModuleInfo:
        from kiln.runtime.module import ScriptModule
        info = self.modules.get(id(module))
        if info is not None:
            return info
        if isinstance(module, ScriptModule):
            info = ModuleInfo(module, module, ClassType(module.qualified_name))
            self.modules[id(module)] = info
            for name, v in module.__dict__.items():
                if name in module._kiln_attributes:
                    info.attr_types[name] = _attr_type(v) or AnyType
            for name, sub in module._modules.items():
                if sub is not None:
                    info.subs[name] = self.module_info(sub)
            return info
        cls = type(module)
        sm = ScriptModule(_qualname(cls), cls.__name__)
        info = ModuleInfo(module, sm, ClassType(sm.qualified_name))
        self.modules[id(module)] = info
        for name, child in module._modules.items():
            if child is None:
                continue
            sub = self.module_info(child)
            info.subs[name] = sub
            sm.add_module(name, sub.sm)
        for name, p in module._parameters.items():
            sm.register_parameter(name, p)
        for name, buf in module._buffers.items():
            sm.register_buffer(name, buf, persistent=name not in module._non_persistent_buffers_set)
        sm.training = module.training
        self._collect_attributes(info)
        return info

    def _collect_attributes(self, info: ModuleInfo) -> None:
        module, sm = info.module, info.sm
        cls = type(module)
        hints: dict[str, Any] = {}
        for klass in reversed(cls.__mro__):
            hints.update(getattr(klass, "__annotations__", {}) or {})
        consts = set(getattr(cls, "__constants__", ()) or ())
        for name, v in vars(module).items():
            if name in _MODULE_INTERNALS or name == "training" or name.startswith("_kiln"):
                continue
            hint = hints.get(name)
            if name in consts or (hint is not None and ann.is_final(hint)):
                info.constants[name] = v
                continue
            t: Optional[Type] = None
            if hint is not None:
                try:
                    t = ann.from_python(hint, self.class_type_for)
                except ann.AnnotationError as e:
                    info.bad_attrs[name] = str(e)
                    continue
            else:
                t = _attr_type(v)
            if t is None:
                info.bad_attrs[name] = f"its value {type(v).__name__} has no type Kiln can infer; annotate it"
                continue
            info.attr_types[name] = t
            sm._kiln_set_attribute(name, v)

    def compile_entry_methods(self, info: ModuleInfo) -> None:
        for sub in info.subs.values():
            if sub.module is not sub.sm:
                self.compile_entry_methods(sub)
        if info.module is info.sm:
            return
        cls = type(info.module)
        names = []
        if _defines_forward(cls) and not _modifier(getattr(cls, "forward")) in ("ignore", "unused"):
            names.append("forward")
        for klass in cls.__mro__:
            for name, fn in vars(klass).items():
                if isinstance(fn, types.FunctionType) and _modifier(fn) == "export" and name not in names:
                    names.append(name)
        for name in names:
            self.method_sig(info, name, None)

    def method_sig(self, info: ModuleInfo, name: str, node: Optional[ast.AST]) -> MethodSig:
        sig = info.sigs.get(name)
        if sig is not None:
            return sig
        if info.module is info.sm:
            return self._graph_sig(info, name, node)
        if name in info.compiling:
            raise self.error(node, f"method {name!r} calls itself; recursion is not supported")
        fn = inspect.getattr_static(type(info.module), name, None)
        if not isinstance(fn, types.FunctionType):
            raise self.error(node, f"{type(info.module).__name__} has no method {name!r}")
        shared = self.method_cache.setdefault(self.type_key(info), {})
        hit = shared.get(name)
        if hit is not None:
            for other, (g, other_sig) in shared.items():   # with the helpers it calls on self
                if other not in info.sigs:
                    info.sigs[other] = other_sig
                    info.sm._kiln_define_method(other, g.copy())
            return hit[1]
        info.compiling.add(name)
        try:
            graph, sig = self.compile_method(info, fn, name)
        finally:
            info.compiling.discard(name)
        shared[name] = (graph, sig)
        info.sigs[name] = sig
        info.sm._kiln_define_method(name, graph)
        return sig

    def type_key(self, info: ModuleInfo) -> Any:
        """What a method's graph depends on besides the class: two instances with the same key
        (e.g. the 100 BatchNorms of a ResNet) share one compilation, as TorchScript's
        concrete types do."""
        if info.key is None:
            sm = info.sm
            consts = tuple(sorted((k, _hashable_const(v)) for k, v in info.constants.items()))
            info.key = (type(info.module), consts, tuple(sorted(info.attr_types.items(), key=str)),
                        tuple((k, self.type_key(v)) for k, v in info.subs.items()),
                        tuple((k, p is None) for k, p in sm._parameters.items()),
                        tuple((k, b is None) for k, b in sm._buffers.items()))
        return info.key

    def _graph_sig(self, info: ModuleInfo, name: str, node: Optional[ast.AST]) -> MethodSig:
        graphs = info.sm._kiln_graphs
        if name not in graphs:
            raise self.error(node, f"{info.sm.original_name} has no method {name!r}")
        g = graphs[name]
        params = [(v.name or f"arg{i}", v.type, _NO_DEFAULT) for i, v in enumerate(g.inputs[1:])]
        out = g.outputs[0].type if len(g.outputs) == 1 else AnyType
        sig = MethodSig(params, out)
        info.sigs[name] = sig
        return sig

    def compile_method(self, info: ModuleInfo, fn: Any, name: str) -> tuple[Graph, MethodSig]:
        p = self.parse_function(fn)
        graph = Graph()
        b = Builder(graph)
        owner = next((c for c in type(info.module).__mro__ if name in c.__dict__), type(info.module))
        em = self.new_emitter(b, p, owner)
        self.frames.append(Frame(p.name, p.source))
        try:
            me = graph.add_input(info.type, "self")
            em.scope.vars["self"] = ModuleVal(me, info)
            params: list[tuple[str, Type, Any]] = []
            a = p.fdef.args
            if a.vararg or a.kwarg or a.kwonlyargs:
                raise self.error(p.fdef, "module methods cannot take *args, **kwargs or keyword-only "
                                         "parameters; helper functions they call can")
            n_def = len(a.defaults)
            plist = a.args[1:]
            for i, arg in enumerate(plist):
                t = self.param_type(em, p, arg, True)
                v = graph.add_input(t, arg.arg)
                em.scope.vars[arg.arg] = v
                em.scope.declared[arg.arg] = t
                d = p.defaults.get(arg.arg, _NO_DEFAULT)
                if d is _NO_DEFAULT and i >= len(plist) - n_def:
                    d = _ast_default(a.defaults[i - (len(plist) - n_def)])
                params.append((arg.arg, t, d))
            em.return_type = self.return_type(em, p)
            out = em.emit_body(list(p.fdef.body), p.fdef, p)
            graph.register_output(out)
        finally:
            self.frames.pop()
        finish_graph(graph)
        return graph, MethodSig(params, em.return_type or out.type)

    def module_attribute(self, em: Any, mv: ModuleVal, name: str, node: ast.AST) -> Binding:
        info = mv.info
        sm = info.sm
        if name in sm._parameters or name in sm._buffers:
            t = sm._parameters.get(name, sm._buffers.get(name))
            if t is None:
                return em.b.constant(None)  # type: ignore[no-any-return]
            return em.b.get_attr(mv.value, name, TENSOR)  # type: ignore[no-any-return]
        if name in info.subs:
            sub = info.subs[name]
            return ModuleVal(em.b.get_attr(mv.value, name, sub.type), sub)
        if name in info.constants:
            return PyObj(info.constants[name])
        if name == "training":
            return em.b.get_attr(mv.value, "training", BoolType)  # type: ignore[no-any-return]
        if name in info.attr_types:
            return em.b.get_attr(mv.value, name, info.attr_types[name])  # type: ignore[no-any-return]
        if info.module is not info.sm:
            attr = inspect.getattr_static(type(info.module), name, None)
            if isinstance(attr, types.FunctionType):
                return Bound(mv, name)
            if isinstance(attr, property) and attr.fget is not None:
                return self.inline_function(em, attr.fget, [], {}, node, mv, type(info.module))
            if attr is not None and _is_constant(attr):
                return PyObj(attr)
        elif name in info.sm._kiln_graphs or name in info.sm.__dict__.get("_kiln_python_methods", {}):
            return Bound(mv, name)
        if name in sm._modules and sm._modules[name] is None:
            return em.b.constant(None)  # type: ignore[no-any-return]
        why = info.bad_attrs.get(name)
        cls_name = type(info.module).__name__ if info.module is not info.sm else info.sm.original_name
        raise self.error(node, f"module {cls_name} has no attribute {name!r}"
                               + (f" that compiled code can use: {why}" if why else ""))

    def module_attr_type(self, info: ModuleInfo, name: str, node: ast.AST) -> Type:
        if name in info.attr_types:
            return info.attr_types[name]
        if name in info.sm._parameters or name in info.sm._buffers:
            return TENSOR
        raise self.error(node, f"cannot assign to {name!r}: it is not an attribute of the module "
                               "(attributes must be set in __init__)")

    def has_attribute(self, em: Any, base: Binding, name: str) -> bool:
        if isinstance(base, ModuleVal):
            info = base.info
            return name in info.sm._parameters or name in info.sm._buffers or name in info.subs or \
                name in info.constants or name in info.attr_types or \
                (info.module is not info.sm and hasattr(type(info.module), name))
        if isinstance(base, ObjectVal):
            return name in base.info.fields or hasattr(base.info.cls, name)
        if isinstance(base, PyObj):
            return hasattr(base.obj, name)
        if isinstance(base, Value) and isinstance(base.type, NamedTupleType):
            return name in [f for f, _ in base.type.fields]
        return False

    def module_items(self, em: Any, mv: ModuleVal, node: ast.AST) -> list[Binding]:
        info = mv.info
        mod = info.module
        if not isinstance(mod, (torch.nn.ModuleList, torch.nn.Sequential, torch.nn.ModuleDict)) and \
                info.module is not info.sm:
            raise self.error(node, f"cannot iterate over module {type(mod).__name__}; only ModuleList, "
                                   "Sequential and ModuleDict can be iterated")
        items: list[Binding] = []
        for name, sub in info.subs.items():
            items.append(ModuleVal(em.b.get_attr(mv.value, name, sub.type), sub))
        if isinstance(mod, torch.nn.ModuleDict):
            return [em.b.constant(k) for k in info.subs]
        return items

    def module_items_raw(self, em: Any, mv: ModuleVal) -> list[Binding]:
        return [ModuleVal(em.b.get_attr(mv.value, n, sub.type), sub) for n, sub in mv.info.subs.items()]

    def python_call(self, em: Any, mv: ModuleVal, fn: Any, args: list[Binding], kwargs: dict[str, Binding],
                    node: ast.AST) -> Value:
        """An ``@ignore``d method: left to Python, called at run time (it cannot be saved)."""
        hints = getattr(fn, "__annotations__", {})
        ret = hints.get("return", torch.Tensor)
        try:
            rt = ann.from_python(ret, self.class_type_for) if ret is not None else NoneType
        except ann.AnnotationError as e:
            raise self.error(node, f"the return annotation of ignored {fn.__name__}: {e}") from None
        if kwargs:
            raise self.error(node, f"ignored {fn.__name__}() takes positional arguments only here")
        # Kept on the ScriptModule, so that its code (`self.name(...)`) compiles back to this call.
        mv.info.sm.__dict__.setdefault("_kiln_python_methods", {})[fn.__name__] = fn
        vals = [em.to_value(a, node) for a in args]
        return em.b.value("prim::kiln_python_call", [mv.value, *vals], rt, fn=fn)  # type: ignore[no-any-return]

    def module_keys(self, mv: ModuleVal) -> Optional[tuple[str, ...]]:
        if isinstance(mv.info.module, torch.nn.ModuleDict):
            return tuple(mv.info.subs)
        return None

    def call_module(self, em: Any, mv: ModuleVal, name: str, args: list[Binding],
                    kwargs: dict[str, Binding], node: ast.AST) -> Binding:
        info = mv.info
        if isinstance(info.module, torch.nn.ModuleDict) and name in ("items", "keys", "values"):
            subs = self.module_items_raw(em, mv)
            keys = [em.b.constant(k) for k in info.subs]
            if name == "keys":
                return Items(tuple(keys))
            if name == "values":
                return Items(tuple(subs))
            return Items(tuple(Items((k, v)) for k, v in zip(keys, subs)))
        fn = inspect.getattr_static(type(info.module), name, None) if info.module is not info.sm else \
            info.sm.__dict__.get("_kiln_python_methods", {}).get(name)
        mod = _modifier(fn) if fn is not None else None
        if mod == "unused":
            em.b.raise_exception(f"{name} was marked unused and cannot be called", "RuntimeError")
            ret = getattr(fn, "__annotations__", {}).get("return", torch.Tensor)
            try:
                rt = ann.from_python(ret, self.class_type_for) if ret is not None else NoneType
            except ann.AnnotationError:
                rt = TENSOR
            return em.uninitialized(rt)  # type: ignore[no-any-return]
        if mod == "ignore":
            return self.python_call(em, mv, fn, args, kwargs, node)
        if fn is not None and _needs_inlining(fn):
            return self.inline_function(em, fn, args, kwargs, node, mv, type(info.module))
        sig = self.method_sig(info, name, node)
        vals: list[Value] = []
        for i, (pname, ptype, default) in enumerate(sig.params):
            if i < len(args):
                b = args[i]
            elif pname in kwargs:
                b = kwargs[pname]
            elif default is not _NO_DEFAULT:
                b = PyObj(default)
            else:
                raise self.error(node, f"{name}() is missing the argument {pname!r}")
            vals.append(em.convert(em.to_value(b, node), ptype, node, f"argument {pname!r} of {name}()"))
        if len(args) > len(sig.params):
            raise self.error(node, f"{name}() takes {len(sig.params)} argument(s), got {len(args)}")
        return em.b.call_method(mv.value, name, vals, sig.returns)  # type: ignore[no-any-return]

    def call_super(self, em: Any, sv: SuperVal, name: str, args: list[Binding],
                   kwargs: dict[str, Binding], node: ast.AST) -> Binding:
        mro = type(sv.base.info.module).__mro__ if isinstance(sv.base, ModuleVal) else sv.base.info.cls.__mro__
        after = mro[mro.index(sv.cls) + 1:]
        for klass in after:
            fn = klass.__dict__.get(name)
            if isinstance(fn, types.FunctionType):
                if klass is torch.nn.Module or klass is object:
                    break
                return self.inline_function(em, fn, args, kwargs, node, sv.base, klass)
        if name == "__init__":
            return em.b.constant(None)  # type: ignore[no-any-return]
        raise self.error(node, f"super() has no method {name!r} that can be compiled")

    def make_future(self, em: Any, v: Value) -> Value:
        return em.b.value("prim::kiln_completed_future", [v], FutureType(v.type))  # type: ignore[no-any-return]

    def materialize(self, em: Any, it: Any, node: ast.AST) -> Value:
        """list(range(...)) / list(zip(...)): a loop appending the elements."""
        trip = it.trip
        first = it.element(em.b.constant(0))
        del first
        raise self.error(node, "list(range(...)) is not supported yet: write a list comprehension "
                               "`[i for i in range(n)]`")
        return trip  # pragma: no cover

    def sorted_by_key(self, em: Any, seq: Binding, kwargs: dict[str, Binding], node: ast.AST,
                      pick: Optional[str] = None) -> Value:
        """``sorted(xs, key=f)`` (and ``min``/``max`` with ``key=``, ``pick`` = "min"/"max"):
        the keys are computed by a loop calling ``f`` (inlined), then a stable argsort."""
        reverse = kwargs.get("reverse")
        scope = em.scope
        scope.vars["__kiln_seq"] = em.to_value(seq, node)
        scope.vars["__kiln_key"] = kwargs["key"]
        expr = ast.parse("[__kiln_key(__kiln_x) for __kiln_x in __kiln_seq]", mode="eval").body
        for n in ast.walk(expr):
            n.lineno, n.col_offset = getattr(node, "lineno", 1), getattr(node, "col_offset", 0)  # type: ignore[attr-defined]
            n.end_lineno, n.end_col_offset = getattr(node, "end_lineno", None), getattr(node, "end_col_offset", None)  # type: ignore[attr-defined]
        try:
            keys = em.value(expr)
            rev = em.b.constant(pick == "max") if pick else (
                em.to_value(reverse, node) if reverse is not None else em.b.constant(False))
            perm = em.b.value("prim::kiln_argsort", [keys, rev], ListType(IntType))
            seqv = scope.vars["__kiln_seq"]
            if pick:
                first = em.op_value("aten::__getitem__", [perm, em.b.constant(0)], {}, node)
                return em.op_value("aten::__getitem__", [seqv, first], {}, node)  # type: ignore[no-any-return]
            scope.vars["__kiln_perm"] = perm
            out = ast.parse("[__kiln_seq[__kiln_i] for __kiln_i in __kiln_perm]", mode="eval").body
            for n in ast.walk(out):
                n.lineno, n.col_offset = getattr(node, "lineno", 1), getattr(node, "col_offset", 0)  # type: ignore[attr-defined]
            return em.value(out, expected=seqv.type)  # type: ignore[no-any-return]
        finally:
            for k in ("__kiln_seq", "__kiln_key", "__kiln_perm"):
                scope.vars.pop(k, None)


# -- helpers ---------------------------------------------------------------------------------

_MODULE_INTERNALS = frozenset(vars(torch.nn.Module()))


def finish_graph(graph: Graph) -> None:
    from kiln.passes.dce import eliminate_dead_code
    eliminate_dead_code(graph)


def _qualname(cls: type) -> str:
    from kiln.frontend.tracer import qualified_class_name
    return qualified_class_name(cls)


def _hashable_const(v: Any) -> Any:
    try:
        hash(v)
        return (type(v), v)
    except TypeError:
        return (type(v), id(v))


def _is_constant(v: Any) -> bool:
    return isinstance(v, (bool, int, float, str, type(None), torch.device, torch.dtype, enum.Enum)) or \
        (isinstance(v, tuple) and all(_is_constant(x) for x in v))


def _attr_type(v: Any) -> Optional[Type]:
    if isinstance(v, torch.Tensor):
        return TENSOR
    if isinstance(v, (list, tuple, dict)) and not v and not isinstance(v, tuple):
        return None
    t = type_of_value(v)
    if t == AnyType:
        return None
    return _plain(t)


def _plain(t: Type) -> Type:
    from kiln.ir.types import DictType, TupleType
    if isinstance(t, TensorType):
        return TENSOR
    if isinstance(t, ListType):
        return ListType(_plain(t.elem))
    if isinstance(t, TupleType):
        return TupleType(tuple(_plain(e) for e in t.elems))
    if isinstance(t, DictType):
        return DictType(t.key, _plain(t.value))
    if isinstance(t, OptionalType):
        return OptionalType(_plain(t.elem))
    return t


def _modifier(fn: Any) -> Optional[str]:
    kiln_mod = getattr(fn, "_kiln_modifier", None)
    if kiln_mod is not None:
        return str(kiln_mod)
    ts = getattr(fn, "_torchscript_modifier", None)
    if ts is None:
        return None
    text = str(getattr(ts, "value", ts)).lower()
    for kind in ("export", "ignore", "unused"):
        if text.startswith(kind):
            return kind
    return None


def _defines_forward(cls: type) -> bool:
    fwd = getattr(cls, "forward", None)
    return fwd is not None and getattr(fwd, "__name__", "") != "_forward_unimplemented"


def _needs_inlining(fn: Any) -> bool:
    """Methods taking compile-time values (unannotated non-tensor use) are inlined, not called."""
    return False


def _ast_default(node: ast.expr) -> Any:
    try:
        return ast.literal_eval(node)
    except ValueError:
        return _NO_DEFAULT


def _signature_comment(p: ParsedFunction) -> Optional[tuple[list[ast.expr], Optional[ast.expr]]]:
    """``# type: (int, Tensor) -> Tensor`` right after the ``def`` line."""
    tc = getattr(p.fdef, "type_comment", None)
    text = tc
    if text is None:
        line = p.fdef.body[0].lineno - 1 if p.fdef.body else 0
        for ln in p.source.lines[p.fdef.lineno - 1:line]:
            s = ln.strip()
            if s.startswith("# type:"):
                text = s[len("# type:"):].strip()
                break
    if not text:
        return None
    try:
        ft = ast.parse(text, mode="func_type")
    except SyntaxError:
        return None
    return list(ft.argtypes), ft.returns  # type: ignore[attr-defined]


__all__ = ["Compiler", "ModuleInfo", "ClassInfo", "SourceFunction", "StrType", "IntType", "is_subtype",
           "typing", "Callable"]
