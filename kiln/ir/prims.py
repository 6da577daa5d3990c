"""Kiln's own operators: TorchScript's ``prim::`` ops and its scalar/list builtins.

Each entry is data: a schema, traits, ``impl`` (the semantics, used by the reference
interpreter and bound into generated code) and optionally ``emit`` (inline Python the code
generator writes instead of a call).  ``impl`` receives the node's inputs positionally and
its attributes (``name=...``) by keyword.

Structural kinds -- ``prim::Param``, ``prim::Return``, ``prim::Constant``, ``prim::If`` and
``prim::Loop`` -- are handled by the drivers themselves; they are listed in ``STRUCTURAL``.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from typing import Any, Optional

import torch

from kiln.errors import KilnRuntimeError
from kiln.ir.ops import OpInfo, parse_schema, registry
from kiln.ir.types import TensorType, Type

STRUCTURAL = frozenset({"prim::Param", "prim::Return", "prim::Constant", "prim::If", "prim::Loop"})

Emit = Callable[[Any, list[str]], str]


def prim(schema: str, impl: Callable[..., Any], emit: Optional[Emit] = None, *,
         side_effects: bool = False, lower: Optional[Callable[..., str]] = None) -> OpInfo:
    s = parse_schema(schema)
    name = impl.__name__ if impl.__module__ == __name__ else ""
    binding = f"kiln.ir.prims.{name}" if name and not name.startswith("<") else ""
    return registry.register(OpInfo(s, impl, (), side_effects=side_effects, binding_name=binding,
                                    emit=emit, lower=lower))


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


# -- specialization: type checks and fusion groups ------------------------------------------------
#
# ``prim::TypeCheck[types=[...]](%a, %b)`` is true when each input tensor has every property its
# type states (dtype, sizes, strides, device, requires_grad -- as TorchScript, the effective
# flag: a tensor that requires grad counts as not requiring it while grad mode is off, since
# no result computed from it then records history); a specialized graph runs its fast
# branch behind one.  ``prim::FusionGroup`` runs the graph in its ``Subgraph`` attribute on its
# inputs; it is pure.  The runtime (:mod:`kiln.runtime.fusion`) installs how a fusion group
# runs: its subgraph in the interpreter, a compiled kernel in generated code.


def tensor_matches(x: Any, t: TensorType) -> bool:
    """Whether ``x`` is a tensor with every property ``t`` states (None states nothing)."""
    if not isinstance(x, torch.Tensor):
        return False
    actual = TensorType.of(x)
    grad = x.requires_grad and torch.is_grad_enabled()
    for want, got in ((t.dtype, x.dtype), (t.device, x.device), (t.requires_grad, grad)):
        if want is not None and want != got:
            return False
    return _dims_match(t.shape, actual.shape) and _dims_match(t.strides, actual.strides)


def _dims_match(want: Optional[Sequence[Optional[int]]], got: Optional[Sequence[Optional[int]]]) -> bool:
    if want is None:
        return True
    return got is not None and len(want) == len(got) and all(w is None or w == g for w, g in zip(want, got))


def type_check(*xs: Any, types: Sequence[Type]) -> bool:
    return len(xs) == len(types) and all(
        isinstance(t, TensorType) and tensor_matches(x, t) for x, t in zip(xs, types))


def _dims_test(expr: str, dims: Sequence[Optional[int]]) -> list[str]:
    if all(d is not None for d in dims):
        return [f"{expr} == ({', '.join(map(str, dims))}{',' if len(dims) == 1 else ''})"]
    known = [f"{expr}[{i}] == {d}" for i, d in enumerate(dims) if d is not None]
    return [f"len({expr}) == {len(dims)}", *known]


def _tensor_test(x: str, t: Type, bind: Callable[[Any, str], str]) -> list[str]:
    """Inline Python testing what :func:`tensor_matches` tests, cheapest tests first."""
    if not isinstance(t, TensorType):
        return ["False"]
    tests: list[str] = []
    if t.dtype is not None:
        tests.append(f"{x}.dtype is {bind(t.dtype, str(t.dtype))}")
    if t.shape is not None:
        tests += _dims_test(f"{x}.shape", t.shape)
    if t.device is not None:
        cpu = t.device == torch.device("cpu")
        tests.append(f"{x}.is_cpu" if cpu else f"{x}.device == {bind(t.device, 'device')}")
    if t.strides is not None:   # stride() raises on sparse and other non-strided layouts
        tests.append(f"{x}.layout is {bind(torch.strided, 'strided')}")
        tests += _dims_test(f"{x}.stride()", t.strides)
    if t.requires_grad is not None:
        grad_mode = bind(torch.is_grad_enabled, "is_grad_enabled")
        tests.append(f"({x}.requires_grad and {grad_mode}())" if t.requires_grad else
                     f"(not {x}.requires_grad or not {grad_mode}())")
    return tests


def _lower_type_check(node: Any, args: list[str], bind: Callable[[Any, str], str]) -> str:
    types = node.attrs.get("types")
    if not isinstance(types, list) or len(types) != len(args):
        return f"{bind(type_check, 'type_check')}({', '.join(args)}, types={bind(types, 'types')})"
    tests = [test for a, t in zip(args, types) for test in _tensor_test(a, t, bind)]
    return "(" + " and ".join(tests or ["True"]) + ")"


def fusion_group(*xs: Any, Subgraph: Any) -> Any:  # noqa: N803  (the attribute's TorchScript name)
    raise KilnRuntimeError("prim::FusionGroup runs through Kiln's runtime; import kiln.runtime first")


prim("prim::TypeCheck(...) -> bool", type_check, lower=_lower_type_check)
prim("prim::FusionGroup(...) -> ...", fusion_group)


# TorchScript's builtins on numbers, lists, dicts and strings (``aten::add.int``,
# ``aten::append.t``, ``aten::len.str`` ...) are tables in kiln.ir.builtins*; importing this
# module registers them too.
from kiln.ir import builtins as _builtins  # noqa: E402,F401
