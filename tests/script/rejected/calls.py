"""Calls: wrong arguments to torch operators and to user functions, and recursion."""

# ruff: noqa: UP006, UP035

from typing import List

import torch
import torch.nn.functional as F
from torch import Tensor

from ._rejected import Rejected

# -- torch operators ------------------------------------------------------------------------------


def op_too_many_arguments(x: Tensor) -> Tensor:
    return torch.relu(x, x)  # error


def op_wrong_argument_type(x: Tensor) -> Tensor:
    return torch.sum(x, "rows")  # error


def op_unknown_keyword(x: Tensor) -> Tensor:
    return torch.softmax(x, dim=0, temperature=2.0)  # error


def op_missing_argument(x: Tensor) -> Tensor:
    return torch.cat()  # error


def functional_wrong_type(x: Tensor) -> Tensor:
    return F.relu(x, "yes")  # error


def tensor_method_unknown(x: Tensor) -> Tensor:
    return x.frobnicate()  # error


def tensor_method_wrong_type(x: Tensor) -> Tensor:
    return x.view("a", "b")  # error


def list_method_unknown(xs: List[int]) -> int:
    return xs.first()  # error


# -- user functions -------------------------------------------------------------------------------


def scale(x: Tensor, factor: float) -> Tensor:
    return x * factor


def user_too_many_arguments(x: Tensor) -> Tensor:
    return scale(x, 2.0, 3.0)  # error


def user_missing_argument(x: Tensor) -> Tensor:
    return scale(x)  # error


def user_unknown_keyword(x: Tensor) -> Tensor:
    return scale(x, factor=2.0, bias=1.0)  # error


def user_wrong_argument_type(x: Tensor) -> Tensor:
    return scale(x, "twice")  # error


def calling_a_number(x: Tensor) -> Tensor:
    k = 3
    return x * k()  # error


def factorial(n: int) -> int:
    if n <= 1:
        return 1
    return n * factorial(n - 1)  # error


def is_even(n: int) -> bool:
    if n == 0:
        return True
    return is_odd(n - 1)  # call


def is_odd(n: int) -> bool:
    if n == 0:
        return False
    return is_even(n - 1)  # error


# Argument errors of calls to Python functions are reported in the callee's frame: the message
# names the callee's file and first line and draws the call site's caret under that line.
_WRONG_FRAME = ("points at the called function's first line (with the call's caret under it) instead "
                "of the call site")

REJECTED = [
    Rejected(op_too_many_arguments, cause="no overload of aten::relu accepts (Tensor, Tensor)"),
    Rejected(op_wrong_argument_type, cause="no overload of aten::sum accepts (Tensor, str)"),
    Rejected(op_unknown_keyword, cause="temperature=float"),
    Rejected(op_missing_argument, cause="no overload of aten::cat accepts ()"),
    Rejected(functional_wrong_type, cause="argument 'inplace' of relu() is expected to be bool",
             xfail="accepted: the str goes to F.relu's `inplace: bool` unchecked and is tested with "
                   "len() != 0, so x is changed in place (before a compiler change of 2026-11-23 it was "
                   "rejected, but at F.relu's first line in functional.py instead of the call site)"),
    Rejected(tensor_method_unknown, cause="Tensor has no attribute or method 'frobnicate'"),
    Rejected(tensor_method_wrong_type, cause="no overload of aten::view accepts (Tensor, str, str)"),
    Rejected(list_method_unknown, cause="List[int] has no method 'first'"),
    Rejected(user_too_many_arguments, cause="scale() takes 2 positional argument(s) but 3"),
    Rejected(user_missing_argument, cause="scale() is missing the argument 'factor'"),
    Rejected(user_unknown_keyword, cause="scale() got an unexpected keyword argument 'bias'"),
    Rejected(user_wrong_argument_type, cause="argument 'factor' of scale() is expected to be float"),
    Rejected(calling_a_number, cause="this value is not callable"),
    Rejected(factorial, cause="factorial calls itself"),
    Rejected(is_even, cause="is_even calls itself", where=is_odd, caller=is_even),
]
