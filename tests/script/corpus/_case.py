"""One conformance program and the calls to make on it."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import Any, Optional, Union

KINDS = ("function", "module", "class_fn")


@dataclass
class Case:
    """A program of the conformance corpus.

    ``obj`` is a function (``kind="function"``), a function that uses script classes,
    NamedTuples or Enums defined in the same corpus module (``kind="class_fn"``; those are
    compiled recursively through the function), or a zero-argument factory that returns an
    ``nn.Module`` instance (``kind="module"``; ``method`` names the method to call).

    Each tuple of ``inputs`` is one call's positional arguments; the calls are made in order on
    one compiled object (so a module's state carries from one call to the next), on a deep copy
    of the arguments for every contender.

    ``torchscript=False`` marks a deliberate "beyond TorchScript" program: ``torch.jit.script``
    rejects it, Kiln accepts it.  ``raises`` is a substring of the message of the exception every
    call must raise (TorchScript wraps messages, so only a substring is checked).  ``tol`` is an
    ``(rtol, atol)`` pair for float results, used only where a tolerance is justified (``note``
    says why); otherwise floats compare exactly and tensors with ``assert_close``'s defaults.
    """

    obj: Union[Callable[..., Any], type]
    inputs: list[tuple[Any, ...]]
    kind: str = "function"
    torchscript: bool = True
    method: str = "forward"
    id: str = ""
    raises: Optional[str] = None
    tol: Optional[tuple[float, float]] = None
    note: str = ""
    kiln_gap: str = ""  # a program Kiln does not compile yet: its Kiln tests are strict xfails with this reason
    group: str = ""  # the corpus module the case comes from; set by the loader

    def __post_init__(self) -> None:
        if self.kind not in KINDS:
            raise ValueError(f"unknown case kind {self.kind!r}; expected one of {KINDS}")
        if not self.inputs:
            raise ValueError("a case needs at least one call")
        if not all(isinstance(args, tuple) for args in self.inputs):
            raise TypeError("each entry of inputs is a tuple of positional arguments")
        if not self.id:
            self.id = self.obj.__name__
