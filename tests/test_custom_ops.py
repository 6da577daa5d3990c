"""Custom operators (any ``ns::op`` registered with torch.library) flow through a trace."""

from __future__ import annotations

import pytest
import torch

import kiln
from kiln.ir.parser import parse_graph
from kiln.ir.verify import verify


@pytest.fixture(scope="module")
def scale_op() -> object:
    lib = torch.library.Library("kilntest", "DEF")
    lib.define("scale(Tensor x, float s) -> Tensor")
    lib.impl("scale", lambda x, s: x * s, "CompositeExplicitAutograd")
    yield lib
    lib._destroy()


def with_custom(x: torch.Tensor) -> torch.Tensor:
    return torch.ops.kilntest.scale(x, 2.0) + torch.ops.aten.relu.default(x)


def test_custom_op_is_one_node_in_its_namespace(scale_op: object) -> None:
    x = torch.randn(3, 4)
    traced = kiln.trace(with_custom, (x,))
    text = str(traced.graph)
    assert "kilntest::scale" in text and "aten::relu" in text
    verify(traced.graph)
    assert str(parse_graph(text)) == text
    y = torch.randn(5, 4)
    torch.testing.assert_close(traced(y), with_custom(y))


def test_bad_call_of_a_custom_op_names_it_and_its_schema(scale_op: object) -> None:
    def bad(x: torch.Tensor) -> torch.Tensor:
        return torch.ops.kilntest.scale(x, "two")  # type: ignore[no-any-return]
    with pytest.raises(kiln.TracingError, match=r"kilntest::scale.*float s"):
        kiln.trace(bad, (torch.ones(2),))
