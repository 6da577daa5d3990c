"""Tensors and storages in TorchScript pickles (kiln/serialization/tensors.py).

Round trips of every supported dtype and layout through TensorWriter + dump_pickle and back
through load_pickle + torch_globals, bit-exact and with aliasing kept; real torch.jit.save
archives loaded (and re-pickled byte for byte); and the tensor rows of ../shared/SECURITY.md
section 7.D (D1-D10) plus C3 (hostile rebuild arguments), C4 on tensors and C14 (bad
persistent ids), each raising the right error class.
"""

from __future__ import annotations

import io
import struct
import zipfile
from collections import OrderedDict
from enum import Enum
from typing import Any, Optional

import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st

from kiln.errors import (
    ArchiveError,
    ModelFormatError,
    PickleError,
    ResourceLimitExceeded,
    TensorLayoutError,
    UnsupportedFeature,
)
from kiln.serialization.limits import Limits
from kiln.serialization.pickle import (
    Call,
    GlobalRef,
    MarkedTuple,
    PickledEnum,
    PickledObject,
    dump_pickle,
    load_pickle,
)
from kiln.serialization.tensors import (
    LoadedStorage,
    StorageReader,
    TensorWriter,
    torch_globals,
)

RECORD = "archive/data.pkl"
DEFAULT_LIMITS = Limits()
SUPPORTED = [torch.float32, torch.float64, torch.float16, torch.bfloat16, torch.int8, torch.int16,
             torch.int32, torch.int64, torch.uint8, torch.bool, torch.complex64, torch.complex128]


def save(tree: Any, **kw: Any) -> tuple[bytes, dict[str, bytes]]:
    writer = TensorWriter()
    converted = _convert(tree, writer)
    data = dump_pickle(converted, persistent_id=writer, **kw)
    return data, dict(writer.records())


def _convert(v: Any, writer: TensorWriter) -> Any:
    if isinstance(v, torch.Tensor):
        return writer.reduce(v)
    if isinstance(v, list):
        return [_convert(x, writer) for x in v]
    if isinstance(v, tuple):
        return tuple(_convert(x, writer) for x in v)
    if isinstance(v, dict):
        return {k: _convert(x, writer) for k, x in v.items()}
    return v


def load(data: bytes, records: dict[str, bytes], limits: Limits = DEFAULT_LIMITS, **kw: Any) -> Any:
    storages = StorageReader(read_record=lambda k: records[f"data/{k}"], limits=limits, **kw)
    return load_pickle(data, record=RECORD, globals=torch_globals(storages), persistent_load=storages,
                       limits=limits)


def roundtrip(tree: Any, **kw: Any) -> Any:
    return load(*save(tree), **kw)


def bits(t: torch.Tensor) -> bytes:
    """The exact bytes of a tensor's elements, in logical order."""
    flat = t.detach().resolve_conj().resolve_neg().reshape(-1).contiguous()
    return bytes(flat.view(torch.uint8).tolist()) if flat.numel() else b""


def assert_identical(a: torch.Tensor, b: torch.Tensor) -> None:
    assert a.dtype == b.dtype and a.shape == b.shape and a.stride() == b.stride()
    assert a.storage_offset() == b.storage_offset() and a.requires_grad == b.requires_grad
    assert a.is_conj() == b.is_conj() and a.is_neg() == b.is_neg()
    assert bits(a) == bits(b)


def special_values(dtype: torch.dtype) -> torch.Tensor:
    """Values that a lossy path would change: NaN payloads, +-inf, -0.0, denormals, extremes."""
    if dtype == torch.float32:
        raw = [0x7FC00001, 0xFFC00123, 0x7FA00000, 0x7F800000, 0xFF800000, 0x80000000, 0x00000001, 0x007FFFFF,
               0x3F800000]
        return torch.tensor(raw, dtype=torch.int64).to(torch.int32).view(torch.float32)
    if dtype == torch.float64:
        raw = [0x7FF8000000000001, 0x7FF4000000000000, 0x7FF0000000000000, 0x0000000000000001, 0x3FF0000000000000]
        return torch.tensor(raw, dtype=torch.int64).view(torch.float64)
    if dtype in (torch.float16, torch.bfloat16):
        raw = [0x7E01, 0xFE02, 0x7C00, 0xFC00, 0x8000, 0x0001, 0x03FF, 0x7BFF, 0x3C00]
        return torch.tensor(raw, dtype=torch.int32).to(torch.int16).view(dtype)
    if dtype.is_complex:
        part = special_values(torch.float32 if dtype == torch.complex64 else torch.float64)
        return torch.view_as_complex(torch.stack([part, part.flip(0)], -1).contiguous())
    if dtype == torch.bool:
        return torch.tensor([True, False, True, True])
    info = torch.iinfo(dtype)
    return torch.tensor([info.min, info.max, 0, 1, -1 if info.min < 0 else 2], dtype=dtype)


# -- round trips -------------------------------------------------------------------------------------

@pytest.mark.parametrize("dtype", SUPPORTED, ids=str)
def test_every_dtype_bit_exact(dtype: torch.dtype) -> None:
    t = special_values(dtype)
    views = [t, t[1:], t[::2], t[3], t[:0], t.view(1, -1).expand(3, -1)]
    loaded = roundtrip(views)
    for a, b in zip(views, loaded):
        assert_identical(a, b)
    # all views share the one storage (D7)
    assert len({x.untyped_storage().data_ptr() for x in loaded}) == 1


def test_layouts_and_aliasing() -> None:
    base = torch.arange(24.0).view(4, 6)
    tree = {"base": base, "t": base.t(), "slice": base[1:, 2::2], "row": base[2], "scalar": torch.tensor(3.5),
            "empty": torch.empty(0, 3), "other": torch.ones(2, 2, dtype=torch.int64)}
    y = roundtrip(tree)
    for k in tree:
        assert_identical(tree[k], y[k])
    assert y["slice"].storage_offset() == 8
    y["base"][1, 2] = -7.0                      # mutation through one view shows in the others
    assert y["slice"][0, 0] == -7.0 and y["t"][2, 1] == -7.0
    assert y["other"].untyped_storage().data_ptr() != y["base"].untyped_storage().data_ptr()


def test_same_tensor_twice_is_one_object() -> None:
    w = torch.randn(3)
    y = roundtrip([w, w, {"tied": w}])
    assert y[0] is y[1] is y[2]["tied"]


def test_requires_grad_and_conj_neg_bits() -> None:
    p = torch.nn.Parameter(torch.randn(2, 3))
    c = torch.randn(3, dtype=torch.complex64).conj()
    n = torch._neg_view(torch.randn(3))
    y = roundtrip([p, c, n])
    assert_identical(p, y[0])
    assert y[0].is_leaf and y[0].requires_grad
    assert_identical(c, y[1])
    assert_identical(n, y[2])
    assert torch.equal(c.resolve_conj(), y[1].resolve_conj())


def test_records_keys_and_determinism() -> None:
    a, b = torch.arange(4, dtype=torch.int32), torch.ones(2)
    tree = [b, a, b[1:], a]
    data1, rec1 = save(tree)
    data2, rec2 = save(tree)
    assert data1 == data2 and rec1 == rec2
    assert list(rec1) == ["data/0", "data/1"]
    assert rec1["data/0"] == struct.pack("<2f", 1.0, 1.0)
    assert rec1["data/1"] == struct.pack("<4i", 0, 1, 2, 3)
    assert data1.count(b"Q") == 2 and data1.count(b"FloatStorage") == 1


def test_writer_refuses_what_the_format_cannot_hold() -> None:
    writer = TensorWriter()
    with pytest.raises(UnsupportedFeature):
        writer.reduce(torch.empty(2, device="meta"))
    with pytest.raises(UnsupportedFeature):
        writer.reduce(torch.ones(2).to_sparse())
    with pytest.raises(UnsupportedFeature):
        writer.reduce(torch.ones(2, dtype=torch.uint16))
    x = torch.arange(4, dtype=torch.int32)
    writer.reduce(x)
    with pytest.raises(UnsupportedFeature, match="share one storage"):
        writer.reduce(x.view(torch.float32))


def test_storage_of_another_writer_is_refused() -> None:
    first, second = TensorWriter(), TensorWriter()
    second.reduce(torch.ones(1))
    call = first.reduce(torch.ones(2))
    with pytest.raises(PickleError, match="StorageHandle"):
        dump_pickle(call, persistent_id=second)


def test_big_endian_archives_are_swapped_on_load() -> None:
    tensors = [special_values(d) for d in SUPPORTED]
    data, records = save(tensors)
    swapped = {}
    for (key, blob), t in zip(records.items(), tensors):
        width = t.element_size() // (2 if t.is_complex() else 1)
        swapped[key] = b"".join(blob[i:i + width][::-1] for i in range(0, len(blob), width))
    y = load(data, swapped, byteorder="big")
    for a, b in zip(tensors, y):
        assert_identical(a, b)
    with pytest.raises(UnsupportedFeature):
        load(data, records, byteorder="middle")


def test_loaded_tensors_are_copies() -> None:
    data, records = save([torch.arange(4.0)])
    buf = bytearray(records["data/0"])
    y = load(data, {"data/0": memoryview(buf)})
    buf[:4] = b"\xff\xff\xff\xff"
    assert y[0][0] == 0.0
    y[0][1] = 5.0                                 # writable
    assert y[0].untyped_storage().data_ptr() % 16 == 0


@settings(max_examples=60, deadline=None)
@given(st.sampled_from(SUPPORTED), st.lists(st.integers(0, 4), min_size=0, max_size=3),
       st.integers(0, 3), st.booleans())
def test_property_roundtrip(dtype: torch.dtype, shape: list[int], offset: int, transpose: bool) -> None:
    n = 1
    for s in shape:
        n *= s
    base = torch.randn(n + offset).to(dtype) if dtype != torch.bool else torch.rand(n + offset) > 0.5
    t = base[offset:].view(shape)
    if transpose and t.dim() >= 2:
        t = t.transpose(0, 1)
    y = roundtrip([t, base])
    assert_identical(t, y[0])
    assert_identical(base, y[1])
    assert y[0].untyped_storage().data_ptr() == y[1].untyped_storage().data_ptr()


# -- real TorchScript archives ---------------------------------------------------------------------

class _Recorder:
    """Wraps an allow-listed global to remember which call made each container (test only)."""

    def __init__(self, inner: Any, key: tuple[str, str], made: dict[int, Any]) -> None:
        self.inner, self.key, self.made = inner, key, made

    def call(self, args: tuple[Any, ...]) -> Any:
        result = self.inner.call(args)
        self.made[id(result)] = (result, self.key, args)
        return result


def _load_archive_record(z: zipfile.ZipFile, prefix: str, record: str, folder: str) -> tuple[Any, dict[int, Any]]:
    storages = StorageReader(read_record=lambda k: z.read(f"{prefix}/{folder}/{k}"))
    table = torch_globals(storages)
    made: dict[int, Any] = {}
    for key in list(table):
        if key[0] in ("torch.jit._pickle", "builtins") or key == ("torch", "device"):
            table[key] = _Recorder(table[key], key, made)
    value = load_pickle(z.read(f"{prefix}/{record}"), record=record, globals=table, persistent_load=storages)
    return value, made


def _repickle(root: Any, made: dict[int, Any], modules: set[str]) -> tuple[bytes, list[tuple[str, bytes]]]:
    """Loaded tree -> the writer's input, the way a saver spells each TorchScript value."""
    writer = TensorWriter()
    devices: dict[str, Call] = {}
    done: dict[int, Any] = {}

    def conv(v: Any) -> Any:
        if id(v) not in done:
            done[id(v)] = conv1(v)
        return done[id(v)]

    def conv1(v: Any) -> Any:
        if isinstance(v, torch.Tensor):
            return writer.reduce(v)
        if isinstance(v, PickledObject):
            return PickledObject(v.qualname, conv(v.state))
        if isinstance(v, torch.device):
            return devices.setdefault(str(v), Call("torch", "device", (str(v),), memoize=True))
        if isinstance(v, complex):
            return Call("builtins", "complex", (v.real, v.imag))
        rec = made.get(id(v))
        if isinstance(v, (list, dict)):
            items = [conv(x) for x in v] if isinstance(v, list) else {conv(k): conv(x) for k, x in v.items()}
            if rec is None:
                return items
            return Call(*rec[1], (items, rec[2][1]) if rec[1][1] == "restore_type_tag" else (items,))
        if isinstance(v, tuple):
            return tuple(conv(x) for x in v)
        return v

    data = dump_pickle(conv(root), persistent_id=writer,
                       memoize=lambda v: isinstance(v, PickledObject) and v.qualname in modules)
    return data, writer.records()


class Color(Enum):
    RED = 1
    GREEN = 2


class Sub(torch.nn.Module):
    def __init__(self) -> None:
        super().__init__()
        self.lin = torch.nn.Linear(3, 2)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.lin(x)


class Everything(torch.nn.Module):
    """A module with an attribute of each kind TorchScript pickles (attribute types below)."""

    def __init__(self) -> None:
        super().__init__()
        self.sub = Sub()
        w = torch.randn(4, 4)
        self.register_buffer("buf", w)
        self.register_buffer("view", w[1:, ::2])
        self.register_buffer("h16", torch.randn(3).half())
        self.register_buffer("cplx", torch.randn(3, dtype=torch.complex64).conj())
        self.register_buffer("exp", torch.ones(1).expand(5))
        self.ints = [1, 2, 3]
        self.d = {"a": 1.0, "b": -0.0}
        self.empty = []
        self.opt = None
        self.names = ["x", "x", "cpu"]
        self.tensors = [torch.zeros(2), torch.arange(3)]
        self.dev = torch.device("cpu")
        self.c = complex(1, 2)
        self.tup = (1, "s", 2.5, True)
        self.color = Color.GREEN
        self.big = 2**40

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        y = self.sub(x) + self.buf.sum() + self.view.sum() + self.h16.float().sum() + self.exp.sum()
        y = y + self.cplx.real.sum() + self.ints[0] + self.d["a"] + len(self.empty) + len(self.names)
        y = y + self.tensors[0].sum() + self.tup[0] + float(self.color.value) + self.big
        opt = self.opt
        if opt is not None:
            y = y + opt
        return y + float(self.dev.type == "cpu") + float(abs(self.c))


# Real typing objects, not the strings `from __future__ import annotations` would leave here.
Everything.__annotations__ = {
    "ints": list[int], "d": dict[str, float], "empty": list[int], "opt": Optional[int], "names": list[str],
    "tensors": list[torch.Tensor], "tup": tuple[int, str, float, bool],
}


def _scripted_module(jit: Any) -> Any:
    return jit.script(Everything())


def test_real_archive_loads_and_repickles_byte_for_byte(jit: Any) -> None:
    m = _scripted_module(jit)
    buf = io.BytesIO()
    jit.save(m, buf)
    z = zipfile.ZipFile(io.BytesIO(buf.getvalue()))
    prefix = z.namelist()[0].split("/")[0]
    root, made = _load_archive_record(z, prefix, "data.pkl", "data")
    s = root.state
    assert root.qualname.startswith("__torch__.") and isinstance(s["sub"], PickledObject)
    for name, value in list(m.named_parameters()) + list(m.named_buffers()):
        obj = root
        for part in name.split("."):
            obj = obj.state[part] if isinstance(obj, PickledObject) else obj[part]
        assert_identical(value, obj)
    assert s["view"].untyped_storage().data_ptr() == s["buf"].untyped_storage().data_ptr()
    assert s["ints"] == [1, 2, 3] and s["empty"] == [] and s["opt"] is None
    assert s["d"] == {"a": 1.0, "b": -0.0} and struct.pack(">d", s["d"]["b"]) == struct.pack(">d", -0.0)
    assert s["names"] == ["x", "x", "cpu"] and s["dev"] == torch.device("cpu") and s["c"] == 1 + 2j
    assert s["tup"] == (1, "s", 2.5, True) and s["big"] == 2**40
    assert isinstance(s["color"], PickledEnum) and s["color"].value == 2
    assert [torch.equal(a, b) for a, b in zip(s["tensors"], m.tensors)] == [True, True]
    table_tags = [rec[2][1] for rec in made.values() if rec[1][1] == "restore_type_tag"]
    assert "Dict[str, float]" in table_tags and "List[str]" in table_tags
    # Writing the loaded tree back in TorchScript's spelling gives TorchScript's bytes.
    modules = {v.qualname for v in (root, s["sub"], s["sub"].state["lin"])}
    data, records = _repickle(root, made, modules)
    assert data == z.read(f"{prefix}/data.pkl")
    for key, blob in records:
        assert blob == z.read(f"{prefix}/{key}")
    consts, _ = _load_archive_record(z, prefix, "constants.pkl", "constants")
    assert consts == ()


@pytest.mark.filterwarnings("ignore::torch.jit.TracerWarning")
def test_real_traced_constants(jit: Any) -> None:
    class T(torch.nn.Module):
        def forward(self, x: torch.Tensor) -> torch.Tensor:
            return x + torch.tensor([1.0, 2.0, 3.0])

    buf = io.BytesIO()
    jit.save(jit.trace(T(), (torch.ones(3),)), buf)
    z = zipfile.ZipFile(io.BytesIO(buf.getvalue()))
    prefix = z.namelist()[0].split("/")[0]
    consts, made = _load_archive_record(z, prefix, "constants.pkl", "constants")
    assert isinstance(consts, tuple) and len(consts) == 1 and torch.equal(consts[0], torch.tensor([1.0, 2.0, 3.0]))
    data, records = _repickle(consts, made, set())
    assert data == z.read(f"{prefix}/constants.pkl")
    assert [(k.replace("data/", "constants/"), b) for k, b in records] == \
        [("constants/0", z.read(f"{prefix}/constants/0"))]


def test_kiln_written_pickles_load_in_torch_jit(jit: Any) -> None:
    m = _scripted_module(jit)
    buf = io.BytesIO()
    jit.save(m, buf)
    z = zipfile.ZipFile(io.BytesIO(buf.getvalue()))
    prefix = z.namelist()[0].split("/")[0]
    root, made = _load_archive_record(z, prefix, "data.pkl", "data")
    root.state["buf"].mul_(2)                     # change the data so the check is not vacuous
    data, records = _repickle(root, made, {root.qualname, root.state["sub"].qualname,
                                           root.state["sub"].state["lin"].qualname})
    out = io.BytesIO()
    with zipfile.ZipFile(out, "w") as w:
        for info in z.infolist():
            name = info.filename[len(prefix) + 1:]
            if name == "data.pkl":
                w.writestr(info.filename, data)
            elif name.startswith("data/"):
                w.writestr(info.filename, dict(records)[name])
            else:
                w.writestr(info.filename, z.read(info.filename))
    again = jit.load(io.BytesIO(out.getvalue()))
    assert torch.equal(again.buf, m.buf * 2)
    assert again.ints == [1, 2, 3] and again.d == {"a": 1.0, "b": -0.0}


# -- hostile tensor pickles (C3, C4, C14, D1-D9) ---------------------------------------------------

class _Pid:
    """A placeholder whose persistent id the test chooses."""


def tensor_pickle(pid: Any = None, offset: Any = 0, size: Any = (4,), stride: Any = (1,), requires_grad: Any = False,
                  hooks: Any = None, extra: tuple[Any, ...] = (), func: str = "_rebuild_tensor_v2") -> bytes:
    handle = _Pid()
    if pid is None:
        pid = ("storage", GlobalRef("torch", "FloatStorage"), "0", "cpu", 4)
    args = (handle, offset, size, stride, requires_grad,
            Call("collections", "OrderedDict", ()) if hooks is None else hooks, *extra)
    tree = Call("torch._utils", func, MarkedTuple(args))
    return dump_pickle(tree, persistent_id=lambda o: pid if o is handle else None)


FOUR_FLOATS = {"data/0": struct.pack("<4f", 1, 2, 3, 4)}


def expect(data: bytes, cls: type[ModelFormatError], records: dict[str, bytes] = FOUR_FLOATS, **kw: Any) -> str:
    with pytest.raises(ModelFormatError) as info:
        load(data, records, **kw)
    msg = str(info.value)
    assert type(info.value) is cls, f"{type(info.value).__name__}: {msg}"
    assert RECORD in msg and "byte offset" in msg
    return msg


def test_hostile_pickle_helper_loads_when_benign() -> None:
    t = load(tensor_pickle(), FOUR_FLOATS)
    assert torch.equal(t, torch.tensor([1.0, 2.0, 3.0, 4.0]))


def pid(cls: str = "FloatStorage", key: Any = "0", location: Any = "cpu", numel: Any = 4) -> tuple[Any, ...]:
    return ("storage", GlobalRef("torch", cls), key, location, numel)


D_CASES: list[tuple[str, bytes, type[ModelFormatError]]] = [
    # D1: element count that wraps in 64-bit arithmetic, or is negative / not an int
    ("D1-wrapping-numel", tensor_pickle(pid(numel=0x4000000000000001)), ResourceLimitExceeded),
    ("D1-negative-numel", tensor_pickle(pid(numel=-1)), TensorLayoutError),
    ("D1-float-numel", tensor_pickle(pid(numel=4.0)), TensorLayoutError),
    ("D1-bool-numel", tensor_pickle(pid(numel=True)), TensorLayoutError),
    # D2: declared size != record length
    ("D2-record-too-short", tensor_pickle(pid(numel=5), size=(5,)), TensorLayoutError),
    ("D2-record-too-long", tensor_pickle(pid(numel=3), size=(3,)), TensorLayoutError),
    # D3: view out of bounds; empty view starting far past the end
    ("D3-past-end", tensor_pickle(size=(5,)), TensorLayoutError),
    ("D3-offset-past-end", tensor_pickle(offset=1), TensorLayoutError),
    ("D3-2d-past-end", tensor_pickle(size=(2, 2), stride=(3, 1)), TensorLayoutError),
    ("D3-empty-far-offset", tensor_pickle(offset=10**9, size=(0,)), TensorLayoutError),
    ("D3-empty-storage-scalar", tensor_pickle(pid(numel=0), size=(), stride=()), TensorLayoutError),
    # D4: negative size / stride / offset
    ("D4-negative-size", tensor_pickle(size=(-1,)), TensorLayoutError),
    ("D4-negative-stride", tensor_pickle(size=(2,), stride=(-1,), offset=3), TensorLayoutError),
    ("D4-negative-offset", tensor_pickle(offset=-1, size=(1,)), TensorLayoutError),
    ("D4-bool-size", tensor_pickle(size=(True,)), TensorLayoutError),
    # D5: rank mismatch, huge rank, sizes beyond int64
    ("D5-rank-mismatch", tensor_pickle(size=(2, 2), stride=(1,)), TensorLayoutError),
    ("D5-huge-rank", tensor_pickle(size=(1,) * 100_000, stride=(0,) * 100_000), ResourceLimitExceeded),
    ("D5-size-over-int64", tensor_pickle(size=(2**63,), stride=(0,)), TensorLayoutError),
    ("D5-product-overflows", tensor_pickle(size=(2**62, 2**62), stride=(0, 0)), ResourceLimitExceeded),
    ("D5-size-list", tensor_pickle(size=[4], stride=[1]), TensorLayoutError),
    # D6: unknown and unsupported storage types
    ("D6-EvilStorage", tensor_pickle(pid(cls="EvilStorage")), UnsupportedFeature),
    ("D6-QInt8Storage", tensor_pickle(pid(cls="QInt8Storage")), UnsupportedFeature),
    ("D6-ComplexHalfStorage", tensor_pickle(pid(cls="ComplexHalfStorage")), UnsupportedFeature),
    ("D6-Float8Storage", tensor_pickle(pid(cls="Float8_e4m3fnStorage")), UnsupportedFeature),
    ("D6-UInt16Storage", tensor_pickle(pid(cls="UInt16Storage")), UnsupportedFeature),
    # D9: a referenced record that does not exist
    ("D9-missing-record", tensor_pickle(pid(key="7")), ArchiveError),
    # C3: hostile arguments to allow-listed rebuild functions
    ("C3-offset-minus-1-huge-broadcast", tensor_pickle(offset=-1, size=(2**40,), stride=(0,)), TensorLayoutError),
    ("C3-huge-broadcast", tensor_pickle(size=(2**40,), stride=(0,)), ResourceLimitExceeded),
    ("C3-qtensor", tensor_pickle(func="_rebuild_qtensor"), UnsupportedFeature),
    ("C3-sparse", tensor_pickle(func="_rebuild_sparse_tensor"), UnsupportedFeature),
    ("C3-from-type-v2", tensor_pickle(func="_rebuild_from_type_v2"), PickleError),
    ("C3-parameter", tensor_pickle(func="_rebuild_parameter"), PickleError),
    ("C3-too-few-args", dump_pickle(Call("torch._utils", "_rebuild_tensor_v2", (1, 2)), persistent_id=lambda o: None),
     PickleError),
    ("C3-storage-not-persistent", dump_pickle(Call("torch._utils", "_rebuild_tensor_v2", MarkedTuple(
        ("not a storage", 0, (1,), (1,), False, Call("collections", "OrderedDict", ())))),
        persistent_id=lambda o: None), PickleError),
    ("C3-requires-grad-int", tensor_pickle(pid(cls="IntStorage"), requires_grad=True), TensorLayoutError),
    ("C3-requires-grad-str", tensor_pickle(requires_grad="yes"), PickleError),
    ("C3-hooks-not-ordereddict", tensor_pickle(hooks={}), UnsupportedFeature),
    ("C3-hooks-with-args", tensor_pickle(hooks=Call("collections", "OrderedDict", ([("a", 1)],))),
     UnsupportedFeature),
    ("C3-bad-metadata", tensor_pickle(extra=({"evil": True},)), UnsupportedFeature),
    ("C3-conj-on-float", tensor_pickle(extra=({"conj": True},)), TensorLayoutError),
    ("C3-metadata-not-dict", tensor_pickle(extra=(5,)), PickleError),
    # C14: bad persistent ids
    ("C14-pid-int", tensor_pickle(7), PickleError),
    ("C14-pid-not-storage", tensor_pickle(("module", GlobalRef("torch", "FloatStorage"), "0", "cpu", 4)),
     PickleError),
    ("C14-pid-arity-4", tensor_pickle(("storage", GlobalRef("torch", "FloatStorage"), "0", "cpu")), PickleError),
    ("C14-pid-arity-6", tensor_pickle(pid() + (1,)), PickleError),
    ("C14-type-as-string", tensor_pickle(("storage", "FloatStorage", "0", "cpu", 4)), PickleError),
    ("C14-type-is-device-global", tensor_pickle(("storage", GlobalRef("torch", "device"), "0", "cpu", 4)),
     PickleError),
    ("C14-cuda-99", tensor_pickle(pid(location="cuda:99")), UnsupportedFeature),
    ("C14-location-evil", tensor_pickle(pid(location="evil")), PickleError),
    ("C14-location-empty", tensor_pickle(pid(location="")), PickleError),
    ("C14-location-int", tensor_pickle(pid(location=0)), PickleError),
    ("C14-key-traversal", tensor_pickle(pid(key="../../etc/passwd")), PickleError),
    ("C14-key-slash", tensor_pickle(pid(key="a/b")), PickleError),
    ("C14-key-int", tensor_pickle(pid(key=0)), PickleError),
    ("C14-key-empty", tensor_pickle(pid(key="")), PickleError),
]


@pytest.mark.parametrize("name,data,cls", D_CASES, ids=[c[0] for c in D_CASES])
def test_hostile_tensor_pickles(name: str, data: bytes, cls: type[ModelFormatError]) -> None:
    expect(data, cls)


def test_d2_and_d9_messages_name_the_record() -> None:
    assert "data/0 has 16" in expect(tensor_pickle(pid(numel=5), size=(5,)), TensorLayoutError)
    assert "data/7" in expect(tensor_pickle(pid(key="7")), ArchiveError)
    assert "qint8" in expect(tensor_pickle(pid(cls="QInt8Storage")), UnsupportedFeature).lower()
    assert "map_location" in expect(tensor_pickle(pid(location="cuda:99")), UnsupportedFeature)


def test_d1_small_limit() -> None:
    expect(tensor_pickle(), ResourceLimitExceeded, limits=Limits(max_tensor_bytes=8))
    expect(tensor_pickle(size=(2, 2), stride=(2, 1)), ResourceLimitExceeded, limits=Limits(max_tensor_rank=1))


def test_d4_stride_zero_views_load() -> None:
    t = load(tensor_pickle(size=(3, 4), stride=(0, 1)), FOUR_FLOATS)
    assert torch.equal(t, torch.tensor([1.0, 2.0, 3.0, 4.0]).expand(3, 4))


def test_d7_key_declared_twice_differently() -> None:
    h1, h2 = _Pid(), _Pid()
    tree = [Call("torch._utils", "_rebuild_tensor_v2", MarkedTuple((h, 0, MarkedTuple((1,)), MarkedTuple((1,)),
                                                                    False, Call("collections", "OrderedDict", ()))))
            for h in (h1, h2)]
    pids = {id(h1): pid(), id(h2): pid(cls="IntStorage")}
    data = dump_pickle(tree, persistent_id=lambda o: pids.get(id(o)))
    expect(data, TensorLayoutError)
    pids[id(h2)] = pid()                              # same declaration twice: one shared storage
    y = load(dump_pickle(tree, persistent_id=lambda o: pids.get(id(o))), FOUR_FLOATS)
    assert y[0].untyped_storage().data_ptr() == y[1].untyped_storage().data_ptr()


def test_d9_unreferenced_records_are_ignored() -> None:
    t = load(tensor_pickle(), {**FOUR_FLOATS, "data/9": b"\x00" * 1000})
    assert t.shape == (4,)


def test_map_location() -> None:
    data = tensor_pickle(pid(location="cuda:0"))
    if not torch.cuda.is_available():
        expect(data, UnsupportedFeature)
    t = load(data, FOUR_FLOATS, map_location="cpu")
    assert t.device == torch.device("cpu") and t[3] == 4.0
    t = load(tensor_pickle(), FOUR_FLOATS, map_location="meta")
    assert t.device.type == "meta" and t.shape == (4,)
    t = load(tensor_pickle(pid(location="meta")), FOUR_FLOATS)
    assert t.device.type == "meta"
    expect(tensor_pickle(), UnsupportedFeature, map_location="tpu")


def test_c4_setitems_on_a_tensor() -> None:
    body = tensor_pickle()[2:-1]
    data = b"\x80\x02" + body + b"(K\x01K\x02u."
    expect(data, PickleError)


def test_storage_class_is_not_callable() -> None:
    expect(dump_pickle(Call("torch", "FloatStorage", (4,)), persistent_id=lambda o: None), PickleError)


# -- the other allow-listed globals ----------------------------------------------------------------

def _g(module: str, name: str, *args: Any) -> bytes:
    return dump_pickle(Call(module, name, args), persistent_id=lambda o: None)


def test_typed_containers_and_scalars() -> None:
    assert load(_g("torch.jit._pickle", "build_intlist", [1, 2]), {}) == [1, 2]
    assert load(_g("torch.jit._pickle", "build_doublelist", [1.5]), {}) == [1.5]
    assert load(_g("torch.jit._pickle", "build_boollist", [True]), {}) == [True]
    assert load(_g("torch.jit._pickle", "build_tensorlist", []), {}) == []
    assert load(_g("builtins", "complex", 1.0, -2.0), {}) == 1 - 2j
    assert load(_g("torch", "device", "cuda:1"), {}) == torch.device("cuda:1")
    assert load(_g("collections", "OrderedDict"), {}) == OrderedDict()
    storages = StorageReader(read_record=lambda k: b"")
    table = torch_globals(storages)
    d = load_pickle(_g("torch.jit._pickle", "restore_type_tag", {}, "Dict[str, float]"), record=RECORD,
                    globals=table, persistent_load=storages)
    assert d == {} and table.type_tags.tag_of(d) == "Dict[str, float]"
    assert table.type_tags.tag_of([]) is None


@pytest.mark.parametrize("data", [
    _g("torch.jit._pickle", "build_intlist", [1, 2.0]),
    _g("torch.jit._pickle", "build_intlist", [True]),
    _g("torch.jit._pickle", "build_doublelist", [1]),
    _g("torch.jit._pickle", "build_boollist", [0]),
    _g("torch.jit._pickle", "build_tensorlist", [1]),
    _g("torch.jit._pickle", "build_intlist", (1,)),
    _g("torch.jit._pickle", "build_intlist"),
    _g("torch.jit._pickle", "restore_type_tag", (1,), "Tuple[int]"),
    _g("torch.jit._pickle", "restore_type_tag", [1]),
    _g("torch.jit._pickle", "restore_type_tag", [], 5),
    _g("builtins", "complex", "1", 2.0),
    _g("builtins", "complex", 1.0),
    _g("torch", "device", "evil:0"),
    _g("torch", "device", "cuda:0; rm -rf /"),
    _g("torch", "device", 0),
], ids=lambda d: d[2:60].decode("latin-1").replace("\n", " "))
def test_bad_arguments_to_allowed_globals(data: bytes) -> None:
    expect(data, PickleError, {})


def test_long_type_tag_is_capped() -> None:
    expect(_g("torch.jit._pickle", "restore_type_tag", [], "List[" * 2000), ResourceLimitExceeded, {})


def test_loaded_storage_is_exposed() -> None:
    storages = StorageReader(read_record=lambda k: FOUR_FLOATS[f"data/{k}"])
    s = storages(("storage", torch_globals(storages)[("torch", "FloatStorage")], "0", "cpu", 4))
    assert isinstance(s, LoadedStorage) and s.numel == 4 and s.dtype == torch.float32
    assert storages(("storage", torch_globals(storages)[("torch", "FloatStorage")], "0", "cpu", 4)) is s


@pytest.mark.gpu
def test_cuda_tensors_roundtrip() -> None:
    t = special_values(torch.float32).cuda()
    view = t[2:]
    data, records = save([t, view])
    assert b"cuda:0" in data
    y = load(data, records)
    assert y[0].device == t.device and y[1].untyped_storage().data_ptr() == y[0].untyped_storage().data_ptr()
    assert bits(y[1].cpu()) == bits(view.cpu())
    z = load(data, records, map_location="cpu")
    assert z[0].device.type == "cpu" and bits(z[0]) == bits(t.cpu())
