"""Loaded object tree -> ScriptModules, then their methods compiled from the archive's code.

A pickled module object is checked against its class declaration before anything is built:
every declared member is present, nothing undeclared is, and each value has its declared type
(a tensor where ``Tensor`` is declared, an ``int`` where ``int`` is ...).  Parameters and
buffers are the members the class lists in ``__parameters__`` / ``__buffers__``; submodules
are members whose type is a module class; the rest are attributes, with their declared types
kept for compiling and for saving again.  A tensor reached twice (tied weights) becomes one
``Parameter`` shared by both modules; a module object reached twice is one ScriptModule.

Methods are compiled by Kiln's script compiler, one class at a time: every instance of a
class gets the method sources of its declaration, and the compiler compiles each method on
demand (a call from another method first), sharing the graph between instances whose types
agree, as it does for Python modules.
"""

from __future__ import annotations

import ast
import copy
import enum
import functools
import operator
import re
from typing import TYPE_CHECKING, Any

import torch

from kiln.errors import CompileError, KilnError, ModelFormatError, ResourceLimitExceeded, UnsupportedFeature
from kiln.frontend.script.env import SourceFunction
from kiln.frontend.script.source import Source
from kiln.ir.types import (
    TENSOR,
    ClassType,
    DictType,
    EnumType,
    FutureType,
    InterfaceMethod,
    InterfaceType,
    ListType,
    NoneType,
    OptionalType,
    TensorType,
    TupleType,
    Type,
    UnionType,
    is_subtype,
    walk_types,
)
from kiln.serialization.load import MAX_MODULE_DEPTH, conforms
from kiln.serialization.pickle import PickledEnum, PickledObject
from kiln.serialization.source import ArchiveTexts, ClassDecl, definition_text, loaded_class

if TYPE_CHECKING:
    from kiln.frontend.script.compiler import Compiler
    from kiln.runtime.module import ScriptModule
    from kiln.serialization.load import ArchiveLoader


_MANGLED = re.compile(r"___torch_mangle_[0-9]+\.")
# the value of a class's constant (``  eps : Final[float] = 1e-05``), which the compiler's
# type key holds in its place (see _sources)
_FINAL_VALUE = re.compile(r"^(  [A-Za-z_][A-Za-z0-9_]* : Final\[.*\]) = .*$", re.MULTILINE)


class ArchiveUnit:
    """What names in an archive's code may refer to: TorchScript source's builtins, this
    archive's ``CONSTANTS`` table and its free functions under ``__torch__`` (what
    :class:`~kiln.frontend.script.CompilationUnit` is for ``kiln.compile``)."""

    def __init__(self, loader: ArchiveLoader) -> None:
        self.loader = loader
        self.constants = _Constants(loader.constants)
        self._namespace: dict[str, Any] = {}
        self._functions: dict[str, SourceFunction] = {}
        self._types: dict[str, Any] = {}
        self._sources: dict[str, Source] = {}
        self._lent = False       # methods handed to classes that outlive the load (see release)

    def release(self) -> None:
        """Drop what the unit made for compiling (its namespace and functions refer back to it)
        once loading is done, so that the load's syntax trees are freed at once instead of by
        the cyclic collector -- unless it made classes with methods (script classes,
        interfaces), which compile them through it when first called."""
        if self._lent:
            return
        self._namespace.clear()
        self._functions.clear()
        self._types.clear()
        self._sources.clear()

    def source(self, filename: str) -> Source:
        """One :class:`Source` per code file (its lines are split once)."""
        src = self._sources.get(filename)
        if src is None:
            src = self._sources[filename] = Source(self.loader.sources[filename], filename)
        return src

    def function(self, qualname: str) -> Any:
        """The archive's function ``qualname`` as a source function (None if there is none)."""
        fn = self._functions.get(qualname)
        if fn is None and qualname in self.loader.functions:
            filename, fdef = self.loader.functions[qualname]
            fn = self._functions[qualname] = self.source_function(fdef.name, filename, fdef)
        return fn

    def source_function(self, name: str, filename: str, fdef: ast.FunctionDef) -> SourceFunction:
        """A definition of the archive's code as the compiler takes it, with the upgraders of
        the archive's version applied."""
        from kiln.serialization.upgraders import upgrade
        src = self.source(filename)
        return SourceFunction(name, src, upgrade(fdef, self.loader.version, src.text), self)

    def type_class(self, qualname: str) -> Any:
        """A Python class standing for the archive's NamedTuple or enum ``qualname`` (None if
        the archive defines no such type), made once per load without running any code:
        ``type()`` for a NamedTuple (fields and their annotations as text), ``enum.Enum``'s
        functional form for an enum."""
        known = self._types.get(qualname)
        decl = self.loader.decls.get(qualname)
        if known is not None or decl is None or \
                decl.kind not in ("namedtuple", "enum", "class", "interface", "module_interface"):
            return known
        prefix, _, name = qualname.rpartition(".")
        module = "__main__" if prefix == "__torch__" else prefix[len("__torch__."):]
        cls: Any
        if decl.kind == "enum":
            make_enum: Any = enum.Enum     # the functional form (a class built by type(), no code run)
            cls = make_enum(name, list(decl.enum_values.items()), module=module, qualname=name)
        elif decl.kind == "class":
            from kiln.ir.objects import ScriptClass
            refuse_state_methods(decl)
            cls = type(name, (), {**self._class_methods(decl), "__annotations__": _hints(decl),
                                  "__module__": module, "__qualname__": name, "_kiln_archive_class": True,
                                  "_kiln_runtime": ScriptClass(qualname)})
        elif decl.kind in ("interface", "module_interface"):
            # the methods' signatures are all an interface has (their bodies are ``pass``)
            kind = "module" if decl.kind == "module_interface" else "class"
            cls = type(name, (), {**self._class_methods(decl), "__module__": module, "__qualname__": name,
                                  "_kiln_interface": kind})
        else:
            fields = tuple(n for n, _ in decl.members)
            hints = _hints(decl)
            body: dict[str, Any] = {f: property(operator.itemgetter(i)) for i, f in enumerate(fields)}
            body.update(_fields=fields, __annotations__=hints, __module__=module, __qualname__=name)
            cls = type(name, (_ArchiveTuple,), body)
        self._types[qualname] = cls
        return cls

    def _class_methods(self, decl: ClassDecl) -> dict[str, SourceFunction]:
        self._lent = True
        return {n: self.source_function(f"{decl.qualname.rpartition('.')[2]}.{n}", decl.filename,
                                        _untyped_self(f))
                for n, f in decl.methods.items()}

    def namespace(self) -> dict[str, Any]:
        if not self._namespace:
            from kiln.frontend.script.api import CompilationUnit
            ns = CompilationUnit().namespace()
            ns["CONSTANTS"] = self.constants
            ns["__kiln_restricted__"] = True     # no Python functions, no submodule imports
            ns["__torch__"] = _ArchiveNames("__torch__", self, ns["__torch__"])
            from kiln.serialization.upgraders import upgrader_functions
            ns.update(upgrader_functions(self, self.loader.version))
            self._namespace = ns
        return self._namespace


class _ArchiveTuple(tuple[Any, ...]):
    """Base of the NamedTuple classes made for an archive's NamedTuple types."""

    _fields: tuple[str, ...] = ()

    def __new__(cls, *args: Any) -> _ArchiveTuple:
        if len(args) != len(cls._fields):
            raise TypeError(f"{cls.__name__} takes {len(cls._fields)} fields, got {len(args)}")
        return super().__new__(cls, args)

    def __repr__(self) -> str:
        return f"{type(self).__name__}(" + ", ".join(f"{f}={v!r}" for f, v in zip(self._fields, self)) + ")"


class _ArchiveNames:
    """``__torch__.a.b.f`` in an archive's code: the archive's function ``f``, else what the
    compiler knows by that name (classes, NamedTuples, enums)."""

    def __init__(self, path: str, unit: ArchiveUnit, known: Any) -> None:
        self._path = path
        self._unit = unit
        self._known = known

    def __getattr__(self, name: str) -> Any:
        if (name.startswith("__") and name.endswith("__")) or name.startswith("_kiln"):
            raise AttributeError(name)
        path = f"{self._path}.{name}"
        found = self._unit.function(path) or self._unit.type_class(path)
        if found is not None:
            return found
        known = getattr(self._known, name)
        return known if not hasattr(known, "_path") else _ArchiveNames(path, self._unit, known)


class _Constants:
    """``CONSTANTS.cN``: entry ``N`` of constants.pkl."""

    def __init__(self, values: tuple[Any, ...]) -> None:
        self._values = values

    def __getattr__(self, name: str) -> Any:
        if name.startswith("c") and name[1:].isdigit():
            i = int(name[1:])
            if i < len(self._values):
                return self._values[i]
        raise AttributeError(f"CONSTANTS has no entry {name!r} (the archive holds {len(self._values)})")


class ModuleBuilder:
    def __init__(self, loader: ArchiveLoader) -> None:
        self.loader = loader
        self.unit = ArchiveUnit(loader)
        self.modules: dict[int, ScriptModule] = {}      # id(PickledObject) -> module
        self.params: dict[int, torch.nn.Parameter] = {}
        self.objects: dict[int, Any] = {}                # id(pickled value) -> run-time value
        self.archive = self._archive_texts()   # before compiling, which rewrites the syntax trees
        self.by_text: dict[str, dict[str, SourceFunction]] = {}
        self.member_types: dict[str, dict[str, Type]] = {}      # per class, parsed once
        self.keep: list[Any] = []
        self.method_sources: dict[str, dict[str, SourceFunction]] = {}
        self.order: list[ScriptModule] = []
        self.interface_types: dict[str, InterfaceType] = {}
        # objects in interface-typed places, checked once the compiler can read signatures:
        # (class qualname or submodule, interface, where)
        self.implementations: list[tuple[Any, InterfaceType, str]] = []

    # -- objects -----------------------------------------------------------------------------
    def build(self, obj: PickledObject, depth: int = 0) -> ScriptModule:
        known = self.modules.get(id(obj))
        if known is not None:
            return known
        if depth > MAX_MODULE_DEPTH:
            raise ResourceLimitExceeded(f"{self.loader.where}/data.pkl: modules nested deeper than "
                                        f"{MAX_MODULE_DEPTH} levels")
        from kiln.runtime.module import ScriptModule
        decl = self.loader._decl(obj.qualname, "data.pkl")
        if decl.kind != "module":
            raise UnsupportedFeature(f"{self.loader.where}/data.pkl: objects of {decl.kind} "
                                     f"{obj.qualname} are not supported yet")
        refuse_state_methods(decl)
        state = self._state(obj, decl)
        sm = ScriptModule(decl.qualname, _original_name(decl.qualname))
        self.modules[id(obj)] = sm
        types = self.field_types(decl)
        for name, _ in decl.members:
            self._member(sm, decl, name, types[name], state[name], depth)
        for cname, value in decl.constants.items():
            sm._kiln_set_constant(cname, value)
        sm.__dict__["_kiln_method_sources"] = self._sources(decl)
        self.order.append(sm)
        return sm

    def _state(self, obj: PickledObject, decl: ClassDecl) -> dict[str, Any]:
        state = obj.state
        where = f"{self.loader.where}/data.pkl: {decl.qualname}"
        if not isinstance(state, dict) or not all(isinstance(k, str) for k in state):
            raise ModelFormatError(f"{where}: object state is not a dict of member names")
        declared = [n for n, _ in decl.members]
        missing = [n for n in declared if n not in state]
        extra = [n for n in state if n not in declared]
        if missing or extra:
            raise ModelFormatError(f"{where}: object does not match its class ("
                                   + (f"missing {missing}" if missing else "")
                                   + ("; " if missing and extra else "")
                                   + (f"undeclared {extra}" if extra else "") + ")")
        for n in decl.parameters + decl.buffers:
            if n not in declared:
                raise ModelFormatError(f"{where}: {n!r} is listed as a parameter or buffer but not declared")
        return state

    def _member(self, sm: ScriptModule, decl: ClassDecl, name: str, t: Type, value: Any, depth: int) -> None:
        if isinstance(value, torch.Tensor) and isinstance(t, TensorType) and name != "training":
            self._tensor_member(sm, decl, name, value)     # most members: no objects inside
            return
        where = f"{self.loader.where}/data.pkl: {decl.qualname}.{name}"
        declared = self.loader.decls.get(t.qualname) if isinstance(t, ClassType) else None
        if declared is not None and declared.kind in ("module", "module_interface"):
            # a submodule: of the declared class, or of any module class for a module interface
            # (its methods are compiled against the object's own class)
            actual = self.loader.decls.get(value.qualname) if isinstance(value, PickledObject) else None
            ok = actual is not None and actual.kind == "module" and \
                (declared.kind == "module_interface" or actual.qualname == declared.qualname)
            if not ok:
                raise ModelFormatError(f"{where}: expected a {declared.qualname} module, "
                                       f"found {_kind(value)}")
            sub = self.build(value, depth + 1)
            sm.add_module(name, sub)
            if isinstance(t, InterfaceType):
                sm.__dict__["_kiln_attr_types"][name] = t       # saving writes the interface again
                self.implementations.append((sub, t, where))
            return
        value = self._objects(value, t, where, 0)
        value = self._enums(value, t, where)
        if not conforms(value, t):
            raise ModelFormatError(f"{where}: declared {t.annotation()}, found {_kind(value)}")
        if name == "training":
            sm.training = bool(value)
        elif isinstance(value, torch.Tensor):
            self._tensor_member(sm, decl, name, value, t)
        else:
            sm._kiln_set_attribute(name, value, t)

    def _tensor_member(self, sm: ScriptModule, decl: ClassDecl, name: str, value: torch.Tensor,
                       t: Type = TENSOR) -> None:
        if name in decl.parameters:
            sm.register_parameter(name, self._parameter(value))
        elif name in decl.buffers:
            sm.register_buffer(name, value)
        else:
            sm._kiln_set_attribute(name, value, t)

    def _objects(self, value: Any, t: Type, where: str, depth: int) -> Any:
        """Pickled script-class objects inside a member's value -> run-time objects, their
        fields checked against the class declaration (shared objects stay shared)."""
        if depth > MAX_MODULE_DEPTH:
            raise ResourceLimitExceeded(f"{where}: objects nested deeper than {MAX_MODULE_DEPTH} levels")
        if isinstance(value, PickledObject):
            return self._object(value, t, where, depth)
        if not _may_hold_objects(t) or not isinstance(value, (list, tuple, dict)):
            return value
        known = self.objects.get(id(value))          # a shared container is converted once
        if known is not None:
            return known
        out: Any = value
        if isinstance(value, list) and isinstance(t, ListType):
            out = [self._objects(v, t.elem, where, depth + 1) for v in value]
        elif isinstance(value, tuple) and isinstance(t, TupleType) and len(t.elems) == len(value):
            out = tuple(self._objects(v, et, where, depth + 1) for v, et in zip(value, t.elems))
        elif isinstance(value, dict) and isinstance(t, DictType):
            out = {k: self._objects(v, t.value, where, depth + 1) for k, v in value.items()}
        elif isinstance(t, OptionalType):
            out = self._objects(value, t.elem, where, depth)
        self.objects[id(value)] = out
        self.keep.append(value)                      # ids stay unique while the map is in use
        return out

    def _object(self, obj: PickledObject, t: Type, where: str, depth: int) -> Any:
        from kiln.ir.objects import ScriptObject
        known = self.objects.get(id(obj))
        if known is not None:
            return known
        decl = self.loader.decls.get(obj.qualname)
        if isinstance(t, OptionalType):
            t = t.elem
        interface = isinstance(t, InterfaceType)
        if decl is None or decl.kind != "class" or not isinstance(t, ClassType) or \
                (t.qualname != obj.qualname and not interface):
            raise ModelFormatError(f"{where}: found an object of {obj.qualname}, declared {t.annotation()}")
        if isinstance(t, InterfaceType):      # any class implementing it (checked when compiling)
            self.implementations.append((obj.qualname, t, where))
        state = self._state(obj, decl)
        out = self.objects[id(obj)] = ScriptObject(obj.qualname, self.record(decl))
        types = self.field_types(decl)
        for name, _ in decl.members:
            if name.startswith("_kiln"):
                raise ModelFormatError(f"{where}: field name {name!r} is reserved")
            value = self._enums(self._objects(state[name], types[name], where, depth + 1), types[name], where)
            if not conforms(value, types[name]):
                raise ModelFormatError(f"{where}: field {obj.qualname}.{name}: declared "
                                       f"{types[name].annotation()}, found {_kind(value)}")
            setattr(out, name, value)
        return out

    def field_types(self, decl: ClassDecl) -> dict[str, Type]:
        """The declared member types of a class, parsed once per class; a script class's are
        also kept where saving its objects again finds them."""
        types = self.member_types.get(decl.qualname)
        if types is None:
            types = self.member_types[decl.qualname] = {n: self.declared_type(node, decl)
                                                        for n, node in decl.members}
            if decl.kind == "class":
                from kiln.ir.objects import FIELD_TYPES
                FIELD_TYPES[decl.qualname] = types
        return types

    def declared_type(self, node: ast.expr, decl: ClassDecl) -> Type:
        """A type written in ``decl``'s code, the archive's interfaces as interface types."""
        return _map_classes(self.loader.type_of(node, decl), self._interface)

    def _interface(self, t: ClassType) -> Type:
        """``t`` as an :class:`InterfaceType` with its methods' signatures, when the archive
        declares it as an interface (else ``t``)."""
        decl = self.loader.decls.get(t.qualname)
        if decl is None or decl.kind not in ("interface", "module_interface"):
            return t
        known = self.interface_types.get(t.qualname)
        if known is not None:
            return known
        module = decl.kind == "module_interface"
        self.interface_types[t.qualname] = InterfaceType(t.qualname, (), module)   # its methods may name it
        methods: list[InterfaceMethod] = []
        for name, fdef in sorted(decl.methods.items()):
            params = tuple((a.arg, TENSOR if a.annotation is None else self.declared_type(a.annotation, decl))
                           for a in fdef.args.args[1:])
            ret = self.declared_type(fdef.returns, decl) if fdef.returns is not None else NoneType
            methods.append((name, params, ret))
        it = self.interface_types[t.qualname] = InterfaceType(t.qualname, tuple(methods), module)
        return it

    def record(self, decl: ClassDecl) -> Any:
        """The run-time record of an archive's script class (shared by its objects and the code
        that creates them), with what saving it again needs."""
        record = self.unit.type_class(decl.qualname).__dict__["_kiln_runtime"]
        if record.archive is None:
            record.archive = self.archive
            record.text = self.archive.texts.get(decl.qualname)
            record.fields = self.field_types(decl)
        return record

    def _enums(self, value: Any, t: Type, where: str) -> Any:
        """An attribute of an enum type: the pickled value becomes the enum member."""
        if not isinstance(t, EnumType) and not (isinstance(t, OptionalType) and isinstance(t.elem, EnumType)):
            return value
        if not isinstance(value, PickledEnum):
            return value
        cls = self.unit.type_class(value.qualname)
        if cls is None:
            raise ModelFormatError(f"{where}: enum {value.qualname} is not defined in the archive's code")
        try:
            return cls(value.value)
        except (ValueError, TypeError):
            raise ModelFormatError(f"{where}: {value.value!r} is not a member of {value.qualname}") from None

    def _parameter(self, t: torch.Tensor) -> torch.nn.Parameter:
        p = self.params.get(id(t))
        if p is None:
            p = self.params[id(t)] = torch.nn.Parameter(t, requires_grad=t.requires_grad)
        return p

    def _sources(self, decl: ClassDecl) -> dict[str, SourceFunction]:
        """The method sources of ``decl``: one dict per class, shared by its instances (the
        compiler shares their graphs)."""
        known = self.method_sources.get(decl.qualname)
        if known is not None:
            return known
        # TorchScript gives every traced instance (and every scripted variant) a mangled class;
        # classes whose text is the same but for the mangling and the values of constants share
        # their sources, and so their compilation (the compiler's type key holds the sources,
        # not the class name, and the values of the constants a method reads)
        text = self.archive.texts.get(decl.qualname)
        key = _FINAL_VALUE.sub(r"\1", _MANGLED.sub("", text)) if text is not None else None
        known = self.by_text.get(key) if key is not None else None
        if known is None:
            known = {name: self.unit.source_function(name, decl.filename, fdef)
                     for name, fdef in decl.methods.items()}
            if key is not None:
                self.by_text[key] = known
        self.method_sources[decl.qualname] = known
        return known

    # -- methods -----------------------------------------------------------------------------
    def compile_all(self) -> None:
        from kiln.frontend.script.compiler import Compiler
        comp = Compiler()
        try:
            for qualname, decl in self.loader.decls.items():     # the archive's script classes
                if decl.kind == "class":
                    self.record(decl)
                    comp.class_info(self.unit.type_class(qualname))
            self._check_implementations(comp)
            for sm in self.order:
                info = comp.module_info(sm)
                for name in sm.__dict__["_kiln_method_sources"]:
                    comp.method_sig(info, name, None)
        except KilnError:
            raise
        except (RecursionError, MemoryError) as e:
            raise ResourceLimitExceeded(f"{self.loader.where}/code: too deep or too large to compile "
                                        f"({type(e).__name__})") from None
        except Exception as e:   # a bug in Kiln's compiler must not look like a crash of the load
            raise CompileError(f"{self.loader.where}/code: Kiln could not compile the archive's code "
                               f"(internal error {type(e).__name__}: {e})", cause="internal error") from e
        finally:
            for sm in self.order:
                sm.__dict__.pop("_kiln_method_sources", None)
        self._remember_sources()

    def _check_implementations(self, comp: Compiler) -> None:
        """Every object in an interface-typed place implements the interface: each of its
        methods, with the same parameters and a result that fits (an interface call runs the
        method of the object's class, compiled here)."""
        from kiln.frontend.script.modules import signature_text
        for impl, it, where in self.implementations:
            short = it.qualname.rpartition(".")[2]
            if isinstance(impl, str):
                why = comp.implementation_problem(comp.class_info(self.unit.type_class(impl)), it, None)
                decl = self.loader.decls[impl]
                what = f"class {impl} ({decl.filename}:{decl.node.lineno if decl.node else 0})"
            else:
                info = comp.module_info(impl)
                why = ""
                for name, params, ret in it.methods:
                    if name not in impl.__dict__.get("_kiln_method_sources", {}):
                        why = f"it has no method {name}()"
                        break
                    sig = comp.method_sig(info, name, None)
                    got = tuple((n, t) for n, t, _ in sig.params)
                    if got != params or not is_subtype(sig.returns, ret):
                        why = (f"its method {signature_text(name, got, sig.returns)} does not match the "
                               f"interface's {signature_text(name, params, ret)}")
                        break
                what = f"module {impl.qualified_name}"
            if why:
                raise ModelFormatError(f"{where}: declared {it.qualname} (an interface), but {what} does not "
                                       f"implement {short}: {why}")

    def _archive_texts(self) -> ArchiveTexts:
        """The texts of the archive's definitions (what saving a loaded module again may reuse)."""
        out = ArchiveTexts(constants=self.loader.constants)
        lines = self.loader.file_lines
        for qualname, (filename, fdef) in self.loader.functions.items():
            text = definition_text(fdef, lines(filename))
            if text is not None:
                out.texts[qualname] = text
        for qualname, decl in self.loader.decls.items():
            text = definition_text(decl.node, lines(decl.filename)) if decl.node is not None else None
            if text is not None:
                out.texts[qualname] = text
        return out

    def _remember_sources(self) -> None:
        """Each module keeps the class text it came from (see :class:`.source.LoadedClass`)."""
        qualnames = {id(sm): sm.qualified_name for sm in self.order}
        for sm in self.order:
            record = loaded_class(sm, self.archive, qualnames)
            if record is not None:
                sm.__dict__["_kiln_archive_class"] = record


def refuse_state_methods(decl: ClassDecl) -> None:
    """TorchScript runs a class's ``__setstate__`` while loading; Kiln never runs archive code
    at load, so such a class is refused."""
    for method in ("__setstate__", "__getstate__"):
        if method in decl.methods:
            raise UnsupportedFeature(f"{decl.filename}: class {decl.qualname} defines {method}; TorchScript "
                                     "runs a class's __setstate__ while loading, Kiln never runs archive "
                                     "code at load")


def _hints(decl: ClassDecl) -> dict[str, str]:
    """A class's member annotations as text (the compiler parses them like a Python class's)."""
    return {n: ast.unparse(node) for n, node in decl.members}


def _map_classes(t: Type, f: Any) -> Type:
    """``t`` with every class type inside it replaced by ``f(class type)``."""
    if isinstance(t, ClassType):
        return f(t)  # type: ignore[no-any-return]
    if isinstance(t, ListType):
        return ListType(_map_classes(t.elem, f))
    if isinstance(t, OptionalType):
        return OptionalType(_map_classes(t.elem, f))
    if isinstance(t, TupleType):
        return TupleType(tuple(_map_classes(e, f) for e in t.elems))
    if isinstance(t, DictType):
        return DictType(t.key, _map_classes(t.value, f))
    if isinstance(t, UnionType):
        return UnionType(tuple(_map_classes(e, f) for e in t.elems))
    if isinstance(t, FutureType):
        return FutureType(_map_classes(t.elem, f))
    return t


@functools.lru_cache(maxsize=4096)
def _may_hold_objects(t: Type) -> bool:
    """Whether values of type ``t`` can contain script-class objects (decided on the type, so
    that plain nested lists are never walked)."""
    return any(isinstance(x, ClassType) for x in walk_types(t))


def _untyped_self(fdef: ast.FunctionDef) -> ast.FunctionDef:
    """A method with its ``self: __torch__.C`` annotation dropped: ``self`` is bound to the
    object by the compiler, as in a Python class."""
    args = fdef.args.args
    if not args or args[0].annotation is None:
        return fdef
    new = copy.copy(fdef)
    new.args = copy.copy(fdef.args)
    new.args.args = [ast.arg(arg=args[0].arg, annotation=None, lineno=args[0].lineno,
                             col_offset=args[0].col_offset), *args[1:]]
    return new


def _original_name(qualname: str) -> str:
    return qualname.rpartition(".")[2]


def _kind(value: Any) -> str:
    if isinstance(value, PickledObject):
        return f"an object of {value.qualname}"
    return type(value).__name__
