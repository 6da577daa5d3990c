"""The operator registry: schemas from the dispatcher, and fast bindings that agree with it.

Each case runs an overload through the Python binding Kiln chose (``OpInfo.impl``) and through
the dispatcher's own entry (``torch.ops.<ns>.<op>.<overload>``); they must agree.
"""

from __future__ import annotations

from typing import Any

import pytest
import torch

from kiln.errors import SchemaError
from kiln.frontend.resolve import resolve_call
from kiln.frontend.tracer import run_op
from kiln.ir.ops import parse_schema, registry

x = torch.randn(2, 3, 4)
w = torch.randn(5, 4)

CALLS: list[tuple[str, tuple[Any, ...], dict[str, Any]]] = [
    ("aten::add", (x, x), {"alpha": 2}),
    ("aten::add", (x, 1.5), {}),
    ("aten::add_", (x.clone(), 2), {}),
    ("aten::sub", (x, x), {}),
    ("aten::rsub", (x, 2), {}),
    ("aten::linear", (x, w), {}),
    ("aten::to", (x, torch.float64), {}),
    ("aten::to", (x, "cpu"), {}),
    ("aten::contiguous", (x.transpose(0, 1),), {}),
    ("aten::sum", (x, [1]), {"keepdim": True}),
    ("aten::mean", (x, [0, 2]), {}),
    ("aten::softmax", (x, -1), {}),
    ("aten::elu", (x,), {}),
    ("aten::view", (x, [6, 4]), {}),
    ("aten::permute", (x, [2, 0, 1]), {}),
    ("aten::slice", (x, 1, 0, 2, 1), {}),
    ("aten::select", (x, 2, 1), {}),
    ("aten::index", (x, [None, torch.tensor([0, 2])]), {}),
    ("aten::masked_fill", (x, x > 0, 0.5), {}),
    ("aten::where", (x > 0, x, 0.0), {}),
    ("aten::cat", ([x, x], 1), {}),
    ("aten::chunk", (x, 2, 2), {}),
    ("aten::layer_norm", (x, [4]), {}),
    ("aten::max", (x, 1), {}),
    ("aten::pow", (x, 2), {}),
    ("aten::clamp", (x, -0.5, 0.5), {}),
    ("aten::zeros", ([2, 3],), {"dtype": torch.float64}),
    ("aten::scaled_dot_product_attention", (x, x, x), {}),
]


@pytest.mark.parametrize("name,args,kwargs", CALLS, ids=[f"{c[0]}-{i}" for i, c in enumerate(CALLS)])
def test_fast_binding_agrees_with_dispatcher(name: str, args: tuple[Any, ...], kwargs: dict[str, Any]) -> None:
    resolved = resolve_call(name, args, kwargs, lambda v: False)
    assert resolved is not None, f"no overload of {name} accepted the call"
    schema = resolved.op.schema
    dispatcher = getattr(getattr(torch.ops.aten, schema.opname), schema.overload or "default")
    positional = [v for v, a in zip(resolved.args, schema.arguments) if not a.kwarg_only]
    keywords = {a.name: v for v, a in zip(resolved.args, schema.arguments) if a.kwarg_only}
    expected = dispatcher(*positional, **keywords)
    got = run_op(resolved.op, list(resolved.args))
    torch.testing.assert_close(got, expected)


def test_overload_choice_follows_argument_kinds() -> None:
    def chosen(name: str, *args: Any) -> str:
        r = resolve_call(name, args, {}, lambda v: False)
        assert r is not None
        return r.op.schema.qualified
    assert chosen("aten::add", x, x) == "aten::add.Tensor"
    assert chosen("aten::add", x, 1) == "aten::add.Scalar"
    assert chosen("aten::size", x, 0) == "aten::size.int"
    assert chosen("aten::to", x, torch.float16) == "aten::to.dtype"


def test_schemas_come_from_the_dispatcher() -> None:
    op = registry.get("aten::add.Tensor")
    assert [a.name for a in op.schema.arguments] == ["self", "other", "alpha"]
    assert op.schema.arguments[2].kwarg_only and op.schema.arguments[2].default == 1
    assert registry.get("aten::add_.Tensor").schema.is_mutable
    assert not registry.get("aten::dropout").pure  # nondeterministic
    assert registry.get("aten::contiguous").schema.arguments[1].default is torch.contiguous_format


def test_unknown_operator_is_a_schema_error() -> None:
    with pytest.raises(SchemaError, match="aten::no_such_op"):
        registry.get("aten::no_such_op")


def test_parse_schema_reads_kiln_declarations() -> None:
    s = parse_schema("aten::add.int(int a, int b) -> int")
    assert s.qualified == "aten::add.int" and [a.name for a in s.arguments] == ["a", "b"]
    v = parse_schema("prim::TupleConstruct(...) -> Any")
    assert v.is_vararg
