"""The zip container of TorchScript ``.pt`` archives: a strict reader and a deterministic writer.

A ``.pt`` file is a zip archive whose records all live under one top-level folder (the
*prefix*, the file stem at save time; ``archive`` for a ``BytesIO``).  Zip leaves many choices
open, and readers that make different choices disagree about what a file contains -- the root
of most published loader bypasses.  This reader parses with :mod:`struct` (never
:mod:`zipfile`, which keeps the last of duplicate names and accepts leading junk) and accepts
only an unambiguous file.  Every rejection is a :class:`~kiln.errors.ModelFormatError`
subclass whose message names the source and the record or file offset.  The cases refer to
``SECURITY.md`` section 7.A.

Reader policies
---------------
* A1/A11 -- a file that does not start with a local file header is *not a zip archive*
  (:class:`ArchiveError`), unless a zip end record is present further on (a junk prefix or
  polyglot, A12) or its leading bytes identify another format: gzip, 7z, the legacy tar
  layout, a raw pickle or the legacy stacked-pickle ``torch.save`` layout, safetensors.  Those
  raise :class:`UnsupportedFeature` naming the format; there is never a fallback to pickle.
  (Spotting the legacy ``model.json`` layout is left to the caller, who has :meth:`names`.)
* A12 -- every byte is accounted for: the first local header is at offset 0, the records tile
  the file up to the central directory with no gap, the central directory is followed directly
  by the (ZIP64) end records, and the end of central directory record ends exactly at EOF.  A
  zip comment is allowed only when its declared length matches the bytes left; if a comment
  makes two end records plausible, the file is ambiguous and rejected.
* A2/A3/A14 -- truncation anywhere, a central directory offset or size pointing past EOF, a
  count that differs from the entries actually present, and malformed ZIP64 records (locator
  pointing anywhere, record size not ending at the locator, extra fields too short or partial,
  ZIP64 markers without a ZIP64 extra field) raise :class:`ArchiveError`.  ZIP64 archives are
  supported (PyTorch writes a ZIP64 end record into every archive); multi-disk archives raise
  :class:`UnsupportedFeature`.  The 32-bit end record fields must each be the ZIP64 marker or
  equal to the ZIP64 value.
* A4 -- sizes are validated against the file before anything is allocated: a record's data
  must end before the central directory, a stored record's two sizes must agree, and a deflated
  record may not declare more than deflate can produce from its compressed bytes (1032:1).
* A5 -- only methods 0 (stored) and 8 (deflate) are read; anything else is
  :class:`UnsupportedFeature`.  A record declaring more than ``limits.max_record_bytes``, or
  records declaring more than ``limits.max_total_bytes`` together, raise
  :class:`ResourceLimitExceeded` up front; inflation is capped at the declared size (one byte
  more is an error), and the bytes materialised by :meth:`ArchiveReader.read` across all calls
  are charged against ``max_total_bytes`` too.  A nested zip is just bytes: never opened.
* A6 -- overlapping records (two central entries sharing local bytes, the "quoted overlap"
  bomb) and records overlapping the central directory are rejected (a consequence of A12).
* A7 -- duplicate names, and names equal after Unicode NFC normalisation, are rejected.
* A8 -- the local header must repeat the central name, flags and method byte for byte; its
  CRC and sizes must equal the central ones, or be all zero when general-purpose bit 3 (data
  descriptor) is set.  PyTorch (miniz) sets bit 3 on every non-empty record and writes a
  descriptor after the data (signature optional, 64-bit sizes when the local header carries a
  ZIP64 field, per APPNOTE 4.3.9): it must match the central directory.  Encryption (bits 0, 6,
  13) and other unknown flag bits raise :class:`UnsupportedFeature`.  The CRC-32 of every
  record is checked when it is first read.
* A9 -- names are UTF-8 when flag bit 11 is set, otherwise they must be ASCII.  Rejected:
  ``.``/``..`` and empty components (absolute paths, ``//``, a trailing ``/`` -- zip directory
  entries, which PyTorch never writes), backslashes, drive letters (``C:``) in any component,
  control and format characters (Unicode categories Cc, Cf, Cs, Co, NUL included), and names
  longer than ``limits.max_name_bytes`` (:class:`ResourceLimitExceeded`).
* A10 -- all records share exactly one top-level folder, the prefix; a record at the zip root
  or under a second folder is rejected (PyTorch would silently ignore it, a scanner might not).
* A13 -- the entry count of the end record is checked against ``limits.max_entries`` before
  any per-entry object is built; the comment is bounded by the format (65535 bytes), and the
  whole input by ``limits.max_archive_bytes``.

A ``bytearray`` or ``memoryview`` input is copied once into ``bytes`` so that later mutation
by the caller cannot change what was validated; ``bytes`` input is used without copying, and
stored records are handed out as zero-copy views of it.  A path to a regular file is not read
whole (:meth:`ArchiveReader.open_file`, :class:`FileBuffer`): the end records, the central
directory and every local header are read and checked with positional reads up front, exactly
as for bytes; a record's data is read when it is asked for, and :meth:`ArchiveReader.read_into`
reads a storage record straight into its tensor's memory, CRC-checked there.  The file is never
memory-mapped (a file truncated during the load would fault); a short read is an
:class:`ArchiveError`.

Writer
------
:class:`ArchiveWriter` writes what ``torch.jit.load`` (miniz) reads, deterministically: records
in the order added, stored unless asked to deflate, fixed DOS timestamps (1980-01-01 00:00), no
data descriptors, and every record's data 64-byte aligned by an extra field with id ``FB``
(0x4246) padded with ``Z`` bytes -- the layout of PyTorch's ``inline_container.cc``.  ZIP64
fields are written only where a value does not fit in 32 bits (or 65535 entries).  Names obey
the reader's rules, so the writer can never produce a traversal name.  :func:`atomic_write`
saves through a temporary file, ``fsync`` and ``os.replace``, so the target is either the old
or the new file, never a torn one (H1, H6).
"""

from __future__ import annotations

import contextlib
import os
import queue
import re
import secrets
import stat
import struct
import sys
import threading
import unicodedata
import weakref
import zlib
from collections.abc import Iterator
from dataclasses import dataclass
from operator import attrgetter
from typing import Any, BinaryIO, NamedTuple, NoReturn, TypeAlias

from kiln.errors import ArchiveError, ModelFormatError, ResourceLimitExceeded, UnsupportedFeature
from kiln.serialization.limits import Limits

__all__ = ["ArchiveReader", "ArchiveWriter", "FileBuffer", "Record", "atomic_write", "name_problem",
           "open_archive"]

_LOCAL_SIG = b"PK\x03\x04"
_CENTRAL_SIG = b"PK\x01\x02"
_EOCD_SIG = b"PK\x05\x06"
_ZIP64_EOCD_SIG = b"PK\x06\x06"
_ZIP64_LOCATOR_SIG = b"PK\x06\x07"
_DESCRIPTOR_SIG = b"PK\x07\x08"

_LOCAL = struct.Struct("<4sHHHHHIIIHH")            # 30 bytes
_CENTRAL = struct.Struct("<4sHHHHHHIIIHHHHHII")    # 46 bytes
_EOCD = struct.Struct("<4sHHHHIIH")                # 22 bytes
_ZIP64_EOCD = struct.Struct("<4sQHHIIQQQQ")        # 56 bytes
_ZIP64_LOCATOR = struct.Struct("<4sIQI")           # 20 bytes
_FIELD = struct.Struct("<HH")                      # extra field id, length
_DESCRIPTOR32 = struct.Struct("<III")              # data descriptor without signature: crc, sizes
_DESCRIPTOR64 = struct.Struct("<IQQ")              # the same with the 64-bit sizes of ZIP64
# The fast paths' views of the same records, skipping the fields they ignore (versions, times,
# attributes): sig, flags, method, crc, csize, usize, name/extra(/comment) lengths(, disk, offset).
_LOCAL_FAST = struct.Struct("<4s2xHH4xIIIHH")
_CENTRAL_FAST = struct.Struct("<4s4xHH4xIIIHHHH6xI")
_SIGNED_DESCRIPTOR = struct.Struct("<4sIII")
_LOCAL_SIZE, _CENTRAL_SIZE, _FIELD_SIZE = _LOCAL.size, _CENTRAL.size, _FIELD.size

_U16 = 0xFFFF
_U32 = 0xFFFFFFFF
_ZIP64_ID = 0x0001
_PAD_ID = 0x4246                                   # "FB": PyTorch's alignment padding field
_ALIGN = 64
_MAX_COMMENT = 0xFFFF
_DEFLATE_MAX_RATIO = 1032                          # the most deflate can expand one input byte

_FLAG_DESCRIPTOR = 0x0008
_FLAG_UTF8 = 0x0800
_FLAG_ENCRYPTION = 0x0001 | 0x0040 | 0x2000        # traditional, strong, masked central directory
_FLAGS_KNOWN = 0x0002 | 0x0004 | _FLAG_DESCRIPTOR | _FLAG_UTF8   # deflate options, descriptor, UTF-8
_STORED = 0
_DEFLATED = 8

_DOS_TIME = 0
_DOS_DATE = 0x21                                   # 1980-01-01

_LEGACY_TORCH_MAGIC = bytes.fromhex("80028a0a6cfc9c46f9206aa85019")  # pickled 0x1950a86a20f9469cfc6c
_BAD_CATEGORIES = frozenset({"Cc", "Cf", "Cs", "Co"})
_DRIVE = re.compile(r"[A-Za-z]:")
# Speed: the reader checks the common case (what PyTorch and ArchiveWriter write) on fast paths
# that accept only what the detailed checks accept, with the same result, and hand everything
# else to them, so that every rejection comes from one place with one message.  The detailed
# checks are the reference: tests turn the fast paths off to compare the two on malformed input.
_FAST_PATHS = True
# The characters of a plain name (see _plain_names), and the '\n' that joins names there.
_PLAIN_NAME_BYTES = b"ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789_.-/\n"
# Read-ahead of the positional reads that fetch local headers and data descriptors from a file:
# a record's descriptor comes with the next local header (PyTorch pads its extra area to less
# than 64 bytes), and small records come several to a read.
_READ_AHEAD = 4096
# A file's central directory up to this size is parsed from one read; a larger one block by block.
_ONE_READ_DIRECTORY = 16 << 20

BytesLike: TypeAlias = "bytes | bytearray | memoryview"
DEFAULT_LIMITS = Limits()          # frozen, so one shared default is safe


class Record(NamedTuple):
    """One validated record.  ``offset`` is the file offset of its (possibly compressed) data.
    (A named tuple: an archive of many records makes one per record, and tuples are made
    several times faster than frozen dataclasses.)"""

    name: str               # relative to the prefix: "data.pkl", "code/__torch__.py", "data/0"
    offset: int
    size: int               # uncompressed
    compressed_size: int
    method: int             # 0 stored, 8 deflate
    crc32: int
    header_offset: int      # file offset of its local header


@dataclass(slots=True)
class _Entry:
    """A central directory entry before its name and local header are validated."""

    raw_name: bytes
    flags: int
    method: int
    crc: int
    csize: int
    usize: int
    header_offset: int
    at: int                 # file offset of the central header, for messages

    def shown(self) -> str:
        return self.raw_name.decode("utf-8", "backslashreplace")


class _Window:
    """The bytes around the local headers that :meth:`ArchiveReader._layout` looks at:
    ``buf[i]`` is the byte at file offset ``base + i``.  For in-memory input, the whole buffer;
    for a file, the last chunk read, replaced on a miss by one positional read of what is needed
    plus :data:`_READ_AHEAD` bytes, never past ``limit``."""

    __slots__ = ("_file", "_limit", "base", "buf")

    def __init__(self, data: bytes | FileBuffer, limit: int) -> None:
        self._file = data if isinstance(data, FileBuffer) else None
        self.buf = b"" if isinstance(data, FileBuffer) else data
        self.base = 0
        self._limit = limit

    def read(self, start: int, stop: int) -> tuple[bytes, int]:
        """Hold (at least) ``[start, stop)``, where ``stop <= limit``; return ``(buf, base)``."""
        assert self._file is not None          # the whole buffer never misses
        self.buf = self._file.pread(start, min(stop + _READ_AHEAD, self._limit) - start)
        self.base = start
        return self.buf, start


def name_problem(name: str) -> str | None:
    """Why ``name`` is not an acceptable record path (``None`` when it is).  Shared by reader and
    writer so that the writer can never produce a name the reader rejects."""
    if not name:
        return "empty name"
    if "\\" in name:
        return "backslash in name"
    for ch in name:
        if unicodedata.category(ch) in _BAD_CATEGORIES:
            return f"control or format character U+{ord(ch):04X} in name"
    for part in name.split("/"):
        if part == "":
            return "empty path component (absolute path, '//' or a trailing '/')"
        if part in (".", ".."):
            return f"{part!r} path component"
        if _DRIVE.match(part):
            return f"drive letter in path component {part!r}"
    return None


def _plain_names(raws: list[bytes]) -> list[str] | None:
    """The names decoded, if ``name_problem`` certainly accepts each of them (else ``None``): only
    ASCII letters, digits, ``_``, ``.``, ``-`` and ``/`` (so no backslash, control character or
    drive letter), and no empty, ``.`` or ``..`` component (nor an empty name).  Checked on all
    names at once, joined by ``\\n``, which must then occur only between them."""
    joined = b"\n".join(raws)
    if joined.translate(None, _PLAIN_NAME_BYTES) or joined.count(b"\n") != len(raws) - 1:
        return None
    components = b"/" + joined.replace(b"\n", b"/") + b"/"     # each component between two '/'
    if b"//" in components or b"/./" in components or b"/../" in components:
        return None
    return joined.decode("ascii").split("\n")


def _detect_format(head: bytes, size: int) -> str | None:
    """Name the non-zip format that ``head`` (the first 512 bytes of a ``size``-byte file) starts."""
    if head.startswith(b"\x1f\x8b"):
        return "a gzip-compressed file"
    if head.startswith(b"7z\xbc\xaf\x27\x1c"):
        return "a 7z archive"
    if head[257:262] == b"ustar":
        return "a tar archive (the torch.save format of PyTorch 0.1.x)"
    if head.startswith(_LEGACY_TORCH_MAGIC):
        return "a legacy torch.save file (stacked pickles, PyTorch < 1.6)"
    if len(head) >= 2 and head[0] == 0x80 and 2 <= head[1] <= 5:
        return f"a raw pickle (protocol {head[1]})"
    if len(head) >= 9 and head[8:9] == b"{":
        header_len = int.from_bytes(head[:8], "little")
        if 2 <= header_len <= size - 8:
            return "a safetensors file"
    return None


class ArchiveReader:
    """A validated zip archive held in memory.  The whole directory is checked on construction;
    record contents (CRC, inflation) are checked when first read."""

    def __init__(self, data: BytesLike | FileBuffer, *, limits: Limits = DEFAULT_LIMITS,
                 source: str = "<bytes>") -> None:
        self._source = source
        self._limits = limits
        size = data.nbytes if isinstance(data, memoryview) else len(data)
        if size > limits.max_archive_bytes:
            self._fail(ResourceLimitExceeded, f"archive of {size} bytes exceeds max_archive_bytes "
                       f"({limits.max_archive_bytes})")
        # A file is read where needed (directory and headers now, record data when asked for);
        # bytes are the whole file in memory.
        self._file = data if isinstance(data, FileBuffer) else None
        self._buf: bytes | FileBuffer = data if isinstance(data, (bytes, FileBuffer)) else bytes(data)
        self._mv = memoryview(self._buf) if isinstance(self._buf, bytes) else None
        self._lock = threading.Lock()
        self._background: _Background | None = None
        self._verified: set[str] = set()
        self._charged = 0
        self._tail: tuple[bytes, int] | None = None     # see _find_eocd
        self._sniff()
        count, cd_off, cd_size = self._end_records(self._find_eocd())
        entries = self._parse_central(cd_off, cd_size, count)
        names = self._entry_names(entries)
        self.prefix = self._check_prefix(names, entries)
        self._check_unique(names, entries)
        offsets = self._layout(entries, cd_off)
        self._check_totals(entries)
        self._records: dict[str, Record] = {}
        skip = len(self.prefix) + 1
        for name, e in zip(names, entries):
            rel = name[skip:]
            self._records[rel] = Record(rel, offsets[e.header_offset], e.usize, e.csize, e.method, e.crc,
                                         e.header_offset)
        self._tail = None
        if self._file is not None:
            self._file.drop_cache()

    @classmethod
    def open_file(cls, path: str | os.PathLike[str], *, limits: Limits = DEFAULT_LIMITS,
                  source: str | None = None) -> ArchiveReader:
        """A reader over a regular file that reads what it needs when it needs it, instead of
        the whole file: record data goes straight to its destination (:meth:`read_into`).
        The file stays open until :meth:`close` (or until the reader is collected)."""
        shown = os.fspath(path) if source is None else source
        fd = os.open(path, os.O_RDONLY | getattr(os, "O_BINARY", 0))
        try:
            info = os.fstat(fd)
            if not stat.S_ISREG(info.st_mode):
                raise ArchiveError(f"{shown}: not a regular file")
            buf = FileBuffer(fd, info.st_size, shown)
        except BaseException:
            os.close(fd)
            raise
        try:
            return cls(buf, limits=limits, source=shown)
        except BaseException:
            buf.close()
            raise

    def close(self) -> None:
        """Release the file of a reader made by :meth:`open_file` (nothing for bytes)."""
        if self._file is not None:
            self._file.close()

    def __enter__(self) -> ArchiveReader:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    # -- public API ----------------------------------------------------------------------------

    def names(self) -> list[str]:
        """Record names relative to the prefix, in central directory order."""
        return list(self._records)

    def has(self, name: str) -> bool:
        return name in self._records

    def record(self, name: str) -> Record:
        rec = self._records.get(name)
        if rec is None:
            self._fail(ArchiveError, f"no record {self.prefix}/{name}")
        return rec

    def read(self, name: str) -> bytes:
        """The record's contents: inflated, size- and CRC-checked."""
        rec = self.record(name)
        self._charge(rec)
        if rec.method == _STORED:
            return bytes(self._stored(rec))
        return self._inflate(rec)

    def view(self, name: str) -> memoryview:
        """Like :meth:`read`, but a zero-copy view of the archive for stored records."""
        rec = self.record(name)
        if rec.method == _STORED:
            return self._stored(rec)
        return memoryview(self.read(name))

    def read_into(self, name: str, dest: memoryview, later: bool = False) -> None:
        """Fill ``dest`` (writable, exactly the record's size) with the record's contents,
        size- and CRC-checked: for a file, one read straight into ``dest``.  ``later``, inside
        :meth:`background_reads`: a stored record may be read and checked there, on another
        thread, by the time that block ends (``dest`` must stay untouched until then)."""
        rec = self.record(name)
        if dest.nbytes != rec.size:
            self._fail(ArchiveError, f"record holds {rec.size} bytes, the destination {dest.nbytes}",
                       record=self._full(rec), offset=rec.offset)
        self._charge(rec)
        if rec.method != _STORED:
            dest[:] = self._inflate(rec)
            return
        if later and self._background is not None and rec.size >= _BACKGROUND_MIN:
            self._background.submit(rec, dest)
            return
        self._read_stored(rec, dest)

    def _read_stored(self, rec: Record, dest: memoryview) -> None:
        if self._file is not None:
            self._file.read_into(rec.offset, dest)
        else:
            assert self._mv is not None
            dest[:] = self._mv[rec.offset:rec.offset + rec.size]
        self._check_crc(rec, dest)

    @contextlib.contextmanager
    def background_reads(self) -> Iterator[None]:
        """A block inside which :meth:`read_into` (with ``later``) reads large stored records
        on a worker thread while the caller goes on; the block ends once every one is read and
        checked, raising the first error.  Reading a file and checking a CRC release the GIL,
        so the work overlaps the caller's Python code; while the worker runs, the interpreter's
        switch interval is shortened, so that it gets the GIL back quickly between records."""
        if self._background is not None:      # nested: the outer block waits for everything
            yield
            return
        worker = self._background = _Background(self)
        try:
            yield
        finally:
            try:
                worker.finish()
            finally:
                self._background = None

    def data_offset(self, name: str) -> int:
        """File offset of the record's data (64-byte aligned in archives PyTorch writes)."""
        return self.record(name).offset

    # -- errors ----------------------------------------------------------------------------------

    def _fail(self, cls: type[ModelFormatError], what: str, *, record: str | None = None,
              offset: int | None = None) -> NoReturn:
        where = []
        if record is not None:
            where.append(f"record {record!r}")
        if offset is not None:
            where.append(f"offset {offset}")
        suffix = f" ({', '.join(where)})" if where else ""
        raise cls(f"{self._source}: {what}{suffix}")

    # -- the end of the file ---------------------------------------------------------------------

    def _sniff(self) -> None:
        """Reject files that do not start with a local header, naming known other formats."""
        buf = self._buf
        if not buf:
            self._fail(ArchiveError, "empty file: not a zip archive")
        if buf.startswith(_LOCAL_SIG):
            return
        if buf.rfind(_EOCD_SIG, max(0, len(buf) - _EOCD.size - _MAX_COMMENT)) >= 0:
            self._fail(ArchiveError, "zip archive with data before its first local header (junk prefix "
                       "or polyglot file); a local file header must start at offset 0", offset=0)
        fmt = _detect_format(buf[:512], len(buf))
        if fmt is not None:
            self._fail(UnsupportedFeature, f"{fmt}, not a zip archive")
        self._fail(ArchiveError, "not a zip archive (no local file header at offset 0)", offset=0)

    def _find_eocd(self) -> int:
        """The offset of the one end of central directory record that ends exactly at EOF."""
        n = len(self._buf)
        lowest = max(0, n - _EOCD.size - _MAX_COMMENT)
        # The last 64 KiB of a file are read once and searched in memory; the central directory of a
        # small archive lies in them too (:meth:`_window`).  ``tail[i]`` is the byte at ``base + i``.
        tail, base = self._tail = self._window(lowest, n - lowest)
        hits: list[int] = []
        end = n
        while (pos := tail.rfind(_EOCD_SIG, lowest - base, end - base)) >= 0:
            pos += base
            end = pos + len(_EOCD_SIG) - 1
            if pos + _EOCD.size <= n and \
                    int.from_bytes(tail[pos + 20 - base:pos + 22 - base], "little") == n - pos - 22:
                hits.append(pos)
        if len(hits) > 1:
            self._fail(ArchiveError, f"ambiguous: {len(hits)} end of central directory records fit the "
                       "end of the file (a comment holds another)", offset=hits[0])
        if not hits:
            last = tail.rfind(_EOCD_SIG, lowest - base)
            if last >= 0:
                last += base
                self._fail(ArchiveError, "the end of central directory record does not end at EOF "
                           "(trailing data, or a wrong comment length)", offset=last)
            self._fail(ArchiveError, "no end of central directory record: not a zip archive, or truncated",
                       offset=n)
        return hits[0]

    def _end_records(self, eocd: int) -> tuple[int, int, int]:
        """(entry count, central directory offset, size), checked to end where the end records begin."""
        _, disk, cd_disk, on_disk, count, cd_size, cd_off, _ = self._unpack(_EOCD, eocd)
        cd_end = eocd
        locator = eocd - _ZIP64_LOCATOR.size
        if locator >= 0 and self._buf[locator:locator + 4] == _ZIP64_LOCATOR_SIG:
            count, cd_off, cd_size, cd_end = self._zip64_end(locator, (on_disk, count, cd_size, cd_off))
            disk, cd_disk = (0 if v == _U16 else v for v in (disk, cd_disk))   # ZIP64 holds the real ones
        elif _U16 == count or _U32 in (cd_size, cd_off):
            self._fail(ArchiveError, "end record holds ZIP64 markers but no ZIP64 locator precedes it",
                       offset=eocd)
        elif on_disk != count:
            self._fail(UnsupportedFeature, "multi-disk (spanned) zip archive", offset=eocd)
        if disk or cd_disk:
            self._fail(UnsupportedFeature, "multi-disk (spanned) zip archive", offset=eocd)
        if count > self._limits.max_entries:
            self._fail(ResourceLimitExceeded, f"archive declares {count} records, more than max_entries "
                       f"({self._limits.max_entries})", offset=eocd)
        if cd_off + cd_size > len(self._buf):
            self._fail(ArchiveError, f"central directory (offset {cd_off}, {cd_size} bytes) points past "
                       f"the end of the {len(self._buf)}-byte file", offset=eocd)
        if cd_off + cd_size != cd_end:
            self._fail(ArchiveError, f"central directory (offset {cd_off}, {cd_size} bytes) does not end "
                       f"where the end records begin ({cd_end})", offset=eocd)
        if count == 0:
            self._fail(ArchiveError, "zip archive holds no records", offset=eocd)
        if cd_size < _CENTRAL.size * count:
            self._fail(ArchiveError, f"central directory of {cd_size} bytes cannot hold the {count} "
                       "records declared", offset=cd_off)
        return count, cd_off, cd_size

    def _zip64_end(self, locator: int, plain: tuple[int, int, int, int]) -> tuple[int, int, int, int]:
        """Read the ZIP64 end record the locator points to: (count, cd offset, cd size, its offset)."""
        _, z_disk, z_off, disks = self._unpack(_ZIP64_LOCATOR, locator)
        if z_disk != 0 or disks != 1:
            self._fail(UnsupportedFeature, "multi-disk (spanned) ZIP64 archive", offset=locator)
        if z_off + _ZIP64_EOCD.size > locator:
            self._fail(ArchiveError, f"ZIP64 locator points to offset {z_off}, which leaves no room for "
                       "a ZIP64 end record before it", offset=locator)
        sig, rec_size, _, _, disk, cd_disk, on_disk, count, cd_size, cd_off = \
            self._unpack(_ZIP64_EOCD, z_off)
        if sig != _ZIP64_EOCD_SIG:
            self._fail(ArchiveError, "ZIP64 locator does not point to a ZIP64 end record", offset=z_off)
        if rec_size < _ZIP64_EOCD.size - 12 or z_off + 12 + rec_size != locator:
            self._fail(ArchiveError, f"ZIP64 end record declares {rec_size} bytes and does not end at "
                       f"its locator ({locator})", offset=z_off)
        if disk or cd_disk or on_disk != count:
            self._fail(UnsupportedFeature, "multi-disk (spanned) ZIP64 archive", offset=z_off)
        wide = (on_disk, count, cd_size, cd_off)
        for small, big, marker in zip(plain, wide, (_U16, _U16, _U32, _U32)):
            if small not in (marker, big):
                self._fail(ArchiveError, f"end record value {small} contradicts the ZIP64 end record "
                           f"value {big}", offset=z_off)
        return count, cd_off, cd_size, z_off

    # -- the central directory -------------------------------------------------------------------

    def _window(self, start: int, size: int) -> tuple[bytes, int]:
        """``(buf, base)`` where ``buf[i]`` is the byte at file offset ``base + i`` for the offsets
        ``[start, start + size)`` (which must lie in the file): in-memory bytes as they are, or one
        positional read of a file (reusing the tail read by :meth:`_find_eocd` when it holds them)."""
        if self._file is None:
            assert isinstance(self._buf, bytes)
            return self._buf, 0
        if self._tail is not None:
            tail, base = self._tail
            if base <= start and start + size <= base + len(tail):
                return tail, base
        return self._file.pread(start, size), start

    def _parse_central(self, cd_off: int, cd_size: int, count: int) -> list[_Entry]:
        entries: list[_Entry] = []
        pos, end = cd_off, cd_off + cd_size
        # Fast path: an entry without extra fields (so no ZIP64 values) on disk 0 is unpacked in
        # place, from one read of a file's directory.  Any other entry goes through
        # _central_entry(), the reference, which also raises every error.  A huge directory in a
        # file is left to the reference (block by block).
        fast = _FAST_PATHS and (self._file is None or cd_size <= _ONE_READ_DIRECTORY)
        buf, base = self._window(cd_off, cd_size) if fast else (b"", 0)
        unpack = _CENTRAL_FAST.unpack_from
        for i in range(count):
            if pos + _CENTRAL_SIZE > end:
                self._fail(ArchiveError, f"central directory ends after {i} of the {count} records "
                           "declared", offset=pos)
            if fast:
                at = pos - base
                (sig, flags, method, crc, csize, usize, name_len, extra_len, comment_len, disk,
                 header_offset) = unpack(buf, at)
                stop = pos + _CENTRAL_SIZE + name_len + comment_len
                if sig == _CENTRAL_SIG and not extra_len and not disk and stop <= end and \
                        csize != _U32 and usize != _U32 and header_offset != _U32:
                    name_at = at + _CENTRAL_SIZE
                    entries.append(_Entry(buf[name_at:name_at + name_len], flags, method, crc, csize, usize,
                                          header_offset, pos))
                    pos = stop
                    continue
            entry, pos = self._central_entry(pos, end)
            entries.append(entry)
        if pos != end:
            self._fail(ArchiveError, f"central directory holds {end - pos} bytes beyond its {count} "
                       "declared records", offset=pos)
        return entries

    def _central_entry(self, pos: int, end: int) -> tuple[_Entry, int]:
        (sig, _, _, flags, method, _, _, crc, csize, usize, name_len, extra_len, comment_len,
         disk, _, _, header_offset) = self._unpack(_CENTRAL, pos)
        if sig != _CENTRAL_SIG:
            self._fail(ArchiveError, "expected a central directory header", offset=pos)
        name_at = pos + _CENTRAL.size
        stop = name_at + name_len + extra_len + comment_len
        if stop > end:
            self._fail(ArchiveError, "central directory header overruns the central directory", offset=pos)
        entry = _Entry(bytes(self._buf[name_at:name_at + name_len]), flags, method, crc, csize, usize,
                       header_offset, pos)
        extras = self._extras(name_at + name_len, extra_len, entry)
        self._apply_zip64(entry, extras.get(_ZIP64_ID), disk)
        return entry, stop

    def _extras(self, start: int, length: int, entry: _Entry) -> dict[int, bytes]:
        """Split an extra area into its fields, which must tile it exactly and not repeat."""
        fields: dict[int, bytes] = {}
        pos, end = start, start + length
        while pos < end:
            if pos + _FIELD.size > end:
                self._fail(ArchiveError, "truncated extra field header", record=entry.shown(), offset=pos)
            field_id, field_len = self._unpack(_FIELD, pos)
            if pos + _FIELD.size + field_len > end:
                self._fail(ArchiveError, f"extra field 0x{field_id:04x} of {field_len} bytes overruns its "
                           "extra area", record=entry.shown(), offset=pos)
            if field_id in fields:
                self._fail(ArchiveError, f"repeated extra field 0x{field_id:04x}", record=entry.shown(),
                           offset=pos)
            fields[field_id] = self._buf[pos + _FIELD.size:pos + _FIELD.size + field_len]
            pos += _FIELD.size + field_len
        return fields

    def _apply_zip64(self, entry: _Entry, field: bytes | None, disk: int) -> None:
        """Replace the central header's 0xFFFFFFFF markers with the ZIP64 extra field's values,
        which hold exactly the marked fields, in APPNOTE order."""
        marked = [entry.usize == _U32, entry.csize == _U32, entry.header_offset == _U32]
        needed = 8 * sum(marked) + (4 if disk == _U16 else 0)
        if field is None:
            if needed:
                self._fail(ArchiveError, "central header holds ZIP64 markers but no ZIP64 extra field",
                           record=entry.shown(), offset=entry.at)
            if disk:
                self._fail(UnsupportedFeature, "record on another disk (spanned archive)",
                           record=entry.shown(), offset=entry.at)
            return
        if not needed <= len(field) <= 28:
            self._fail(ArchiveError, f"ZIP64 extra field of {len(field)} bytes, but the central header's "
                       f"markers need {needed}", record=entry.shown(), offset=entry.at)
        values = [entry.usize, entry.csize, entry.header_offset]
        pos = 0
        for i, is_marked in enumerate(marked):
            if is_marked:
                values[i] = int.from_bytes(field[pos:pos + 8], "little")
                pos += 8
        entry.usize, entry.csize, entry.header_offset = values
        if disk == _U16:
            disk = int.from_bytes(field[pos:pos + 4], "little")
        if disk:
            self._fail(UnsupportedFeature, "record on another disk (spanned archive)",
                       record=entry.shown(), offset=entry.at)

    # -- names -------------------------------------------------------------------------------

    def _entry_names(self, entries: list[_Entry]) -> list[str]:
        """The decoded, validated names, in order.  :meth:`_entry_name` is the reference; the fast
        path checks all names at once for the common case that needs none of its checks: known
        flags, a method we read, and plain ASCII names that no rule of name_problem() rejects."""
        raws = [entry.raw_name for entry in entries]
        flags = {entry.flags for entry in entries}
        if _FAST_PATHS and all(not f & ~_FLAGS_KNOWN for f in flags) and \
                {entry.method for entry in entries} <= {_STORED, _DEFLATED} and \
                max(map(len, raws)) <= self._limits.max_name_bytes:
            names = _plain_names(raws)
            if names is not None:
                return names
        return [self._entry_name(entry) for entry in entries]

    def _entry_name(self, entry: _Entry) -> str:
        """Decode and validate one name; also reject unsupported flags and methods early."""
        raw, shown = entry.raw_name, entry.shown()
        if entry.flags & _FLAG_ENCRYPTION:
            self._fail(UnsupportedFeature, "encrypted record", record=shown, offset=entry.at)
        if entry.flags & ~_FLAGS_KNOWN:
            self._fail(UnsupportedFeature, f"unsupported general-purpose flags 0x{entry.flags:04x}",
                       record=shown, offset=entry.at)
        if entry.method not in (_STORED, _DEFLATED):
            self._fail(UnsupportedFeature, f"unsupported compression method {entry.method} (only stored "
                       "and deflate are read)", record=shown, offset=entry.at)
        if len(raw) > self._limits.max_name_bytes:
            self._fail(ResourceLimitExceeded, f"name of {len(raw)} bytes exceeds max_name_bytes "
                       f"({self._limits.max_name_bytes})", record=shown[:80] + "...", offset=entry.at)
        if entry.flags & _FLAG_UTF8:
            try:
                name = raw.decode("utf-8")
            except UnicodeDecodeError:
                self._fail(ArchiveError, "name is not valid UTF-8", record=shown, offset=entry.at)
        elif raw.isascii():
            name = raw.decode("ascii")
        else:
            self._fail(ArchiveError, "non-ASCII name without the UTF-8 flag (bit 11)", record=shown,
                       offset=entry.at)
        problem = name_problem(name)
        if problem is not None:
            self._fail(ArchiveError, f"unsafe record name: {problem}", record=shown, offset=entry.at)
        return name

    def _check_prefix(self, names: list[str], entries: list[_Entry]) -> str:
        """All records must sit under one top-level folder; return it."""
        prefix = names[0].split("/", 1)[0]
        lead = prefix + "/"
        for name, entry in zip(names, entries):
            if name.startswith(lead):
                continue
            if "/" not in name:
                self._fail(ArchiveError, "record at the zip root; every record must be under the "
                           "archive's one top-level folder", record=name, offset=entry.at)
            top = name.split("/", 1)[0]
            if top != prefix:
                self._fail(ArchiveError, f"second top-level folder {top!r} besides {prefix!r}", record=name,
                           offset=entry.at)
        return prefix

    def _check_unique(self, names: list[str], entries: list[_Entry]) -> None:
        if _FAST_PATHS and len(set(names)) == len(names) and "".join(names).isascii():
            return          # fast path: distinct, and ASCII, so the NFC forms are the names themselves
        seen: dict[str, str] = {}
        for name, entry in zip(names, entries):
            key = unicodedata.normalize("NFC", name)
            other = seen.get(key)
            if other == name:
                self._fail(ArchiveError, "duplicate record name", record=name, offset=entry.at)
            if other is not None:
                self._fail(ArchiveError, f"name equals {other!r} after Unicode NFC normalisation",
                           record=name, offset=entry.at)
            seen[key] = name

    # -- local headers and data ------------------------------------------------------------------

    def _layout(self, entries: list[_Entry], cd_off: int) -> dict[int, int]:
        """Check that the records tile [0, cd_off) exactly; map header offset -> data offset."""
        data_at: dict[int, int] = {}
        cursor, previous = 0, None
        window = _Window(self._buf, cd_off)
        for entry in sorted(entries, key=attrgetter("header_offset")):
            if entry.header_offset < cursor:
                assert previous is not None
                self._fail(ArchiveError, f"record overlaps record {previous.shown()!r}", record=entry.shown(),
                           offset=entry.header_offset)
            if entry.header_offset > cursor:
                self._fail(ArchiveError, f"{entry.header_offset - cursor} unaccounted bytes before the "
                           "record's local header", record=entry.shown(), offset=cursor)
            span = self._local_fast(entry, cd_off, window) if _FAST_PATHS else None
            data_at[entry.header_offset], cursor = self._local(entry, cd_off) if span is None else span
            previous = entry
        if cursor != cd_off:
            assert previous is not None
            self._fail(ArchiveError, "record runs into the central directory" if cursor > cd_off else
                       f"{cd_off - cursor} unaccounted bytes before the central directory",
                       record=previous.shown(), offset=cursor)
        return data_at

    def _local_fast(self, entry: _Entry, limit: int, window: _Window) -> tuple[int, int] | None:
        """:meth:`_local` for the common case, or ``None`` to leave the entry to it: a local header
        with the central name, flags, method, CRC and sizes (or zeros and a data descriptor), no
        extra field or one that is not ZIP64, and a 32-bit data descriptor where flagged.
        :meth:`_local` is the reference; this only saves its slicing and calls (and, for a file,
        its reads: a record's descriptor and the next local headers usually come in one read)."""
        pos, raw = entry.header_offset, entry.raw_name
        data_start = pos + _LOCAL_SIZE + len(raw)           # the extra area is added below
        if data_start > limit:
            return None
        buf, base = window.buf, window.base
        if pos < base or data_start - base > len(buf):
            buf, base = window.read(pos, data_start)
        at = pos - base
        sig, flags, method, crc, csize, usize, name_len, extra_len = _LOCAL_FAST.unpack_from(buf, at)
        if sig != _LOCAL_SIG or name_len != len(raw) or flags != entry.flags or method != entry.method or \
                not buf.startswith(raw, at + _LOCAL_SIZE):
            return None
        if extra_len:                                       # exactly one field, not ZIP64
            field_at, data_start = data_start, data_start + extra_len
            if extra_len < _FIELD_SIZE or data_start > limit:
                return None
            if field_at + _FIELD_SIZE - base > len(buf):
                buf, base = window.read(field_at, field_at + _FIELD_SIZE)
            field_id, field_len = _FIELD.unpack_from(buf, field_at - base)
            if field_id == _ZIP64_ID or field_len != extra_len - _FIELD_SIZE:
                return None
        if (crc != entry.crc or csize != entry.csize or usize != entry.usize) and \
                not (flags & _FLAG_DESCRIPTOR and crc == csize == usize == 0):
            return None
        data_end = data_start + entry.csize
        if data_end > limit:
            return None
        if not flags & _FLAG_DESCRIPTOR:
            return data_start, data_end
        end = self._descriptor_fast(entry, data_end, limit, window)
        return None if end is None else (data_start, end)

    @staticmethod
    def _descriptor_fast(entry: _Entry, data_end: int, limit: int, window: _Window) -> int | None:
        """:meth:`_descriptor` for a 32-bit descriptor, or ``None`` to leave it to it: a signed
        descriptor (16 bytes) first, then an unsigned one (12 bytes)."""
        if data_end + 12 > limit:
            return None
        stop = min(data_end + 16, limit)
        buf, base = window.buf, window.base
        if data_end < base or stop - base > len(buf):
            buf, base = window.read(data_end, stop)
        at, expected = data_end - base, (entry.crc, entry.csize, entry.usize)
        if stop == data_end + 16 and _SIGNED_DESCRIPTOR.unpack_from(buf, at) == (_DESCRIPTOR_SIG, *expected):
            return stop
        if _DESCRIPTOR32.unpack_from(buf, at) == expected:
            return data_end + 12
        return None

    def _local(self, entry: _Entry, limit: int) -> tuple[int, int]:
        """Validate one local header against its central entry: (data offset, record end)."""
        pos, shown = entry.header_offset, entry.shown()
        if pos + _LOCAL.size > limit:
            self._fail(ArchiveError, "local header runs into the central directory", record=shown, offset=pos)
        sig, _, flags, method, _, _, crc, csize, usize, name_len, extra_len = \
            self._unpack(_LOCAL, pos)
        if sig != _LOCAL_SIG:
            self._fail(ArchiveError, "no local file header where the central directory points", record=shown,
                       offset=pos)
        name_at = pos + _LOCAL.size
        data_start = name_at + name_len + extra_len
        if data_start > limit:
            self._fail(ArchiveError, "local header runs into the central directory", record=shown, offset=pos)
        if self._buf[name_at:name_at + name_len] != entry.raw_name:
            local_name = self._buf[name_at:name_at + name_len].decode("utf-8", "backslashreplace")
            self._fail(ArchiveError, f"local header names {local_name!r}, the central directory another",
                       record=shown, offset=pos)
        if (flags, method) != (entry.flags, entry.method):
            self._fail(ArchiveError, "local header flags or method differ from the central directory",
                       record=shown, offset=pos)
        zip64 = self._extras(name_at + name_len, extra_len, entry).get(_ZIP64_ID)
        self._check_local_sizes(entry, (crc, csize, usize), zip64)
        data_end = data_start + entry.csize
        if data_end > limit:
            self._fail(ArchiveError, f"record data ({entry.csize} bytes) runs past the start of the "
                       "central directory", record=shown, offset=data_start)
        if flags & _FLAG_DESCRIPTOR:
            return data_start, self._descriptor(entry, data_end, limit, zip64 is not None)
        return data_start, data_end

    def _check_local_sizes(self, entry: _Entry, local: tuple[int, int, int], zip64: bytes | None) -> None:
        """The local CRC and sizes equal the central ones (or are zero, with a data descriptor)."""
        shown, at = entry.shown(), entry.header_offset
        if zip64 is not None and (len(zip64) > 28 or len(zip64) % 8 not in (0, 4)):
            self._fail(ArchiveError, f"malformed local ZIP64 extra field of {len(zip64)} bytes", record=shown,
                       offset=at)
        if entry.flags & _FLAG_DESCRIPTOR and local == (0, 0, 0):
            return
        crc, csize, usize = local
        if (csize, usize) == (_U32, _U32) and zip64 is not None and len(zip64) >= 16:
            usize, csize = struct.unpack_from("<QQ", zip64)
        if (crc, csize, usize) != (entry.crc, entry.csize, entry.usize):
            self._fail(ArchiveError, f"local header declares crc {crc:#010x} and sizes {csize}/{usize}, the "
                       f"central directory {entry.crc:#010x} and {entry.csize}/{entry.usize}", record=shown,
                       offset=at)

    def _descriptor(self, entry: _Entry, data_end: int, limit: int, wide: bool) -> int:
        """Match the data descriptor after the data against the central entry; return its end."""
        layout = _DESCRIPTOR64 if wide else _DESCRIPTOR32
        starts = [data_end + 4] if self._buf[data_end:data_end + 4] == _DESCRIPTOR_SIG else []
        for start in [*starts, data_end]:
            if start + layout.size <= limit and \
                    self._unpack(layout, start) == (entry.crc, entry.csize, entry.usize):
                return start + layout.size
        self._fail(ArchiveError, "data descriptor missing or disagreeing with the central directory",
                   record=entry.shown(), offset=data_end)

    def _check_totals(self, entries: list[_Entry]) -> None:
        """Per-record and total size caps, and sizes that the method can actually produce."""
        limits, total = self._limits, 0
        for entry in entries:
            if entry.usize > limits.max_record_bytes:
                self._fail(ResourceLimitExceeded, f"record declares {entry.usize} bytes, more than "
                           f"max_record_bytes ({limits.max_record_bytes})", record=entry.shown(),
                           offset=entry.at)
            if entry.method == _STORED and entry.csize != entry.usize:
                self._fail(ArchiveError, f"stored record with compressed size {entry.csize} != size "
                           f"{entry.usize}", record=entry.shown(), offset=entry.at)
            if entry.usize > _DEFLATE_MAX_RATIO * (entry.csize + 1):
                self._fail(ArchiveError, f"record declares {entry.usize} bytes, more than deflate can "
                           f"produce from {entry.csize}", record=entry.shown(), offset=entry.at)
            total += entry.usize
        if total > limits.max_total_bytes:
            self._fail(ResourceLimitExceeded, f"records declare {total} bytes together, more than "
                       f"max_total_bytes ({limits.max_total_bytes})")

    # -- reading records ---------------------------------------------------------------------

    def _full(self, rec: Record) -> str:
        return f"{self.prefix}/{rec.name}"

    def _charge(self, rec: Record) -> None:
        """Count the bytes :meth:`read` materialises against max_total_bytes."""
        with self._lock:
            self._charged += rec.size
            over = self._charged > self._limits.max_total_bytes
        if over:
            self._fail(ResourceLimitExceeded, f"reads have materialised more than max_total_bytes "
                       f"({self._limits.max_total_bytes})", record=self._full(rec))

    def _unpack(self, layout: struct.Struct, pos: int) -> tuple[Any, ...]:
        raw = self._buf[pos:pos + layout.size]
        if len(raw) != layout.size:
            self._fail(ArchiveError, "structure runs past the end of the file", offset=pos)
        return layout.unpack(raw)

    def _span(self, offset: int, size: int) -> memoryview:
        """Bytes ``[offset, offset + size)`` of the file: a view of in-memory bytes, or read."""
        if self._mv is not None:
            return self._mv[offset:offset + size]
        assert self._file is not None
        return memoryview(self._file.pread(offset, size))

    def _stored(self, rec: Record) -> memoryview:
        view = self._span(rec.offset, rec.size)
        if rec.name not in self._verified:
            self._check_crc(rec, view)
            with self._lock:
                self._verified.add(rec.name)
        return view

    def _inflate(self, rec: Record) -> bytes:
        inflater = zlib.decompressobj(-zlib.MAX_WBITS)
        try:
            out = inflater.decompress(self._span(rec.offset, rec.compressed_size), rec.size + 1)
        except zlib.error as exc:
            self._fail(ArchiveError, f"corrupt deflate data: {exc}", record=self._full(rec),
                       offset=rec.offset)
        if len(out) != rec.size or not inflater.eof or inflater.unused_data or inflater.unconsumed_tail:
            self._fail(ArchiveError, f"deflate data does not inflate to exactly the declared {rec.size} "
                       "bytes", record=self._full(rec), offset=rec.offset)
        self._check_crc(rec, out)
        return out

    def _check_crc(self, rec: Record, data: bytes | memoryview) -> None:
        actual = zlib.crc32(data)
        if actual != rec.crc32:
            self._fail(ArchiveError, f"CRC-32 mismatch: data has {actual:#010x}, the directory says "
                       f"{rec.crc32:#010x}", record=self._full(rec), offset=rec.offset)


# Records smaller than this are read on the spot (a thread hand-off costs more than the read).
_BACKGROUND_MIN = 1 << 20
# The switch interval while records are read in the background (seconds; CPython's default is
# 0.005, which would leave the worker waiting that long for the GIL after each read).
_BACKGROUND_SWITCH_INTERVAL = 0.0001


_switches_lock = threading.Lock()
_switches_users = 0
_switches_saved = 0.0


def _short_switches(enter: bool) -> None:
    """Shorten the switch interval while any thread is inside ``background_reads`` (loads in
    several threads at once: the first in saves the interval, the last out restores it)."""
    global _switches_users, _switches_saved
    with _switches_lock:
        if enter:
            if _switches_users == 0:
                _switches_saved = sys.getswitchinterval()
                sys.setswitchinterval(min(_switches_saved, _BACKGROUND_SWITCH_INTERVAL))
            _switches_users += 1
        else:
            _switches_users -= 1
            if _switches_users == 0:
                sys.setswitchinterval(_switches_saved)


class _Background:
    """The worker of :meth:`ArchiveReader.background_reads`: reads and checks records in the
    order given, keeping the first error (the others are still read, so that no destination is
    written after :meth:`finish` returns)."""

    def __init__(self, reader: ArchiveReader) -> None:
        self._reader = reader
        self._jobs: queue.SimpleQueue[tuple[Record, memoryview] | None] = queue.SimpleQueue()
        self._error: BaseException | None = None
        self._thread: threading.Thread | None = None

    def submit(self, rec: Record, dest: memoryview) -> None:
        if self._thread is None:
            thread = threading.Thread(target=self._run, name="kiln-archive-reads", daemon=True)
            _short_switches(True)
            try:
                thread.start()
            except BaseException:
                _short_switches(False)
                raise
            self._thread = thread
        self._jobs.put((rec, dest))

    def _run(self) -> None:
        while (job := self._jobs.get()) is not None:
            if self._error is not None:
                continue                      # (only drained: the load fails anyway)
            rec, dest = job
            try:
                self._reader._read_stored(rec, dest)
            except BaseException as e:        # re-raised by finish(), on the loading thread
                self._error = e

    def finish(self) -> None:
        if self._thread is not None:
            self._jobs.put(None)
            try:
                self._thread.join()
            finally:
                self._thread = None
                _short_switches(False)
        if self._error is not None:
            error, self._error = self._error, None
            raise error


# -- opening files ---------------------------------------------------------------------------

def open_archive(src: str | os.PathLike[str] | BytesLike | BinaryIO, *,
                 limits: Limits = DEFAULT_LIMITS) -> ArchiveReader:
    """Read a path, a binary file object or bytes, and parse it.  The size is checked against
    ``max_archive_bytes`` before reading.  Errors opening a path (missing file, permissions)
    propagate as :class:`OSError`: they say nothing about the archive's format."""
    if isinstance(src, (bytes, bytearray, memoryview)):
        return ArchiveReader(src, limits=limits)
    if isinstance(src, (str, os.PathLike)):
        path = os.fspath(src)
        if _POSITIONAL_READS and os.path.isfile(path):
            return ArchiveReader.open_file(path, limits=limits)
        with open(path, "rb") as stream:
            return ArchiveReader(_read_capped(stream, limits, path), limits=limits, source=path)
    name = getattr(src, "name", None)
    source = name if isinstance(name, str) else "<stream>"
    return ArchiveReader(_read_capped(src, limits, source), limits=limits, source=source)


def _remaining(stream: BinaryIO) -> int | None:
    """Bytes left in ``stream`` when that can be known without reading it."""
    with contextlib.suppress(OSError, AttributeError, ValueError):
        info = os.fstat(stream.fileno())
        if stat.S_ISREG(info.st_mode):
            return max(0, info.st_size - stream.tell())
    with contextlib.suppress(OSError, AttributeError, ValueError):
        if stream.seekable():
            here = stream.tell()
            end = stream.seek(0, os.SEEK_END)
            stream.seek(here)
            return max(0, end - here)
    return None


def _read_capped(stream: BinaryIO, limits: Limits, source: str) -> bytes:
    cap = limits.max_archive_bytes
    size = _remaining(stream)
    if size is not None and size > cap:
        raise ResourceLimitExceeded(f"{source}: archive of {size} bytes exceeds max_archive_bytes ({cap})")
    if size is not None:
        data = stream.read(size)
        if not isinstance(data, bytes) or len(data) != size or stream.read(1):
            raise ArchiveError(f"{source}: the file changed size while it was read (or is not binary)")
        return data
    chunks, total = [], 0
    while chunk := stream.read(min(1 << 24, cap + 1 - total)):
        if not isinstance(chunk, bytes):
            raise ArchiveError(f"{source}: stream is not binary")
        chunks.append(chunk)
        total += len(chunk)
        if total > cap:
            raise ResourceLimitExceeded(f"{source}: archive exceeds max_archive_bytes ({cap})")
    return b"".join(chunks)


_POSITIONAL_READS = hasattr(os, "pread") and hasattr(os, "preadv")


class FileBuffer:
    """The bytes of a regular file, read on demand with positional reads: what
    :class:`ArchiveReader` parses in place of the whole file in memory.  Small reads (the end
    records; the directory and local headers where the reader's detailed checks look at them)
    go through a cache of 4 KiB blocks, dropped once the directory is checked; larger ones read
    exactly their range.  A read that comes back short
    means the file shrank while it was being read: :class:`ArchiveError`, never a crash (no
    memory mapping, which would fault on a truncated file)."""

    _BLOCK = 4096

    def __init__(self, fd: int, size: int, source: str) -> None:
        self._fd: int | None = fd
        self._size = size
        self._source = source
        self._blocks: dict[int, bytes] = {}
        self._finalizer = weakref.finalize(self, _close_fd, fd)

    def __len__(self) -> int:
        return self._size

    def __getitem__(self, key: slice) -> bytes:
        start, stop, step = key.indices(self._size)
        if step != 1:
            raise ValueError("FileBuffer slices have step 1")
        if stop <= start:
            return b""
        first, last = start // self._BLOCK, (stop - 1) // self._BLOCK
        if last - first > 1:
            return self.pread(start, stop - start)
        joined = b"".join(self._block(i) for i in range(first, last + 1))
        base = first * self._BLOCK
        return joined[start - base:stop - base]

    def startswith(self, prefix: bytes) -> bool:
        return self[0:len(prefix)] == prefix

    def rfind(self, sub: bytes, start: int, end: int | None = None) -> int:
        start = max(0, start)
        found = self[start:self._size if end is None else end].rfind(sub)
        return found if found < 0 else start + found

    def _block(self, index: int) -> bytes:
        block = self._blocks.get(index)
        if block is None:
            at = index * self._BLOCK
            block = self._blocks[index] = self.pread(at, min(self._BLOCK, self._size - at))
        return block

    def pread(self, offset: int, size: int) -> bytes:
        """Exactly ``size`` bytes at ``offset``."""
        parts: list[bytes] = []
        done = 0
        while done < size:
            try:
                part = os.pread(self._fd_or_fail(), size - done, offset + done)
            except OSError as e:
                raise self._read_error(size, offset, e) from e
            if not part:
                raise ArchiveError(f"{self._source}: the file ends {size - done} bytes short of a read at "
                                   f"offset {offset} (it changed while it was read)")
            parts.append(part)
            done += len(part)
        return parts[0] if len(parts) == 1 else b"".join(parts)

    def _read_error(self, size: int, offset: int, e: OSError) -> ArchiveError:
        return ArchiveError(f"{self._source}: reading {size} bytes at offset {offset} failed: {e}")

    def _fd_or_fail(self) -> int:
        if self._fd is None:
            raise ArchiveError(f"{self._source}: the archive file is closed")
        return self._fd

    def read_into(self, offset: int, dest: memoryview) -> None:
        """Fill ``dest`` with the bytes at ``offset``: the kernel copies straight into it."""
        fd = self._fd_or_fail()
        done, total = 0, dest.nbytes
        while done < total:
            try:
                n = os.preadv(fd, [dest[done:]], offset + done)
            except OSError as e:
                raise self._read_error(total, offset, e) from e
            if n <= 0:
                raise ArchiveError(f"{self._source}: the file ends {total - done} bytes short of a record at "
                                   f"offset {offset} (it changed while it was read)")
            done += n

    def drop_cache(self) -> None:
        self._blocks.clear()

    def close(self) -> None:
        self._fd = None
        self._finalizer()


def _close_fd(fd: int) -> None:
    with contextlib.suppress(OSError):
        os.close(fd)


# -- writing ---------------------------------------------------------------------------------

class ArchiveWriter:
    """Builds a TorchScript-compatible zip in memory.  ``zip64_threshold`` (default 0xFFFFFFFF)
    is the value from which sizes and offsets go to ZIP64 fields; tests lower it."""

    def __init__(self, prefix: str = "archive", *, zip64_threshold: int = _U32) -> None:
        problem = name_problem(prefix)
        if problem is not None or "/" in prefix:
            raise ArchiveError(f"bad archive prefix {prefix!r}: {problem or 'must be one path component'}")
        self.prefix = prefix
        self._threshold = min(zip64_threshold, _U32)
        self._chunks: list[bytes] = []
        self._central: list[bytes] = []
        self._offset = 0
        self._names: dict[str, str] = {}      # NFC form -> name
        self._result: bytes | None = None

    def add(self, name: str, data: BytesLike, *, compress: bool = False) -> None:
        """Append a record ``prefix/name`` (stored, or deflated with ``compress=True``)."""
        if self._result is not None:
            raise ArchiveError("ArchiveWriter.add after finish")
        full = self._check_name(name)
        raw = bytes(data)
        payload = _deflate(raw) if compress else raw
        method = _DEFLATED if compress else _STORED
        entry = _Entry(full.encode("utf-8"), _FLAG_UTF8, method, zlib.crc32(raw), len(payload), len(raw),
                       self._offset, 0)
        local = self._local_header(entry)
        self._central.append(self._central_header(entry))
        self._chunks += [local, payload]
        self._offset += len(local) + len(payload)

    def finish(self) -> bytes:
        """The archive's bytes (the same bytes on every call)."""
        if self._result is None:
            if not self._central:
                raise ArchiveError("an archive needs at least one record")
            directory = b"".join(self._central)
            self._result = b"".join([*self._chunks, directory, self._end(len(directory))])
            self._chunks = []
        return self._result

    def _check_name(self, name: str) -> str:
        problem = name_problem(name)
        if problem is not None:
            raise ArchiveError(f"refusing to write record {name!r}: {problem}")
        full = f"{self.prefix}/{name}"
        if len(full.encode("utf-8")) > min(DEFAULT_LIMITS.max_name_bytes, _U16):
            raise ArchiveError(f"refusing to write record {name[:80]!r}...: name too long")
        key = unicodedata.normalize("NFC", full)
        if key in self._names:
            raise ArchiveError(f"refusing to write record {name!r}: it duplicates {self._names[key]!r}")
        self._names[key] = full
        return full

    def _wide(self, value: int) -> bool:
        return value >= self._threshold

    def _local_header(self, e: _Entry) -> bytes:
        """Local header whose extra area ends with an ``FB`` field padding the data to 64 bytes."""
        zip64 = b""
        csize, usize = e.csize, e.usize
        if self._wide(e.csize) or self._wide(e.usize):   # a local ZIP64 field carries both sizes
            zip64 = _FIELD.pack(_ZIP64_ID, 16) + struct.pack("<QQ", e.usize, e.csize)
            csize = usize = _U32
        unpadded = self._offset + _LOCAL.size + len(e.raw_name) + len(zip64) + _FIELD.size
        pad = -unpadded % _ALIGN
        extra = zip64 + _FIELD.pack(_PAD_ID, pad) + b"Z" * pad
        version = 45 if zip64 else (20 if e.method == _DEFLATED else 10)
        head = _LOCAL.pack(_LOCAL_SIG, version, e.flags, e.method, _DOS_TIME, _DOS_DATE, e.crc, csize, usize,
                           len(e.raw_name), len(extra))
        return head + e.raw_name + extra

    def _central_header(self, e: _Entry) -> bytes:
        values = [e.usize, e.csize, e.header_offset]
        wide = [self._wide(v) for v in values]
        zip64 = b"".join(struct.pack("<Q", v) for v, w in zip(values, wide) if w)
        extra = _FIELD.pack(_ZIP64_ID, len(zip64)) + zip64 if zip64 else b""
        usize, csize, offset = (_U32 if w else v for v, w in zip(values, wide))
        version = 45 if zip64 else (20 if e.method == _DEFLATED else 10)
        head = _CENTRAL.pack(_CENTRAL_SIG, version, version, e.flags, e.method, _DOS_TIME, _DOS_DATE, e.crc,
                             csize, usize, len(e.raw_name), len(extra), 0, 0, 0, 0, offset)
        return head + e.raw_name + extra

    def _end(self, cd_size: int) -> bytes:
        """The end records: ZIP64 ones too when a count, size or offset does not fit."""
        count, cd_off = len(self._central), self._offset
        tail = b""
        if count >= _U16 or self._wide(cd_size) or self._wide(cd_off):
            zip64_at = cd_off + cd_size
            tail = _ZIP64_EOCD.pack(_ZIP64_EOCD_SIG, _ZIP64_EOCD.size - 12, 45, 45, 0, 0, count, count,
                                    cd_size, cd_off)
            tail += _ZIP64_LOCATOR.pack(_ZIP64_LOCATOR_SIG, 0, zip64_at, 1)
        small_count = min(count, _U16)
        return tail + _EOCD.pack(_EOCD_SIG, 0, 0, small_count, small_count,
                                 _U32 if self._wide(cd_size) else cd_size,
                                 _U32 if self._wide(cd_off) else cd_off, 0)


def _deflate(raw: bytes) -> bytes:
    """Raw deflate at a fixed level: deterministic for a given zlib build."""
    compressor = zlib.compressobj(6, zlib.DEFLATED, -zlib.MAX_WBITS, 8, zlib.Z_DEFAULT_STRATEGY)
    return compressor.compress(raw) + compressor.flush()


def atomic_write(path: str | os.PathLike[str], data: BytesLike) -> None:
    """Write ``data`` to ``path`` so that the path holds the old file or the complete new one,
    never a torn one: a temporary file in the same directory, written, flushed and fsync'd,
    then ``os.replace``.  On any failure the temporary file is removed and an
    :class:`ArchiveError` (with the original exception as ``__cause__``) is raised; the
    previous file at ``path`` is untouched."""
    target = os.fspath(path)
    directory, base = os.path.split(os.path.abspath(target))
    temp = os.path.join(directory, f".{base}.{secrets.token_hex(8)}.tmp")
    fd = -1
    try:
        # 0o666 lets the umask apply, as for any new file; O_EXCL refuses to follow a planted link.
        fd = os.open(temp, os.O_WRONLY | os.O_CREAT | os.O_EXCL | getattr(os, "O_BINARY", 0)
                     | getattr(os, "O_CLOEXEC", 0), 0o666)
        _keep_mode(fd, target)
        view = memoryview(data).cast("B")
        while view:
            view = view[os.write(fd, view):]
        os.fsync(fd)
        os.close(fd)
        fd = -1
        os.replace(temp, target)
    except Exception as exc:
        _cleanup(fd, temp)
        raise ArchiveError(f"{target}: could not save: {exc}") from exc
    except BaseException:
        _cleanup(fd, temp)
        raise
    _sync_directory(directory)


def _keep_mode(fd: int, target: str) -> None:
    """Give the new file the permission bits of the file it replaces."""
    try:
        mode = stat.S_IMODE(os.stat(target).st_mode)
    except OSError:
        return
    if hasattr(os, "fchmod"):
        os.fchmod(fd, mode)


def _cleanup(fd: int, temp: str) -> None:
    if fd >= 0:
        with contextlib.suppress(OSError):
            os.close(fd)
    with contextlib.suppress(OSError):
        os.unlink(temp)


def _sync_directory(directory: str) -> None:
    """Make the rename durable where the platform allows fsync on a directory (best effort)."""
    with contextlib.suppress(OSError):
        fd = os.open(directory, os.O_RDONLY)
        try:
            os.fsync(fd)
        finally:
            os.close(fd)
