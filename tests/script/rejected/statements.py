"""Statements outside the compiled subset of Python."""

# ruff: noqa: F841

import contextlib

from torch import Tensor

from ._rejected import Rejected

_COUNTER = 0


def nested_def(x: Tensor) -> Tensor:
    def double(y: Tensor) -> Tensor:  # error
        return y * 2
    return double(x)


def class_in_function(x: Tensor) -> Tensor:
    class Box:  # error
        pass
    return x


def global_statement(x: Tensor) -> Tensor:
    global _COUNTER  # error
    return x


def _make_nonlocal():
    total = 0

    def nonlocal_statement(x: Tensor) -> Tensor:
        nonlocal total  # error
        return x
    return nonlocal_statement


nonlocal_statement = _make_nonlocal()


def import_in_function(x: Tensor) -> Tensor:
    import math  # error
    return x * math.pi


def from_import_in_function(x: Tensor) -> Tensor:
    from math import pi  # error
    return x * pi


def match_statement(x: Tensor, n: int) -> Tensor:
    match n:  # error
        case 0:
            return x
        case _:
            return x * n


def bare_raise(x: Tensor) -> Tensor:
    if x.sum() > 0:
        raise  # error
    return x


def try_except(x: Tensor) -> Tensor:
    try:  # error
        return x.inverse()
    except RuntimeError:
        return x


async def async_function(x: Tensor) -> Tensor:  # error
    return x


def generator(x: Tensor):
    yield x  # error


def with_python_context_manager(x: Tensor) -> Tensor:
    with contextlib.suppress(RuntimeError):  # error
        x = x + 1
    return x


def bytes_literal(x: Tensor) -> Tensor:
    tag = b"raw"  # error
    return x

def try_except_by_type(x: int) -> int:
    try:  # error
        if x < 0:
            raise ValueError("negative")
        return x * 2
    except ValueError:
        return -1


def try_finally(xs: list[str]) -> list[str]:
    try:  # error
        xs.append("body")
    finally:
        xs.append("finally")
    return xs


def tuple_of_generator(xs: list[int]) -> int:
    t = tuple(x * 2 for x in xs)  # error
    return len(t)


REJECTED = [
    Rejected(try_except_by_type, cause="try/except is not supported in compiled code: check the condition with `if`"),
    Rejected(try_finally, cause="try/except is not supported in compiled code"),
    Rejected(tuple_of_generator, cause="tuple() of a sequence whose length is only known at run time is not "
                                       "supported: use list(...) instead"),
    Rejected(nested_def, cause="nested function definitions are not supported"),
    Rejected(class_in_function, cause="classes must be defined at module level"),
    Rejected(global_statement, cause="`global` is not supported"),
    Rejected(nonlocal_statement, cause="`nonlocal` is not supported", id="nonlocal_statement"),
    Rejected(import_in_function, cause="import statements are not supported inside compiled code"),
    Rejected(from_import_in_function, cause="import statements are not supported inside compiled code"),
    Rejected(match_statement, cause="match statements are not supported"),
    Rejected(bare_raise, cause="a bare `raise` (re-raise) is not supported"),
    Rejected(try_except, cause="try/except is not supported"),
    Rejected(async_function, cause="async functions are not supported"),
    Rejected(generator, cause="Yield expressions are not supported"),
    Rejected(with_python_context_manager, cause="contextlib.suppress is not supported as a context manager"),
    Rejected(bytes_literal, cause="bytes literals are not supported"),
]
