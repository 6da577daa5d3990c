"""Common subexpression elimination, and the alias analysis the optimizer passes share.

Before::

    graph(%x : Tensor, %n : int, %c : bool):
      %one : int = prim::Constant[value=1]()
      %a : int = aten::add(%n, %one)
      %y : Tensor = aten::relu(%x)
      %r : Tensor = prim::If(%c)
        block0():
          %b : int = aten::add(%n, %one)
          %z : Tensor = aten::relu(%x)
          %s : Tensor = aten::add(%z, %z, %b)
          -> (%s)
        block1():
          -> (%y)
      return (%a, %r)

After (the copies inside the block read the outer results)::

    graph(%x : Tensor, %n : int, %c : bool):
      %one : int = prim::Constant[value=1]()
      %a : int = aten::add(%n, %one)
      %y : Tensor = aten::relu(%x)
      %r : Tensor = prim::If(%c)
        block0():
          %s : Tensor = aten::add(%y, %y, %a)
          -> (%s)
        block1():
          -> (%y)
      return (%a, %r)

An explicit walk with a scoped table: each block pushes a table of the nodes seen in it, keyed
by kind, overload, inputs (by identity), attributes and output types; a node equal to one in
its own block or an enclosing one is replaced by it.  Tables of inner blocks are popped when
the walk leaves them, so an outer node may replace an inner one but never the reverse.
Constants with equal literal values are merged too (tensor constants only when they are the
same object; ``0.0`` and ``-0.0`` stay apart).

Candidates are pure nodes without blocks (:attr:`OpInfo.pure`, and not a container mutator
such as ``aten::append``).  **Mutation:** CSE leaves alone every node that reads or produces a
value some node of the graph may write (an in-place operator, a container mutator, a call or
``prim::SetAttr`` receiving it, or anything aliasing such a value, per :class:`AliasSets`).
That is coarser than "skip only across the write", and simpler to trust: a tensor that is
never written is the same tensor wherever it is read.  Values the graph returns are not
treated as written, so two equal results returned by one call may become the same object --
TorchScript's CSE does the same.
"""

from __future__ import annotations

import functools
from collections.abc import Hashable, Iterable
from typing import Any, Optional

import torch

from kiln.ir.graph import Block, Graph, Node, Value
from kiln.ir.ops import Schema, updates_running_stats
from kiln.ir.types import (
    AnyType,
    ClassType,
    DictType,
    FutureType,
    GeneratorType,
    ListType,
    NamedTupleType,
    OptionalType,
    StorageType,
    TensorType,
    TupleType,
    Type,
    UnionType,
    VarType,
)

# -- alias analysis -------------------------------------------------------------------------------

# List and dict builtins that change their first argument.  Kiln's own declarations of them may
# not mark the argument as written, so the passes also recognise them by name.
_CONTAINER_MUTATORS = frozenset({
    "append", "extend", "insert", "pop", "clear", "remove", "reverse", "sort", "_set_item",
    "__setitem__", "__delitem__", "setdefault", "update", "popitem", "add_", "_list_add",
})
# ATen operators that update their running statistics (inputs 3 and 4) when input 5
# (``training`` / ``use_input_stats``) is true, although their schemas do not say so.
_UPDATES_RUNNING_STATS = frozenset({
    "batch_norm", "instance_norm", "_batch_norm_impl_index", "native_batch_norm",
    "cudnn_batch_norm", "miopen_batch_norm",
})
# ATen operators whose result may be their first input itself (dropout when not training,
# type_as/_cast_* to the same dtype, atleast_Nd of a tensor with enough dims ...), although
# their schemas annotate no alias.
_MAY_RETURN_INPUT = frozenset({
    "dropout", "feature_dropout", "alpha_dropout", "feature_alpha_dropout", "type_as",
    "atleast_1d", "atleast_2d", "atleast_3d", "to_dense", "sum_to_size",
    *(f"_cast_{t}" for t in ("Byte", "Char", "Double", "Float", "Int", "Long", "Short", "Half")),
})


def is_mutable_type(t: Type) -> bool:
    """Whether a value of type ``t`` may hold state that an operator can change in place
    (tensors, lists, dicts, objects, and anything that may contain one)."""
    if isinstance(t, (TensorType, ListType, DictType, ClassType, FutureType, VarType)):
        return True
    if isinstance(t, OptionalType):
        return is_mutable_type(t.elem)
    if isinstance(t, (TupleType, NamedTupleType, UnionType)):
        return any(is_mutable_type(e) for e in t.elems)
    return t in (AnyType, GeneratorType, StorageType)


_Pairs = Optional[tuple[tuple[int, int], ...]]   # (output, input) index pairs that may alias


@functools.cache
def _dispatcher_summary(qualified: str, n_args: int, n_returns: int) -> tuple[_Pairs, tuple[int, ...]]:
    """What the dispatcher's schema for an operator Kiln also knows (same name and arity) says:
    ``(output, input)`` pairs that may alias -- None when its annotations cannot say (no such
    schema, wildcards ``*``, containers of aliases such as ``Tensor(a)[]``) -- and the indices
    of the arguments it writes (``Tensor(a!)``)."""
    name, _, overload = qualified.partition(".")
    ns, _, op = name.partition("::")
    try:
        schema = getattr(getattr(getattr(torch.ops, ns), op), overload or "default")._schema
    except (AttributeError, RuntimeError):
        return None, ()
    args, rets = list(schema.arguments), list(schema.returns)
    if len(args) != n_args or len(rets) != n_returns:
        return None, ()
    writes = tuple(i for i, a in enumerate(args) if a.alias_info is not None and a.alias_info.is_write)
    infos = [a.alias_info for a in (*args, *rets) if a.alias_info is not None]
    if any("*" in (i.before_set | i.after_set) for i in infos) or \
            (infos and any(str(r.type) != "Tensor" for r in rets)):
        return None, writes
    if any(str(r.type) != "Tensor" and _holds_references(r.type) for r in rets):
        # a container, ``Any`` or a type variable returned without annotations may still hold
        # (or be) an input: ``prim::TupleIndex``, ``prim::unchecked_cast``, ``aten::slice.t``,
        # ``aten::broadcast_tensors`` (views)
        return None, writes
    pairs = tuple((o, i) for o, r in enumerate(rets) if r.alias_info is not None
                  for i, a in enumerate(args)
                  if a.alias_info is not None and a.alias_info.before_set & r.alias_info.before_set)
    return pairs, writes


_REFERENCE_KINDS = frozenset({"TensorType", "VarType", "AnyType", "ClassType", "InterfaceType",
                              "FutureType", "AwaitType", "RRefType", "StorageType"})


def _holds_references(t: Any) -> bool:
    """Whether a value of the dispatcher type ``t`` may be or contain a mutable object."""
    return t.kind() in _REFERENCE_KINDS or any(_holds_references(c) for c in t.containedTypes())


def _summary(node: Node) -> tuple[_Pairs, tuple[int, ...]]:
    derived = node.op.derived
    found: Optional[tuple[_Pairs, tuple[int, ...]]] = derived.get("alias summary")
    if found is None:
        found = derived["alias summary"] = _schema_summary(node.op.schema)
    return found


def _schema_summary(schema: Schema) -> tuple[_Pairs, tuple[int, ...]]:
    pairs, writes = _dispatcher_summary(schema.qualified, len(schema.arguments), len(schema.returns))
    if schema.is_vararg or schema.is_varret:
        return None, writes
    if pairs is not None and schema.opname in _MAY_RETURN_INPUT and schema.arguments and schema.returns:
        pairs = (*pairs, (0, 0))
    return pairs, writes


def written_inputs(node: Node) -> list[int]:
    """Indices of the inputs ``node`` may write (all of them for calls and unknown nodes)."""
    op = node.op
    if op is None or op.side_effects:
        return list(range(len(node.inputs)))
    key = ("written", len(node.inputs), op.schema.opname in _UPDATES_RUNNING_STATS and len(node.inputs) > 5
           and not _is_false(node.inputs[5]))
    found: Optional[tuple[int, ...]] = op.derived.get(key)
    if found is None:
        found = op.derived[key] = _written_inputs(node)
    return list(found)


def _written_inputs(node: Node) -> tuple[int, ...]:
    op = node.op
    assert op is not None
    args = op.schema.arguments
    out = [i for i, a in enumerate(args[:len(node.inputs)]) if a.is_write]
    out += [i for i in _summary(node)[1] if i < len(node.inputs)]
    first = args[0].type if args else None
    if op.schema.opname in _CONTAINER_MUTATORS and isinstance(first, (ListType, DictType)):
        out.append(0)
    elif op.schema.opname.endswith("_") and not op.schema.opname.endswith("__") and node.inputs:
        out.append(0)   # the in-place naming convention, whatever the schema says
    if op.schema.opname in _UPDATES_RUNNING_STATS and len(node.inputs) > 5 and not _is_false(node.inputs[5]):
        out += [3, 4]
    return tuple(sorted(set(out)))


def _is_false(v: Value) -> bool:
    return v.node.kind == "prim::Constant" and v.node.attrs.get("value") is False


def is_effect_free(node: Node) -> bool:
    """A registry operator that neither writes, nor has side effects, nor is random."""
    return node.op is not None and node.op.pure and not written_inputs(node) \
        and not updates_running_stats(node)


class AliasSets:
    """Which values may share mutable state, and which of those the graph writes or returns.

    A union-find over the graph's values of mutable type (:func:`is_mutable_type`).  A node's
    mutable outputs join the inputs they may alias: exactly as the dispatcher's annotations say
    for ATen operators (``view``'s result joins ``self``, ``add``'s result is fresh; the few
    that may return their input unannotated, such as ``dropout`` when not training, join it too:
    :data:`_MAY_RETURN_INPUT`), and all of its mutable inputs otherwise (containers and their
    elements, unannotated results that may hold references -- ``Any``, ``t[]`` --, attributes
    and their object, unknown operators).  ``prim::If``/``prim::Loop`` join each output with the
    block results and loop-carried values behind it.  A set is *written* when any node may write
    a member (:func:`written_inputs`), and *escapes* when the graph returns a member.  Scalars
    (ints, floats, strings, tuples of those) are never written and never join a set."""

    def __init__(self, graph: Graph) -> None:
        self._parent: dict[Value, Value] = {}
        writes: list[Value] = []
        for node in graph.all_nodes():
            self._visit(node, writes)
        self._written = {self._find(v) for v in writes if is_mutable_type(v.type)}
        self._escaping = {self._find(v) for v in graph.outputs if is_mutable_type(v.type)}

    def is_written(self, v: Value) -> bool:
        return is_mutable_type(v.type) and self._find(v) in self._written

    def escapes(self, v: Value) -> bool:
        return is_mutable_type(v.type) and self._find(v) in self._escaping

    def stand_in(self, old: Value, new: Value) -> None:
        """``new`` replaces ``old`` (a folded constant): it joins ``old``'s set."""
        if is_mutable_type(new.type):
            self._parent[new] = self._find(old)

    def _find(self, v: Value) -> Value:
        root = v
        while self._parent.get(root, root) is not root:
            root = self._parent[root]
        while v is not root:   # path compression
            nxt = self._parent[v]
            self._parent[v] = root
            v = nxt
        return root

    def _union(self, values: Iterable[Value]) -> None:
        roots = [self._find(v) for v in values if is_mutable_type(v.type)]
        for r in roots[1:]:
            if r is not roots[0]:
                self._parent[r] = roots[0]

    def _visit(self, node: Node, writes: list[Value]) -> None:
        if node.kind == "prim::If":
            for j, out in enumerate(node.outputs):
                self._union([out, *(b.outputs[j] for b in node.blocks)])
        elif node.kind == "prim::Loop":
            body = node.blocks[0]
            for j, out in enumerate(node.outputs):
                self._union([node.inputs[2 + j], body.inputs[1 + j], body.outputs[1 + j], out])
        elif node.kind != "prim::Constant":
            writes.extend(node.inputs[i] for i in written_inputs(node))
            pairs = None if node.op is None or node.op.side_effects else _summary(node)[0]
            if pairs is None:
                self._union([*node.inputs, *node.outputs])
            else:
                for o, i in pairs:
                    if o < len(node.outputs) and i < len(node.inputs):
                        self._union([node.outputs[o], node.inputs[i]])


# -- the pass -----------------------------------------------------------------------------------

_LITERALS = (bool, int, float, complex, str, torch.device, torch.dtype, torch.layout,
             torch.memory_format)


def _literal_key(value: Any) -> Hashable:
    """A key equal for equal literals (``repr`` keeps ``0.0``/``-0.0`` and ``1``/``True``
    apart); other objects (tensors, opaque payloads) are keyed by identity."""
    if value is None or isinstance(value, _LITERALS):
        return (type(value).__name__, repr(value))
    if isinstance(value, (list, tuple)):
        return (type(value).__name__, tuple(_literal_key(x) for x in value))
    return ("object", id(value))


def _key(node: Node, aliases: AliasSets) -> Optional[Hashable]:
    """The node's identity for CSE, or None when it must not be merged."""
    if node.blocks or not node.outputs:
        return None
    if node.kind != "prim::Constant" and not is_effect_free(node):
        return None
    if any(aliases.is_written(v) for v in (*node.inputs, *node.outputs)):
        return None
    attrs = tuple(sorted((k, _literal_key(v)) for k, v in node.attrs.items()))
    overload = node.op.schema.qualified if node.op is not None else ""
    return (node.kind, overload, tuple(node.inputs), attrs, tuple(v.type for v in node.outputs))


def eliminate_common_subexpressions(graph: Graph) -> bool:
    """Replace each pure node equal to an earlier visible one by it; return whether any was."""
    return _cse_block(graph.block, [], AliasSets(graph))


def _cse_block(block: Block, scopes: list[dict[Hashable, Node]], aliases: AliasSets) -> bool:
    changed = False
    table: dict[Hashable, Node] = {}
    scopes.append(table)
    for node in list(block.nodes):
        for b in node.blocks:
            changed |= _cse_block(b, scopes, aliases)
        key = _key(node, aliases)
        if key is None:
            continue
        earlier = next((s[key] for s in reversed(scopes) if key in s), None)
        if earlier is None:
            table[key] = node
            continue
        for old, new in zip(node.outputs, earlier.outputs):
            old.replace_all_uses_with(new)
        node.destroy()
        changed = True
    scopes.pop()
    return changed
