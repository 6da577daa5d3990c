"""Script classes, NamedTuples and Enums, used from compiled functions (compiled recursively)."""

# ruff: noqa: UP006, UP035

import math
from enum import Enum
from typing import List, NamedTuple, Optional, Tuple

import torch

from ._case import Case

# -- script classes -------------------------------------------------------------------------------


class Point:
    def __init__(self, x: float, y: float):
        self.x = x
        self.y = y

    def norm(self) -> float:
        return math.sqrt(self.x * self.x + self.y * self.y)

    def scaled(self, k: float) -> "Point":
        return Point(self.x * k, self.y * k)

    def __add__(self, other: "Point") -> "Point":
        return Point(self.x + other.x, self.y + other.y)

    @staticmethod
    def origin() -> "Point":
        return Point(0.0, 0.0)

    @property
    def total(self) -> float:
        return self.x + self.y


def point_methods(x: float, y: float) -> Tuple[float, float, float, float]:
    p = Point(x, y)
    q = p.scaled(2.0) + Point.origin() + Point(1.0, 1.0)
    return p.norm(), q.x, q.y, q.total


class Stack:
    def __init__(self):
        self.items: List[int] = []

    def push(self, v: int) -> None:
        self.items.append(v)

    def pop(self) -> int:
        return self.items.pop()

    def __len__(self) -> int:
        return len(self.items)

    def __getitem__(self, i: int) -> int:
        return self.items[i]

    def __contains__(self, v: int) -> bool:
        return v in self.items


def stack_operations(n: int) -> Tuple[int, int, bool, bool, List[int]]:
    s = Stack()
    for i in range(n):
        s.push(i * i)
    top = s.pop()
    return top, len(s), 4 in s, 9 in s, s.items


class Counter:
    def __init__(self, start: int):
        self.value = start
        self.history: List[int] = []

    def step(self, by: int) -> int:
        self.history.append(self.value)
        self.value += by
        return self.value


def _advance(c: Counter, times: int) -> None:
    for i in range(times):
        c.step(i)


def class_passed_to_helper(start: int, times: int) -> Tuple[int, List[int]]:
    c = Counter(start)
    _advance(c, times)
    _advance(c, 1)
    return c.value, c.history


class Accumulator:
    def __init__(self, width: int, last: Optional[torch.Tensor] = None):
        # (TorchScript ignores `self.last: Optional[Tensor] = None` in a class: it types the field
        # NoneType, so the Optional type comes in through the parameter.)
        self.total = torch.zeros(width)
        self.count = 0
        self.last = last

    def add(self, x: torch.Tensor) -> None:
        self.total = self.total + x
        self.count += 1
        self.last = x

    def mean(self) -> torch.Tensor:
        return self.total / max(self.count, 1)


def class_with_tensor_fields(x: torch.Tensor) -> Tuple[torch.Tensor, int, bool]:
    acc = Accumulator(x.shape[1])
    had_last = acc.last is not None
    for row in x:
        acc.add(row)
    return acc.mean(), acc.count, had_last


class Box:
    def __init__(self, lo: int, hi: int):
        self.lo = lo
        self.hi = hi

    def width(self) -> int:
        return self.hi - self.lo


class Shelf:
    def __init__(self):
        self.boxes: List[Box] = []

    def put(self, b: Box) -> None:
        self.boxes.append(b)

    def widest(self) -> int:
        best = -1
        for b in self.boxes:
            if b.width() > best:
                best = b.width()
        return best


def classes_in_list_and_composition(spans: List[Tuple[int, int]]) -> Tuple[int, int]:
    shelf = Shelf()
    for lo, hi in spans:
        shelf.put(Box(lo, hi))
    return len(shelf.boxes), shelf.widest()


# -- NamedTuple -----------------------------------------------------------------------------------


class Stats(NamedTuple):
    mean: float
    count: int
    label: str


def _stats(xs: List[float], label: str) -> Stats:
    return Stats(sum(xs) / max(len(xs), 1), len(xs), label)


def namedtuple_return(xs: List[float]) -> Stats:
    return _stats(xs, "n=" + str(len(xs)))


def namedtuple_fields_index_unpack(xs: List[float]) -> Tuple[float, int, str, int]:
    s = _stats(xs, "x")
    m, n, lab = s
    return s.mean + m, s[1] + n, s.label + lab, len(s)


class Pair(NamedTuple):
    left: torch.Tensor
    right: torch.Tensor


def namedtuple_of_tensors(x: torch.Tensor) -> Pair:
    p = Pair(x * 2, x - 1)
    return Pair(p.right, p.left + p[1])


# -- Enum -----------------------------------------------------------------------------------------


class Color(Enum):
    RED = 1
    GREEN = 2
    BLUE = 3


class Mode(Enum):
    FAST = "fast"
    SLOW = "slow"


def enum_compare_value_name(c: Color) -> Tuple[int, str, bool, bool]:
    return c.value, c.name, c == Color.GREEN, c != Color.RED


def enum_return(x: int) -> Color:
    if x > 0:
        return Color.RED
    elif x == 0:
        return Color.GREEN
    return Color.BLUE


def enum_iteration(limit: int) -> Tuple[int, List[str]]:
    total = 0
    names: List[str] = []
    for c in Color:
        if c.value <= limit:
            total += c.value
            names.append(c.name)
    return total, names


def enum_string_values(m: Mode, x: torch.Tensor) -> Tuple[torch.Tensor, str]:
    if m == Mode.FAST:
        return x * 2, m.value
    return x.cumsum(0), m.value


CASES = [
    Case(point_methods, [(3.0, 4.0), (-1.5, 0.5)], kind="class_fn"),
    Case(stack_operations, [(4,), (1,)], kind="class_fn"),
    Case(class_passed_to_helper, [(10, 3), (0, 0)], kind="class_fn"),
    Case(class_with_tensor_fields, [(torch.arange(6.0).view(3, 2),), (torch.ones(1, 4),)], kind="class_fn"),
    Case(classes_in_list_and_composition, [([(0, 3), (2, 9), (5, 6)],), ([],)], kind="class_fn"),
    Case(namedtuple_return, [([1.0, 2.0, 4.5],), ([],)], kind="class_fn"),
    Case(namedtuple_fields_index_unpack, [([1.0, 2.0],), ([0.5],)], kind="class_fn"),
    Case(namedtuple_of_tensors, [(torch.arange(3.0),), (torch.ones(2, 2),)], kind="class_fn"),
    Case(enum_compare_value_name, [(Color.RED,), (Color.GREEN,), (Color.BLUE,)], kind="class_fn"),
    Case(enum_return, [(5,), (0,), (-5,)], kind="class_fn"),
    Case(enum_iteration, [(2,), (0,), (3,)], kind="class_fn"),
    Case(enum_string_values, [(Mode.FAST, torch.arange(3.0)), (Mode.SLOW, torch.arange(3.0))], kind="class_fn"),
]
