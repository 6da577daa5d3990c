"""Remove dropout that cannot fire: ``dropout(x, p, train=False)`` is ``x``.

Before::

    graph(%self : __torch__.Net, %x : Tensor):
      %p : float = prim::Constant[value=0.5]()
      %train : bool = prim::Constant[value=0]()
      %y : Tensor = aten::dropout(%x, %p, %train)
      %z : Tensor = aten::relu(%y)
      return (%z)

After (the constants are left for :mod:`kiln.passes.dce`)::

    graph(%self : __torch__.Net, %x : Tensor):
      %p : float = prim::Constant[value=0.5]()
      %train : bool = prim::Constant[value=0]()
      %z : Tensor = aten::relu(%x)
      return (%z)

An explicit walk over every block.  Only a ``train`` flag that is a ``prim::Constant`` False
qualifies: a flag computed at run time (``self.training`` not yet folded by
:func:`kiln.freeze`) may be true.  The dropout family is in the operator registry's
nondeterministic set, so dead code elimination alone would never drop these nodes.  The
in-place spellings (``dropout_``) return their input unchanged when not training, so the same
rewrite holds for them.
"""

from __future__ import annotations

from kiln.ir.graph import Graph, Node

_DROPOUTS = frozenset(f"aten::{name}{suffix}" for name in
                      ("dropout", "feature_dropout", "alpha_dropout", "feature_alpha_dropout")
                      for suffix in ("", "_"))


def remove_dropout(graph: Graph) -> bool:
    """Replace every non-training dropout by its input; return whether any was removed."""
    changed = False
    for node in list(graph.all_nodes()):
        if node.kind in _DROPOUTS and _constant_false(node, 2):
            node.output.replace_all_uses_with(node.inputs[0])
            node.destroy()
            changed = True
    return changed


def _constant_false(node: Node, index: int) -> bool:
    if len(node.inputs) <= index:
        return False
    producer = node.inputs[index].node
    return producer.kind == "prim::Constant" and producer.attrs.get("value") is False
