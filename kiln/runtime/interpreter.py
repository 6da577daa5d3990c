"""The reference interpreter: the semantic oracle for generated code.

It walks a graph node by node with an environment mapping each :class:`Value` to its Python
value.  Structural kinds (``prim::Constant``, ``prim::If``, ``prim::Loop``) and the few nodes
generated code builds itself (a NamedTuple's ``prim::TupleConstruct``) are handled by a small
dispatch table; every other node runs its operator's ``impl``.  It is deliberately simple and
slow: tests check that interpreter, generated code and eager PyTorch agree.  An optional
observer sees every value bound (the profiling executor records tensor types with it, running
a method's first call here).

The calling convention shared with :mod:`kiln.runtime.codegen` lives here too, so both
drivers agree by construction: inputs are passed positionally in schema order, except the
operator's ``kw_names`` which go by keyword, and the node's attributes are keyword arguments;
an operator whose schema returns several values (or ``...``) has its result unpacked into the
node's outputs.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any, Optional

from kiln.errors import InputError, IRError
from kiln.ir import objects as _objects
from kiln.ir.graph import Block, Graph, Node, Value
from kiln.ir.prims import unpack
from kiln.ir.types import NamedTupleType


def keyword_slots(node: Node) -> dict[int, str]:
    """Input index -> keyword name, for the inputs the operator's impl takes by keyword."""
    op = node.op
    if not op.kw_names or op.schema.is_vararg:
        return {}
    args = op.schema.arguments
    return {i: args[i].name for i in range(min(len(node.inputs), len(args)))
            if args[i].name in op.kw_names}


def unpacks_result(node: Node) -> bool:
    """Whether the op returns a sequence to be spread over the node's outputs."""
    schema = node.op.schema
    return bool(schema.is_varret or len(schema.returns) > 1)


def describe_node(node: Node, where: str) -> str:
    """The note added to an exception raised while running ``node``."""
    at = f" (from {node.source})" if node.source is not None else ""
    scope = f", scope {node.scope}" if node.scope else ""
    return f"Kiln: raised by {node.kind}{at}{scope} in {where}"


def add_note(e: BaseException, note: str) -> None:
    """``e.add_note(note)`` (Python 3.11+); on 3.10 the note is kept in ``__notes__`` only."""
    adder = getattr(e, "add_note", None)
    if adder is not None:
        adder(note)
    else:
        e.__notes__ = [*getattr(e, "__notes__", []), note]  # type: ignore[attr-defined]


Observer = Callable[[Sequence[Value], Sequence[Any]], None]
"""Called with values and what they were bound to: graph inputs, each node's outputs, each
loop iteration's block inputs (the profiling executor records types through it)."""


@dataclass(frozen=True)
class _Run:
    """One interpretation: where errors are said to come from, and who watches values."""

    where: str
    observe: Optional[Observer]

    def bind(self, env: dict[Value, Any], values: Sequence[Value], results: Sequence[Any]) -> None:
        env.update(zip(values, results))
        if self.observe is not None:
            self.observe(values, results)


def interpret(graph: Graph, args: Sequence[Any], self_obj: Optional[Any] = None, *,
              observe: Optional[Observer] = None, where: str = "the interpreter") -> Any:
    """Run ``graph`` on ``args``; ``self_obj``, when given, is bound to the first graph input.

    ``observe`` sees every value bound while running (see :data:`Observer`); ``where`` names
    the running code in the note an error gets (``'forward'`` to read as generated code's).
    Returns the single graph output, or a tuple when the graph has several."""
    values = ([self_obj] if self_obj is not None else []) + list(args)
    if len(values) != len(graph.inputs):
        raise InputError(f"graph takes {len(graph.inputs)} inputs, got {len(values)}")
    run = _Run(where, observe)
    env: dict[Value, Any] = {}
    run.bind(env, graph.inputs, values)
    outs = _run_block(run, graph.block, env)
    return outs[0] if len(outs) == 1 else tuple(outs)


def _run_block(run: _Run, block: Block, env: dict[Value, Any]) -> list[Any]:
    node: Optional[Node] = None
    try:
        for node in block.nodes:
            results = _HANDLERS.get(node.kind, _run_op)(run, node, env)
            if len(results) != len(node.outputs):
                raise ValueError(f"{node.kind} produced {len(results)} values for "
                                 f"{len(node.outputs)} outputs")
            run.bind(env, node.outputs, results)
    except Exception as e:
        if node is not None and not getattr(e, "_kiln_noted", False):
            add_note(e, describe_node(node, run.where))
            e._kiln_noted = True  # type: ignore[attr-defined]  # notes once, at the innermost node
        raise
    return [env[v] for v in block.outputs]


def _run_op(run: _Run, node: Node, env: dict[Value, Any]) -> list[Any]:
    if node.op is None or node.op.impl is None:
        raise IRError(f"{node.kind} has no operator implementation")
    kw = keyword_slots(node)
    pos = [env[v] for i, v in enumerate(node.inputs) if i not in kw]
    kwargs = {name: env[node.inputs[i]] for i, name in kw.items()}
    result = node.op.impl(*pos, **kwargs, **node.attrs)
    if unpacks_result(node):
        return list(unpack(result, n=len(node.outputs)))
    return [result] if node.outputs else []


def _run_constant(run: _Run, node: Node, env: dict[Value, Any]) -> list[Any]:
    value = node.attrs["value"]
    # generated code writes a list constant as a display, a new list each time: so does this
    return [list(value) if type(value) is list else value]


def _run_tuple(run: _Run, node: Node, env: dict[Value, Any]) -> list[Any]:
    items = tuple(env[v] for v in node.inputs)
    t = node.outputs[0].type
    return [_objects.namedtuple_class(t)(*items) if isinstance(t, NamedTupleType) else items]


def _run_if(run: _Run, node: Node, env: dict[Value, Any]) -> list[Any]:
    return _run_block(run, node.blocks[0] if env[node.inputs[0]] else node.blocks[1], env)


def _run_loop(run: _Run, node: Node, env: dict[Value, Any]) -> list[Any]:
    body = node.blocks[0]
    trip, cond = env[node.inputs[0]], env[node.inputs[1]]
    carried = [env[v] for v in node.inputs[2:]]
    i = 0
    while cond and i < trip:
        run.bind(env, body.inputs, [i, *carried])
        cond, *carried = _run_block(run, body, env)
        i += 1
    return carried


_HANDLERS: dict[str, Callable[[_Run, Node, dict[Value, Any]], list[Any]]] = {
    "prim::Constant": _run_constant,
    "prim::If": _run_if,
    "prim::Loop": _run_loop,
    "prim::TupleConstruct": _run_tuple,
}
