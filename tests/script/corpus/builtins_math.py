"""Builtin functions and the math module."""

# ruff: noqa: UP006, UP035

import math
from typing import Dict, List, Tuple, Union

import torch

from ._case import Case


def len_of_everything(xs: List[int], d: Dict[str, int], s: str, t: torch.Tensor) -> Tuple[int, int, int, int]:
    return len(xs), len(d), len(s), len(t)


def min_max_builtin(a: int, b: int, xs: List[float]) -> Tuple[int, int, float, float, int, int]:
    return min(a, b), max(a, b), min(xs), max(xs), max(a, b, 0), min([a, b, 7])


def abs_builtin(i: int, f: float, t: torch.Tensor) -> Tuple[int, float, torch.Tensor]:
    return abs(i), abs(f), abs(t)


def sum_all_any(xs: List[int], flags: List[bool], fs: List[float]) -> Tuple[int, float, bool, bool]:
    return sum(xs), sum(fs), all(flags), any(flags)


def isinstance_checks(x: Union[int, List[int], str]) -> Tuple[bool, bool, bool]:
    return isinstance(x, int), isinstance(x, list), isinstance(x, str)


def round_divmod(x: float, a: int, b: int) -> Tuple[int, Tuple[int, int], Tuple[float, float]]:
    # int(round(x)): TorchScript's round returns a float (Python's an int); ties are avoided as
    # TorchScript rounds half away from zero, Python to even.
    return int(round(x)), divmod(a, b), divmod(x, 2.0)


def sorted_builtin(xs: List[int], words: List[str]) -> Tuple[List[int], List[str], List[int]]:
    ys = sorted(xs)
    return ys, sorted(words), xs


def enumerate_zip_range_builtins(xs: List[str]) -> Tuple[List[int], List[str]]:
    idx: List[int] = []
    pairs: List[str] = []
    for i, (a, b) in enumerate(zip(xs, xs[1:])):
        idx.append(i)
        pairs.append(a + b)
    for i in range(len(xs) - 1, -1, -1):
        idx.append(i)
    return idx, pairs


def print_and_return(x: int, s: str) -> int:
    print("value:", x, s)
    print(s)
    return x + 1


def math_functions(x: float) -> Tuple[float, int, int, float, float, float, float, float]:
    return math.sqrt(x), math.floor(x), math.ceil(x), math.log(x), math.exp(x), math.log10(x), math.fabs(-x), math.pow(x, 3.0)


def math_constants_and_predicates(x: float) -> Tuple[float, float, float, bool, bool, bool, float]:
    return math.pi * x, math.e, math.inf, math.isnan(x), math.isinf(x * math.inf), math.isfinite(x), math.tau


def math_trig_and_misc(x: float) -> Tuple[float, float, float, float, int, int, float, float]:
    return (math.sin(x), math.cos(x), math.atan2(x, 2.0), math.tanh(x), math.gcd(12, 18),
            math.factorial(5), math.copysign(2.0, -x), math.degrees(x))


def math_nan_handling(x: float) -> Tuple[bool, float, bool]:
    y = x * 0.0 if math.isinf(x) else x
    return math.isnan(y), max(y, 0.0) if not math.isnan(y) else -1.0, math.isinf(x)


def math_with_ints(n: int) -> Tuple[float, int, float]:
    return math.sqrt(n), math.floor(n / 3), math.log(n, 2.0)


CASES = [
    Case(len_of_everything, [([1, 2], {"a": 1}, "abc", torch.zeros(4, 2)), ([], {}, "", torch.zeros(1))]),
    Case(min_max_builtin, [(3, 9, [2.5, -1.0, 7.0]), (-1, -5, [0.0])]),
    Case(abs_builtin, [(-3, -2.5, torch.tensor([-1.0, 2.0])), (4, 0.5, torch.tensor([-7]))]),
    Case(sum_all_any, [([1, 2, 3], [True, False], [0.5, 0.25]), ([], [], [0.0]), ([-1], [True, True], [1.5])]),
    Case(isinstance_checks, [(3,), ([1, 2],), ("s",)]),
    Case(round_divmod, [(2.7, 7, 2), (-2.2, -7, 2), (0.4, 9, -4)]),
    Case(sorted_builtin, [([3, 1, 2], ["b", "a", "c"]), ([], [])]),
    Case(enumerate_zip_range_builtins, [(["a", "b", "c"],), (["x"],)]),
    Case(print_and_return, [(1, "one"), (-1, "")]),
    Case(math_functions, [(2.0,), (10.5,)]),
    Case(math_constants_and_predicates, [(1.0,), (-0.5,)]),
    Case(math_trig_and_misc, [(0.5,), (-1.25,)]),
    Case(math_nan_handling, [(math.inf,), (-3.0,), (math.nan,)]),
    Case(math_with_ints, [(16,), (7,)]),
]
