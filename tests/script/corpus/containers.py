"""Lists, tuples and dicts: literals, methods, subscripts, slices, membership and del."""

# ruff: noqa: UP006, UP035

from typing import Dict, List, Tuple

import torch

from ._case import Case

# -- lists --------------------------------------------------------------------------------------


def list_index_and_slice(xs: List[int]) -> Tuple[int, int, List[int], List[int], List[int], List[int], List[int]]:
    return xs[0], xs[-1], xs[1:], xs[:-1], xs[::2], xs[1:4:2], xs[-3:]


def list_append_extend_insert(xs: List[int]) -> List[int]:
    xs.append(10)
    xs.extend([20, 30])
    xs.insert(0, -1)
    xs.insert(2, 99)
    return xs


def list_pop_remove(xs: List[int]) -> Tuple[int, int, List[int]]:
    last = xs.pop()
    first = xs.pop(0)
    xs.remove(3)
    return last, first, xs


def list_index_count(xs: List[str]) -> Tuple[int, int, int]:
    return xs.index("b"), xs.count("a"), xs.count("zz")


def list_reverse_sort(xs: List[int]) -> Tuple[List[int], List[int], List[int], List[int]]:
    a = xs.copy()
    a.reverse()
    b = xs.copy()
    b.sort()
    c = sorted(xs)
    d = xs.copy()
    d.sort(reverse=True)
    return a, b, c, d


def list_sort_strings_floats(words: List[str], vals: List[float]) -> Tuple[List[str], List[float]]:
    words.sort()
    vals.sort()
    return words, vals


def list_copy_vs_alias(xs: List[int]) -> Tuple[List[int], List[int], List[int]]:
    alias = xs
    copied = xs.copy()
    alias.append(1)
    copied.append(2)
    return xs, alias, copied


def list_clear(xs: List[int]) -> Tuple[List[int], int]:
    n = len(xs)
    xs.clear()
    return xs, n


def list_setitem(xs: List[int]) -> List[int]:
    xs[0] = 100
    xs[-1] += 5
    xs[1] *= 3
    return xs


def list_concat_repeat_eq(a: List[int], b: List[int]) -> Tuple[List[int], List[int], bool, bool]:
    return a + b, a * 2, a == b, a != b


def list_membership(xs: List[int], x: int) -> Tuple[bool, bool]:
    return x in xs, x not in xs


def nested_lists(n: int) -> List[List[int]]:
    grid: List[List[int]] = []
    for i in range(n):
        row: List[int] = []
        for j in range(n):
            row.append(i * j)
        grid.append(row)
    grid[0].append(-1)
    return grid


def list_of_tensors(n: int) -> torch.Tensor:
    parts: List[torch.Tensor] = []
    for i in range(n):
        parts.append(torch.full((2,), float(i)))
    parts.append(torch.zeros(2))
    return torch.stack(parts) + torch.cat(parts).sum()


def del_list_item(xs: List[int], i: int) -> List[int]:
    del xs[i]
    return xs


# -- tuples -------------------------------------------------------------------------------------


def tuple_index_slice(t: Tuple[int, str, float, bool]) -> Tuple[str, Tuple[float, bool], int, bool]:
    return t[1], t[2:], t[-4], t[-1]


def tuple_membership_len(x: int) -> Tuple[bool, bool, int]:
    t = (1, 2, 3)
    return x in t, x not in (4, 5), len(t)


def tuple_of_lists(t: Tuple[List[int], List[int]]) -> Tuple[List[int], int]:
    a, b = t
    a.append(len(b))
    return a, sum(b)


# -- dicts --------------------------------------------------------------------------------------


def dict_literal_and_index(k: str) -> Tuple[int, int, Dict[str, int]]:
    d = {"a": 1, "b": 2}
    d["c"] = 3
    d["a"] += 10
    return d[k], len(d), d


def dict_get(d: Dict[str, int], k: str) -> Tuple[int, int]:
    return d.get(k, -1), d.get("a", 0)


def dict_keys_values_items(d: Dict[str, float]) -> Tuple[List[str], List[float], List[Tuple[str, float]]]:
    keys = list(d.keys())
    values = list(d.values())
    items: List[Tuple[str, float]] = []
    for k, v in d.items():
        items.append((k, v))
    return keys, values, items


def dict_pop_setdefault(d: Dict[str, int]) -> Tuple[int, int, int, Dict[str, int]]:
    a = d.pop("a")
    b = d.pop("missing", -1)
    c = d.setdefault("z", 26)
    d.setdefault("b", 1000)
    return a, b, c, d


def dict_update_copy_clear(d: Dict[str, int], e: Dict[str, int]) -> Tuple[Dict[str, int], Dict[str, int], int]:
    backup = d.copy()
    d.update(e)
    merged = d.copy()
    d.clear()
    return backup, merged, len(d)


def dict_membership(d: Dict[int, str], k: int) -> Tuple[bool, bool]:
    return k in d, k not in d


def dict_int_keys(n: int) -> Dict[int, List[int]]:
    d: Dict[int, List[int]] = {}
    for i in range(n):
        key = i % 3
        if key not in d:
            fresh: List[int] = []
            d[key] = fresh
        d[key].append(i)
    return d


def word_count(text: str) -> Dict[str, int]:
    counts: Dict[str, int] = {}
    for w in text.split():
        counts[w] = counts.get(w, 0) + 1
    return counts


def dict_of_tensors(x: torch.Tensor) -> Dict[str, torch.Tensor]:
    d: Dict[str, torch.Tensor] = {"x": x}
    d["double"] = x * 2
    d["sum"] = d["x"] + d["double"]
    return d


def del_dict_key(d: Dict[str, int], k: str) -> Dict[str, int]:
    del d[k]
    return d


def del_local_variable(x: int) -> int:
    y = x * 2
    z = y + 1
    del y
    return z


CASES = [
    Case(list_index_and_slice, [([1, 2, 3, 4, 5],), ([9, 8, 7],)]),
    Case(list_append_extend_insert, [([1, 2],), ([],)]),
    Case(list_pop_remove, [([1, 2, 3, 4],), ([3, 3, 9],)]),
    Case(list_index_count, [(["a", "b", "a"],), (["b"],)]),
    Case(list_reverse_sort, [([3, 1, 2],), ([],), ([5, -5, 0, 5],)]),
    Case(list_sort_strings_floats, [(["pear", "apple", "Zebra", "fig"], [2.5, -1.0, 0.25]), ([], [])]),
    Case(list_copy_vs_alias, [([5],), ([],)]),
    Case(list_clear, [([1, 2, 3],), ([],)]),
    Case(list_setitem, [([1, 2, 3],), ([0, 0],)]),
    Case(list_concat_repeat_eq, [([1, 2], [1, 2]), ([1], [2, 3])]),
    Case(list_membership, [([1, 2, 3], 2), ([1, 2, 3], 7)]),
    Case(nested_lists, [(3,), (1,)]),
    Case(list_of_tensors, [(3,), (0,)]),
    Case(del_list_item, [([1, 2, 3], 1), ([1, 2, 3], -1)]),
    Case(tuple_index_slice, [((1, "a", 2.5, True),), ((0, "", -1.0, False),)]),
    Case(tuple_membership_len, [(2,), (4,)]),
    Case(tuple_of_lists, [(([1], [2, 3]),), (([], []),)]),
    Case(dict_literal_and_index, [("a",), ("c",)]),
    Case(dict_get, [({"a": 1, "b": 2}, "b"), ({}, "b")]),
    Case(dict_keys_values_items, [({"x": 1.5, "a": -2.0},), ({},)]),
    Case(dict_pop_setdefault, [({"a": 1, "b": 2},), ({"a": 0, "z": 1},)]),
    Case(dict_update_copy_clear, [({"a": 1}, {"b": 2, "a": 3}), ({}, {})]),
    Case(dict_membership, [({1: "a"}, 1), ({1: "a"}, 2)]),
    Case(dict_int_keys, [(7,), (0,)]),
    Case(word_count, [("the cat and the hat",), ("",)]),
    Case(dict_of_tensors, [(torch.arange(3.0),), (torch.ones(2, 2),)]),
    Case(del_dict_key, [({"a": 1, "b": 2}, "a"), ({"a": 1, "b": 2}, "b")]),
    Case(del_dict_key, [({"a": 1}, "q")], id="del_dict_key_missing", raises="q"),
    Case(del_local_variable, [(3,), (-1,)]),
]
