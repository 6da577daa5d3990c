"""Files of class variants (``___torch_mangle_N``) parse once per archive.

TorchScript writes a class per variant of a Python class: files that differ only in member
declarations and in ``self``'s annotation.  Kiln parses the first and reuses its method trees
for the others, parsing only their declarations.  These tests check that each variant still
gets its own declarations, and that a file differing anywhere else (however it is laid out) is
parsed in full, so that its own code runs.  Outputs are compared with eager PyTorch and
``torch.jit.load``.
"""

from __future__ import annotations

import io
import re

import pytest
import torch
from torch import nn

import kiln
from kiln.serialization import source
from tests.serialization.test_load_security import records, repack


class Net(nn.Module):
    def __init__(self) -> None:
        super().__init__()
        self.c1 = nn.Conv2d(3, 4, 3, padding=1)
        self.b1 = nn.BatchNorm2d(4)
        self.c2 = nn.Conv2d(4, 6, 3, padding=1, stride=2)
        self.b2 = nn.BatchNorm2d(6, momentum=0.5)
        self.c3 = nn.Conv2d(6, 6, 1, bias=False)
        self.b3 = nn.BatchNorm2d(6)      # b1's variant: only num_features differs

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = torch.relu(self.b1(self.c1(x)))
        return self.b3(self.c3(torch.relu(self.b2(self.c2(x)))))


X = torch.randn(2, 3, 8, 8)


def _archive(capture: str) -> tuple[nn.Module, bytes]:
    torch.manual_seed(0)
    eager = Net().eval()
    for bn in (eager.b1, eager.b2, eager.b3):
        bn.running_mean.uniform_(-1, 1)
        bn.running_var.uniform_(0.5, 2)
    ts = torch.jit.script(eager) if capture == "script" else torch.jit.trace(eager, X)
    buf = io.BytesIO()
    torch.jit.save(ts, buf)
    return eager, buf.getvalue()


@pytest.fixture()
def parses(monkeypatch: pytest.MonkeyPatch) -> dict[str, int]:
    counts = {"full": 0, "reused": 0}
    full, reuse = source._parse, source._reuse

    def counted_parse(*args: object) -> object:
        counts["full"] += 1
        return full(*args)  # type: ignore[arg-type]

    def counted_reuse(*args: object) -> object:
        out = reuse(*args)  # type: ignore[arg-type]
        counts["reused"] += out is not None
        return out
    monkeypatch.setattr(source, "_parse", counted_parse)
    monkeypatch.setattr(source, "_reuse", counted_reuse)
    return counts


@pytest.mark.parametrize("capture", ["script", "trace"])
def test_variants_reuse_the_parse_and_keep_their_declarations(capture: str, parses: dict[str, int]) -> None:
    eager, blob = _archive(capture)
    loaded = kiln.load(blob)
    assert parses["reused"] >= 1, parses
    with torch.no_grad():
        torch.testing.assert_close(loaded(X), eager(X))
        torch.testing.assert_close(loaded(X), torch.jit.load(io.BytesIO(blob))(X))
    # each variant's own declarations: parameters, buffers and constants
    tl = torch.jit.load(io.BytesIO(blob))
    for name in ("c1", "c3", "b1", "b2", "b3"):
        assert [n for n, _ in getattr(loaded, name).named_parameters()] == \
            [n for n, _ in getattr(tl, name).named_parameters()]
        assert [n for n, _ in getattr(loaded, name).named_buffers()] == \
            [n for n, _ in getattr(tl, name).named_buffers()]
    if capture == "script":
        assert (loaded.c1.out_channels, loaded.c2.out_channels, loaded.c2.stride) == (4, 6, (2, 2))
        assert (loaded.b1.momentum, loaded.b2.momentum, loaded.b2.num_features) == (0.1, 0.5, 6)
        assert (loaded.b1.num_features, loaded.b3.num_features) == (4, 6)
    again = kiln.serialize(loaded)
    assert kiln.serialize(kiln.load(again)) == again


def _variant_records(blob: bytes) -> tuple[str, str]:
    """The code records of b1's and b3's BatchNorm2d variants (the same but for num_features)."""
    found = {}
    for n, d in records(blob).items():
        if not (n.startswith("code/") and n.endswith(".py")):
            continue
        text = d.decode()
        if re.search(r"^class BatchNorm2d\(", text, re.M):
            key = re.sub(r"num_features : Final\[int\] = \d+|___torch_mangle_\d+\.", "", text)
            found.setdefault(key, []).append(n)
    pair = next(v for v in found.values() if len(v) == 2)
    return pair[0], pair[1]


def _edit(blob: bytes, record: str, old: str, new: str) -> bytes:
    def change(data: bytes) -> bytes:
        text = data.decode()
        assert old in text, (old, text)
        return text.replace(old, new, 1).encode()
    return repack(blob, edit={record: change})


@pytest.mark.parametrize("capture", ["script", "trace"])
def test_a_variant_whose_code_differs_runs_its_own_code(capture: str, parses: dict[str, int]) -> None:
    eager, blob = _archive(capture)
    _, variant = _variant_records(blob)
    # the mangled variant's forward doubles its result: a method line differs, so no reuse of
    # the first variant's trees for it
    text = records(blob)[variant].decode()
    ret = re.findall(r"^    return (\w+)$", text, re.M)[0]
    edited = _edit(blob, variant, f"    return {ret}\n", f"    return torch.mul({ret}, 2.0)\n")
    loaded = kiln.load(edited)
    with torch.no_grad():
        torch.testing.assert_close(loaded(X), torch.jit.load(io.BytesIO(edited))(X))
        assert not torch.allclose(loaded(X), eager(X))


def test_a_class_level_line_inside_a_method_is_not_taken_for_a_declaration(parses: dict[str, int]) -> None:
    """A call continued on a line indented like a declaration differs between two variants:
    the variant must run its own argument, not the first one's."""
    eager, blob = _archive("script")
    first, variant = _variant_records(blob)
    for record, value in ((first, "1.0"), (variant, "3.0")):
        text = records(blob)[record].decode()
        ret = re.findall(r"^    return (\w+)$", text, re.M)[0]
        blob = _edit(blob, record, f"    return {ret}\n", f"    return torch.add({ret},\n  {value})\n")
    loaded = kiln.load(blob)
    with torch.no_grad():
        expected = torch.jit.load(io.BytesIO(blob))(X)
        torch.testing.assert_close(loaded(X), expected)


def test_a_load_leaves_no_cyclic_garbage_behind(monkeypatch: pytest.MonkeyPatch) -> None:
    """The syntax trees of a load are freed when it returns (not left to the cyclic collector),
    unless script classes keep them for compiling their methods later."""
    import gc
    import weakref

    from kiln.serialization import build
    units: list[weakref.ref[object]] = []
    init = build.ArchiveUnit.__init__

    def tracked(self: build.ArchiveUnit, loader: object) -> None:
        init(self, loader)  # type: ignore[arg-type]
        units.append(weakref.ref(self))
    monkeypatch.setattr(build.ArchiveUnit, "__init__", tracked)
    eager, blob = _archive("script")
    gc.collect()
    gc.disable()
    try:
        loaded = kiln.load(blob)
        assert units and units[-1]() is None
    finally:
        gc.enable()
    with torch.no_grad():
        torch.testing.assert_close(loaded(X), eager(X))
