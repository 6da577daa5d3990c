"""Custom operators (``ns::op``) through save and load.

An operator registered with ``torch.library`` compiles, saves, loads and runs like an ATen
one, in Kiln and in TorchScript; where its library is not loaded, loading names the
operator and says how to provide it.  Kiln never loads a library on an archive's behalf.
"""

from __future__ import annotations

import io
import subprocess
import sys
import textwrap

import pytest
import torch

import kiln

_LIB = torch.library.Library("kilnarchive", "DEF")
_LIB.define("scale(Tensor x, float k) -> Tensor")
_LIB.impl("scale", lambda x, k: x * k, "CompositeExplicitAutograd")


class UsesCustomOp(torch.nn.Module):
    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return torch.ops.kilnarchive.scale(x, 3.0) + 1


def test_custom_op_round_trip() -> None:
    m = kiln.script(UsesCustomOp())
    blob = kiln.serialize(m)
    loaded = kiln.load(blob)
    x = torch.randn(4)
    torch.testing.assert_close(loaded(x), x * 3 + 1)
    assert "ops.kilnarchive.scale" in loaded.code
    assert kiln.serialize(loaded) == blob


def test_custom_op_kiln_to_torch(jit) -> None:
    blob = kiln.serialize(kiln.script(UsesCustomOp()))
    x = torch.randn(4)
    torch.testing.assert_close(jit.load(io.BytesIO(blob))(x), x * 3 + 1)


def test_custom_op_torch_to_kiln(jit) -> None:
    buf = io.BytesIO()
    jit.save(jit.script(UsesCustomOp()), buf)
    x = torch.randn(4)
    torch.testing.assert_close(kiln.load(buf.getvalue())(x), x * 3 + 1)


def test_missing_library_names_operator_and_library(tmp_path) -> None:
    """In a process where the library is not loaded, loading fails with a KilnError that
    names the operator; a torchvision operator's message names torchvision."""
    path = tmp_path / "m.pt"
    kiln.save(kiln.script(UsesCustomOp()), str(path))
    blob = kiln.serialize(kiln.script(UsesCustomOp()))
    from kiln.serialization.archive import ArchiveWriter, open_archive
    r = open_archive(blob)
    w = ArchiveWriter(r.prefix)
    for name in r.names():
        content = r.read(name)
        w.add(name, content.replace(b"ops.kilnarchive.scale(x, 3.)", b"ops.torchvision.nms(x, x, 3.)"))
    (tmp_path / "tv.pt").write_bytes(w.finish())
    script = textwrap.dedent(f"""
        import kiln
        for name in ("m.pt", "tv.pt"):
            try:
                kiln.load({str(tmp_path)!r} + "/" + name)
                print("LOADED", name)
            except kiln.KilnError as e:
                print(type(e).__name__, "|", str(e).replace(chr(10), " "))
    """)
    out = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True, timeout=120)
    lines = out.stdout.strip().splitlines()
    assert len(lines) == 2, out.stderr
    assert lines[0].startswith("CompileError") and "kilnarchive::scale" in lines[0] and "namespace 'kilnarchive'" in lines[0]
    if "torchvision" not in sys.modules and not _has_torchvision():
        assert "torchvision::nms" in lines[1] and "import torchvision" in lines[1]


def _has_torchvision() -> bool:
    try:
        import torchvision  # noqa: F401
    except ImportError:
        return False
    return True


def test_from_file_is_refused() -> None:
    """``torch.from_file`` maps (and may create) a file named by the archive: refused at load."""
    class Reads(torch.nn.Module):
        def forward(self, x: torch.Tensor) -> torch.Tensor:
            return x

    from kiln.serialization.archive import ArchiveWriter, open_archive
    r = open_archive(kiln.serialize(kiln.script(Reads())))
    w = ArchiveWriter(r.prefix)
    for name in r.names():
        content = r.read(name)
        if name.startswith("code/"):
            content = content.replace(b"return x", b'return torch.from_file("/tmp/kiln-x", True, 4)')
        w.add(name, content)
    with pytest.raises((kiln.UnsupportedFeature, kiln.CompileError), match="from_file"):
        kiln.load(w.finish())
