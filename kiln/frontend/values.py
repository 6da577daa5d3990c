"""Python values that stand for IR values while a trace runs.

A traced size (``x.size(0)``), ``int(t)`` or ``t.item()`` must stay dynamic in the graph, yet
user code needs a real number.  :class:`TracedInt` and :class:`TracedFloat` are ``int`` and
``float`` subclasses: they behave as the number observed at trace time, and the tracer maps each
object to the IR value it came from.  Arithmetic on them records scalar operators; a comparison
in user code records a guard so that the trace raises -- instead of silently taking the other
branch -- when a later input disagrees.
"""

from __future__ import annotations

import operator
import threading
from collections.abc import Callable
from typing import Any, Optional, Protocol


class NumberRecorder(Protocol):
    def record_number_op(self, name: str, args: tuple[Any, ...], result: Any) -> Any: ...
    def record_comparison(self, name: str, args: tuple[Any, ...], result: bool) -> None: ...


_state = threading.local()


def active_recorder() -> Optional[NumberRecorder]:
    rec: Optional[NumberRecorder] = getattr(_state, "recorder", None)
    return rec


def set_recorder(rec: Optional[NumberRecorder]) -> None:
    _state.recorder = rec


def _arith(name: str, fn: Callable[[Any, Any], Any], reflected: bool = False) -> Callable[..., Any]:
    def method(self: Any, other: Any) -> Any:
        if not isinstance(other, (int, float)) or isinstance(other, bool):
            return NotImplemented
        a, b = (other, self) if reflected else (self, other)
        result = fn(_plain(a), _plain(b))
        rec = active_recorder()
        if rec is None:
            return result
        kind = "float" if isinstance(result, float) or isinstance(a, float) or isinstance(b, float) else "int"
        return rec.record_number_op(f"aten::{name}.{kind}", (a, b), result)
    return method


def _compare(name: str, fn: Callable[[Any, Any], bool]) -> Callable[..., Any]:
    def method(self: Any, other: Any) -> Any:
        if not isinstance(other, (int, float)):
            return NotImplemented
        result = fn(_plain(self), _plain(other))
        rec = active_recorder()
        if rec is not None:
            rec.record_comparison(name, (self, other), result)
        return result
    return method


def _plain(x: Any) -> Any:
    if isinstance(x, TracedInt):
        return int.__int__(x)
    if isinstance(x, TracedFloat):
        return float.__float__(x)
    return x


def _neg(self: Any) -> Any:
    result = -_plain(self)
    rec = active_recorder()
    kind = "float" if isinstance(result, float) else "int"
    return result if rec is None else rec.record_number_op(f"aten::neg.{kind}", (self,), result)


_ARITH = {"add": operator.add, "sub": operator.sub, "mul": operator.mul,
          "floordiv": operator.floordiv, "remainder": operator.mod, "div": operator.truediv}
_PY_NAMES = {"add": "add", "sub": "sub", "mul": "mul", "floordiv": "floordiv",
             "remainder": "mod", "div": "truediv"}
_CMP = {"eq": operator.eq, "ne": operator.ne, "lt": operator.lt, "gt": operator.gt,
        "le": operator.le, "ge": operator.ge}


def _install(cls: type) -> None:
    for name, fn in _ARITH.items():
        py = _PY_NAMES[name]
        setattr(cls, f"__{py}__", _arith(name, fn))
        setattr(cls, f"__r{py}__", _arith(name, fn, reflected=True))
    for name, fn in _CMP.items():
        setattr(cls, f"__{name}__", _compare(name, fn))
    setattr(cls, "__neg__", _neg)  # noqa: B010 -- installed like the other operators


class TracedInt(int):
    """An int observed during a trace; the tracer knows which IR value it is."""

    __hash__ = int.__hash__

    def __repr__(self) -> str:
        return int.__repr__(self)


class TracedFloat(float):
    """A float observed during a trace; the tracer knows which IR value it is."""

    __hash__ = float.__hash__

    def __repr__(self) -> str:
        return float.__repr__(self)


_install(TracedInt)
_install(TracedFloat)
