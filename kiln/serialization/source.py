"""The ``code/`` half of an archive: class definitions as TorchScript source, both ways.

Writing
    Every :class:`~kiln.runtime.module.ScriptModule` of a tree becomes a class definition in the
    file named by its qualified name (``__torch__.a.b.Cls`` lives in ``code/__torch__/a/b.py``)::

        class Cls(Module):
          __parameters__ = ["weight", ]
          __buffers__ = []
          weight : Tensor
          training : bool
          k : int
          in_features : Final[int] = 3
          sub : __torch__.Sub
          def forward(self: __torch__.a.b.Cls,
            x: Tensor) -> Tensor:
            ...

    Method bodies are the ``.code`` view (:mod:`kiln.ir.pycode`); tensors and other values
    without a literal become ``CONSTANTS.cN`` entries of one table for the whole archive.
    Instances whose class text is identical share one class; when two instances of one Python
    class differ (other constants, other traced graphs), the later ones get a mangled name,
    ``__torch__.a.b.___torch_mangle_N.Cls``, TorchScript's spelling.

Reading
    :func:`parse_code_file` reads one file with :func:`ast.parse` -- a syntax tree only; nothing
    is compiled to bytecode or run -- after checking its size, encoding and nesting depth, and
    returns a :class:`ClassDecl` per class: its kind (module, NamedTuple, enum, interface or
    plain class), members in declaration order, ``Final`` constants and method definitions.
    The method bodies are compiled later by Kiln's own script compiler.
"""

from __future__ import annotations

import ast
import enum
import keyword
import re
from collections.abc import Iterator
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any, Optional

from kiln import syntax
from kiln.errors import CompileError, KilnError, ResourceLimitExceeded
from kiln.ir.pycode import graph_to_code, literal
from kiln.ir.types import (
    TENSOR,
    BoolType,
    ClassType,
    EnumType,
    InterfaceType,
    NamedTupleType,
    NoneType,
    Type,
    type_of_value,
    walk_types,
)
from kiln.serialization.limits import Limits

if TYPE_CHECKING:
    from kiln.runtime.module import ScriptModule

MANGLE = "___torch_mangle_"


def code_path(qualname: str) -> str:
    """The record holding class ``qualname``: its prefix as a path (``code/__torch__/a.py``)."""
    prefix = qualname.rpartition(".")[0]
    return "code/" + prefix.replace(".", "/") + ".py"


def valid_name(name: str) -> bool:
    return name.isidentifier() and not keyword.iskeyword(name) and name.isascii()


def valid_member_name(name: str) -> bool:
    """Member names an archive may hold: identifiers, and the digit names of ``Sequential`` /
    ``ModuleList`` children (written as ``__annotations__["0"] = T``).  Nothing else -- no
    dots, slashes, quotes or control characters -- ever reaches a file or generated code."""
    return 0 < len(name) <= 256 and _MEMBER_NAME.fullmatch(name) is not None and not keyword.iskeyword(name)


_MEMBER_NAME = re.compile(r"[A-Za-z0-9_]+")


def valid_qualname(qualname: str) -> bool:
    parts = qualname.split(".")
    return len(parts) >= 2 and parts[0] == "__torch__" and all(valid_name(p) for p in parts)


# -- writing -------------------------------------------------------------------------------------

@dataclass
class Member:
    """One member of a module class, in declaration (and pickling) order."""
    name: str
    type: Type
    kind: str      # "parameter", "buffer", "attribute", "module"
    value: Any     # the tensor, plain value or submodule


def module_members(sm: ScriptModule) -> list[Member]:
    """Parameters, buffers, ``training``, plain attributes (None-valued parameters, buffers and
    submodules among them, as ``NoneType``), then submodules -- the order both halves of an
    archive use, and the order a loaded module is rebuilt in (so saving it again gives the
    same bytes)."""
    out = [Member(n, TENSOR, "parameter", p) for n, p in sm._parameters.items() if p is not None]
    out += [Member(n, TENSOR, "buffer", b) for n, b in sm._buffers.items() if b is not None]
    out.append(Member("training", BoolType, "attribute", sm.training))
    empty = [n for d in (sm._parameters, sm._buffers, sm._modules) for n, v in d.items() if v is None]
    out += [Member(n, NoneType, "attribute", None) for n in empty]
    declared = sm.__dict__["_kiln_attr_types"]
    for name in sm._kiln_attributes:
        value = sm.__dict__.get(name)
        t = declared.get(name) or _plain_type(type_of_value(value))
        out.append(Member(name, t, "attribute", value))
    out += [Member(n, TENSOR, "module", m) for n, m in sm._modules.items() if m is not None]
    return out


def _plain_type(t: Type) -> Type:
    from kiln.frontend.script.modules import _plain
    return _plain(t)


def annotation(t: Type) -> str:
    return "NoneType" if t == NoneType else t.annotation()


@dataclass
class ClassWriter:
    """Collects the class definitions of a module tree (see the module docstring)."""

    constants: list[Any] = field(default_factory=list)
    texts: dict[str, str] = field(default_factory=dict)          # qualname -> class text
    qualnames: dict[int, str] = field(default_factory=dict)      # id(ScriptModule) -> qualname
    pending: dict[str, str] = field(default_factory=dict)        # dependencies of a reused class text

    def add_tree(self, root: ScriptModule) -> str:
        """Define the classes of ``root``'s tree (submodules first); ``root``'s qualname."""
        for sm in post_order(root):
            if id(sm) not in self.qualnames:
                self.qualnames[id(sm)] = self._define(sm)
        return self.qualnames[id(root)]

    def _define(self, sm: ScriptModule) -> str:
        base = sm.qualified_name
        if not valid_qualname(base):
            raise KilnError(f"cannot save module {sm.original_name!r}: its class name {base!r} is not "
                            "a valid TorchScript qualified name")
        prefix, _, name = base.rpartition(".")
        n = 0
        candidate = base
        while True:
            self.pending = {}
            text = self._class_text(sm, candidate)
            known = self.texts.get(candidate)
            if known is None:
                self.texts[candidate] = text
                for dep, dep_text in self.pending.items():
                    self.texts.setdefault(dep, dep_text)
                return candidate
            if known == text:
                return candidate
            candidate = f"{prefix}.{MANGLE}{n}.{name}"
            n += 1

    def _class_text(self, sm: ScriptModule, qualname: str) -> str:
        members = module_members(sm)
        loaded = sm.__dict__.get("_kiln_archive_class")
        if isinstance(loaded, LoadedClass) and loaded.still_describes(sm, qualname, members, self.qualnames):
            self.pending.update(loaded.dependencies())   # written after this class (see _define)
            return loaded.text_for(self.constants)
        name = qualname.rpartition(".")[2]
        lines = [f"class {name}(Module):",
                 "  __parameters__ = [" + "".join(f'"{m.name}", ' for m in members
                                                   if m.kind == "parameter") + "]",
                 "  __buffers__ = [" + "".join(f'"{m.name}", ' for m in members if m.kind == "buffer") + "]"]
        declared = sm.__dict__["_kiln_attr_types"]
        for m in members:
            _check_member_name(sm, m.name)
            t = self.qualnames[id(m.value)] if m.kind == "module" else annotation(m.type)
            if m.kind == "module" and isinstance(declared.get(m.name), InterfaceType):
                t = annotation(declared[m.name])         # a submodule typed by a module interface
            lines.append(f"  {m.name} : {t}" if valid_name(m.name)
                         else f'  __annotations__["{m.name}"] = {t}')
        for cname, value in sm.__dict__["_kiln_constants"].items():
            lit = literal(value)
            if lit is not None and valid_name(cname):
                lines.append(f"  {cname} : Final[{annotation(_plain_type(type_of_value(value)))}] = {lit}")
        for mname, graph in sm._kiln_graphs.items():
            if not valid_name(mname):
                raise KilnError(f"cannot save method {mname!r} of {sm.original_name!r}: not an identifier")
            _check_saveable(sm, mname, graph)
            code = graph_to_code(graph, mname, constants=self.constants,
                                 defaults=sm.__dict__["_kiln_defaults"].get(mname), self_type=qualname)
            lines += ["  " + line for line in code.rstrip("\n").split("\n")]
        return "\n".join(lines) + "\n"

    def add_types(self, root: ScriptModule) -> None:
        """Define the NamedTuples, enums, interfaces and script classes the methods of ``root``'s
        tree use (in the order their graphs mention them)."""
        for sm in post_order(root):
            declared = sm.__dict__["_kiln_attr_types"]
            for m in module_members(sm):
                t = declared.get(m.name) if m.kind == "module" else m.type
                for inner in _nested_types(t) if t is not None else ():
                    self._define_type(inner)
            for graph in sm._kiln_graphs.values():
                for t in _graph_types(graph):
                    self._define_type(t)
                for qualname, (fields, record) in _created_classes(graph).items():
                    self._define_class(qualname, fields, record)

    def define_object_class(self, record: Any) -> None:
        """The class of a script-class object held in an attribute (``record``: its
        :class:`~kiln.ir.objects.ScriptClass`)."""
        self._define_class(record.qualname, dict(record.fields), record)

    def _define_class(self, qualname: str, fields: dict[str, Type], record: Any = None) -> None:
        """A script class whose objects the code creates or an attribute holds: the text it was
        loaded with, else its fields and the methods compiled on their own (those an interface
        call may run; Kiln compiles other method calls into the code that makes them)."""
        if qualname in self.texts:
            return
        if not valid_qualname(qualname):
            raise KilnError(f"cannot save class {qualname!r}: not a valid qualified name")
        if record is not None and record.text is not None:
            self.texts[qualname] = _renumbered(record.text, record.archive.constants, self.constants)
            for dep, dep_text in record.archive.dependencies(record.text).items():
                self.texts.setdefault(dep, dep_text)
            return
        graphs: dict[str, Any] = dict(record.graphs) if record is not None else {}
        if graphs and record.fields:
            fields = dict(record.fields)
        self.texts[qualname] = f"class {qualname.rpartition('.')[2]}:\n" + \
            (self._class_body(qualname, fields, graphs) or "  pass\n")
        for graph, _ in graphs.values():         # classes its methods create
            for q, (f, r) in _created_classes(graph).items():
                self._define_class(q, f, r)

    def _class_body(self, qualname: str, fields: dict[str, Type], graphs: dict[str, Any]) -> str:
        for ft in fields.values():
            for inner in _nested_types(ft):
                self._define_type(inner)
        lines = [f"  {f} : {annotation(ft)}" for f, ft in fields.items() if valid_name(f)]
        for mname in sorted(graphs):
            graph, defaults = graphs[mname]
            if not valid_name(mname):
                raise KilnError(f"cannot save method {mname!r} of class {qualname}: not an identifier")
            for t in _graph_types(graph):
                self._define_type(t)
            code = graph_to_code(graph, mname, constants=self.constants, defaults=defaults,
                                 self_type=qualname)
            lines += ["  " + line for line in code.rstrip("\n").split("\n")]
        return "".join(line + "\n" for line in lines)

    def _define_interface(self, t: InterfaceType) -> None:
        """``class Op(Interface):`` with each method's signature and a ``pass`` body, as
        TorchScript writes interfaces (methods in name order)."""
        if not t.methods:
            raise KilnError(f"cannot save interface {t.qualname}: its methods are unknown")
        self.texts[t.qualname] = ""          # taken, while the types it names are defined
        lines = [f"class {t.qualname.rpartition('.')[2]}({'ModuleInterface' if t.module else 'Interface'}):"]
        for name, params, ret in t.methods:
            for pt in (*(p for _, p in params), ret):
                for inner in _nested_types(pt):
                    self._define_type(inner)
            lines.append(f"  def {name}(self" + "".join(f", {n}: {annotation(pt)}" for n, pt in params)
                         + f") -> {annotation(ret)}:")
            lines.append("    pass")
        self.texts[t.qualname] = "\n".join(lines) + "\n"

    def _define_type(self, t: NamedTupleType | EnumType | InterfaceType) -> None:
        if t.qualname in self.texts:
            return
        if not valid_qualname(t.qualname):
            raise KilnError(f"cannot save type {t.qualname!r}: not a valid qualified name")
        if isinstance(t, InterfaceType):
            self._define_interface(t)
            return
        name = t.qualname.rpartition(".")[2]
        if isinstance(t, NamedTupleType):
            for _, ft in t.fields:
                for inner in _nested_types(ft):
                    self._define_type(inner)
            fields = "".join(f"  {f} : {annotation(ft)}\n" for f, ft in t.fields)
            self.texts[t.qualname] = f"class {name}(NamedTuple):\n" + (fields or "  pass\n")
            return
        if isinstance(t, EnumType):
            self.texts[t.qualname] = f"class {name}(Enum):\n" + _enum_body(t)

    def files(self) -> dict[str, str]:
        """Record name -> source text, classes in the order they were defined."""
        out: dict[str, str] = {}
        for qualname, text in self.texts.items():
            path = code_path(qualname)
            out[path] = out.get(path, "") + text
        return out


@dataclass
class ArchiveTexts:
    """The texts of a loaded archive's top-level definitions (functions, classes) by qualified
    name, cut from their files by line range at load -- string slicing only; their syntax is
    looked at again only if a module is saved."""

    texts: dict[str, str] = field(default_factory=dict)
    constants: tuple[Any, ...] = ()

    def dependencies(self, text: str) -> dict[str, str]:
        """The functions and non-module classes ``text`` refers to, transitively, with their texts."""
        out: dict[str, str] = {}
        todo = [text]
        while todo:
            for path in sorted(torch_references(syntax.parse(todo.pop()))):
                found = self.texts.get(path)
                if found is not None and path not in out:
                    out[path] = found
                    todo.append(found)
        return out


@dataclass
class LoadedClass:
    """The class text a module was loaded from, kept so that saving the module again -- unchanged
    -- writes that text rather than a new print of its recompiled graphs (which need not be
    the same text: printing is not a fixed point of compiling).  Saving reuses it only while it
    still describes the module: same qualified name, same members and submodule classes, and
    the very graphs compiled from it.  The functions and script classes the text calls are
    written with it (``archive``)."""

    qualname: str
    text: str
    members: list[tuple[str, str, str]]          # (name, kind, type annotation)
    graphs: dict[str, Any]                       # method name -> the graph compiled at load
    archive: ArchiveTexts

    def still_describes(self, sm: ScriptModule, qualname: str, members: list[Member],
                        qualnames: dict[int, str]) -> bool:
        if qualname != self.qualname or set(self.graphs) != set(sm._kiln_graphs):
            return False
        if any(sm._kiln_graphs[n] is not g for n, g in self.graphs.items()):
            return False
        if any(n >= len(self.archive.constants) for _, _, _, n in _constant_refs(self.text)):
            return False
        return _member_signature(members, qualnames) == self.members

    def dependencies(self) -> dict[str, str]:
        return self.archive.dependencies(self.text)

    def text_for(self, table: list[Any]) -> str:
        """The text with its ``CONSTANTS.cN`` references renumbered into ``table`` (values are
        found by identity, appended when new)."""
        return _renumbered(self.text, self.archive.constants, table)


def _renumbered(text: str, constants: tuple[Any, ...], table: list[Any]) -> str:
    """``text`` with its ``CONSTANTS.cN`` references (into ``constants``) renumbered into
    ``table``."""
    refs = _constant_refs(text)
    if not refs:
        return text
    index = {id(v): i for i, v in enumerate(table)}
    lines = text.split("\n")
    for line, start, end, old in sorted(refs, reverse=True):
        if old >= len(constants):
            raise KilnError(f"cannot save: CONSTANTS.c{old} is not in the table the text was loaded with")
        value = constants[old]
        new = index.get(id(value))
        if new is None:
            new = index[id(value)] = len(table)
            table.append(value)
        row = lines[line - 1]
        lines[line - 1] = row[:start] + f"CONSTANTS.c{new}" + row[end:]
    return "\n".join(lines)


def _member_signature(members: list[Member], qualnames: dict[int, str]) -> list[tuple[str, str, str]]:
    return [(m.name, m.kind, qualnames.get(id(m.value), "?") if m.kind == "module" else annotation(m.type))
            for m in members]


def _constant_refs(text: str) -> list[tuple[int, int, int, int]]:
    """Every ``CONSTANTS.cN`` in ``text``: (line, start column, end column, N)."""
    return _constant_refs_in(syntax.parse(text))


def _constant_refs_in(tree: ast.AST) -> list[tuple[int, int, int, int]]:
    out = []
    for node in ast.walk(tree):
        if isinstance(node, ast.Attribute) and isinstance(node.value, ast.Name) \
                and node.value.id == "CONSTANTS" and node.attr[1:].isdigit() \
                and node.end_col_offset is not None:
            out.append((node.lineno, node.col_offset, node.end_col_offset, int(node.attr[1:])))
    return out


def loaded_class(sm: ScriptModule, archive: ArchiveTexts, qualnames: dict[int, str]) -> Optional[LoadedClass]:
    """What :class:`LoadedClass` records for ``sm``, just loaded (None when its class text could
    not be cut out of its file cleanly)."""
    text = archive.texts.get(sm.qualified_name)
    if text is None:
        return None
    return LoadedClass(sm.qualified_name, text, _member_signature(module_members(sm), qualnames),
                       dict(sm._kiln_graphs), archive)


def definition_text(node: ast.AST, lines: list[str]) -> Optional[str]:
    """The text of a top-level definition, cut from its file's lines (None if it cannot be cut
    cleanly)."""
    start, end = getattr(node, "lineno", None), getattr(node, "end_lineno", None)
    if start is None or end is None:
        return None
    lines = lines[start - 1:end]
    if not lines or lines[0].startswith((" ", "\t")) or "\r" in "".join(lines):
        return None
    return "\n".join(lines) + "\n"


def torch_references(node: ast.AST) -> set[str]:
    """The ``__torch__.a.b.C`` paths a definition mentions."""
    out = set()
    for n in ast.walk(node):
        if isinstance(n, ast.Attribute) and not isinstance(getattr(n, "_parent", None), ast.Attribute):
            parts = []
            cur: ast.expr = n
            while isinstance(cur, ast.Attribute):
                parts.append(cur.attr)
                cur = cur.value
            if isinstance(cur, ast.Name) and cur.id == "__torch__":
                for i in range(1, len(parts) + 1):      # every prefix: the definition is one of them
                    out.add(".".join(["__torch__", *reversed(parts)][: i + 1]))
    return out


def _nested_types(t: Type) -> Iterator[NamedTupleType | EnumType | InterfaceType]:
    """The NamedTuple, enum and interface types inside ``t`` (itself included)."""
    for x in walk_types(t):
        if isinstance(x, (NamedTupleType, EnumType, InterfaceType)):
            yield x


def _graph_types(graph: Any) -> Iterator[NamedTupleType | EnumType | InterfaceType]:
    values = list(graph.inputs)
    for node in graph.all_nodes():
        values += node.outputs
        for block in node.blocks:
            values += block.inputs
    for v in values:
        yield from _nested_types(v.type)


def _created_classes(graph: Any) -> dict[str, tuple[dict[str, Type], Any]]:
    """Classes of the objects ``graph`` creates (``prim::CreateObject``), with the fields its
    ``SetAttr``/``GetAttr`` nodes use on them, in order, and the class's run-time record
    (:class:`~kiln.ir.objects.ScriptClass`, or None)."""
    from kiln.ir.objects import ScriptClass
    out: dict[str, tuple[dict[str, Type], Any]] = {}
    for node in graph.all_nodes():
        if node.kind == "prim::CreateObject" and isinstance(node.output.type, ClassType):
            record = node.attrs.get("cls")
            out.setdefault(node.output.type.qualname,
                           ({}, record if isinstance(record, ScriptClass) else None))
    for node in graph.all_nodes():
        if node.kind in ("prim::SetAttr", "prim::GetAttr") and isinstance(node.inputs[0].type, ClassType):
            known = out.get(node.inputs[0].type.qualname)
            value = node.inputs[1] if node.kind == "prim::SetAttr" else node.output
            if known is not None:
                known[0].setdefault(str(node.attrs.get("name")), _plain_type(value.type))
    return out


def _enum_body(t: EnumType) -> str:
    from kiln.frontend.script.compiler import KNOWN_TYPES
    cls = KNOWN_TYPES.get(t.qualname)
    if cls is None or not isinstance(cls, type) or not issubclass(cls, enum.Enum):
        raise KilnError(f"cannot save enum {t.qualname}: its members are unknown")
    lines = []
    for member in cls:
        text = literal(member.value)
        if text is None or not valid_name(member.name):
            raise KilnError(f"cannot save enum {t.qualname}: member {member.name} has no literal value")
        lines.append(f"  {member.name} = {text}\n")
    return "".join(lines) or "  pass\n"


def post_order(root: ScriptModule) -> Iterator[ScriptModule]:
    """Every ScriptModule of the tree once, submodules before their parent (iteratively)."""
    from kiln.runtime.module import ScriptModule
    seen: set[int] = set()
    stack: list[tuple[Any, bool]] = [(root, False)]
    while stack:
        m, expanded = stack.pop()
        if expanded:
            yield m
            continue
        if id(m) in seen:
            continue
        if not isinstance(m, ScriptModule):
            raise KilnError(f"cannot save submodule of type {type(m).__name__}: only Kiln modules "
                            "(from kiln.script or kiln.trace) can be saved")
        seen.add(id(m))
        stack.append((m, True))
        for child in reversed([c for c in m._modules.values() if c is not None]):
            stack.append((child, False))


def _check_member_name(sm: ScriptModule, name: str) -> None:
    if not valid_member_name(name):
        raise KilnError(f"cannot save module {sm.original_name!r}: member name {name!r} is not a "
                        "Python identifier")


def _check_saveable(sm: ScriptModule, name: str, graph: Any) -> None:
    for node in graph.all_nodes():
        if node.kind == "prim::kiln_python_call":
            fn = node.attrs.get("fn")
            raise KilnError(f"cannot save method {sm.original_name}.{name}: it calls the Python method "
                            f"{getattr(fn, '__name__', '?')!r} (marked @ignore), which has no "
                            "TorchScript code; mark it @unused or make it scriptable")


# -- reading -------------------------------------------------------------------------------------

@dataclass
class ClassDecl:
    """One class of an archive's ``code/``."""
    qualname: str
    kind: str            # "module", "class", "namedtuple", "enum", "interface", "module_interface"
    filename: str
    members: list[tuple[str, ast.expr]] = field(default_factory=list)   # name, type expression
    parameters: list[str] = field(default_factory=list)
    buffers: list[str] = field(default_factory=list)
    constants: dict[str, Any] = field(default_factory=dict)
    enum_values: dict[str, Any] = field(default_factory=dict)
    methods: dict[str, ast.FunctionDef] = field(default_factory=dict)
    node: Optional[ast.ClassDef] = None


_BASES = {"Module": "module", "NamedTuple": "namedtuple", "Enum": "enum", "Interface": "interface",
          "ModuleInterface": "module_interface"}


@dataclass
class CodeFile:
    """One parsed ``code/`` record: its text, classes and free functions by qualified name."""
    source: str
    classes: dict[str, ClassDecl] = field(default_factory=dict)
    functions: dict[str, ast.FunctionDef] = field(default_factory=dict)
    statements: int = 0


def parse_code_file(text: bytes, filename: str, prefix: str, limits: Limits,
                    seen: Optional[dict[str, _Shape]] = None) -> CodeFile:
    """Parse record ``filename``, whose definitions have qualified-name prefix ``prefix``.

    ``seen`` (one dict per archive) lets a file that differs from one parsed before only in
    its classes' member declarations and the annotations of ``self`` -- the variants
    TorchScript writes of one class -- reuse that parse, with only its declarations parsed."""
    source = _decode(text, filename)
    if "\r" in source:
        seen = None               # (lines are counted at "\n" here; Python's parser also splits at "\r")
    lines = source.split("\n") if seen is not None else []
    key = _shape_key(lines) if seen is not None else ""
    shape = seen.get(key) if seen is not None else None
    if shape is not None:
        again = _reuse(shape, source, lines, filename, prefix, limits)
        if again is not None:
            return again
    tree = _parse(source, filename)
    out = CodeFile(source, statements=_check_depth(tree, filename, limits.max_ast_depth))
    for stmt in tree.body:
        if isinstance(stmt, (ast.Import, ast.ImportFrom)):
            continue                                   # old archives import what they use
        if isinstance(stmt, ast.Assign) and _is_version_assign(stmt):
            continue                                   # `op_version_set = N` (old archives)
        if not isinstance(stmt, (ast.ClassDef, ast.FunctionDef)):
            raise _error(filename, stmt, "only class and function definitions may appear at the top "
                                         f"level of an archive's code, found {type(stmt).__name__}")
        qualname = f"{prefix}.{stmt.name}"
        if qualname in out.classes or qualname in out.functions:
            raise _error(filename, stmt, f"{qualname} is defined twice")
        if isinstance(stmt, ast.FunctionDef):
            if not valid_name(stmt.name):
                raise _error(filename, stmt, f"function name {stmt.name!r} is not valid")
            out.functions[qualname] = stmt
        else:
            out.classes[qualname] = _class_decl(stmt, qualname, filename)
    if seen is not None and key not in seen:
        seen[key] = _shape(tree, lines, out)
    return out


# -- variants of one file ---------------------------------------------------------------------------
#
# TorchScript writes a class per variant of a Python class (``___torch_mangle_N``): the files
# differ in the member declarations (``  num_features : Final[int] = 128``, a mangled submodule
# type) and in the annotation of ``self`` on each ``  def`` line, and nowhere else.  Such a file
# reuses the syntax trees of the first one's methods and functions (their text is the same,
# character for character, but for ``self``'s annotation, which the compiler does not read) and
# has its own declarations parsed.  Anything else -- a line that differs elsewhere, a declaration
# line the first parse did not see as one -- falls back to parsing the whole file.

_SELF_ANNOTATION = re.compile(r"^(  def [A-Za-z_][A-Za-z0-9_]*\(self: )[A-Za-z0-9_.]+")


@dataclass
class _Shape:
    """A parsed file, kept for its variants."""
    tree: ast.Module
    statements: int
    declarations: frozenset[int]     # 0-based lines of class-level member declarations
    declared: tuple[str, ...]        # their text
    classes: dict[str, ClassDecl]    # by class name


def _shape(tree: ast.Module, lines: list[str], parsed: CodeFile) -> _Shape:
    where = _declaration_lines(tree)
    return _Shape(tree, parsed.statements, where, tuple(lines[i] for i in sorted(where)),
                  {d.qualname.rpartition(".")[2]: d for d in parsed.classes.values()})


def _class_level(line: str) -> bool:
    """Whether ``line`` is indented like a class's members and methods (two spaces)."""
    return line.startswith("  ") and not line.startswith("   ")


def _shape_key(lines: list[str]) -> str:
    """The file's lines with every class-level line that is not a ``def`` blanked out and the
    annotation of ``self`` dropped from each ``def`` line."""
    return "\n".join((_SELF_ANNOTATION.sub(r"\1", line) if line.startswith("  def ") else "  ")
                     if _class_level(line) else line for line in lines)


def _declaration_lines(tree: ast.Module) -> frozenset[int]:
    lines: set[int] = set()
    for cls in tree.body:
        if isinstance(cls, ast.ClassDef):
            for stmt in cls.body:
                if not isinstance(stmt, ast.FunctionDef):
                    lines.update(range(stmt.lineno - 1, (stmt.end_lineno or stmt.lineno)))
    return frozenset(lines)


def _reuse(shape: _Shape, source: str, lines: list[str], filename: str, prefix: str,
           limits: Limits) -> Optional[CodeFile]:
    """``source`` (split into ``lines``) parsed with the trees of ``shape`` (None: it must be
    parsed in full)."""
    blanked = [i for i, line in enumerate(lines) if _class_level(line) and not line.startswith("  def ")]
    if not set(blanked) <= shape.declarations:
        return None
    if tuple(lines[i] for i in sorted(shape.declarations)) == shape.declared:
        return _same_declarations(shape, source, filename, prefix)
    declared = _declarations(shape, lines, filename, limits)
    if declared is None:
        return None
    out = CodeFile(source, statements=shape.statements)
    for stmt in shape.tree.body:
        if not isinstance(stmt, (ast.ClassDef, ast.FunctionDef)):
            continue
        qualname = f"{prefix}.{stmt.name}"
        if isinstance(stmt, ast.FunctionDef):
            out.functions[qualname] = stmt
            continue
        body: list[ast.stmt] = []
        for member in stmt.body:
            if isinstance(member, ast.FunctionDef):
                body.append(member)
                continue
            mine = declared.pop(member.lineno, None)
            if mine is None or mine.end_lineno != member.end_lineno:
                return None
            body.append(mine)
        out.classes[qualname] = _class_decl(stmt, qualname, filename, body)
    return out if not declared else None


def _declarations(shape: _Shape, lines: list[str], filename: str,
                  limits: Limits) -> Optional[dict[int, ast.stmt]]:
    """This file's declarations parsed at their own lines and columns, under their class lines,
    by line (None: they do not parse; the full parse reports why)."""
    own = [""] * len(lines)
    for cls in shape.tree.body:
        if isinstance(cls, ast.ClassDef) and not all(isinstance(m, ast.FunctionDef) for m in cls.body):
            own[cls.lineno - 1:cls.body[0].lineno - 1] = lines[cls.lineno - 1:cls.body[0].lineno - 1]
    for i in shape.declarations:
        own[i] = lines[i]
    try:
        tree = syntax.parse("\n".join(own), filename=f"<{filename}>")
        _check_depth(tree, filename, limits.max_ast_depth)
    except (SyntaxError, RecursionError, MemoryError, ValueError, KilnError):
        return None
    return {stmt.lineno: stmt for cls in tree.body if isinstance(cls, ast.ClassDef) for stmt in cls.body}


def _same_declarations(shape: _Shape, source: str, filename: str, prefix: str) -> CodeFile:
    """``source``, whose declarations are those of ``shape`` word for word: its classes are
    copies of ``shape``'s under this file's names."""
    out = CodeFile(source, statements=shape.statements)
    for stmt in shape.tree.body:
        if isinstance(stmt, ast.FunctionDef):
            out.functions[f"{prefix}.{stmt.name}"] = stmt
        elif isinstance(stmt, ast.ClassDef):
            d = shape.classes[stmt.name]
            qualname = f"{prefix}.{stmt.name}"
            out.classes[qualname] = ClassDecl(qualname, d.kind, filename, list(d.members), list(d.parameters),
                                              list(d.buffers), dict(d.constants), dict(d.enum_values),
                                              dict(d.methods), stmt)
    return out


def _decode(text: bytes, filename: str) -> str:
    try:
        source = text.decode("utf-8")
    except UnicodeDecodeError as e:
        raise CompileError(f"{filename}: not UTF-8 text (byte {e.start})", cause="not UTF-8",
                           filename=filename) from None
    if "\x00" in source:
        line = source.count("\n", 0, source.index("\x00")) + 1
        raise CompileError(f"{filename}:{line}: NUL character in source", cause="NUL in source",
                           filename=filename, lineno=line)
    return source.lstrip("\ufeff")


def _parse(source: str, filename: str) -> ast.Module:
    try:
        # "<...>": a name no file has, so that CPython never opens it to quote an error's line
        tree: ast.Module = syntax.parse(source, filename=f"<{filename}>")
        return tree
    except SyntaxError as e:
        raise CompileError(f"{filename}:{e.lineno}:{e.offset}: syntax error: {e.msg}",
                           cause=f"syntax error: {e.msg}", filename=filename, lineno=e.lineno or 0) from None
    except (RecursionError, MemoryError, ValueError) as e:
        raise ResourceLimitExceeded(f"{filename}: source too deeply nested or too large to parse "
                                    f"({type(e).__name__})") from None


# Python constructs TorchScript code never contains; an archive's code using one is refused.
_NOT_TORCHSCRIPT = {ast.Import: "import", ast.ImportFrom: "import", ast.Global: "global",
                    ast.Nonlocal: "nonlocal", ast.AsyncFunctionDef: "async def", ast.Try: "try",
                    ast.ClassDef: "a nested class"}


def _check_constructs(node: ast.AST, filename: str) -> None:
    why = _NOT_TORCHSCRIPT.get(type(node))
    if why is not None:
        raise _error(filename, node, f"{why} is not TorchScript; an archive's code cannot use it")


def _check_depth(tree: ast.Module, filename: str, max_depth: int) -> int:
    """Reject trees nested deeper than ``max_depth`` (the compiler that reads them recurses).

    An expression nests at most about as deep as it is long (see :func:`_may_nest_deeply`):
    statements are walked (cheap), and the full walk is done only for expressions long enough
    to be too deep (of a compound statement, the expressions of its header: its body is made of
    statements walked here)."""
    stack: list[tuple[ast.AST, int]] = [(s, 1) for s in tree.body]
    count = 0
    while stack:
        node, depth = stack.pop()
        count += 1
        if depth > 1 and not isinstance(node, ast.FunctionDef):
            _check_constructs(node, filename)       # statements; expressions: see the compiler
        header = _header_expressions(node)
        for e, below in ((node, 0),) if header is None else header:
            if e is not None and _may_nest_deeply(e, max_depth - depth - below):
                _check_expression_depth(e, depth + below, filename, max_depth)
        for name in ("body", "orelse", "finalbody", "handlers"):
            for child in getattr(node, name, ()) or ():
                if depth + 1 > max_depth:
                    raise ResourceLimitExceeded(f"{filename}:{getattr(child, 'lineno', 0)}: code nested "
                                                f"deeper than {max_depth} levels")
                stack.append((child, depth + 1))
    return count


def _may_nest_deeply(node: ast.AST, room: int) -> bool:
    """Whether ``node`` may nest more than ``room`` levels below itself.  Every level of an
    expression takes at least one character of its own (``-x``, ``a.b``, ``a+b``) but the last
    two (a name and its context), so a one-line expression of n bytes nests at most n + 2 deep;
    one over several lines is walked."""
    start = getattr(node, "lineno", None)
    if start is None or getattr(node, "end_lineno", None) != start:
        return True
    return int(getattr(node, "end_col_offset", 0) or 0) - int(getattr(node, "col_offset", 0) or 0) + 2 > room


_COMPOUND = frozenset({ast.If, ast.While, ast.For, ast.With, ast.FunctionDef, ast.ClassDef})


def _header_expressions(node: ast.AST) -> Optional[list[tuple[Optional[ast.AST], int]]]:
    """The expressions of a compound statement outside its body, each with how many levels
    below the statement it sits (None: not a compound statement the archive's code uses; the
    whole node is checked)."""
    if type(node) not in _COMPOUND:
        return None
    if isinstance(node, (ast.If, ast.While)):
        return [(node.test, 1)]
    if isinstance(node, ast.For):
        return [(node.target, 1), (node.iter, 1)]
    if isinstance(node, ast.With):
        return [(e, 2) for item in node.items for e in (item.context_expr, item.optional_vars)]
    if isinstance(node, ast.FunctionDef):
        a = node.args     # FunctionDef > arguments > arg > annotation
        params = [*a.posonlyargs, *a.args, *a.kwonlyargs, *([a.vararg] if a.vararg else []),
                  *([a.kwarg] if a.kwarg else [])]
        return [*((d, 1) for d in node.decorator_list), *((p.annotation, 3) for p in params),
                *((d, 2) for d in a.defaults), *((d, 2) for d in a.kw_defaults), (node.returns, 1)]
    if isinstance(node, ast.ClassDef):
        return [*((d, 1) for d in node.decorator_list), *((b, 1) for b in node.bases),
                *((k.value, 2) for k in node.keywords)]
    return None


def _check_expression_depth(root: ast.AST, base: int, filename: str, max_depth: int) -> None:
    stack: list[tuple[ast.AST, int, int]] = [(root, base, int(getattr(root, "lineno", 0) or 0))]
    while stack:
        node, depth, line = stack.pop()
        if isinstance(node, (ast.expr, ast.stmt)):
            line = node.lineno      # (not of a Load or an operator: the parser shares those)
        if depth > max_depth:
            raise ResourceLimitExceeded(f"{filename}:{line}: code nested deeper than {max_depth} levels")
        if isinstance(node, ast.stmt) and node is not root:
            continue            # statements inside are walked by _check_depth
        for name in node._fields:
            child = getattr(node, name, None)
            if isinstance(child, ast.AST):
                stack.append((child, depth + 1, line))
            elif isinstance(child, list):
                stack.extend((c, depth + 1, line) for c in child if isinstance(c, ast.AST))


def _is_version_assign(stmt: ast.Assign) -> bool:
    return (len(stmt.targets) == 1 and isinstance(stmt.targets[0], ast.Name)
            and stmt.targets[0].id == "op_version_set" and isinstance(stmt.value, ast.Constant))


def _error(filename: str, node: ast.AST, message: str) -> CompileError:
    line = getattr(node, "lineno", 0)
    return CompileError(f"{filename}:{line}: {message}", cause=message, filename=filename, lineno=line)


def _class_decl(cls: ast.ClassDef, qualname: str, filename: str,
                body: Optional[list[ast.stmt]] = None) -> ClassDecl:
    kind = "class"
    for b in cls.bases:
        name = b.id if isinstance(b, ast.Name) else b.attr if isinstance(b, ast.Attribute) else ""
        if name not in _BASES:
            raise _error(filename, b, f"class {cls.name}: unknown base class {ast.unparse(b)!r}")
        kind = _BASES[name]
    if not valid_name(cls.name):
        raise _error(filename, cls, f"class name {cls.name!r} is not valid")
    decl = ClassDecl(qualname, kind, filename, node=cls)
    for stmt in cls.body if body is None else body:
        _class_statement(decl, stmt, filename)
    return decl


def _class_statement(decl: ClassDecl, stmt: ast.stmt, filename: str) -> None:
    if isinstance(stmt, ast.FunctionDef):
        if stmt.name in decl.methods:
            raise _error(filename, stmt, f"method {stmt.name} is defined twice")
        decl.methods[stmt.name] = stmt
    elif isinstance(stmt, ast.AnnAssign) and isinstance(stmt.target, ast.Name):
        _annotated_member(decl, stmt, stmt.target.id, filename)
    elif isinstance(stmt, ast.Assign) and len(stmt.targets) == 1 and isinstance(stmt.targets[0], ast.Name):
        _assigned_member(decl, stmt, stmt.targets[0].id, filename)
    elif isinstance(stmt, ast.Assign) and len(stmt.targets) == 1 and _annotations_key(stmt.targets[0]):
        name = _annotations_key(stmt.targets[0])
        if any(n == name for n, _ in decl.members):
            raise _error(filename, stmt, f"member {name} of {decl.qualname} is declared twice")
        decl.members.append((name, stmt.value))
    elif isinstance(stmt, ast.Pass) or (isinstance(stmt, ast.Expr) and isinstance(stmt.value, ast.Constant)):
        return
    else:
        raise _error(filename, stmt, f"unexpected {type(stmt).__name__} in the body of class "
                                     f"{decl.qualname}")


def _annotations_key(target: ast.expr) -> str:
    """``"0"`` for the target ``__annotations__["0"]`` (a member whose name is not an
    identifier), else ``""``."""
    if isinstance(target, ast.Subscript) and isinstance(target.value, ast.Name) \
            and target.value.id == "__annotations__" and isinstance(target.slice, ast.Constant) \
            and isinstance(target.slice.value, str) and valid_member_name(target.slice.value):
        return target.slice.value
    return ""


def _annotated_member(decl: ClassDecl, stmt: ast.AnnAssign, name: str, filename: str) -> None:
    if not valid_member_name(name):
        raise _error(filename, stmt, f"member name {name!r} is not valid")
    ann = stmt.annotation
    final = isinstance(ann, ast.Subscript) and isinstance(ann.value, ast.Name) and ann.value.id == "Final"
    if final:
        if stmt.value is None:
            raise _error(filename, stmt, f"constant {name} has no value")
        decl.constants[name] = _literal_value(stmt.value, filename)
        return
    if stmt.value is not None:
        raise _error(filename, stmt, f"member {name} of {decl.qualname} has a value but is not Final")
    if any(n == name for n, _ in decl.members):
        raise _error(filename, stmt, f"member {name} of {decl.qualname} is declared twice")
    decl.members.append((name, ann))


def _assigned_member(decl: ClassDecl, stmt: ast.Assign, name: str, filename: str) -> None:
    if name in ("__parameters__", "__buffers__"):
        names = _literal_value(stmt.value, filename)
        if not isinstance(names, list) or not all(isinstance(n, str) and valid_member_name(n) for n in names):
            raise _error(filename, stmt, f"{name} must be a list of member names")
        (decl.parameters if name == "__parameters__" else decl.buffers).extend(names)
        return
    if name == "__annotations__":
        return
    if decl.kind == "enum" and valid_name(name):
        decl.enum_values[name] = _literal_value(stmt.value, filename)
        return
    raise _error(filename, stmt, f"unexpected assignment to {name} in class {decl.qualname}")


def _literal_value(node: ast.expr, filename: str) -> Any:
    """A literal (numbers, strings, None, tuples and lists of them) -- read from the syntax
    tree, never evaluated."""
    if isinstance(node, ast.Constant):
        return node.value
    if isinstance(node, ast.UnaryOp) and isinstance(node.op, ast.USub):
        v = _literal_value(node.operand, filename)
        if isinstance(v, (int, float, complex)) and not isinstance(v, bool):
            return -v
    if isinstance(node, (ast.Tuple, ast.List)):
        items = [_literal_value(e, filename) for e in node.elts]
        return tuple(items) if isinstance(node, ast.Tuple) else items
    if isinstance(node, ast.Name) and node.id in ("inf", "nan"):
        return float(node.id)
    raise _error(filename, node, f"expected a literal, found {type(node).__name__}")
