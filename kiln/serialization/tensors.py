"""Tensors and storages of TorchScript archives, both ways: the torch side of :mod:`.pickle`.

A TorchScript pickle spells a tensor as ``torch._utils._rebuild_tensor_v2`` applied to
``(storage, storage_offset, size, stride, requires_grad, OrderedDict()[, metadata])`` where the
storage is a ``BINPERSID`` of ``('storage', torch.<X>Storage, key, location, numel)`` and its bytes
are the record ``data/<key>`` (``constants/<key>`` for ``constants.pkl``).

Reading (:class:`StorageReader` as ``persistent_load``, :func:`torch_globals` as the allow-list):

* every persistent id is validated (C14): arity 5, ``'storage'``, a known storage class, a short
  key that cannot escape its folder, a location ``cpu``/``cuda[:N]``/``meta``, ``numel >= 0``;
  ``numel * itemsize`` is computed exactly, capped by ``limits.max_tensor_bytes`` (D1) and must
  equal the record's length (D2); a missing record is an error (D9);
* the bytes are copied out of the archive into a fresh, 64-byte-aligned, writable storage (D8),
  byte-swapped for ``byteorder = big`` archives (B3); one key gives one storage however many
  tensors view it, so aliasing survives (D7);
* ``_rebuild_tensor_v2`` checks the view before making it (D3-D5, C3): sizes/strides/offset are
  non-negative ints, ``len(size) == len(stride) <= limits.max_tensor_rank``, the furthest element
  lies inside the storage (an empty view may not start past its end), and the logical size is
  capped too (a stride-0 view of one element cannot claim 2**40 of them);
* only the dtypes below load; quantized, sparse, float8 and other storages raise
  :class:`UnsupportedFeature` naming the dtype (D6).

Writing (:class:`TensorWriter`): ``reduce(t)`` gives the :class:`~.pickle.Call` that pickles as
TorchScript's tensor form, with storages keyed ``0, 1, ...`` in first-seen order by storage
identity (views of one storage share one key); ``records()`` gives the storage bytes,
little-endian.
"""

from __future__ import annotations

import io
import re
import sys
from collections import OrderedDict
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any, Optional, Union, cast

import torch

from kiln.errors import (
    ArchiveError,
    ModelFormatError,
    PickleError,
    ResourceLimitExceeded,
    TensorLayoutError,
    UnsupportedFeature,
)
from kiln.serialization.limits import Limits
from kiln.serialization.pickle import Call, GlobalRef, MarkedTuple, RejectedGlobal

__all__ = [
    "LoadedStorage", "StorageClass", "StorageHandle", "StorageReader", "TensorWriter", "torch_globals",
    "STORAGE_DTYPES",
]

_DEFAULT_LIMITS = Limits()

# ``torch <X>Storage`` (X = c10's name of the scalar type) <-> dtype, for the dtypes Kiln loads.
STORAGE_DTYPES: dict[str, torch.dtype] = {
    "FloatStorage": torch.float32, "DoubleStorage": torch.float64, "HalfStorage": torch.float16,
    "BFloat16Storage": torch.bfloat16, "LongStorage": torch.int64, "IntStorage": torch.int32,
    "ShortStorage": torch.int16, "CharStorage": torch.int8, "ByteStorage": torch.uint8,
    "BoolStorage": torch.bool, "ComplexFloatStorage": torch.complex64,
    "ComplexDoubleStorage": torch.complex128,
}
_STORAGE_NAMES = {dtype: name for name, dtype in STORAGE_DTYPES.items()}

_KEY = re.compile(r"[A-Za-z0-9_][A-Za-z0-9_.\-]{0,127}")        # cannot contain '/' or start with '.'
_LOCATION = re.compile(r"(cpu|cuda(:\d{1,4})?|meta)")
_DEVICE = re.compile(r"(cpu|cuda|meta|mps|xpu|hpu)(:\d{1,4})?")   # a device *value* never touches hardware
_MAX_TYPE_TAG = 4096
_INT64_MAX = (1 << 63) - 1


def _is_int(value: Any) -> bool:
    return type(value) is int


# -- reading ---------------------------------------------------------------------------------------

@dataclass(frozen=True)
class StorageClass:
    """The allow-listed global ``torch <name>``: a storage type as data (never called)."""

    name: str
    dtype: torch.dtype

    def call(self, args: tuple[Any, ...]) -> Any:
        raise PickleError(f"storage class torch.{self.name} is not callable")


@dataclass(eq=False)
class LoadedStorage:
    """What :class:`StorageReader` returns for a persistent id: the storage and what it holds."""

    key: str
    dtype: torch.dtype
    numel: int
    location: str
    storage: torch.UntypedStorage


@dataclass
class StorageReader:
    """``persistent_load`` for TorchScript pickles: validates each storage id and loads its record.

    ``read_record(key)`` returns the bytes of ``data/<key>`` and raises if there is none.
    One of ``read_record`` and ``read_into`` must be given.
    ``read_into`` (optional, preferred when given) maps a key to ``(size, fill)``: the record's
    size, and ``fill(dest)``, which writes the record into the writable view ``dest`` of that
    size.  The storage is allocated once the size checks out, and the record read straight into
    it (for a file: no copy of the file in memory).
    ``map_location`` None keeps each storage's own location; a device (string) moves them all
    there.  ``byteorder`` is the archive's ``byteorder`` record ("little" or "big")."""

    read_record: Optional[Callable[[str], Union[bytes, bytearray, memoryview]]] = None
    read_into: Optional[Callable[[str], tuple[int, Callable[..., None]]]] = None
    # ``fill(dest, later=True)`` may fill ``dest`` later (see ArchiveReader.background_reads):
    # asked only of a storage that nothing reads before the load ends (CPU, native byte order)
    fill_later: bool = False
    map_location: Union[None, str, torch.device] = None
    byteorder: str = "little"
    limits: Limits = _DEFAULT_LIMITS
    _cache: dict[str, LoadedStorage] = field(default_factory=dict, init=False, repr=False)

    def __post_init__(self) -> None:
        if self.read_record is None and self.read_into is None:
            raise ValueError("StorageReader needs read_record or read_into")

    def __call__(self, pid: Any) -> LoadedStorage:
        if type(pid) is not tuple or len(pid) != 5:
            raise PickleError(f"persistent id must be a 5-tuple ('storage', type, key, location, numel), "
                              f"got {_describe(pid)}")
        tag, cls, key, location, numel = pid
        if type(tag) is not str or tag != "storage":
            raise PickleError(f"persistent id kind must be 'storage', got {_describe(tag)}")
        if not isinstance(cls, StorageClass):
            raise PickleError(f"persistent id storage type must be a torch.<X>Storage class, "
                              f"got {_describe(cls)}")
        if type(key) is not str or not _KEY.fullmatch(key):
            raise PickleError(f"storage key {_describe(key)} is not a plain record name")
        device = self._device(location)
        if not _is_int(numel) or numel < 0:
            raise TensorLayoutError(f"storage {key}: element count {_describe(numel)} is not an int >= 0")
        cached = self._cache.get(key)
        if cached is not None:
            if (cached.dtype, cached.numel, cached.location) != (cls.dtype, numel, location):
                raise TensorLayoutError(f"storage {key} is declared twice with different types or sizes")
            return cached
        loaded = LoadedStorage(key, cls.dtype, numel, location, self._load(key, cls.dtype, numel, device))
        self._cache[key] = loaded
        return loaded

    def _device(self, location: Any) -> torch.device:
        """The device a storage goes to: its checked archive location, or ``map_location``."""
        if type(location) is not str or not _LOCATION.fullmatch(location):
            raise PickleError(f"storage location {_describe(location)} is not cpu, cuda[:N] or meta")
        target = location if self.map_location is None else str(self.map_location)
        if not _LOCATION.fullmatch(target):
            raise UnsupportedFeature(f"map_location {target!r} is not cpu, cuda[:N] or meta")
        device = torch.device(target)
        if device.type == "cuda":
            index = device.index or 0
            if not torch.cuda.is_available() or index >= torch.cuda.device_count():
                raise UnsupportedFeature(f"storage location {target!r} needs a CUDA device this machine "
                                         "lacks; load with map_location='cpu'")
        return device

    def _load(self, key: str, dtype: torch.dtype, numel: int, device: torch.device) -> torch.UntypedStorage:
        itemsize = _itemsize(dtype)
        nbytes = numel * itemsize              # Python ints: no wrap-around (D1)
        if nbytes > self.limits.max_tensor_bytes:
            raise ResourceLimitExceeded(f"storage {key}: {numel} elements of {dtype} are {nbytes} bytes, "
                                        f"over limits.max_tensor_bytes = {self.limits.max_tensor_bytes}")
        if self.byteorder not in ("little", "big"):
            raise UnsupportedFeature(f"byte order {self.byteorder!r} (expected 'little' or 'big')")
        # A copy: writable, aligned, and independent of the archive buffer (D8).
        if self.read_into is not None:
            size, fill = self._reader(key)
            self._check_size(key, numel, dtype, nbytes, size)
            if device.type == "meta":
                return torch.empty(nbytes, dtype=torch.uint8, device="meta").untyped_storage()
            data = torch.empty(nbytes, dtype=torch.uint8)
            if nbytes:
                view = _writable_view(data)
                if view is not None and self.fill_later and device.type == "cpu" and \
                        self.byteorder == sys.byteorder:
                    fill(view, later=True)
                elif view is not None:
                    fill(view)
                else:
                    staging = bytearray(nbytes)
                    fill(memoryview(staging))
                    data.copy_(torch.frombuffer(staging, dtype=torch.uint8))
        else:
            record = self._read(key)
            self._check_size(key, numel, dtype, nbytes, len(record))
            if device.type == "meta":
                return torch.empty(nbytes, dtype=torch.uint8, device="meta").untyped_storage()
            storage = torch.UntypedStorage.from_buffer(record, dtype=torch.uint8) if nbytes else \
                torch.empty(0, dtype=torch.uint8).untyped_storage()
            data = torch.empty(0, dtype=torch.uint8).set_(storage)
        if self.byteorder != sys.byteorder:
            _byteswap(data, dtype)
        return data.to(device).untyped_storage()

    @staticmethod
    def _check_size(key: str, numel: int, dtype: torch.dtype, nbytes: int, found: int) -> None:
        if found != nbytes:
            raise TensorLayoutError(f"storage {key}: {numel} elements of {dtype} need {nbytes} bytes but "
                                    f"record data/{key} has {found}")

    def _reader(self, key: str) -> tuple[int, Callable[..., None]]:
        assert self.read_into is not None
        found = _call_reader(self.read_into, key)
        if type(found) is not tuple or len(found) != 2 or type(found[0]) is not int or not callable(found[1]):
            raise ArchiveError(f"storage record data/{key}: reader returned {type(found).__name__}")
        return found

    def _read(self, key: str) -> memoryview:
        assert self.read_record is not None
        record = _call_reader(self.read_record, key)
        if not isinstance(record, (bytes, bytearray, memoryview)):
            raise ArchiveError(f"storage record data/{key}: reader returned {type(record).__name__}")
        return memoryview(record).cast("B")


def _call_reader(reader: Callable[[str], Any], key: str) -> Any:
    """The caller's record reader: a missing record must not escape as a KeyError."""
    try:
        return reader(key)
    except ModelFormatError:
        raise
    except Exception as e:
        raise ArchiveError(f"storage record data/{key} is missing or unreadable "
                           f"({type(e).__name__}: {e})") from e


def _writable_view(data: torch.Tensor) -> Optional[memoryview]:
    """The memory of a contiguous CPU uint8 tensor as a writable memoryview (valid while the
    tensor lives), through NumPy; None where NumPy is missing (torch does not require it)."""
    try:
        return memoryview(cast(Any, data.numpy()))
    except (RuntimeError, TypeError, ImportError):
        return None


def _byteswap(data: torch.Tensor, dtype: torch.dtype) -> None:
    """Reverse the bytes of each element (of each component, for complex numbers) in place."""
    width = _itemsize(dtype) // (2 if dtype.is_complex else 1)
    if width > 1 and data.numel():
        rows = data.view(-1, width)
        rows.copy_(rows.flip(1))


def _itemsize(dtype: torch.dtype) -> int:
    return dtype.itemsize


def _describe(value: Any) -> str:
    """A short, safe description of an archive value for a message (no huge reprs)."""
    if value is None or type(value) in (bool, int, float):
        text = repr(value)
        return text if len(text) <= 40 else text[:40] + "..."
    if type(value) is str:
        return repr(value if len(value) <= 40 else value[:40] + "...")
    return f"a {type(value).__name__}"


class RebuildTensor:
    """``torch._utils._rebuild_tensor_v2``: a checked view of a loaded storage."""

    def __init__(self, limits: Limits) -> None:
        self.limits = limits

    def call(self, args: tuple[Any, ...]) -> torch.Tensor:
        if len(args) not in (6, 7):
            raise PickleError(f"_rebuild_tensor_v2 takes 6 or 7 arguments, got {len(args)}")
        storage, offset, size, stride, requires_grad, hooks = args[:6]
        metadata = args[6] if len(args) == 7 else None
        if not isinstance(storage, LoadedStorage):
            raise PickleError(f"_rebuild_tensor_v2 storage is {_describe(storage)}, not a persistent storage")
        if type(requires_grad) is not bool:
            raise PickleError(f"_rebuild_tensor_v2 requires_grad is {_describe(requires_grad)}, not a bool")
        if type(hooks) is not OrderedDict or hooks:
            raise UnsupportedFeature("tensors with backward hooks are not supported")
        self._check_layout(storage, offset, size, stride)
        t = torch.empty(0, dtype=storage.dtype, device=storage.storage.device)
        t.set_(storage.storage, offset, size, stride)
        t = _apply_metadata(t, metadata)
        if requires_grad:
            if not (t.is_floating_point() or t.is_complex()):
                raise TensorLayoutError(f"a {t.dtype} tensor cannot require grad")
            t.requires_grad_(True)
        return t

    def _check_layout(self, storage: LoadedStorage, offset: Any, size: Any, stride: Any) -> None:
        key = storage.key
        if type(size) is not tuple or type(stride) is not tuple:
            raise TensorLayoutError(f"tensor of storage {key}: size and stride must be tuples")
        if len(size) != len(stride):
            raise TensorLayoutError(f"tensor of storage {key}: size has {len(size)} dims, "
                                    f"stride {len(stride)}")
        if len(size) > self.limits.max_tensor_rank:
            raise ResourceLimitExceeded(f"tensor of storage {key}: rank {len(size)} over "
                                        f"limits.max_tensor_rank = {self.limits.max_tensor_rank}")
        for what, values in (("size", size), ("stride", stride), ("storage offset", (offset,))):
            if not all(_is_int(v) and 0 <= v <= _INT64_MAX for v in values):
                raise TensorLayoutError(f"tensor of storage {key}: {what} {_describe_tuple(values)} must be "
                                        "ints in [0, 2**63)")
        self._check_bounds(storage, offset, size, stride)

    def _check_bounds(self, storage: LoadedStorage, offset: int, size: tuple[int, ...],
                      stride: tuple[int, ...]) -> None:
        key, numel = storage.key, storage.numel
        if 0 in size:
            if offset > numel:
                raise TensorLayoutError(f"empty tensor of storage {key} starts at {offset}, "
                                        f"past its end ({numel})")
            return
        last = offset + sum((n - 1) * s for n, s in zip(size, stride))
        if last >= numel:
            raise TensorLayoutError(f"tensor of storage {key}: size {size} stride {stride} offset {offset} "
                                    f"reaches element {last}, out of bounds for storage of {numel} elements")
        logical = 1
        for n in size:
            logical *= n
        if logical * _itemsize(storage.dtype) > self.limits.max_tensor_bytes:
            raise ResourceLimitExceeded(f"tensor of storage {key}: {logical} elements exceed "
                                        f"limits.max_tensor_bytes = {self.limits.max_tensor_bytes}")


def _describe_tuple(values: Any) -> str:
    if type(values) is tuple and len(values) <= 8:
        return "(" + ", ".join(_describe(v) for v in values) + ")"
    return _describe(values)


def _apply_metadata(t: torch.Tensor, metadata: Any) -> torch.Tensor:
    """TorchScript's 7th argument: ``{'conj': True}`` / ``{'neg': True}`` view bits."""
    if metadata is None:
        return t
    if type(metadata) is not dict or not all(type(k) is str and type(v) is bool for k, v in metadata.items()):
        raise PickleError("_rebuild_tensor_v2 metadata must be a dict of str -> bool")
    unknown = set(metadata) - {"conj", "neg"}
    if unknown:
        raise UnsupportedFeature(f"tensor metadata {sorted(unknown)[:4]} is not supported")
    if metadata.get("conj"):
        if not t.is_complex():
            raise TensorLayoutError(f"conjugate bit on a {t.dtype} tensor")
        t = t.conj()
    if metadata.get("neg"):
        t = torch._neg_view(t)
    return t


class BuildList:
    """``torch.jit._pickle.build_<kind>list``: a typed list, checked element by element."""

    def __init__(self, name: str, check: Callable[[Any], bool]) -> None:
        self.name = name
        self.check = check

    def call(self, args: tuple[Any, ...]) -> list[Any]:
        if len(args) != 1 or type(args[0]) is not list:
            raise PickleError(f"{self.name} takes one list")
        items = args[0]
        if not all(self.check(x) for x in items):
            bad = next(x for x in items if not self.check(x))
            raise PickleError(f"{self.name} got an element of type {type(bad).__name__}")
        return items


class RestoreTypeTag:
    """``torch.jit._pickle.restore_type_tag``: returns the list/dict; remembers its type string
    (e.g. ``Dict[str, float]``) for :meth:`tag_of`, since an empty container carries no other
    clue to its element types."""

    def __init__(self) -> None:
        self.tags: dict[int, tuple[Any, str]] = {}

    def call(self, args: tuple[Any, ...]) -> Any:
        if len(args) != 2 or type(args[0]) not in (list, dict) or type(args[1]) is not str:
            raise PickleError("restore_type_tag takes a list or dict and a type string")
        container, tag = args
        if len(tag) > _MAX_TYPE_TAG:
            raise ResourceLimitExceeded(f"type tag of {len(tag)} characters")
        self.tags[id(container)] = (container, tag)
        return container

    def tag_of(self, container: Any) -> Optional[str]:
        entry = self.tags.get(id(container))
        return entry[1] if entry is not None and entry[0] is container else None


class _OrderedDict:
    """``collections.OrderedDict``, only as ``OrderedDict()`` (a tensor's empty backward hooks)."""

    def call(self, args: tuple[Any, ...]) -> OrderedDict[Any, Any]:
        if args:
            raise UnsupportedFeature("collections.OrderedDict with arguments "
                                     "(only empty backward hooks are supported)")
        return OrderedDict()


class _Device:
    """``torch.device(str)`` for a device-typed attribute; the string is validated first."""

    def call(self, args: tuple[Any, ...]) -> torch.device:
        if len(args) != 1 or type(args[0]) is not str or not _DEVICE.fullmatch(args[0]):
            raise PickleError(f"torch.device takes one device string such as 'cpu' or 'cuda:0', got "
                              f"{_describe_tuple(args)}")
        return torch.device(args[0])


class _Complex:
    """``builtins.complex(real, imag)``."""

    def call(self, args: tuple[Any, ...]) -> complex:
        if len(args) != 2 or not all(type(a) in (int, float) for a in args):
            raise PickleError(f"complex takes two numbers, got {_describe_tuple(args)}")
        return complex(args[0], args[1])


_UNSUPPORTED_FUNCTIONS = {
    "_rebuild_qtensor": "quantized tensors", "_rebuild_sparse_tensor": "sparse tensors",
    "_rebuild_sparse_csr_tensor": "sparse tensors", "_rebuild_mkldnn_tensor": "MKL-DNN tensors",
    "_rebuild_nested_tensor": "nested tensors", "_rebuild_wrapper_subclass": "tensor subclasses",
}


class GlobalTable(dict[tuple[str, str], Any]):
    """The allow-list.  Any other ``torch <X>Storage`` resolves to a :class:`RejectedGlobal`, so an
    unknown or unsupported storage type is reported as UnsupportedFeature naming its dtype."""

    def __missing__(self, key: tuple[str, str]) -> Any:
        module, name = key
        if module == "torch" and name.endswith("Storage") and len(name) < 64:
            return RejectedGlobal(UnsupportedFeature, f"storage type torch.{name} (dtype {name[:-7] or '?'}) "
                                                      "is not supported")
        raise KeyError(key)

    @property
    def type_tags(self) -> RestoreTypeTag:
        """The ``restore_type_tag`` global, whose :meth:`~RestoreTypeTag.tag_of` gives a loaded
        container's TorchScript type string."""
        tags: RestoreTypeTag = self[("torch.jit._pickle", "restore_type_tag")]
        return tags


def torch_globals(storages: StorageReader) -> GlobalTable:
    """The allow-list Kiln loads TorchScript pickles with (see the module docstring).

    ``storages`` supplies the limits; the persistent ids themselves go to it as
    ``persistent_load``."""
    table = GlobalTable({
        ("torch._utils", "_rebuild_tensor_v2"): RebuildTensor(storages.limits),
        ("collections", "OrderedDict"): _OrderedDict(),
        ("torch.jit._pickle", "build_intlist"): BuildList("build_intlist", _is_int),
        ("torch.jit._pickle", "build_doublelist"): BuildList("build_doublelist", lambda x: type(x) is float),
        ("torch.jit._pickle", "build_boollist"): BuildList("build_boollist", lambda x: type(x) is bool),
        ("torch.jit._pickle", "build_tensorlist"):
            BuildList("build_tensorlist", lambda x: isinstance(x, torch.Tensor)),
        ("torch.jit._pickle", "restore_type_tag"): RestoreTypeTag(),
        ("torch", "device"): _Device(),
        ("builtins", "complex"): _Complex(),
    })
    for name, dtype in STORAGE_DTYPES.items():
        table[("torch", name)] = StorageClass(name, dtype)
    for name, what in _UNSUPPORTED_FUNCTIONS.items():
        table[("torch._utils", name)] = RejectedGlobal(UnsupportedFeature, f"{what} (torch._utils.{name}) "
                                                                           "are not supported")
    return table


# -- writing ---------------------------------------------------------------------------------------

@dataclass(eq=False)
class StorageHandle:
    """A storage to write: what :meth:`TensorWriter.reduce` puts where the persistent id goes."""

    key: str
    dtype: torch.dtype
    location: str
    numel: int
    storage: torch.UntypedStorage


class TensorWriter:
    """``persistent_id`` for :func:`~.pickle.dump_pickle`, and the storages it collected.

    Use ``reduce(t)`` for every tensor of the object tree (the same tensor gives the same
    :class:`~.pickle.Call`, so it is pickled once), pass the writer as ``persistent_id`` and then
    write ``records()``."""

    def __init__(self) -> None:
        self._handles: list[StorageHandle] = []
        self._by_storage: dict[tuple[int, str, int], StorageHandle] = {}
        self._calls: dict[int, tuple[torch.Tensor, Call]] = {}

    def __call__(self, obj: Any) -> Optional[tuple[Any, ...]]:
        if not isinstance(obj, StorageHandle):
            return None
        index = int(obj.key)
        if index >= len(self._handles) or self._handles[index] is not obj:
            return None     # a storage of another writer: dump_pickle then refuses it
        return ("storage", GlobalRef("torch", _STORAGE_NAMES[obj.dtype]), obj.key, obj.location, obj.numel)

    def reduce(self, t: torch.Tensor) -> Call:
        """The ``_rebuild_tensor_v2`` call that pickles ``t`` (its data, layout, requires_grad)."""
        known = self._calls.get(id(t))
        if known is not None:
            return known[1]
        handle = self._storage_of(t)
        args: list[Any] = [handle, t.storage_offset(), MarkedTuple(t.shape), MarkedTuple(t.stride()),
                           t.requires_grad, Call("collections", "OrderedDict", ())]
        metadata = {name: True for name, on in (("conj", t.is_conj()), ("neg", t.is_neg())) if on}
        if metadata:
            args.append(Call("torch.jit._pickle", "restore_type_tag", (metadata, "Dict[str, bool]")))
        call = Call("torch._utils", "_rebuild_tensor_v2", MarkedTuple(args), memoize=True)
        self._calls[id(t)] = (t, call)
        return call

    def _storage_of(self, t: torch.Tensor) -> StorageHandle:
        if not isinstance(t, torch.Tensor) or t.layout != torch.strided or t.is_quantized or t.is_nested:
            raise UnsupportedFeature(f"cannot save a {type(t).__name__} with layout "
                                     f"{getattr(t, 'layout', '?')}")
        if t.dtype not in _STORAGE_NAMES:
            raise UnsupportedFeature(f"cannot save a tensor of dtype {t.dtype}")
        if t.device.type == "meta":
            raise UnsupportedFeature("cannot save a meta tensor (it has no data)")
        storage = t.untyped_storage()
        nbytes, itemsize = storage.nbytes(), t.element_size()
        if nbytes % itemsize:
            raise UnsupportedFeature(f"storage of {nbytes} bytes is not a whole number of {t.dtype} elements")
        identity = (storage.data_ptr(), str(t.device), nbytes)
        handle = self._by_storage.get(identity) if nbytes else None
        if handle is None:
            key = str(len(self._handles))
            handle = StorageHandle(key, t.dtype, str(t.device), nbytes // itemsize, storage)
            self._handles.append(handle)
            self._by_storage[identity] = handle
        elif handle.dtype != t.dtype:
            raise UnsupportedFeature(f"tensors of dtypes {handle.dtype} and {t.dtype} share one storage, "
                                     "which TorchScript's format cannot express")
        return handle

    def records(self) -> list[tuple[str, bytes]]:
        """``[("data/0", bytes), ...]``: each storage's bytes, little-endian, in key order."""
        return [(f"data/{h.key}", _storage_bytes(h.storage, h.dtype)) for h in self._handles]


def _storage_bytes(storage: torch.UntypedStorage, dtype: torch.dtype) -> bytes:
    """A storage's bytes via the CPU, little-endian.  ``_write_file`` is the raw writer torch.save
    uses; given the element size it swaps to little-endian on big-endian hosts (complex numbers
    are swapped per component)."""
    element = _itemsize(dtype) // (2 if dtype.is_complex else 1)
    out = io.BytesIO()
    data = torch.empty(0, dtype=torch.uint8, device=storage.device).set_(storage).cpu()
    raw: Any = data.untyped_storage()     # _write_file is untyped in torch's stubs
    raw._write_file(out, False, False, element)
    return out.getvalue()

