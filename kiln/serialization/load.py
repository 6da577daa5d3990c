"""Reading a TorchScript ``.pt`` archive into Kiln modules: ``kiln.load`` / ``kiln.deserialize``.

The stages, each of which checks what it reads before it allocates or builds anything:

1. the zip container (:mod:`.archive`): one top-level folder, no duplicate, overlapping or
   traversal names, sizes and CRCs checked;
2. the records: ``version`` (1-10) and ``byteorder`` read strictly; ``code/*.py`` parsed to
   syntax trees (:mod:`.source`), never compiled to bytecode or run;
3. ``constants.pkl`` and ``data.pkl`` through Kiln's allow-list pickle VM (:mod:`.pickle`);
   tensors rebuilt from ``data/N`` with their layout checked (:mod:`.tensors`);
4. the object tree checked against the class declarations (every declared member present,
   nothing undeclared, values of the declared types) and rebuilt as ScriptModules;
5. every method compiled by Kiln's own script compiler from the class source, with the
   operator upgraders of the archive's version (:mod:`.upgraders`).

Nothing from the archive is ever executed, evaluated or imported: ``__setstate__`` methods
are not run (an archive class that defines one is refused), and the compiled methods run
only when the caller calls them.  Every rejection is a :class:`~kiln.errors.KilnError`
(``ModelFormatError`` for the format, ``CompileError`` for the code); a half-built module is
never returned.
"""

from __future__ import annotations

import ast
import enum
import functools
import os
import re
from collections.abc import Callable, MutableMapping
from typing import TYPE_CHECKING, Any, BinaryIO, Optional, Union

import torch

from kiln.errors import (
    ArchiveError,
    CompileError,
    KilnError,
    ModelFormatError,
    ResourceLimitExceeded,
    UnsupportedFeature,
)
from kiln.ir.types import (
    AnyType,
    BoolType,
    ClassType,
    ComplexType,
    DeviceType,
    DictType,
    EnumType,
    FloatType,
    IntType,
    ListType,
    NoneType,
    NumberType,
    OptionalType,
    StrType,
    TensorType,
    TupleType,
    Type,
    UnionType,
    parse_type,
    walk_types,
)
from kiln.serialization.archive import ArchiveReader, open_archive
from kiln.serialization.limits import Limits
from kiln.serialization.pickle import ClassRef, PickledObject, load_pickle
from kiln.serialization.source import ClassDecl, parse_code_file, valid_name
from kiln.serialization.tensors import StorageReader, torch_globals

if TYPE_CHECKING:
    from kiln.runtime.module import ScriptModule

MIN_VERSION, MAX_VERSION = 1, 10
MAX_MODULE_DEPTH = 200

Source = Union[str, "os.PathLike[str]", BinaryIO, bytes, bytearray, memoryview]


def load(f: Source, map_location: Any = None, _extra_files: Optional[MutableMapping[str, Any]] = None,
         *, extra_files: Optional[MutableMapping[str, Any]] = None, limits: Optional[Limits] = None) -> Any:
    """Load an archive written by ``torch.jit.save`` or ``kiln.save`` as a Kiln ScriptModule.

    ``f`` is a path, a binary file object or the bytes themselves.  ``map_location`` (a
    device or device string) moves every tensor there; by default tensors go where the
    archive says.  ``extra_files`` maps names to fill with the content (bytes) of the
    archive's ``extra/NAME`` records.  ``limits`` caps what loading may consume
    (:class:`kiln.serialization.Limits`)."""
    from kiln.runtime.executor import without_gc
    limits = limits or Limits()
    with without_gc(), open_archive(f, limits=limits) as reader:
        # (many small long-lived objects and no cycles: the collector would only cost)
        return ArchiveLoader(reader, map_location, limits).load(
            extra_files if extra_files is not None else _extra_files)


def deserialize(data: Union[bytes, bytearray, memoryview], map_location: Any = None, **kwargs: Any) -> Any:
    """:func:`load` from bytes."""
    return load(bytes(data), map_location, **kwargs)


def archive_version(reader: ArchiveReader) -> int:
    """The format version record (``version`` or ``.data/version``), read strictly."""
    found = [n for n in (".data/version", "version") if reader.has(n)]
    if not found:
        raise ArchiveError(f"{reader.prefix}/version: record missing (not a TorchScript archive?)")
    values = {_parse_version(reader.read(n), f"{reader.prefix}/{n}") for n in found}
    if len(values) > 1:
        raise ArchiveError(f"{reader.prefix}: 'version' and '.data/version' disagree ({sorted(values)})")
    return values.pop()


def _parse_version(raw: bytes, where: str) -> int:
    text = raw.decode("ascii", "replace").strip()
    if not re.fullmatch(r"[0-9]{1,4}", text):
        raise UnsupportedFeature(f"{where}: format version {text[:20]!r} is not a number "
                                 f"(supported {MIN_VERSION}..{MAX_VERSION})")
    v = int(text)
    if not MIN_VERSION <= v <= MAX_VERSION:
        raise UnsupportedFeature(f"{where}: format version {v} (supported {MIN_VERSION}..{MAX_VERSION})")
    return v


class ArchiveLoader:
    """One load of one archive (see the module docstring)."""

    def __init__(self, reader: ArchiveReader, map_location: Any, limits: Limits) -> None:
        self.reader = reader
        self.map_location = _location(map_location)
        self.limits = limits
        self.where = reader.prefix
        self.decls: dict[str, ClassDecl] = {}
        self.functions: dict[str, tuple[str, ast.FunctionDef]] = {}   # qualname -> (file, def)
        self.sources: dict[str, str] = {}      # filename -> decoded text
        self.lines: dict[str, list[str]] = {}  # filename -> its lines, when needed
        self.version = 0
        self.constants: tuple[Any, ...] = ()

    # -- the stages ------------------------------------------------------------------------
    def load(self, extra_files: Optional[MutableMapping[str, Any]]) -> ScriptModule:
        r = self.reader
        if r.has("model.json") and not r.has("data.pkl"):
            raise UnsupportedFeature(f"{self.where}: legacy model.json archive (PyTorch <= 1.3); "
                                     "re-save it with a newer PyTorch")
        for required in ("data.pkl", "constants.pkl"):
            if not r.has(required):
                raise ArchiveError(f"{self.where}/{required}: record missing")
        self.version = archive_version(r)
        byteorder = self._byteorder()
        self._parse_code()
        self.constants = self._constants(byteorder)
        # The weights are read and checked on a worker thread while the modules are built and
        # compiled (which never look at them); the block ends when all are in.
        with r.background_reads():
            root = self._unpickle("data.pkl", "data/", byteorder, later=True)
            if not isinstance(root, PickledObject) or self._decl(root.qualname, "data.pkl").kind != "module":
                raise ModelFormatError(f"{self.where}/data.pkl: the root object is not a module")
            from kiln.serialization.build import ModuleBuilder
            builder = ModuleBuilder(self)
            module = builder.build(root)
            builder.compile_all()
        builder.unit.release()
        if extra_files is not None:
            self._extra(extra_files)
        return module

    def _byteorder(self) -> str:
        if not self.reader.has("byteorder"):
            return "little"
        text = self.reader.read("byteorder").decode("ascii", "replace").strip()
        if text not in ("little", "big"):
            raise ArchiveError(f"{self.where}/byteorder: unknown byte order {text[:20]!r}")
        return text

    def _parse_code(self) -> None:
        total = statements = 0
        seen: dict[str, Any] = {}     # variants of one file parse once (see parse_code_file)
        for name in self.reader.names():
            if not name.startswith("code/") or not name.endswith(".py"):
                continue
            parts = name[len("code/"):-len(".py")].split("/")
            if not parts or parts[0] != "__torch__" or not all(valid_name(p) for p in parts):
                raise ArchiveError(f"{self.where}/{name}: code file name is not a qualified name")
            raw = self.reader.read(name)
            total += len(raw)
            if total > self.limits.max_source_bytes:
                raise ResourceLimitExceeded(f"{self.where}/code: more than {self.limits.max_source_bytes} "
                                            "bytes of source")
            filename = f"{self.where}/{name}"
            parsed = parse_code_file(raw, filename, ".".join(parts), self.limits, seen)
            statements += parsed.statements
            if statements > self.limits.max_statements:
                raise ResourceLimitExceeded(f"{self.where}/code: more than {self.limits.max_statements} "
                                            "statements")
            self.sources[filename] = parsed.source
            for q in [*parsed.classes, *parsed.functions]:
                if q in self.decls or q in self.functions:
                    raise CompileError(f"{filename}: {q} is defined twice", cause="defined twice",
                                       filename=filename)
            self.decls.update(parsed.classes)
            self.functions.update((q, (filename, f)) for q, f in parsed.functions.items())

    def _decl(self, qualname: str, record: str) -> ClassDecl:
        decl = self.decls.get(qualname)
        if decl is None:
            from kiln.serialization.source import code_path
            raise ModelFormatError(f"{self.where}/{record}: object of class {qualname}, which the "
                                   f"archive's code does not define (no class {qualname.rpartition('.')[2]} "
                                   f"in record {self.where}/{code_path(qualname)})")
        return decl

    def _unpickle(self, record: str, data_dir: str, byteorder: str, later: bool = False) -> Any:
        reader = self.reader

        def read_into(key: str) -> tuple[int, Callable[..., None]]:
            name = data_dir + key
            return reader.record(name).size, functools.partial(reader.read_into, name)
        storages = StorageReader(read_into=read_into, map_location=self.map_location, byteorder=byteorder,
                                 limits=self.limits, fill_later=later)
        return load_pickle(self.reader.view(record), record=f"{self.where}/{record}",
                           globals=torch_globals(storages), persistent_load=storages, limits=self.limits)

    def _constants(self, byteorder: str) -> tuple[Any, ...]:
        value = self._unpickle("constants.pkl", "constants/", byteorder)
        if not isinstance(value, tuple):
            raise ModelFormatError(f"{self.where}/constants.pkl: expected a tuple, "
                                   f"found {type(value).__name__}")
        for v in value:
            if isinstance(v, (PickledObject, ClassRef)):
                raise UnsupportedFeature(f"{self.where}/constants.pkl: object constants of class "
                                         f"{getattr(v, 'qualname', '?')} are not supported")
        return value

    def _extra(self, extra_files: MutableMapping[str, Any]) -> None:
        for name in list(extra_files):
            record = "extra/" + str(name)
            if self.reader.has(record):
                extra_files[name] = self.reader.read(record)

    # -- types -----------------------------------------------------------------------------
    def type_of(self, node: ast.expr, decl: ClassDecl) -> Type:
        """A member's declared type (a syntax tree of the class body) as an IR type."""
        text = self._segment(node, decl.filename) or ast.unparse(node)
        try:
            t = parse_type(text.replace("Tuple[()]", "Tuple[]"))
        except KilnError as e:
            raise CompileError(f"{decl.filename}:{node.lineno}: bad type {text!r}: {e}",
                               cause="bad type", filename=decl.filename, lineno=node.lineno) from None
        for name in _class_names(t):
            if name not in self.decls:
                member = next((n for n, nd in decl.members if nd is node), "?")
                raise ModelFormatError(f"{self.where}/data.pkl: {decl.qualname}.{member} is declared "
                                       f"{text!r} ({decl.filename}:{node.lineno}), naming class {name}, "
                                       "which the archive's code does not define")
        return self._archive_type(t)

    def _segment(self, node: ast.expr, filename: str) -> str:
        """The source text of a one-line expression (cheaper than unparsing it)."""
        if node.end_lineno != node.lineno or node.end_col_offset is None:
            return ""
        lines = self.file_lines(filename)
        if not 0 < node.lineno <= len(lines):
            return ""
        return lines[node.lineno - 1][node.col_offset:node.end_col_offset]

    def file_lines(self, filename: str) -> list[str]:
        """The lines of a code file, split once (``\n`` only: positions are the parser's)."""
        lines = self.lines.get(filename)
        if lines is None:
            lines = self.lines[filename] = self.sources[filename].split("\n")
        return lines

    def _archive_type(self, t: Type) -> Type:
        """``t`` with the archive's enum classes as enum types (the type parser sees only names)."""
        if isinstance(t, OptionalType):
            return OptionalType(self._archive_type(t.elem))
        if isinstance(t, ClassType):
            decl = self.decls.get(t.qualname)
            if decl is not None and decl.kind == "enum":
                return EnumType(t.qualname)
        return t


def _class_names(t: Type) -> list[str]:
    """The class names inside a type (``Optional[__torch__.A]`` -> ``["__torch__.A"]``)."""
    return [x.qualname for x in walk_types(t) if isinstance(x, ClassType)]


def _location(map_location: Any) -> Optional[str]:
    if map_location is None:
        return None
    if isinstance(map_location, (str, torch.device)):
        return str(torch.device(map_location))
    raise KilnError(f"map_location must be a device or a device string, got {type(map_location).__name__}")


def conforms(value: Any, t: Type, seen: Optional[set[tuple[int, Type]]] = None) -> bool:
    """Whether a loaded value has IR type ``t`` (the schema check of loaded objects).  A
    container shared through the pickle's memo is checked once per type (``seen``), so the
    check is linear in the pickle, not in the tree it unfolds to."""
    if isinstance(value, (list, dict, tuple)) and value:
        seen = set() if seen is None else seen
        key = (id(value), t)
        if key in seen:
            return True
        seen.add(key)
    return _conforms(value, t, seen)


def _conforms(value: Any, t: Type, seen: Optional[set[tuple[int, Type]]]) -> bool:
    if isinstance(t, OptionalType):
        return value is None or conforms(value, t.elem, seen)
    if isinstance(t, UnionType):
        return any(conforms(value, e, seen) for e in t.elems)
    if t == AnyType:
        return True
    if isinstance(t, TensorType):
        return isinstance(value, torch.Tensor)
    simple = _SIMPLE_CHECKS.get(t)
    if simple is not None:
        return bool(simple(value))
    if isinstance(t, TupleType):
        return isinstance(value, tuple) and len(value) == len(t.elems) and \
            all(conforms(v, e, seen) for v, e in zip(value, t.elems))
    if isinstance(t, ListType):
        return isinstance(value, list) and all(conforms(v, t.elem, seen) for v in value)
    if isinstance(t, DictType):
        return isinstance(value, dict) and all(conforms(k, t.key, seen) and conforms(v, t.value, seen)
                                               for k, v in value.items())
    if isinstance(t, ClassType):
        return _conforms_class(value, t)
    if isinstance(t, EnumType):
        return isinstance(value, enum.Enum) and t.qualname.endswith("." + type(value).__name__)
    return False


def _conforms_class(value: Any, t: ClassType) -> bool:
    from kiln.ir.objects import ScriptObject
    from kiln.ir.types import InterfaceType
    if isinstance(t, InterfaceType):   # an object of any class (the compiler checks the class)
        return isinstance(value, (ScriptObject, PickledObject))
    if isinstance(value, ScriptObject):
        return value._kiln_type == t.qualname
    return isinstance(value, PickledObject) and value.qualname == t.qualname


_SIMPLE_CHECKS: dict[Type, Any] = {
    NoneType: lambda v: v is None,
    BoolType: lambda v: isinstance(v, bool),
    IntType: lambda v: isinstance(v, int) and not isinstance(v, bool),
    FloatType: lambda v: isinstance(v, float),
    NumberType: lambda v: isinstance(v, (int, float)) and not isinstance(v, bool),
    StrType: lambda v: isinstance(v, str),
    ComplexType: lambda v: isinstance(v, complex),
    DeviceType: lambda v: isinstance(v, torch.device),
}
