"""The interop matrix: archives go both ways between Kiln and TorchScript.

For every program of :mod:`programs`:

* ``torch.jit.save`` -> ``kiln.load`` runs like ``torch.jit.load`` of the same archive;
* ``kiln.save`` -> ``torch.jit.load`` runs like the Kiln module that was saved;
* ``kiln.save`` -> ``kiln.load`` -> ``kiln.save`` gives the same bytes, and the loaded
  module runs like the saved one.
"""

from __future__ import annotations

import copy
import io

import pytest
import torch

import kiln

from .programs import PROGRAMS, Program

IDS = [p.name for p in PROGRAMS]


def _inputs(p: Program) -> tuple:
    torch.manual_seed(1)
    return p.inputs()


def _module(p: Program) -> torch.nn.Module:
    torch.manual_seed(0)
    m = p.make()
    return m.train(p.train) if p.train else m.eval()


def _capture(p: Program, lib):
    m = _module(p)
    if p.mode == "trace":
        return lib.trace(m, _inputs(p))
    return lib.script(m)


def _run(m, p: Program):
    torch.manual_seed(2)
    return m(*_inputs(p))


def _same(a, b) -> None:
    if isinstance(a, tuple) and not isinstance(b, tuple):
        b = tuple(b)
    torch.testing.assert_close(a, b, rtol=1e-5, atol=1e-6, equal_nan=True)


@pytest.mark.parametrize("p", PROGRAMS, ids=IDS)
def test_torch_to_kiln(p: Program, jit) -> None:
    ts = _capture(p, jit)
    buf = io.BytesIO()
    jit.save(ts, buf, _extra_files=p.extra_files)
    blob = buf.getvalue()
    reference = jit.load(io.BytesIO(blob))
    extra = dict.fromkeys(p.extra_files, b"")
    loaded = kiln.load(blob, extra_files=extra)
    assert isinstance(loaded, kiln.ScriptModule)
    assert extra == {k: v.encode() for k, v in p.extra_files.items()}
    _same(_run(loaded, p), _run(reference, p))
    ref_state = reference.state_dict()
    state = loaded.state_dict()
    assert list(state) == list(ref_state)
    for k in state:
        assert torch.equal(state[k], ref_state[k]), k


@pytest.mark.parametrize("p", PROGRAMS, ids=IDS)
def test_kiln_to_torch(p: Program, jit) -> None:
    km = _capture(p, kiln)
    buf = io.BytesIO()
    kiln.save(km, buf, extra_files=p.extra_files)
    files = dict.fromkeys(p.extra_files, "")
    loaded = jit.load(io.BytesIO(buf.getvalue()), _extra_files=files)
    assert {k: (v.decode() if isinstance(v, bytes) else v) for k, v in files.items()} == p.extra_files
    _same(_run(loaded, p), _run(km, p))
    for (n1, t1), (n2, t2) in zip(km.state_dict().items(), loaded.state_dict().items()):
        assert n1 == n2 and torch.equal(t1, t2), n1


@pytest.mark.parametrize("p", PROGRAMS, ids=IDS)
def test_kiln_round_trip(p: Program) -> None:
    km = _capture(p, kiln)
    first = kiln.serialize(km, extra_files=p.extra_files)
    assert kiln.serialize(km, extra_files=p.extra_files) == first       # deterministic
    loaded = kiln.deserialize(first)
    assert kiln.serialize(loaded, extra_files=p.extra_files) == first    # byte-identical round trip
    _same(_run(copy.deepcopy(loaded), p), _run(km, p))
    expected = _run(_module(p), p)                                       # and eager agrees
    _same(_run(loaded, p), expected)


def test_every_format_version_torch_writes_is_covered(jit) -> None:
    """The programs above make torch.jit.save write every format version it writes (3, and the
    versions of div, full, linspace, logspace and gelu); all of them load (tests above)."""
    from kiln.serialization.archive import open_archive
    from kiln.serialization.load import archive_version
    seen = set()
    for p in PROGRAMS:
        buf = io.BytesIO()
        jit.save(_capture(p, jit), buf)
        seen.add(archive_version(open_archive(buf.getvalue())))
    assert {3, 4, 5, 8, 9, 10} <= seen


def test_kiln_writes_the_lowest_version() -> None:
    from kiln.serialization.archive import open_archive
    from kiln.serialization.load import archive_version
    expected = {"mlp_scripted": 3, "div_only": 4, "div_full_linspace": 8, "full_only": 5, "logspace": 9, "gelu": 10}
    for p in PROGRAMS:
        if p.name in expected:
            reader = open_archive(kiln.serialize(_capture(p, kiln)))
            assert archive_version(reader) == expected[p.name], p.name
            assert reader.has(".data/version") == (expected[p.name] >= 6)
