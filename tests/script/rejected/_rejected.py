"""One program that must be rejected, and where and why."""

from __future__ import annotations

import inspect
from dataclasses import dataclass
from typing import Any, Optional, Union

import torch

MARKER = "# error"
CALL_MARKER = "# call"


@dataclass
class Rejected:
    """A program ``kiln.script`` must reject with a :class:`kiln.CompileError`.

    ``obj`` is what is compiled: a function (``kiln.script(obj)``), a script class
    (``kiln.script(obj)``, which compiles its ``__init__``) or an ``nn.Module`` subclass, which is
    its own zero-argument factory (``kiln.script(obj())``).

    ``at`` says which line the error must point at: a marker string (by default ``# error``) that
    ends exactly one line of the source of ``where`` (``obj`` unless given), or an int offset from
    the first line of that source.  ``cause`` must be a substring of ``CompileError.cause``.

    ``caller`` is, for errors found inside a called function (then ``where`` is the called
    function), the function whose call led there: the message must name it, with the line of its
    source that ends with ``# call``.  ``torchscript`` says
    whether ``torch.jit.script`` rejects the program too (checked where torch.jit works).
    ``xfail`` gives the reason when Kiln does not reject the program well today (the test is a
    strict xfail, so it starts failing once Kiln gets it right).
    """

    obj: Any
    at: Union[str, int] = MARKER
    cause: str = ""
    where: Any = None
    caller: Any = None
    torchscript: bool = True
    xfail: Optional[str] = None
    id: str = ""
    group: str = ""  # the module the entry comes from; set by the loader

    def __post_init__(self) -> None:
        if not self.cause:
            raise ValueError("a rejected program needs the expected cause")
        if not self.id:
            self.id = self.obj.__name__

    @property
    def is_module(self) -> bool:
        return isinstance(self.obj, type) and issubclass(self.obj, torch.nn.Module)

    def target(self) -> Any:
        """What to hand to ``kiln.script`` / ``torch.jit.script``."""
        return self.obj() if self.is_module else self.obj

    def location(self) -> tuple[str, int, str]:
        """The file, the 1-based line the error must point at, and that line's text."""
        return _find(self.where if self.where is not None else self.obj, self.at, self.id)

    def call_site(self) -> tuple[str, int, str]:
        """The file and line of the call in ``caller`` that leads to the error, and its text."""
        assert self.caller is not None
        return _find(self.caller, CALL_MARKER, self.id)


def _find(obj: Any, at: Union[str, int], what: str) -> tuple[str, int, str]:
    filename = inspect.getsourcefile(obj)
    lines, first = inspect.getsourcelines(obj)
    if isinstance(at, int):
        index = at
    else:
        hits = [i for i, text in enumerate(lines) if text.rstrip().endswith(at)]
        if len(hits) != 1:
            raise AssertionError(f"{what}: expected one line ending with {at!r} in the source of "
                                 f"{obj.__qualname__}, found {len(hits)}")
        index = hits[0]
    assert filename is not None
    return filename, first + index, lines[index]
