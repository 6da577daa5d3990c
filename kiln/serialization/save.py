"""Writing a module tree as TorchScript's ``.pt`` archive: ``kiln.save`` / ``kiln.serialize``.

The archive holds (under one top-level folder, ``archive/``)::

    data.pkl          the module object tree: one pickled object per module, its state a dict
                      of parameters, buffers, ``training``, attributes and submodules
    code/...          one file per qualified-name prefix with the class definitions
                      (:mod:`kiln.serialization.source`)
    constants.pkl     a tuple: the values the code names as ``CONSTANTS.cN``
    data/N            tensor storages of data.pkl, constants/N those of constants.pkl
    extra/NAME        the caller's extra files
    version           the format version (``.data/version`` from version 6 on)
    byteorder         ``little``

The version is the lowest the operators used allow (3, or the version that changed the
meaning of ``div`` (4), ``full`` (5), ``linspace`` (8), ``logspace`` (9), ``gelu`` (10)),
so an older reader loads every archive it can.  The same module gives the same bytes every
time: records in a fixed order, storages numbered in first-use order, no timestamps.
Saving to a path writes a temporary file and renames it over the target.
"""

from __future__ import annotations

import os
from collections.abc import Mapping
from typing import IO, TYPE_CHECKING, Any, Optional, Union

import torch

from kiln.errors import KilnError
from kiln.ir.graph import Graph
from kiln.ir.types import (
    TENSOR,
    BoolType,
    ClassType,
    ComplexType,
    DeviceType,
    DictType,
    EnumType,
    FloatType,
    InterfaceType,
    IntType,
    ListType,
    OptionalType,
    StrType,
    TensorType,
    TupleType,
    Type,
)
from kiln.serialization.archive import ArchiveWriter, atomic_write
from kiln.serialization.pickle import Call, PickledEnum, PickledObject, dump_pickle
from kiln.serialization.source import ClassWriter, annotation, module_members, valid_name
from kiln.serialization.tensors import TensorWriter

if TYPE_CHECKING:
    from kiln.runtime.module import ScriptModule

# Format versions at which an operator's meaning changed: an archive using it needs at least
# this version (older readers would apply the operator's upgrader to it).
OPERATOR_VERSIONS = {"aten::div": 4, "aten::div_": 4, "aten::full": 5, "aten::linspace": 8,
                     "aten::logspace": 9, "aten::gelu": 10}
BASE_VERSION = 3
_SPECIALIZED_LISTS: dict[Type, str] = {IntType: "build_intlist", FloatType: "build_doublelist",
                                        BoolType: "build_boollist"}

PathOrFile = Union[str, "os.PathLike[str]", IO[bytes]]


def serialize(module: Any, extra_files: Optional[Mapping[str, Union[str, bytes]]] = None) -> bytes:
    """The archive of ``module`` (a Kiln ScriptModule) as bytes."""
    from kiln.runtime.module import ScriptModule
    if not isinstance(module, ScriptModule):
        raise KilnError(f"kiln.save takes a Kiln module (from kiln.script, kiln.trace or kiln.load), "
                        f"got {type(module).__name__}; compile it with kiln.script first")
    classes = ClassWriter()
    classes.add_tree(module)
    classes.add_types(module)
    data = TensorWriter()
    state = _Pickler(classes, data).module(module)
    consts = TensorWriter()
    const_tuple = tuple(_constant(c, consts) for c in classes.constants)
    w = ArchiveWriter("archive")
    w.add("data.pkl", dump_pickle(state, persistent_id=data))
    for path, text in classes.files().items():
        w.add(path, text.encode("utf-8"))
    w.add("constants.pkl", dump_pickle(const_tuple, persistent_id=consts))
    for key, blob in data.records():
        w.add(key, blob)
    for key, blob in consts.records():
        w.add("constants/" + key.rpartition("/")[2], blob)
    for name, content in sorted((extra_files or {}).items()):
        if not all(valid_name(p) or _plain_file_name(p) for p in name.split("/")):
            raise KilnError(f"extra file name {name!r} is not a plain relative path")
        w.add("extra/" + name, content.encode("utf-8") if isinstance(content, str) else bytes(content))
    version = format_version(module)
    w.add(".data/version" if version >= 6 else "version", f"{version}\n".encode())
    w.add("byteorder", b"little")
    return w.finish()


def save(module: Any, f: PathOrFile, _extra_files: Optional[Mapping[str, Union[str, bytes]]] = None,
         extra_files: Optional[Mapping[str, Union[str, bytes]]] = None) -> None:
    """Write ``module``'s archive to a path (atomically) or a binary file object."""
    blob = serialize(module, extra_files if extra_files is not None else _extra_files)
    if isinstance(f, (str, os.PathLike)):
        atomic_write(f, blob)
    else:
        f.write(blob)


def format_version(module: ScriptModule) -> int:
    """The lowest format version whose readers give every operator of the tree its meaning."""
    from kiln.serialization.source import post_order
    version = BASE_VERSION
    for sm in post_order(module):
        for graph in sm._kiln_graphs.values():
            version = max(version, _graph_version(graph))
    return version


def _graph_version(graph: Graph) -> int:
    return max((OPERATOR_VERSIONS.get(n.kind, BASE_VERSION) for n in graph.all_nodes()), default=BASE_VERSION)


def _plain_file_name(part: str) -> bool:
    return bool(part) and part not in (".", "..") and all(c.isalnum() or c in "._-" for c in part)


class _Pickler:
    """Module tree -> the object tree :func:`dump_pickle` writes (see :mod:`.pickle`)."""

    def __init__(self, classes: ClassWriter, tensors: TensorWriter) -> None:
        self.classes = classes
        self.tensors = tensors
        self.done: dict[int, PickledObject] = {}

    def module(self, sm: ScriptModule) -> PickledObject:
        known = self.done.get(id(sm))
        if known is not None:
            return known        # a shared submodule is one object, pickled once
        obj = PickledObject(self.classes.qualnames[id(sm)])
        self.done[id(sm)] = obj
        state: dict[str, Any] = {}
        for m in module_members(sm):
            state[m.name] = self.module(m.value) if m.kind == "module" else self.value(m.value, m.type)
        obj.state = state
        return obj

    def tensor(self, t: torch.Tensor) -> Any:
        return self.tensors.reduce(t)     # the same tensor gives the same call: pickled once

    def value(self, v: Any, t: Type) -> Any:
        if v is None:
            return None
        if isinstance(t, OptionalType):
            return self.value(v, t.elem)
        if isinstance(t, TensorType):
            return self.tensor(v)
        if t in (IntType, FloatType, BoolType, StrType):
            return v
        if isinstance(t, EnumType):
            return PickledEnum(t.qualname, v.value)
        if isinstance(t, ClassType):
            return self.script_object(v, t)
        if t == DeviceType:
            return Call("torch", "device", (str(v),))
        if t == ComplexType:
            return Call("builtins", "complex", (v.real, v.imag))
        if isinstance(t, TupleType):
            return tuple(self.value(x, et) for x, et in zip(v, t.elems))
        if isinstance(t, ListType):
            return self.list(v, t)
        if isinstance(t, DictType):
            items = {k: self.value(x, t.value) for k, x in v.items()}
            return Call("torch.jit._pickle", "restore_type_tag", (items, annotation(t)))
        raise KilnError(f"cannot save an attribute of type {annotation(t)} (value {type(v).__name__})")

    def script_object(self, v: Any, t: ClassType) -> PickledObject:
        """A script-class object: its fields, typed as its class declares them (for an
        interface-typed value, the class of the object), and its class defined in ``code/``."""
        from kiln.ir.objects import FIELD_TYPES, ScriptClass, ScriptObject
        known = self.done.get(id(v))
        if known is not None:
            return known
        if not isinstance(v, ScriptObject):
            raise KilnError(f"cannot save a {type(v).__name__} object as {t.qualname}: only objects made by "
                            "Kiln (compiled code, kiln.script or kiln.load) can be saved")
        qualname = v._kiln_type
        record = v.__dict__.get("_kiln_class")
        fields = record.fields if isinstance(record, ScriptClass) else FIELD_TYPES.get(qualname)
        if (qualname != t.qualname and not isinstance(t, InterfaceType)) or fields is None:
            raise KilnError(f"cannot save an object of class {qualname} (declared {t.qualname}): its field "
                            "types are unknown")
        if isinstance(record, ScriptClass):
            self.classes.define_object_class(record)
        obj = self.done[id(v)] = PickledObject(qualname)
        obj.state = {f: self.value(getattr(v, f), ft) for f, ft in fields.items()}
        return obj

    def list(self, v: list[Any], t: ListType) -> Any:
        special = _SPECIALIZED_LISTS.get(t.elem)
        if special is not None:
            return Call("torch.jit._pickle", special, (list(v),))
        if t.elem == TENSOR:
            return Call("torch.jit._pickle", "build_tensorlist", ([self.tensor(x) for x in v],))
        items = [self.value(x, t.elem) for x in v]
        return Call("torch.jit._pickle", "restore_type_tag", (items, annotation(t)))


def _constant(value: Any, tensors: TensorWriter) -> Any:
    """An entry of ``constants.pkl``: tensors by storage, plain values as they are."""
    if isinstance(value, torch.Tensor):
        return tensors.reduce(value.detach())
    if isinstance(value, (bool, int, float, str, tuple, type(None))):
        return value
    if isinstance(value, torch.device):
        return Call("torch", "device", (str(value),))
    raise KilnError(f"cannot save a constant of type {type(value).__name__} in the archive's code")
