"""The same straight-line program gives the same IR whether it is traced or scripted.

Both frontends resolve torch calls through ``kiln.frontend.resolve`` and build nodes through
one ``Builder``; this checks the outcome on programs that use operators, methods, Python
arithmetic on tensors, ``torch.nn.functional`` and modules: the operator nodes, their
overloads and their constant arguments agree, node for node.

Types are not compared (a trace records the shapes it saw, a script does not), and constant
arguments are compared by value: the tracer stores a list argument as one list constant
where the script compiler builds it from its elements, and a ``None`` default is typed
``NoneType`` by one and ``Optional[...]`` by the other.  Attribute reads are left out: Python
evaluates the callee ``self.norm`` before its argument ``self.fc(x)``, which the script compiler
follows, while the tracer sees the reads when the submodules run.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import pytest
import torch
import torch.nn.functional as F
from torch import nn

import kiln
from kiln.ir.graph import Graph, Node, Value


def _value(v: Value) -> Any:
    node = v.node
    if node.kind == "prim::Constant":
        return ("const", node.attrs.get("value"))
    if node.kind == "prim::ListConstruct" and all(i.node.kind == "prim::Constant" for i in node.inputs):
        return ("const", [i.node.attrs.get("value") for i in node.inputs])
    return ("value",)


def _argument(node: Node, i: int, v: Value) -> Any:
    desc = _value(v)
    arg = node.op.schema.arguments[i] if node.op is not None and i < len(node.op.schema.arguments) else None
    if arg is not None and arg.fixed_size and desc[0] == "const" and isinstance(desc[1], int):
        return ("const", [desc[1]] * arg.fixed_size)   # `dim=0` for an int[1] argument is [0]
    return desc


def _ops(graph: Graph) -> list[tuple[str, str, list[Any]]]:
    """The operator nodes in order: kind, overload and argument descriptions."""
    out = []
    for n in graph.all_nodes():
        if n.kind in ("prim::Constant", "prim::ListConstruct", "prim::GetAttr"):
            continue     # GetAttr order differs legitimately: Python evaluates `self.norm` before its argument
        overload = n.op.schema.qualified if n.op is not None else n.kind
        out.append((n.kind, overload, [_argument(n, i, v) for i, v in enumerate(n.inputs)]))
    return out


def straight(x: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
    z = torch.matmul(x, y) + 1
    z = F.relu(z) * 2.0
    return torch.softmax(z, dim=-1).sum(0)


def methods(x: torch.Tensor) -> torch.Tensor:
    y = x.transpose(0, 1).contiguous().view(-1)
    return (y - y.mean()).abs().clamp(min=0.1).sqrt()


def functional(x: torch.Tensor, w: torch.Tensor, b: torch.Tensor) -> torch.Tensor:
    h = F.linear(x, w, b)
    h = F.gelu(h)
    return F.layer_norm(h, [4]) + torch.tanh(h) * x.sum(1, keepdim=True)


def mixed_scalars(x: torch.Tensor) -> torch.Tensor:
    return 1.5 * x - x / 3 + torch.exp(-x) * 0.25


class Net(nn.Module):
    def __init__(self) -> None:
        super().__init__()
        self.fc = nn.Linear(4, 4)
        self.norm = nn.LayerNorm(4)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return torch.relu(self.norm(self.fc(x))) + x


FUNCTIONS: list[tuple[Callable[..., Any], tuple[Any, ...]]] = [
    (straight, (torch.randn(3, 3), torch.randn(3, 3))),
    (methods, (torch.rand(3, 4),)),
    (functional, (torch.randn(2, 4), torch.randn(4, 4), torch.randn(4))),
    (mixed_scalars, (torch.randn(5),)),
]


@pytest.mark.parametrize("fn,args", FUNCTIONS, ids=[f.__name__ for f, _ in FUNCTIONS])
def test_traced_and_scripted_functions_build_the_same_nodes(fn: Callable[..., Any], args: tuple[Any, ...]) -> None:
    scripted = kiln.script(fn)
    traced = kiln.trace(fn, args)
    assert _ops(scripted.graph) == _ops(traced.graph)
    torch.testing.assert_close(scripted(*args), traced(*args))
    torch.testing.assert_close(scripted(*args), fn(*args))


def test_traced_and_scripted_modules_build_the_same_nodes() -> None:
    torch.manual_seed(0)
    net = Net().eval()
    x = torch.randn(2, 4)
    scripted = kiln.script(net)
    traced = kiln.trace(net, (x,))
    assert _ops(scripted.inlined_graph) == _ops(traced.inlined_graph)
    torch.testing.assert_close(scripted(x), net(x))
