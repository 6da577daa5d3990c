"""The ``.code`` view: a graph as TorchScript-style Python source.

:func:`graph_to_code` prints what TorchScript's ``module.code`` / ``function.code`` show, e.g.
for a traced module::

    def forward(self,
        x: Tensor,
        h: Tensor) -> Tuple[Tensor, Tensor]:
      linear = self.linear
      _0 = torch.tanh(torch.add((linear).forward(x, ), h))
      return (_0, _0)

The output is valid Python and valid TorchScript source (a script compiler can read it back),
so it doubles as the ``code/`` text of an archive.  The design follows TorchScript's printer:

* **Names.**  Parameters and statement results are named after their hint with any ``.N``
  suffix removed (``x.1`` -> ``x``), made unique by appending a number (``x0``, ``x1``);
  values without a hint get ``_0``, ``_1`` ...  Input 0 of a class type is ``self``.
* **Inlining.**  A value is written into its single user's expression instead of a variable
  when doing so cannot reorder evaluation: it must be produced by the node printed just
  before its user (constants aside), and the user's inputs are scanned right to left, so the
  inlined calls still run in program order.  This is order-preserving, not purity-based, so a
  ``CallMethod`` may be inlined (as TorchScript does).  A value with a hint stays a variable
  unless it only feeds a block's return, and an inlined expression that gets long (40
  columns, as TorchScript) is split back into an assignment together with every input left
  of it -- which again keeps the order.
* **Constants** are literals (``1``, ``2.``, ``"s"``, ``None``, ``torch.device("cpu")``,
  dtypes as their ScalarType number, like TorchScript); tensors and other values without a
  literal become ``CONSTANTS.c0``, ``CONSTANTS.c1`` ... indexing the ``constants`` list.
* **Calls.**  ``aten::`` ops print as ``torch.<name>(...)``, other namespaces as
  ``ops.<ns>.<name>(...)``, in schema order, keyword-only arguments as ``name=value``,
  trailing arguments equal to their schema default omitted.  Scalar arithmetic and
  comparisons print as Python operators (``a + b``, ``a < b``, ``not a``, ``a is None``),
  parenthesized by precedence.  Per-kind forms live in the ``_EXPR_FORMS`` and
  ``_STATEMENT_FORMS`` tables.
* **Control flow.**  ``prim::If`` prints as ``if``/``else`` assigning the node's outputs at
  the end of each branch.  ``prim::Loop`` prints as ``for i in range(n):`` when both of its
  conditions are constant True, as TorchScript's ``while`` form when its trip count is the
  default (int64 max) and unused, and otherwise as a ``while`` with an explicit counter.
  Loop-carried values share one name between the loop outputs and the body params.
"""

from __future__ import annotations

import keyword
import math
import re
from collections.abc import Callable, Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass
from typing import Any, Optional

import torch

from kiln.errors import IRError
from kiln.ir.graph import Block, Graph, Node, Value
from kiln.ir.types import (
    AnyType,
    BoolType,
    ClassType,
    ComplexType,
    DictType,
    EnumType,
    FloatType,
    IntType,
    ListType,
    NamedTupleType,
    NumberType,
    OptionalType,
    StrType,
    TensorType,
    TupleType,
    Type,
    UnionType,
)

__all__ = ["graph_to_code", "literal"]

MAX_INLINE_COLUMNS = 40   # TorchScript's kMaxLineLength for an inlined expression
_MAX_INLINE_DEPTH = 32    # bounds the scan's recursion on pathological chains
_INT64_MAX = 2**63 - 1

# Python operator precedence, higher binds tighter.
_ATOM, _POWER, _UNARY, _MUL, _ADD, _COMPARE, _NOT = 100, 16, 15, 14, 13, 8, 7

_RESERVED = frozenset(keyword.kwlist) | {
    "_", "aten", "attribute", "CONSTANTS", "fork", "getattr", "setattr", "inf", "nan", "infj",
    "nanj", "ops", "__torch__", "torch", "annotate", "uninitialized", "unchecked_cast", "range",
    "print", "int", "float", "bool", "str", "complex", "len", "isinstance", "math", "Tensor",
    "List", "Tuple", "Optional", "Dict", "Union", "Any", "Future", "Device", "number",
    "Exception",
}


@dataclass(frozen=True)
class _Expr:
    text: str
    prec: int = _ATOM


def _paren(e: _Expr, need: int) -> str:
    """``e``'s text, parenthesized when it binds looser than its context needs."""
    return e.text if e.prec >= need else f"({e.text})"


# -- literals -----------------------------------------------------------------------------------

def _scalar_type_codes() -> dict[Any, int]:
    """c10's ScalarType numbers, which TorchScript code uses for dtypes."""
    order = ["uint8", "int8", "int16", "int32", "int64", "float16", "float32", "float64",
             "complex32", "complex64", "complex128", "bool", "qint8", "quint8", "qint32",
             "bfloat16", "quint4x2", "quint2x4", "bits1x8", "bits2x4", "bits4x2", "bits8",
             "bits16", "float8_e5m2", "float8_e4m3fn", "float8_e5m2fnuz", "float8_e4m3fnuz",
             "uint16", "uint32", "uint64"]
    return {getattr(torch, n): i for i, n in enumerate(order) if hasattr(torch, n)}


_DTYPE_CODES = _scalar_type_codes()
_LAYOUT_CODES: dict[Any, int] = {torch.strided: 0, torch.sparse_coo: 1, torch.sparse_csr: 2,
                                 torch._mkldnn: 3, torch.sparse_csc: 4,  # type: ignore[attr-defined]
                                 torch.sparse_bsr: 5, torch.sparse_bsc: 6}
_MEMORY_FORMAT_CODES: dict[Any, int] = {torch.contiguous_format: 0, torch.preserve_format: 1,
                                        torch.channels_last: 2, torch.channels_last_3d: 3}
_ESCAPES = {"\\": "\\\\", '"': '\\"', "\n": "\\n", "\t": "\\t"}


def _quote(s: str) -> str:
    """A double-quoted literal that Python and TorchScript both read back as ``s``: other
    control characters become 3-digit octal escapes (TorchScript's lexer knows no ``\\x``
    or ``\\r``), other characters stay as they are (source is UTF-8)."""
    out: list[str] = []
    for ch in s:
        code = ord(ch)
        if ch in _ESCAPES:
            out.append(_ESCAPES[ch])
        elif code < 0x80 and not ch.isprintable():
            out.append(f"\\{code:03o}")
        elif 0xD800 <= code < 0xE000:   # a lone surrogate has no UTF-8 form; Python-only escape
            out.append(f"\\u{code:04x}")
        else:
            out.append(ch)
    return '"' + "".join(out) + '"'


def _float(x: float) -> str:
    """TorchScript's spelling (``2.``, ``1.0000000000000001e-05``, ``inf``), always a float."""
    if math.isinf(x):
        return "inf" if x > 0 else "-inf"
    if math.isnan(x):
        return "nan"
    if x == int(x) and abs(x) < 1e10:
        return ("-0." if math.copysign(1.0, x) < 0 else "0.") if x == 0 else f"{int(x)}."
    text = f"{x:.17g}"
    return text if any(c in text for c in ".e") else text + "."


def literal(value: Any, type: Optional[Type] = None) -> Optional[str]:
    """The Python literal for a constant (``type`` is its declared type), or None if it has none."""
    if value is None or isinstance(value, bool):
        return str(value)
    if isinstance(value, int):
        return int.__repr__(value)
    if isinstance(value, str):
        return _quote(value)
    if isinstance(value, float):
        return _float(value)
    if isinstance(value, complex):
        return f"complex({_float(value.real)}, {_float(value.imag)})"
    if isinstance(value, torch.device):
        return f"torch.device({_quote(str(value))})"
    if isinstance(value, torch.dtype):
        code = _DTYPE_CODES.get(value)
        return str(code) if code is not None else str(value)
    for table in (_LAYOUT_CODES, _MEMORY_FORMAT_CODES):
        if isinstance(value, (torch.layout, torch.memory_format)) and value in table:
            return str(table[value])
    if isinstance(value, (list, tuple)):
        return _sequence_literal(value, type)
    return None


def _sequence_literal(value: list[Any] | tuple[Any, ...], type: Optional[Type]) -> Optional[str]:
    if isinstance(type, OptionalType):
        type = type.elem
    if isinstance(value, list):
        elem = type.elem if isinstance(type, ListType) else None
        parts = [literal(x, elem) for x in value]
        if any(p is None for p in parts):
            return None
        body = "[" + ", ".join(p for p in parts if p is not None) + "]"
        needs_type = not value or (elem is not None and not _inferable(elem))
        return f"annotate({type.annotation()}, {body})" if needs_type and type is not None else body
    elem_types: Sequence[Optional[Type]] = [None] * len(value)
    if isinstance(type, (TupleType, NamedTupleType)) and len(type.elems) == len(value):
        elem_types = type.elems
    parts = [literal(x, t) for x, t in zip(value, elem_types)]
    if any(p is None for p in parts):
        return None
    texts = [p for p in parts if p is not None]
    return "(" + ", ".join(texts) + ("," if len(texts) == 1 else "") + ")"


def _inferable(elem: Type) -> bool:
    """Whether a script compiler infers this element type from a list's members (TorchScript
    cannot tell ``List[Optional[Tensor]]`` from ``List[Tensor]`` by looking at ``[a, b]``)."""
    return not (isinstance(elem, (OptionalType, UnionType)) or elem in (AnyType, NumberType))


def _same_value(a: Any, b: Any) -> bool:
    """Whether a constant equals a schema default exactly (``1`` is not ``1.0`` nor ``True``)."""
    if isinstance(a, (list, tuple)) and isinstance(b, (list, tuple)):
        return len(a) == len(b) and all(_same_value(x, y) for x, y in zip(a, b))
    if type(a) is not type(b) or isinstance(a, torch.Tensor):
        return False
    try:
        return bool(a == b)
    except Exception:  # an exotic default whose == does not give a bool
        return False


def _constant_value(v: Value) -> tuple[bool, Any]:
    if v.node.kind == "prim::Constant":
        return True, v.node.attrs.get("value")
    return False, None


# -- names ----------------------------------------------------------------------------------------

_SUFFIX = re.compile(r"\.\d+$")
_NOT_IDENT = re.compile(r"[^A-Za-z0-9_]")


def _has_hint(v: Value) -> bool:
    """TorchScript's "debug name": a hint that is not just a number."""
    return bool(v.name) and not str(v.name).isdigit()


def _hint_base(v: Value) -> Optional[str]:
    if not _has_hint(v):
        return None
    # the script frontend's own variables (``__kiln_result`` ...) print without the prefix, so
    # that the code compiled again cannot collide with the names its lowering introduces
    base = _NOT_IDENT.sub("_", _SUFFIX.sub("", str(v.name))).removeprefix("__kiln_")
    return base if base and not base[0].isdigit() else "_" + base


def _is_identifier(name: str) -> bool:
    return name.isidentifier() and not keyword.iskeyword(name)


class _Names:
    """Unique Python names for one function."""

    def __init__(self) -> None:
        self.used: set[str] = set()
        self.suffix: dict[str, int] = {}
        self.temp = 0

    def fresh(self, candidate: Optional[str]) -> str:
        if candidate is None:
            candidate = f"_{self.temp}"
            self.temp += 1
        name = candidate
        while name in self.used or name in _RESERVED:
            k = self.suffix.get(candidate, 0)
            self.suffix[candidate] = k + 1
            name = f"{candidate}{k}"
        self.used.add(name)
        return name


# -- loops ----------------------------------------------------------------------------------------

def _loop_form(node: Node) -> str:
    """``for`` (both conditions constant True), ``while`` (default trip count, counter unused)
    or ``counted`` (a ``while`` that also counts trips)."""
    body = node.blocks[0]
    known_max, max_trips = _constant_value(node.inputs[0])
    trips_matter = not (known_max and max_trips == _INT64_MAX) or bool(body.inputs[0].uses)
    start_known, start = _constant_value(node.inputs[1])
    next_known, nxt = _constant_value(body.outputs[0])
    always = start_known and start is True and next_known and nxt is True
    if always:
        return "for" if trips_matter else "while"
    return "counted" if trips_matter else "while"


# -- the printer ----------------------------------------------------------------------------------

class _CodePrinter:
    """Prints one graph as one ``def``; see the module docstring for the rules."""

    def __init__(self, graph: Graph, constants: list[Any], self_type: Optional[str] = None) -> None:
        self.graph = graph
        self.self_type = self_type
        self.constants = constants
        self.constant_index = {id(c): i for i, c in enumerate(constants)}
        self.names = _Names()
        self.exprs: dict[Value, _Expr] = {}
        self.inline: set[Node] = set()
        self.annotated: set[Value] = set()
        self.lines: list[str] = []
        self.level = 1

    # -- output ------------------------------------------------------------------------
    def emit(self, text: str) -> None:
        self.lines.append("  " * self.level + text)

    @contextmanager
    def indented(self) -> Iterator[None]:
        self.level += 1
        start = len(self.lines)
        try:
            yield
        finally:
            if len(self.lines) == start:
                self.emit("pass")
            self.level -= 1

    def define(self, v: Value, candidate: Optional[str] = None) -> str:
        name = self.names.fresh(candidate if candidate is not None else _hint_base(v))
        self.exprs[v] = _Expr(name)
        return name

    def use(self, v: Value) -> _Expr:
        e = self.exprs.get(v)
        if e is None:
            if v.node.kind != "prim::Constant":
                raise IRError(f"graph_to_code: {v!r} (output of {v.node.kind}) is used before it "
                              "is defined; verify the graph first")
            e = self.exprs[v] = self.constant(v)
        return e

    def constant(self, v: Value) -> _Expr:
        value = v.node.attrs.get("value")
        text = literal(value, v.type)
        if text is None and isinstance(v.type, EnumType) and value is not None and hasattr(value, "name"):
            text = f"{v.type.qualname}.{value.name}"     # an enum member, by its qualified name
        if text is None:
            index = self.constant_index.get(id(value))
            if index is None:   # the list keeps ``value`` alive, so its id stays unique
                index = self.constant_index[id(value)] = len(self.constants)
                self.constants.append(value)
            return _Expr(f"CONSTANTS.c{index}")
        return _Expr(text, _UNARY if text.startswith("-") else _ATOM)

    # -- the function --------------------------------------------------------------------
    def function(self, name: str, defaults: Optional[dict[str, Any]] = None) -> str:
        params: list[str] = []
        for i, v in enumerate(self.graph.inputs):
            if i == 0 and isinstance(v.type, ClassType):
                me = self.define(v, "self")
                params.append(f"{me}: {self.self_type}" if self.self_type else me)
                continue
            text = f"{self.define(v)}: {v.type.annotation()}"
            if defaults and v.name in defaults:
                lit = literal(defaults[v.name], v.type)
                if lit is not None:
                    text += f"={lit}"
            params.append(text)
        outs = self.graph.outputs
        ret = "None" if not outs else outs[0].type.annotation() if len(outs) == 1 else \
            "Tuple[" + ", ".join(v.type.annotation() for v in outs) + "]"
        header = f"def {name}(" + ",\n    ".join(params) + f") -> {ret}:"
        self.scan_block(self.graph.block)
        self.print_nodes(self.graph.block)
        ret_node = self.graph.block.return_node
        self.split_long_inlines(ret_node.inputs)
        if outs:
            self.emit("return " + ", ".join(self.use(v).text for v in outs))
        if not self.lines:
            self.emit("pass")
        return header + "\n" + "\n".join(self.lines) + "\n"

    # -- which values are inlined (TorchScript's scan, right to left) ---------------------
    def scan_block(self, block: Block) -> None:
        self.scan_node(block.return_node, 0)
        for node in reversed(list(block.nodes)):
            self.scan_node(node, 0)

    def scan_node(self, node: Node, depth: int) -> Optional[Node]:
        if node in self.inline:
            return node
        for block in node.blocks:
            self.scan_block(block)
        point = node.prev
        while point is not None and point.kind == "prim::Constant":
            point = point.prev
        for v in reversed(node.inputs):
            producer = v.node
            if producer is point and depth < _MAX_INLINE_DEPTH and _can_inline(v):
                point = self.scan_node(producer, depth + 1)
                self.inline.add(producer)
            elif producer.kind == "prim::Constant":
                self.inline.add(producer)
        return point

    # -- statements ------------------------------------------------------------------------
    def print_nodes(self, block: Block) -> None:
        for node in block.nodes:
            if node.kind == "prim::Constant":
                continue  # a literal at each use
            self.split_long_inlines(node.inputs)
            if node.kind == "prim::If":
                self.print_if(node)
            elif node.kind == "prim::Loop":
                self.print_loop(node)
            elif node.kind in _STATEMENT_FORMS:
                self.emit(_STATEMENT_FORMS[node.kind](self, node))
            elif node in self.inline:
                self.exprs[node.outputs[0]] = self.render(node)
            else:
                expr = self.render(node)
                names = [self.define(v) for v in node.outputs]
                self.emit(f"{', '.join(names)} = {expr.text}" if names else expr.text)

    def split_long_inlines(self, inputs: Sequence[Value]) -> None:
        """Assign long inlined inputs, and every inlined input left of them, to variables."""
        def inlined(v: Value) -> bool:
            return v.node in self.inline and v.node.kind != "prim::Constant" and v in self.exprs
        last = 0
        for i, v in enumerate(inputs):
            if inlined(v) and len(self.exprs[v].text) + 2 * self.level >= MAX_INLINE_COLUMNS:
                last = i + 1
        for v in inputs[:last]:
            if inlined(v):
                text = self.exprs[v].text
                self.inline.discard(v.node)
                self.emit(f"{self.define(v)} = {text}")

    def assign(self, lhs: Sequence[Value], rhs: Sequence[Value]) -> None:
        """``a, b = x, y``; the first assignment of a lone Optional/Union value is annotated so
        that a script compiler gives the variable that type."""
        if not lhs:
            return
        left = ", ".join(self.use(v).text for v in lhs)
        if len(lhs) == 1 and lhs[0] not in self.annotated and \
                isinstance(lhs[0].type, (OptionalType, UnionType)):
            self.annotated.add(lhs[0])
            left += f" : {lhs[0].type.annotation()}"
        self.emit(f"{left} = " + ", ".join(self.use(v).text for v in rhs))

    def print_if(self, node: Node) -> None:
        for v in node.outputs:
            self.define(v)
        self.emit(f"if {self.use(node.inputs[0]).text}:")
        for i, block in enumerate(node.blocks):
            if i == 1:
                self.emit("else:")
            with self.indented():
                self.print_nodes(block)
                self.assign(node.outputs, block.outputs)

    def print_loop(self, node: Node) -> None:
        form = _loop_form(node)
        body = node.blocks[0]
        outs, trip = node.outputs, body.inputs[0]
        for v in outs:
            self.define(v)
        for param, out in zip(body.inputs[1:], outs):
            self.exprs[param] = self.exprs[out]   # one variable per carried value
        for out, init in zip(outs, node.inputs[2:]):
            self.assign([out], [init])
        counter = self.define(trip)
        if form == "for":
            self.emit(f"for {counter} in range({self.use(node.inputs[0]).text}):")
            with self.indented():
                self.print_nodes(body)
                self.assign(outs, body.outputs[1:])
            return
        if form == "while":   # the unused counter variable holds the condition
            self.assign([trip], [node.inputs[1]])
            self.emit(f"while {counter}:")
            with self.indented():
                self.print_nodes(body)
                self.assign([trip, *outs], body.outputs)
            return
        cond = self.names.fresh(None)
        self.emit(f"{counter} = 0")
        self.emit(f"{cond} = {self.use(node.inputs[1]).text}")
        known, limit = _constant_value(node.inputs[0])
        bound = "" if known and limit == _INT64_MAX else \
            f" and {counter} < {_paren(self.use(node.inputs[0]), _COMPARE + 1)}"
        self.emit(f"while {cond}{bound}:")
        with self.indented():
            self.print_nodes(body)
            left = [cond, *(self.use(v).text for v in outs)]
            self.emit(", ".join(left) + " = " + ", ".join(self.args(body.outputs)))
            self.emit(f"{counter} = {counter} + 1")

    # -- expressions -------------------------------------------------------------------------
    def render(self, node: Node) -> _Expr:
        form = _EXPR_FORMS.get(node.kind)
        expr = form(self, node) if form is not None else None
        return expr if expr is not None else self.call(node)

    def call(self, node: Node) -> _Expr:
        ns, _, op = node.kind.partition("::")
        fn = f"torch.{op}" if ns == "aten" else f"ops.{ns}.{op}"
        return _Expr(f"{fn}({self.call_args(node)})")

    def call_args(self, node: Node) -> str:
        schema = getattr(node.op, "schema", None)
        inputs = node.inputs
        if schema is None or schema.is_vararg:
            return ", ".join(self.use(v).text for v in inputs)
        args = schema.arguments
        count = len(inputs)
        while 0 < count <= len(args) and args[count - 1].has_default:
            known, value = _constant_value(inputs[count - 1])
            if not (known and _same_value(value, args[count - 1].default)):
                break
            count -= 1
        parts: list[str] = []
        for i in range(count):
            text = self.use(inputs[i]).text
            parts.append(f"{args[i].name}={text}" if i < len(args) and args[i].kwarg_only else text)
        return ", ".join(parts)

    def args(self, values: Sequence[Value]) -> list[str]:
        return [self.use(v).text for v in values]


def _can_inline(v: Value) -> bool:
    """Whether ``v`` may be written into its user's expression (TorchScript's ``canInline``)."""
    node = v.node
    if node.kind in ("prim::Param", "prim::Constant") or node.kind in _STATEMENT_FORMS:
        return False
    if len(node.outputs) != 1 or len(v.uses) != 1 or node.blocks:
        return False
    use = v.uses[0]
    user = use.user
    if _has_hint(v) and user.kind != "prim::Return":
        return False   # the user named it: keep the variable
    if user.kind == "prim::Loop":
        # carried values are assigned before the loop header; a counted loop's bound is read
        # on every trip, so it must be evaluated once, into a variable
        return use.index == 1 or (use.index == 0 and _loop_form(user) != "counted")
    return not (user.kind == "prim::RaiseException" and use.index == 1)


# -- per-kind forms -------------------------------------------------------------------------------

_ExprForm = Callable[[_CodePrinter, Node], Optional[_Expr]]
_SCALARS = (IntType, FloatType, BoolType, NumberType, ComplexType, StrType)
_BINARY = {"add": ("+", _ADD), "sub": ("-", _ADD), "mul": ("*", _MUL), "div": ("/", _MUL),
           "floordiv": ("//", _MUL), "remainder": ("%", _MUL), "pow": ("**", _POWER),
           "eq": ("==", _COMPARE), "ne": ("!=", _COMPARE), "lt": ("<", _COMPARE),
           "gt": (">", _COMPARE), "le": ("<=", _COMPARE), "ge": (">=", _COMPARE)}


def _all_scalar(node: Node) -> bool:
    return all(v.type in _SCALARS for v in node.inputs)


def _binary_form(p: _CodePrinter, node: Node) -> Optional[_Expr]:
    op = node.kind.partition("::")[2]
    if len(node.inputs) != 2 or not _all_scalar(node):
        return None
    symbol, prec = _BINARY[op]
    a, b = (p.use(v) for v in node.inputs)
    if symbol == "**":
        left, right = _paren(a, _ATOM), _paren(b, _UNARY)
    elif prec == _COMPARE:
        left, right = _paren(a, prec + 1), _paren(b, prec + 1)
    else:
        left, right = _paren(a, prec), _paren(b, prec + 1)
    return _Expr(f"{left} {symbol} {right}", prec)


def _unary_form(symbol: str, prec: int) -> _ExprForm:
    def form(p: _CodePrinter, node: Node) -> Optional[_Expr]:
        if len(node.inputs) != 1 or not _all_scalar(node):
            return None
        return _Expr(f"{symbol}{_paren(p.use(node.inputs[0]), prec)}", prec)
    return form


def _is_form(symbol: str) -> _ExprForm:
    def form(p: _CodePrinter, node: Node) -> Optional[_Expr]:
        if len(node.inputs) != 2:
            return None
        a, b = (_paren(p.use(v), _COMPARE + 1) for v in node.inputs)
        return _Expr(f"{a} {symbol} {b}", _COMPARE)
    return form


def _builtin_form(name: str) -> _ExprForm:
    def form(p: _CodePrinter, node: Node) -> Optional[_Expr]:
        if len(node.inputs) != 1:
            return None
        return _Expr(f"{name}({p.use(node.inputs[0]).text})")
    return form


def _tuple_form(p: _CodePrinter, node: Node) -> _Expr:
    items = p.args(node.inputs)
    t = node.outputs[0].type
    if isinstance(t, NamedTupleType):
        return _Expr(f"{t.qualname}({', '.join(items)})")
    return _Expr("(" + ", ".join(items) + ("," if len(items) == 1 else "") + ")")


def _list_form(p: _CodePrinter, node: Node) -> _Expr:
    t = node.outputs[0].type
    body = "[" + ", ".join(p.args(node.inputs)) + "]"
    if not isinstance(t, ListType):
        return _Expr(body)
    members_say = all(v.type == t.elem or (isinstance(v.type, TensorType) and isinstance(t.elem, TensorType))
                      for v in node.inputs)
    if node.inputs and _inferable(t.elem) and members_say:
        return _Expr(body)
    return _Expr(f"annotate({t.annotation()}, {body})")


def _dict_form(p: _CodePrinter, node: Node) -> _Expr:
    items = p.args(node.inputs)
    body = "{" + ", ".join(f"{k}: {v}" for k, v in zip(items[::2], items[1::2])) + "}"
    t = node.outputs[0].type
    if isinstance(t, DictType) and (not items or not (_inferable(t.key) and _inferable(t.value))):
        return _Expr(f"annotate({t.annotation()}, {body})")
    return _Expr(body)


def _attr_ref(p: _CodePrinter, obj: Value, name: str) -> str:
    recv = p.use(obj)
    if _is_identifier(name):
        return f"{_paren(recv, _ATOM)}.{name}"
    return f"getattr({recv.text}, {_quote(name)})"


def _get_attr_form(p: _CodePrinter, node: Node) -> _Expr:
    return _Expr(_attr_ref(p, node.inputs[0], str(node.attrs.get("name", ""))))


def _call_method_form(p: _CodePrinter, node: Node) -> _Expr:
    recv, *args = p.args(node.inputs)
    return _Expr(f"({recv}).{node.attrs.get('name', '')}(" + "".join(a + ", " for a in args) + ")")


def _call_function_form(p: _CodePrinter, node: Node) -> _Expr:
    fn = p.use(node.inputs[0])
    return _Expr(f"{_paren(fn, _ATOM)}(" + ", ".join(p.args(node.inputs[1:])) + ")")


def _typed_form(name: str) -> _ExprForm:
    """``unchecked_cast(T, x)`` / ``uninitialized(T)``: the output type comes first."""
    def form(p: _CodePrinter, node: Node) -> _Expr:
        args = [node.outputs[0].type.annotation(), *p.args(node.inputs)]
        return _Expr(f"{name}({', '.join(args)})")
    return form


def _subscript_form(p: _CodePrinter, node: Node) -> Optional[_Expr]:
    if len(node.inputs) != 2:
        return None
    seq, index = (p.use(v) for v in node.inputs)
    recv = f"({seq.text})" if node.kind == "prim::TupleIndex" else _paren(seq, _ATOM)
    return _Expr(f"{recv}[{index.text}]")


def _print_form(p: _CodePrinter, node: Node) -> _Expr:
    return _Expr("print(" + ", ".join(p.args(node.inputs)) + ")")


_EXPR_FORMS: dict[str, _ExprForm] = {
    **{f"aten::{op}": _binary_form for op in _BINARY},
    "aten::neg": _unary_form("-", _UNARY),
    "aten::__not__": _unary_form("not ", _NOT),
    "aten::__is__": _is_form("is"),
    "aten::__isnot__": _is_form("is not"),
    "aten::Int": _builtin_form("int"),
    "aten::Float": _builtin_form("float"),
    "aten::Bool": _builtin_form("bool"),
    "aten::str": _builtin_form("str"),
    "aten::sorted": _builtin_form("sorted"),
    # a 0-dim tensor passed where a number is expected: ``annotate(int, x)``
    "aten::IntImplicit": _typed_form("annotate"),
    "aten::FloatImplicit": _typed_form("annotate"),
    "aten::ComplexImplicit": _typed_form("annotate"),
    "aten::ScalarImplicit": _typed_form("annotate"),
    "aten::__getitem__": _subscript_form,
    "prim::TupleIndex": _subscript_form,
    "prim::TupleConstruct": _tuple_form,
    "prim::ListConstruct": _list_form,
    "prim::DictConstruct": _dict_form,
    "prim::GetAttr": _get_attr_form,
    "prim::CallMethod": _call_method_form,
    "prim::CallFunction": _call_function_form,
    "prim::unchecked_cast": _typed_form("unchecked_cast"),
    "prim::Uninitialized": _typed_form("uninitialized"),
    "prim::Print": _print_form,
}


def _isinstance_form(p: _CodePrinter, node: Node) -> _Expr:
    from kiln.ir.types import parse_type
    names = [parse_type(str(t)).annotation() for t in node.attrs.get("types", ())]
    target = names[0] if len(names) == 1 else "(" + ", ".join(names) + ")"
    return _Expr(f"isinstance({p.use(node.inputs[0]).text}, {target})")


def _create_object_form(p: _CodePrinter, node: Node) -> _Expr:
    cls = node.outputs[0].type.annotation()
    return _Expr(f"{cls}.__new__({cls})")


def _attribute_form(attr: str) -> _ExprForm:
    def form(p: _CodePrinter, node: Node) -> _Expr:
        return _Expr(f"{_paren(p.use(node.inputs[0]), _ATOM)}.{attr}")
    return form


def _python_call_form(p: _CodePrinter, node: Node) -> _Expr:
    recv, *args = p.args(node.inputs)
    name = getattr(node.attrs.get("fn"), "__name__", "python_call")
    return _Expr(f"({recv}).{name}(" + ", ".join(args) + ")")


def _tolist_form(p: _CodePrinter, node: Node) -> _Expr:
    """``annotate(List[float], x.tolist())``: the result type is not the operator's to say."""
    recv = _paren(p.use(node.inputs[0]), _ATOM)
    return _Expr(f"annotate({node.outputs[0].type.annotation()}, {recv}.tolist())")


# Forms of the operators script-compiled code uses for objects, enums and isinstance.
_EXPR_FORMS.update({
    "aten::tolist": _tolist_form,
    "prim::kiln_python_call": _python_call_form,
    "prim::isinstance": _isinstance_form,
    "prim::CreateObject": _create_object_form,
    "prim::EnumName": _attribute_form("name"),
    "prim::EnumValue": _attribute_form("value"),
})


def _set_attr_stmt(p: _CodePrinter, node: Node) -> str:
    name = str(node.attrs.get("name", ""))
    value = p.use(node.inputs[1]).text
    if _is_identifier(name):
        return f"{_attr_ref(p, node.inputs[0], name)} = {value}"
    return f"setattr({p.use(node.inputs[0]).text}, {_quote(name)}, {value})"


def _raise_stmt(p: _CodePrinter, node: Node) -> str:
    """``ops.prim.RaiseException(msg, "builtins.ValueError")``, TorchScript's own spelling (a
    ``raise`` statement would need the exception class to be resolvable where the code is
    compiled back).  The class is a constant second input (``"builtins.ValueError"`` or
    ``"ValueError"``); without one, only the message is passed."""
    args = [p.use(node.inputs[0]).text] if node.inputs else ['""']
    if len(node.inputs) > 1:
        known, value = _constant_value(node.inputs[1])
        if known and isinstance(value, str) and all(_is_identifier(part) for part in value.split(".")):
            args.append(_quote(value if "." in value else "builtins." + value))
        elif not known:
            args.append(p.use(node.inputs[1]).text)
    return f"ops.prim.RaiseException({', '.join(args)})"


def _unpack_stmt(p: _CodePrinter, node: Node) -> str:
    """``a, b, = x`` -- the trailing comma makes even one target an unpack."""
    source = p.use(node.inputs[0]).text
    names = [p.define(v) for v in node.outputs]
    return "".join(n + ", " for n in names) + f"= {source}" if names else f"() = {source}"


_STATEMENT_FORMS: dict[str, Callable[[_CodePrinter, Node], str]] = {
    "prim::SetAttr": _set_attr_stmt,
    "prim::RaiseException": _raise_stmt,
    "prim::TupleUnpack": _unpack_stmt,
    "prim::ListUnpack": _unpack_stmt,
}


def graph_to_code(graph: Graph, name: str, *, constants: Optional[list[Any]] = None,
                  defaults: Optional[dict[str, Any]] = None, self_type: Optional[str] = None) -> str:
    """``graph`` as a TorchScript-style ``def name(...)`` (text ends with a newline).

    Constants without a literal (tensors, objects) print as ``CONSTANTS.cN``, where ``N`` is
    their index in ``constants``; pass a list to collect them (it is appended to, and values
    already in it -- by identity -- are reused, so several methods can share one table).
    ``self_type`` annotates a method's ``self`` (``self: __torch__.M``), as archives write it.
    """
    printer = _CodePrinter(graph, constants if constants is not None else [], self_type)
    return printer.function(name, defaults)
