"""The graph: ``Value``, ``Node``, ``Block``, ``Graph``.

The model is TorchScript's.  A :class:`Graph` owns one top-level :class:`Block`.  A block is
a doubly linked list of nodes between two sentinels: a ``prim::Param`` node whose outputs are
the block's inputs, and a ``prim::Return`` node whose inputs are the block's outputs.  So every
:class:`Value` is produced by exactly one node, and every use -- block outputs included -- is
an input slot of some node.  Nodes such as ``prim::If`` and ``prim::Loop`` own nested blocks.

Use lists are kept by the IR: every change to a node's inputs goes through
:meth:`Node.add_input`, :meth:`Node.replace_input` or :meth:`Node.remove_input`, which update
the used value's ``uses``.  Hence :meth:`Value.replace_all_uses_with` is a few lines.
"""

from __future__ import annotations

from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from typing import Any, Optional

import torch

from kiln.errors import IRError
from kiln.ir.types import Type

# Kinds whose body is a whole graph held in the node's ``Subgraph`` attribute (TorchScript's
# fusion groups).  They print as ``prim::FusionGroup_0(...)`` with the subgraph after the graph.
SUBGRAPH_KINDS = frozenset({"prim::FusionGroup"})
SUBGRAPH_ATTR = "Subgraph"


def subgraph_of(node: Node) -> Optional[Graph]:
    """The graph a subgraph-kind node runs, or None for other nodes."""
    sub = node.attrs.get(SUBGRAPH_ATTR) if node.kind in SUBGRAPH_KINDS else None
    return sub if isinstance(sub, Graph) else None


@dataclass(frozen=True)
class SourceRange:
    """Where a node came from in the user's source: file, line and (optionally) column."""

    file: str
    line: int
    col: int = 0

    def __str__(self) -> str:
        return f"{self.file}:{self.line}:{self.col}"


@dataclass(frozen=True)
class Use:
    """Input slot ``index`` of ``user`` reads a value."""

    user: Node
    index: int


class Value:
    """An SSA value: produced by one node, typed, with a list of uses."""

    __slots__ = ("type", "name", "node", "offset", "uses")

    def __init__(self, node: Node, offset: int, type: Type, name: Optional[str] = None) -> None:
        self.type = type
        self.name = name          # a name hint; the printer makes names unique
        self.node = node          # the producing node (prim::Param for block inputs)
        self.offset = offset      # index among the producer's outputs
        self.uses: list[Use] = []

    def replace_all_uses_with(self, other: Value) -> None:
        for use in list(self.uses):
            use.user.replace_input(use.index, other)

    def __repr__(self) -> str:
        return f"<Value %{self.name or id(self)} : {self.type}>"


class Node:
    """An operation: ``kind`` (``aten::add``, ``prim::If`` ...), inputs, outputs, blocks, attributes.

    ``attrs`` holds TorchScript's node attributes (``value`` of a constant, ``name`` of a
    GetAttr/CallMethod).  ``op`` is the resolved operator entry (:class:`kiln.ir.ops.OpInfo`)
    for registry ops.
    """

    __slots__ = ("kind", "inputs", "outputs", "blocks", "attrs", "op", "source", "scope",
                 "owner", "prev", "next", "graph")

    def __init__(self, graph: Graph, kind: str, attrs: Optional[dict[str, Any]] = None) -> None:
        self.graph = graph
        self.kind = kind
        self.inputs: list[Value] = []
        self.outputs: list[Value] = []
        self.blocks: list[Block] = []
        self.attrs: dict[str, Any] = dict(attrs or {})
        self.op: Any = None       # the resolved OpInfo (kiln.ir.ops), when the kind has one
        self.source: Optional[SourceRange] = None
        self.scope: Optional[str] = None
        self.owner: Optional[Block] = None
        self.prev: Optional[Node] = None
        self.next: Optional[Node] = None

    # -- inputs and outputs -------------------------------------------------------------
    def add_input(self, v: Value) -> None:
        v.uses.append(Use(self, len(self.inputs)))
        self.inputs.append(v)

    def replace_input(self, index: int, v: Value) -> None:
        old = self.inputs[index]
        old.uses.remove(Use(self, index))
        self.inputs[index] = v
        v.uses.append(Use(self, index))

    def remove_input(self, index: int) -> None:
        for i in range(index, len(self.inputs)):
            self.inputs[i].uses.remove(Use(self, i))
        del self.inputs[index]
        for i in range(index, len(self.inputs)):
            self.inputs[i].uses.append(Use(self, i))

    def remove_all_inputs(self) -> None:
        while self.inputs:
            self.remove_input(len(self.inputs) - 1)

    def add_output(self, type: Type, name: Optional[str] = None) -> Value:
        v = Value(self, len(self.outputs), type, name)
        self.outputs.append(v)
        return v

    def erase_output(self, index: int) -> None:
        if self.outputs[index].uses:
            raise IRError(f"cannot erase output {index} of {self.kind}: it still has uses")
        del self.outputs[index]
        for i, v in enumerate(self.outputs):
            v.offset = i

    @property
    def output(self) -> Value:
        if len(self.outputs) != 1:
            raise IRError(f"{self.kind} has {len(self.outputs)} outputs, not one")
        return self.outputs[0]

    def add_block(self) -> Block:
        b = Block(self.graph, self)
        self.blocks.append(b)
        return b

    # -- position in a block ------------------------------------------------------------
    def insert_before(self, other: Node) -> Node:
        """Link this (unlinked) node just before ``other``."""
        if self.owner is not None:
            raise IRError(f"{self.kind} is already in a block")
        if other.prev is None or other.owner is None:
            raise IRError("cannot insert before a block's param node")
        self.owner, self.prev, self.next = other.owner, other.prev, other
        other.prev.next = self
        other.prev = self
        return self

    def move_before(self, other: Node) -> None:
        self.unlink()
        self.insert_before(other)

    def unlink(self) -> None:
        if self.prev is None or self.next is None:
            raise IRError(f"{self.kind} is not in a block")
        self.prev.next, self.next.prev = self.next, self.prev
        self.owner = self.prev = self.next = None

    def destroy(self) -> None:
        """Unlink and drop inputs; the outputs must have no uses left."""
        for v in self.outputs:
            if v.uses:
                raise IRError(f"cannot destroy {self.kind}: output %{v.name} still has uses")
        for b in self.blocks:
            b.return_node.remove_all_inputs()  # first: block outputs are uses of inner values
            for n in reversed(list(b.nodes)):
                n.destroy()
        self.remove_all_inputs()
        if self.owner is not None:
            self.unlink()

    def __repr__(self) -> str:
        return f"<Node {self.kind}>"


class Block:
    """A list of nodes between a ``prim::Param`` and a ``prim::Return`` sentinel."""

    __slots__ = ("graph", "owner", "param_node", "return_node")

    def __init__(self, graph: Graph, owner: Optional[Node]) -> None:
        self.graph = graph
        self.owner = owner  # the node owning this block; None for the graph's top block
        self.param_node = Node(graph, "prim::Param")
        self.return_node = Node(graph, "prim::Return")
        for n in (self.param_node, self.return_node):
            n.owner = self
        self.param_node.next = self.return_node
        self.return_node.prev = self.param_node

    @property
    def inputs(self) -> list[Value]:
        return self.param_node.outputs

    @property
    def outputs(self) -> list[Value]:
        return self.return_node.inputs

    def add_input(self, type: Type, name: Optional[str] = None) -> Value:
        return self.param_node.add_output(type, name)

    def register_output(self, v: Value) -> int:
        self.return_node.add_input(v)
        return len(self.return_node.inputs) - 1

    @property
    def nodes(self) -> Iterator[Node]:
        """The nodes in order; safe against removal of the current node while iterating."""
        n = self.param_node.next
        while n is not None and n is not self.return_node:
            nxt = n.next
            yield n
            n = nxt

    def append(self, node: Node) -> Node:
        return node.insert_before(self.return_node)



class Graph:
    """A function body: one top-level block."""

    def __init__(self) -> None:
        self.block = Block(self, None)

    @property
    def inputs(self) -> list[Value]:
        return self.block.inputs

    @property
    def outputs(self) -> list[Value]:
        return self.block.outputs

    def add_input(self, type: Type, name: Optional[str] = None) -> Value:
        return self.block.add_input(type, name)

    def register_output(self, v: Value) -> int:
        return self.block.register_output(v)

    @property
    def nodes(self) -> Iterator[Node]:
        return self.block.nodes

    def create(self, kind: str, inputs: Sequence[Value] = (),
               output_types: Sequence[Type] = (),
               attrs: Optional[dict[str, Any]] = None) -> Node:
        """A new node, not yet in any block."""
        n = Node(self, kind, attrs)
        for v in inputs:
            n.add_input(v)
        for t in output_types:
            n.add_output(t)
        return n

    def all_nodes(self) -> Iterator[Node]:
        """Every node, nested blocks included, in program order (pre-order)."""
        yield from walk(self.block)

    def __str__(self) -> str:
        from kiln.ir.printer import print_graph
        return print_graph(self)

    def copy(self) -> Graph:
        """A deep copy of this graph."""
        g = Graph()
        env: dict[Value, Value] = {}
        for v in self.inputs:
            env[v] = g.add_input(v.type, v.name)
        clone_block_into(self.block, g.block, env)
        return g


def tensor_constants(graph: Graph) -> Iterator[Node]:
    """The ``prim::Constant`` nodes (nested blocks included) whose value is a tensor."""
    for n in graph.all_nodes():
        if n.kind == "prim::Constant" and isinstance(n.attrs.get("value"), torch.Tensor):
            yield n


def walk(block: Block) -> Iterator[Node]:
    for n in block.nodes:
        yield n
        for b in n.blocks:
            yield from walk(b)


def clone_node(src: Node, graph: Graph, env: dict[Value, Value]) -> Node:
    """A copy of ``src`` (with nested blocks) in ``graph``; inputs are looked up in ``env``,
    and ``env`` learns the new outputs.  The copy is not linked into a block.  A subgraph held
    in an attribute (a fusion group's) is copied too."""
    attrs = {k: v.copy() if isinstance(v, Graph) else v for k, v in src.attrs.items()}
    n = graph.create(src.kind, [env[v] for v in src.inputs], attrs=attrs)
    n.op, n.source, n.scope = src.op, src.source, src.scope
    for v in src.outputs:
        env[v] = n.add_output(v.type, v.name)
    for sb in src.blocks:
        nb = n.add_block()
        for v in sb.inputs:
            env[v] = nb.add_input(v.type, v.name)
        clone_block_into(sb, nb, env)
    return n


def clone_block_into(src: Block, dst: Block, env: dict[Value, Value]) -> None:
    """Append copies of ``src``'s nodes to ``dst`` and register its outputs there.

    ``env`` must already map ``src``'s inputs (and any outer values they use)."""
    for n in src.nodes:
        dst.append(clone_node(n, dst.graph, env))
    for v in src.outputs:
        dst.register_output(env[v])
