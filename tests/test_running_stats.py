"""A training-mode BatchNorm updates its running statistics even when its result is unused:
Kiln's dead-code and CSE passes must keep it (its schema does not mark the write)."""

from __future__ import annotations

import copy

import pytest
import torch
from torch import nn

import kiln


class SideBatchNorm(nn.Module):
    def __init__(self) -> None:
        super().__init__()
        self.bn = nn.BatchNorm1d(3)
        self.inorm = nn.InstanceNorm1d(3, track_running_stats=True)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        self.bn(x)                     # result unused: only the running statistics change
        self.inorm(x.t().unsqueeze(0))
        return x * 2


@pytest.mark.parametrize("capture", ["script", "trace"])
def test_unused_training_batch_norm_updates_statistics(capture: str) -> None:
    torch.manual_seed(0)
    eager = SideBatchNorm().train()
    mine = copy.deepcopy(eager)
    x = torch.randn(4, 3)
    m = kiln.script(mine) if capture == "script" else kiln.trace(mine, (x,), check_trace=False)
    mine.bn.reset_running_stats()
    mine.inorm.reset_running_stats()
    for _ in range(3):
        x = torch.randn(4, 3)
        torch.testing.assert_close(m(x), eager(x))
    for name in ("bn.running_mean", "bn.running_var", "inorm.running_mean", "inorm.running_var"):
        want = eager.get_buffer(name)
        torch.testing.assert_close(m.get_buffer(name), want, msg=name)
        assert not torch.equal(want, torch.zeros_like(want)) or name.endswith("var")
