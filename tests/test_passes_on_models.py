"""The optimizer passes on real graphs: traced models must compute the same after "default".

Every model of ``test_trace_models.CASES`` plus a few written to give the passes work
(repeated subexpressions, in-place updates, small constant tensors, tuples and lists) is
traced; the "default" pipeline runs on a copy of each method graph (and of the inlined and
the frozen graph), verified after every pass; the optimized graphs become the methods of a
copy of the traced module, whose outputs must equal eager PyTorch's.
"""

from __future__ import annotations

import copy
from collections.abc import Callable
from typing import Any

import pytest
import torch
import torch.nn.functional as F
from test_trace_models import CASES, Case
from torch import nn

import kiln
from kiln.ir.graph import Graph
from kiln.passes import run_pipeline
from kiln.runtime.module import ScriptFunction, ScriptModule


def _clone(obj: Any) -> Any:
    if isinstance(obj, torch.Tensor):
        return obj.clone()
    if isinstance(obj, (tuple, list)):
        return type(obj)(_clone(o) for o in obj)
    if isinstance(obj, dict):
        return {k: _clone(v) for k, v in obj.items()}
    return obj


def _optimize(graph: Graph) -> Graph:
    g = graph.copy()
    run_pipeline(g, "default", verify=True)
    return g


def _optimized_methods(traced: ScriptModule) -> ScriptModule:
    """A copy of ``traced`` whose every method (submodules' included) runs its optimized graph."""
    opt = copy.deepcopy(traced)
    for sub in opt.modules():
        if isinstance(sub, ScriptModule):
            for name in sub.method_names:
                sub._kiln_define_method(name, _optimize(sub._kiln_graphs[name]))
    return opt


def _optimized_inlined(traced: ScriptModule) -> ScriptModule:
    opt = copy.deepcopy(traced)
    opt._kiln_define_method("forward", _optimize(traced.inlined_graph))
    return opt


def _variants(traced: Any) -> dict[str, Callable[..., Any]]:
    if isinstance(traced, ScriptFunction):
        return {"function": ScriptFunction(traced.name, _optimize(traced.graph))}
    return {"methods": _optimized_methods(traced), "inlined": _optimized_inlined(traced)}


def _check(model: Any, input_sets: list[tuple[Any, ...]]) -> None:
    """Each optimized variant against eager on every input set (the inlined variant on the last
    one only, which has another batch size than the trace: sizes must stay dynamic)."""
    traced = kiln.trace(model, _clone(input_sets[0]), check_trace=False)
    for variant, fn in _variants(traced).items():
        with torch.no_grad():
            for args in input_sets if variant != "inlined" else input_sets[-1:]:
                torch.testing.assert_close(fn(*_clone(args)), model(*_clone(args)),
                                           msg=lambda m, v=variant: f"{v}: {m}")


def _case_params() -> list[Any]:
    return [pytest.param(c, id=c.name) for c in CASES if c.fails is None]


@pytest.mark.parametrize("case", _case_params())
def test_default_pipeline_keeps_traced_models_exact(case: Case) -> None:
    model = case.factory()
    if isinstance(model, nn.Module):
        model.eval()
    sets = [case.inputs()] + ([case.inputs2()] if case.inputs2 is not None else [])
    _check(model, sets)


# -- models that give the passes work ---------------------------------------------------------------

class Duplicates(nn.Module):
    """The same submodule call, size query and activation twice, and constant arithmetic."""

    def __init__(self) -> None:
        super().__init__()
        self.fc = nn.Linear(6, 6)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        a = torch.relu(self.fc(x))
        b = torch.relu(self.fc(x))
        n, m = x.size(0), x.size(0)
        scale = (2 * 3 + 1) // 2
        return (a + b).view(n, -1) * m + scale


class InPlace(nn.Module):
    """Reads of a tensor around in-place updates of it, and an update of the input itself."""

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        s1 = torch.sigmoid(x)
        y = x.clone()
        y.mul_(2)
        s2 = torch.sigmoid(y)
        t = torch.sigmoid(y)
        y.add_(1)
        t2 = torch.sigmoid(y)
        x.add_(s1)
        return s1 + s2 + t + t2 + torch.sigmoid(x)


class ConstantTensors(nn.Module):
    """Small tensors made from constants: one used inside (foldable), one returned (not)."""

    def forward(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        bias = torch.ones(3, dtype=torch.float32) * 2
        fresh = torch.zeros(3, dtype=torch.float32)
        return x + bias, fresh


class TuplesAndLists(nn.Module):
    def forward(self, x: torch.Tensor) -> tuple[torch.Tensor, int]:
        a, b = x.chunk(2, dim=1)
        pair = (a, b)
        parts = [pair[0], pair[1]]
        return torch.cat(parts, 1) * len(parts), x.size(1) + 0


def _function(x: torch.Tensor, y: torch.Tensor) -> tuple[torch.Tensor, tuple[torch.Tensor, torch.Tensor]]:
    z = x * 2 + 1
    w = x * 2 + 1
    return torch.relu(z) + torch.relu(w), (z, F.softplus(y))


OWN = {
    "duplicates": (Duplicates, lambda: (torch.randn(4, 6),), lambda: (torch.randn(7, 6),)),
    "in_place": (InPlace, lambda: (torch.randn(3, 5),), lambda: (torch.randn(2, 5),)),
    "constant_tensors": (ConstantTensors, lambda: (torch.randn(2, 3),), lambda: (torch.randn(5, 3),)),
    "tuples_and_lists": (TuplesAndLists, lambda: (torch.randn(2, 8),), lambda: (torch.randn(3, 4),)),
    "function": (lambda: _function, lambda: (torch.randn(3), torch.randn(2)),
                 lambda: (torch.randn(5), torch.randn(4))),
}


@pytest.mark.parametrize("name", list(OWN))
def test_default_pipeline_on_models_with_work(name: str) -> None:
    factory, inputs, inputs2 = OWN[name]
    _check(factory(), [inputs(), inputs2()])


def test_duplicates_are_merged_in_the_inlined_graph() -> None:
    traced = kiln.trace(Duplicates(), (torch.randn(4, 6),))
    graph = traced.inlined_graph
    assert run_pipeline(graph, "default", verify=True)
    kinds = [n.kind for n in graph.all_nodes()]
    assert kinds.count("aten::linear") == 1 and kinds.count("aten::relu") == 1
    assert kinds.count("aten::size") == 1 and "aten::floordiv" not in kinds


@pytest.mark.parametrize("name", ["duplicates", "constant_tensors"])
def test_default_pipeline_on_frozen_models(name: str) -> None:
    factory, inputs, inputs2 = OWN[name]
    model = factory().eval()
    frozen = kiln.freeze(kiln.trace(model, inputs()))
    opt = copy.deepcopy(frozen)
    opt._kiln_define_method("forward", _optimize(frozen.graph))
    with torch.no_grad():
        for args in (inputs(), inputs2()):
            torch.testing.assert_close(opt(*_clone(args)), model(*_clone(args)))


def test_returned_constant_tensor_is_fresh_each_call() -> None:
    """A tensor the graph returns is not folded into a constant: changing one call's result
    must not change the next call's."""
    traced = kiln.trace(ConstantTensors(), (torch.randn(2, 3),))
    opt = _optimized_inlined(traced)
    x = torch.randn(2, 3)
    _, fresh = opt(x)
    fresh.add_(5)
    _, again = opt(x)
    torch.testing.assert_close(again, torch.zeros(3))
