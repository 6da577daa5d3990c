"""A loaded module behaves like any Kiln module: it runs, trains, shows its graph and code,
exposes attributes, submodules, parameters and buffers and every method, and saves again."""

from __future__ import annotations

import io

import pytest
import torch

import kiln

from .programs import ConvNet, Exported, IntListAttr, Scalars


def _round_trip(m: torch.nn.Module, tmp_path) -> kiln.ScriptModule:
    path = tmp_path / "model.pt"
    kiln.save(kiln.script(m), str(path))
    return kiln.load(str(path))


def test_loaded_module_trains_like_eager(tmp_path) -> None:
    torch.manual_seed(0)
    eager = ConvNet().train()
    loaded = _round_trip(ConvNet().train(), tmp_path)
    loaded.load_state_dict(eager.state_dict())
    opt_e = torch.optim.SGD(eager.parameters(), lr=0.1)
    opt_l = torch.optim.SGD(loaded.parameters(), lr=0.1)
    x, target = torch.randn(4, 3, 8, 8), torch.randn(4, 5)
    for _ in range(3):
        for model, opt in ((eager, opt_e), (loaded, opt_l)):
            opt.zero_grad()
            torch.nn.functional.mse_loss(model(x), target).backward()
            opt.step()
    for (n1, p1), (n2, p2) in zip(eager.named_parameters(), loaded.named_parameters()):
        assert n1 == n2
        torch.testing.assert_close(p1, p2)
    torch.testing.assert_close(eager.bn.running_mean, loaded.bn.running_mean)   # buffers updated too
    # the trained weights are what is saved next
    again = kiln.load(kiln.serialize(loaded))
    torch.testing.assert_close(again.fc.weight, eager.fc.weight)


def test_members_and_views(tmp_path) -> None:
    loaded = _round_trip(ConvNet().eval(), tmp_path)
    assert [n for n, _ in loaded.named_parameters()] == [n for n, _ in ConvNet().named_parameters()]
    assert [n for n, _ in loaded.named_buffers()] == [n for n, _ in ConvNet().named_buffers()]
    assert isinstance(loaded.conv, kiln.ScriptModule) and loaded.conv.original_name == "Conv2d"
    assert not loaded.training and not loaded.bn.training
    loaded.train()
    assert loaded.bn.training
    assert "aten::batch_norm" in str(loaded.bn.graph) or "batch_norm" in loaded.bn.code
    assert "def forward(self" in loaded.code
    assert loaded.conv.in_channels == 3          # Final constants are attributes


def test_attributes_and_exported_methods(tmp_path) -> None:
    loaded = _round_trip(IntListAttr(), tmp_path)
    assert loaded.sizes == [1, 2, 3]
    s = _round_trip(Scalars(), tmp_path)
    assert (s.alpha, s.steps, s.flag) == (0.25, 3, True)
    torch.manual_seed(0)
    e = Exported().eval()
    loaded_e = _round_trip(e, tmp_path)
    loaded_e.load_state_dict(e.state_dict())
    assert set(loaded_e.method_names) == {"forward", "features"}
    x = torch.randn(2, 4)
    torch.testing.assert_close(loaded_e.features(x), e.features(x))
    torch.testing.assert_close(loaded_e(x), e(x))


def test_sources_and_map_location(tmp_path) -> None:
    m = kiln.script(ConvNet().eval())
    blob = kiln.serialize(m, extra_files={"a.txt": "A"})
    path = tmp_path / "m.pt"
    path.write_bytes(blob)
    x = torch.randn(1, 3, 8, 8)
    expected = m(x)
    with open(path, "rb") as f:
        from_file = kiln.load(f)
    for loaded in (kiln.load(str(path)), kiln.load(path), from_file, kiln.load(io.BytesIO(blob)),
                   kiln.deserialize(blob), kiln.load(blob, map_location="cpu"),
                   kiln.load(blob, map_location=torch.device("cpu"))):
        torch.testing.assert_close(loaded(x), expected)
    extra = {"a.txt": b"", "missing.txt": b"unchanged"}
    kiln.load(blob, extra_files=extra)
    assert extra == {"a.txt": b"A", "missing.txt": b"unchanged"}


def test_save_refuses_what_it_cannot_write() -> None:
    with pytest.raises(kiln.KilnError, match="kiln.script"):
        kiln.serialize(torch.nn.Linear(2, 2))

    class Ignored(torch.nn.Module):
        @kiln.ignore
        def helper(self, x: torch.Tensor) -> torch.Tensor:
            return x

        def forward(self, x: torch.Tensor) -> torch.Tensor:
            return self.helper(x)

    with pytest.raises(kiln.KilnError, match="helper.*@ignore"):
        kiln.serialize(kiln.script(Ignored()))
    with pytest.raises(kiln.KilnError, match="extra file name"):
        kiln.serialize(kiln.script(ConvNet()), extra_files={"../evil": "x"})
