"""The IR verifier: is a graph well formed?

:func:`verify` walks a graph once, in program order, and raises :class:`~kiln.errors.IRError`
on the first rule it finds broken.  Passes run it after every rewrite in tests (and in debug
mode), so the rules are the contract every frontend and pass must keep:

* **Structure.** Each block is a doubly linked list from its ``prim::Param`` sentinel to its
  ``prim::Return`` sentinel; ``node.owner``/``prev``/``next``, ``block.owner`` and the
  ``graph`` back-links agree with that list, and ``value.node``/``value.offset`` with the
  producing node.  ``prim::Param``/``prim::Return`` appear only as sentinels.
* **Use lists.** Every input slot ``(node, i)`` of a value has exactly one ``Use(node, i)`` in
  the value's ``uses``, and every entry of ``uses`` names a live input slot that reads the
  value (a destroyed or unlinked node left behind in a use list is an error).
* **SSA dominance.** A value is defined once, and is visible to the nodes after its definition
  in the same block and to every block nested in those nodes -- never before its definition,
  never outside its block.  A node's own outputs are not visible inside its own blocks.
* **Structural kinds.** ``prim::Constant`` has a ``value`` attribute, no inputs and one
  output whose type fits the value.  ``prim::If`` has a bool condition, two blocks without
  params, and block outputs whose types unify into the node's output types.  ``prim::Loop``
  follows TorchScript: inputs ``(max_trip_count: int, start_condition: bool, *carried)``, one
  block with params ``(iter: int, *carried)`` and outputs ``(continue_condition: bool,
  *carried)``, node outputs ``= final carried``.
* **Schemas.** Every other node has an operator entry (``node.op``) whose schema names the
  node's kind.  Without variadic arguments the input count lies in ``[required, total]`` and
  each input type fits its argument; without variadic returns the output count and types fit.
  "Fits" is :func:`kiln.ir.types.is_subtype` with TorchScript's implicit conversions
  (:func:`accepts`).  ``prim::GetAttr``/``SetAttr``/``CallMethod`` carry a ``name``.
  ``prim::TypeCheck`` has one tensor type per tensor input in ``types``; a fusion group's
  ``Subgraph`` is itself a valid graph with the node's input and output counts and types.

The walk keeps a set of visible values (entering a block adds its params, each node adds its
outputs, leaving the block removes what it defined), so the whole check is O(nodes + uses).
Error messages name the node (kind, source location, position) and show the surrounding IR:
the printed graph when :mod:`kiln.ir.printer` is importable, else a compact listing with the
offending node marked.
"""

from __future__ import annotations

from typing import Any, NoReturn, Optional

from kiln.errors import IRError
from kiln.ir import prims as _prims  # noqa: F401  (registers the prim operators)
from kiln.ir.graph import SUBGRAPH_ATTR, Block, Graph, Node, Use, Value, subgraph_of
from kiln.ir.types import (
    AnyType,
    BoolType,
    DeviceType,
    DictType,
    IntType,
    ListType,
    NamedTupleType,
    OptionalType,
    TensorType,
    TupleType,
    Type,
    accepts,
    is_subtype,
    type_of_value,
    unify,
)

__all__ = ["verify", "accepts", "describe_node", "compact_listing"]

# TorchScript stores dtypes, layouts and memory formats as plain ints in graphs.
_NAMED_KINDS = ("prim::GetAttr", "prim::SetAttr", "prim::CallMethod")
_LISTING_WINDOW = 25   # lines shown either side of the offending node in a long listing


def verify(graph: Graph) -> None:
    """Raise :class:`IRError` if ``graph`` breaks a rule of the IR (see the module docstring)."""
    _Verifier(graph).run()


def _constant_fits(value: Any, declared: Type) -> bool:
    """Whether a constant's Python value can have its declared IR type (loosely: containers
    only by kind, opaque objects always)."""
    if declared == AnyType:
        return True
    if isinstance(declared, OptionalType) and value is not None:
        declared = declared.elem
    if isinstance(value, list):
        return isinstance(declared, ListType)
    if isinstance(value, tuple):
        return isinstance(declared, (TupleType, NamedTupleType))
    if isinstance(value, dict):
        return isinstance(declared, DictType)
    if isinstance(value, str) and declared == DeviceType:
        return True   # TorchScript spells device constants as strings (value="cpu")
    vt = type_of_value(value)
    return vt == AnyType or accepts(declared, vt)


class _Verifier:
    """One walk over a graph; see the module docstring for the rules."""

    def __init__(self, graph: Graph) -> None:
        self.graph = graph
        self.visible: set[Value] = set()
        self.defined: set[Value] = set()
        self.nodes: set[Node] = set()
        self.use_sets: dict[Value, set[Use]] = {}
        self.names: Optional[dict[Value, str]] = None

    def run(self) -> None:
        self.check_block(self.graph.block, None)
        self.check_use_lists()

    def fail(self, node: Optional[Node], msg: str) -> NoReturn:
        raise IRError(_report(self.graph, node, msg))

    def vname(self, v: Value) -> str:
        """A value's name as the surrounding IR in the message shows it (error path only)."""
        if self.names is None:
            self.names = _printer_names(self.graph) or {}
        name = self.names.get(v)
        return f"%{name}" if name is not None else _hint_name(v)

    # -- blocks and links ----------------------------------------------------------------
    def check_block(self, block: Block, owner: Optional[Node]) -> None:
        where = owner if owner is not None else block.param_node
        if block.graph is not self.graph:
            self.fail(where, "a block belongs to another graph")
        if block.owner is not owner:
            self.fail(where, "a block's owner link does not point at the node holding it")
        for sentinel, kind in ((block.param_node, "prim::Param"), (block.return_node, "prim::Return")):
            if sentinel.kind != kind or sentinel.owner is not block or sentinel.graph is not self.graph:
                self.fail(where, f"the block's {kind} sentinel is broken (kind {sentinel.kind!r}, "
                                 "wrong owner or graph)")
        params = block.param_node
        if params.prev is not None or params.inputs or params.blocks:
            self.fail(params, "a prim::Param sentinel has a predecessor, inputs or blocks")
        self.nodes.add(params)
        self.define(params)
        defined = list(block.inputs)
        prev, node = params, params.next
        while node is not block.return_node:
            if node is None:
                self.fail(prev, "the block's node list ends without reaching its prim::Return")
            if node in self.nodes:
                self.fail(node, "node appears twice in the graph (a cycle in the node list?)")
            if node.prev is not prev or node.owner is not block:
                self.fail(node, "node's prev/owner links disagree with the block's node list")
            self.check_node(node)
            defined.extend(node.outputs)
            prev, node = node, node.next
        self.check_return(block.return_node, prev)
        self.visible.difference_update(defined)

    def check_return(self, ret: Node, prev: Node) -> None:
        if ret.prev is not prev or ret.next is not None:
            self.fail(ret, "the prim::Return sentinel's prev/next links are broken")
        if ret.outputs or ret.blocks:
            self.fail(ret, "a prim::Return sentinel has outputs or blocks")
        self.nodes.add(ret)
        self.check_inputs(ret)

    def check_node(self, node: Node) -> None:
        self.nodes.add(node)
        if node.graph is not self.graph:
            self.fail(node, "node belongs to another graph")
        self.check_inputs(node)
        _check_kind(self, node)
        for block in node.blocks:
            self.check_block(block, node)
        self.define(node)

    # -- values and uses -------------------------------------------------------------------
    def define(self, node: Node) -> None:
        for i, v in enumerate(node.outputs):
            if v.node is not node or v.offset != i:
                self.fail(node, f"output {i} ({self.vname(v)}) has value.node/offset "
                                f"({v.node.kind}, {v.offset}) that disagree with its producer")
            if v in self.defined:
                self.fail(node, f"{self.vname(v)} is defined twice")
            self.defined.add(v)
            self.visible.add(v)

    def uses_of(self, v: Value) -> set[Use]:
        uses = self.use_sets.get(v)
        if uses is None:
            uses = self.use_sets[v] = set(v.uses)
            if len(uses) != len(v.uses):
                dup = next(u for u in v.uses if v.uses.count(u) > 1)
                self.fail(dup.user, f"the use list of {self.vname(v)} holds input {dup.index} "
                                    "of this node twice")
        return uses

    def check_inputs(self, node: Node) -> None:
        for i, v in enumerate(node.inputs):
            if Use(node, i) not in self.uses_of(v):
                self.fail(node, f"input {i} reads {self.vname(v)}, but that value's use list has "
                                "no entry for it (inputs must change through Node.add_input/"
                                "replace_input/remove_input)")
            if v not in self.visible:
                self.fail(node, f"input {i} {self.vname(v)} {_why_not_visible(self.graph, v, node)}")

    def check_use_lists(self) -> None:
        for v in self.defined:
            for use in v.uses:
                user, i = use.user, use.index
                if user not in self.nodes:
                    self.fail(v.node, f"the use list of {self.vname(v)} names a {user.kind} node "
                                      "that is not in the graph (destroyed or unlinked?)")
                if i >= len(user.inputs) or user.inputs[i] is not v:
                    self.fail(user, f"the use list of {self.vname(v)} says input {i} of this "
                                    "node reads it, but that input slot holds something else")


# -- per-kind rules -------------------------------------------------------------------------

def _check_kind(vf: _Verifier, node: Node) -> None:
    kind = node.kind
    if kind in ("prim::Param", "prim::Return"):
        vf.fail(node, f"{kind} may appear only as a block's sentinel")
    if kind == "prim::Constant":
        _check_constant(vf, node)
    elif kind == "prim::If":
        _check_if(vf, node)
    elif kind == "prim::Loop":
        _check_loop(vf, node)
    else:
        _check_schema(vf, node)


def _check_constant(vf: _Verifier, node: Node) -> None:
    if "value" not in node.attrs:
        vf.fail(node, "prim::Constant has no 'value' attribute")
    if node.inputs or node.blocks or len(node.outputs) != 1:
        vf.fail(node, "prim::Constant must have no inputs, no blocks and exactly one output")
    value, declared = node.attrs["value"], node.outputs[0].type
    if not _constant_fits(value, declared):
        vf.fail(node, f"constant value {_short_repr(value)} does not fit its declared type {declared}")


def _check_if(vf: _Verifier, node: Node) -> None:
    if len(node.inputs) != 1 or node.inputs[0].type != BoolType:
        got = ", ".join(str(v.type) for v in node.inputs)
        vf.fail(node, f"prim::If takes exactly one bool condition, got ({got})")
    if len(node.blocks) != 2:
        vf.fail(node, f"prim::If needs two blocks (then, else), has {len(node.blocks)}")
    for bi, block in enumerate(node.blocks):
        if block.inputs:
            vf.fail(node, f"block{bi} of prim::If must have no params, has {len(block.inputs)}")
        if len(block.outputs) != len(node.outputs):
            vf.fail(node, f"block{bi} of prim::If returns {len(block.outputs)} values but the node "
                          f"has {len(node.outputs)} outputs")
    then_out, else_out = node.blocks[0].outputs, node.blocks[1].outputs
    for i, (out, a, b) in enumerate(zip(node.outputs, then_out, else_out)):
        if unify(a.type, b.type) is None:
            vf.fail(node, f"output {i}: the branches return {a.type} and {b.type}, which do not unify")
        for bi, v in enumerate((a, b)):
            if not is_subtype(v.type, out.type):
                vf.fail(node, f"output {i} has type {out.type}, but block{bi} returns "
                              f"{vf.vname(v)} of type {v.type}")


def _check_loop(vf: _Verifier, node: Node) -> None:
    if len(node.inputs) < 2 or len(node.blocks) != 1:
        vf.fail(node, "prim::Loop needs inputs (max_trip_count, start_condition, *carried) "
                      f"and one block; has {len(node.inputs)} inputs, {len(node.blocks)} blocks")
    body = node.blocks[0]
    carried = node.inputs[2:]
    n = len(carried)
    if len(body.inputs) != n + 1 or len(body.outputs) != n + 1 or len(node.outputs) != n:
        vf.fail(node, f"prim::Loop with {n} carried values needs {n + 1} block params "
                      f"(iter, *carried), {n + 1} block outputs (condition, *carried) and {n} "
                      f"node outputs; has {len(body.inputs)}, {len(body.outputs)}, {len(node.outputs)}")
    expect = ((node.inputs[0], IntType, "max_trip_count input"),
              (node.inputs[1], BoolType, "start_condition input"),
              (body.inputs[0], IntType, "iteration block param"),
              (body.outputs[0], BoolType, "continue_condition block output"))
    for v, t, what in expect:
        if v.type != t:
            vf.fail(node, f"prim::Loop's {what} must be {t}, got {vf.vname(v)} of type {v.type}")
    for i in range(n):
        init, param, ret, out = carried[i], body.inputs[i + 1], body.outputs[i + 1], node.outputs[i]
        for v, sup, what in ((init, param, "initial value"), (ret, param, "value returned by the body"),
                             (init, out, "initial value"), (ret, out, "value returned by the body")):
            if not is_subtype(v.type, sup.type):
                vf.fail(node, f"carried value {i}: the {what} {vf.vname(v)} : {v.type} does not fit "
                              f"the {'block param' if sup is param else 'loop output'} of type {sup.type}")


def _check_schema(vf: _Verifier, node: Node) -> None:
    info = node.op
    if info is None or not hasattr(info, "schema"):
        vf.fail(node, f"{node.kind} is not a structural kind and has no operator entry (node.op)")
    schema = info.schema
    if schema.name != node.kind:
        vf.fail(node, f"node kind {node.kind} does not match its operator {schema.qualified}")
    if node.blocks:
        vf.fail(node, f"{node.kind} is not a control-flow node but has {len(node.blocks)} blocks")
    if node.kind in _NAMED_KINDS and not (isinstance(node.attrs.get("name"), str) and node.attrs["name"]):
        vf.fail(node, f"{node.kind} needs a non-empty 'name' attribute")
    if not schema.is_vararg:
        _check_arguments(vf, node, schema)
    if not schema.is_varret:
        _check_returns(vf, node, schema)
    rule = _KIND_RULES.get(node.kind)
    if rule is not None:
        rule(vf, node)


def _check_type_check(vf: _Verifier, node: Node) -> None:
    types = node.attrs.get("types")
    if not isinstance(types, list) or len(types) != len(node.inputs) or \
            not all(isinstance(t, TensorType) for t in types):
        vf.fail(node, "prim::TypeCheck needs a 'types' attribute holding one tensor type per input")
    for i, v in enumerate(node.inputs):
        if not isinstance(v.type, TensorType):
            vf.fail(node, f"input {i} of prim::TypeCheck ({vf.vname(v)}) is a {v.type}, not a tensor")


def _check_subgraph(vf: _Verifier, node: Node) -> None:
    """A fusion group: its subgraph is valid and takes and returns what the node does."""
    sub = subgraph_of(node)
    if sub is None:
        vf.fail(node, f"{node.kind} needs a graph in its '{SUBGRAPH_ATTR}' attribute")
    if len(sub.inputs) != len(node.inputs) or len(sub.outputs) != len(node.outputs):
        vf.fail(node, f"{node.kind} has {len(node.inputs)} inputs and {len(node.outputs)} outputs, but its "
                      f"subgraph takes {len(sub.inputs)} and returns {len(sub.outputs)}")
    for i, (v, p) in enumerate(zip(node.inputs, sub.inputs)):
        # a tensor's refinements are what the group was built for, checked when it runs
        tensors = isinstance(p.type, TensorType) and isinstance(v.type, TensorType)
        if not tensors and not accepts(p.type, v.type):
            vf.fail(node, f"input {i} {vf.vname(v)} : {v.type} does not fit the subgraph's input "
                          f"type {p.type}")
    for i, (v, r) in enumerate(zip(node.outputs, sub.outputs)):
        if not is_subtype(r.type, v.type):
            vf.fail(node, f"output {i} is typed {v.type}, but the subgraph returns a {r.type}")
    try:
        verify(sub)
    except IRError as e:
        vf.fail(node, f"its subgraph is invalid: {e}")


_KIND_RULES = {"prim::TypeCheck": _check_type_check, "prim::FusionGroup": _check_subgraph}


def _check_arguments(vf: _Verifier, node: Node, schema: Any) -> None:
    args = schema.arguments
    required = max((i + 1 for i, a in enumerate(args) if not a.has_default), default=0)
    if not required <= len(node.inputs) <= len(args):
        bound = str(required) if required == len(args) else f"{required} to {len(args)}"
        vf.fail(node, f"{schema.qualified} takes {bound} inputs, got {len(node.inputs)}\n"
                      f"  schema: {schema}")
    for i, (v, a) in enumerate(zip(node.inputs, args)):
        if not accepts(a.type, v.type, fixed_size=a.fixed_size):
            vf.fail(node, f"input {i} ({a.name!r}) of {schema.qualified} expects {a.type}, got "
                          f"{vf.vname(v)} of type {v.type}\n  schema: {schema}")


def _check_returns(vf: _Verifier, node: Node, schema: Any) -> None:
    rets = schema.returns
    if len(node.outputs) != len(rets):
        vf.fail(node, f"{schema.qualified} returns {len(rets)} values but the node has "
                      f"{len(node.outputs)} outputs\n  schema: {schema}")
    for i, (v, r) in enumerate(zip(node.outputs, rets)):
        if not accepts(r.type, v.type):
            vf.fail(node, f"output {i} of {schema.qualified} is typed {v.type}, which the schema's "
                          f"return type {r.type} does not allow\n  schema: {schema}")


# -- messages ---------------------------------------------------------------------------------

def _hint_name(v: Value) -> str:
    if v.name:
        return f"%{v.name}"
    return f"%<output {v.offset} of {v.node.kind}>"


def _short_repr(value: Any, limit: int = 60) -> str:
    text = repr(value)
    return text if len(text) <= limit else text[:limit - 3] + "..."


def _why_not_visible(graph: Graph, v: Value, user: Node) -> str:
    """Classify a dominance failure (runs only on the error path, so it may walk the graph)."""
    producer = v.node
    if producer.graph is not graph:
        return "comes from another graph"
    block = producer.owner
    if producer.kind == "prim::Param" and block is not None and block.owner is not None:
        return f"is a param of a block of {block.owner.kind} and is not visible here"
    if block is None or (producer.prev is None and producer.kind != "prim::Param"):
        return f"is produced by a {producer.kind} node that is not in any block (unlinked or destroyed)"
    if block is user.owner:
        return f"is used before its definition by {producer.kind} later in the same block"
    if _inside(user, producer):
        return f"is an output of the enclosing {producer.kind} and cannot be used inside its own block"
    if block.owner is not None and not _inside(user, block.owner):
        return (f"is defined inside a block of {block.owner.kind} and used outside that block "
                "(return it as a block output instead)")
    return f"is defined by {producer.kind} at a point that does not dominate this use"


def _inside(node: Node, ancestor: Node) -> bool:
    """Whether ``node`` lies in a block nested (at any depth) in ``ancestor``."""
    block = node.owner
    while block is not None and block.owner is not None:
        if block.owner is ancestor:
            return True
        block = block.owner.owner
    return False


def describe_node(node: Node) -> str:
    """``aten::relu at model.py:3:0 (node 2 of block0 of prim::If, in node 5 of the graph)``."""
    where = [node.kind]
    if node.source is not None:
        where.append(f"at {node.source}")
    path: list[str] = []
    n: Optional[Node] = node
    while n is not None and n.owner is not None and len(path) < 100:
        block = n.owner
        index = _index_in_block(block, n)
        owner = block.owner
        if owner is None:
            path.append(f"{index} of the graph")
        else:
            path.append(f"{index} of block{_block_index(owner, block)} of {owner.kind}")
        n = owner
    if path:
        where.append("(" + ", in ".join(path) + ")")
    return " ".join(where)


def _index_in_block(block: Block, node: Node) -> str:
    if node is block.param_node:
        return "the params"
    if node is block.return_node:
        return "the return"
    count, n = 0, block.param_node.next
    while n is not None and n is not node and count < 1_000_000:
        count, n = count + 1, n.next
    return f"node {count}"


def _block_index(owner: Node, block: Block) -> int:
    return next((i for i, b in enumerate(owner.blocks) if b is block), -1)


def _report(graph: Graph, node: Optional[Node], msg: str) -> str:
    head = f"IR verification failed at {describe_node(node)}: {msg}" if node is not None \
        else f"IR verification failed: {msg}"
    return f"{head}\n\n{_graph_text(graph, node)}"


def _links_sane(graph: Graph) -> bool:
    """Whether every block's node list is a finite chain from Param to Return, so that walking
    it (as the printer does) terminates.  Bounded by the number of distinct nodes."""
    seen: set[Node] = set()
    stack = [graph.block]
    while stack:
        block = stack.pop()
        n = block.param_node.next
        while n is not block.return_node:
            if n is None or n in seen:
                return False
            seen.add(n)
            stack.extend(n.blocks)
            n = n.next
    return True


def _printer_names(graph: Graph) -> Optional[dict[Value, str]]:
    try:
        from kiln.ir.printer import value_names
    except ImportError:
        return None
    if not _links_sane(graph):
        return None
    try:
        return value_names(graph)
    except Exception:  # the printer may trip over a malformed graph: fall back to hints
        return None


def _graph_text(graph: Graph, node: Optional[Node]) -> str:
    """The printed graph (with the node marked where its line can be found), else a listing."""
    try:
        from kiln.ir.printer import print_graph
    except ImportError:
        return compact_listing(graph, node)
    if not _links_sane(graph):
        return compact_listing(graph, node)
    try:
        lines = print_graph(graph).rstrip("\n").split("\n")
    except Exception:  # the printer may trip over a malformed graph: fall back to the listing
        return compact_listing(graph, node)
    at = _printed_line(graph, node, lines) if node is not None else None
    if at is not None:
        lines[at] += "    # <-- here"
    return "\n".join(_window(lines, at))


def _printed_line(graph: Graph, node: Node, lines: list[str]) -> Optional[int]:
    """The index of ``node``'s line in the printer's output, which prints the inputs in the
    header, one line per node, ``blockN(...)``/``-> (...)`` lines around nested blocks, and a
    final ``return``.  None when the line found does not look like the node's."""
    order: list[Node] = [graph.block.param_node] * max(1, len(graph.inputs))

    def walk(block: Block) -> None:
        for n in block.nodes:
            order.append(n)
            for b in n.blocks:
                order.append(b.param_node)
                walk(b)
                order.append(b.return_node)
    walk(graph.block)
    order.append(graph.block.return_node)
    at = next((i for i, n in enumerate(order) if n is node), None)
    if at is None or at >= len(lines) or len(order) != len(lines):
        return None
    keyword = {"prim::Param": "(", "prim::Return": "("}.get(node.kind, f"= {node.kind}")
    return at if keyword in lines[at] else None


def _window(lines: list[str], at: Optional[int]) -> list[str]:
    """Cut a long listing to the lines around ``at``."""
    if at is None or len(lines) <= 2 * _LISTING_WINDOW + 1:
        return lines
    lo, hi = max(0, at - _LISTING_WINDOW), min(len(lines), at + _LISTING_WINDOW + 1)
    return ([f"  ... ({lo} lines above)"] if lo else []) + lines[lo:hi] + (
        [f"  ... ({len(lines) - hi} lines below)"] if hi < len(lines) else [])


def compact_listing(graph: Graph, mark: Optional[Node] = None) -> str:
    """A TorchScript-like listing that survives malformed graphs; ``mark`` gets ``# <-- here``.

    Long listings are cut to a window around the marked node."""
    lister = _Lister(mark)
    header = ", ".join(f"{lister.name(v)} : {v.type}" for v in graph.inputs)
    lister.lines.append(f"graph({header}):")
    lister.block(graph.block, 1, is_graph=True)
    return "\n".join(_window(lister.lines, lister.marked))


class _Lister:
    """Builds :func:`compact_listing` text; names values by hint, made unique with ``.N``."""

    def __init__(self, mark: Optional[Node]) -> None:
        self.mark = mark
        self.lines: list[str] = []
        self.names: dict[Value, str] = {}
        self.taken: dict[str, int] = {}
        self.marked: Optional[int] = None
        self.seen: set[Node] = set()

    def name(self, v: Value) -> str:
        known = self.names.get(v)
        if known is not None:
            return known
        base = v.name or str(len(self.names))
        count = self.taken.get(base, 0)
        self.taken[base] = count + 1
        text = f"%{base}" if count == 0 else f"%{base}.{count}"
        self.names[v] = text
        return text

    def emit(self, node: Node, text: str) -> None:
        if node is self.mark:
            self.marked = len(self.lines)
            text += "    # <-- here"
        self.lines.append(text)

    def block(self, block: Block, depth: int, *, is_graph: bool = False) -> None:
        pad = "  " * depth
        node = block.param_node.next
        while node is not None and node is not block.return_node and node not in self.seen:
            self.seen.add(node)
            self.node(node, pad, depth)
            node = node.next
        ret = ", ".join(self.name(v) for v in block.outputs)
        self.emit(block.return_node, f"{pad}return ({ret})" if is_graph else f"{pad}-> ({ret})")

    def node(self, node: Node, pad: str, depth: int) -> None:
        outs = ", ".join(f"{self.name(v)} : {v.type}" for v in node.outputs)
        attrs = ", ".join(f"{k}={_short_repr(a, 40)}" for k, a in node.attrs.items())
        ins = ", ".join(self.name(v) for v in node.inputs)
        src = f"  # {node.source}" if node.source is not None else ""
        self.emit(node, f"{pad}{outs} = {node.kind}{f'[{attrs}]' if attrs else ''}({ins}){src}")
        for i, b in enumerate(node.blocks):
            params = ", ".join(f"{self.name(v)} : {v.type}" for v in b.inputs)
            self.emit(b.param_node, f"{pad}  block{i}({params}):")
            self.block(b, depth + 2)
