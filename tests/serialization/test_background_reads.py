"""Large weights are read and CRC-checked on a worker thread while the modules are built.

``kiln.load`` reads stored records of at least ``_BACKGROUND_MIN`` bytes on a worker inside
``ArchiveReader.background_reads``.  The load must still give the same module as reading them on
the spot, fail with the same error classes on a damaged record, leave no thread behind and
restore the interpreter's switch interval, whether it succeeds or fails.
"""

from __future__ import annotations

import io
import sys
import threading
from pathlib import Path

import pytest
import torch
from torch import nn

import kiln
from kiln.errors import ArchiveError, ModelFormatError
from kiln.serialization import archive
from tests.serialization.test_load_security import edit_code, records, replace_once


class Big(nn.Module):
    def __init__(self) -> None:
        super().__init__()
        self.a = nn.Linear(512, 1024)        # 2 MiB of weight: read in the background
        self.b = nn.Linear(1024, 8)          # small: read on the spot

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.b(torch.relu(self.a(x)))


X = torch.randn(3, 512)


def _blob() -> bytes:
    torch.manual_seed(0)
    buf = io.BytesIO()
    torch.jit.save(torch.jit.script(Big().eval()), buf)
    return buf.getvalue()


def _workers() -> list[threading.Thread]:
    return [t for t in threading.enumerate() if t.name == "kiln-archive-reads"]


def _load_both(blob: bytes, tmp_path: Path) -> list[object]:
    path = tmp_path / "m.pt"
    path.write_bytes(blob)
    return [kiln.load(blob), kiln.load(str(path))]


def test_background_reads_give_the_same_module(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    blob = _blob()
    submitted: list[int] = []
    submit = archive._Background.submit

    def counted(self: archive._Background, rec: archive.Record, dest: memoryview) -> None:
        submitted.append(rec.size)
        submit(self, rec, dest)
    monkeypatch.setattr(archive._Background, "submit", counted)
    interval = sys.getswitchinterval()
    expected = torch.jit.load(io.BytesIO(blob))(X)
    for loaded in _load_both(blob, tmp_path):
        torch.testing.assert_close(loaded(X), expected)   # type: ignore[operator]
    assert submitted and min(submitted) >= archive._BACKGROUND_MIN
    assert sys.getswitchinterval() == interval and not _workers()
    # the same as reading everything on the spot
    monkeypatch.setattr(archive, "_BACKGROUND_MIN", 1 << 62)
    for loaded in _load_both(blob, tmp_path):
        torch.testing.assert_close(loaded(X), expected)   # type: ignore[operator]


def _corrupt_big_weight(blob: bytes) -> bytes:
    """One byte of the 2 MiB weight flipped, inside the file (its CRC no longer matches)."""
    name, data = max(((n, d) for n, d in records(blob).items() if "/data/" in f"/{n}"), key=lambda r: len(r[1]))
    assert len(data) >= archive._BACKGROUND_MIN
    at = blob.index(data[:4096]) + 1000
    return blob[:at] + bytes([blob[at] ^ 0xFF]) + blob[at + 1:]


def test_a_damaged_weight_read_in_the_background_fails_the_load(tmp_path: Path) -> None:
    blob = _corrupt_big_weight(_blob())
    interval = sys.getswitchinterval()
    path = tmp_path / "bad.pt"
    path.write_bytes(blob)
    for source in (blob, str(path)):
        with pytest.raises(ArchiveError, match="CRC-32 mismatch"):
            kiln.load(source)
        assert sys.getswitchinterval() == interval and not _workers()


def test_an_error_while_building_waits_for_the_worker(tmp_path: Path) -> None:
    """The build fails after the big weight went to the worker: the build's error comes out,
    once the worker is done with the tensor's memory."""
    blob = edit_code(_blob(), "Big", replace_once("  training : bool\n", "  training : bool\n  c : int\n"))
    interval = sys.getswitchinterval()
    for source in (blob, *_paths(tmp_path, blob)):
        with pytest.raises(ModelFormatError, match="does not match its class"):
            kiln.load(source)
        assert sys.getswitchinterval() == interval and not _workers()


def _paths(tmp_path: Path, blob: bytes) -> list[str]:
    path = tmp_path / "edited.pt"
    path.write_bytes(blob)
    return [str(path)]


def test_loads_in_several_threads_restore_the_switch_interval(tmp_path: Path) -> None:
    blob = _blob()
    path = tmp_path / "m.pt"
    path.write_bytes(blob)
    expected = torch.jit.load(io.BytesIO(blob))(X)
    interval = sys.getswitchinterval()
    results: list[torch.Tensor] = []
    errors: list[BaseException] = []

    def load(i: int) -> None:
        try:
            for _ in range(3):
                m = kiln.load(blob if i % 2 else str(path))
                results.append(m(X))
        except BaseException as e:  # reported below
            errors.append(e)
    threads = [threading.Thread(target=load, args=(i,)) for i in range(4)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert not errors, errors
    assert len(results) == 12
    for r in results:
        torch.testing.assert_close(r, expected)
    assert sys.getswitchinterval() == interval and not _workers()
