"""Beyond TorchScript: Python that ``torch.jit.script`` rejects and Kiln compiles.

Lambdas, ``*args``/``**kwargs`` helpers, generator expressions TorchScript cannot treat as a list
comprehension, module inheritance with ``super()`` calls, comprehension ``if`` filters (and
several ``for`` clauses), ``del`` of a slice, try/except, and format specs in f-strings.
(TorchScript itself supports ``del name``, ``del lst[i]`` and ``del d[k]``: those are ordinary
cases in containers.py.)
"""

# ruff: noqa: UP006, UP035

from typing import Dict, List, Tuple

import torch
from torch import nn

from ._case import Case

# -- lambdas --------------------------------------------------------------------------------------


def lambda_assigned_and_called(a: int, b: int) -> int:
    f = lambda x: x * 2 + 1  # noqa: E731 - the lambda is the feature under test
    return f(a) + f(b) * 10


def lambda_sort_key(words: List[str]) -> List[str]:
    return sorted(words, key=lambda w: len(w))


def lambda_max_key(pairs: List[Tuple[str, int]]) -> str:
    best = max(pairs, key=lambda p: p[1])
    return best[0]


def lambda_captures_local(xs: List[int], k: int) -> List[int]:
    add_k = lambda v: v + k  # noqa: E731
    return [add_k(x) for x in xs]


def lambda_on_tensors(x: torch.Tensor) -> torch.Tensor:
    act = lambda t: t.relu() * 2  # noqa: E731
    return act(x) + act(-x)


# -- *args / **kwargs -----------------------------------------------------------------------------


def _total(*args: int) -> int:
    s = 0
    for a in args:
        s += a
    return s


def star_args_helper(a: int, b: int) -> Tuple[int, int, int]:
    return _total(), _total(a), _total(a, b, 100)


def _describe(**kwargs: int) -> str:
    out = ""
    for k, v in kwargs.items():
        out += k + "=" + str(v) + ";"
    return out


def star_kwargs_helper(n: int) -> Tuple[str, str]:
    return _describe(), _describe(width=n, height=n * 2)


def _combine(x: torch.Tensor, *scales: float, bias: float = 0.0) -> torch.Tensor:
    for s in scales:
        x = x * s
    return x + bias


def star_args_and_keyword_only(x: torch.Tensor) -> Tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    return _combine(x), _combine(x, 2.0, 3.0), _combine(x, 0.5, bias=1.0)


def _forward_all(*args: int, **kwargs: int) -> int:
    return len(args) * 100 + len(kwargs) * 10 + _total(*args)


def star_args_forwarding(a: int) -> Tuple[int, int]:
    return _forward_all(a, a + 1, k=1), _forward_all()


# -- generator expressions ------------------------------------------------------------------------


def genexp_with_filter(xs: List[int]) -> Tuple[int, bool, int]:
    return sum(x for x in xs if x > 1), any(x < 0 for x in xs if x % 2 == 0), min(len(str(x)) for x in xs if x != 0)


def genexp_two_for_clauses(a: List[int], b: List[int]) -> int:
    return sum(x * y for x in a for y in b)


# -- module inheritance with super() --------------------------------------------------------------


class _Base(nn.Module):
    def __init__(self) -> None:
        super().__init__()
        self.fc = nn.Linear(3, 3)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.fc(x) + 1


class _Child(_Base):
    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return super().forward(x) * 2


def super_forward() -> nn.Module:
    return _Child()


class _Grandchild(_Child):
    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return super().forward(x) - x


def super_forward_two_levels() -> nn.Module:
    return _Grandchild()


class _Scaler(nn.Module):
    def scale(self, x: torch.Tensor) -> torch.Tensor:
        return x * 3

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.scale(x)


class _ShiftedScaler(_Scaler):
    def scale(self, x: torch.Tensor) -> torch.Tensor:
        return super().scale(x) + 10


def super_helper_method() -> nn.Module:
    return _ShiftedScaler()


# -- comprehension filters and several for clauses ------------------------------------------------


def list_comp_if_filter(xs: List[int]) -> List[int]:
    return [x * 2 for x in xs if x > 1]


def dict_comp_if_filter(d: Dict[str, int]) -> Dict[str, int]:
    return {k: v for k, v in d.items() if v % 2 == 0 if not k.startswith("_")}


def comp_two_for_clauses_and_filter(n: int) -> List[Tuple[int, int]]:
    return [(i, j) for i in range(n) for j in range(i) if (i + j) % 2 == 1]


# -- del of a slice -------------------------------------------------------------------------------


def del_list_slice(xs: List[int]) -> List[int]:
    del xs[1:3]
    return xs


def del_list_step_slice(xs: List[int]) -> List[int]:
    del xs[::2]
    return xs


def del_list_tail_slice(words: List[str], keep: int) -> Tuple[List[str], int]:
    del words[keep:]
    return words, len(words)


# -- format specs ---------------------------------------------------------------------------------


def fstring_format_specs(x: float, n: int) -> str:
    return f"{x:.3f}|{n:5d}|{n:<4}|{x:8.2f}|{n:03d}"


def fstring_specs_strings(s: str, x: float) -> str:
    return f"[{s:>6}][{s:^7}][{x:.1%}][{x:e}]"


def str_format_with_specs(x: float, n: int) -> str:
    # TorchScript accepts this but ignores the specs ('{:.2f}' comes back verbatim).
    return "{:.2f} / {:>4} / {:x}".format(x, n, n)  # noqa: UP032 - str.format is the feature under test


CASES = [
    Case(lambda_assigned_and_called, [(1, 2), (-3, 0)], torchscript=False),
    Case(lambda_sort_key, [(["ccc", "a", "bb", "dd"],), ([],)], torchscript=False),
    Case(lambda_max_key, [([("a", 1), ("b", 5), ("c", 3)],), ([("only", 0)],)], torchscript=False),
    Case(lambda_captures_local, [([1, 2, 3], 10), ([], 1)], torchscript=False),
    Case(lambda_on_tensors, [(torch.linspace(-2, 2, 5),)], torchscript=False),
    Case(star_args_helper, [(1, 2), (-5, 5)], torchscript=False),
    Case(star_kwargs_helper, [(3,), (0,)], torchscript=False),
    Case(star_args_and_keyword_only, [(torch.arange(3.0),)], torchscript=False),
    Case(star_args_forwarding, [(2,), (0,)], torchscript=False),
    Case(genexp_with_filter, [([1, 2, -4, 30],), ([5, 0, 3],)], torchscript=False),
    Case(genexp_two_for_clauses, [([1, 2], [10, 20, 30]), ([], [1])], torchscript=False),
    Case(super_forward, [(torch.arange(6.0).view(2, 3),)], kind="module", torchscript=False),
    Case(super_forward_two_levels, [(torch.arange(6.0).view(2, 3),), (torch.ones(1, 3),)], kind="module", torchscript=False),
    Case(super_helper_method, [(torch.arange(3.0),)], kind="module", torchscript=False),
    Case(list_comp_if_filter, [([1, 2, 3, 0],), ([],)], torchscript=False),
    Case(dict_comp_if_filter, [({"a": 2, "_b": 4, "c": 3, "d": 0},), ({},)], torchscript=False),
    Case(comp_two_for_clauses_and_filter, [(4,), (1,)], torchscript=False),
    Case(del_list_slice, [([1, 2, 3, 4, 5],), ([1],)], torchscript=False),
    Case(del_list_step_slice, [([1, 2, 3, 4, 5],), ([],)], torchscript=False),
    Case(del_list_tail_slice, [(["a", "b", "c", "d"], 2), (["a"], 5)], torchscript=False),
    Case(fstring_format_specs, [(3.14159, 42), (-0.5, -7)], torchscript=False),
    Case(fstring_specs_strings, [("ab", 0.125), ("", -2.5)], torchscript=False),
    Case(str_format_with_specs, [(2.0 / 3.0, 255), (-1.005, 7)], torchscript=False),
]
