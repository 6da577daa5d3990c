"""The zip container: the strict reader (SECURITY.md 7.A, cases A1-A14), the deterministic,
miniz-compatible writer (H5) and atomic saving (H1, H6).

Malformed archives are built here field by field with :mod:`struct` (``make_zip``) or by
patching the bytes of a valid one; each case asserts the error class and that the message
names the record or the file offset.  ``torch.jit`` and :mod:`zipfile` serve only as oracles.
"""

from __future__ import annotations

import errno
import gzip
import io
import os
import pickle
import random
import stat
import struct
import tarfile
import tempfile
import zipfile
import zlib
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import BinaryIO, cast
from unittest import mock

import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st

from kiln.errors import ArchiveError, ModelFormatError, ResourceLimitExceeded, UnsupportedFeature
from kiln.serialization import archive as archive_module
from kiln.serialization.archive import ArchiveReader, ArchiveWriter, atomic_write, open_archive
from kiln.serialization.limits import Limits

U32 = 0xFFFFFFFF
DEFAULT = Limits()


# -- a zip built field by field ------------------------------------------------------------------

@dataclass
class Rec:
    name: bytes
    data: bytes
    method: int = 0
    flags: int = 0x800
    descriptor: bool = False      # miniz style: bit 3, zero local fields, a descriptor after the data
    zip64: bool = False           # sizes and offset in ZIP64 extra fields
    sig: bool = True              # the descriptor starts with its optional signature
    pad: int | None = None        # bytes of a PyTorch-style "FB" padding field in the local extra area
    extra: bytes = b""            # appended to the local extra area as it is


def _local_and_central(rec: Rec, offset: int) -> tuple[bytes, bytes]:
    payload = rec.data
    if rec.method == 8:
        c = zlib.compressobj(6, zlib.DEFLATED, -15)
        payload = c.compress(rec.data) + c.flush()
    crc, csize, usize = zlib.crc32(rec.data), len(payload), len(rec.data)
    flags = rec.flags | (0x8 if rec.descriptor else 0)
    local_extra = central_extra = b""
    l_crc, l_csize, l_usize = crc, csize, usize
    c_csize, c_usize, c_off = csize, usize, offset
    if rec.zip64:
        local_extra = struct.pack("<HHQQ", 1, 16, usize, csize)
        l_csize = l_usize = U32
        central_extra = struct.pack("<HHQQQ", 1, 24, usize, csize, offset)
        c_csize = c_usize = c_off = U32
    if rec.pad is not None:
        local_extra += struct.pack("<HH", 0x4246, rec.pad) + b"Z" * rec.pad
    local_extra += rec.extra
    tail = b""
    if rec.descriptor:
        l_crc = l_csize = l_usize = 0
        sizes = struct.pack("<QQ", csize, usize) if rec.zip64 else struct.pack("<II", csize, usize)
        tail = (b"PK\x07\x08" if rec.sig else b"") + struct.pack("<I", crc) + sizes
    local = struct.pack("<4sHHHHHIIIHH", b"PK\x03\x04", 20, flags, rec.method, 0, 0x21, l_crc, l_csize,
                        l_usize, len(rec.name), len(local_extra)) + rec.name + local_extra + payload + tail
    central = struct.pack("<4sHHHHHHIIIHHHHHII", b"PK\x01\x02", 20, 20, flags, rec.method, 0, 0x21, crc,
                          c_csize, c_usize, len(rec.name), len(central_extra), 0, 0, 0, 0, c_off)
    return local, central + rec.name + central_extra


def make_zip(records: list[Rec], *, comment: bytes = b"", zip64_end: bool = False) -> bytes:
    body, directory = b"", b""
    for rec in records:
        local, central = _local_and_central(rec, len(body))
        body += local
        directory += central
    count, cd_off, cd_size = len(records), len(body), len(directory)
    end = b""
    if zip64_end:
        end = struct.pack("<4sQHHIIQQQQ", b"PK\x06\x06", 44, 45, 45, 0, 0, count, count, cd_size, cd_off)
        end += struct.pack("<4sIQI", b"PK\x06\x07", 0, cd_off + cd_size, 1)
        count, cd_size, cd_off = 0xFFFF, U32, U32
    end += struct.pack("<4sHHHHIIH", b"PK\x05\x06", 0, 0, count, count, cd_size, cd_off, len(comment))
    return body + directory + end + comment


RECORDS = [
    Rec(b"archive/data.pkl", b"\x80\x02}q\x00." * 3),
    Rec(b"archive/code/__torch__.py", b"class M(Module):\n  pass\n" * 20, method=8),
    Rec(b"archive/data/0", bytes(range(256)) * 4),
    Rec(b"archive/version", b"3\n"),
]


def valid_zip(**kw: object) -> bytes:
    return make_zip([Rec(**{**r.__dict__, **kw}) for r in RECORDS])


def written(records: dict[str, bytes] | None = None, **kw: object) -> bytes:
    w = ArchiveWriter(**kw)  # type: ignore[arg-type]
    for name, data in (records or {"data.pkl": b"\x80\x02." * 10, "code/__torch__.py": b"x = 1\n" * 50,
                                   "data/0": bytes(1000), "version": b"3\n"}).items():
        w.add(name, data, compress=name.startswith("code/"))
    return w.finish()


def _read_records(r: ArchiveReader) -> dict[str, bytes]:
    out = {}
    for n in r.names():
        out[n] = r.read(n)
        dest = bytearray(len(out[n]))
        r.read_into(n, memoryview(dest))
        assert dest == out[n]
    return out


def read_all(blob: bytes, limits: Limits = DEFAULT) -> dict[str, bytes]:
    """Every record, read from the bytes in memory and again from a file on disk (positional
    reads straight into their destination): both ways must accept the same files with the same
    contents and reject the rest with the same error."""
    outcomes: list[tuple[str, object]] = []
    with tempfile.TemporaryDirectory() as d:
        path = os.path.join(d, "t.pt")
        with open(path, "wb") as f:
            f.write(blob)
        for how in ("bytes", "file"):
            try:
                if how == "bytes":
                    outcomes.append(("ok", _read_records(ArchiveReader(blob, limits=limits, source="t.pt"))))
                else:
                    with ArchiveReader.open_file(path, limits=limits, source="t.pt") as r:
                        outcomes.append(("ok", _read_records(r)))
            except ModelFormatError as e:
                outcomes.append(("error", e))
    (kind, value), (file_kind, file_value) = outcomes
    if kind == "error":
        assert file_kind == "error" and type(file_value) is type(value) and str(file_value) == str(value), \
            (value, file_value)
        raise value  # type: ignore[misc]
    assert (file_kind, file_value) == (kind, value)
    return value  # type: ignore[return-value]


# -- offsets inside an archive (EOCD at the very end, no comment) ---------------------------------

def eocd_at(blob: bytes) -> int:
    return len(blob) - 22


def central_ats(blob: bytes) -> list[int]:
    count, _, cd_off = struct.unpack_from("<HII", blob, eocd_at(blob) + 10)
    if cd_off == U32:
        count, _, cd_off = struct.unpack_from("<QQQ", blob, eocd_at(blob) - 20 - 56 + 32)
    out, pos = [], cd_off
    for _ in range(count):
        out.append(pos)
        n, e, c = struct.unpack_from("<HHH", blob, pos + 28)
        pos += 46 + n + e + c
    return out


def local_ats(blob: bytes) -> list[int]:
    return [struct.unpack_from("<I", blob, c + 42)[0] for c in central_ats(blob)]


def patch(blob: bytes, offset: int, fmt: str, *values: int | bytes) -> bytes:
    out = bytearray(blob)
    struct.pack_into(fmt, out, offset, *values)
    return bytes(out)


def expect(blob: bytes, cls: type[ModelFormatError], *fragments: str, limits: Limits = DEFAULT) -> str:
    with pytest.raises(cls) as info:
        read_all(blob, limits)
    message = str(info.value)
    assert message.startswith("t.pt: "), message
    for fragment in fragments:
        assert fragment in message, message
    return message


# -- round trips ----------------------------------------------------------------------------------

def test_writer_round_trip_is_aligned_and_deterministic() -> None:
    records = {"data.pkl": b"p" * 33, "code/__torch__/m.py": b"def f(): pass\n" * 9, "data/0": b"\x01" * 7,
               "extra/empty": b"", "données/é": "ü".encode()}
    blobs = [written(records), written(records)]
    assert blobs[0] == blobs[1]
    r = ArchiveReader(blobs[0])
    assert r.prefix == "archive" and r.names() == list(records)
    for name, data in records.items():
        assert r.read(name) == data and bytes(r.view(name)) == data
        assert r.data_offset(name) % 64 == 0
    assert r.record("code/__torch__/m.py").method == 8 and r.record("data/0").method == 0
    assert r.has("data/0") and not r.has("data/1")
    assert r.view("data/0").obj is blobs[0]  # stored records are zero-copy views of the input


def test_writer_output_reads_in_zipfile_with_fixed_timestamps() -> None:
    blob = written()
    with zipfile.ZipFile(io.BytesIO(blob)) as z:
        assert z.testzip() is None
        assert {i.date_time for i in z.infolist()} == {(1980, 1, 1, 0, 0, 0)}
        assert [i.filename for i in z.infolist()][0] == "archive/data.pkl"


@pytest.mark.parametrize("threshold", [1, 100, 500])
def test_writer_zip64_path(threshold: int) -> None:
    records = {f"data/{i}": bytes([i]) * (40 * i) for i in range(6)}
    blob = written(records, zip64_threshold=threshold)
    assert b"PK\x06\x06" in blob and b"PK\x06\x07" in blob
    assert read_all(blob) == records
    with zipfile.ZipFile(io.BytesIO(blob)) as z:
        assert z.testzip() is None and {i.filename for i in z.infolist()} == {f"archive/{n}" for n in records}


def test_reader_hand_built_zip64_and_descriptors() -> None:
    records = [Rec(b"archive/a", b"A" * 300, zip64=True), Rec(b"archive/b", b"B" * 300, method=8, zip64=True,
                                                             descriptor=True),
               Rec(b"archive/c", b"C" * 5, descriptor=True, sig=False), Rec(b"archive/d", b"", zip64=True)]
    blob = make_zip(records, zip64_end=True)
    with zipfile.ZipFile(io.BytesIO(blob)) as z:  # the oracle agrees the construction is valid
        assert z.testzip() is None
    assert read_all(blob) == {"a": b"A" * 300, "b": b"B" * 300, "c": b"C" * 5, "d": b""}


def test_open_archive_sources(tmp_path: Path) -> None:
    blob = written()
    path = tmp_path / "model.pt"
    path.write_bytes(blob)
    expected = read_all(blob)
    for src in (str(path), path, blob, bytearray(blob), memoryview(blob), io.BytesIO(blob)):
        r = open_archive(src)
        assert {n: r.read(n) for n in r.names()} == expected
    with open(path, "rb") as f:
        assert open_archive(f).names() == list(expected)

    class Pipe:  # neither seekable nor a file: read in capped chunks
        def __init__(self) -> None:
            self._inner = io.BytesIO(blob)

        def read(self, n: int = -1) -> bytes:
            return self._inner.read(min(n, 100))

    assert open_archive(cast(BinaryIO, Pipe())).names() == list(expected)
    small = Limits(max_archive_bytes=100)
    for source in (str(path), io.BytesIO(blob), cast(BinaryIO, Pipe()), blob):
        with pytest.raises(ResourceLimitExceeded, match="max_archive_bytes"):
            open_archive(source, limits=small)
    path.write_bytes(b"not a zip at all")
    with pytest.raises(ArchiveError, match="model.pt: .*not a zip"):
        open_archive(path)


# -- torch.jit interop ------------------------------------------------------------------------------

class Affine(torch.nn.Module):
    def __init__(self) -> None:
        super().__init__()
        self.weight = torch.nn.Parameter(torch.arange(6.0).reshape(2, 3))
        self.bias = torch.nn.Parameter(torch.ones(2))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return torch.nn.functional.linear(x, self.weight, self.bias).relu()


def _jit_archive() -> bytes:
    buf = io.BytesIO()
    torch.jit.save(torch.jit.script(Affine()), buf, _extra_files={"empty.txt": "", "note.txt": "hi"})
    return buf.getvalue()


@pytest.mark.torch_jit
def test_reader_reads_torch_jit_save_archive() -> None:
    blob = _jit_archive()
    r = ArchiveReader(blob)
    assert r.prefix == "archive"
    with zipfile.ZipFile(io.BytesIO(blob)) as z:
        oracle = {i.filename.split("/", 1)[1]: (z.read(i), i.compress_type) for i in z.infolist()}
    assert r.names() == list(oracle)
    assert any(method == zipfile.ZIP_DEFLATED for _, method in oracle.values())
    for name, (data, method) in oracle.items():
        assert r.read(name) == data and r.record(name).method == method
        if method == zipfile.ZIP_STORED:
            assert r.data_offset(name) % 64 == 0
    assert r.read("extra/empty.txt") == b""


@pytest.mark.torch_jit
@pytest.mark.parametrize("threshold", [U32, 200])
def test_torch_jit_load_reads_writer_output(threshold: int) -> None:
    blob = _jit_archive()
    r = ArchiveReader(blob)
    w = ArchiveWriter(r.prefix, zip64_threshold=threshold)
    for name in r.names():
        w.add(name, r.read(name), compress=r.record(name).method == 8)
    copy = w.finish()
    x = torch.randn(4, 3)
    original = torch.jit.load(io.BytesIO(blob))  # type: ignore[no-untyped-call]
    loaded = torch.jit.load(io.BytesIO(copy))  # type: ignore[no-untyped-call]
    assert torch.equal(original(x), loaded(x))
    files: dict[str, bytes] = {"note.txt": b""}
    torch.jit.load(io.BytesIO(copy), _extra_files=files)  # type: ignore[no-untyped-call]
    assert files["note.txt"] == b"hi"


# -- the malformed-archive corpus (SECURITY.md 7.A) -------------------------------------------------

def _quoted_overlap() -> bytes:
    """Record a's data quotes a complete local header of record b; b's central entry points inside."""
    inner_local, _ = _local_and_central(Rec(b"archive/b", b"payload"), 0)
    blob = make_zip([Rec(b"archive/a", b"0123" + inner_local), Rec(b"archive/b", b"payload")])
    b_central = central_ats(blob)[1]
    return patch(blob, b_central + 42, "<I", 30 + len(b"archive/a") + 4)


def _duplicate() -> bytes:
    return make_zip([Rec(b"archive/data.pkl", b"one"), Rec(b"archive/data.pkl", b"two")])


def _central_count(delta: int) -> Callable[[], bytes]:
    def build() -> bytes:
        blob = valid_zip()
        count = len(RECORDS) + delta
        return patch(blob, eocd_at(blob) + 8, "<HH", count, count)
    return build


def _sizes(index: int, csize: int | None = None, usize: int | None = None) -> bytes:
    """valid_zip() with record ``index``'s sizes changed in both its local and central header."""
    blob = valid_zip()
    local, central = local_ats(blob)[index], central_ats(blob)[index]
    for at in (local + 18, central + 20):
        old_c, old_u = struct.unpack_from("<II", blob, at)
        blob = patch(blob, at, "<II", old_c if csize is None else csize, old_u if usize is None else usize)
    return blob


def _zip64_blob() -> bytes:
    return make_zip([Rec(b"archive/a", b"A" * 100, zip64=True), Rec(b"archive/b", b"B" * 10)], zip64_end=True)


def _central_extra_len(new_len: int) -> bytes:
    """Shorten the first central entry's 24-byte ZIP64 field to ``new_len``; the bytes it gives up
    become an unrelated field when there is room for one's header."""
    blob = _zip64_blob()
    at = central_ats(blob)[0] + 46 + len(b"archive/a")
    blob = patch(blob, at, "<HH", 1, new_len)
    rest = 24 - new_len
    if rest >= 4:
        blob = patch(blob, at + 4 + new_len, "<HH", 0x9999, rest - 4)
    return blob


CASES: dict[str, tuple[Callable[[], bytes], type[ModelFormatError], tuple[str, ...]]] = {
    # A1: not a zip
    "A1-empty": (lambda: b"", ArchiveError, ("not a zip archive",)),
    "A1-random": (lambda: random.Random(1).randbytes(3000), ArchiveError, ("not a zip archive", "offset 0")),
    "A1-text": (lambda: b"def forward(self, x):\n    return x\n" * 5, ArchiveError, ("not a zip archive",)),
    # A2: truncation (more in test_truncation_anywhere)
    "A2-eocd-removed": (lambda: valid_zip()[:-22], ArchiveError, ("no end of central directory", "offset")),
    "A2-mid-central": (lambda: valid_zip()[:central_ats(valid_zip())[1] + 10], ArchiveError, ("offset",)),
    # A3: directory pointing past EOF, count mismatch
    "A3-cd-offset-past-eof": (lambda: patch(valid_zip(), eocd_at(valid_zip()) + 16, "<I", 10**9), ArchiveError,
                              ("past the end", "offset")),
    "A3-cd-size-past-eof": (lambda: patch(valid_zip(), eocd_at(valid_zip()) + 12, "<I", 10**9), ArchiveError,
                            ("past the end", "offset")),
    "A3-count-high": (_central_count(+1), ArchiveError, ("offset",)),
    "A3-count-low": (_central_count(-1), ArchiveError, ("beyond its 3 declared records", "offset")),
    # A4: absurd declared sizes
    "A4-csize-ffffffff": (lambda: patch(valid_zip(), central_ats(valid_zip())[0] + 20, "<I", U32), ArchiveError,
                          ("ZIP64", "archive/data.pkl")),
    "A4-stored-2.2GB": (lambda: _sizes(0, 2_200_000_000, 2_200_000_000), ArchiveError,
                        ("runs past", "archive/data.pkl")),
    "A4-deflate-usize-2.2GB": (lambda: _sizes(1, usize=2_200_000_000), ArchiveError,
                               ("more than deflate can produce", "archive/code/__torch__.py")),
    "A4-local-disagrees": (lambda: patch(valid_zip(), central_ats(valid_zip())[0] + 20, "<II", 10**6, 10**6),
                           ArchiveError, ("local header declares", "archive/data.pkl")),
    # A5: inflation beyond what is declared
    "A5-inflates-past-declared": (lambda: _sizes(1, usize=100), ArchiveError,
                                  ("inflate", "archive/code/__torch__.py")),
    # A6: overlapping records
    "A6-quoted-overlap": (_quoted_overlap, ArchiveError, ("overlaps", "archive/b")),
    "A6-into-central-directory": (lambda: _sizes(3, 40, 40), ArchiveError, ("runs past", "archive/version")),
    # A7: ambiguous names
    "A7-duplicate": (_duplicate, ArchiveError, ("duplicate", "archive/data.pkl")),
    "A7-nfc-twins": (lambda: make_zip([Rec("archive/caf\u00e9".encode(), b"1"),
                                       Rec("archive/cafe\u0301".encode(), b"2")]), ArchiveError, ("NFC", "caf")),
    # A8: local/central disagreement, CRC, encryption, methods, descriptors
    "A8-local-name": (lambda: patch(valid_zip(), 30 + len(b"archive/da"), "<1s", b"X"), ArchiveError,
                      ("local header names", "archive/data.pkl")),
    "A8-bad-crc": (lambda: patch(valid_zip(), local_ats(valid_zip())[2] + 30 + len(b"archive/data/0"), "<B", 99),
                   ArchiveError, ("CRC", "archive/data/0")),
    "A8-encrypted": (lambda: valid_zip(flags=0x801), UnsupportedFeature, ("encrypted", "archive/data.pkl")),
    "A8-method-bzip2": (lambda: make_zip([Rec(b"archive/a", b"abc", method=12)]), UnsupportedFeature,
                        ("compression method 12", "archive/a")),
    "A8-method-aes": (lambda: make_zip([Rec(b"archive/a", b"abc", method=99)]), UnsupportedFeature,
                      ("method 99",)),
    "A8-descriptor-mismatch": (lambda: patch(make_zip([Rec(b"archive/a", b"abc", descriptor=True)]),
                                             30 + 9 + 3 + 4, "<I", 0x1234), ArchiveError,
                               ("data descriptor", "archive/a")),
    "A8-local-flags": (lambda: patch(valid_zip(), 6, "<H", 0x802), ArchiveError, ("flags", "archive/data.pkl")),
    # A9: unsafe names
    "A9-dotdot": (lambda: make_zip([Rec(b"archive/../../etc/x", b"x")]), ArchiveError, ("'..'", "etc/x")),
    "A9-absolute": (lambda: make_zip([Rec(b"/abs", b"x")]), ArchiveError, ("absolute", "/abs")),
    "A9-backslash": (lambda: make_zip([Rec(b"archive/C:\\x", b"x")]), ArchiveError, ("backslash",)),
    "A9-drive": (lambda: make_zip([Rec(b"archive/C:/x", b"x")]), ArchiveError, ("drive letter",)),
    "A9-dotdot-backslash": (lambda: make_zip([Rec(b"archive/..\\..", b"x")]), ArchiveError, ("backslash",)),
    "A9-nul": (lambda: make_zip([Rec(b"archive/a\x00b", b"x")]), ArchiveError, ("U+0000",)),
    "A9-bidi": (lambda: make_zip([Rec("archive/a\u202eb".encode(), b"x")]), ArchiveError, ("U+202E",)),
    "A9-64KB-name": (lambda: make_zip([Rec(b"archive/" + b"n" * 65000, b"x")]), ResourceLimitExceeded,
                     ("max_name_bytes", "offset")),
    "A9-invalid-utf8": (lambda: make_zip([Rec(b"archive/\xff\xfe", b"x")]), ArchiveError, ("UTF-8",)),
    "A9-non-ascii-no-flag": (lambda: make_zip([Rec("archive/é".encode(), b"x", flags=0)]), ArchiveError,
                             ("bit 11",)),
    "A9-directory-entry": (lambda: make_zip([Rec(b"archive/", b"")]), ArchiveError, ("trailing",)),
    # A10: prefixes
    "A10-root": (lambda: make_zip([Rec(b"data.pkl", b"x")]), ArchiveError, ("zip root", "data.pkl")),
    "A10-two-prefixes": (lambda: make_zip([Rec(b"a/data.pkl", b"x"), Rec(b"b/data.pkl", b"y")]), ArchiveError,
                         ("second top-level folder", "b/data.pkl")),
    # A11: other formats
    "A11-tar": (lambda: _tar(), UnsupportedFeature, ("tar archive",)),
    "A11-pickle": (lambda: pickle.dumps({"a": 1}, protocol=4), UnsupportedFeature, ("raw pickle (protocol 4)",)),
    "A11-legacy-torch": (lambda: pickle.dumps(0x1950A86A20F9469CFC6C, protocol=2) + pickle.dumps(1001),
                         UnsupportedFeature, ("legacy torch.save",)),
    "A11-gzip": (lambda: gzip.compress(b"x" * 100, mtime=0), UnsupportedFeature, ("gzip",)),
    "A11-7z": (lambda: b"7z\xbc\xaf\x27\x1c" + bytes(100), UnsupportedFeature, ("7z",)),
    "A11-safetensors": (lambda: struct.pack("<Q", 14) + b'{"a":"b"}     ' + bytes(8), UnsupportedFeature,
                        ("safetensors",)),
    # A12: polyglots and junk
    "A12-pickle-then-zip": (lambda: pickle.dumps([1, 2], protocol=2) + valid_zip(), ArchiveError,
                            ("junk prefix or polyglot", "offset 0")),
    "A12-junk-prefix": (lambda: b"junk" + valid_zip(), ArchiveError, ("offset 0",)),
    "A12-zip-then-pickle": (lambda: valid_zip() + pickle.dumps([1, 2], protocol=2), ArchiveError,
                            ("does not end at EOF", "offset")),
    "A12-comment-length": (lambda: patch(valid_zip(), eocd_at(valid_zip()) + 20, "<H", 5),
                           ArchiveError, ("offset",)),
    "A12-fake-eocd-in-comment": (lambda: make_zip(RECORDS, comment=b"PK\x05\x06" + bytes(16) + b"\x00\x00"),
                                 ArchiveError, ("ambiguous", "offset")),
    "A12-gap-between-records": (lambda: _gap(), ArchiveError, ("unaccounted", "archive/b")),
    # A13: counts
    "A13-count-60000": (lambda: patch(valid_zip(), eocd_at(valid_zip()) + 8, "<HH", 60000, 60000), ArchiveError,
                        ("cannot hold", "offset")),
    "A13-zip64-count-1e6": (lambda: patch(_zip64_blob(), eocd_at(_zip64_blob()) - 20 - 56 + 24, "<QQ",
                                          1_000_000, 1_000_000), ResourceLimitExceeded, ("max_entries",)),
    # A14: malformed ZIP64
    "A14-extra-too-short": (lambda: _central_extra_len(8), ArchiveError,
                            ("ZIP64 extra field of 8 bytes", "archive/a")),
    "A14-extra-partial": (lambda: patch(_zip64_blob(), central_ats(_zip64_blob())[0] + 46 + 9, "<HH", 1, 40),
                          ArchiveError, ("overruns", "archive/a")),
    "A14-extra-underflow": (lambda: _central_extra_len(22), ArchiveError, ("truncated extra field", "archive/a")),
    "A14-marker-without-extra": (lambda: patch(valid_zip(), central_ats(valid_zip())[0] + 42, "<I", U32),
                                 ArchiveError, ("no ZIP64 extra field", "archive/data.pkl")),
    "A14-locator-anywhere": (lambda: patch(_zip64_blob(), eocd_at(_zip64_blob()) - 20 + 8, "<Q", 7),
                             ArchiveError, ("offset",)),
    "A14-locator-huge": (lambda: patch(_zip64_blob(), eocd_at(_zip64_blob()) - 20 + 8, "<Q", 2**63),
                         ArchiveError, ("ZIP64 locator", "offset")),
    "A14-record-size": (lambda: patch(_zip64_blob(), eocd_at(_zip64_blob()) - 20 - 56 + 4, "<Q", 2**64 - 1),
                        ArchiveError, ("ZIP64 end record", "offset")),
    "A14-eocd-contradicts": (lambda: patch(_zip64_blob(), eocd_at(_zip64_blob()) + 8, "<HH", 3, 3),
                             ArchiveError, ("contradicts",)),
    "A14-multidisk": (lambda: patch(_zip64_blob(), eocd_at(_zip64_blob()) - 20 + 16, "<I", 2),
                      UnsupportedFeature, ("multi-disk",)),
}


def _tar() -> bytes:
    buf = io.BytesIO()
    with tarfile.open(fileobj=buf, mode="w", format=tarfile.USTAR_FORMAT) as t:
        info = tarfile.TarInfo("pickle")
        info.size = 3
        t.addfile(info, io.BytesIO(b"abc"))
    return buf.getvalue()


def _gap() -> bytes:
    """Four junk bytes between two records, the directory adjusted to skip them."""
    blob = make_zip([Rec(b"archive/a", b"x"), Rec(b"archive/b", b"y")])
    b_local, b_central = local_ats(blob)[1], central_ats(blob)[1]
    blob = patch(blob, b_central + 42, "<I", b_local + 4)
    blob = patch(blob, eocd_at(blob) + 16, "<I", central_ats(blob)[0] + 4)
    return blob[:b_local] + b"JUNK" + blob[b_local:]


@pytest.mark.parametrize("case", list(CASES))
def test_malformed_archive_corpus(case: str) -> None:
    build, cls, fragments = CASES[case]
    expect(build(), cls, *fragments)


def test_every_security_case_is_covered() -> None:
    assert {case.split("-")[0] for case in CASES} == {f"A{i}" for i in range(1, 15)}


def test_limits() -> None:
    bomb = make_zip([Rec(b"archive/data/0", bytes(10 * 2**20), method=8)])
    assert len(bomb) < 20_000
    expect(bomb, ResourceLimitExceeded, "max_record_bytes", "archive/data/0", limits=Limits(max_record_bytes=2**20))
    expect(valid_zip(), ResourceLimitExceeded, "max_total_bytes", limits=Limits(max_total_bytes=1000))
    expect(valid_zip(), ResourceLimitExceeded, "max_entries", "offset", limits=Limits(max_entries=3))
    expect(valid_zip(), ResourceLimitExceeded, "max_archive_bytes", limits=Limits(max_archive_bytes=100))
    expect(valid_zip(), ResourceLimitExceeded, "max_name_bytes", limits=Limits(max_name_bytes=10))
    # repeated reads are charged too
    r = ArchiveReader(bomb, limits=Limits(max_total_bytes=25 * 2**20))
    r.read("data/0")
    r.read("data/0")
    with pytest.raises(ResourceLimitExceeded, match="archive/data/0"):
        r.read("data/0")


def test_nested_zip_is_just_bytes_and_comment_allowed() -> None:
    inner = valid_zip()
    blob = make_zip([Rec(b"archive/extra/inner.zip", inner)], comment=b"a comment")
    r = ArchiveReader(blob)
    assert r.read("extra/inner.zip") == inner and r.names() == ["extra/inner.zip"]


def test_missing_record_names_it() -> None:
    r = ArchiveReader(valid_zip(), source="m.pt")
    with pytest.raises(ArchiveError, match=r"m\.pt: no record archive/nope"):
        r.read("nope")


def test_truncation_anywhere() -> None:
    for blob in (valid_zip(), written(), make_zip(RECORDS, zip64_end=True),
                 valid_zip(descriptor=True)):
        n = len(blob)
        cuts = {n * i // 16 for i in range(16)}
        for header in (0, *local_ats(blob), *central_ats(blob), eocd_at(blob)):
            cuts |= {header + k for k in (1, 3, 4, 10, 21, 29, 30, 45)}
        for cut in sorted(c for c in cuts if c < n):
            with pytest.raises(ArchiveError):
                read_all(blob[:cut])


def test_valid_variants_are_accepted() -> None:
    expected = {r.name.decode()[8:]: r.data for r in RECORDS}
    assert read_all(valid_zip()) == expected
    assert read_all(valid_zip(descriptor=True)) == expected
    assert read_all(valid_zip(descriptor=True, sig=False)) == expected
    assert read_all(make_zip(RECORDS, zip64_end=True, comment=b"hello")) == expected


# -- fuzzing ----------------------------------------------------------------------------------------

SEEDS = [valid_zip(descriptor=True), make_zip([Rec(b"archive/a", b"A" * 100, zip64=True, method=8),
                                              Rec(b"archive/b", b"B")], zip64_end=True), written()]


@settings(max_examples=200, deadline=None)
@given(seed=st.sampled_from(SEEDS), ops=st.lists(st.tuples(st.sampled_from(["flip", "cut", "insert", "set"]),
                                                           st.integers(0, 10**6), st.integers(0, 255)),
                                                 min_size=1, max_size=4))
def test_fuzz_only_model_format_errors(seed: bytes, ops: list[tuple[str, int, int]]) -> None:
    data = bytearray(seed)
    for op, where, value in ops:
        i = where % (len(data) + 1)
        if op == "flip" and i < len(data):
            data[i] ^= 1 << (value % 8)
        elif op == "set" and i < len(data):
            data[i] = value
        elif op == "cut":
            del data[i:]
        elif op == "insert":
            data[i:i] = bytes([value]) * (1 + value % 5)
    try:
        r = ArchiveReader(bytes(data))
        for name in r.names():
            r.read(name)
            r.view(name)
    except ModelFormatError:
        pass


# -- the fast paths agree with the reference checks --------------------------------------------------
#
# The reader checks the common case on fast paths and hands anything unusual to the detailed
# checks (the reference), which raise every error.  With ``_FAST_PATHS`` off only the reference
# runs: on every input, valid or not, both must give the same records or the same error, from
# bytes and from a file alike.

def _pytorch_like(*, zip64: bool = False) -> bytes:
    """What torch.jit.save (miniz) writes: UTF-8 flag, zero local CRC and sizes, an "FB" padding
    field, a signed data descriptor; records larger than the file reader's read-ahead too."""
    records = [Rec(b"archive/data.pkl", b"\x80\x02}q\x00." * 3, pad=30), Rec(b"archive/data/0", bytes(9000), pad=0),
               Rec(b"archive/code/__torch__.py", b"x = 1\n" * 900, method=8, pad=7),
               Rec(b"archive/data/1", bytes(range(256)) * 20, pad=63, zip64=zip64),
               Rec(b"archive/.data/version", b"3\n", pad=12), Rec(b"archive/extra/empty", b"", pad=1)]
    return make_zip([Rec(**{**r.__dict__, "descriptor": True}) for r in records], zip64_end=zip64)


FAST_SEEDS = [_pytorch_like(), _pytorch_like(zip64=True), valid_zip(), valid_zip(descriptor=True, sig=False),
              written(), written(zip64_threshold=200),
              make_zip([Rec(b"archive/x/.y/...-_", b"1", flags=0), Rec("archive/caf\u00e9".encode(), b"2"),
                        Rec(b"archive/a", b"3" * 5000, descriptor=True, pad=2)])]


def _anchors(blob: bytes) -> list[int]:
    return [0, *local_ats(blob), *central_ats(blob), eocd_at(blob)]


def _outcomes(blob: bytes, limits: Limits, path: str) -> list[object]:
    """The prefix and records the reader finds in ``blob`` read from bytes, then from a file at
    ``path``; or the error class and message."""
    out: list[object] = []
    for how in ("bytes", "file"):
        try:
            r = ArchiveReader(blob, limits=limits, source="t.pt") if how == "bytes" else \
                ArchiveReader.open_file(path, limits=limits, source="t.pt")
            with r:
                out.append((r.prefix, [r.record(n) for n in r.names()]))
        except ModelFormatError as e:
            out.append((type(e), str(e)))
    return out


def assert_fast_paths_match_reference(blob: bytes, limits: Limits = DEFAULT, path: Path | None = None) -> None:
    """Same outcome with and without the fast paths, from bytes and from a file (at ``path``)."""
    if path is None:
        with tempfile.TemporaryDirectory() as d:
            assert_fast_paths_match_reference(blob, limits, Path(d) / "t.pt")
        return
    path.write_bytes(blob)
    fast = _outcomes(blob, limits, str(path))
    with mock.patch.object(archive_module, "_FAST_PATHS", False):
        reference = _outcomes(blob, limits, str(path))
    assert fast == reference
    assert fast[0] == fast[1]


def test_fast_paths_take_common_archives(monkeypatch: pytest.MonkeyPatch) -> None:
    """Archives as PyTorch and ArchiveWriter write them never reach the reference checks."""
    def reference(*args: object) -> None:
        raise AssertionError("the reference path ran")
    for name in ("_central_entry", "_entry_name", "_local", "_descriptor"):
        monkeypatch.setattr(ArchiveReader, name, reference)
    for blob in (_pytorch_like(), written(), valid_zip(), valid_zip(descriptor=True, sig=False)):
        read_all(blob)


@pytest.mark.parametrize("case", list(CASES))
def test_fast_paths_match_reference_on_corpus(case: str) -> None:
    assert_fast_paths_match_reference(CASES[case][0]())


@pytest.mark.parametrize("name", [b"archive/a\nb", b"archive/./x", b"archive/../x", b"archive/x/..", b"archive/...",
                                  b"archive/.x", b"archive//x", b"archive/", b"archive/c:x", b"archive/a b",
                                  b"archive\\x", b"archive/\x7f", b"/archive/x", b"archive/-_.0Az"])
@pytest.mark.parametrize("flags", [0, 0x800, 0x808, 0x1000, 0x841])
def test_fast_paths_match_reference_on_names(name: bytes, flags: int) -> None:
    blob = make_zip([Rec(b"archive/data.pkl", b"x"), Rec(name, b"y", flags=flags)])
    assert_fast_paths_match_reference(blob)
    assert_fast_paths_match_reference(blob, Limits(max_name_bytes=len(name) - 1))


def _zero_local_sizes() -> bytes:
    """valid_zip() with its first local header's CRC and sizes zeroed, without a data descriptor."""
    return patch(valid_zip(), 14, "<III", 0, 0, 0)


@pytest.mark.parametrize("build", [
    _zero_local_sizes,
    lambda: make_zip([Rec(b"archive/a", b"abc", extra=struct.pack("<HH", 1, 5) + bytes(5))]),
    lambda: make_zip([Rec(b"archive/a", b"abc", extra=struct.pack("<HHQQ", 1, 16, 3, 3))]),
    lambda: make_zip([Rec(b"archive/a", b"abc", descriptor=True, extra=struct.pack("<HHQQ", 1, 16, 0, 0))]),
    lambda: make_zip([Rec(b"archive/a", b"abc", pad=3, extra=struct.pack("<HH", 0x5455, 1) + b"t")]),
    lambda: make_zip([Rec(b"archive/a", b"abc", pad=3, extra=struct.pack("<HH", 0x4246, 0))]),
    lambda: make_zip([Rec(b"archive/a", b"abc", extra=b"FB")]),
    lambda: make_zip([Rec(b"archive/a", b"abc", extra=struct.pack("<HH", 0x4246, 9) + b"Z")]),
    lambda: make_zip([Rec(b"archive/a", b"", descriptor=True, pad=0)]),
    lambda: make_zip([Rec(b"archive/a", b"abc", descriptor=True, pad=5000), Rec(b"archive/b", b"d", pad=9)]),
    lambda: make_zip([Rec(b"archive/a", b"abc", descriptor=True, sig=False, pad=0)])[:-22 - 55 - 1] +
        make_zip([Rec(b"archive/a", b"abc", descriptor=True, sig=False, pad=0)])[-22 - 55:],
])
def test_fast_paths_match_reference_on_local_extras(build: Callable[[], bytes]) -> None:
    assert_fast_paths_match_reference(build())


def _header_bytes(blob: bytes) -> list[int]:
    """Offsets of every byte of ``blob``'s local and central headers, data descriptors and end record."""
    centrals, out = central_ats(blob), set(range(eocd_at(blob), len(blob)))
    for at in [*local_ats(blob), centrals[0]]:
        out |= set(range(max(0, at - 16), at + 30))
    for at in centrals:
        out |= set(range(at, at + 46))
    return sorted(at for at in out if at < len(blob))


@pytest.mark.parametrize("seed", [0, 1])
def test_fast_paths_match_reference_on_header_bytes(seed: int, tmp_path: Path) -> None:
    """Each byte of each header (and descriptor) set to 0, 0xFF and one more than it was."""
    blob = FAST_SEEDS[seed]
    for at in _header_bytes(blob):
        for value in sorted({0, 0xFF, (blob[at] + 1) & 0xFF} - {blob[at]}):
            assert_fast_paths_match_reference(blob[:at] + bytes([value]) + blob[at + 1:], path=tmp_path / "t.pt")


@settings(max_examples=300, deadline=None)
@given(seed=st.sampled_from(FAST_SEEDS),
       ops=st.lists(st.tuples(st.sampled_from(["byte", "u16", "u32", "cut", "insert", "delete"]),
                              st.integers(0, 100), st.integers(-24, 96), st.integers(0, U32)),
                    min_size=1, max_size=3),
       small_limits=st.booleans())
def test_fast_paths_match_reference_fuzzed(seed: bytes, ops: list[tuple[str, int, int, int]],
                                           small_limits: bool) -> None:
    """Mutations near the headers of valid archives: both paths reject (or accept) alike."""
    anchors = _anchors(seed)
    data = bytearray(seed)
    for op, anchor, delta, value in ops:
        i = min(max(anchors[anchor % len(anchors)] + delta, 0), len(data))
        if op == "byte" and i < len(data):
            data[i] = value & 0xFF
        elif op == "u16" and i + 2 <= len(data):
            struct.pack_into("<H", data, i, value & 0xFFFF)
        elif op == "u32" and i + 4 <= len(data):
            struct.pack_into("<I", data, i, value)
        elif op == "cut":
            del data[i:]
        elif op == "insert":
            data[i:i] = bytes([value & 0xFF]) * (1 + value % 4)
        elif op == "delete":
            del data[i:i + 1 + value % 4]
    limits = Limits(max_name_bytes=20, max_entries=4, max_record_bytes=6000) if small_limits else DEFAULT
    assert_fast_paths_match_reference(bytes(data), limits)


# -- the writer refuses what the reader would reject ----------------------------------------------

@pytest.mark.parametrize("name", ["../x", "/abs", "a/../b", "a\\b", "C:/x", "a//b", "a/", "", ".", "a\x00b",
                                  "x\u202e", "a/./b"])
def test_writer_rejects_unsafe_names(name: str) -> None:
    w = ArchiveWriter()
    with pytest.raises(ArchiveError, match="refusing"):
        w.add(name, b"x")


def test_writer_rejects_duplicates_twins_and_bad_prefix() -> None:
    w = ArchiveWriter()
    w.add("caf\u00e9", b"1")
    for name in ("caf\u00e9", "cafe\u0301"):
        with pytest.raises(ArchiveError, match="duplicates"):
            w.add(name, b"2")
    with pytest.raises(ArchiveError, match="too long"):
        w.add("n" * 5000, b"")
    for prefix in ("", "a/b", "..", "C:"):
        with pytest.raises(ArchiveError, match="prefix"):
            ArchiveWriter(prefix)
    with pytest.raises(ArchiveError, match="at least one record"):
        ArchiveWriter().finish()
    blob = w.finish()
    assert w.finish() is blob
    with pytest.raises(ArchiveError, match="after finish"):
        w.add("late", b"")


# -- atomic_write (H1, H6) --------------------------------------------------------------------------

def test_atomic_write_replaces_and_keeps_mode(tmp_path: Path) -> None:
    target = tmp_path / "m.pt"
    atomic_write(target, b"first")
    assert target.read_bytes() == b"first"
    os.chmod(target, 0o600)
    atomic_write(str(target), memoryview(b"second"))
    assert target.read_bytes() == b"second" and stat.S_IMODE(os.stat(target).st_mode) == 0o600
    assert os.listdir(tmp_path) == ["m.pt"]


def _enospc(*args: object, **kwargs: object) -> None:
    raise OSError(errno.ENOSPC, "No space left on device")


@pytest.mark.parametrize("fail", ["fsync", "write", "partial-write", "replace"])
def test_atomic_write_failure_keeps_old_file(tmp_path: Path, monkeypatch: pytest.MonkeyPatch, fail: str) -> None:
    target = tmp_path / "m.pt"
    target.write_bytes(b"old content")
    if fail == "partial-write":
        real_write = os.write
        calls = []

        def write(fd: int, data: bytes) -> int:
            calls.append(fd)
            if len(calls) > 1:
                _enospc()
            return real_write(fd, bytes(data)[:3])

        monkeypatch.setattr(os, "write", write)
    else:
        monkeypatch.setattr(os, fail, _enospc)
    with pytest.raises(ArchiveError, match="could not save") as info:
        atomic_write(target, b"new content that will not fit")
    assert isinstance(info.value.__cause__, OSError) and info.value.__cause__.errno == errno.ENOSPC
    monkeypatch.undo()
    assert target.read_bytes() == b"old content"
    assert os.listdir(tmp_path) == ["m.pt"]


def test_atomic_write_missing_directory(tmp_path: Path) -> None:
    with pytest.raises(ArchiveError, match="could not save") as info:
        atomic_write(tmp_path / "no" / "m.pt", b"x")
    assert isinstance(info.value.__cause__, FileNotFoundError)


def test_file_truncated_while_open_gives_archive_error(tmp_path: Path) -> None:
    """A file read by path is not memory-mapped: if it shrinks after its directory was checked,
    reading a record is an ArchiveError (a mapping would fault the process)."""
    blob = written({"data.pkl": b"\x80\x02." * 10, "data/0": bytes(range(256)) * 40, "version": b"3\n"})
    path = tmp_path / "shrinks.pt"
    path.write_bytes(blob)
    with ArchiveReader.open_file(path) as r:
        at = r.data_offset("data/0")
        with open(path, "r+b") as f:
            f.truncate(at + 100)
        with pytest.raises(ArchiveError, match="short"):
            r.read_into("data/0", memoryview(bytearray(256 * 40)))
        with pytest.raises(ArchiveError, match="short"):
            r.read("data/0")
    with pytest.raises(ArchiveError, match="closed"):
        r.read("data/0")
