"""Kiln's one error hierarchy.

Every rejection Kiln makes -- a bad call, a graph that fails verification, a trace that
diverges from eager execution, malformed IR text -- is a :class:`KilnError` subclass, so a
caller can catch one type.  Messages name the graph input, node or source line at fault.
"""

from __future__ import annotations


class KilnError(Exception):
    """Base class of every error Kiln raises on purpose."""


class IRError(KilnError):
    """A graph is malformed (raised by the verifier and by IR construction helpers)."""


class IRParseError(IRError):
    """IR text could not be parsed; the message names the line and column."""


class SchemaError(KilnError):
    """No operator overload matches a call, or an operator name is unknown."""


class TracingError(KilnError):
    """Tracing could not record a faithful graph for the given function or module."""


class TracingCheckError(TracingError):
    """``check_trace`` found that the traced graph disagrees with eager execution."""


class CompileError(KilnError):
    """``kiln.script`` / ``kiln.compile`` rejected a program.

    The message shows the file, line, source line and a caret, says what was expected and
    what was found, and -- inside a called function -- the chain of calls that led there.
    ``lineno`` is the 1-based line in ``filename``; ``cause`` is the bare reason."""

    def __init__(self, message: str, *, cause: str = "", filename: str = "",
                 lineno: int = 0) -> None:
        super().__init__(message)
        self.cause = cause or message
        self.filename = filename
        self.lineno = lineno


class InputError(KilnError, TypeError):
    """A graph was called with the wrong number or kinds of inputs."""


class KilnRuntimeError(KilnError, RuntimeError):
    """A running graph failed a check it carries (a trace guard, a list length, a raise)."""


class TracerWarning(UserWarning):
    """A trace baked a value that may change between calls; the message names the user's line."""


# -- archives (.pt) --------------------------------------------------------------------------
#
# Every rejection of an archive -- the zip container, a pickle, a tensor layout, a limit -- is a
# ModelFormatError.  Loading arbitrary bytes may raise only this tree (and CompileError for an
# archive's code/ that Kiln's compiler rejects); any other exception escaping ``kiln.load`` is a
# bug.  Messages name the record (``archive/data.pkl``) and, where it helps, the byte offset.

class ModelFormatError(KilnError, ValueError):
    """A ``.pt`` archive (or a part of one) is malformed or unsafe to load."""


class ArchiveError(ModelFormatError):
    """The zip container or its records are malformed (not a zip, truncated, ambiguous names...)."""


class PickleError(ModelFormatError):
    """A pickle record is malformed or uses something outside Kiln's allow-list."""


class TensorLayoutError(ModelFormatError):
    """A tensor's storage, sizes, strides or offset are inconsistent or out of bounds."""


class UnsupportedFeature(ModelFormatError):
    """The archive uses a format, version, opcode or dtype that Kiln does not load."""


class ResourceLimitExceeded(ModelFormatError):
    """Loading would exceed one of the configured caps (:class:`kiln.serialization.Limits`)."""
