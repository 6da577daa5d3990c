"""Script classes, NamedTuples and Enums used in ways compiled code does not allow.

Errors in a class's ``__init__`` are found by ``kiln.script(cls)``; errors in its other methods
when a compiled function calls them (methods are compiled where they are called).
"""

# ruff: noqa: UP006, UP035

from enum import Enum
from typing import List, NamedTuple

from torch import Tensor

from ._rejected import Rejected


class Counter:
    def __init__(self, start: int):
        self.count = start

    def bump(self) -> int:
        self.count += 1
        return self.count


def class_unknown_attribute(n: int) -> int:
    c = Counter(n)
    return c.total  # error


def class_unknown_method(n: int) -> int:
    c = Counter(n)
    return c.reset()  # error


def class_new_attribute_outside_init(n: int) -> int:
    c = Counter(n)
    c.limit = 10  # error
    return c.count


def class_attribute_wrong_type(n: int) -> int:
    c = Counter(n)
    c.count = "ten"  # error
    return 0


def class_constructor_wrong_arity(n: int) -> int:
    c = Counter(n, n)  # error
    return c.count


class Mixed:
    def __init__(self, flag: bool):
        if flag:
            self.value = 1
        else:
            self.value = "one"  # error


class BadMethod:
    def __init__(self):
        self.items: List[int] = []

    def add(self, x: Tensor) -> None:
        self.items.append(x)  # error


def class_method_body_error(x: Tensor) -> int:
    b = BadMethod()
    b.add(x)  # call
    return len(b.items)


class Pair(NamedTuple):
    left: int
    right: int


def namedtuple_missing_field(n: int) -> int:
    p = Pair(n)  # error
    return p.left


def namedtuple_unknown_field(n: int) -> int:
    p = Pair(n, n)
    return p.middle  # error


class Color(Enum):
    RED = 1
    GREEN = 2


def enum_called(n: int) -> int:
    c = Color(n)  # error
    return c.value


def enum_unknown_member(n: int) -> int:
    return Color.BLUE.value  # error


REJECTED = [
    Rejected(class_unknown_attribute, cause="Counter object has no attribute 'total'"),
    Rejected(class_unknown_method, cause="Counter object has no attribute 'reset'"),
    Rejected(class_new_attribute_outside_init, cause="attributes must be assigned in __init__"),
    Rejected(class_attribute_wrong_type, cause="attribute 'count' is expected to be int, but it is str"),
    Rejected(class_constructor_wrong_arity, cause="Counter.__init__() takes 2 positional argument(s) but 3"),
    Rejected(Mixed, cause="attribute 'value' is expected to be int, but it is str"),
    Rejected(class_method_body_error, cause="List[int] has no method 'append' taking (Tensor)",
             where=BadMethod, caller=class_method_body_error),
    Rejected(namedtuple_missing_field, cause="Pair() is missing the field 'right'"),
    Rejected(namedtuple_unknown_field, cause="Pair has no field 'middle'; its fields are left, right"),
    Rejected(enum_called, cause="enum members are accessed as attributes"),
    Rejected(enum_unknown_member, cause="has no attribute 'BLUE'"),
]
