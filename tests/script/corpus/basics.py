"""Basic types, arithmetic, comparisons, casts and assignment forms."""

# TorchScript documents its container types as typing.List/Dict/Tuple; the corpus spells them so.
# ruff: noqa: UP006, UP035

from typing import Dict, List, Optional, Tuple

import torch

from ._case import Case


def int_arith(a: int, b: int) -> Tuple[int, int, int, int, int, float]:
    return a + b, a - b, a * b, a // b, a % b, a / b


def float_arith(a: float, b: float) -> Tuple[float, float, float, float, float, float]:
    return a + b, a - b, a * b, a / b, a // b, a % b


def mixed_arith(a: int, b: float) -> Tuple[float, float, float, bool]:
    c = a * b + a / 2 - b
    d = a + 1.5
    return c, d, b ** 2.0, a == 2.0


def unary_ops(a: int, b: float, c: bool) -> Tuple[int, float, bool, bool]:
    return -a, -b, not c, not -a


def bit_ops(a: int, b: int) -> Tuple[int, int, int, int, int]:
    return a & b, a | b, a ^ b, a << 2, a >> 1


def bool_logic(a: bool, b: bool) -> Tuple[bool, bool, bool, bool]:
    return a and b, a or b, not a, a != b


def comparison_chain(a: int, b: int, c: int) -> Tuple[bool, bool, bool]:
    return a < b < c, a <= b == c, a < b > c


def mixed_comparisons(a: int, b: float) -> Tuple[bool, bool, bool, bool]:
    return a < b, a >= b, a == b, 1 < b <= 3.5


def tensor_scalar_arith(x: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
    return x * 2 + 1.5 - y / 3 + (2 - x) * (x ** 2)


def int_tensor_arith(x: torch.Tensor) -> Tuple[torch.Tensor, torch.Tensor, torch.Tensor, torch.Tensor]:
    return x // 3, x % 3, x * 2.5, x + True


def unannotated(x, y):
    return x * y + 1


def type_comment(a, x):
    # type: (int, Tensor) -> Tensor
    return x * a + a


def type_comment_multi(xs, scale, name):
    # type: (List[int], float, str) -> Tuple[float, str]
    total = 0.0
    for v in xs:
        total += v * scale
    return total, name + "!"


def returns_none(x: int) -> None:
    y = x + 1
    y = y * 2


def tuple_unpack(t: Tuple[int, Tuple[str, float]]) -> Tuple[int, str, float]:
    a, (b, c) = t
    return a, b, c


def swap_values(a: int, b: int) -> Tuple[int, int]:
    a, b = b, a
    return a, b


def chained_assign(x: int) -> int:
    a = b = x * 2
    a += 1
    return a * 10 + b


def starred_tuple_target(t: Tuple[int, int, int, int]) -> Tuple[int, int, int]:
    first, *rest = t
    return first, len(rest), rest[-1]


def list_unpack(xs: List[int]) -> int:
    a, b, c = xs
    return a * 100 + b * 10 + c


def augmented_ints(a: int) -> int:
    a += 3
    a -= 1
    a *= 4
    a = a // 3
    a = a % 7
    return a


def augmented_floats(a: float) -> float:
    a += 0.5
    a *= 3.0
    a -= 1.0
    a /= 2.0
    return a


def augmented_tensor_alias(x: torch.Tensor) -> Tuple[torch.Tensor, torch.Tensor]:
    y = x
    y += 1
    y *= 2
    z = x + 0
    z -= 100
    return x, z


def augmented_list_alias(xs: List[int]) -> Tuple[List[int], List[int]]:
    ys = xs
    ys += [7]
    zs = xs + [8]
    zs += [9]
    return xs, zs


def annotated_assign(n: int) -> Tuple[List[int], Dict[str, float], Optional[int]]:
    xs: List[int] = []
    d: Dict[str, float] = {}
    best: Optional[int] = None
    for i in range(n):
        xs.append(i)
        d[str(i)] = i / 2
        best = i
    return xs, d, best


def conditional_expression(a: int, b: int) -> Tuple[int, str]:
    big = a if a > b else b
    word = "even" if big % 2 == 0 else "odd"
    return big, word


def casts(i: int, f: float, b: bool, s: str) -> Tuple[float, int, int, bool, bool, bool, str, str, int, float]:
    return float(i), int(f), int(b), bool(i), bool(f), bool(s), str(i), str(b), int(s), float(s + "5")


def int_of_negative_float(f: float) -> Tuple[int, int]:
    return int(f), int(-f)


CASES = [
    Case(int_arith, [(7, 2), (-7, 2), (9, -4)]),
    Case(float_arith, [(7.5, 2.0), (-7.5, 2.0), (0.25, -0.125)]),
    Case(mixed_arith, [(2, 0.5), (-3, 1.25)]),
    Case(unary_ops, [(3, 2.5, True), (-4, -0.5, False)]),
    Case(bit_ops, [(6, 3), (12, 10)]),
    Case(bool_logic, [(True, True), (True, False), (False, True), (False, False)]),
    Case(comparison_chain, [(1, 2, 3), (1, 3, 2), (2, 2, 2), (3, 2, 1)]),
    Case(mixed_comparisons, [(1, 1.5), (2, 2.0), (4, 3.5)]),
    Case(tensor_scalar_arith, [(torch.arange(4.0), torch.full((4,), 3.0)), (torch.linspace(-1, 1, 5), torch.ones(5))]),
    Case(int_tensor_arith, [(torch.arange(-4, 5),), (torch.tensor([[7, -7], [10, 0]]),)]),
    Case(unannotated, [(torch.arange(3.0), torch.full((3,), 2.0)), (torch.ones(2, 2), torch.eye(2))]),
    Case(type_comment, [(2, torch.arange(3.0)), (-1, torch.ones(2, 2))]),
    Case(type_comment_multi, [([1, 2, 3], 0.5, "sum"), ([], 2.0, "")]),
    Case(returns_none, [(1,), (-5,)]),
    Case(tuple_unpack, [((1, ("a", 2.5)),), ((-3, ("xyz", -0.5)),)]),
    Case(swap_values, [(1, 2), (5, -5)]),
    Case(chained_assign, [(3,), (-1,)]),
    Case(starred_tuple_target, [((1, 2, 3, 4),), ((9, 8, 7, 6),)]),
    Case(list_unpack, [([1, 2, 3],), ([9, 0, 5],)]),
    Case(augmented_ints, [(5,), (-11,), (0,)]),
    Case(augmented_floats, [(1.0,), (-2.25,)]),
    Case(augmented_tensor_alias, [(torch.arange(3.0),), (torch.zeros(2, 2),)]),
    Case(augmented_list_alias, [([1, 2],), ([],)]),
    Case(annotated_assign, [(3,), (0,)]),
    Case(conditional_expression, [(3, 8), (7, 2), (4, 4)]),
    Case(casts, [(3, 2.75, True, "12"), (0, -0.5, False, "-4")]),
    Case(int_of_negative_float, [(2.75,), (-0.5,)]),
]
