"""The interop matrix's programs: modules, how to capture them, and inputs.

Each :class:`Program` builds a fresh ``nn.Module``, says whether it is traced or scripted,
and gives the inputs to call it with.  Classes live at module level so that both Kiln and
TorchScript can read their source.
"""

# TorchScript reads typing.List/Dict/Tuple (not List[...]) in class annotations; no future import.
# ruff: noqa: UP006, UP035

import enum
from dataclasses import dataclass, field
from typing import Any, Callable, Dict, List, NamedTuple, Optional, Tuple

import torch
import torch.nn.functional as F
from torch import Tensor, nn


@dataclass
class Program:
    name: str
    make: Callable[[], nn.Module]
    mode: str                               # "trace" or "script"
    inputs: Callable[[], Tuple[Any, ...]]
    extra_files: Dict[str, str] = field(default_factory=dict)
    train: bool = False                     # leave the module in training mode


def _x(*shape: int) -> Callable[[], Tuple[Any, ...]]:
    return lambda: (torch.randn(*shape),)


class MLP(nn.Module):
    def __init__(self) -> None:
        super().__init__()
        self.fc1 = nn.Linear(4, 8)
        self.fc2 = nn.Linear(8, 3)

    def forward(self, x: Tensor) -> Tensor:
        return self.fc2(torch.relu(self.fc1(x)))


class LoopInt(nn.Module):
    def forward(self, x: Tensor, n: int) -> Tensor:
        for i in range(n):
            x = x * 2 + i
        return x


class IfTensor(nn.Module):
    def forward(self, x: Tensor) -> Tensor:
        if bool(x.sum() > 0):
            return x.relu()
        return -x


class WhileLoop(nn.Module):
    def forward(self, x: Tensor) -> Tensor:
        k = 0
        while k < 5 and bool(x.abs().max() < 100.0):
            x = x * 3
            k += 1
        return x


class IntListAttr(nn.Module):
    sizes: List[int]

    def __init__(self) -> None:
        super().__init__()
        self.sizes = [1, 2, 3]

    def forward(self, x: Tensor) -> Tensor:
        total = 0
        for s in self.sizes:
            total += s
        return x + total + len(self.sizes)


class DictAttr(nn.Module):
    scales: Dict[str, float]

    def __init__(self) -> None:
        super().__init__()
        self.scales = {"a": 1.5, "b": -2.0}

    def forward(self, x: Tensor) -> Tensor:
        return x * self.scales["a"] + self.scales["b"]


class OptionalAttr(nn.Module):
    limit: Optional[int]

    def __init__(self) -> None:
        super().__init__()
        self.limit = None

    def forward(self, x: Tensor, y: Optional[Tensor] = None) -> Tensor:
        if y is not None:
            x = x + y
        limit = self.limit
        if limit is not None:
            x = x.clamp(max=float(limit))
        return x


class TupleOut(nn.Module):
    def forward(self, x: Tensor) -> Tuple[Tensor, Tensor]:
        return x.max(dim=1)


class TensorListOut(nn.Module):
    def forward(self, x: Tensor) -> List[Tensor]:
        return [x, x * 2, x.sum(0)]


class DictOut(nn.Module):
    def forward(self, x: Tensor) -> Dict[str, Tensor]:
        return {"double": x * 2, "neg": -x}


class Stack(nn.Module):
    def __init__(self) -> None:
        super().__init__()
        self.body = nn.Sequential(nn.Linear(4, 4), nn.Tanh(), nn.Sequential(nn.Linear(4, 2), nn.ReLU()))

    def forward(self, x: Tensor) -> Tensor:
        return self.body(x)


class Layers(nn.Module):
    def __init__(self) -> None:
        super().__init__()
        self.layers = nn.ModuleList([nn.Linear(4, 4) for _ in range(3)])

    def forward(self, x: Tensor) -> Tensor:
        for layer in self.layers:
            x = torch.sigmoid(layer(x))
        return x


class SharedSub(nn.Module):
    def __init__(self) -> None:
        super().__init__()
        self.a = nn.Linear(4, 4)
        self.b = self.a

    def forward(self, x: Tensor) -> Tensor:
        return self.b(self.a(x))


class Tied(nn.Module):
    def __init__(self) -> None:
        super().__init__()
        self.enc = nn.Linear(4, 4, bias=False)
        self.dec = nn.Linear(4, 4, bias=False)
        self.dec.weight = self.enc.weight

    def forward(self, x: Tensor) -> Tensor:
        return self.dec(self.enc(x))


class Strided(nn.Module):
    def __init__(self) -> None:
        super().__init__()
        self.register_buffer("t", torch.arange(12.0).reshape(3, 4).t())   # non-contiguous
        base = torch.arange(10.0)
        self.register_buffer("head", base[:6])                             # two views of one storage
        self.register_buffer("tail", base[4:])

    def forward(self, x: Tensor) -> Tensor:
        return x @ self.t + self.head.sum() + self.tail[0]


class Dtypes(nn.Module):
    def __init__(self) -> None:
        super().__init__()
        self.register_buffer("mask", torch.tensor([True, False, True, True]))
        self.register_buffer("h", torch.tensor([0.5, -1.25, 3.0, 65504.0], dtype=torch.half))
        self.register_buffer("bf", torch.tensor([1.0, 2.5, -3.0, 1e-3], dtype=torch.bfloat16))
        self.register_buffer("c", torch.tensor([1 + 2j, -1j, 0.5, 3], dtype=torch.complex64))
        self.register_buffer("i8", torch.tensor([-128, 0, 5, 127], dtype=torch.int8))

    def forward(self, x: Tensor) -> Tuple[Tensor, Tensor, Tensor]:
        y = torch.where(self.mask, x, x * 0) + self.h.float() + self.bf.float() + self.i8.float()
        return y, torch.real(self.c * 2), self.h * 2


class ConvNet(nn.Module):
    def __init__(self) -> None:
        super().__init__()
        self.conv = nn.Conv2d(3, 8, 3, padding=1)
        self.bn = nn.BatchNorm2d(8)
        self.fc = nn.Linear(8, 5)

    def forward(self, x: Tensor) -> Tensor:
        y = F.relu(self.bn(self.conv(x)))
        y = F.adaptive_avg_pool2d(y, 1).flatten(1)
        return self.fc(y)


class Strings(nn.Module):
    prefix: str

    def __init__(self) -> None:
        super().__init__()
        self.prefix = "layer"

    def forward(self, x: Tensor) -> Tensor:
        name = self.prefix + "_" + str(x.dim())
        if name.startswith("layer") and len(name) == 7:
            return x + 1
        return x


class BakedConstant(nn.Module):
    def __init__(self) -> None:
        super().__init__()
        self.offset = torch.arange(4.0)          # a plain tensor attribute: traced as a constant

    def forward(self, x: Tensor) -> Tensor:
        return x + self.offset


class Exported(nn.Module):
    def __init__(self) -> None:
        super().__init__()
        self.fc = nn.Linear(4, 2)

    @torch.jit.export
    def features(self, x: Tensor) -> Tensor:
        return torch.tanh(self.fc(x))

    def forward(self, x: Tensor) -> Tensor:
        return self.features(x) * 2


class Defaults(nn.Module):
    def forward(self, x: Tensor, scale: float = 2.0, shift: int = 1) -> Tensor:
        return x * scale + shift


class Scalars(nn.Module):
    def __init__(self) -> None:
        super().__init__()
        self.alpha = 0.25
        self.steps = 3
        self.flag = True

    def forward(self, x: Tensor) -> Tensor:
        for _ in range(self.steps):
            x = x + self.alpha
        return x if self.flag else -x


class ListBuild(nn.Module):
    def forward(self, x: Tensor) -> Tensor:
        parts: List[Tensor] = []
        for i in range(x.size(0)):
            parts.append(x[i] * i)
        return torch.stack(parts).sum(0)


class TrainBN(nn.Module):
    def __init__(self) -> None:
        super().__init__()
        self.bn = nn.BatchNorm1d(4)

    def forward(self, x: Tensor) -> Tensor:
        return self.bn(x)


class Embed(nn.Module):
    def __init__(self) -> None:
        super().__init__()
        self.emb = nn.Embedding(10, 4)

    def forward(self, idx: Tensor) -> Tensor:
        return self.emb(idx).sum(1)


class Nested(nn.Module):
    def __init__(self) -> None:
        super().__init__()
        self.inner = Layers()
        self.head = nn.Linear(4, 1)

    def forward(self, x: Tensor) -> Tensor:
        return self.head(self.inner(x))


class DivFull(nn.Module):
    def forward(self, x: Tensor, k: Tensor) -> Tuple[Tensor, Tensor, Tensor]:
        return torch.div(k, 3), torch.full([2], 7) + k[:2], torch.linspace(0, 1, 5) + x.sum()


class DivOnly(nn.Module):
    def forward(self, x: Tensor, k: Tensor) -> Tuple[Tensor, Tensor]:
        return x / 3, torch.div(k, 2, rounding_mode="floor")


class FullOnly(nn.Module):
    def forward(self, x: Tensor) -> Tensor:
        return x + torch.full([3], 2)


class LogSpace(nn.Module):
    def forward(self, x: Tensor) -> Tensor:
        return x + torch.logspace(0, 2, 3)


class Gelu(nn.Module):
    def forward(self, x: Tensor) -> Tensor:
        return F.gelu(x) + F.gelu(x, approximate="tanh")


class TupleAttr(nn.Module):
    def __init__(self) -> None:
        super().__init__()
        self.pair = (2, 0.5)

    def forward(self, x: Tensor) -> Tensor:
        return x * self.pair[0] + self.pair[1]


class NoneBias(nn.Module):
    def __init__(self) -> None:
        super().__init__()
        self.fc = nn.Linear(4, 3, bias=False)

    def forward(self, x: Tensor) -> Tensor:
        return self.fc(x)


class Stats(NamedTuple):
    mean: Tensor
    count: int


class NamedOut(nn.Module):
    def forward(self, x: Tensor) -> Stats:
        return Stats(x.mean(0), x.size(0))


class Acc:
    def __init__(self, n: int, t: Tensor) -> None:
        self.n = n
        self.t = t

    def add(self, k: int) -> int:
        self.n += k
        return self.n


class UsesClass(nn.Module):
    def forward(self, x: Tensor) -> Tensor:
        a = Acc(2, x)
        a.add(3)
        return a.t * a.n


class Mode(enum.Enum):
    FAST = 1
    SLOW = 2


class EnumAttr(nn.Module):
    def __init__(self) -> None:
        super().__init__()
        self.mode = Mode.SLOW

    def forward(self, x: Tensor) -> Tensor:
        if self.mode == Mode.FAST:
            return x
        return x * 10


PROGRAMS = [
    Program("mlp_traced", MLP, "trace", _x(2, 4)),
    Program("mlp_scripted", MLP, "script", _x(2, 4)),
    Program("loop_int", LoopInt, "script", lambda: (torch.randn(3), 4)),
    Program("if_tensor", IfTensor, "script", _x(5)),
    Program("while_loop", WhileLoop, "script", _x(3)),
    Program("int_list_attr", IntListAttr, "script", _x(3)),
    Program("dict_attr", DictAttr, "script", _x(3)),
    Program("optional_attr", OptionalAttr, "script", lambda: (torch.randn(3), torch.randn(3))),
    Program("tuple_out", TupleOut, "script", _x(3, 4)),
    Program("tensor_list_out", TensorListOut, "script", _x(2, 3)),
    Program("dict_out", DictOut, "script", _x(2)),
    Program("sequential_traced", Stack, "trace", _x(2, 4)),
    Program("sequential_scripted", Stack, "script", _x(2, 4)),
    Program("module_list", Layers, "script", _x(2, 4)),
    Program("shared_submodule", SharedSub, "script", _x(2, 4)),
    Program("tied_parameters", Tied, "script", _x(2, 4)),
    Program("strided_aliased", Strided, "script", _x(2, 4)),
    Program("dtypes", Dtypes, "script", _x(4)),
    Program("convnet_traced", ConvNet, "trace", _x(1, 3, 8, 8)),
    Program("convnet_scripted", ConvNet, "script", _x(2, 3, 8, 8)),
    Program("strings", Strings, "script", _x(3)),
    Program("baked_constant", BakedConstant, "trace", _x(4)),
    Program("exported_method", Exported, "script", _x(2, 4)),
    Program("defaults", Defaults, "script", _x(3)),
    Program("scalar_attrs", Scalars, "script", _x(3)),
    Program("list_build", ListBuild, "script", _x(3, 2)),
    Program("train_batchnorm", TrainBN, "script", _x(5, 4), train=True),
    Program("embedding", Embed, "trace", lambda: (torch.tensor([[1, 2], [3, 9]]),)),
    Program("nested_modules", Nested, "script", _x(2, 4)),
    Program("div_full_linspace", DivFull, "script", lambda: (torch.randn(3), torch.tensor([7, -7, 9]))),
    Program("div_only", DivOnly, "script", lambda: (torch.randn(3), torch.tensor([7, -7, 9]))),
    Program("full_only", FullOnly, "script", _x(3)),
    Program("logspace", LogSpace, "script", _x(3)),
    Program("gelu", Gelu, "script", _x(4)),
    Program("tuple_attr", TupleAttr, "script", _x(3)),
    Program("no_bias", NoneBias, "script", _x(2, 4)),
    Program("namedtuple_out", NamedOut, "script", _x(3, 2)),
    Program("enum_attr", EnumAttr, "script", _x(3)),
    Program("script_class", UsesClass, "script", _x(3)),
    Program("extra_files", MLP, "script", _x(1, 4), extra_files={"meta.json": '{"v": 1}', "notes.txt": "hi"}),
]
