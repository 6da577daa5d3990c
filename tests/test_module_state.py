"""The module tree's fixed state (training flags, literal attributes, None members) is folded
into the code that runs a module, and changing that state from Python drops the code
(kiln/passes/module_state.py): results always follow the module's current state, as in eager
PyTorch."""

from typing import Optional

import torch
from torch import Tensor, nn

import kiln


class Net(nn.Module):
    def __init__(self) -> None:
        super().__init__()
        self.conv = nn.Conv2d(3, 4, 3)
        self.bn = nn.BatchNorm2d(4)
        self.drop = nn.Dropout(0.0)

    def forward(self, x: Tensor) -> Tensor:
        return self.drop(torch.relu(self.bn(self.conv(x))))


class Scaled(nn.Module):
    def __init__(self) -> None:
        super().__init__()
        self.scale = 2.0
        self.mode = "double"

    def forward(self, x: Tensor) -> Tensor:
        y = x * self.scale
        if self.mode == "negate":
            y = -y
        return y


class WithExtra(nn.Module):
    extra: Optional[Tensor]

    def __init__(self) -> None:
        super().__init__()
        self.extra = torch.ones(4)

    def forward(self, x: Tensor) -> Tensor:
        extra = self.extra
        if extra is not None:
            return x + extra
        return x * 2


class Counter(nn.Module):
    def __init__(self) -> None:
        super().__init__()
        self.calls = 0

    def forward(self, x: Tensor) -> Tensor:
        self.calls += 1
        return x * self.calls


def _executor(m: kiln.ScriptModule) -> object:
    return m.__dict__["_kiln_executors"].get("forward")


def test_training_flags_fold_and_follow_train_eval() -> None:
    torch.manual_seed(0)
    eager = Net().eval()
    m = kiln.script(Net().eval())
    m.load_state_dict(eager.state_dict())
    x = torch.randn(2, 3, 8, 8)
    torch.testing.assert_close(m(x), eager(x))
    g = m.graph_for(x)
    # the specialized code no longer asks the BatchNorm whether it is training
    reads = {n.attrs["name"] for n in g.all_nodes() if n.kind == "prim::GetAttr"}
    assert "training" not in reads, g
    before = _executor(m)
    m.eval()                                   # no change: the code stays
    assert _executor(m) is before
    for mode in (True, False, True):
        eager.train(mode)
        m.train(mode)
        torch.testing.assert_close(m(x), eager(x))
        torch.testing.assert_close(m.bn.running_mean, eager.bn.running_mean)
        torch.testing.assert_close(m.bn.num_batches_tracked, eager.bn.num_batches_tracked)


def test_literal_attributes_follow_assignment() -> None:
    eager, m = Scaled(), kiln.script(Scaled())
    x = torch.arange(4.0)
    changes = [("scale", 3.0), ("mode", "negate"), ("scale", 0.5), ("mode", "double"), ("scale", 2)]
    torch.testing.assert_close(m(x), eager(x))
    for name, value in changes:
        setattr(eager, name, value)
        setattr(m, name, value)
        torch.testing.assert_close(m(x), eager(x), msg=f"after {name} = {value!r}")


def test_state_folded_in_a_submodule_follows_assignment_on_the_submodule() -> None:
    class Outer(nn.Module):
        def __init__(self) -> None:
            super().__init__()
            self.inner = Scaled()

        def forward(self, x: Tensor) -> Tensor:
            return self.inner(x) + 1

    eager, m = Outer(), kiln.script(Outer())
    x = torch.arange(3.0)
    torch.testing.assert_close(m(x), eager(x))
    eager.inner.scale = m.inner.scale = -1.0
    torch.testing.assert_close(m(x), eager(x))


def test_state_the_code_writes_is_not_folded() -> None:
    eager, m = Counter(), kiln.script(Counter())
    x = torch.ones(2)
    for _ in range(4):
        torch.testing.assert_close(m(x), eager(x))
    assert m.calls == eager.calls == 4


def test_loaded_archive_follows_train_eval(tmp_path: object) -> None:
    torch.manual_seed(1)
    eager = Net().eval()
    loaded = kiln.load(kiln.serialize(kiln.script(eager)))
    x = torch.randn(1, 3, 6, 6)
    torch.testing.assert_close(loaded(x), eager(x))
    loaded.train()
    eager.train()
    torch.testing.assert_close(loaded(x), eager(x))
    loaded.eval()
    eager.eval()
    torch.testing.assert_close(loaded(x), eager(x))


def test_optional_members_narrowed_while_they_hold_a_tensor() -> None:
    """An attribute declared ``Optional[Tensor]`` that holds a tensor: the code is specialized
    to that, and setting it to None (or back) drops the code."""
    eager, m = WithExtra(), kiln.script(WithExtra())
    x = torch.arange(4.0)
    torch.testing.assert_close(m(x), eager(x))
    assert "extra" in m.__dict__["_kiln_folded"]      # the code relies on it
    for value in (None, torch.full((4,), 3.0), torch.zeros(4), None):
        eager.extra = m.extra = value
        torch.testing.assert_close(m(x), eager(x), msg=f"after extra = {value!r}")
