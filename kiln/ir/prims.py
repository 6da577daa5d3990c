"""Kiln's own operators: TorchScript's ``prim::`` ops and its scalar/list builtins.

Each entry is data: a schema, traits, ``impl`` (the semantics, used by the reference
interpreter and bound into generated code) and optionally ``emit`` (inline Python the code
generator writes instead of a call).  ``impl`` receives the node's inputs positionally and
its attributes (``name=...``) by keyword.

Structural kinds -- ``prim::Param``, ``prim::Return``, ``prim::Constant``, ``prim::If`` and
``prim::Loop`` -- are handled by the drivers themselves; they are listed in ``STRUCTURAL``.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any, Optional

import torch

from kiln.errors import KilnRuntimeError
from kiln.ir.ops import OpInfo, parse_schema, registry

STRUCTURAL = frozenset({"prim::Param", "prim::Return", "prim::Constant", "prim::If", "prim::Loop"})

Emit = Callable[[Any, list[str]], str]


def prim(schema: str, impl: Callable[..., Any], emit: Optional[Emit] = None, *,
         side_effects: bool = False) -> OpInfo:
    s = parse_schema(schema)
    name = impl.__name__ if impl.__module__ == __name__ else ""
    binding = f"kiln.ir.prims.{name}" if name and not name.startswith("<") else ""
    return registry.register(OpInfo(s, impl, (), side_effects=side_effects, binding_name=binding,
                                    emit=emit))


# -- containers -----------------------------------------------------------------------------

def tuple_construct(*xs: Any) -> tuple[Any, ...]:
    return xs


def list_construct(*xs: Any) -> list[Any]:
    return list(xs)


def dict_construct(*kv: Any) -> dict[Any, Any]:
    return dict(zip(kv[::2], kv[1::2]))


def unpack(seq: Any, *, n: Optional[int] = None, what: str = "value") -> Any:
    """Unpack a tuple or list whose length the graph fixed when it was built.

    ``n`` is the node's output count; a driver that cannot pass it (it is not an attribute)
    checks the length itself, e.g. by calling ``unpack`` again with ``n``."""
    if n is not None and len(seq) != n:
        raise KilnRuntimeError(
            f"{what} has {len(seq)} elements but the graph was built for {n}; "
            "the trace baked this length in (re-trace with this input size, or script the loop)")
    return seq


def tuple_index(t: Any, i: int) -> Any:
    return t[i]


def _emit_tuple(node: Any, a: list[str]) -> str:
    return "(" + "".join(x + ", " for x in a) + ")"


def _emit_list(node: Any, a: list[str]) -> str:
    return "[" + ", ".join(a) + "]"


def _emit_dict(node: Any, a: list[str]) -> str:
    return "{" + ", ".join(f"{k}: {v}" for k, v in zip(a[::2], a[1::2])) + "}"


def _emit_tuple_unpack(node: Any, a: list[str]) -> str:
    return a[0]


def _emit_list_unpack(node: Any, a: list[str]) -> str:
    return f"_prims.unpack({a[0]}, n={len(node.outputs)})"


prim("prim::TupleConstruct(...) -> Any", tuple_construct, _emit_tuple)
prim("prim::ListConstruct(...) -> Any", list_construct, _emit_list)
prim("prim::DictConstruct(...) -> Any", dict_construct, _emit_dict)
prim("prim::TupleUnpack(Any tup) -> ...", lambda t: t, _emit_tuple_unpack)
prim("prim::ListUnpack(Any[] l) -> ...", unpack, _emit_list_unpack)
prim("prim::TupleIndex(Any tup, int i) -> Any", tuple_index, lambda n, a: f"{a[0]}[{a[1]}]")


# -- objects and calls ------------------------------------------------------------------------

def get_attr(obj: Any, *, name: str) -> Any:
    return getattr(obj, name)


def set_attr(obj: Any, value: Any, *, name: str) -> None:
    setattr(obj, name, value)


def call_method(obj: Any, *args: Any, name: str) -> Any:
    return getattr(obj, name)(*args)


def call_function(fn: Any, *args: Any) -> Any:
    return fn(*args)


def raise_exception(msg: str, cls: Optional[str] = None) -> None:
    raise KilnRuntimeError(msg if cls is None else f"{cls}: {msg}")


prim("prim::GetAttr(Any obj) -> Any", get_attr, lambda n, a: f"{a[0]}.{n.attrs['name']}")
prim("prim::SetAttr(Any obj, Any value) -> ()", set_attr,
     lambda n, a: f"setattr({a[0]}, {n.attrs['name']!r}, {a[1]})", side_effects=True)
prim("prim::CallMethod(...) -> Any", call_method,
     lambda n, a: f"{a[0]}.{n.attrs['name']}({', '.join(a[1:])})", side_effects=True)
prim("prim::CallFunction(...) -> Any", call_function,
     lambda n, a: f"{a[0]}({', '.join(a[1:])})", side_effects=True)
prim("prim::RaiseException(str msg, str? cls=None) -> ()", raise_exception, side_effects=True)


# -- scalars and tensors ---------------------------------------------------------------------

def num_to_tensor(x: Any) -> torch.Tensor:
    return torch.scalar_tensor(x, dtype=torch.int64 if isinstance(x, int) and not isinstance(x, bool)
                               else (torch.bool if isinstance(x, bool) else torch.float64))


prim("prim::NumToTensor.Scalar(Scalar a) -> Tensor", num_to_tensor)
prim("aten::Int.Tensor(Tensor a) -> int", int, lambda n, a: f"int({a[0]})")
prim("aten::Float.Tensor(Tensor a) -> float", float, lambda n, a: f"float({a[0]})")
prim("aten::Bool.Tensor(Tensor a) -> bool", bool, lambda n, a: f"bool({a[0]})")
prim("aten::ScalarImplicit(Tensor a) -> Scalar", lambda t: t.item(), lambda n, a: f"{a[0]}.item()")
prim("aten::item(Tensor self) -> Scalar", lambda t: t.item(), lambda n, a: f"{a[0]}.item()")
prim("aten::tolist(Tensor self) -> Any", lambda t: t.tolist(), lambda n, a: f"{a[0]}.tolist()")
prim("aten::size(Tensor self) -> int[]", lambda t: list(t.size()), lambda n, a: f"list({a[0]}.size())")
prim("aten::dim(Tensor self) -> int", lambda t: t.dim(), lambda n, a: f"{a[0]}.dim()")
prim("aten::numel(Tensor self) -> int", lambda t: t.numel(), lambda n, a: f"{a[0]}.numel()")
prim("prim::device(Tensor a) -> Device", lambda t: t.device, lambda n, a: f"{a[0]}.device")
prim("prim::dtype(Tensor a) -> ScalarType", lambda t: t.dtype, lambda n, a: f"{a[0]}.dtype")
prim("aten::len.Tensor(Tensor t) -> int", len, lambda n, a: f"len({a[0]})")
prim("prim::NumToTensor.bool(bool a) -> Tensor", num_to_tensor)


# TorchScript's builtins on numbers, lists, dicts and strings (``aten::add.int``,
# ``aten::append.t``, ``aten::len.str`` ...) are tables in kiln.ir.builtins*; importing this
# module registers them too.
from kiln.ir import builtins as _builtins  # noqa: E402,F401
