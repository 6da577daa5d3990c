"""Optional, Union and Any, and their refinement by is None / is not None / isinstance."""

# ruff: noqa: UP006, UP035

from typing import Any, Dict, List, Optional, Tuple, Union

import torch

from ._case import Case


def optional_is_none_early_return(x: Optional[int]) -> int:
    if x is None:
        return -1
    y = x * 2
    return y + 1


def optional_is_not_none_else(x: Optional[str]) -> str:
    if x is not None:
        out = x.upper()
    else:
        out = "<none>"
    return out


def optional_assert_refines(x: Optional[int]) -> int:
    assert x is not None, "x is required"
    return x + 10


def optional_and_condition(x: Optional[int]) -> bool:
    return x is not None and x > 2


def optional_or_condition(x: Optional[int]) -> int:
    if x is None or x < 0:
        return 0
    return x


def optional_tensor_default(x: torch.Tensor, bias: Optional[torch.Tensor] = None) -> torch.Tensor:
    y = x * 2
    if bias is not None:
        y = y + bias
    return y


def optional_returned(xs: List[int], target: int) -> Optional[int]:
    for i, x in enumerate(xs):
        if x == target:
            return i
    return None


def optional_in_list(xs: List[Optional[int]]) -> Tuple[int, int]:
    total = 0
    missing = 0
    for x in xs:
        if x is None:
            missing += 1
        else:
            total += x
    return total, missing


def dict_get_optional(d: Dict[str, int], k: str) -> int:
    v = d.get(k)
    if v is None:
        return -100
    return v * 3


def optional_reassigned(n: int) -> int:
    best: Optional[int] = None
    for i in range(n):
        if best is None or i * i % 7 > best:
            best = i * i % 7
    if best is None:
        return -1
    return best


def union_isinstance(x: Union[int, str]) -> str:
    if isinstance(x, int):
        return "int:" + str(x + 1)
    return "str:" + x


def union_three_way(x: Union[int, float, str]) -> float:
    if isinstance(x, str):
        return float(len(x))
    elif isinstance(x, int):
        return float(x * 2)
    else:
        return x / 2.0


def union_tensor_or_list(x: Union[torch.Tensor, List[torch.Tensor]]) -> torch.Tensor:
    if isinstance(x, torch.Tensor):
        return x * 2
    return torch.stack(x).sum(0)


def union_with_none(x: Union[int, None, str]) -> int:
    if x is None:
        return 0
    if isinstance(x, str):
        return len(x)
    return x


def isinstance_tuple_of_types(x: Union[int, float, str]) -> bool:
    return isinstance(x, (int, float))


def union_assert_isinstance(x: Union[int, str]) -> int:
    assert isinstance(x, int), "expected an int"
    return x * 3


def any_refined(x: Any) -> int:
    if isinstance(x, int):
        return x + 1
    if isinstance(x, str):
        return len(x)
    return 0


def pep604_optional(x: int | None, y: list[int]) -> int:
    if x is None:
        return len(y)
    return x + len(y)


CASES = [
    Case(optional_is_none_early_return, [(None,), (4,)]),
    Case(optional_is_not_none_else, [("ab",), (None,)]),
    Case(optional_assert_refines, [(5,)]),
    Case(optional_assert_refines, [(None,)], id="optional_assert_refines_fails", raises="x is required"),
    Case(optional_and_condition, [(None,), (1,), (3,)]),
    Case(optional_or_condition, [(None,), (-3,), (8,)]),
    Case(optional_tensor_default, [(torch.arange(3.0),), (torch.arange(3.0), torch.ones(3)), (torch.ones(2), None)]),
    Case(optional_returned, [([4, 5, 6], 6), ([4, 5, 6], 1)]),
    Case(optional_in_list, [([1, None, 2, None],), ([],)]),
    Case(dict_get_optional, [({"a": 2}, "a"), ({"a": 2}, "b")]),
    Case(optional_reassigned, [(6,), (0,)]),
    Case(union_isinstance, [(3,), ("kiln",)]),
    Case(union_three_way, [("abc",), (4,), (3.0,)]),
    Case(union_tensor_or_list, [(torch.arange(3.0),), ([torch.ones(2), torch.arange(2.0)],)]),
    Case(union_with_none, [(None,), ("four",), (7,)]),
    Case(isinstance_tuple_of_types, [(1,), (2.5,), ("s",)]),
    Case(union_assert_isinstance, [(4,), (-1,)]),
    Case(union_assert_isinstance, [("four",)], id="union_assert_isinstance_fails", raises="expected an int"),
    Case(any_refined, [(3,), ("hello",), (2.5,)]),
    Case(pep604_optional, [(None, [1, 2]), (5, [])]),
]
