"""nn.Module programs: attributes and methods that do not exist, or that cannot be compiled.

Each entry is an ``nn.Module`` subclass, its own factory: the harness scripts ``Cls()``.
"""

# ruff: noqa: UP006, UP035, F841

from typing import List

from torch import Tensor, nn

from ._rejected import Rejected


class UnknownAttribute(nn.Module):
    def __init__(self):
        super().__init__()
        self.linear = nn.Linear(4, 4)

    def forward(self, x: Tensor) -> Tensor:
        return self.lienar(x)  # error


class AssignNewAttribute(nn.Module):
    def __init__(self):
        super().__init__()
        self.scale = 2.0

    def forward(self, x: Tensor) -> Tensor:
        self.calls = 1  # error
        return x * self.scale


class AssignWrongType(nn.Module):
    def __init__(self):
        super().__init__()
        self.steps = 0

    def forward(self, x: Tensor) -> Tensor:
        self.steps = "many"  # error
        return x


class MissingMethod(nn.Module):
    def __init__(self):
        super().__init__()

    def forward(self, x: Tensor) -> Tensor:
        return self.preprocess(x)  # error


class SubmoduleMissingMethod(nn.Module):
    def __init__(self):
        super().__init__()
        self.linear = nn.Linear(4, 4)

    def forward(self, x: Tensor) -> Tensor:
        return self.linear.apply_weights(x)  # error


class CreatesModuleInForward(nn.Module):
    def __init__(self):
        super().__init__()

    def forward(self, x: Tensor) -> Tensor:
        layer = nn.Linear(4, 4)  # error
        return layer(x)


class ModuleListIndexedByVariable(nn.Module):
    def __init__(self):
        super().__init__()
        self.layers = nn.ModuleList([nn.Linear(4, 4), nn.Linear(4, 4)])

    def forward(self, x: Tensor, i: int) -> Tensor:
        return self.layers[i](x)  # error


class IterateOverPlainSubmodule(nn.Module):
    def __init__(self):
        super().__init__()
        self.linear = nn.Linear(4, 4)

    def forward(self, x: Tensor) -> Tensor:
        for m in self.linear:  # error
            x = m(x)
        return x


class UnsupportedAttributeValue(nn.Module):
    def __init__(self):
        super().__init__()
        self.helper = object()

    def forward(self, x: Tensor) -> Tensor:
        h = self.helper  # error
        return x


class DictOfObjectsAttribute(nn.Module):
    def __init__(self):
        super().__init__()
        self.lookup = {1: object()}

    def forward(self, x: Tensor) -> Tensor:
        return x * self.lookup[1]  # error


class ForwardWithVarargs(nn.Module):
    def __init__(self):
        super().__init__()

    def forward(self, *xs: Tensor) -> Tensor:  # error
        return xs[0]


class ErrorInHelperMethod(nn.Module):
    def __init__(self):
        super().__init__()
        self.weights: List[float] = [1.0, 2.0]

    def combine(self, x: Tensor) -> Tensor:
        return x * self.weights  # error

    def forward(self, x: Tensor) -> Tensor:
        return self.combine(x)  # call


class Child(nn.Module):
    def __init__(self):
        super().__init__()

    def forward(self, x: Tensor) -> Tensor:
        return x.reshape("flat")  # error


class ErrorInSubmodule(nn.Module):
    def __init__(self):
        super().__init__()
        self.child = Child()

    def forward(self, x: Tensor) -> Tensor:
        return self.child(x) + 1  # call


REJECTED = [
    Rejected(UnknownAttribute, cause="has no attribute 'lienar'"),
    Rejected(AssignNewAttribute, cause="cannot assign to 'calls'"),
    Rejected(AssignWrongType, cause="attribute 'steps' is expected to be int, but it is str"),
    Rejected(MissingMethod, cause="module MissingMethod has no attribute 'preprocess'"),
    Rejected(SubmoduleMissingMethod, cause="module Linear has no attribute 'apply_weights'"),
    Rejected(CreatesModuleInForward, cause="creating modules inside compiled code is not supported"),
    Rejected(ModuleListIndexedByVariable, cause="can only be indexed with an int constant"),
    Rejected(IterateOverPlainSubmodule, cause="cannot iterate over module Linear"),
    Rejected(UnsupportedAttributeValue, cause="has no attribute 'helper' that compiled code can use"),
    Rejected(DictOfObjectsAttribute, cause="lookup",
             xfail="accepted: the attribute is typed Dict(int, Any) and aten::mul takes the Any for its "
                   "Tensor argument; the call then fails with a TypeError"),
    Rejected(ForwardWithVarargs, cause="module methods cannot take *args"),
    Rejected(ErrorInHelperMethod, cause="unsupported operand types for", caller=ErrorInHelperMethod.forward),
    Rejected(ErrorInSubmodule, cause="no overload of aten::reshape accepts (Tensor, str)", where=Child,
             caller=ErrorInSubmodule.forward),
]
