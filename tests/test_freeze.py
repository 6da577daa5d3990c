"""``kiln.freeze`` and the graph passes it runs (``remove_dropout``, ``fold_conv_bn``).

Module tests freeze a trace and compare with eager PyTorch (and, where it works, with
``torch.jit.freeze``); pass tests build a small graph, run one pass and compare the
interpreter's answers before and after.
"""

from __future__ import annotations

import warnings
from collections.abc import Iterator
from typing import Any, Optional

import pytest
import torch
from torch import nn
from torch.testing import assert_close

import kiln
from kiln.errors import KilnError
from kiln.ir.builder import Builder
from kiln.ir.graph import Graph, Value
from kiln.ir.parser import parse_graph
from kiln.ir.printer import print_graph
from kiln.ir.types import BoolType, TensorType
from kiln.ir.verify import verify
from kiln.passes import PASSES, run_pipeline
from kiln.passes.fold_conv_bn import fold_conv_bn
from kiln.passes.remove_dropout import remove_dropout
from kiln.runtime.interpreter import interpret
from kiln.runtime.module import ScriptModule


@pytest.fixture(autouse=True)
def _quiet_tracer() -> Iterator[None]:
    # the models have mode-dependent layers: tracing them warns, by design
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", kiln.TracerWarning)
        yield


def randomize_batchnorm(model: nn.Module) -> nn.Module:
    """Non-trivial statistics and affine parameters, so folding them is really tested."""
    with torch.no_grad():
        for m in model.modules():
            if isinstance(m, nn.modules.batchnorm._BatchNorm):
                m.running_mean.uniform_(-1, 1)
                m.running_var.uniform_(0.5, 2)
                if m.affine:
                    m.weight.uniform_(0.5, 2)
                    m.bias.uniform_(-1, 1)
    return model


class ConvBN(nn.Module):
    def __init__(self, dim: int, conv_bias: bool, affine: bool) -> None:
        super().__init__()
        conv = nn.Conv1d if dim == 1 else nn.Conv2d
        bn = nn.BatchNorm1d if dim == 1 else nn.BatchNorm2d
        self.c1, self.b1 = conv(3, 8, 3, bias=conv_bias), bn(8, affine=affine)
        self.c2, self.b2 = conv(8, 4, 3, padding=1, groups=4, bias=conv_bias), bn(4, affine=affine)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = torch.relu(self.b1(self.c1(x)))
        return torch.relu(self.b2(self.c2(x)))


class LinearBN(nn.Module):
    def __init__(self) -> None:
        super().__init__()
        self.fc1, self.bn = nn.Linear(5, 6), nn.BatchNorm1d(6)
        self.fc2 = nn.Linear(6, 2)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.fc2(torch.relu(self.bn(self.fc1(x))))


class DropoutMLP(nn.Module):
    def __init__(self) -> None:
        super().__init__()
        self.fc1, self.drop, self.fc2 = nn.Linear(4, 8), nn.Dropout(0.5), nn.Linear(8, 3)
        self.alpha = nn.AlphaDropout(0.2)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = self.drop(torch.relu(self.fc1(x)))
        x = nn.functional.dropout(x, 0.3, training=False)
        return self.alpha(self.fc2(x))


CASES = [
    pytest.param(lambda: ConvBN(1, True, True), (2, 3, 10), (5, 3, 10), id="conv1d-bn"),
    pytest.param(lambda: ConvBN(1, False, False), (2, 3, 10), (1, 3, 10), id="conv1d-nobias-bn-noaffine"),
    pytest.param(lambda: ConvBN(2, True, True), (2, 3, 8, 8), (3, 3, 8, 8), id="conv2d-bn"),
    pytest.param(lambda: ConvBN(2, False, True), (2, 3, 8, 8), (4, 3, 8, 8), id="conv2d-nobias-bn"),
    pytest.param(lambda: ConvBN(2, True, False), (2, 3, 8, 8), (1, 3, 8, 8), id="conv2d-bn-noaffine"),
    pytest.param(LinearBN, (4, 5), (7, 5), id="linear-bn1d"),
    pytest.param(DropoutMLP, (3, 4), (6, 4), id="dropout-mlp"),
]


def _frozen_case(make: Any, shape: tuple[int, ...]) -> tuple[nn.Module, ScriptModule, torch.Tensor]:
    model = randomize_batchnorm(make()).eval()
    x = torch.randn(shape)
    traced = kiln.trace(model, x)
    assert isinstance(traced, ScriptModule)
    return model, traced, x


def _kinds(graph: Graph) -> set[str]:
    return {n.kind for n in graph.all_nodes()}


def _assert_round_trip(graph: Graph) -> None:
    text = print_graph(graph)
    assert print_graph(parse_graph(text)) == text


@pytest.mark.parametrize(("make", "shape", "other"), CASES)
def test_frozen_module_matches_eager(make: Any, shape: tuple[int, ...], other: tuple[int, ...]) -> None:
    model, traced, x = _frozen_case(make, shape)
    frozen = kiln.freeze(traced)
    with torch.no_grad():
        for inp in (x, torch.randn(other)):
            assert_close(frozen(inp), model(inp))
    graph = frozen.inlined_graph
    assert not _kinds(graph) & {"aten::batch_norm", "aten::dropout", "aten::alpha_dropout",
                                "prim::GetAttr", "prim::CallMethod"}
    assert graph.inputs[0].type == traced.graph.inputs[0].type   # self stays input 0
    assert not graph.inputs[0].uses
    verify(graph)
    _assert_round_trip(graph)
    assert list(frozen.parameters()) == [] and list(frozen.buffers()) == []
    assert (frozen.qualified_name, frozen.original_name) == (traced.qualified_name, traced.original_name)
    assert not frozen.training


@pytest.mark.parametrize(("make", "shape", "other"), CASES)
def test_original_module_is_untouched(make: Any, shape: tuple[int, ...], other: tuple[int, ...]) -> None:
    model, traced, x = _frozen_case(make, shape)
    text_before = str(traced.graph)
    state = {k: v.clone() for k, v in traced.state_dict().items()}
    frozen = kiln.freeze(traced)
    assert str(traced.graph) == text_before
    for k, v in traced.state_dict().items():
        assert torch.equal(v, state[k])
    # the trace still shares its tensors with the eager model ...
    for (name, p), q in zip(traced.named_parameters(), model.parameters()):
        assert p is q, name
    with torch.no_grad():
        assert_close(traced(x), model(x))
        # ... while the frozen module holds copies: changing the model changes only the trace
        expected = frozen(x)
        for p in model.parameters():
            p.mul_(1.5)
        assert_close(frozen(x), expected)
        assert_close(traced(x), model(x))


def test_frozen_constants_are_private_copies() -> None:
    class Scaled(ConvBN):
        def forward(self, x: torch.Tensor) -> torch.Tensor:
            return super().forward(x) * torch.tensor([2.0, 3.0, 4.0, 5.0]).reshape(1, 4, 1, 1)

    model, traced, x = _frozen_case(lambda: Scaled(2, True, True), (1, 3, 8, 8))
    frozen = kiln.freeze(traced)
    originals = {t.data_ptr() for t in [*model.parameters(), *model.buffers()]}
    originals |= {n.attrs["value"].data_ptr() for n in traced.graph.all_nodes()
                  if n.kind == "prim::Constant" and isinstance(n.attrs.get("value"), torch.Tensor)}
    assert len(originals) > len(list(model.parameters())) + len(list(model.buffers()))
    for node in frozen.graph.all_nodes():
        value = node.attrs.get("value") if node.kind == "prim::Constant" else None
        if isinstance(value, torch.Tensor):
            assert value.data_ptr() not in originals
            assert not value.requires_grad


@pytest.mark.torch_jit
@pytest.mark.parametrize(("make", "shape", "other"), CASES)
def test_agrees_with_torch_jit_freeze(make: Any, shape: tuple[int, ...], other: tuple[int, ...]) -> None:
    model, traced, x = _frozen_case(make, shape)
    ours = kiln.freeze(traced)
    theirs = torch.jit.freeze(torch.jit.trace(model, x))
    with torch.no_grad():
        for inp in (x, torch.randn(other)):
            assert_close(ours(inp), theirs(inp))


def test_respect_mode_trace_freezes_to_the_eval_path() -> None:
    model = randomize_batchnorm(ConvBN(2, True, True)).eval()
    x = torch.randn(2, 3, 8, 8)
    traced = kiln.trace(model, x, respect_mode=True)
    assert "prim::If" in _kinds(traced.inlined_graph)
    frozen = kiln.freeze(traced)
    assert not _kinds(frozen.graph) & {"prim::If", "aten::batch_norm", "prim::GetAttr"}
    with torch.no_grad():
        assert_close(frozen(x), model(x))


def test_optimize_numerics_false_keeps_batch_norm() -> None:
    model, traced, x = _frozen_case(lambda: ConvBN(2, True, True), (2, 3, 8, 8))
    frozen = kiln.freeze(traced, optimize_numerics=False)
    kinds = _kinds(frozen.graph)
    assert "aten::batch_norm" in kinds and "prim::GetAttr" not in kinds
    with torch.no_grad():
        assert_close(frozen(x), model(x))


def test_training_mode_is_rejected() -> None:
    model = ConvBN(2, True, True)
    traced = kiln.trace(model.eval(), torch.randn(1, 3, 8, 8))
    traced.train()
    with pytest.raises(KilnError, match=r"eval mode; call \.eval\(\) first"):
        kiln.freeze(traced)
    traced.eval()
    traced.b1.train()
    with pytest.raises(KilnError, match="b1"):
        kiln.freeze(traced)


def test_non_script_modules_are_rejected() -> None:
    with pytest.raises(KilnError, match="kiln.ScriptModule"):
        kiln.freeze(nn.Linear(2, 2).eval())


def test_preserved_attributes_stay_live_and_private() -> None:
    model, traced, x = _frozen_case(LinearBN, (4, 5))
    frozen = kiln.freeze(traced, preserved_attrs=["fc2.weight"])
    paths = [n.attrs["name"] for n in frozen.graph.all_nodes() if n.kind == "prim::GetAttr"]
    assert paths == ["fc2", "weight"]
    assert isinstance(frozen.fc2.weight, nn.Parameter)
    assert frozen.fc2.weight is not model.fc2.weight
    with torch.no_grad():
        assert_close(frozen(x), model(x))
        frozen.fc2.weight.zero_()   # the frozen module reads its own copy ...
        assert_close(frozen(x), model.fc2.bias.expand(4, 2))
        assert model.fc2.weight.abs().sum() > 0   # ... which is not the model's


def test_preserved_methods_are_frozen_too() -> None:
    class TwoMethods(nn.Module):
        def __init__(self) -> None:
            super().__init__()
            self.fc, self.bn = nn.Linear(3, 4), nn.BatchNorm1d(4)

        def forward(self, x: torch.Tensor) -> torch.Tensor:
            return self.bn(self.fc(x))

        def score(self, x: torch.Tensor) -> torch.Tensor:
            return self.fc(x).sum(1)

    model = randomize_batchnorm(TwoMethods()).eval()
    x = torch.randn(2, 3)
    traced = kiln.trace_module(model, {"forward": x, "score": x})
    frozen = kiln.freeze(traced, preserved_attrs=["score"])
    assert frozen.method_names == ["forward", "score"]
    assert "prim::GetAttr" not in _kinds(frozen.score.graph)
    with torch.no_grad():
        assert_close(frozen.score(x), model.score(x))
        assert_close(frozen(x), model(x))
    assert "score" not in kiln.freeze(traced).method_names


def test_unknown_preserved_attribute_is_rejected() -> None:
    _, traced, _ = _frozen_case(LinearBN, (4, 5))
    with pytest.raises(KilnError, match="'fc1.nope' does not exist"):
        kiln.freeze(traced, preserved_attrs=["fc1.nope"])


def test_mutated_buffer_stays_a_private_buffer() -> None:
    class Counter(nn.Module):
        def __init__(self) -> None:
            super().__init__()
            self.fc = nn.Linear(3, 3)
            self.register_buffer("count", torch.zeros(()))

        def forward(self, x: torch.Tensor) -> torch.Tensor:
            self.count.add_(1)
            return self.fc(x) + self.count

    model = Counter().eval()
    x = torch.randn(2, 3)
    traced = kiln.trace(model, x)
    frozen = kiln.freeze(traced)
    assert [n.attrs["name"] for n in frozen.graph.all_nodes() if n.kind == "prim::GetAttr"] == ["count"]
    start = model.count.item()
    with torch.no_grad():
        frozen(x)
        out = frozen(x)
    assert frozen.count.item() == start + 2 and model.count.item() == start
    assert_close(out, model.fc(x) + start + 2)


def test_frozen_module_converts_its_constants() -> None:
    model, traced, x = _frozen_case(lambda: ConvBN(2, True, True), (2, 3, 8, 8))
    frozen = kiln.freeze(traced).double()
    with torch.no_grad():
        assert_close(frozen(x.double()), model.double()(x.double()))


# -- the graph passes ---------------------------------------------------------------------------

def _const(b: Builder, value: Any) -> Value:
    return b.constant(value)


def _conv_bn_graph(*, kind: str = "aten::conv2d", conv_bias: bool = True, affine: bool = True,
                   training: bool = False, rank_known: bool = True, extra_use: bool = False,
                   transposed: bool = False) -> Graph:
    """graph(%x): conv (constant weights) -> batch_norm (constant statistics) -> output."""
    g = Graph()
    b = Builder(g)
    x = g.add_input(TensorType(torch.float32, (2, 3, 8, 8)), "x")
    w = torch.randn(4, 3, 3, 3) if not transposed else torch.randn(3, 4, 3, 3)
    weight, bias = _const(b, w), _const(b, torch.randn(4) if conv_bias else None)
    out_type = TensorType(torch.float32, (2, 4, 6, 6)) if rank_known else TensorType()
    ones, zeros = _const(b, [1, 1]), _const(b, [0, 0])
    if kind == "aten::conv2d":
        args = [x, weight, bias, ones, zeros, ones, _const(b, 1)]
    else:
        args = [x, weight, bias, ones, zeros, ones, _const(b, transposed), zeros, _const(b, 1)]
        if kind == "aten::_convolution":
            args += [_const(b, False), _const(b, False), _const(b, True), _const(b, True)]
    y = b.value(kind, args, out_type)
    stats = [torch.rand(4) + 0.5 if affine else None, torch.randn(4) if affine else None,
             torch.randn(4), torch.rand(4) + 0.5]
    bn_args = [y, *(_const(b, s) for s in stats), _const(b, training), _const(b, 0.1),
               _const(b, 1e-5), _const(b, True)]
    g.register_output(b.value("aten::batch_norm", bn_args, out_type))
    if extra_use:
        g.register_output(y)
    return g


def _run_and_compare(graph: Graph, pass_name: str, *inputs: torch.Tensor) -> bool:
    before = graph.copy()
    changed = run_pipeline(graph, [pass_name, "dce"], verify=True)
    assert_close(interpret(graph, inputs), interpret(before, inputs))
    _assert_round_trip(graph)
    return changed


@pytest.mark.parametrize("kind", ["aten::conv2d", "aten::convolution", "aten::_convolution"])
@pytest.mark.parametrize(("conv_bias", "affine"), [(True, True), (False, True), (True, False), (False, False)])
def test_fold_conv_bn_pass(kind: str, conv_bias: bool, affine: bool) -> None:
    graph = _conv_bn_graph(kind=kind, conv_bias=conv_bias, affine=affine)
    assert _run_and_compare(graph, "fold_conv_bn", torch.randn(2, 3, 8, 8))
    assert "aten::batch_norm" not in _kinds(graph)
    assert graph.outputs[0].node.kind == kind


@pytest.mark.parametrize("why", ["training", "rank_unknown", "extra_use", "transposed"])
def test_fold_conv_bn_leaves_unsafe_pairs(why: str) -> None:
    options: dict[str, Any] = {"training": {"training": True}, "rank_unknown": {"rank_known": False},
                               "extra_use": {"extra_use": True},
                               "transposed": {"kind": "aten::convolution", "transposed": True}}[why]
    graph = _conv_bn_graph(**options)
    text = print_graph(graph)
    assert not fold_conv_bn(graph)
    assert print_graph(graph) == text


def _linear_bn_graph(rank: int) -> Graph:
    g = Graph()
    b = Builder(g)
    shape = (4, 5) if rank == 2 else (4, 6, 5)
    x = g.add_input(TensorType(torch.float32, shape), "x")
    out = TensorType(torch.float32, (*shape[:-1], 6))
    y = b.value("aten::linear", [x, _const(b, torch.randn(6, 5)), _const(b, torch.randn(6))], out)
    stats = [torch.rand(6) + 0.5, torch.randn(6), torch.randn(6), torch.rand(6) + 0.5]
    args = [y, *(_const(b, s) for s in stats), _const(b, False), _const(b, 0.1), _const(b, 1e-5),
            _const(b, True)]
    g.register_output(b.value("aten::batch_norm", args, out))
    return g


def test_fold_linear_bn_pass() -> None:
    graph = _linear_bn_graph(2)
    assert _run_and_compare(graph, "fold_conv_bn", torch.randn(4, 5))
    assert _kinds(graph) == {"prim::Constant", "aten::linear"}
    # on a 3-d input batch norm's channels are dim 1, not linear's features: left alone
    assert not fold_conv_bn(_linear_bn_graph(3))


def test_fold_keeps_dtype_of_the_weights() -> None:
    graph = _conv_bn_graph()
    for node in graph.all_nodes():
        if isinstance(node.attrs.get("value"), torch.Tensor):
            node.attrs["value"] = node.attrs["value"].double()
    before = graph.copy()
    assert fold_conv_bn(graph)
    conv = graph.outputs[0].node
    assert {conv.inputs[i].node.attrs["value"].dtype for i in (1, 2)} == {torch.float64}
    x = torch.randn(2, 3, 8, 8, dtype=torch.float64)
    assert_close(interpret(graph, [x]), interpret(before, [x]))


def _dropout_graph(kind: str, train: Optional[bool]) -> Graph:
    """graph(%x, %t): relu(dropout(x, 0.5, train)); ``train`` None reads the flag from %t."""
    g = Graph()
    b = Builder(g)
    x = g.add_input(TensorType(), "x")
    flag = g.add_input(BoolType, "t")
    train_v = flag if train is None else _const(b, train)
    y = b.value(kind, [x, _const(b, 0.5), train_v])
    g.register_output(b.value("aten::relu", [y]))
    return g


@pytest.mark.parametrize("kind", ["aten::dropout", "aten::feature_dropout", "aten::alpha_dropout",
                                  "aten::feature_alpha_dropout", "aten::dropout_"])
def test_remove_dropout_pass(kind: str) -> None:
    graph = _dropout_graph(kind, False)
    x = torch.randn(2, 3, 4)
    assert _run_and_compare(graph, "remove_dropout", x, torch.tensor(False))
    assert _kinds(graph) == {"aten::relu"}
    assert graph.outputs[0].node.inputs[0] is graph.inputs[0]


@pytest.mark.parametrize("train", [True, None])
def test_remove_dropout_keeps_dropout_that_may_fire(train: Optional[bool]) -> None:
    graph = _dropout_graph("aten::dropout", train)
    assert not remove_dropout(graph)
    assert "aten::dropout" in _kinds(graph)


def test_passes_are_registered() -> None:
    assert PASSES["fold_conv_bn"] is fold_conv_bn
    assert PASSES["remove_dropout"] is remove_dropout
    assert kiln.freeze is __import__("kiln.passes.freeze", fromlist=["freeze"]).freeze
