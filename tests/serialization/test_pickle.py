"""The allow-list pickle VM and the deterministic pickler (kiln/serialization/pickle.py).

Covers round trips, determinism, sharing, agreement with CPython's pickler on plain data, and
the pickle rows of ../shared/SECURITY.md section 7.C (C1-C13; C3 and C14 live in
test_tensors.py with the torch globals), each a hand-built hostile pickle that must fail with
the right error class and a message naming the record and the byte offset.  An audit hook
checks that loading the whole corpus executes, compiles and imports nothing, and hypothesis
fuzzes the VM with random and mutated bytes: only ModelFormatError subclasses may escape.
"""

from __future__ import annotations

import builtins
import math
import pickle
import struct
import sys
import time
import tracemalloc
from typing import Any

import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st

from kiln.errors import ModelFormatError, PickleError, ResourceLimitExceeded, UnsupportedFeature
from kiln.serialization.limits import Limits
from kiln.serialization.pickle import (
    Call,
    ClassRef,
    GlobalRef,
    MarkedTuple,
    PickledEnum,
    PickledObject,
    RejectedGlobal,
    dump_pickle,
    load_pickle,
)
from kiln.serialization.tensors import StorageReader, TensorWriter, torch_globals

RECORD = "archive/data.pkl"
DEFAULT_LIMITS = Limits()
P2 = b"\x80\x02"


class Probe:
    """An allow-listed global that records its calls."""

    def __init__(self, result: Any = "called") -> None:
        self.calls: list[tuple[Any, ...]] = []
        self.result = result

    def call(self, args: tuple[Any, ...]) -> Any:
        self.calls.append(args)
        return self.result


def _no_pid(pid: Any) -> Any:
    raise AssertionError(f"persistent_load called with {pid!r}")


def load(data: bytes, globals: Any = None, persistent_load: Any = _no_pid, limits: Limits = DEFAULT_LIMITS) -> Any:
    return load_pickle(data, record=RECORD, globals=globals or {}, persistent_load=persistent_load, limits=limits)


def dump(obj: Any, **kw: Any) -> bytes:
    return dump_pickle(obj, persistent_id=lambda o: None, **kw)


def expect(data: bytes, cls: type[ModelFormatError], offset: int | None = None, **kw: Any) -> str:
    """Loading ``data`` raises exactly ``cls``, naming the record and (if given) the offset."""
    with pytest.raises(ModelFormatError) as info:
        load(data, **kw)
    msg = str(info.value)
    assert type(info.value) is cls, f"{type(info.value).__name__}: {msg}"
    assert RECORD in msg and "byte offset" in msg, msg
    if offset is not None:
        assert f"byte offset {offset})" in msg, msg
    return msg


def uni(s: str) -> bytes:
    raw = s.encode()
    return b"X" + struct.pack("<I", len(raw)) + raw


def glob(module: str, name: str) -> bytes:
    return b"c" + f"{module}\n{name}\n".encode()


def same(a: Any, b: Any, nan_bits: bool = True) -> bool:
    """Structural equality that also tells 1 / 1.0 / True apart and compares floats by bits
    (only NaN-ness when ``nan_bits`` is false: protocol 0 writes floats as text)."""
    if type(a) is not type(b):
        return False
    if isinstance(a, float):
        if not nan_bits and math.isnan(a):
            return math.isnan(b)
        return struct.pack(">d", a) == struct.pack(">d", b)
    if isinstance(a, (list, tuple)):
        return len(a) == len(b) and all(same(x, y, nan_bits) for x, y in zip(a, b))
    if isinstance(a, dict):
        return len(a) == len(b) and all(same(k1, k2, nan_bits) and same(v1, v2, nan_bits)
                                        for (k1, v1), (k2, v2) in zip(a.items(), b.items()))
    return bool(a == b)


# -- round trips -----------------------------------------------------------------------------------

scalars = (st.none() | st.booleans() | st.integers() | st.integers(min_value=-2**300, max_value=2**300)
           | st.floats() | st.text() | st.sampled_from([-0.0, math.inf, -math.inf, math.nan, 2**63 - 1, -2**63,
                                                        2**63, 255, 256, 65535, 65536, 2**31, -2**31 - 1]))
keys = st.none() | st.booleans() | st.integers() | st.text() | st.floats(allow_nan=False)
values = st.recursive(
    scalars,
    lambda kids: st.lists(kids, max_size=5) | st.lists(kids, max_size=6).map(tuple)
    | st.dictionaries(keys, kids, max_size=5),
    max_leaves=40)


@given(values)
def test_roundtrip_plain_data(x: Any) -> None:
    data = dump(x)
    y = load(data)
    assert same(x, y)
    assert dump(x) == data            # deterministic
    assert dump(y) == data            # and stable through a load


@pytest.mark.parametrize("protocol", [0, 1, 2, 3, 4])
@given(x=values)
def test_reads_cpython_pickles_of_plain_data(protocol: int, x: Any) -> None:
    assert same(load(pickle.dumps(x, protocol=protocol)), x, nan_bits=protocol > 0)


def test_shared_objects_stay_shared() -> None:
    a = [1, 2]
    obj = PickledObject("__torch__.Sub", {"x": a})
    t = ("t", 1)
    tree = [a, a, (a,), obj, obj, t, t]
    data = dump(tree)
    y = load(data)
    assert y[0] is y[1] is y[2][0]
    assert y[3] is y[4] and y[3].state["x"] is y[0]
    assert y[5] is y[6]
    assert same(y[0], [1, 2]) and y[3] == obj


def test_int_and_float_forms_match_torchscript() -> None:
    body = lambda x: dump(x)[2:-1]  # noqa: E731
    assert body(7) == b"K\x07"
    assert body(300) == b"M\x2c\x01"
    assert body(-1) == b"J\xff\xff\xff\xff"
    assert body(2**40) == b"\x8a\x08" + (2**40).to_bytes(8, "little")
    assert body(-2**63) == b"\x8a\x08" + (-2**63).to_bytes(8, "little", signed=True)
    assert body(2**64) == b"\x8a\x09" + (2**64).to_bytes(9, "little")
    assert body(1.5) == b"G" + struct.pack(">d", 1.5)
    assert body(True) == b"\x88" and body(None) == b"N"
    assert body("ab") == b"X\x02\x00\x00\x00abq\x00"


def test_object_enum_call_forms() -> None:
    obj = PickledObject("__torch__.M", {"training": True, "color": PickledEnum("__torch__.Color", 1)})
    data = dump(obj, memoize=lambda v: isinstance(v, PickledObject))
    assert data == (P2 + glob("__torch__", "M") + b"q\x00)\x81}(" + uni("training") + b"q\x01\x88"
                    + uni("color") + b"q\x02" + glob("__torch__", "Color") + b"q\x03K\x01Rub" + b"q\x04.")
    y = load(data)
    assert y == obj and isinstance(y.state["color"], PickledEnum)
    call = Call("torch.jit._pickle", "build_intlist", ([1, 2],))
    assert dump(call) == (P2 + glob("torch.jit._pickle", "build_intlist") + b"q\x00(](K\x01K\x02et" + b"R.")
    assert load(dump(GlobalRef("m", "f")), globals={("m", "f"): Probe()}) is not None
    assert dump((1, 2, 3, 4)) == P2 + b"(K\x01K\x02K\x03K\x04t."
    assert dump(MarkedTuple((1,))) == P2 + b"(K\x01t."
    assert dump(ClassRef("__torch__.a.B")) == P2 + glob("__torch__.a", "B") + b"q\x00."
    assert load(dump(ClassRef("__torch__.a.B"))) == ClassRef("__torch__.a.B")


def test_calls_are_made_through_the_allow_list() -> None:
    probe = Probe([5])
    tree = [Call("m", "f", (1, "x")), Call("m", "f", ())]
    y = load(dump(tree), globals={("m", "f"): probe})
    assert probe.calls == [(1, "x"), ()]
    assert y == [[5], [5]]


def test_persistent_ids_are_written_and_memoized() -> None:
    class Handle:
        pass

    h = Handle()
    data = dump_pickle([h, h], persistent_id=lambda o: ("storage", "k") if isinstance(o, Handle) else None)
    assert data.count(b"Q") == 1
    seen: list[Any] = []
    y = load(data, persistent_load=lambda pid: seen.append(pid) or "S")
    assert seen == [("storage", "k")] and y == ["S", "S"]


def test_dump_refuses_cycles_and_unknown_types() -> None:
    cyc: list[Any] = []
    cyc.append(cyc)
    with pytest.raises(PickleError, match="cyclic"):
        dump(cyc)
    with pytest.raises(PickleError, match="cannot pickle"):
        dump({1, 2})
    with pytest.raises(PickleError):
        dump("\ud800")


def test_dump_is_iterative_and_load_caps_depth() -> None:
    deep: Any = []
    for _ in range(5000):
        deep = [deep]
    data = dump(deep)                     # no RecursionError in the writer
    expect(data, ResourceLimitExceeded)
    shallow: Any = []
    for _ in range(500):
        shallow = [shallow]
    assert load(dump(shallow)) is not None


# -- the malicious corpus (C1-C13) -------------------------------------------------------------------

def _chain(levels: int, fan: int, close: bytes) -> bytes:
    """Memo amplification: each level a container of ``fan`` memo references to the previous."""
    out = P2 + b"]q\x00"
    for i in range(1, levels + 1):
        out += b"0" + (b"](" if close == b"e" else b"(") + (b"h" + bytes([i - 1])) * fan + close + b"q" + bytes([i])
    return out + b"."


CORPUS: list[tuple[str, bytes, type[ModelFormatError], int | None]] = [
    # C1: dangerous globals, refused at the GLOBAL (offset 2), and the inline-class forms
    ("C1-os.system", P2 + glob("os", "system") + uni("echo pwned") + b"\x85R.", PickleError, 2),
    ("C1-posix.system", P2 + glob("posix", "system") + uni("id") + b"\x85R.", PickleError, 2),
    ("C1-nt.system", P2 + glob("nt", "system") + uni("id") + b"\x85R.", PickleError, 2),
    ("C1-builtins.eval", P2 + glob("builtins", "eval") + uni("1+1") + b"\x85R.", PickleError, 2),
    ("C1-__builtin__.eval", P2 + glob("__builtin__", "eval") + uni("1") + b"\x85R.", PickleError, 2),
    ("C1-builtins.print", P2 + glob("builtins", "print") + uni("hi") + b"\x85R.", PickleError, 2),
    ("C1-subprocess.Popen", P2 + glob("subprocess", "Popen") + uni("id") + b"\x85R.", PickleError, 2),
    ("C1-INST", P2 + b"(" + uni("id") + b"ios\nsystem\n.", UnsupportedFeature, 10),
    ("C1-OBJ", P2 + b"(" + glob("os", "system") + uni("id") + b"o.", PickleError, 3),
    ("C1-OBJ-torch-class", P2 + b"(" + glob("__torch__", "M") + b"o.", UnsupportedFeature, 16),
    ("C1-NEWOBJ_EX", P2 + glob("__torch__", "M") + b")}\x92.", UnsupportedFeature, 17),
    ("C1-NEWOBJ-allowed-global", P2 + glob("m", "f") + b")\x81}b.", PickleError, 8),
    ("C1-REDUCE-non-callable", P2 + uni("os") + b")R.", PickleError, 10),
    ("C1-enum-with-tuple", P2 + glob("__torch__", "Color") + b"K\x01\x85R.", PickleError, 22),
    # C2: obfuscated globals
    ("C2-STACK_GLOBAL-memo", P2 + uni("os") + b"q\x00" + uni("system") + b"q\x01h\x00h\x01\x93.",
     PickleError, 28),
    ("C2-STACK_GLOBAL-ints", P2 + b"K\x01K\x02\x93.", PickleError, 6),
    ("C2-STACK_GLOBAL-one-arg", P2 + uni("os") + b"\x93.", PickleError, 9),
    ("C2-copy_reg", P2 + glob("copy_reg", "_reconstructor") + b".", PickleError, 2),
    ("C2-copyreg", P2 + glob("copyreg", "_reconstructor") + b".", PickleError, 2),
    ("C2-pkgutil", P2 + glob("pkgutil", "resolve_name") + uni("os:system") + b"\x85R.", PickleError, 2),
    ("C2-importlib", P2 + glob("importlib", "import_module") + b".", PickleError, 2),
    ("C2-numpy.f2py", P2 + glob("numpy.f2py.crackfortran", "getlincoef") + b".", PickleError, 2),
    ("C2-inductor", P2 + glob("torch._inductor.codecache", "compile_file") + b".", PickleError, 2),
    ("C2-torch.load", P2 + glob("torch.serialization", "load") + b".", PickleError, 2),
    ("C2-logging", P2 + glob("logging", "FileHandler") + b".", PickleError, 2),
    ("C2-torch-traversal", P2 + glob("__torch__.a/../b", "M") + b".", PickleError, 2),
    ("C2-torch-bad-name", P2 + glob("__torch__", "M N") + b".", PickleError, 2),
    ("C2-torchlike", P2 + glob("__torch__evil", "M") + b".", PickleError, 2),
    ("C2-getattr", P2 + glob("builtins", "getattr") + b".", PickleError, 2),
    # C4: SETITEM(S) on non-dicts, odd marks, sealed dicts
    ("C4-SETITEMS-list", P2 + b"](K\x01K\x02u.", PickleError, 8),
    ("C4-SETITEM-str", P2 + uni("s") + b"K\x01K\x02s.", PickleError, 12),
    ("C4-SETITEMS-object", P2 + glob("__torch__", "M") + b")\x81(K\x01K\x02u.", PickleError, 22),
    ("C4-SETITEMS-odd", P2 + b"}(K\x01u.", PickleError, 6),
    ("C4-DICT-odd", P2 + b"(K\x01d.", PickleError, 5),
    ("C4-SETITEM-sealed", P2 + b"}q\x00\x85h\x00K\x01K\x02s.", PickleError, 12),
    ("C4-SETITEMS-global-result", P2 + glob("m", "dict") + b")R(K\x01K\x02u.", PickleError, 17),
    ("C4-unhashable-key", P2 + b"}(]K\x01u.", PickleError, 7),
    # C5: APPEND(S) on non-lists, BUILD misuse, NEWOBJ misuse
    ("C5-APPEND-dict", P2 + b"}K\x01a.", PickleError, 5),
    ("C5-APPENDS-tuple", P2 + b")(K\x01e.", PickleError, 6),
    ("C5-APPEND-sealed", P2 + b"]q\x00\x85h\x00K\x01a.", PickleError, 10),
    ("C5-BUILD-list", P2 + b"]}b.", PickleError, 4),
    ("C5-BUILD-twice", P2 + glob("__torch__", "M") + b")\x81}b}b.", PickleError, 20),
    ("C5-BUILD-sealed", P2 + glob("__torch__", "M") + b")\x81q\x00\x85h\x00}b.", PickleError, 23),
    ("C5-NEWOBJ-args", P2 + glob("__torch__", "M") + b"K\x01\x85\x81}b.", PickleError, 18),
    ("C5-NEWOBJ-no-BUILD", P2 + glob("__torch__", "M") + b")\x81.", PickleError, 17),
    ("C5-ADDITEMS-list", P2 + b"](K\x01\x90.", PickleError, 6),
    # C6: underflow, bad memo, truncated operands
    ("C6-TUPLE3-empty", P2 + b"\x87.", PickleError, 2),
    ("C6-REDUCE-no-args", P2 + b"R.", PickleError, 2),
    ("C6-APPENDS-no-MARK", P2 + b"]e.", PickleError, 3),
    ("C6-POP_MARK-no-MARK", P2 + b"1.", PickleError, 2),
    ("C6-POP-empty", P2 + b"0.", PickleError, 2),
    ("C6-cross-MARK", P2 + b"K\x01(\x85.", PickleError, 5),
    ("C6-BINGET-unset", P2 + b"h\x05.", PickleError, 2),
    ("C6-LONG_BINGET-unset", P2 + b"j\x00\x00\x01\x00.", PickleError, 2),
    ("C6-GET-text-unset", P2 + b"g7\n.", PickleError, 2),
    ("C6-BININT-short", P2 + b"J\x01\x02", PickleError, 2),
    ("C6-BINFLOAT-short", P2 + b"G\x01\x02", PickleError, 2),
    ("C6-BINUNICODE-bad-utf8", P2 + b"X\x02\x00\x00\x00\xff\xfe.", PickleError, 2),
    ("C6-GLOBAL-no-newline", P2 + b"cos", PickleError, 2),
    ("C6-GLOBAL-bad-utf8", P2 + b"c\xff\xfe\nx\n.", PickleError, 2),
    ("C6-INT-bad", P2 + b"I12x\n.", PickleError, 2),
    ("C6-INT-huge-text", P2 + b"I" + b"9" * 5000 + b"\n.", PickleError, 2),
    ("C6-FLOAT-bad", P2 + b"Fxyz\n.", PickleError, 2),
    ("C6-STRING-unquoted", P2 + b"Sabc\n.", PickleError, 2),
    ("C6-PUT-negative", P2 + b"Np-1\n.", PickleError, 3),
    ("C6-STOP-two-values", P2 + b"K\x01K\x02.", PickleError, 6),
    ("C6-STOP-open-MARK", P2 + b"(K\x01.", PickleError, 5),
    ("C6-STOP-empty-stack", P2 + b".", PickleError, 2),
    ("C6-empty", b"", PickleError, 0),
    # C7: huge lengths, refused before allocation
    ("C7-BINUNICODE8", P2 + b"\x8d" + (4 * 10**9).to_bytes(8, "little") + b"abc.", PickleError, 2),
    ("C7-BINBYTES8", P2 + b"\x8e" + (4 * 10**9).to_bytes(8, "little") + b"abc.", PickleError, 2),
    ("C7-BINUNICODE", P2 + b"X\xff\xff\xff\xffabc.", PickleError, 2),
    ("C7-LONG4", P2 + b"\x8b" + (2**31 - 1).to_bytes(4, "little") + b"\x01.", PickleError, 2),
    ("C7-LONG4-negative", P2 + b"\x8b\xff\xff\xff\xff.", PickleError, 2),
    ("C7-FRAME", P2 + b"\x95" + (2**63).to_bytes(8, "little") + b"N.", PickleError, 2),
    ("C7-BINSTRING", P2 + b"T\xff\xff\xff\x7fab.", PickleError, 2),
    # C8: memo count cap
    ("C8-many-PUTs", P2 + b"N" + b"".join(b"r" + i.to_bytes(4, "little") for i in range(1500)) + b".",
     ResourceLimitExceeded, 3 + 5 * 1000),
    # C10: an object that contains itself is refused (BUILD on an object already placed in a value)
    ("C10-self-module", P2 + glob("__torch__", "M") + b")\x81q\x00}(" + uni("self") + b"h\x00ub.",
     PickleError, 33),
    # C11: deep nesting
    ("C11-MARKs", P2 + b"(" * 100_000, ResourceLimitExceeded, 2 + 1000),
    ("C11-TUPLE1-chain", P2 + b")" + b"\x85" * 100_000 + b".", ResourceLimitExceeded, 2 + 1001),
    ("C11-nested-lists", P2 + b"]" * 100_000 + b"a" * 100_000 + b".", ResourceLimitExceeded, None),
    ("C11-nested-dicts", P2 + b"}" + b"K\x01}" * 50_000 + b"s" * 50_000 + b".", ResourceLimitExceeded, None),
    # C12: unsupported opcodes and PROTO misuse
    ("C12-EXT1", P2 + b"\x82\x01.", UnsupportedFeature, 2),
    ("C12-EXT2", P2 + b"\x83\x01\x00.", UnsupportedFeature, 2),
    ("C12-EXT4", P2 + b"\x84\x01\x00\x00\x00.", UnsupportedFeature, 2),
    ("C12-PERSID", P2 + b"P0\n.", UnsupportedFeature, 2),
    ("C12-NEXT_BUFFER", P2 + b"\x97.", UnsupportedFeature, 2),
    ("C12-READONLY_BUFFER", P2 + b"N\x98.", UnsupportedFeature, 3),
    ("C12-BYTEARRAY8", P2 + b"\x96\x01\x00\x00\x00\x00\x00\x00\x00a.", UnsupportedFeature, 2),
    ("C12-PROTO-not-first", b"N\x80\x02.", UnsupportedFeature, 1),
    ("C12-PROTO-twice", P2 + b"\x80\x02N.", UnsupportedFeature, 2),
    ("C12-PROTO-5", b"\x80\x05N.", UnsupportedFeature, 0),
    ("C12-PROTO-6", b"\x80\x06N.", UnsupportedFeature, 0),
    ("C12-unknown-opcode", P2 + b"\xff.", PickleError, 2),
    # C13: data after STOP, no STOP, two pickles, benign prefix then corruption
    ("C13-trailing-garbage", P2 + b"N.garbage", PickleError, 3),
    ("C13-no-STOP", P2 + b"N", PickleError, 3),
    ("C13-two-pickles", P2 + b"N." + P2 + b"N.", PickleError, 3),
    ("C13-prefix-then-garbage", P2 + glob("m", "f") + b")R" + b"\xff" * 8, PickleError, 9),
]

GLOBALS = {("m", "f"): Probe(), ("m", "dict"): Probe({})}


@pytest.mark.parametrize("name,data,cls,offset", CORPUS, ids=[c[0] for c in CORPUS])
def test_malicious_corpus(name: str, data: bytes, cls: type[ModelFormatError], offset: int | None) -> None:
    limits = Limits(max_memo_entries=1000)
    start = time.perf_counter()
    expect(data, cls, offset, globals=GLOBALS, limits=limits)
    assert time.perf_counter() - start < 5


def test_named_global_in_message() -> None:
    msg = expect(P2 + glob("os", "system") + b".", PickleError, 2)
    assert "'os.system'" in msg and "not allowed" in msg


def test_rejected_global_raises_its_own_error() -> None:
    g = {("torch._utils", "_rebuild_qtensor"): RejectedGlobal(UnsupportedFeature, "quantized tensors")}
    msg = expect(P2 + glob("torch._utils", "_rebuild_qtensor") + b".", UnsupportedFeature, 2, globals=g)
    assert "quantized" in msg


def test_global_failure_is_wrapped() -> None:
    class Boom:
        def call(self, args: tuple[Any, ...]) -> Any:
            raise KeyError("inner")

    msg = expect(P2 + glob("m", "f") + b")R.", PickleError, 8, globals={("m", "f"): Boom()})
    assert "m.f failed: KeyError" in msg


@pytest.mark.parametrize("levels,close", [(30, b"e"), (30, b"t")])
def test_c9_memo_amplification_keeps_sharing(levels: int, close: bytes) -> None:
    data = _chain(levels, 10, close)
    tracemalloc.start()
    start = time.perf_counter()
    try:
        y = load(data)
        _, peak = tracemalloc.get_traced_memory()
    finally:
        tracemalloc.stop()
    assert time.perf_counter() - start < 1 and peak < 1 << 20
    assert all(x is y[0] for x in y)          # a DAG: 10 references to one child, not 10 copies
    again = dump(y)                           # the writer is O(nodes) too
    assert len(again) < 40 * levels
    z = load(again)
    assert all(x is z[0] for x in z)         # (never compare these recursively: 10**30 paths)


def test_c10_cycles_terminate() -> None:
    lst = load(b"\x80\x02]\x94g0\na.")
    assert lst[0] is lst
    d = load(P2 + b"}q\x00K\x01h\x00s.")
    assert d[1] is d
    with pytest.raises(PickleError, match="cyclic"):
        dump(lst)


def test_c8_huge_memo_index_is_a_dict_entry() -> None:
    start = time.perf_counter()
    y = load(P2 + b"Nr\xff\xff\xff\xff0j\xff\xff\xff\xff.")
    assert y is None and time.perf_counter() - start < 0.5


def test_c8_many_puts_within_cap_are_fast() -> None:
    data = P2 + b"N" + b"".join(b"r" + i.to_bytes(4, "little") for i in range(100_000)) + b"."
    start = time.perf_counter()
    assert load(data) is None
    assert time.perf_counter() - start < 5


def test_op_count_limit() -> None:
    expect(P2 + b"N0" * 100 + b"N.", ResourceLimitExceeded, globals=None, limits=Limits(max_pickle_ops=50))


# -- the fast paths of the VM loop fail exactly as the opcode handlers do ------------------------------

class _Raises:
    def __init__(self, exc: Exception) -> None:
        self.exc = exc

    def call(self, args: tuple[Any, ...]) -> Any:
        raise self.exc


def _missing_pid(pid: Any) -> Any:
    raise KeyError(pid)


FAST_PATH_GLOBALS = {("m", "f"): Probe(), ("m", "bad"): _Raises(ValueError("no such thing")),
                     ("m", "fmt"): _Raises(PickleError("bad tensor"))}

# The opcodes TorchScript writes most are handled inline by the VM loop; on anything but the happy
# path they must raise what their handler raises: same class, message, opcode and offset.
FAST_PATH_ERRORS: list[tuple[str, bytes, Limits, type[ModelFormatError], str]] = [
    ("BINGET-truncated", P2 + b"h", DEFAULT_LIMITS, PickleError,
     "length 1 runs past the end of the data (0 bytes left) (BINGET at byte offset 2)"),
    ("BINGET-unset", P2 + b"Nq\x00h\x01.", DEFAULT_LIMITS, PickleError,
     "memo entry 1 was never set (BINGET at byte offset 5)"),
    ("LONG_BINGET-truncated", P2 + b"j\x00\x00", DEFAULT_LIMITS, PickleError,
     "length 4 runs past the end of the data (2 bytes left) (LONG_BINGET at byte offset 2)"),
    ("BININT1-truncated", P2 + b"K", DEFAULT_LIMITS, PickleError,
     "length 1 runs past the end of the data (0 bytes left) (BININT1 at byte offset 2)"),
    ("BININT2-truncated", P2 + b"M\x01", DEFAULT_LIMITS, PickleError,
     "length 2 runs past the end of the data (1 bytes left) (BININT2 at byte offset 2)"),
    ("BINPUT-truncated", P2 + b"Nq", DEFAULT_LIMITS, PickleError,
     "length 1 runs past the end of the data (0 bytes left) (BINPUT at byte offset 3)"),
    ("BINPUT-empty-stack", P2 + b"q\x00N.", DEFAULT_LIMITS, PickleError,
     "stack underflow (BINPUT at byte offset 2)"),
    ("BINPUT-across-MARK", P2 + b"N(q\x00.", DEFAULT_LIMITS, PickleError,
     "stack underflow (would cross a MARK) (BINPUT at byte offset 4)"),
    ("BINPUT-memo-cap", P2 + b"Nq\x00q\x01.", Limits(max_memo_entries=1), ResourceLimitExceeded,
     "more than 1 memo entries (limits.max_memo_entries) (BINPUT at byte offset 5)"),
    ("BINPUT-memo-cap-same-index", P2 + b"Nq\x00q\x00q\x01.", Limits(max_memo_entries=1), ResourceLimitExceeded,
     "more than 1 memo entries (limits.max_memo_entries) (BINPUT at byte offset 7)"),
    ("LONG_BINPUT-memo-cap", P2 + b"Nr\x00\x00\x00\x00r\x01\x00\x00\x00.", Limits(max_memo_entries=1),
     ResourceLimitExceeded, "more than 1 memo entries (limits.max_memo_entries) (LONG_BINPUT at byte offset 8)"),
    ("LONG_BINPUT-truncated", P2 + b"Nr\x00\x00\x00", DEFAULT_LIMITS, PickleError,
     "length 4 runs past the end of the data (3 bytes left) (LONG_BINPUT at byte offset 3)"),
    ("MARK-depth", P2 + b"(((", Limits(max_pickle_depth=2), ResourceLimitExceeded,
     "more than 2 nested MARKs (limits.max_pickle_depth) (MARK at byte offset 4)"),
    ("TUPLE-no-MARK", P2 + b"K\x01t.", DEFAULT_LIMITS, PickleError,
     "no MARK to pop to (TUPLE at byte offset 4)"),
    ("TUPLE-depth", P2 + b"(K\x01\x85\x85t.", Limits(max_pickle_depth=2), ResourceLimitExceeded,
     "values nested more than 2 deep (limits.max_pickle_depth) (TUPLE at byte offset 7)"),
    ("EMPTY_DICT-depth-0", P2 + b"}.", Limits(max_pickle_depth=0), ResourceLimitExceeded,
     "values nested more than 0 deep (limits.max_pickle_depth) (EMPTY_DICT at byte offset 2)"),
    ("BINUNICODE-truncated-length", P2 + b"X\x01\x00", DEFAULT_LIMITS, PickleError,
     "length 4 runs past the end of the data (2 bytes left) (BINUNICODE at byte offset 2)"),
    ("BINUNICODE-past-end", P2 + b"X\x05\x00\x00\x00abc.", DEFAULT_LIMITS, PickleError,
     "length 5 runs past the end of the data (4 bytes left) (BINUNICODE at byte offset 2)"),
    ("BINUNICODE-bad-utf8", P2 + b"X\x01\x00\x00\x00\xff.", DEFAULT_LIMITS, PickleError,
     "string is not valid utf-8 (BINUNICODE at byte offset 2)"),
    ("REDUCE-underflow-across-MARK", P2 + glob("m", "f") + b"()R.", DEFAULT_LIMITS, PickleError,
     "stack underflow (would cross a MARK) (REDUCE at byte offset 9)"),
    ("REDUCE-not-allowed", P2 + uni("x") + b")R.", DEFAULT_LIMITS, PickleError,
     "REDUCE on a str, which is not an allow-listed global (REDUCE at byte offset 9)"),
    ("REDUCE-args-not-tuple", P2 + glob("m", "f") + b"]R.", DEFAULT_LIMITS, PickleError,
     "REDUCE arguments of m.f are a list, not a tuple (REDUCE at byte offset 8)"),
    ("REDUCE-callback-fails", P2 + glob("m", "bad") + b")R.", DEFAULT_LIMITS, PickleError,
     "m.bad failed: ValueError: no such thing (REDUCE at byte offset 10)"),
    ("REDUCE-callback-format-error", P2 + glob("m", "fmt") + b")R.", DEFAULT_LIMITS, PickleError,
     "m.fmt: bad tensor (REDUCE at byte offset 10)"),
    ("BINPERSID-underflow", P2 + b"Q.", DEFAULT_LIMITS, PickleError,
     "stack underflow (BINPERSID at byte offset 2)"),
    ("BINPERSID-fails", P2 + uni("key") + b"Q.", DEFAULT_LIMITS, PickleError,
     "persistent id failed: KeyError: 'key' (BINPERSID at byte offset 10)"),
    ("NEWOBJ-args", P2 + glob("__torch__", "M") + b"K\x01\x85\x81.", DEFAULT_LIMITS, PickleError,
     "NEWOBJ with constructor arguments (TorchScript passes none) (NEWOBJ at byte offset 18)"),
    ("NEWOBJ-depth-0", P2 + glob("__torch__", "M") + b")\x81.", Limits(max_pickle_depth=0), ResourceLimitExceeded,
     "values nested more than 0 deep (limits.max_pickle_depth) (NEWOBJ at byte offset 16)"),
    ("SETITEMS-target-below-MARK", P2 + b"}((K\x01K\x02u.", DEFAULT_LIMITS, PickleError,
     "stack underflow (would cross a MARK) (SETITEMS at byte offset 9)"),
    ("SETITEMS-sealed", P2 + b"}q\x00\x85h\x00(K\x01K\x02u.", DEFAULT_LIMITS, PickleError,
     "SETITEMS on a dict already placed inside another value (SETITEMS at byte offset 13)"),
    ("SETITEMS-odd", P2 + b"}(K\x01K\x02K\x03u.", DEFAULT_LIMITS, PickleError,
     "SETITEMS with an odd number of items after its MARK (SETITEMS at byte offset 10)"),
    ("SETITEMS-unhashable-late", P2 + b"}(K\x01K\x02]K\x03u.", DEFAULT_LIMITS, PickleError,
     "unhashable dict key of type list (SETITEMS at byte offset 11)"),
    ("SETITEMS-depth", P2 + b"}(K\x01}(K\x01]uu.", Limits(max_pickle_depth=2), ResourceLimitExceeded,
     "values nested more than 2 deep (limits.max_pickle_depth) (SETITEMS at byte offset 12)"),
    ("BUILD-underflow", P2 + glob("__torch__", "M") + b")\x81(}b.", DEFAULT_LIMITS, PickleError,
     "stack underflow (would cross a MARK) (BUILD at byte offset 19)"),
    ("BUILD-depth", P2 + glob("__torch__", "M") + b")\x81](]eb.", Limits(max_pickle_depth=2), ResourceLimitExceeded,
     "values nested more than 2 deep (limits.max_pickle_depth) (BUILD at byte offset 21)"),
    ("op-limit-on-BINGET", P2 + b"Nq\x00h\x00h\x00.", Limits(max_pickle_ops=4), ResourceLimitExceeded,
     "more than 4 pickle opcodes (limits.max_pickle_ops) (BINGET at byte offset 7)"),
    ("op-limit-on-TUPLE", P2 + b"(K\x01t.", Limits(max_pickle_ops=3), ResourceLimitExceeded,
     "more than 3 pickle opcodes (limits.max_pickle_ops) (TUPLE at byte offset 5)"),
    ("op-limit-at-end", P2 + b"N", Limits(max_pickle_ops=2), PickleError,
     "pickle ends without STOP (end of data at byte offset 3)"),
]


@pytest.mark.parametrize("name,data,limits,cls,message", FAST_PATH_ERRORS, ids=[c[0] for c in FAST_PATH_ERRORS])
def test_fast_path_errors_match_the_handlers(name: str, data: bytes, limits: Limits,
                                             cls: type[ModelFormatError], message: str) -> None:
    with pytest.raises(ModelFormatError) as info:
        load(data, globals=FAST_PATH_GLOBALS, persistent_load=_missing_pid, limits=limits)
    assert type(info.value) is cls
    assert str(info.value) == f"{RECORD}: {message}"


@pytest.mark.parametrize("levels", [1, 2, 3, 4])
def test_object_nesting_depth_is_exact(levels: int) -> None:
    """``levels`` nested archive objects (NEWOBJ, EMPTY_DICT, SETITEMS, BUILD: the fast paths) are
    2 * levels deep: they load at exactly that limit and not one below."""
    body = b"".join(b"h\x00)\x81}(h\x01" for _ in range(levels)) + b"N" + b"ub" * levels
    data = P2 + glob("__torch__", "M") + b"q\x000" + uni("c") + b"q\x010" + body + b"."
    obj = load(data, limits=Limits(max_pickle_depth=2 * levels))
    for _ in range(levels):
        assert type(obj) is PickledObject and obj.qualname == "__torch__.M"
        obj = obj.state["c"]
    assert obj is None
    expect(data, ResourceLimitExceeded, limits=Limits(max_pickle_depth=2 * levels - 1))


def test_c7_lengths_checked_before_allocation() -> None:
    for name, data, cls, _ in CORPUS:
        if name.startswith("C7"):
            tracemalloc.start()
            try:
                with pytest.raises(cls):
                    load(data)
                _, peak = tracemalloc.get_traced_memory()
            finally:
                tracemalloc.stop()
            assert peak < 1 << 20, name


# -- no code execution while loading the corpus ------------------------------------------------------

_AUDIT: dict[str, Any] = {"on": False, "events": []}
_FORBIDDEN_PREFIXES = ("exec", "compile", "import", "os.system", "os.exec", "os.spawn", "os.posix_spawn",
                       "os.fork", "subprocess.", "socket.", "ctypes.", "open", "os.remove", "os.rename",
                       "shutil.", "pickle.find_class", "marshal.", "code.__new__", "function.__new__")
_HOOK_INSTALLED = False


def _audit_hook(event: str, args: tuple[Any, ...]) -> None:
    if _AUDIT["on"] and event.startswith(_FORBIDDEN_PREFIXES):
        _AUDIT["events"].append((event, repr(args)[:200]))


def _install_audit_hook() -> None:
    """sys.addaudithook cannot be undone: install once per process, record only while "on"."""
    global _HOOK_INSTALLED
    if not _HOOK_INSTALLED:
        sys.addaudithook(_audit_hook)
        _HOOK_INSTALLED = True


def _corpus_with_torch() -> list[tuple[bytes, Any]]:
    """The corpus, plus real tensor pickles and hostile tensor pickles, with the torch globals."""
    writer = TensorWriter()
    tree = PickledObject("__torch__.M", {"w": writer.reduce(torch.arange(6.0).view(2, 3)), "l": [1, 2]})
    good = dump_pickle(tree, persistent_id=writer)
    records = dict(writer.records())
    storages = StorageReader(read_record=lambda k: records[f"data/{k}"])
    table = torch_globals(storages)
    items: list[tuple[bytes, Any]] = [(data, GLOBALS) for _, data, _, _ in CORPUS]
    items += [(good, table), (good[:len(good) // 2], table),
              (good.replace(b"cpu", b"xyz"), table), (good.replace(b"FloatStorage", b"QInt8Storage"), table)]
    return [(data, (g, storages)) for data, g in items]


def test_no_exec_import_or_process_during_load(monkeypatch: pytest.MonkeyPatch) -> None:
    _install_audit_hook()
    items = _corpus_with_torch()
    load(P2 + b"N.")                                  # prewarm

    def refuse(*args: Any, **kwargs: Any) -> Any:
        raise AssertionError("forbidden call during load")

    class NoUnpickler:
        def __init__(self, *args: Any, **kwargs: Any) -> None:
            raise AssertionError("pickle.Unpickler used during load")

    monkeypatch.setattr(pickle, "Unpickler", NoUnpickler)
    monkeypatch.setattr(pickle, "_Unpickler", NoUnpickler)
    monkeypatch.setattr(pickle, "loads", refuse)
    monkeypatch.setattr(pickle, "load", refuse)
    find_class = pickle._Unpickler.find_class if hasattr(pickle._Unpickler, "find_class") else None
    assert find_class is None or callable(find_class)
    results = []
    _AUDIT["events"] = []
    _AUDIT["on"] = True
    real_import, real_exec, real_eval = builtins.__import__, builtins.exec, builtins.eval
    builtins.__import__, builtins.exec, builtins.eval = refuse, refuse, refuse  # type: ignore[assignment]
    try:
        for data, (table, storages) in items:
            try:
                results.append(load_pickle(data, record=RECORD, globals=table, persistent_load=storages,
                                           limits=Limits(max_memo_entries=1000)))
            except ModelFormatError as e:
                results.append(e)
    finally:
        builtins.__import__, builtins.exec, builtins.eval = real_import, real_exec, real_eval
        _AUDIT["on"] = False
    assert _AUDIT["events"] == []
    assert isinstance(results[-4], PickledObject)          # the benign archive loaded
    assert sum(isinstance(r, ModelFormatError) for r in results) == len(results) - 1


# -- fuzzing: only the error hierarchy escapes -------------------------------------------------------

def _only_format_errors(data: bytes, table: Any, storages: Any) -> None:
    try:
        load_pickle(data, record=RECORD, globals=table, persistent_load=storages, limits=Limits(
            max_memo_entries=10_000, max_pickle_ops=100_000, max_tensor_bytes=1 << 20))
    except ModelFormatError as e:
        assert RECORD in str(e) and "byte offset" in str(e)


def _real_pickle() -> tuple[bytes, Any, Any]:
    writer = TensorWriter()
    w = torch.arange(12.0).view(3, 4)
    tree = PickledObject("__torch__.M", {
        "w": writer.reduce(w), "view": writer.reduce(w[1:, ::2]), "b": writer.reduce(torch.ones(2, dtype=torch.half)),
        "training": True, "ints": Call("torch.jit._pickle", "build_intlist", ([1, 2, 3],)),
        "d": Call("torch.jit._pickle", "restore_type_tag", ({"a": 1.0}, "Dict[str, float]")),
        "dev": Call("torch", "device", ("cpu",)), "c": Call("builtins", "complex", (1.0, 2.0)),
        "sub": PickledObject("__torch__.Sub", {"x": (1, "y", None), "e": PickledEnum("__torch__.E", 2)}),
    })
    data = dump_pickle(tree, persistent_id=writer, memoize=lambda v: isinstance(v, PickledObject))
    records = dict(writer.records())
    storages = StorageReader(read_record=lambda k: records[f"data/{k}"])
    return data, torch_globals(storages), storages


REAL, REAL_GLOBALS, REAL_STORAGES = _real_pickle()


def test_real_pickle_loads() -> None:
    y = load_pickle(REAL, record=RECORD, globals=REAL_GLOBALS, persistent_load=REAL_STORAGES)
    assert torch.equal(y.state["w"], torch.arange(12.0).view(3, 4))
    assert y.state["view"].untyped_storage().data_ptr() == y.state["w"].untyped_storage().data_ptr()
    assert y.state["ints"] == [1, 2, 3] and y.state["d"] == {"a": 1.0}
    assert y.state["c"] == 1 + 2j and y.state["dev"] == torch.device("cpu")
    assert y.state["sub"].state["e"] == PickledEnum("__torch__.E", 2)


@settings(max_examples=400, deadline=None)
@given(st.binary(max_size=300))
def test_fuzz_random_bytes(data: bytes) -> None:
    _only_format_errors(data, REAL_GLOBALS, REAL_STORAGES)
    _only_format_errors(P2 + data, REAL_GLOBALS, REAL_STORAGES)


@settings(max_examples=600, deadline=None)
@given(st.lists(st.tuples(st.sampled_from(["flip", "insert", "delete", "set"]), st.integers(0, 10**6),
                          st.integers(0, 255)), min_size=1, max_size=6))
def test_fuzz_mutated_real_pickle(mutations: list[tuple[str, int, int]]) -> None:
    data = bytearray(REAL)
    for kind, pos, byte in mutations:
        pos %= len(data) + 1
        if kind == "insert":
            data[pos:pos] = bytes([byte])
        elif pos < len(data):
            if kind == "delete":
                del data[pos]
            elif kind == "flip":
                data[pos] ^= 1 << (byte % 8)
            else:
                data[pos] = byte
    _only_format_errors(bytes(data), REAL_GLOBALS, REAL_STORAGES)


def test_every_truncation_is_rejected() -> None:
    for n in range(len(REAL)):
        with pytest.raises(ModelFormatError):
            load_pickle(REAL[:n], record=RECORD, globals=REAL_GLOBALS, persistent_load=REAL_STORAGES)
