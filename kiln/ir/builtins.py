"""TorchScript's builtin operators on non-tensor values, registered under TorchScript's names.

A script compiler lowers ``a + b`` on ints, ``len(s)``, ``l.append(x)``, ``d.get(k)`` or
``math.sqrt(x)`` to these operators, and archives written by ``torch.jit.save`` call them by
name (``torch.add(a, b)``, ``torch.append(l, x)``), so their qualified names, overload names
and schemas are TorchScript's own.  Schemas keep TorchScript's type variables (``t``,
``tVal``); a mutating operator says so with an alias annotation (``t[](a!)``), which makes
the registry record the write and the operator impure.

The operators live in three modules, each a set of tables:

* this one: the registration helper and the ``prim::`` builtins (``Print``,
  ``Uninitialized``, ``unchecked_cast``, tensor attribute reads such as ``prim::is_cuda``) and
  ``aten::warn``;
* :mod:`kiln.ir.builtins_scalar`: int/float/complex/bool arithmetic, comparisons, ``math``
  functions and conversions;
* :mod:`kiln.ir.builtins_containers`: list, dict and str operators.

Semantics are Python's, as everywhere in Kiln where TorchScript's meaning departs from
Python's: Python's results and Python's exceptions (``1 / 0`` raises ZeroDivisionError,
``math.sqrt(-1.0)`` ValueError, ints do not wrap at 64 bits, ``str(0.1)`` is ``"0.1"``,
``d.popitem()`` takes the last item), with the result typed as the schema says
(``aten::round.float`` gives a float, ``aten::pow.int`` a float).  Where a schema fixes a
TorchScript convention, the convention holds: ``aten::find``'s default ``end=-1`` means the
end of the string, and so does any negative ``end`` (``-2`` is one before the end).
"""

from __future__ import annotations

import builtins
import importlib
import warnings
from collections.abc import Callable
from typing import Any, Optional

import torch

from kiln.ir.ops import OpInfo, parse_schema, registry

Emit = Callable[[Any, list[str]], str]

REGISTERED: list[OpInfo] = []   # every overload registered by these modules, in order


def binding_of(fn: Callable[..., Any]) -> str:
    """A dotted path that names ``fn`` (``kiln.ir.builtins_scalar.div``, ``math.sqrt``,
    ``builtins.str.lower``), or "" when there is none; generated code names its cells after it."""
    owner: Any = getattr(fn, "__objclass__", None)
    owner_name = str(getattr(owner, "__name__", ""))
    if owner is not None and getattr(builtins, owner_name, None) is owner:
        path = f"builtins.{owner_name}.{getattr(fn, '__name__', '')}"
    else:
        module = getattr(fn, "__module__", None) or "builtins"
        path = f"{module}.{getattr(fn, '__qualname__', '')}"
    return path if resolve_binding(path) is fn else ""


def resolve_binding(path: str) -> Any:
    """The object a binding path names (None when it names nothing)."""
    parts = path.split(".")
    for cut in range(len(parts) - 1, 0, -1):
        try:
            obj: Any = importlib.import_module(".".join(parts[:cut]))
        except ImportError:
            continue
        for attr in parts[cut:]:
            obj = getattr(obj, attr, None)
        return obj
    return None


def builtin(schema: str, impl: Callable[..., Any], emit: Optional[Emit] = None, *,
            side_effects: bool = False) -> OpInfo:
    """Register one overload.  ``impl`` takes the node's inputs positionally; its Python
    defaults are the schema's, since a node may leave trailing defaulted inputs out."""
    s = parse_schema(schema)
    if emit is not None and not s.is_vararg and any(a.has_default for a in s.arguments):
        emit = _with_defaults(emit, [repr(a.default) for a in s.arguments])
    info = registry.register(OpInfo(s, impl, (), side_effects=side_effects,
                                    binding_name=binding_of(impl), emit=emit))
    REGISTERED.append(info)
    return info


def _with_defaults(emit: Emit, defaults: list[str]) -> Emit:
    """``emit`` given every argument: the ones a node left out are the schema defaults."""
    return lambda n, a: emit(n, a + defaults[len(a):])


def named(fn: Any, name: str, module: str) -> Callable[..., Any]:
    """Give a generated function a module-level name, so that its binding resolves."""
    fn.__name__ = fn.__qualname__ = name
    fn.__module__ = module
    setattr(importlib.import_module(module), name, fn)
    result: Callable[..., Any] = fn
    return result


def call(fn: str) -> Emit:
    """Emit ``fn(a, b, ...)`` (a builtin or ``math.`` function)."""
    return lambda n, a: f"{fn}({', '.join(a)})"


def method(name: str) -> Emit:
    """Emit ``a0.name(a1, ...)``."""
    return lambda n, a: f"{a[0]}.{name}({', '.join(a[1:])})"


# -- prim:: builtins and warnings --------------------------------------------------------------

def uninitialized() -> None:
    """The placeholder TorchScript puts where a variable has no value yet (never read)."""
    return None


def unchecked_cast(x: Any) -> Any:
    return x


def warn(message: str, stacklevel: int = 2, *, warn_id: int = 0) -> None:
    """``warnings.warn(message)``; ``warn_id`` is the attribute TorchScript's node carries."""
    warnings.warn(message, UserWarning, stacklevel=stacklevel)


builtin("prim::Print(...) -> ()", print, call("print"), side_effects=True)
builtin("prim::Uninitialized() -> Any", uninitialized, lambda n, a: "None")
builtin("prim::unchecked_cast(t x) -> t", unchecked_cast, lambda n, a: a[0])
builtin("prim::unchecked_unwrap_optional(t(a)? optional) -> t(a)", unchecked_cast, lambda n, a: a[0])
builtin("aten::warn(str message, int stacklevel=2) -> ()", warn, side_effects=True)
# Global autograd/autocast state: reads and writes are impure, so passes never move or fold them.
builtin("aten::is_grad_enabled() -> bool", torch.is_grad_enabled, side_effects=True)
builtin("aten::set_grad_enabled(bool val) -> ()", torch.set_grad_enabled, side_effects=True)
builtin("aten::is_autocast_enabled() -> bool", torch.is_autocast_enabled, side_effects=True)
builtin("aten::is_autocast_cpu_enabled() -> bool", torch.is_autocast_cpu_enabled, side_effects=True)
builtin("aten::get_autocast_dtype(str device_type) -> ScalarType", torch.get_autocast_dtype,
        side_effects=True)
builtin("aten::manual_seed(int seed) -> ()", torch.manual_seed, side_effects=True)
builtin("aten::device(str a) -> Device", torch.device)
builtin("aten::device.with_index(str type, int index) -> Device", torch.device)

# Tensor and device attributes TorchScript reads with prim:: ops: (op, schema tail, attribute).
_ATTRIBUTES: tuple[tuple[str, str, str], ...] = (
    *((f"is_{d}", "(Tensor a) -> bool", f"is_{d}") for d in (
        "cuda", "cpu", "xpu", "xla", "mps", "meta", "quantized", "sparse", "sparse_csr",
        "mkldnn", "vulkan", "ipu", "maia", "mtia", "nested")),
    ("layout", "(Tensor a) -> Layout", "layout"),
    ("requires_grad", "(Tensor a) -> bool", "requires_grad"),
    ("data", "(Tensor(a) a) -> Tensor(a)", "data"),
    ("grad", "(Tensor a) -> Tensor(*)", "grad"),
    ("name", "(Tensor a) -> str?", "name"),
    ("itemsize", "(Tensor a) -> int", "itemsize"),
    ("nbytes", "(Tensor a) -> int", "nbytes"),
    ("index", "(Device self) -> int?", "index"),
    ("type", "(Device self) -> str", "type"),
)


def _attribute_reader(attr: str) -> Callable[..., Any]:
    def read(x: Any) -> Any:
        return getattr(x, attr)
    return named(read, f"attribute_{attr}", __name__)


def _attribute_emit(attr: str) -> Emit:
    return lambda n, a: f"{a[0]}.{attr}"


for _op, _tail, _attr in _ATTRIBUTES:
    builtin(f"prim::{_op}{_tail}", _attribute_reader(_attr), _attribute_emit(_attr))

# The scalar and container operators register themselves on import.
from kiln.ir import builtins_containers as _containers  # noqa: E402,F401
from kiln.ir import builtins_scalar as _scalar  # noqa: E402,F401
