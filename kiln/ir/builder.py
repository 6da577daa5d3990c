"""The builder every frontend uses to add nodes to a graph.

A :class:`Builder` holds an insertion point (a block and the node to insert before) and the
source location to stamp on new nodes.  The tracer, the script compiler and the archive loader
all emit IR through it, so the same program builds the same graph whichever way it came in.
"""

from __future__ import annotations

import builtins
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from typing import Any, Optional

from kiln.errors import IRError
from kiln.ir import objects as _objects  # noqa: F401  (registers the object operators)
from kiln.ir import prims as _prims  # noqa: F401  (registers the prim operators)
from kiln.ir.graph import Block, Graph, Node, SourceRange, Value
from kiln.ir.ops import OpInfo, registry
from kiln.ir.types import (
    TENSOR,
    AnyType,
    BoolType,
    ListType,
    NamedTupleType,
    NoneType,
    OptionalType,
    StrType,
    TensorType,
    TupleType,
    Type,
    type_of_value,
)


class Builder:
    def __init__(self, graph: Graph, block: Optional[Block] = None) -> None:
        self.graph = graph
        self.block = block or graph.block
        self.before: Node = self.block.return_node   # insert before this node
        self.source: Optional[SourceRange] = None
        self.scope: Optional[str] = None

    # -- insertion point ---------------------------------------------------------------
    @contextmanager
    def at_end(self, block: Block) -> Iterator[Builder]:
        """Temporarily insert at the end of ``block``."""
        saved = self.block, self.before
        self.block, self.before = block, block.return_node
        try:
            yield self
        finally:
            self.block, self.before = saved

    def insert(self, node: Node) -> Node:
        node.insert_before(self.before)
        if node.source is None:
            node.source = self.source
        if node.scope is None:
            node.scope = self.scope
        return node

    # -- operators ---------------------------------------------------------------------
    def op(self, op: str | OpInfo, inputs: Sequence[Value],
           output_types: Optional[Sequence[Type]] = None, **attrs: Any) -> Node:
        """Insert a node for a registry operator (``"aten::add.Tensor"`` or an OpInfo).

        Output types default to the schema's; frontends that know more (a trace) pass them."""
        info = registry.get(op) if isinstance(op, str) else op
        schema = info.schema
        if output_types is None:
            if schema.is_varret:
                raise IRError(f"{schema.qualified} has variadic results: give output_types")
            output_types = [r.type for r in schema.returns]
        node = self.graph.create(schema.name, list(inputs), list(output_types), attrs)
        node.op = info
        return self.insert(node)

    def value(self, op: str | OpInfo, inputs: Sequence[Value], type: Optional[Type] = None,
              **attrs: Any) -> Value:
        """Insert a one-result operator and return its result."""
        return self.op(op, inputs, None if type is None else [type], **attrs).output

    def constant(self, value: Any, type: Optional[Type] = None) -> Value:
        node = self.graph.create("prim::Constant", (), [type or type_of_value(value)], {"value": value})
        return self.insert(node).output

    # -- containers --------------------------------------------------------------------
    def tuple(self, values: Sequence[Value]) -> Value:
        return self.value("prim::TupleConstruct", values, TupleType(tuple(v.type for v in values)))

    def list(self, values: Sequence[Value], elem: Optional[Type] = None) -> Value:
        if elem is None:
            elem = values[0].type if values else TENSOR
            if any(v.type != elem for v in values):
                elem = _common_elem(values)
        return self.value("prim::ListConstruct", values, ListType(elem))

    def dict(self, keys: Sequence[Value], values: Sequence[Value], type: Type) -> Value:
        flat = [x for kv in zip(keys, values) for x in kv]
        return self.value("prim::DictConstruct", flat, type)

    def unpack(self, seq: Value, types: Sequence[Type]) -> builtins.list[Value]:
        tuple_like = isinstance(seq.type, (TupleType, NamedTupleType))
        kind = "prim::TupleUnpack" if tuple_like else "prim::ListUnpack"
        return list(self.op(kind, [seq], list(types)).outputs)

    # -- objects -----------------------------------------------------------------------
    def get_attr(self, obj: Value, name: str, type: Type) -> Value:
        v = self.value("prim::GetAttr", [obj], type, name=name)
        v.name = name
        return v

    def set_attr(self, obj: Value, name: str, value: Value) -> Node:
        return self.op("prim::SetAttr", [obj, value], [], name=name)

    def call_method(self, obj: Value, name: str, args: Sequence[Value],
                    output_type: Type) -> Value:
        return self.value("prim::CallMethod", [obj, *args], output_type, name=name)

    # -- control flow ------------------------------------------------------------------
    def if_(self, cond: Value, output_types: Sequence[Type] = ()) -> Node:
        """Insert a ``prim::If`` with empty then/else blocks; fill them with :meth:`at_end`."""
        if cond.type != BoolType:
            raise IRError(f"prim::If condition must be bool, got {cond.type}")
        node = self.graph.create("prim::If", [cond], list(output_types))
        node.add_block()
        node.add_block()
        return self.insert(node)

    def raise_exception(self, message: str, cls: Optional[str] = None) -> Node:
        cls_type = OptionalType(StrType) if cls is None else StrType
        args = [self.constant(message, StrType), self.constant(cls, cls_type)]
        return self.op("prim::RaiseException", args)

    def guard(self, cond: Value, message: str) -> Node:
        """Insert ``if not cond: raise`` -- a check the graph carries to run time."""
        node = self.if_(cond)
        with self.at_end(node.blocks[1]):
            self.raise_exception(message, "RuntimeError")
        return node


def _common_elem(values: Sequence[Value]) -> Type:
    types = {v.type for v in values}
    if all(isinstance(t, TensorType) for t in types):
        return TENSOR
    if NoneType in types and len(types) == 2:
        other = next(t for t in types if t != NoneType)
        return OptionalType(TENSOR if isinstance(other, TensorType) else other)
    return AnyType
