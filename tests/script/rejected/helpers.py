"""Errors inside called helper functions: the message shows the chain of calls that led there."""

# ruff: noqa: UP006, UP035, F821

from typing import List, Optional

import torch
from torch import Tensor, nn

from ._rejected import Rejected


def normalize(x: Tensor, eps: Optional[float]) -> Tensor:
    return x / (x.norm() + eps)  # error


def uses_normalize(x: Tensor, eps: Optional[float]) -> Tensor:
    return normalize(x, eps)  # call


def normalize_again(x: Tensor, eps: Optional[float]) -> Tensor:
    return x / (x.norm() + eps)  # error


def passes_a_constant(x: Tensor) -> Tensor:
    return normalize_again(x, 1e-6)  # call


def innermost(xs: List[int]) -> int:
    return xs + 1  # error


def middle(xs: List[int]) -> int:
    return innermost(xs) * 2


def outermost(x: Tensor) -> int:
    return middle([1, 2, 3])  # call


def row_total(x: Tensor, scale: int) -> Tensor:
    out = x * scale
    return out.sum(dim="rows")  # error


def calls_in_loop(x: Tensor, n: int) -> Tensor:
    for i in range(n):
        x = row_total(x, i)  # call
    return x


def undefined_in_helper(x: Tensor) -> Tensor:
    return x * scale_factor  # error


def calls_from_branch(x: Tensor, flag: bool) -> Tensor:
    if flag:
        return undefined_in_helper(x)  # call
    return x


def activation(x: Tensor) -> Tensor:
    return torch.relu(x, inplace=True)  # error


class UsesHelper(nn.Module):
    def __init__(self):
        super().__init__()
        self.linear = nn.Linear(4, 4)

    def forward(self, x: Tensor) -> Tensor:
        return activation(self.linear(x))  # call


REJECTED = [
    Rejected(uses_normalize, cause="unsupported operand types for +: Tensor and Optional[float]; eps is Optional[float] here",
             where=normalize, caller=uses_normalize),
    Rejected(passes_a_constant, cause="Optional[float]", where=normalize_again, caller=passes_a_constant,
             xfail="accepted: the helper is inlined and `eps` takes the type of the constant argument "
                   "(float), not its declared Optional[float]"),
    Rejected(outermost, cause="unsupported operand types for +: List[int] and int", where=innermost,
             caller=outermost),
    Rejected(calls_in_loop, cause="no overload of aten::sum accepts", where=row_total, caller=calls_in_loop),
    Rejected(calls_from_branch, cause="undefined name 'scale_factor'", where=undefined_in_helper,
             caller=calls_from_branch),
    Rejected(UsesHelper, cause="no overload of aten::relu accepts (Tensor, inplace=bool)", where=activation,
             caller=UsesHelper.forward),
]
