"""break, continue, return from anywhere, assert and raise."""

# ruff: noqa: UP006, UP035

from typing import List, Tuple

import torch

from ._case import Case


def find_first(xs: List[int], target: int) -> int:
    for i in range(len(xs)):
        if xs[i] == target:
            return i
    return -1


def while_true_break(n: int) -> int:
    i = 0
    while True:
        i += 1
        if i * i > n:
            break
    return i


def continue_odd_sum(xs: List[int]) -> Tuple[int, int]:
    total = 0
    skipped = 0
    for x in xs:
        if x % 2 == 0:
            skipped += 1
            continue
        total += x
    return total, skipped


def break_inner_only(n: int) -> List[int]:
    out: List[int] = []
    for i in range(n):
        for j in range(n):
            if j > i:
                break
            out.append(i * 10 + j)
    return out


def return_from_nested_if_in_loop(xs: List[int]) -> str:
    for x in xs:
        if x > 0:
            if x % 5 == 0:
                return "five-multiple " + str(x)
            elif x > 100:
                return "big " + str(x)
        else:
            if x < -10:
                return "very negative"
    return "none"


def return_in_both_branches(x: int) -> int:
    if x > 0:
        y = x * 2
        if y > 10:
            return y
    else:
        return -1
    return y + 1000


def break_over_tensor_rows(x: torch.Tensor) -> Tuple[int, torch.Tensor]:
    n = 0
    acc = torch.zeros(x.shape[1])
    for row in x:
        if bool(row.sum() < 0):
            break
        acc += row
        n += 1
    return n, acc


def continue_in_while(n: int) -> List[int]:
    out: List[int] = []
    i = 0
    while i < n:
        i += 1
        if i % 3 == 0:
            continue
        out.append(i)
    return out


def search_2d(grid: List[List[int]], target: int) -> Tuple[int, int]:
    for i, row in enumerate(grid):
        for j, v in enumerate(row):
            if v == target:
                return i, j
    return -1, -1


def break_and_continue_mix(xs: List[int]) -> Tuple[int, int]:
    seen = 0
    total = 0
    for x in xs:
        if x < 0:
            continue
        if x == 0:
            break
        seen += 1
        total += x
    return seen, total


def return_from_while(x: float) -> int:
    steps = 0
    while x > 1.0:
        x = x / 3.0
        steps += 1
        if steps >= 4:
            return -steps
    return steps


def assert_with_message(x: int) -> int:
    assert x >= 0, "x must be non-negative, got " + str(x)
    return x * 2


def raise_value_error(x: int) -> int:
    if x > 5:
        raise ValueError("value too large: " + str(x))
    return x


def raise_in_loop(xs: List[int]) -> int:
    total = 0
    for x in xs:
        if x == 0:
            raise RuntimeError(f"zero at position {total}")
        total += 1
    return total


def _check_shape(x: torch.Tensor) -> torch.Tensor:
    if x.dim() != 2:
        raise ValueError(f"expected a matrix, got {x.dim()} dims")
    return x


def raise_from_helper(x: torch.Tensor) -> torch.Tensor:
    return _check_shape(x).t()


def assert_tensor_condition(x: torch.Tensor) -> torch.Tensor:
    assert bool((x >= 0).all()), "inputs must be non-negative"
    return x.sqrt()


CASES = [
    Case(find_first, [([4, 5, 6], 5), ([4, 5, 6], 7), ([], 1)]),
    Case(while_true_break, [(0,), (10,), (100,)]),
    Case(continue_odd_sum, [([1, 2, 3, 4, 5],), ([2, 4],)]),
    Case(break_inner_only, [(3,), (0,)]),
    Case(return_from_nested_if_in_loop, [([1, 15],), ([1, 101],), ([-20],), ([1, 2],)]),
    Case(return_in_both_branches, [(7,), (2,), (-3,)]),
    Case(break_over_tensor_rows, [(torch.tensor([[1.0, 2.0], [-5.0, 1.0], [3.0, 3.0]]),), (torch.ones(2, 2),)]),
    Case(continue_in_while, [(7,), (0,)]),
    Case(search_2d, [([[1, 2], [3, 4]], 3), ([[1, 2], [3, 4]], 9)]),
    Case(break_and_continue_mix, [([3, -1, 4, 0, 5],), ([-2, -3],), ([1, 2],)]),
    Case(return_from_while, [(10.0,), (1000.0,), (0.5,)]),
    Case(assert_with_message, [(3,), (0,)]),
    Case(assert_with_message, [(-4,)], id="assert_with_message_fails", raises="x must be non-negative, got -4"),
    Case(raise_value_error, [(5,), (-3,)]),
    Case(raise_value_error, [(6,), (100,)], id="raise_value_error_raises", raises="value too large: "),
    Case(raise_in_loop, [([1, 2, 3],), ([],)]),
    Case(raise_in_loop, [([1, 2, 0, 4],)], id="raise_in_loop_raises", raises="zero at position 2"),
    Case(raise_from_helper, [(torch.arange(6.0).reshape(2, 3),)]),
    Case(raise_from_helper, [(torch.ones(3),)], id="raise_from_helper_raises", raises="expected a matrix, got 1 dims"),
    Case(assert_tensor_condition, [(torch.tensor([4.0, 9.0]),)]),
    Case(assert_tensor_condition, [(torch.tensor([4.0, -9.0]),)], id="assert_tensor_condition_fails",
         raises="inputs must be non-negative"),
]
