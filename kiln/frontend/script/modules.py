"""Modules in the script compiler: ``nn.Module`` trees as ScriptModules, and calls between them.

Every ``nn.Module`` becomes a :class:`~kiln.runtime.module.ScriptModule` sharing its
parameters and buffers, with its submodules scripted recursively (a module that is already
a ScriptModule -- traced, or scripted before -- is used as it is).  Attribute types come
from class annotations, else from the values; ``Final`` attributes and names in
``__constants__`` are constants.  ``forward`` and exported methods are compiled; other
methods when first called.  Calls between modules are ``prim::CallMethod``; an ``@ignore``d
method is left to Python (``prim::kiln_python_call``), an ``@unused`` one raises.

Instances with the same *type key* -- class, constants, attribute types and their
submodules' keys, like TorchScript's concrete types -- share one compilation of each method.

:class:`ModuleCompiler` is the part of :class:`~kiln.frontend.script.compiler.Compiler`
that does this; it uses the session's function machinery (parsing, emitters, inlining),
declared below for the type checker.
"""

from __future__ import annotations

import ast
import enum
import inspect
import math
import types
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any, Optional

import torch

from kiln.errors import CompileError
from kiln.frontend.script import annotations as ann
from kiln.frontend.script.env import Binding, Bound, Items, ModuleVal, PyObj, SuperVal, is_constant
from kiln.frontend.script.overloads import Overloads, method_overloads, overload_name
from kiln.frontend.script.source import Frame
from kiln.ir.builder import Builder
from kiln.ir.graph import Graph, Value, tensor_constants
from kiln.ir.types import (
    TENSOR,
    AnyType,
    BoolType,
    ClassType,
    DictType,
    InterfaceType,
    ListType,
    NoneType,
    OptionalType,
    TensorType,
    TupleType,
    Type,
    accepts,
    is_subtype,
    type_of_value,
    walk_types,
)

if TYPE_CHECKING:
    from kiln.frontend.script.compiler import ParsedFunction
    from kiln.frontend.script.emitter import FunctionEmitter
    from kiln.runtime.module import ScriptModule

# A parameter without a default value (None is a default like any other).
NO_DEFAULT = object()


@dataclass(eq=False)
class MethodSig:
    params: list[tuple[str, Type, Any]]      # (name, type, default or NO_DEFAULT)
    returns: Type

    def defaults(self) -> dict[str, Any]:
        return {name: d for name, _, d in self.params if d is not NO_DEFAULT}


@dataclass(eq=False)
class ModuleInfo:
    module: torch.nn.Module          # the original module (or the ScriptModule itself)
    sm: ScriptModule
    type: ClassType
    constants: dict[str, Any] = field(default_factory=dict)
    attr_types: dict[str, Type] = field(default_factory=dict)
    bad_attrs: dict[str, str] = field(default_factory=dict)   # name -> why it has no type
    sigs: dict[str, MethodSig] = field(default_factory=dict)
    compiling: set[str] = field(default_factory=set)
    subs: dict[str, ModuleInfo] = field(default_factory=dict)
    key: Optional[int] = None                                 # see ModuleCompiler.type_key
    full_key: Optional[int] = None
    interfaces: dict[str, InterfaceType] = field(default_factory=dict)   # submodules typed by one


@dataclass(eq=False)
class _Reads:
    """What a compilation in progress read of its module: constants and methods of self."""

    reads: dict[str, Any] = field(default_factory=dict)
    calls: list[str] = field(default_factory=list)


@dataclass(eq=False)
class _Compiled:
    """One compilation of a method, as the caches keep it."""

    graph: Graph
    sig: MethodSig
    has_tensor_constants: bool
    # what it depends on besides the type key without constants: the module's own constants
    # it read (name -> value key) and the methods of ``self`` it called (compiled with it)
    reads: dict[str, Any] = field(default_factory=dict)
    calls: list[str] = field(default_factory=list)

    def matches(self, info: ModuleInfo) -> bool:
        consts = info.constants
        return all(name in consts and _const_key(consts[name]) == k for name, k in self.reads.items())


class ModuleCompiler:
    """Scripting modules and calling their methods (a part of the Compiler)."""

    def __init__(self) -> None:
        self.modules: dict[int, ModuleInfo] = {}
        # type key -> method name -> compilation, shared by equal instances
        self.method_cache: dict[int, dict[str, _Compiled]] = {}
        # the type key without the module's own constant values -> method name -> the
        # compilations made so far: instances whose constants differ only where the method does
        # not look (the 64- and 128-channel BatchNorms of a ResNet) share one of them
        self.method_variants: dict[int, dict[str, list[_Compiled]]] = {}
        self._keys: dict[tuple[Any, ...], int] = {}                 # see type_key
        self._tracking: list[tuple[ModuleInfo, _Reads]] = []   # compilations in progress

    if TYPE_CHECKING:
        # -- defined in compiler.Compiler ----------------------------------------------------
        frames: list[Frame]

        def error(self, node: Optional[ast.AST], cause: str) -> CompileError: ...

        def parse_function(self, fn: Any) -> ParsedFunction: ...

        def new_emitter(self, b: Builder, p: ParsedFunction,
                        self_class: Optional[type] = None) -> FunctionEmitter: ...

        def param_type(self, em: FunctionEmitter, p: ParsedFunction, arg: ast.arg,
                       default_tensor: bool) -> Optional[Type]: ...

        def return_type(self, em: FunctionEmitter, p: ParsedFunction) -> Optional[Type]: ...

        def inline_function(self, caller: FunctionEmitter, fn: Any, args: list[Binding],
                            kwargs: dict[str, Binding], node: ast.AST,
                            self_binding: Optional[Binding] = None,
                            self_class: Optional[type] = None) -> Binding: ...

        def class_type_for(self, cls: type) -> Optional[Type]: ...

        def overload_function(self, ov: Overloads, index: int, impl: Any) -> Any: ...

        def script_objects(self, v: Any, t: Type, what: str) -> Any: ...

    # -- the module tree -------------------------------------------------------------------
    def script_module(self, module: torch.nn.Module) -> ScriptModule:
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
            declared = module.__dict__["_kiln_attr_types"]
            for name in module._kiln_attributes:
                v = module.__dict__.get(name)
                info.attr_types[name] = declared.get(name) or _attr_type(v) or AnyType
            info.constants.update(module.__dict__["_kiln_constants"])
            for name, child in module._modules.items():
                if child is not None:
                    info.subs[name] = self.module_info(child)
            return info
        cls = type(module)
        sm = ScriptModule(ann.qualname(cls), cls.__name__)
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
        self._module_interfaces(info)
        return info

    def _module_interfaces(self, info: ModuleInfo) -> None:
        """Submodules annotated with a module interface (``impl: Scaler``): the interface is
        their declared type (saving writes it); :meth:`_check_module_interfaces` checks them."""
        hints: dict[str, Any] = {}
        for klass in reversed(type(info.module).__mro__):
            hints.update(getattr(klass, "__annotations__", {}) or {})
        for name in info.subs:
            hint = hints.get(name)
            if not isinstance(hint, type) or not issubclass(hint, torch.nn.Module):
                continue
            t = self.class_type_for(hint)
            if isinstance(t, InterfaceType) and t.module:
                info.interfaces[name] = t
                info.sm.__dict__["_kiln_attr_types"][name] = t

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
                sm._kiln_set_constant(name, v)
                continue
            t: Optional[Type] = None
            if hint is not None:
                try:
                    t = ann.from_python(hint, self.class_type_for)
                except ann.AnnotationError as e:
                    info.bad_attrs[name] = str(e)
                    continue
            elif isinstance(v, enum.Enum):
                t = self.class_type_for(type(v))
            else:
                t = _attr_type(v)
            if t is None:
                info.bad_attrs[name] = f"its value {type(v).__name__} has no type Kiln can infer; annotate it"
                continue
            if any(isinstance(x, ClassType) for x in walk_types(t)):
                v = self.script_objects(v, t, f"attribute {name!r} of {cls.__name__}")
            info.attr_types[name] = t
            sm._kiln_set_attribute(name, v, t)

    # -- methods ---------------------------------------------------------------------------
    def compile_entry_methods(self, info: ModuleInfo) -> None:
        """``forward`` and exported methods, the module's own before its submodules' (so that
        an error in a submodule called from here shows the call that led to it)."""
        if info.module is not info.sm:
            self._compile_own_entries(info)
        for sub in info.subs.values():
            if sub.module is not sub.sm:
                self.compile_entry_methods(sub)

    def _compile_own_entries(self, info: ModuleInfo) -> None:
        cls = type(info.module)
        names = []
        if _defines_forward(cls) and _modifier(cls.forward) not in ("ignore", "unused"):
            names.append("forward")
        for klass in cls.__mro__:
            for name, fn in vars(klass).items():
                if isinstance(fn, types.FunctionType) and _modifier(fn) == "export" and name not in names:
                    names.append(name)
        self._check_module_interfaces(info)     # first: a call through one relies on it
        for name in names:
            self.method_sig(info, name, None)

    def _check_module_interfaces(self, info: ModuleInfo) -> None:
        """Each submodule typed by a module interface has every method of the interface, with
        the same parameters (names and types) and a result that fits."""
        for name, it in info.interfaces.items():
            sub = info.subs[name]
            for mname, params, ret in it.methods:
                why = ""
                if not _has_method(sub, mname):
                    why = f"it has no method {mname}()"
                else:
                    sig = self.method_sig(sub, mname, None)
                    got = tuple((n, t) for n, t, _ in sig.params)
                    if got != params or not is_subtype(sig.returns, ret):
                        why = (f"its method {signature_text(mname, got, sig.returns)} does not match the "
                               f"interface's {signature_text(mname, params, ret)}")
                if why:
                    sub_name = type(sub.module).__name__ if sub.module is not sub.sm else sub.sm.original_name
                    raise self.error(None, f"submodule {name!r} of {type(info.module).__name__} is declared "
                                           f"{it.qualname.rpartition('.')[2]} (a module interface), but "
                                           f"{sub_name} does not implement it: {why}")

    def method_sig(self, info: ModuleInfo, name: str, node: Optional[ast.AST]) -> MethodSig:
        """The signature of method ``name``, compiling it (once per type key) if need be."""
        for tracked_info, tracked in self._tracking:   # a method of self calls this one
            if tracked_info is info and name not in tracked.calls:
                tracked.calls.append(name)
        sig = info.sigs.get(name)
        if sig is not None:
            return sig
        if info.module is info.sm:
            # A module loaded from an archive carries its methods as source until compiled.
            fn = info.sm.__dict__.get("_kiln_method_sources", {}).get(name)
            if fn is None or name in info.sm._kiln_graphs:
                return self._graph_sig(info, name, node)
        else:
            fn = self._method_function(info, name, node)
        if name in info.compiling:
            raise self.error(node, f"method {name!r} calls itself; recursion is not supported")
        hit = self._cached(info, name)
        if hit is not None:
            for tracked_info, tracked in self._tracking:   # a caller depends on what it read
                if tracked_info is info:
                    tracked.reads.update(hit.reads)
            self._define(info, name, hit)
            for other in hit.calls:    # the helpers it calls on self
                self.method_sig(info, other, node)
            return hit.sig
        info.compiling.add(name)
        track = _Reads()
        self._tracking.append((info, track))
        try:
            graph, sig = self.compile_method(info, fn, name, node)
        finally:
            info.compiling.discard(name)
            self._tracking.pop()
        done = _Compiled(graph, sig, next(tensor_constants(graph), None) is not None,
                         track.reads, [c for c in track.calls if c != name])
        self.method_cache[self.type_key(info)][name] = done
        self.method_variants[self.type_key(info, with_constants=False)].setdefault(name, []).append(done)
        info.sigs[name] = sig
        info.sm._kiln_define_method(name, graph, sig.defaults())
        return sig

    def _cached(self, info: ModuleInfo, name: str) -> Optional[_Compiled]:
        """A compilation of method ``name`` for an instance like this one: of the same type key,
        or of one that differs only in constants the method did not read."""
        shared = self.method_cache.setdefault(self.type_key(info), {})
        hit = shared.get(name)
        if hit is None:
            variants = self.method_variants.setdefault(self.type_key(info, with_constants=False), {})
            hit = next((c for c in variants.get(name, ()) if c.matches(info)), None)
            if hit is not None:
                shared[name] = hit
        return hit

    def _define(self, info: ModuleInfo, name: str, c: _Compiled) -> None:
        """Give another instance method ``name`` compiled for an equal one."""
        if name in info.sigs:
            return
        info.sigs[name] = c.sig
        # Instances share the graph (as TorchScript's do), unless it holds tensor constants,
        # which ``to()`` converts in place per instance.
        info.sm._kiln_define_method(name, c.graph.copy() if c.has_tensor_constants else c.graph,
                                    c.sig.defaults())

    def read_constant(self, info: ModuleInfo, name: str) -> Any:
        """The value of constant ``name`` of the module, noted as read by the compilations in
        progress on it (their graphs hold the value)."""
        value = info.constants[name]
        for tracked_info, tracked in self._tracking:
            if tracked_info is info:
                tracked.reads[name] = _const_key(value)
        return value

    def _method_function(self, info: ModuleInfo, name: str, node: Optional[ast.AST]) -> Any:
        """What :meth:`parse_function` takes for method ``name``: the function, or for an
        overloaded method the key of an overload (``name`` itself stands for the first)."""
        cls = type(info.module)
        fn = inspect.getattr_static(cls, name, None)
        base, _, index = name.rpartition("__")
        if fn is None and base and index.isdigit():
            ov, impl = method_overloads(cls, base), inspect.getattr_static(cls, base, None)
            if ov is not None and int(index) < len(ov.functions):
                return self.overload_function(ov, int(index), impl)
        if not isinstance(fn, types.FunctionType):
            raise self.error(node, f"{cls.__name__} has no method {name!r}")
        ov = method_overloads(cls, name)
        return fn if ov is None else self.overload_function(ov, 0, fn)

    def pick_overload(self, em: FunctionEmitter, info: ModuleInfo, name: str, args: list[Binding],
                      kwargs: dict[str, Binding], node: ast.AST) -> str:
        """The overload of method ``name`` a call with these arguments runs (``name`` when the
        method has none): the first whose parameters accept the arguments' types."""
        if info.module is info.sm:
            return name
        ov = method_overloads(type(info.module), name)
        if ov is None:
            return name
        found = [em.to_value(b, node).type for b in args]
        tried = []
        for i in range(len(ov.functions)):
            candidate = name if i == 0 else overload_name(name, i)
            params = self.method_sig(info, candidate, node).params
            names = {p[0] for p in params}
            if len(found) <= len(params) and all(accepts(t, a) for a, (_, t, _) in zip(found, params)) \
                    and all(k in names for k in kwargs):
                return candidate
            tried.append("(" + ", ".join(t.annotation() for _, t, _ in params) + ")")
        raise self.error(node, f"no overload of {type(info.module).__name__}.{name} takes arguments of "
                               f"types ({', '.join(t.annotation() for t in found)}); its overloads take "
                               + " or ".join(tried))

    def type_key(self, info: ModuleInfo, with_constants: bool = True) -> int:
        """What a method's graph depends on besides the class: two instances with the same key
        (e.g. the 100 BatchNorms of a ResNet) share one compilation, as TorchScript's
        concrete types do.  ``with_constants=False``: the same but for the values of the
        module's own constants (its submodules' keys keep theirs).  A key is a small int
        standing for the structure it was made from (cheap to hash, however deep the tree)."""
        if info.key is None:
            sm = info.sm
            # Loaded modules are all ScriptModules: their class is the qualified name plus
            # the method sources the archive gave that class.
            sources = sm.__dict__.get("_kiln_method_sources") if info.module is sm else None
            name = sm.qualified_name if sources is None else id(sources)   # shared sources: one class
            info.key = self._intern((type(info.module), name, tuple(sorted(info.constants)),
                                     tuple(sorted(info.attr_types.items(), key=str)),
                                     tuple((k, self.type_key(v)) for k, v in info.subs.items()),
                                     tuple((k, p is None) for k, p in sm._parameters.items()),
                                     tuple((k, b is None) for k, b in sm._buffers.items())))
            info.full_key = self._intern((info.key, tuple(sorted((k, _const_key(v))
                                                                 for k, v in info.constants.items()))))
        if not with_constants:
            return info.key
        assert info.full_key is not None
        return info.full_key

    def _intern(self, key: tuple[Any, ...]) -> int:
        return self._keys.setdefault(key, len(self._keys))

    def _graph_sig(self, info: ModuleInfo, name: str, node: Optional[ast.AST]) -> MethodSig:
        """The signature of a method an existing ScriptModule already has as a graph."""
        graphs = info.sm._kiln_graphs
        if name not in graphs:
            raise self.error(node, f"{info.sm.original_name} has no method {name!r}")
        g = graphs[name]
        params = [(v.name or f"arg{i}", v.type, NO_DEFAULT) for i, v in enumerate(g.inputs[1:])]
        out = g.outputs[0].type if len(g.outputs) == 1 else AnyType
        sig = MethodSig(params, out)
        info.sigs[name] = sig
        return sig

    def compile_method(self, info: ModuleInfo, fn: Any, name: str,
                       call_site: Optional[ast.AST] = None) -> tuple[Graph, MethodSig]:
        """Method ``name`` of the module as a graph whose input 0 is ``self`` (compiled on
        demand from ``call_site``, in the function being compiled, when there is one)."""
        owner = next((c for c in type(info.module).__mro__ if name in c.__dict__), type(info.module))
        return self.emit_method(fn, owner, info.type, lambda me: ModuleVal(me, info), call_site, "module")

    def emit_method(self, fn: Any, owner: Any, self_type: Type, bind_self: Callable[[Value], Binding],
                    call_site: Optional[ast.AST], what: str) -> tuple[Graph, MethodSig]:
        """A method as a graph of its own (input 0 is ``self``, bound by ``bind_self``): of a
        module, or of a script class whose objects an interface call may reach."""
        p = self.parse_function(fn)
        graph = Graph()
        b = Builder(graph)
        em = self.new_emitter(b, p, owner)
        self.frames.append(Frame(p.name, p.source, call_site if self.frames else None))
        try:
            me = graph.add_input(self_type, "self")
            em.scope.vars["self"] = bind_self(me)
            params: list[tuple[str, Type, Any]] = []
            a = p.fdef.args
            if a.vararg or a.kwarg or a.kwonlyargs:
                raise self.error(p.fdef, f"{what} methods cannot take *args, **kwargs or keyword-only "
                                         "parameters; helper functions they call can")
            n_def = len(a.defaults)
            plist = a.args[1:]
            for i, arg in enumerate(plist):
                t = self.param_type(em, p, arg, True) or TENSOR
                v = graph.add_input(t, arg.arg)
                em.scope.vars[arg.arg] = v
                em.scope.declared[arg.arg] = t
                d = p.defaults.get(arg.arg, NO_DEFAULT)
                if d is NO_DEFAULT and i >= len(plist) - n_def:
                    d = ast_default(a.defaults[i - (len(plist) - n_def)])
                params.append((arg.arg, t, d))
            em.return_type = self.return_type(em, p)
            out = em.emit_body(list(p.fdef.body), p.fdef, p)
            graph.register_output(out)
        finally:
            self.frames.pop()
        finish_graph(graph)
        return graph, MethodSig(params, em.return_type or out.type)

    # -- attributes ------------------------------------------------------------------------
    def module_attribute(self, em: FunctionEmitter, mv: ModuleVal, name: str, node: ast.AST) -> Binding:
        """``self.name``: a parameter, buffer, submodule, constant or typed attribute, else
        something the module's class defines."""
        info = mv.info
        sm = info.sm
        if name in sm._parameters or name in sm._buffers:
            t = sm._parameters.get(name, sm._buffers.get(name))
            if t is None:
                return em.b.constant(None)
            return em.b.get_attr(mv.value, name, TENSOR)
        if name in info.subs:
            sub = info.subs[name]
            return ModuleVal(em.b.get_attr(mv.value, name, sub.type), sub)
        if name in info.constants:
            return PyObj(self.read_constant(info, name))
        if name == "training":
            return em.b.get_attr(mv.value, "training", BoolType)
        if name in info.attr_types:
            return em.b.get_attr(mv.value, name, info.attr_types[name])
        return self._class_attribute(em, mv, name, node)

    def _class_attribute(self, em: FunctionEmitter, mv: ModuleVal, name: str, node: ast.AST) -> Binding:
        """A method, property or constant of the module's class (or of an existing
        ScriptModule: its graphs and Python methods)."""
        info = mv.info
        sm = info.sm
        if info.module is not info.sm:
            attr = inspect.getattr_static(type(info.module), name, None)
            if isinstance(attr, types.FunctionType):
                return Bound(mv, name)
            if isinstance(attr, property) and attr.fget is not None:
                return self.inline_function(em, attr.fget, [], {}, node, mv, type(info.module))
            if attr is not None and is_constant(attr):
                return PyObj(attr)
        elif name in info.sm._kiln_graphs or name in info.sm.__dict__.get("_kiln_python_methods", {}) \
                or name in info.sm.__dict__.get("_kiln_method_sources", {}):
            return Bound(mv, name)
        if name in sm._modules and sm._modules[name] is None:
            return em.b.constant(None)
        why = info.bad_attrs.get(name)
        cls_name = type(info.module).__name__ if info.module is not info.sm else info.sm.original_name
        raise self.error(node, f"module {cls_name} has no attribute {name!r}"
                               + (f" that compiled code can use: {why}" if why else ""))

    def module_attr_type(self, info: ModuleInfo, name: str, node: ast.AST) -> Type:
        """The type an assignment to ``self.name`` must fit."""
        if name in info.attr_types:
            return info.attr_types[name]
        if name in info.sm._parameters or name in info.sm._buffers:
            return TENSOR
        raise self.error(node, f"cannot assign to {name!r}: it is not an attribute of the module "
                               "(attributes must be set in __init__)")

    # -- containers ------------------------------------------------------------------------
    def module_items(self, em: FunctionEmitter, mv: ModuleVal, node: ast.AST) -> list[Binding]:
        """What ``for m in self.layers`` iterates over: the submodules (a ModuleDict's keys)."""
        info = mv.info
        mod = info.module
        if not isinstance(mod, (torch.nn.ModuleList, torch.nn.Sequential, torch.nn.ModuleDict)) and \
                info.module is not info.sm:
            raise self.error(node, f"cannot iterate over module {type(mod).__name__}; only ModuleList, "
                                   "Sequential and ModuleDict can be iterated")
        items = self.module_items_raw(em, mv)
        if isinstance(mod, torch.nn.ModuleDict):
            return [em.b.constant(k) for k in info.subs]
        return items

    def module_items_raw(self, em: FunctionEmitter, mv: ModuleVal) -> list[Binding]:
        return [ModuleVal(em.b.get_attr(mv.value, n, sub.type), sub) for n, sub in mv.info.subs.items()]

    def module_keys(self, mv: ModuleVal) -> Optional[tuple[str, ...]]:
        if isinstance(mv.info.module, torch.nn.ModuleDict):
            return tuple(mv.info.subs)
        return None

    # -- calls -----------------------------------------------------------------------------
    def call_module(self, em: FunctionEmitter, mv: ModuleVal, name: str, args: list[Binding],
                    kwargs: dict[str, Binding], node: ast.AST) -> Binding:
        """``self.sub.name(...)``: ``prim::CallMethod`` with the arguments converted to the
        method's signature (an ``@ignore``d method: a Python call; ``@unused``: a raise)."""
        info = mv.info
        if isinstance(info.module, torch.nn.ModuleDict) and name in ("items", "keys", "values"):
            return self._module_dict_view(em, mv, name)
        fn = inspect.getattr_static(type(info.module), name, None) if info.module is not info.sm else \
            info.sm.__dict__.get("_kiln_python_methods", {}).get(name)
        mod = _modifier(fn) if fn is not None else None
        if mod == "unused":
            em.b.raise_exception(f"{name} was marked unused and cannot be called", "RuntimeError")
            try:
                rt = self._python_return_type(fn)
            except ann.AnnotationError:
                rt = TENSOR
            return em.uninitialized(rt)
        if mod == "ignore":
            return self.python_call(em, mv, fn, args, kwargs, node)
        name = self.pick_overload(em, info, name, args, kwargs, node)
        sig = self.method_sig(info, name, node)
        vals: list[Value] = []
        for i, (pname, ptype, default) in enumerate(sig.params):
            if i < len(args):
                b = args[i]
            elif pname in kwargs:
                b = kwargs[pname]
            elif default is not NO_DEFAULT:
                b = PyObj(default)
            else:
                raise self.error(node, f"{name}() is missing the argument {pname!r}")
            vals.append(em.convert(em.to_value(b, node), ptype, node, f"argument {pname!r} of {name}()"))
        if len(args) > len(sig.params):
            raise self.error(node, f"{name}() takes {len(sig.params)} argument(s), got {len(args)}")
        return em.b.call_method(mv.value, name, vals, sig.returns)

    def _module_dict_view(self, em: FunctionEmitter, mv: ModuleVal, name: str) -> Items:
        """``items()``, ``keys()`` or ``values()`` of a ModuleDict, unrolled while compiling."""
        subs = self.module_items_raw(em, mv)
        keys = [em.b.constant(k) for k in mv.info.subs]
        if name == "keys":
            return Items(tuple(keys))
        if name == "values":
            return Items(tuple(subs))
        return Items(tuple(Items((k, v)) for k, v in zip(keys, subs)))

    def _python_return_type(self, fn: Any) -> Type:
        """The return type a method left to Python declares (Tensor when it declares none)."""
        ret = getattr(fn, "__annotations__", {}).get("return", torch.Tensor)
        return ann.from_python(ret, self.class_type_for) if ret is not None else NoneType

    def python_call(self, em: FunctionEmitter, mv: ModuleVal, fn: Any, args: list[Binding],
                    kwargs: dict[str, Binding], node: ast.AST) -> Value:
        """An ``@ignore``d method: left to Python, called at run time (it cannot be saved)."""
        try:
            rt = self._python_return_type(fn)
        except ann.AnnotationError as e:
            raise self.error(node, f"the return annotation of ignored {fn.__name__}: {e}") from None
        if kwargs:
            raise self.error(node, f"ignored {fn.__name__}() takes positional arguments only here")
        # Kept on the ScriptModule, so that its code (`self.name(...)`) compiles back to this call.
        mv.info.sm.__dict__.setdefault("_kiln_python_methods", {})[fn.__name__] = fn
        vals = [em.to_value(a, node) for a in args]
        return em.b.value("prim::kiln_python_call", [mv.value, *vals], rt, fn=fn)

    def call_super(self, em: FunctionEmitter, sv: SuperVal, name: str, args: list[Binding],
                   kwargs: dict[str, Binding], node: ast.AST) -> Binding:
        """``super().name(...)``: the next definition in the MRO, inlined (``nn.Module``'s own
        ``__init__`` is nothing)."""
        base = sv.base
        mro = type(base.info.module).__mro__ if isinstance(base, ModuleVal) else base.info.cls.__mro__
        after = mro[mro.index(sv.cls) + 1:]
        for klass in after:
            fn = klass.__dict__.get(name)
            if isinstance(fn, types.FunctionType):
                if klass is torch.nn.Module or klass is object:
                    break
                return self.inline_function(em, fn, args, kwargs, node, base, klass)
        if name == "__init__":
            return em.b.constant(None)
        raise self.error(node, f"super() has no method {name!r} that can be compiled")


# -- helpers ---------------------------------------------------------------------------------

_MODULE_INTERNALS = frozenset(vars(torch.nn.Module()))


def finish_graph(graph: Graph) -> None:
    """What every compiled graph gets before it is used: dead code (unused constants, the
    scratch values of compile-time decisions) removed."""
    from kiln.passes.dce import eliminate_dead_code
    eliminate_dead_code(graph)


def ast_default(node: ast.expr) -> Any:
    """A default value written in source text, or NO_DEFAULT when it is not a literal."""
    try:
        return ast.literal_eval(node)
    except ValueError:
        return NO_DEFAULT


def _const_key(v: Any) -> Any:
    """A constant as a key: equal keys mean the same value baked into a graph (so 0.0 and
    -0.0, 1 and True, 1 and 1.0 differ; an unhashable value is only equal to itself)."""
    if type(v) is float:
        return (float, v, math.copysign(1.0, v))
    if type(v) is tuple:
        return (tuple, tuple(_const_key(x) for x in v))
    try:
        hash(v)
        return (type(v), v)
    except TypeError:
        return (type(v), id(v))


def _attr_type(v: Any) -> Optional[Type]:
    """The type of an unannotated attribute, from its value (None: it cannot be inferred)."""
    if isinstance(v, torch.Tensor):
        return TENSOR
    if isinstance(v, (list, dict)) and not v:
        return None
    t = type_of_value(v)
    if t == AnyType:
        return None
    return _plain(t)


def _plain(t: Type) -> Type:
    """``t`` with tensor refinements dropped (an attribute may hold any tensor later)."""
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


def _has_method(info: ModuleInfo, name: str) -> bool:
    if info.module is info.sm:
        return name in info.sm._kiln_graphs or name in info.sm.__dict__.get("_kiln_method_sources", {})
    return isinstance(inspect.getattr_static(type(info.module), name, None), types.FunctionType)


def signature_text(name: str, params: tuple[tuple[str, Type], ...], returns: Type) -> str:
    """``apply(x: Tensor) -> Tensor``, for error messages."""
    shown = ", ".join(f"{n}: {t.annotation()}" for n, t in params)
    return f"{name}({shown}) -> {returns.annotation()}"


def _modifier(fn: Any) -> Optional[str]:
    """``"export"``, ``"ignore"`` or ``"unused"`` from Kiln's markers or ``torch.jit``'s."""
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


__all__ = ["MethodSig", "ModuleCompiler", "ModuleInfo", "NO_DEFAULT", "ast_default", "finish_graph"]
