"""Inline method calls: replace ``prim::CallMethod`` with a copy of the callee's body.

Before (``fc`` is a submodule whose ``forward`` graph is ``%y = aten::linear(%x, %w, %b)``)::

    graph(%self : __torch__.Net, %x : Tensor):
      %fc : __torch__.Linear = prim::GetAttr[name="fc"](%self)
      %y : Tensor = prim::CallMethod[name="forward"](%fc, %x)
      return (%y)

After::

    graph(%self : __torch__.Net, %x : Tensor):
      %fc : __torch__.Linear = prim::GetAttr[name="fc"](%self)
      %w : Tensor = prim::GetAttr[name="weight"](%fc)
      %b : Tensor = prim::GetAttr[name="bias"](%fc)
      %y : Tensor = aten::linear(%x, %w, %b)
      return (%y)

The pass does not know about modules: a ``resolve(node)`` callback says which graph a given
CallMethod runs (or None to leave the call alone).  The callee's input 0 is its ``self`` and is
bound to the call's input 0, so GetAttr chains inside the copy start from the caller's value of
the submodule -- which lets ``resolve`` handle calls found *inside* inlined code the same way,
and the pass inlines those too (nested submodules), up to a depth limit that catches recursion.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Optional

from kiln.errors import IRError
from kiln.ir.graph import Graph, Node, Value, clone_node

Resolver = Callable[[Node], Optional[Graph]]

MAX_DEPTH = 64


def inline_calls(graph: Graph, resolve: Resolver) -> bool:
    """Inline every CallMethod that ``resolve`` maps to a graph; return whether any was."""
    return _inline_nodes(list(graph.block.nodes), resolve, 0)


def _inline_nodes(nodes: list[Node], resolve: Resolver, depth: int) -> bool:
    changed = False
    for node in nodes:
        if node.kind == "prim::CallMethod":
            callee = resolve(node)
            if callee is None:
                continue
            if depth >= MAX_DEPTH:
                raise IRError(f"method calls nested deeper than {MAX_DEPTH} (recursion?) at "
                              f"{node.kind}[name={node.attrs.get('name')!r}]")
            _inline_nodes(inline_one(node, callee), resolve, depth + 1)
            changed = True
        else:
            for b in node.blocks:
                changed |= _inline_nodes(list(b.nodes), resolve, depth)
    return changed


def inline_one(call: Node, callee: Graph) -> list[Node]:
    """Replace ``call`` by a copy of ``callee``'s body; return the inserted nodes."""
    if len(callee.inputs) != len(call.inputs):
        raise IRError(f"cannot inline {call.kind}[name={call.attrs.get('name')!r}]: the callee "
                      f"takes {len(callee.inputs)} inputs, the call passes {len(call.inputs)}")
    if len(callee.outputs) != len(call.outputs):
        raise IRError(f"cannot inline {call.kind}[name={call.attrs.get('name')!r}]: the callee "
                      f"returns {len(callee.outputs)} values, the call expects {len(call.outputs)}")
    env: dict[Value, Value] = dict(zip(callee.inputs, call.inputs))
    inserted = [clone_node(n, call.graph, env).insert_before(call) for n in callee.nodes]
    for old, new in zip(call.outputs, callee.outputs):
        old.replace_all_uses_with(env[new])
    call.destroy()
    return inserted

