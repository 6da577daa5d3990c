"""The script compiler's session: what is being compiled, and the compile-time world.

A :class:`Compiler` holds everything one ``kiln.script`` call learns: the stack of functions
being compiled (for error messages and to reject recursion), the modules and script classes
it met (their IR types, attributes and methods), and the caches of parsed functions.

Functions
    A function is parsed once per process (its source, lowered by :mod:`.exits`); a scripted
    entry point becomes a graph whose parameters default to Tensor, and every function it
    calls is compiled inline at the call site with its arguments bound.

Modules
    See :mod:`kiln.frontend.script.modules` (:class:`ModuleCompiler`, a base of
    :class:`Compiler`).

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
import weakref
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any, Optional

import torch

from kiln import syntax
from kiln.errors import CompileError
from kiln.frontend.script import annotations as ann
from kiln.frontend.script.env import (
    Binding,
    Bound,
    Items,
    ModuleVal,
    ObjectVal,
    PyObj,
    SourceFunction,
    is_constant,
)
from kiln.frontend.script.modules import (
    NO_DEFAULT,
    MethodSig,
    ModuleCompiler,
    ModuleInfo,
    ast_default,
    finish_graph,
    signature_text,
)
from kiln.frontend.script.overloads import Overloads
from kiln.frontend.script.source import Frame, Source, error, function_source, set_location
from kiln.ir.builder import Builder
from kiln.ir.graph import Graph, Value
from kiln.ir.objects import ScriptClass
from kiln.ir.types import (
    TENSOR,
    AnyType,
    ClassType,
    DictType,
    EnumType,
    FutureType,
    InterfaceMethod,
    InterfaceType,
    IntType,
    ListType,
    NamedTupleType,
    NoneType,
    OptionalType,
    TensorType,
    TupleType,
    Type,
    is_subtype,
    register_implementation,
    type_of_value,
)

if TYPE_CHECKING:
    from kiln.frontend.script.emitter import FunctionEmitter

_MAX_DEPTH = 64

# Parsed (and lowered) Python functions, for every compile in this process.
_PARSED: weakref.WeakKeyDictionary[Any, ParsedFunction] = weakref.WeakKeyDictionary()

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
class ClassInfo:
    cls: Any                         # the Python class (or a source ClassDef holder)
    type: ClassType
    fields: dict[str, Type] = field(default_factory=dict)
    ready: bool = False
    runtime: ScriptClass = field(default_factory=lambda: ScriptClass(""))   # what its objects carry
    sigs: dict[str, MethodSig] = field(default_factory=dict)     # methods compiled on their own
    compiling: set[str] = field(default_factory=set)
    interfaces: set[str] = field(default_factory=set)            # the interfaces it was checked against


class Compiler(ModuleCompiler):
    """One compilation session (see the module docstring)."""

    def __init__(self) -> None:
        super().__init__()
        self.frames: list[Frame] = []
        self.parsed: dict[Any, ParsedFunction] = {}
        self.classes: dict[Any, ClassInfo] = {}
        self.classes_by_name: dict[str, ClassInfo] = {}
        self.enums: dict[str, type] = {}
        # `[]` / `{}` not annotated: their element type is taken from the first use
        self.empty_lists: set[Value] = set()
        self.source_types: dict[str, Any] = {}
        self.interfaces: dict[Any, InterfaceType] = {}
        self.converted: dict[int, tuple[Any, Any]] = {}   # id(Python object) -> (it, its ScriptObject)

    # -- errors --------------------------------------------------------------------------
    def error(self, node: Optional[ast.AST], cause: str) -> CompileError:
        return error(self.frames, node, cause)

    # -- functions -----------------------------------------------------------------------
    def overload_function(self, ov: Overloads, index: int, impl: Any) -> Any:
        """A key under which :meth:`parse_function` finds overload ``index`` of ``ov``."""
        key = (ov.owner, ov.functions[index].name, index)
        if key not in self.parsed:
            fdef = ov.functions[index]
            self.parsed[key] = ParsedFunction(f"{ov.owner.__qualname__}.{fdef.name}", ov.source, fdef,
                                              getattr(impl, "__globals__", {}), {}, {}, {})
        return key

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
            defaults = {k: param.default for k, param in sig.parameters.items()
                        if param.default is not inspect.Parameter.empty}
            hints = dict(getattr(fn, "__annotations__", {}) or {})
            p = ParsedFunction(fn.__qualname__, src, fdef, fn.__globals__, closure, defaults, hints)
        self.parsed[fn] = p
        if isinstance(fn, types.FunctionType):
            _PARSED[fn] = p     # source and lowering are the same every time: kept per process
        return p

    def param_type(self, em: FunctionEmitter, p: ParsedFunction, arg: ast.arg,
                   default_tensor: bool) -> Optional[Type]:
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

    def return_type(self, em: FunctionEmitter, p: ParsedFunction) -> Optional[Type]:
        hint = p.hints.get("return", None)
        if "return" in p.hints and hint is None:
            return NoneType
        if hint is not None and not isinstance(hint, str):
            try:
                return ann.from_python(hint, self.class_type_for)
            except ann.AnnotationError as e:
                raise self.error(p.fdef, str(e)) from None
        if p.fdef.returns is not None:
            return em.annotation(p.fdef.returns)
        comment = _signature_comment(p)
        if comment is not None and comment[1] is not None:
            return em.annotation(comment[1])
        return None

    def new_emitter(self, b: Builder, p: ParsedFunction,
                    self_class: Optional[type] = None) -> FunctionEmitter:
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
            v = ast_default(d)
            if v is not NO_DEFAULT:
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
                t = self.param_type(em, p, a, True) or TENSOR
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

    def inline_function(self, caller: FunctionEmitter, fn: Any, args: list[Binding],
                        kwargs: dict[str, Binding], node: ast.AST, self_binding: Optional[Binding] = None,
                        self_class: Optional[type] = None) -> Binding:
        """Compile ``fn`` at the call site with its arguments bound."""
        p = self.parse_function(fn)
        if len(self.frames) > _MAX_DEPTH or \
                any(f.name == p.name and f.source is p.source for f in self.frames):
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
        return result

    def bind_arguments(self, em: FunctionEmitter, p: ParsedFunction, args: list[Binding],
                       kwargs: dict[str, Binding], node: ast.AST,
                       self_binding: Optional[Binding]) -> dict[str, tuple[Binding, Optional[Type]]]:
        """Python's argument binding, while compiling: name -> (binding, declared type)."""
        a = p.fdef.args
        positional = a.posonlyargs + a.args
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

    def default_of(self, em: FunctionEmitter, p: ParsedFunction, name: str,
                   ast_defaults: dict[str, ast.expr], node: ast.AST) -> Binding:
        if name in p.defaults:
            return PyObj(p.defaults[name])
        if name in ast_defaults:
            return em.expr(ast_defaults[name])
        raise self.error(node, f"{p.name}() is missing the argument {name!r}")

    def typed_arg(self, em: FunctionEmitter, p: ParsedFunction, param: ast.arg, val: Binding,
                  node: ast.AST) -> tuple[Binding, Optional[Type]]:
        """An argument converted to its parameter's annotation (unannotated: as it is)."""
        t = self.param_type(em, p, param, False)
        if t is None:
            return val, None         # unannotated: generic (the function is inlined)
        if isinstance(val, PyObj):
            if not is_constant(val.obj) or t == AnyType:
                return val, None     # a compile-time object (a function, a class ...) stays one
            v = em.constant_value(val.obj, node)
        else:
            v = em.to_value(val, node)
        what = f"argument {param.arg!r} of {p.name}()"
        if p.globals.get("__name__", "").startswith("torch"):
            # PyTorch's own Python functions annotate for TorchScript's overloads
            # (BroadcastingList2, Optional[List[float]] for a float); they are inlined, so a
            # value that does not fit the annotation goes in as it is.
            try:
                return em.convert(v, t, node, what), t
            except CompileError:
                return v, None
        return em.convert(v, t, node, what), t

    def inline_graph(self, em: FunctionEmitter, fn: Any, args: list[Value], node: ast.AST) -> Value:
        """Call a Kiln function (traced or scripted): its graph, copied in."""
        from kiln.ir.graph import clone_node
        g = fn.graph
        if len(args) != len(g.inputs):
            raise self.error(node, f"{fn.name} takes {len(g.inputs)} argument(s), got {len(args)}")
        env: dict[Value, Value] = {}
        for formal, actual in zip(g.inputs, args):
            want = formal.type if not isinstance(formal.type, TensorType) else TENSOR
            env[formal] = em.convert(actual, want, node, f"an argument of {fn.name}")
        for n in g.nodes:
            em.b.insert(clone_node(n, em.b.graph, env))
        outs = [env[v] for v in g.outputs]
        return outs[0] if len(outs) == 1 else em.b.tuple(outs)

    # -- classes, NamedTuples, enums ---------------------------------------------------
    def class_type_for(self, cls: type) -> Optional[Type]:
        kind = interface_kind(cls)
        if kind is not None:
            return self.interface_type(cls, kind == "module")
        if ann.is_namedtuple_class(cls):
            KNOWN_TYPES.setdefault(ann.qualname(cls), cls)
            return ann.namedtuple_type(cls, ann.qualname(cls), self.class_type_for)
        if ann.is_enum_class(cls):
            return self.enum_type(cls)
        if getattr(cls, "_kiln_archive_class", False):     # a class of a loaded archive's code
            return self.class_info(cls).type
        if isinstance(cls, type) and issubclass(cls, torch.nn.Module):
            return ClassType(ann.qualname(cls))
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
            return DictType(AnyType, AnyType)
        if cls is tuple:
            return TupleType(())
        try:
            return ann.from_python(cls, self.class_type_for)
        except ann.AnnotationError:
            raise self.error(node, f"isinstance() cannot test for {cls!r}") from None

    def enum_type(self, cls: type) -> EnumType:
        q = ann.qualname(cls)
        self.enums[q] = cls
        KNOWN_TYPES.setdefault(q, cls)
        return EnumType(q)

    def enum_value_type(self, t: EnumType) -> Type:
        cls = self.enums.get(t.qualname) or KNOWN_TYPES.get(t.qualname)
        if cls is None or not issubclass(cls, enum.Enum):
            return AnyType
        vals = [m.value for m in cls]
        return type_of_value(vals[0]) if vals else AnyType

    def lookup_type_name(self, dotted: str) -> Any:
        return self.source_types.get(dotted) or KNOWN_TYPES.get(dotted)

    def class_info(self, cls: type) -> ClassInfo:
        info = self.classes.get(cls)
        if info is not None:
            return info
        if interface_kind(cls) is not None:
            raise self.error(None, f"{cls.__name__} is an interface: it has no objects of its own")
        info = ClassInfo(cls, ClassType(ann.qualname(cls)))
        # a class of a loaded archive brings the record its loaded objects already carry
        known = cls.__dict__.get("_kiln_runtime")
        info.runtime = known if isinstance(known, ScriptClass) else ScriptClass(info.type.qualname)
        if info.runtime.fields:        # declared in the archive (its annotations name __torch__ types)
            info.fields.update(info.runtime.fields)
        else:
            info.runtime.fields = info.fields
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
            for name, (v, _) in bound.items():
                em.scope.vars[name] = v
            em.return_type = NoneType
            em.emit_body(list(p.fdef.body), p.fdef, p)
        finally:
            self.frames.pop()
        info.ready = True

    def construct(self, em: FunctionEmitter, cls: type, args: list[Binding], kwargs: dict[str, Binding],
                  node: ast.AST) -> Binding:
        """``Cls(...)``: a NamedTuple, or a script-class object with its ``__init__`` inlined."""
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
        obj = em.b.value("prim::CreateObject", [], info.type, cls=info.runtime)
        ov = ObjectVal(obj, info)
        init = cls.__dict__.get("__init__")
        if init is not None:
            self.inline_function(em, init, args, kwargs, node, ov, cls)
        return ov

    # -- interfaces ------------------------------------------------------------------------
    def interface_type(self, cls: type, module: bool) -> InterfaceType:
        """The type an interface class (``@kiln.interface``) stands for: its methods' signatures
        (parameters default to Tensor, results to None, as TorchScript reads them)."""
        known = self.interfaces.get(cls)
        if known is not None:
            return known
        q = ann.qualname(cls)
        self.interfaces[cls] = InterfaceType(q, (), module)     # while its own methods name it
        KNOWN_TYPES.setdefault(q, cls)
        methods: list[InterfaceMethod] = []
        for name, fn in vars(cls).items():
            if not isinstance(fn, (types.FunctionType, SourceFunction)) or name == "__init__":
                continue
            sig = self.declared_sig(fn, cls)
            methods.append((name, tuple((n, t) for n, t, _ in sig.params), sig.returns))
        t = InterfaceType(q, tuple(sorted(methods, key=lambda m: m[0])), module)
        self.interfaces[cls] = t
        return t

    def declared_sig(self, fn: Any, owner: Any) -> MethodSig:
        """A method's signature from its annotations alone (nothing compiled)."""
        p = self.parse_function(fn)
        em = self.new_emitter(Builder(Graph()), p, owner)
        self.frames.append(Frame(p.name, p.source))
        try:
            params: list[tuple[str, Type, Any]] = [
                (a.arg, self.param_type(em, p, a, True) or TENSOR, NO_DEFAULT) for a in p.fdef.args.args[1:]]
            returns = self.return_type(em, p)
        finally:
            self.frames.pop()
        return MethodSig(params, returns if returns is not None else NoneType)

    def class_method_sig(self, info: ClassInfo, name: str, node: Optional[ast.AST]) -> MethodSig:
        """Method ``name`` of a script class compiled on its own -- what an interface call on
        one of its objects runs -- and its signature (compiled once per session)."""
        sig = info.sigs.get(name)
        if sig is not None:
            return sig
        fn = inspect.getattr_static(info.cls, name)
        owner = next((c for c in info.cls.__mro__ if name in c.__dict__), info.cls)
        if name in info.compiling:     # it converts its own object to an interface: annotations
            return self.declared_sig(fn, owner)
        info.compiling.add(name)
        try:
            graph, sig = self.emit_method(fn, owner, info.type, lambda me: ObjectVal(me, info), node,
                                          "script class")
        finally:
            info.compiling.discard(name)
        info.sigs[name] = sig
        from kiln.runtime.module import ScriptFunction
        short = info.type.qualname.rpartition(".")[2]
        defaults = sig.defaults()
        info.runtime.define(name, ScriptFunction(f"{short}_{name}", graph, defaults), graph, defaults)
        return sig

    def implementation_problem(self, info: ClassInfo, t: InterfaceType, node: Optional[ast.AST]) -> str:
        """Why script class ``info`` does not implement interface ``t`` ("" when it does: then
        the interface's methods are compiled for its objects, and the class is a subtype)."""
        if t.qualname in info.interfaces:
            return ""
        for name, params, ret in t.methods:
            fn = inspect.getattr_static(info.cls, name, None)
            if not isinstance(fn, (types.FunctionType, SourceFunction)):
                return f"it has no method {name}()"
            sig = self.class_method_sig(info, name, node)
            got = tuple((n, pt) for n, pt, _ in sig.params)
            if got != params or not is_subtype(sig.returns, ret):
                return (f"its method {signature_text(name, got, sig.returns)} does not match the "
                        f"interface's {signature_text(name, params, ret)}")
        info.interfaces.add(t.qualname)
        register_implementation(info.type.qualname, t.qualname)
        return ""

    def require_implements(self, info: ClassInfo, t: InterfaceType, node: Optional[ast.AST],
                           what: str) -> None:
        why = self.implementation_problem(info, t, node)
        if why:
            raise self.error(node, f"{what} is expected to be {t.qualname.rpartition('.')[2]} (an "
                                   f"interface), but class {info.type.qualname.rpartition('.')[2]} does not "
                                   f"implement it: {why}")

    def call_interface(self, em: FunctionEmitter, v: Value, name: str, args: list[Binding],
                       kwargs: dict[str, Binding], node: ast.AST) -> Value:
        """``x.name(...)`` on an interface-typed value: ``prim::CallMethod``, which runs the method
        of the object's class at run time (the arguments converted to the interface's types)."""
        t = v.type
        assert isinstance(t, InterfaceType)
        short = t.qualname.rpartition(".")[2]
        m = t.method(name)
        if m is None:
            raise self.error(node, f"interface {short} has no method {name!r}")
        _, params, ret = m
        if len(args) > len(params):
            raise self.error(node, f"{short}.{name}() takes {len(params)} argument(s), got {len(args)}")
        kwargs = dict(kwargs)
        vals: list[Value] = []
        for i, (pname, ptype) in enumerate(params):
            if i < len(args):
                b = args[i]
            elif pname in kwargs:
                b = kwargs.pop(pname)
            else:
                raise self.error(node, f"{short}.{name}() is missing the argument {pname!r}")
            vals.append(em.convert(em.to_value(b, node), ptype, node,
                                   f"argument {pname!r} of {short}.{name}()"))
        if kwargs:
            raise self.error(node, f"{short}.{name}() got an unexpected keyword argument "
                                   f"{next(iter(kwargs))!r}")
        return em.b.call_method(v, name, vals, ret)

    def script_objects(self, v: Any, t: Type, what: str) -> Any:
        """A module attribute's value with the script-class objects in it (Python objects of
        the classes its type names) as run-time objects: checked against the declared class or
        interface, their fields copied, their class's compiled methods attached."""
        from kiln.ir.objects import ScriptObject
        if v is None or isinstance(v, (ScriptObject, torch.Tensor, torch.nn.Module)):
            return v
        if isinstance(t, OptionalType):
            return self.script_objects(v, t.elem, what)
        if isinstance(t, ListType) and isinstance(v, list):
            return [self.script_objects(x, t.elem, what) for x in v]
        if isinstance(t, TupleType) and isinstance(v, tuple) and len(v) == len(t.elems):
            return tuple(self.script_objects(x, e, what) for x, e in zip(v, t.elems))
        if isinstance(t, DictType) and isinstance(v, dict):
            return {k: self.script_objects(x, t.value, what) for k, x in v.items()}
        own = self.class_type_for(type(v)) if isinstance(t, ClassType) else None
        if not isinstance(own, ClassType) or isinstance(own, InterfaceType):
            return v
        info = self.class_info(type(v))
        if isinstance(t, InterfaceType):
            self.require_implements(info, t, None, what)
        elif info.type != t:
            return v
        known = self.converted.get(id(v))
        if known is not None:        # an object held twice stays one object
            return known[1]
        obj = ScriptObject(info.type.qualname, info.runtime)
        self.converted[id(v)] = (v, obj)
        for name, ft in info.fields.items():
            if hasattr(v, name):
                setattr(obj, name, self.script_objects(getattr(v, name), ft, f"field {name!r} of {what}"))
        return obj

    def make_namedtuple(self, em: FunctionEmitter, cls: type, args: list[Binding],
                        kwargs: dict[str, Binding], node: ast.AST) -> Value:
        t = ann.namedtuple_type(cls, ann.qualname(cls), self.class_type_for)
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
        return em.b.value("prim::TupleConstruct", vals, t)

    def object_attribute(self, em: FunctionEmitter, ov: ObjectVal, name: str, node: ast.AST) -> Binding:
        info = ov.info
        if name in info.fields:
            return em.b.value("prim::GetAttr", [ov.value], info.fields[name], name=name)
        cls = info.cls
        attr = inspect.getattr_static(cls, name, None)
        if isinstance(attr, (types.FunctionType, staticmethod, classmethod, property, SourceFunction)):
            if isinstance(attr, property) and attr.fget is not None:
                return self.inline_function(em, attr.fget, [], {}, node, ov, cls)
            return Bound(ov, name)
        if attr is not None and is_constant(attr):
            return PyObj(attr)
        raise self.error(node, f"{cls.__name__} object has no attribute {name!r}"
                               + ("" if info.ready else "; assign it in __init__ first"))

    def call_object_method(self, em: FunctionEmitter, ov: ObjectVal, name: str, args: list[Binding],
                           kwargs: dict[str, Binding], node: ast.AST) -> Binding:
        cls = ov.info.cls
        attr = inspect.getattr_static(cls, name)
        if isinstance(attr, staticmethod):
            return self.inline_function(em, attr.__func__, args, kwargs, node)
        owner = next(c for c in cls.__mro__ if name in c.__dict__)
        return self.inline_function(em, attr, args, kwargs, node, ov, owner)

    def set_attribute(self, em: FunctionEmitter, base: ModuleVal | ObjectVal, name: str, value: Value,
                      node: ast.AST, declared: Optional[Type] = None) -> None:
        """``obj.name = value``: a field of a script-class object (its type fixed by the first
        assignment in ``__init__``) or a typed attribute of a module."""
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
        info_m = base.info
        t = self.module_attr_type(info_m, name, node)
        if name in info_m.sm._parameters or name in info_m.sm._buffers:
            t = TENSOR
        value = em.convert(value, t, node, f"attribute {name!r}")
        em.b.set_attr(base.value, name, value)

    def has_attribute(self, em: FunctionEmitter, base: Binding, name: str) -> bool:
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

    def make_future(self, em: FunctionEmitter, v: Value) -> Value:
        """``fork(f, ...)``: ``f`` runs at once; its result is a completed future."""
        return em.b.value("prim::kiln_completed_future", [v], FutureType(v.type))

    def sorted_by_key(self, em: FunctionEmitter, seq: Binding, kwargs: dict[str, Binding],
                      node: ast.AST, pick: Optional[str] = None) -> Value:
        """``sorted(xs, key=f)`` (and ``min``/``max`` with ``key=``, ``pick`` = "min"/"max"):
        the keys are computed by a loop calling ``f`` (inlined), then a stable argsort."""
        reverse = kwargs.get("reverse")
        scope = em.scope
        seqv = em.to_value(seq, node)
        scope.vars["__kiln_seq"] = seqv
        scope.vars["__kiln_key"] = kwargs["key"]
        expr = syntax.parse("[__kiln_key(__kiln_x) for __kiln_x in __kiln_seq]", mode="eval").body
        for n in ast.walk(expr):
            set_location(n, lineno=getattr(node, "lineno", 1), col_offset=getattr(node, "col_offset", 0),
                         end_lineno=getattr(node, "end_lineno", None),
                         end_col_offset=getattr(node, "end_col_offset", None))
        try:
            keys = em.value(expr)
            rev = em.b.constant(pick == "max") if pick else (
                em.to_value(reverse, node) if reverse is not None else em.b.constant(False))
            perm = em.b.value("prim::kiln_argsort", [keys, rev], ListType(IntType))
            if pick:
                first = em.op_value("aten::__getitem__", [perm, em.b.constant(0)], {}, node)
                return em.op_value("aten::__getitem__", [seqv, first], {}, node)
            scope.vars["__kiln_perm"] = perm
            out = syntax.parse("[__kiln_seq[__kiln_i] for __kiln_i in __kiln_perm]", mode="eval").body
            for n in ast.walk(out):
                set_location(n, lineno=getattr(node, "lineno", 1), col_offset=getattr(node, "col_offset", 0))
            return em.value(out, expected=seqv.type)
        finally:
            for k in ("__kiln_seq", "__kiln_key", "__kiln_perm"):
                scope.vars.pop(k, None)


# -- helpers ---------------------------------------------------------------------------------

def interface_kind(cls: Any) -> Optional[str]:
    """``"class"`` or ``"module"`` for an interface (``@kiln.interface``, ``@torch.jit.interface``
    or an archive's ``Interface`` / ``ModuleInterface`` class), else None."""
    d = getattr(cls, "__dict__", {})
    kind = d.get("_kiln_interface")
    if kind is None and "__torch_script_interface__" in d:
        kind = "module" if isinstance(cls, type) and issubclass(cls, torch.nn.Module) else "class"
    return str(kind) if kind is not None else None


def _signature_comment(p: ParsedFunction) -> Optional[tuple[list[ast.expr], Optional[ast.expr]]]:
    """``# type: (int, Tensor) -> Tensor`` right after the ``def`` line."""
    text = getattr(p.fdef, "type_comment", None)
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
        ft = syntax.parse(text, mode="func_type")
    except SyntaxError:
        return None
    return list(ft.argtypes), ft.returns


# ModuleInfo and MethodSig live in .modules; they are part of the session's vocabulary.
__all__ = ["KNOWN_TYPES", "ClassInfo", "Compiler", "MethodSig", "ModuleInfo", "SourceFunction",
           "TorchNamespace"]
