"""Dead code elimination, aware of side effects and of values carried through blocks.

Before::

    graph(%x : Tensor, %n : int):
      %1 : int = prim::Constant[value=1]()
      %unused : Tensor = aten::neg(%x)
      %y : Tensor = aten::relu(%x)
      %z : Tensor, %dead : Tensor = prim::If(%c)
        block0():
          -> (%y, %x)
        block1():
           = prim::Print(%x)
          -> (%x, %y)
      return (%z)

After::

    graph(%x : Tensor, %n : int):
      %y : Tensor = aten::relu(%x)
      %z : Tensor = prim::If(%c)
        block0():
          -> (%y)
        block1():
           = prim::Print(%x)
          -> (%x)
      return (%z)

It is a global analysis (mark, then sweep), not a local rewrite, because liveness flows
backwards through block returns and around loops:

* **Mark.**  Roots are the graph's outputs and every node with an effect (an operator that is
  not :attr:`OpInfo.pure`, or a node without a registry entry).  A live node makes its inputs
  live and keeps the ``prim::If``/``prim::Loop`` around it.  A live ``prim::If`` output makes
  the matching return of both blocks live.  A loop-carried slot is live when the loop's output
  *or* the body's parameter is live; then its initial value and the body's matching return
  are live too, which is how a counter feeding only itself (``i = i + 1``) is found dead.
* **Sweep.**  Nodes never marked are destroyed (later ones first, so uses disappear before
  definitions); dead output slots of live ``If``/``Loop`` nodes are removed.
"""

from __future__ import annotations

from kiln.ir.graph import Block, Graph, Node, Value, walk
from kiln.ir.ops import updates_running_stats


def eliminate_dead_code(graph: Graph) -> bool:
    """Remove dead nodes and dead If/Loop outputs; return whether anything changed."""
    live = _Liveness()
    live.run(graph)
    return _sweep(graph.block, live)


def _has_effect(node: Node) -> bool:
    if node.kind in ("prim::Constant", "prim::If", "prim::Loop"):
        return False   # control flow is live only through what it contains or produces
    return node.op is None or not node.op.pure or updates_running_stats(node)


class _Liveness:
    """The mark phase: which nodes and values the program's results and effects need."""

    def __init__(self) -> None:
        self.nodes: set[Node] = set()
        self.values: set[Value] = set()
        self.work: list[Value] = []

    def run(self, graph: Graph) -> None:
        for v in graph.outputs:
            self.mark(v)
        for node in graph.all_nodes():
            if _has_effect(node):
                self.keep(node)
        while self.work:
            self.visit(self.work.pop())

    def mark(self, v: Value) -> None:
        if v not in self.values:
            self.values.add(v)
            self.work.append(v)

    def keep(self, node: Node) -> None:
        """``node`` runs: its (control) inputs are needed, and so is the node enclosing it."""
        if node in self.nodes:
            return
        self.nodes.add(node)
        if node.kind == "prim::Loop":
            self.mark(node.inputs[0])
            self.mark(node.inputs[1])
            self.mark(node.blocks[0].outputs[0])
        elif node.kind == "prim::If":
            self.mark(node.inputs[0])
        else:
            for v in node.inputs:
                self.mark(v)
        owner = node.owner.owner if node.owner is not None else None
        if owner is not None:
            self.keep(owner)

    def visit(self, v: Value) -> None:
        producer = v.node
        if producer.kind == "prim::Param":
            block = producer.owner
            loop = block.owner if block is not None else None
            if loop is not None and loop.kind == "prim::Loop" and v.offset >= 1:
                self.carry(loop, v.offset - 1)
        elif producer.kind == "prim::If":
            self.keep(producer)
            for b in producer.blocks:
                self.mark(b.outputs[v.offset])
        elif producer.kind == "prim::Loop":
            self.carry(producer, v.offset)
        else:
            self.keep(producer)

    def carry(self, loop: Node, j: int) -> None:
        """Loop-carried slot ``j`` is live: all four of its values are."""
        body = loop.blocks[0]
        self.keep(loop)
        for v in (loop.inputs[2 + j], body.outputs[1 + j], loop.outputs[j], body.inputs[1 + j]):
            self.mark(v)


def _sweep(block: Block, live: _Liveness) -> bool:
    changed = False
    for node in reversed(list(block.nodes)):
        if node not in live.nodes:
            _destroy(node)
            changed = True
        elif node.kind == "prim::If":
            changed |= _prune_if(node, live)
            for b in node.blocks:
                changed |= _sweep(b, live)
        elif node.kind == "prim::Loop":
            changed |= _prune_loop(node, live)
        else:
            for b in node.blocks:
                changed |= _sweep(b, live)
    return changed


def _destroy(node: Node) -> None:
    # Node.destroy drops nested nodes before their blocks' returns, which still use them;
    # clearing every nested return first makes the order irrelevant
    for n in [node, *(m for b in node.blocks for m in walk(b))]:
        for b in n.blocks:
            b.return_node.remove_all_inputs()
    node.destroy()


def _prune_if(node: Node, live: _Liveness) -> bool:
    dead = [j for j, v in enumerate(node.outputs) if v not in live.values]
    for j in reversed(dead):
        for b in node.blocks:
            b.return_node.remove_input(j)
        node.erase_output(j)
    return bool(dead)


def _prune_loop(node: Node, live: _Liveness) -> bool:
    """Drop dead carried slots: returns first, then the body, then params, inputs, outputs."""
    body = node.blocks[0]
    dead = [j for j, v in enumerate(node.outputs) if v not in live.values]
    for j in reversed(dead):
        body.return_node.remove_input(1 + j)
    changed = _sweep(body, live)
    for j in reversed(dead):
        body.param_node.erase_output(1 + j)
        node.remove_input(2 + j)
        node.erase_output(j)
    return changed or bool(dead)
