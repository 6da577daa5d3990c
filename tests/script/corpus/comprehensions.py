"""List and dict comprehensions, and the generator expressions TorchScript accepts (it treats a
generator expression passed to sum/any/all/min/max/list as a list comprehension).  Comprehension
``if`` filters, nested ``for`` clauses and ``tuple(genexp)`` are beyond TorchScript: see beyond_ts."""

# ruff: noqa: UP006, UP035

from typing import Dict, List, Tuple

import torch

from ._case import Case


def list_comp_range(n: int) -> List[int]:
    return [i * i for i in range(n)]


def list_comp_over_list_with_conditional_value(xs: List[int]) -> List[int]:
    return [x if x > 0 else -x * 10 for x in xs]


def list_comp_enumerate_zip(a: List[str], b: List[int]) -> Tuple[List[str], List[str]]:
    tagged = [str(i) + s for i, s in enumerate(a)]
    joined = [s + str(n) for s, n in zip(a, b)]
    return tagged, joined


def list_comp_over_tensor(x: torch.Tensor) -> List[torch.Tensor]:
    return [row * i for i, row in enumerate(x)]


def list_comp_tensor_stack(n: int) -> torch.Tensor:
    return torch.stack([torch.full((2,), float(i)) for i in range(n)])


def nested_list_comp(n: int) -> List[List[int]]:
    return [[i * j for j in range(i + 1)] for i in range(n)]


def list_comp_of_strings(words: List[str]) -> List[Tuple[str, int]]:
    return [(w.upper(), len(w)) for w in words]


def dict_comp_from_list(words: List[str]) -> Dict[str, int]:
    return {w: len(w) for w in words}


def dict_comp_from_items(d: Dict[str, int]) -> Dict[str, int]:
    return {k + "!": v * 2 for k, v in d.items()}


def dict_comp_int_keys(n: int) -> Dict[int, str]:
    return {i: str(i * i) for i in range(n)}


def genexp_in_sum_any_all(xs: List[int]) -> Tuple[int, bool, bool]:
    return sum(x * x for x in xs), any(x > 3 for x in xs), all(x > 0 for x in xs)


def genexp_in_min_max_list(xs: List[float]) -> Tuple[float, float, List[float]]:
    return min(x - 1.0 for x in xs), max(x * 2.0 for x in xs), list(x / 2.0 for x in xs)


def comprehension_scoping(xs: List[int]) -> Tuple[List[int], int]:
    x = 100
    ys = [x + 1 for x in xs]
    return ys, x


CASES = [
    Case(list_comp_range, [(5,), (0,)]),
    Case(list_comp_over_list_with_conditional_value, [([1, -2, 3],), ([],)]),
    Case(list_comp_enumerate_zip, [(["a", "b"], [1, 2, 3]), ([], [])]),
    Case(list_comp_over_tensor, [(torch.arange(6.0).view(3, 2),), (torch.ones(1, 3),)]),
    Case(list_comp_tensor_stack, [(3,), (1,)]),
    Case(nested_list_comp, [(3,), (0,)]),
    Case(list_comp_of_strings, [(["ab", "c"],), ([],)]),
    Case(dict_comp_from_list, [(["one", "three"],), ([],)]),
    Case(dict_comp_from_items, [({"a": 1, "b": 2},), ({},)]),
    Case(dict_comp_int_keys, [(4,), (0,)]),
    Case(genexp_in_sum_any_all, [([1, 2, 5],), ([],), ([-1, 0],)]),
    Case(genexp_in_min_max_list, [([1.0, 4.5, -2.0],), ([0.25],)]),
    Case(comprehension_scoping, [([1, 2],), ([],)]),
]
