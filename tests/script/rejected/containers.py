"""Containers: lists, tuples and dicts used outside their static types; sets."""

# ruff: noqa: UP006, UP035, F841

from typing import Dict, List, Tuple

from torch import Tensor

from ._rejected import Rejected


def heterogeneous_list(x: Tensor) -> int:
    items = [1, "two", x]  # error
    return len(items)


def heterogeneous_dict_values(x: Tensor) -> int:
    d = {"a": 1, "b": "two"}  # error
    return len(d)


def tuple_indexed_by_runtime_int(t: Tuple[int, str, Tensor], i: int) -> int:
    v = t[i]  # error
    return 0


def tuple_index_out_of_range(t: Tuple[int, int]) -> int:
    return t[2]  # error


def unpack_too_many(t: Tuple[int, int, int]) -> int:
    a, b = t  # error
    return a + b


def set_literal(x: Tensor) -> int:
    s = {1, 2, 3}  # error
    return len(s)


def set_comprehension(xs: List[int]) -> int:
    s = {v * 2 for v in xs}  # error
    return len(s)


def set_call(xs: List[int]) -> int:
    s = set(xs)  # error
    return len(s)


def starred_in_list_display(xs: List[int]) -> List[int]:
    return [0, *xs]  # error


def dict_unpacking_display(d: Dict[str, int]) -> Dict[str, int]:
    return {"z": 0, **d}  # error


def iterate_over_int(n: int) -> int:
    total = 0
    for i in n:  # error
        total += i
    return total


def list_of_wrong_annotation(x: Tensor) -> List[int]:
    xs: List[int] = [1, 2.5]  # error
    return xs


def dict_store_wrong_type(x: Tensor) -> Dict[str, int]:
    d: Dict[str, int] = {}
    d["a"] = x  # error
    return d


def list_store_wrong_type(xs: List[int]) -> List[int]:
    xs[0] = "zero"  # error
    return xs


REJECTED = [
    # TorchScript accepts these two, typing the container with a Union (and a warning).
    Rejected(heterogeneous_list, cause="list elements have different types (int and str)",
             torchscript=False),
    Rejected(heterogeneous_dict_values, cause="dict values have different types", torchscript=False),
    Rejected(tuple_indexed_by_runtime_int, cause="a tuple can only be indexed with an int constant"),
    Rejected(tuple_index_out_of_range, cause="tuple index 2 out of range"),
    Rejected(unpack_too_many, cause="cannot unpack 3 values into 2 targets"),
    Rejected(set_literal, cause="sets are not supported"),
    Rejected(set_comprehension, cause="set comprehensions are not supported"),
    Rejected(set_call, cause="set(...) cannot be called in compiled code"),
    Rejected(starred_in_list_display, cause="starred items in list displays are not supported"),
    Rejected(dict_unpacking_display, cause="`**` in dict displays is not supported"),
    Rejected(iterate_over_int, cause="cannot iterate over a value of type int"),
    Rejected(dict_store_wrong_type, cause="no overload of aten::_set_item accepts (Dict[str, int], str, Tensor)"),
    Rejected(list_store_wrong_type, cause="no overload of aten::_set_item accepts (List[int], int, str)"),
    Rejected(list_of_wrong_annotation, cause="a list element is expected to be int, but it is float"),
]
