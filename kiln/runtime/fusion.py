"""How a ``prim::FusionGroup`` runs: the runtime half of the operator.

:mod:`kiln.ir.prims` declares the operator (its schema, pure); importing :mod:`kiln.runtime`
installs its two ways of running, on the operator's registry entry:

* ``impl`` -- the reference interpreter runs the subgraph, node by node.  That *is* the
  semantics of a fusion group: exactly its unfused operators.
* ``lower`` -- generated code calls a kernel from the C++ backend
  (:func:`kiln.backends.cpp.build_kernel`), built when the graph is compiled and bound as a
  closure cell.  When no compiler is found or the backend cannot compile the subgraph, the
  subgraph compiled to Python (:func:`kiln.runtime.codegen.compile_graph`) stands in for it,
  so results are right either way (a debug note goes to the ``kiln.fusion`` logger).

A kernel reads memory as the types it was built for prescribe.  The fusion pass always puts a
group behind a ``prim::TypeCheck`` of exactly those types; a group found anywhere else (hand
written IR) gets a wrapper that checks its inputs on every call and runs the Python version
when they do not match.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any, Optional

from kiln.backends import cpp, dense
from kiln.errors import IRError
from kiln.ir.graph import Graph, Node, subgraph_of
from kiln.ir.ops import registry
from kiln.ir.prims import tensor_matches
from kiln.ir.types import TensorType
from kiln.runtime.codegen import compile_graph
from kiln.runtime.interpreter import interpret

Runner = Callable[..., tuple[Any, ...]]


def run_subgraph(*inputs: Any, Subgraph: Graph) -> tuple[Any, ...]:  # noqa: N803  (TorchScript's name)
    """The interpreter's fusion group: the subgraph, interpreted; always a tuple of results."""
    results = interpret(Subgraph, inputs)
    return (results,) if len(Subgraph.outputs) == 1 else tuple(results)


def python_runner(sub: Graph) -> Runner:
    """The subgraph as generated Python: the unfused operators, with codegen's fast bindings."""
    fn = compile_graph(sub, "fusion_group", self_arg=False).fn
    if len(sub.outputs) == 1:
        return lambda *xs: (fn(*xs),)
    return fn


def build_runner(node: Node) -> Runner:
    """What generated code calls for ``node``: the kernel, or the Python version of the group."""
    sub = subgraph_of(node)
    if sub is None:
        raise IRError(f"{node.kind} has no subgraph to run")
    kernel = dense.build_kernel(sub) if dense.handles(sub) else cpp.build_kernel(sub)
    if kernel is None:
        return python_runner(sub)
    checks = _unguarded_checks(node, sub)
    if not checks:
        return kernel
    return _checked(kernel, python_runner(sub), checks)


def _unguarded_checks(node: Node, sub: Graph) -> list[tuple[int, TensorType]]:
    """The tensor inputs of ``node`` whose types no enclosing ``prim::TypeCheck`` guarantees."""
    guaranteed: dict[Any, Any] = {}
    guard = _guard(node)
    if guard is not None:
        guaranteed = dict(zip(guard.inputs, guard.attrs.get("types") or ()))
    return [(i, p.type) for i, (v, p) in enumerate(zip(node.inputs, sub.inputs))
            if isinstance(p.type, TensorType) and guaranteed.get(v) != p.type]


def _guard(node: Node) -> Optional[Node]:
    """The TypeCheck whose ``prim::If`` runs ``node`` in its first block, if any."""
    block = node.owner
    branch = block.owner if block is not None else None
    if branch is None or branch.kind != "prim::If" or branch.blocks[0] is not block:
        return None
    cond = branch.inputs[0].node
    return cond if cond.kind == "prim::TypeCheck" else None


def _checked(kernel: Runner, fallback: Runner, checks: list[tuple[int, TensorType]]) -> Runner:
    def run(*xs: Any) -> tuple[Any, ...]:
        if all(tensor_matches(xs[i], t) for i, t in checks):
            return kernel(*xs)
        return fallback(*xs)
    return run


def _lower(node: Node, args: list[str], bind: Callable[[Any, str], str]) -> str:
    return f"{bind(build_runner(node), 'fusion_group')}({', '.join(args)})"


_entry = registry.get("prim::FusionGroup")
_entry.impl = run_subgraph
_entry.lower = _lower
