"""Type errors: mismatched types, and Optional values used without refinement."""

# ruff: noqa: UP006, UP035, F841

from typing import Dict, List, Optional

import torch
from torch import Tensor

from ._rejected import Rejected


def optional_tensor_returned(x: Optional[Tensor]) -> Tensor:
    y = x
    return y  # error


def optional_tensor_as_argument(x: Tensor, mask: Optional[Tensor]) -> Tensor:
    return torch.where(mask, x, torch.zeros_like(x))  # error


def optional_tensor_arithmetic(x: Tensor, bias: Optional[Tensor]) -> Tensor:
    return x + bias  # error


def optional_int_arithmetic(n: Optional[int]) -> int:
    return n * 2  # error


def optional_refined_in_other_branch(x: Optional[Tensor]) -> Tensor:
    if x is None:
        return x  # error
    return x


def return_type_mismatch(x: int) -> str:
    return x  # error


def variable_changes_type_in_branch(x: Tensor, flag: bool) -> Tensor:
    y = 1
    if flag:
        y = "one"  # error
    return x


def branches_return_different_types(x: Tensor, flag: bool):
    if flag:
        return 1
    return "one"  # error


def conditional_expression_types(flag: bool) -> int:
    y = 1 if flag else "two"  # error
    return 0


def add_int_and_str(n: int) -> int:
    return n + "1"  # error


def compare_str_and_int(s: str, n: int) -> bool:
    return s < n  # error


def append_wrong_type(n: int) -> List[int]:
    xs: List[int] = []
    xs.append("n")  # error
    return xs


def dict_value_wrong_type(x: Tensor) -> Dict[str, int]:
    d: Dict[str, int] = {"a": x}  # error
    return d


def unsupported_annotation(x: set) -> int:  # error
    return 0


def optional_hint_names_the_variable(mask: Optional[Tensor]) -> Tensor:
    return mask  # error


def misspelled_tensor_attribute(x: Tensor) -> int:
    return x.shapee  # error


REJECTED = [
    Rejected(optional_tensor_returned, cause="refine it first with `if x is not None:`"),
    Rejected(optional_tensor_as_argument, cause="refine it"),
    Rejected(optional_tensor_arithmetic, cause="refine it"),
    Rejected(optional_int_arithmetic, cause="unsupported operand types for *: Optional[int] and int"),
    Rejected(optional_refined_in_other_branch, cause="the return value is expected to be Tensor"),
    Rejected(return_type_mismatch, cause="the return value is expected to be str, but it is int"),
    Rejected(variable_changes_type_in_branch, cause="variable 'y' previously had type int"),
    Rejected(branches_return_different_types, cause="returns int on one path and str"),
    Rejected(conditional_expression_types, cause="the two sides of the conditional expression have types int and str"),
    Rejected(add_int_and_str, cause="unsupported operand types for +: int and str"),
    Rejected(compare_str_and_int, cause="cannot compare str and int with <"),
    Rejected(append_wrong_type, cause="List[int] has no method 'append' taking (str)"),
    Rejected(dict_value_wrong_type, cause="a dict value is expected to be int, but it is Tensor"),
    Rejected(unsupported_annotation, cause="unsupported type annotation"),
    Rejected(optional_hint_names_the_variable, cause="refine it first with `if mask is not None:`"),
    Rejected(misspelled_tensor_attribute, cause="Tensor has no attribute or method 'shapee'"),
]
