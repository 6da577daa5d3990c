"""Python where TorchScript's meaning differs from Python's (or which it rejects) in a feature of
its own documented language.  Kiln follows Python: these are ``torchscript=False`` cases, each
with a note saying what TorchScript does instead."""

# ruff: noqa: UP006, UP035

from typing import List, Optional, Tuple

import torch

from ._case import Case


def int_power(a: int, b: int) -> Tuple[int, int]:
    return a ** b, a ** 2


def round_to_int(x: float) -> Tuple[int, int]:
    return round(x), round(-x)


def round_ndigits(x: float) -> Tuple[float, float]:
    return round(x, 2), round(x * 100.0, -1)


def sorted_reverse(xs: List[int]) -> List[int]:
    return sorted(xs, reverse=True)


def starred_list_target(xs: List[int]) -> Tuple[int, List[int], int]:
    first, *middle, last = xs
    return first, middle, last


def str_of_float(x: float) -> Tuple[str, str, str]:
    return str(x), str(x * 10.0), f"{x / 3.0}"


def augmented_mod_floordiv(a: int) -> Tuple[int, int]:
    b = a
    a %= 7
    b //= 3
    return a, b


def nan_not_equal_itself(x: float) -> Tuple[bool, bool]:
    return x != x, x == x


def dtype_returned(x: torch.Tensor) -> Tuple[torch.dtype, torch.dtype]:
    return x.dtype, (x * 0.5).dtype


class _Tracker:
    def __init__(self, width: int):
        self.total = torch.zeros(width)
        self.last: Optional[torch.Tensor] = None

    def add(self, x: torch.Tensor) -> None:
        self.total = self.total + x
        self.last = x


def class_optional_field_annotated_none(x: torch.Tensor) -> Tuple[torch.Tensor, bool]:
    t = _Tracker(x.shape[0])
    before = t.last is None
    t.add(x)
    t.add(x * 2)
    last = t.last
    assert last is not None
    return t.total + last, before


CASES = [
    Case(int_power, [(3, 4), (-2, 3), (5, 0)], torchscript=False,
         note="TorchScript: int ** int is a float (81.0)"),
    Case(round_to_int, [(2.7,), (-0.2,), (2.5,)], torchscript=False,
         note="TorchScript: round(float) is a float, and ties round away from zero (round(2.5) == 3.0)"),
    Case(round_ndigits, [(3.14159,), (-2.675,)], torchscript=False,
         note="TorchScript rejects round(x, ndigits)"),
    Case(sorted_reverse, [([3, 1, 2],), ([],)], torchscript=False,
         note="TorchScript rejects sorted(..., reverse=True) (list.sort(reverse=True) works)"),
    Case(starred_list_target, [([1, 2, 3, 4],), ([1, 2],)], torchscript=False,
         note="TorchScript rejects a starred target unpacking a list"),
    Case(str_of_float, [(0.1,), (1.0,), (2.5,)], torchscript=False,
         note="TorchScript prints floats with 17 significant digits and '1.' for 1.0"),
    Case(augmented_mod_floordiv, [(10,), (-10,)], torchscript=False,
         note="TorchScript: int %= int gives a float; //= is rejected"),
    Case(nan_not_equal_itself, [(float("nan"),), (1.5,)], torchscript=False,
         note="TorchScript: x != x is False for a NaN float"),
    Case(dtype_returned, [(torch.arange(3.0),), (torch.arange(3),)], torchscript=False,
         note="TorchScript returns a dtype to Python as its ScalarType number (6), not a torch.dtype"),
    Case(class_optional_field_annotated_none, [(torch.arange(3.0),)], kind="class_fn", torchscript=False,
         note="TorchScript ignores `self.last: Optional[Tensor] = None` in a class and types the field NoneType"),
]
