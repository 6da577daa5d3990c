"""Calls: plain helper functions compiled recursively, default and keyword arguments, fork/wait
parallelism and script_if_tracing helpers."""

# ruff: noqa: UP006, UP035

from typing import List, Tuple

import torch
import torch.nn.functional as F

from ._case import Case


def _square(x: int) -> int:
    return x * x


def _sum_of_squares(xs: List[int]) -> int:
    total = 0
    for x in xs:
        total += _square(x)
    return total


def helper_chain(xs: List[int]) -> Tuple[int, int]:
    return _sum_of_squares(xs), _square(len(xs))


def _scale_shift(x: torch.Tensor, scale: float = 2.0, shift: float = 0.0) -> torch.Tensor:
    return x * scale + shift


def default_and_keyword_args(x: torch.Tensor) -> Tuple[torch.Tensor, torch.Tensor, torch.Tensor, torch.Tensor]:
    return _scale_shift(x), _scale_shift(x, 3.0), _scale_shift(x, shift=1.0), _scale_shift(x, shift=-1.0, scale=0.5)


def _min_max(xs: List[float]) -> Tuple[float, float]:
    lo = xs[0]
    hi = xs[0]
    for x in xs:
        lo = min(lo, x)
        hi = max(hi, x)
    return lo, hi


def helper_returns_tuple(xs: List[float]) -> float:
    lo, hi = _min_max(xs)
    return hi - lo


def _append_squares(out: List[int], n: int) -> None:
    for i in range(n):
        out.append(i * i)


def helper_mutates_argument(n: int) -> List[int]:
    out: List[int] = [-1]
    _append_squares(out, n)
    _append_squares(out, 2)
    return out


def _block(x: torch.Tensor, w: torch.Tensor) -> torch.Tensor:
    return F.relu(F.linear(x, w)) + x


def helper_with_tensors(x: torch.Tensor, w: torch.Tensor, depth: int) -> torch.Tensor:
    for _ in range(depth):
        x = _block(x, w)
    return x


def _slow_double(x: torch.Tensor, k: int) -> torch.Tensor:
    return x * 2 + k


def fork_wait_helper(x: torch.Tensor) -> torch.Tensor:
    fut = torch.jit.fork(_slow_double, x, 1)
    y = x - 1
    return torch.jit.wait(fut) + y


def fork_many(x: torch.Tensor, n: int) -> torch.Tensor:
    futures: List[torch.jit.Future[torch.Tensor]] = []
    for i in range(n):
        futures.append(torch.jit.fork(_slow_double, x, i))
    results: List[torch.Tensor] = []
    for fut in futures:
        results.append(torch.jit.wait(fut))
    return torch.stack(results)


def fork_torch_op(x: torch.Tensor) -> torch.Tensor:
    fut = torch.jit.fork(torch.neg, x)
    return torch.jit.wait(fut) * 3


@torch.jit.script_if_tracing
def _traced_helper(x: torch.Tensor, n: int) -> torch.Tensor:
    for _ in range(n):
        x = x + x.mean()
    return x


def calls_script_if_tracing(x: torch.Tensor, n: int) -> torch.Tensor:
    return _traced_helper(x, n) * 2


CASES = [
    Case(helper_chain, [([1, 2, 3],), ([],)]),
    Case(default_and_keyword_args, [(torch.arange(3.0),), (torch.ones(2, 2),)]),
    Case(helper_returns_tuple, [([3.0, -1.5, 2.0],), ([4.0],)]),
    Case(helper_mutates_argument, [(3,), (0,)]),
    Case(helper_with_tensors, [(torch.arange(4.0).view(2, 2) / 4, torch.eye(2) * 0.5, 2), (torch.ones(1, 2), torch.ones(2, 2), 0)]),
    Case(fork_wait_helper, [(torch.arange(3.0),), (torch.ones(2, 2),)]),
    Case(fork_many, [(torch.arange(3.0), 3), (torch.ones(1), 1)]),
    Case(fork_torch_op, [(torch.arange(3.0),)]),
    Case(calls_script_if_tracing, [(torch.arange(3.0), 2), (torch.ones(2), 0)]),
]
