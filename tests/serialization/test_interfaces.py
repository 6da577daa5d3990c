"""Module interfaces: an attribute typed by a ``@torch.jit.interface`` holds any module that
implements it; archives that use one load in Kiln, run, and save again (also for torch)."""

# TorchScript reads typing names in class annotations; no future import here.
# ruff: noqa: UP006, UP035

import io
from typing import List, Optional

import pytest
import torch
from conftest import has_torch_jit, suppress_jit_warnings
from torch import Tensor, nn

import kiln

if has_torch_jit():
    with suppress_jit_warnings():
        @torch.jit.interface
        class Scaler(nn.Module):
            def forward(self, x: Tensor) -> Tensor:
                pass

    class Double(nn.Module):
        def forward(self, x: Tensor) -> Tensor:
            return x * 2

    class Negate(nn.Module):
        def forward(self, x: Tensor) -> Tensor:
            return -x

    class UsesInterface(nn.Module):
        impl: Scaler

        def __init__(self, impl: nn.Module) -> None:
            super().__init__()
            self.impl = impl

        def forward(self, x: Tensor) -> Tensor:
            return self.impl.forward(x) + 1


@pytest.mark.parametrize("make", ["double", "negate"])
def test_module_interface_round_trip(jit, make: str) -> None:
    impl = Double() if make == "double" else Negate()
    eager = UsesInterface(impl)
    buf = io.BytesIO()
    jit.save(jit.script(eager), buf)
    loaded = kiln.load(buf.getvalue())
    x = torch.randn(3)
    torch.testing.assert_close(loaded(x), eager(x))
    blob = kiln.serialize(loaded)
    torch.testing.assert_close(jit.load(io.BytesIO(blob))(x), eager(x))
    assert kiln.serialize(kiln.load(blob)) == blob



# -- class interfaces ------------------------------------------------------------------------------
# An attribute, parameter, result or list element typed by a class interface holds an object of any
# script class implementing it; a method call on it runs the method of the object's class.

if has_torch_jit():
    with suppress_jit_warnings():
        @torch.jit.interface
        class Op:
            def apply(self, x: Tensor) -> Tensor:
                pass

            def label(self) -> str:
                pass

        @torch.jit.script
        class AddOne:
            def __init__(self) -> None:
                pass

            def apply(self, x: Tensor) -> Tensor:
                return x + 1

            def label(self) -> str:
                return "add"

        @torch.jit.script
        class Scale:
            def __init__(self, k: float) -> None:
                self.k = k
                self.calls = 0

            def apply(self, x: Tensor) -> Tensor:
                self.calls += 1
                return x * self.k

            def label(self) -> str:
                return "scale" + str(int(self.k * 10))   # (str of a float differs in TorchScript)

            def unused_helper(self) -> int:
                return self.calls

        def run_op(op: Op, x: Tensor) -> Tensor:
            return op.apply(x)

        def pick(ops: List[Op], i: int) -> Op:
            return ops[i]

        class UsesOps(nn.Module):
            op: Op
            ops: List[Op]
            maybe: Optional[Op]

            def __init__(self) -> None:
                super().__init__()
                self.op = AddOne()
                self.ops = [Scale(3.0), AddOne(), Scale(0.5)]
                self.maybe = None

            def forward(self, x: Tensor) -> Tensor:
                y = run_op(self.op, x)
                for o in self.ops:
                    y = o.apply(y)
                m = self.maybe
                if m is not None:
                    y = m.apply(y)
                return y + pick(self.ops, 1).apply(x)

            @torch.jit.export
            def labels(self) -> List[str]:
                out = [self.op.label()]
                for o in self.ops:
                    out.append(o.label())
                return out

            @torch.jit.export
            def swap(self, k: float) -> None:
                self.op = Scale(k)

            @torch.jit.export
            def set_maybe(self, add: bool) -> None:
                if add:
                    self.maybe = AddOne()
                else:
                    self.maybe = Scale(-1.0)

            @torch.jit.export
            def current(self) -> Op:
                return self.op


def _class_interface_archive(jit) -> bytes:
    buf = io.BytesIO()
    jit.save(jit.script(UsesOps()), buf)
    return buf.getvalue()


def _same_behaviour(a, b, x: Tensor) -> None:
    """``a`` and ``b`` (modules of UsesOps) agree, also while their objects are replaced."""
    torch.testing.assert_close(a(x), b(x))
    assert a.labels() == b.labels()
    for step in (lambda m: m.swap(2.5), lambda m: m.set_maybe(True), lambda m: m.set_maybe(False),
                 lambda m: m.swap(-3.0)):
        step(a)
        step(b)
        torch.testing.assert_close(a(x), b(x))
        assert a.labels() == b.labels()


def test_class_interface_archive_runs_like_torchscript(jit) -> None:
    blob = _class_interface_archive(jit)
    code = "\n".join(d.decode() for n, d in _records(blob).items() if n.endswith(".py"))
    assert "class Op(Interface):\n  def apply(self, x: Tensor) -> Tensor:\n    pass" in code
    loaded = kiln.load(blob)
    x = torch.randn(4)
    torch.testing.assert_close(loaded(x), UsesOps()(x))              # eager Python
    _same_behaviour(loaded, jit.load(io.BytesIO(blob)), x)            # and TorchScript, step by step
    assert 'prim::CallMethod[name="apply"]' in str(loaded.graph)      # dispatched at run time
    assert type(loaded.current()).__name__ == "ScriptObject"
    assert loaded.current().label() == "scale-30"                    # its compiled methods, from Python


def test_class_interface_archive_saves_for_torchscript(jit) -> None:
    loaded = kiln.load(_class_interface_archive(jit))
    x = torch.randn(4)
    _same_behaviour(kiln.load(kiln.serialize(loaded)), jit.load(io.BytesIO(kiln.serialize(loaded))), x)
    loaded.swap(7.0)                          # the replaced object is what is saved
    loaded.set_maybe(False)
    blob = kiln.serialize(loaded)
    ts = jit.load(io.BytesIO(blob))
    torch.testing.assert_close(ts(x), loaded(x))
    assert ts.labels() == loaded.labels() == ["scale70", "scale30", "add", "scale5"]
    _same_behaviour(kiln.load(blob), ts, x)


def test_class_interface_archive_resaves_byte_identical(jit) -> None:
    once = kiln.serialize(kiln.load(_class_interface_archive(jit)))
    twice = kiln.serialize(kiln.load(once))
    assert twice == once
    assert kiln.serialize(kiln.load(twice)) == once


def _records(blob: bytes) -> dict[str, bytes]:
    from kiln.serialization.archive import open_archive
    reader = open_archive(blob)
    return {name: reader.read(name) for name in reader.names()}


def _edit_code(blob: bytes, old: str, new: str) -> bytes:
    """``blob`` with ``old`` replaced by ``new`` (once) in the code record that holds it."""
    from kiln.serialization.archive import ArchiveWriter, open_archive
    reader = open_archive(blob)
    w = ArchiveWriter(reader.prefix)
    hits = 0
    for name in reader.names():
        data = reader.read(name)
        if name.startswith("code/") and name.endswith(".py") and old in data.decode():
            hits += data.decode().count(old)
            data = data.decode().replace(old, new).encode()
        w.add(name, data)
    assert hits == 1, (old, hits)
    return w.finish()


@pytest.mark.parametrize(("old", "new", "why"), [
    ("def label(self: {C}) -> str:", "def name(self: {C}) -> str:", "it has no method label()"),
    ("def apply(self: {C},\n    x: Tensor) -> Tensor:", "def apply(self: {C},\n    x: Tensor, k: int=1) -> Tensor:",
     "its method apply(x: Tensor, k: int) -> Tensor does not match the interface's apply(x: Tensor) -> Tensor"),
    ("def label(self: {C}) -> str:", "def label(self: {C}) -> Optional[str]:",
     "its method label() -> Optional[str] does not match the interface's label() -> str"),
])
def test_archive_object_that_does_not_implement_the_interface(jit, old: str, new: str, why: str) -> None:
    cls = f"__torch__.{AddOne.__module__}.AddOne"        # TorchScript's name for the class
    bad = _edit_code(_class_interface_archive(jit), old.format(C=cls), new.format(C=cls))
    with pytest.raises(kiln.ModelFormatError) as info:
        kiln.load(bad)
    message = str(info.value)
    assert "data.pkl" in message and f"class {cls} (archive/code/" in message and "does not implement Op" in message
    assert why in message


def test_archive_module_that_does_not_implement_the_module_interface(jit) -> None:
    buf = io.BytesIO()
    jit.save(jit.script(UsesInterface(Double())), buf)
    cls = f"__torch__.{Double.__module__}.Double"
    bad = _edit_code(buf.getvalue(), f"def forward(self: {cls},\n    x: Tensor)", f"def forward(self: {cls},\n    x: Tensor, y: int=0)")
    with pytest.raises(kiln.ModelFormatError, match=r"UsesInterface\.impl.*does not implement Scaler: "
                                                    r"its method forward\(x: Tensor, y: int\)"):
        kiln.load(bad)


def test_module_interface_declared_again_when_printed(jit) -> None:
    """A loaded module whose submodule is replaced is printed afresh: the member keeps its
    interface type, so TorchScript still accepts any implementation there."""
    buf = io.BytesIO()
    jit.save(jit.script(UsesInterface(Double())), buf)
    loaded = kiln.load(buf.getvalue())
    loaded.impl = kiln.script(Negate())
    x = torch.randn(3)
    torch.testing.assert_close(loaded(x), -x + 1)
    blob = kiln.serialize(loaded)
    code = "\n".join(d.decode() for n, d in _records(blob).items() if n.endswith(".py"))
    assert f"impl : __torch__.{Scaler.__module__}.Scaler" in code
    assert "class Scaler(ModuleInterface):\n  def forward(self, x: Tensor) -> Tensor:\n    pass" in code
    torch.testing.assert_close(jit.load(io.BytesIO(blob))(x), -x + 1)
    assert kiln.serialize(kiln.load(blob)) == kiln.serialize(kiln.load(kiln.serialize(kiln.load(blob))))
