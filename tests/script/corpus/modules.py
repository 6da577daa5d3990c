"""nn.Module subclasses: submodules, parameters, buffers, typed attributes, constants, containers,
exported/ignored/unused methods, standard layers, training vs eval.

Each case's ``obj`` is a zero-argument factory; the harness calls it under ``torch.manual_seed(0)``.
"""

# ruff: noqa: UP006, UP035

from typing import Dict, Final, List, Optional, Tuple

import torch
import torch.nn.functional as F
from torch import nn

from ._case import Case


def _x(*shape: int) -> torch.Tensor:
    g = torch.Generator().manual_seed(len(shape) * 100 + sum(shape))
    return torch.randn(*shape, generator=g)


# -- submodules, parameters, buffers --------------------------------------------------------------


class LinearRelu(nn.Module):
    def __init__(self) -> None:
        super().__init__()
        self.fc = nn.Linear(4, 3)
        self.act = nn.ReLU()

    def forward(self, x):
        return self.act(self.fc(x))


def linear_relu() -> nn.Module:
    return LinearRelu()


class Affine(nn.Module):
    def __init__(self) -> None:
        super().__init__()
        self.weight = nn.Parameter(torch.arange(6.0).view(2, 3) / 10)
        self.bias = nn.Parameter(torch.tensor([0.5, -0.5]))
        self.register_buffer("offset", torch.tensor([1.0, 2.0]))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return x @ self.weight.t() + self.bias + self.offset


def affine_params_buffers() -> nn.Module:
    return Affine()


class RunningCount(nn.Module):
    """A buffer and an int attribute mutated by forward: state carries across calls."""

    def __init__(self) -> None:
        super().__init__()
        self.register_buffer("total", torch.zeros(2))
        self.calls = 0

    def forward(self, x: torch.Tensor) -> Tuple[torch.Tensor, int]:
        self.total += x
        self.calls += 1
        return self.total.clone(), self.calls


def running_count() -> nn.Module:
    return RunningCount()


class Inner(nn.Module):
    def __init__(self, scale: float) -> None:
        super().__init__()
        self.scale = scale
        self.fc = nn.Linear(3, 3)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return torch.tanh(self.fc(x)) * self.scale


class Outer(nn.Module):
    def __init__(self) -> None:
        super().__init__()
        self.a = Inner(2.0)
        self.b = Inner(0.5)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.b(self.a(x)) + self.a(x)


def nested_custom_modules() -> nn.Module:
    return Outer()


# -- typed attributes and constants ---------------------------------------------------------------


class TypedAttributes(nn.Module):
    def __init__(self) -> None:
        super().__init__()
        self.count: int = 3
        self.rate: float = 0.5
        self.sizes: List[int] = [1, 2, 3]
        self.table: Dict[str, int] = {"a": 10, "b": 20}
        self.name: str = "typed"
        self.flag: bool = True

    def forward(self, x: torch.Tensor, key: str) -> Tuple[torch.Tensor, int, str]:
        total = 0
        for s in self.sizes:
            total += s * self.count
        y = x * self.rate + total
        if self.flag:
            y = y + self.table.get(key, -1)
        return y, len(self.table), self.name + ":" + key


def typed_attributes() -> nn.Module:
    return TypedAttributes()


class OptionalAttribute(nn.Module):
    def __init__(self, with_bias: bool) -> None:
        super().__init__()
        self.bias: Optional[torch.Tensor] = torch.tensor([1.0, -1.0]) if with_bias else None

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        bias = self.bias
        if bias is not None:
            return x + bias
        return x * 10


def optional_attribute_set() -> nn.Module:
    return OptionalAttribute(True)


def optional_attribute_none() -> nn.Module:
    return OptionalAttribute(False)


class Constants(nn.Module):
    __constants__ = ["mode", "eps"]
    depth: Final[int]

    def __init__(self) -> None:
        super().__init__()
        self.mode = "double"
        self.eps = 1e-3
        self.depth = 3

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        for _ in range(self.depth):
            if self.mode == "double":
                x = x * 2
            else:
                x = x + 1
        return x + self.eps


def final_and_constants() -> nn.Module:
    return Constants()


# -- module containers ----------------------------------------------------------------------------


class ListOfLayers(nn.Module):
    def __init__(self) -> None:
        super().__init__()
        self.layers = nn.ModuleList([nn.Linear(3, 3) for _ in range(3)])
        self.acts = nn.ModuleList([nn.ReLU(), nn.Tanh(), nn.Sigmoid()])

    def forward(self, x: torch.Tensor) -> Tuple[torch.Tensor, List[torch.Tensor]]:
        outs: List[torch.Tensor] = []
        for i, layer in enumerate(self.layers):
            x = layer(x)
            outs.append(x * i)
        for layer, act in zip(self.layers, self.acts):
            x = act(layer(x))
        return self.layers[1](x), outs


def module_list_iteration() -> nn.Module:
    return ListOfLayers()


class DictOfLayers(nn.Module):
    def __init__(self) -> None:
        super().__init__()
        self.branches = nn.ModuleDict({"left": nn.Linear(2, 2), "right": nn.Linear(2, 2)})
        self.post = nn.ModuleDict({"relu": nn.ReLU(), "neg": nn.Hardtanh(-0.1, 0.1)})

    def forward(self, x: torch.Tensor) -> Dict[str, torch.Tensor]:
        out: Dict[str, torch.Tensor] = {}
        for name, branch in self.branches.items():
            out[name] = branch(x)
        y = self.branches["left"](x)
        for post in self.post.values():
            y = post(y)
        for key in self.post.keys():
            out[key] = y + len(key)
        return out


def module_dict_iteration() -> nn.Module:
    return DictOfLayers()


class SequentialStack(nn.Module):
    def __init__(self) -> None:
        super().__init__()
        self.body = nn.Sequential(nn.Linear(4, 8), nn.ReLU(), nn.Linear(8, 2))

    def forward(self, x: torch.Tensor) -> Tuple[torch.Tensor, torch.Tensor]:
        y = x
        for layer in self.body:
            y = layer(y)
        return self.body(x), y


def sequential_iteration() -> nn.Module:
    return SequentialStack()


def plain_sequential() -> nn.Module:
    return nn.Sequential(nn.Linear(3, 4), nn.GELU(), nn.LayerNorm(4), nn.Linear(4, 1))


# -- methods --------------------------------------------------------------------------------------


class WithHelpers(nn.Module):
    def __init__(self) -> None:
        super().__init__()
        self.fc = nn.Linear(2, 2)
        self.factor = 3

    def scale(self, x: torch.Tensor, k: int) -> torch.Tensor:
        return x * k

    def pick(self, xs: List[torch.Tensor]) -> torch.Tensor:
        return xs[-1]

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        y = self.scale(self.fc(x), self.factor)
        return self.pick([x, y]) + self.describe(2)

    @torch.jit.export
    def describe(self, n: int) -> int:
        return n * self.factor


def method_calls() -> nn.Module:
    return WithHelpers()


def exported_method() -> nn.Module:
    return WithHelpers()


class IgnoredAndUnused(nn.Module):
    def __init__(self) -> None:
        super().__init__()
        self.use_unused = False

    @torch.jit.ignore
    def python_only(self, x: torch.Tensor) -> torch.Tensor:
        return x + len(str(type(x)))  # plain Python, not compiled

    @torch.jit.unused
    def never_called(self, x: torch.Tensor) -> torch.Tensor:
        import math  # not compiled
        return x * math.pi

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if self.use_unused:
            return self.never_called(x)
        return self.python_only(x) * 2


def ignored_and_unused() -> nn.Module:
    return IgnoredAndUnused()


class Introspection(nn.Module):
    def __init__(self) -> None:
        super().__init__()
        self.fc = nn.Linear(2, 2)
        self.extra = 5

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        layer = getattr(self, "fc")  # noqa: B009 - getattr with a constant name is the feature under test
        n = 0
        if hasattr(self, "extra"):
            n += self.extra
        if hasattr(self, "missing"):
            n += 1000
        return layer(x) + n


def getattr_hasattr_on_self() -> nn.Module:
    return Introspection()


def _free_function(x: torch.Tensor, k: int) -> torch.Tensor:
    return F.relu(x - k)


class CallsFreeFunction(nn.Module):
    def __init__(self) -> None:
        super().__init__()
        self.k = 1

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return _free_function(x, self.k) + _free_function(-x, 0)


def module_calls_free_function() -> nn.Module:
    return CallsFreeFunction()


class DataDependent(nn.Module):
    def __init__(self) -> None:
        super().__init__()
        self.pos = nn.Linear(2, 2)
        self.neg = nn.Linear(2, 2)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if x.sum() > 0:
            return self.pos(x)
        elif x.sum() < -10:
            return torch.zeros_like(x)
        return self.neg(x)


def data_dependent_module() -> nn.Module:
    return DataDependent()


class _Doubler(nn.Module):
    def __init__(self) -> None:
        super().__init__()
        self.k = 2

    def transform(self, x: torch.Tensor) -> torch.Tensor:
        return x * self.k

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.transform(x) + 1


class _Negator(_Doubler):
    """Inherits forward; overrides the helper it calls (no super() call: that is beyond_ts)."""

    def transform(self, x: torch.Tensor) -> torch.Tensor:
        return -x * self.k


def inherited_forward() -> nn.Module:
    return _Negator()


# -- training vs eval -----------------------------------------------------------------------------


class ModeAware(nn.Module):
    def __init__(self) -> None:
        super().__init__()
        self.drop = nn.Dropout(0.5)

    def forward(self, x: torch.Tensor) -> Tuple[torch.Tensor, bool]:
        if self.training:
            return x + 100, self.training
        return self.drop(x) - 1, self.training


def mode_training() -> nn.Module:
    return ModeAware().train()


def mode_eval() -> nn.Module:
    return ModeAware().eval()


class BatchNormTrain(nn.Module):
    def __init__(self) -> None:
        super().__init__()
        self.bn = nn.BatchNorm1d(3)

    def forward(self, x: torch.Tensor) -> Tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        y = self.bn(x)
        return y, self.bn.running_mean.clone(), self.bn.running_var.clone()


def batchnorm_training_updates_stats() -> nn.Module:
    return BatchNormTrain().train()


# -- standard layers ------------------------------------------------------------------------------


class ConvNet(nn.Module):
    def __init__(self) -> None:
        super().__init__()
        self.conv = nn.Conv2d(2, 4, 3, padding=1)
        self.bn = nn.BatchNorm2d(4)
        self.pool = nn.MaxPool2d(2)
        self.head = nn.Linear(4 * 2 * 2, 3)
        with torch.no_grad():
            self.bn.running_mean.copy_(torch.arange(4.0) / 10)
            self.bn.running_var.copy_(torch.arange(1.0, 5.0))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        y = self.pool(F.relu(self.bn(self.conv(x))))
        return self.head(torch.flatten(y, 1))


def conv_bn_eval() -> nn.Module:
    return ConvNet().eval()


class EmbedNorm(nn.Module):
    def __init__(self) -> None:
        super().__init__()
        self.emb = nn.Embedding(10, 4)
        self.norm = nn.LayerNorm(4)

    def forward(self, ids: torch.Tensor) -> torch.Tensor:
        return self.norm(self.emb(ids)).mean(dim=-2)


def embedding_layernorm() -> nn.Module:
    return EmbedNorm()


class Recurrent(nn.Module):
    def __init__(self) -> None:
        super().__init__()
        self.lstm = nn.LSTM(4, 5, batch_first=True)
        self.gru = nn.GRU(5, 3)

    def forward(self, x: torch.Tensor) -> Tuple[torch.Tensor, torch.Tensor, torch.Tensor, torch.Tensor]:
        out, (h, c) = self.lstm(x)
        out2, h2 = self.gru(out.transpose(0, 1))
        return out, h, c, out2 + h2


def lstm_gru() -> nn.Module:
    return Recurrent()


class Attention(nn.Module):
    def __init__(self) -> None:
        super().__init__()
        self.mha = nn.MultiheadAttention(8, 2, batch_first=True)

    def forward(self, x: torch.Tensor) -> Tuple[torch.Tensor, Optional[torch.Tensor]]:
        return self.mha(x, x, x)


def multihead_attention_eval() -> nn.Module:
    return Attention().eval()


CASES = [
    Case(linear_relu, [(_x(2, 4),), (_x(5, 4),)], kind="module"),
    Case(affine_params_buffers, [(_x(3, 3),), (torch.ones(1, 3),)], kind="module"),
    Case(running_count, [(torch.ones(2),), (torch.tensor([2.0, -1.0]),), (torch.zeros(2),)], kind="module"),
    Case(nested_custom_modules, [(_x(2, 3),), (_x(1, 3),)], kind="module"),
    Case(typed_attributes, [(torch.arange(3.0), "a"), (torch.ones(2), "zz")], kind="module"),
    Case(optional_attribute_set, [(torch.arange(2.0),), (torch.ones(3, 2),)], kind="module"),
    Case(optional_attribute_none, [(torch.arange(2.0),)], kind="module"),
    Case(final_and_constants, [(torch.arange(3.0),), (torch.ones(1),)], kind="module"),
    Case(module_list_iteration, [(_x(2, 3),), (_x(1, 3),)], kind="module"),
    Case(module_dict_iteration, [(_x(3, 2),), (torch.ones(1, 2),)], kind="module"),
    Case(sequential_iteration, [(_x(2, 4),), (_x(3, 4),)], kind="module"),
    Case(plain_sequential, [(_x(2, 3),), (_x(6, 3),)], kind="module"),
    Case(method_calls, [(_x(2, 2),), (torch.ones(1, 2),)], kind="module"),
    Case(exported_method, [(4,), (-1,)], kind="module", method="describe"),
    Case(ignored_and_unused, [(torch.arange(3.0),)], kind="module"),
    Case(getattr_hasattr_on_self, [(_x(2, 2),)], kind="module"),
    Case(module_calls_free_function, [(torch.linspace(-3, 3, 7),), (_x(2, 2),)], kind="module"),
    Case(data_dependent_module, [(torch.ones(2),), (-torch.ones(2),), (torch.full((2,), -20.0),)], kind="module"),
    Case(inherited_forward, [(torch.arange(3.0),)], kind="module"),
    Case(mode_training, [(torch.arange(3.0),)], kind="module"),
    Case(mode_eval, [(torch.arange(3.0),), (torch.ones(2, 2),)], kind="module"),
    Case(batchnorm_training_updates_stats, [(_x(4, 3),), (_x(6, 3) * 3 + 1,)], kind="module"),
    Case(conv_bn_eval, [(_x(1, 2, 4, 4),), (_x(3, 2, 4, 4),)], kind="module"),
    Case(embedding_layernorm, [(torch.tensor([[1, 2, 3], [4, 5, 9]]),), (torch.tensor([[0]]),)], kind="module"),
    Case(lstm_gru, [(_x(2, 3, 4),), (_x(1, 5, 4),)], kind="module"),
    Case(multihead_attention_eval, [(_x(2, 3, 8),), (_x(1, 4, 8),)], kind="module"),
]
