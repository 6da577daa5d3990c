"""Names: undefined, defined on one path only, used before assignment, not usable in compiled code."""

# ruff: noqa: F821, F841

import math
import random

from torch import Tensor

from ._rejected import Rejected


def undefined_name(x: Tensor) -> Tensor:
    return x + undefined_thing  # error


def misspelled_local(x: Tensor) -> Tensor:
    result = x * 2
    return reslut  # error


def defined_in_one_branch(x: Tensor, flag: bool) -> Tensor:
    if flag:
        y = x + 1
    return y  # error


def defined_in_else_only(x: Tensor, flag: bool) -> Tensor:
    if flag:
        pass
    else:
        y = x
    return y * 2  # error


def first_assigned_in_for_loop(x: Tensor, n: int) -> Tensor:
    for i in range(n):
        y = x * i
    return y  # error


def first_assigned_in_while_loop(x: Tensor, n: int) -> Tensor:
    while n > 0:
        y = x
        n -= 1
    return y  # error


def used_before_assignment(x: Tensor) -> Tensor:
    y = y + x  # error
    return y


def used_after_del(x: Tensor) -> Tensor:
    y = x + 1
    del y
    return y  # error


def missing_module_attribute(x: Tensor) -> Tensor:
    return x * math.tau_squared  # error


def python_builtin_open(x: Tensor) -> Tensor:
    f = open("weights.txt")  # error
    return x


def python_random_module(x: Tensor) -> Tensor:
    r = random.random()  # error
    return x * r


_TABLE = {"a": object()}


def unscriptable_global(x: Tensor) -> Tensor:
    t = _TABLE["a"]  # error
    return x


# Rejected with "'y' is first assigned inside a loop" until a compiler change of 2026-11-23; now `y`
# is carried through the loop from prim::Uninitialized and the function returns None when the
# loop does not run, although it is annotated `-> Tensor` (TorchScript: "undefined value y").
_LOOP_CARRIED = ("accepted: `y` is carried through the loop from prim::Uninitialized; with n=0 the "
                 "function returns None")

REJECTED = [
    Rejected(undefined_name, cause="undefined name 'undefined_thing'"),
    Rejected(misspelled_local, cause="undefined name 'reslut'"),
    Rejected(defined_in_one_branch, cause="'y' is not defined in the false branch"),
    Rejected(defined_in_else_only, cause="'y' is not defined in the true branch"),
    Rejected(first_assigned_in_for_loop, cause="'y' is first assigned inside a loop"),
    Rejected(first_assigned_in_while_loop, cause="'y' is first assigned inside a loop"),
    Rejected(used_before_assignment, cause="undefined name 'y'"),
    Rejected(used_after_del, cause="'y' was deleted"),
    Rejected(missing_module_attribute, cause="has no attribute 'tau_squared'"),
    Rejected(python_builtin_open, cause="the Python builtin open() is not supported"),
    Rejected(python_random_module, cause="Python's random module is not supported"),
    Rejected(unscriptable_global, cause="cannot subscript the Python value"),
]
