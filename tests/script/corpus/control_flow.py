"""if/elif/else, while and for over every iterable TorchScript knows; short-circuit evaluation."""

# ruff: noqa: UP006, UP035

from typing import Dict, List, Tuple

import torch

from ._case import Case


def if_elif_else(x: int) -> str:
    if x < 0:
        s = "negative"
    elif x == 0:
        s = "zero"
    elif x < 10:
        s = "small"
    else:
        s = "large"
    return s


def nested_if(a: int, b: int) -> int:
    r = 0
    if a > 0:
        if b > 0:
            r = 1
        else:
            r = 2
    else:
        if b > 0:
            r = 3
    return r


def if_on_tensor(x: torch.Tensor) -> torch.Tensor:
    if x.sum() > 0:
        y = x * 2
    else:
        y = -x
    return y + 1


def if_without_else_pass(x: int) -> int:
    if x > 3:
        pass
    else:
        x = x + 100
    if x == 0:
        pass
    return x


def while_collatz(n: int) -> int:
    steps = 0
    while n != 1:
        if n % 2 == 0:
            n = n // 2
        else:
            n = 3 * n + 1
        steps += 1
    return steps


def while_tensor_condition(x: torch.Tensor) -> Tuple[torch.Tensor, int]:
    n = 0
    while bool(x.sum() < 100):
        x = x * 2
        n += 1
    return x, n


def while_implicit_tensor_bool(x: torch.Tensor) -> int:
    n = 0
    while x.max() > 1:
        x = x / 2
        n += 1
    return n


def for_range_forms(n: int, a: int, b: int) -> Tuple[List[int], List[int], List[int], List[int]]:
    r1: List[int] = []
    r2: List[int] = []
    r3: List[int] = []
    r4: List[int] = []
    for i in range(n):
        r1.append(i)
    for i in range(a, b):
        r2.append(i)
    for i in range(a, b, 3):
        r3.append(i)
    for i in range(b, a, -2):
        r4.append(i)
    return r1, r2, r3, r4


def for_over_list(xs: List[float]) -> float:
    total = 0.0
    for x in xs:
        total = total * 2.0 + x
    return total


def for_over_tuple(t: Tuple[int, int, int]) -> List[int]:
    out: List[int] = []
    for v in t:
        out.append(v * v)
    return out


def for_over_heterogeneous_tuple(t: Tuple[int, str, bool]) -> str:
    s = ""
    for v in t:
        s = s + str(v) + ";"
    return s


def for_over_dict(d: Dict[str, int]) -> Tuple[List[str], int, List[int]]:
    keys: List[str] = []
    for k in d:
        keys.append(k)
    total = 0
    for k, v in d.items():
        total += len(k) * v
    vals: List[int] = []
    for v in d.values():
        vals.append(v)
    for k in d.keys():
        vals.append(d[k] * 10)
    return keys, total, vals


def for_over_int_keyed_dict(d: Dict[int, str]) -> str:
    out = ""
    for k, v in d.items():
        out += v if k % 2 == 0 else v.upper()
    return out


def for_over_string(s: str) -> Tuple[int, str]:
    vowels = 0
    rev = ""
    for ch in s:
        if ch in "aeiou":
            vowels += 1
        rev = ch + rev
    return vowels, rev


def for_over_tensor_rows(x: torch.Tensor) -> Tuple[List[torch.Tensor], torch.Tensor]:
    rows: List[torch.Tensor] = []
    acc = torch.zeros(x.shape[1])
    for row in x:
        rows.append(row.sum())
        acc = acc + row
    return rows, acc


def for_enumerate(xs: List[str]) -> Tuple[List[int], str]:
    idx: List[int] = []
    out = ""
    for i, s in enumerate(xs):
        idx.append(i)
        out += str(i) + s
    for i, s in enumerate(xs, 10):
        idx.append(i * 100 + len(s))
    return idx, out


def for_zip(a: List[int], b: List[float], c: List[str]) -> Tuple[List[float], str]:
    out: List[float] = []
    for x, y in zip(a, b):
        out.append(x * y)
    s = ""
    for x, y, z in zip(a, b, c):
        s += z + str(x + y)
    return out, s


def nested_loops(n: int) -> List[Tuple[int, int]]:
    pairs: List[Tuple[int, int]] = []
    for i in range(n):
        j = 0
        while j < i:
            pairs.append((i, j))
            j += 1
    return pairs


def loop_variable_after_loop(n: int) -> int:
    i = -1
    for i in range(n):  # noqa: B007 - the loop variable is read after the loop
        pass
    return i


def _note(log: List[int], value: int, result: bool) -> bool:
    log.append(value)
    return result


def short_circuit_order(a: bool, b: bool) -> List[int]:
    log: List[int] = []
    if _note(log, 1, a) and _note(log, 2, b):
        log.append(10)
    if _note(log, 3, a) or _note(log, 4, b):
        log.append(20)
    c = _note(log, 5, b) or _note(log, 6, a) and _note(log, 7, b)
    if c:
        log.append(30)
    return log


def conditional_expression_lazy(xs: List[int]) -> int:
    first = xs[0] if len(xs) > 0 else -1
    last = xs[len(xs) - 1] if len(xs) > 0 else -1
    return first * 1000 + last


CASES = [
    Case(if_elif_else, [(-5,), (0,), (7,), (42,)]),
    Case(nested_if, [(1, 1), (1, -1), (-1, 1), (-1, -1)]),
    Case(if_on_tensor, [(torch.arange(3.0),), (torch.arange(-3.0, 0.0),)]),
    Case(if_without_else_pass, [(5,), (1,), (-100,)]),
    Case(while_collatz, [(1,), (6,), (27,)]),
    Case(while_tensor_condition, [(torch.ones(3),), (torch.full((2,), 60.0),)]),
    Case(while_implicit_tensor_bool, [(torch.tensor([10.0, 3.0]),), (torch.tensor([0.5]),)]),
    Case(for_range_forms, [(4, 2, 11), (0, 5, 5), (1, -3, 4)]),
    Case(for_over_list, [([1.0, 0.5, 0.25],), ([],)]),
    Case(for_over_tuple, [((1, 2, 3),), ((-1, 0, 5),)]),
    Case(for_over_heterogeneous_tuple, [((1, "a", True),), ((-7, "", False),)]),
    Case(for_over_dict, [({"a": 1, "bb": 2, "ccc": 3},), ({},)]),
    Case(for_over_int_keyed_dict, [({1: "a", 2: "b", 3: "c"},), ({10: "x"},)]),
    Case(for_over_string, [("education",), ("",), ("xyz",)]),
    Case(for_over_tensor_rows, [(torch.arange(6.0).reshape(3, 2),), (torch.ones(1, 4),)]),
    Case(for_enumerate, [(["a", "b", "c"],), ([],)]),
    Case(for_zip, [([1, 2, 3], [0.5, 1.5], ["x", "y", "z"]), ([], [1.0], ["q"])]),
    Case(nested_loops, [(4,), (1,)]),
    Case(loop_variable_after_loop, [(3,), (0,)]),
    Case(short_circuit_order, [(True, True), (True, False), (False, True), (False, False)]),
    Case(conditional_expression_lazy, [([3, 4, 5],), ([],)]),
]
