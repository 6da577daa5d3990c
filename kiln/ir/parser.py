"""The IR parser: TorchScript's ``graph(...)`` text back into a :class:`~kiln.ir.graph.Graph`.

It reads what :mod:`kiln.ir.printer` writes (the grammar is in ``docs/ir.md``) and the subset of
TorchScript's own printing that maps onto Kiln's IR.  It is a recursive-descent parser over the
whole text: a statement ends at a newline, indentation is not significant, and nested blocks are
recognised by their ``blockN(`` headers and closed by ``->``.

Besides building nodes it does three jobs:

* **Scoping.**  A use must name a value defined earlier in an enclosing block (SSA order).
  Names are kept as ``Value.name`` hints, so printing the graph again gives the same text.
* **Overload resolution.**  Each operator node gets the :class:`~kiln.ir.ops.OpInfo` whose
  schema accepts its input types (:func:`resolve_overload`).
* **Literal conversion.**  Attribute literals are converted by the declared type of their
  position (``1`` at a ``bool`` is ``True``, ``"cpu"`` at a ``Device`` a ``torch.device``,
  ``{1.5}`` at a ``Float(...)`` a float tensor), mirroring :func:`kiln.ir.printer.format_literal`.

A fusion group is written ``prim::FusionGroup_N(...)``; its subgraph follows the graph in a
``with prim::FusionGroup_N = graph(...)`` section and becomes the node's ``Subgraph`` attribute.
A ``prim::TypeCheck``'s ``types=[...]`` attribute is read as a list of IR types.

Every error is an :class:`~kiln.errors.IRParseError` whose message starts ``line L, col C:``.
"""

from __future__ import annotations

import math
import re
import string
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any, Optional

import torch

from kiln.errors import IRParseError
from kiln.ir import prims  # registers Kiln's own operators before any lookup
from kiln.ir.graph import SUBGRAPH_ATTR, SUBGRAPH_KINDS, Block, Graph, Node, SourceRange, Value
from kiln.ir.ops import OpInfo, Schema, registry
from kiln.ir.printer import Opaque
from kiln.ir.types import (
    BoolType,
    DeviceType,
    ListType,
    NamedTupleType,
    OptionalType,
    TensorType,
    TupleType,
    Type,
    TypeParser,
    accepts,
)

__all__ = ["parse_graph", "resolve_overload"]

_NAME = re.compile(r"[A-Za-z0-9_.]+")
_KIND = re.compile(r"[A-Za-z_][A-Za-z0-9_]*::[A-Za-z0-9_]+")
_ATTR = re.compile(r"[A-Za-z_][A-Za-z0-9_]*")
_BLOCK = re.compile(r"block(\d+)\(")
_NUMBER = re.compile(r"-?(?:\d+\.?\d*(?:[eE][-+]?\d+)?|inf|nan)(?![A-Za-z0-9_])")
_WORD = re.compile(r"[A-Za-z_][A-Za-z0-9_.]*")
_OPAQUE = re.compile(r"<([A-Za-z0-9_.]+)>")
_OCTAL = re.compile(r"[0-7]{1,3}")
_SOURCE = re.compile(r"(.*):(-?\d+):(-?\d+)")
_NUMBERED = re.compile(r"(.+)_(\d+)")          # prim::FusionGroup_0
_TYPE_ATTRS = frozenset({("prim::TypeCheck", "types")})   # (kind, attribute) holding a list of IR types
# TorchScript prints small tensors through ATen's pretty-printer, newlines turned to spaces:
# `` 1  2  3 [ CPUFloatType{3} ]``.  That loses precision, so it becomes an Opaque tensor.
_TORCH_TENSOR_DUMP = re.compile(r"[^\[\]\n\",=]*\[ [A-Za-z0-9]+Type\{[0-9,]*\} \]")
_ESCAPED = {"n": "\n", "t": "\t", "r": "\r", "\\": "\\", '"': '"', "'": "'", "a": "\a",
            "b": "\b", "f": "\f", "v": "\v"}
_HEX_ESCAPE_DIGITS = {"x": 2, "u": 4, "U": 8}


@dataclass(frozen=True)
class _ScalarTensor:
    """A ``{item}`` literal, before the declared type says which tensor it is."""

    item: object

    def build(self, declared: Optional[TensorType]) -> torch.Tensor:
        dtype = declared.dtype if declared is not None else None
        if dtype is None:
            # Without a declared dtype, the widest one of the literal's kind keeps its digits.
            dtype = {bool: torch.bool, int: torch.int64, float: torch.float64,
                     complex: torch.complex128}.get(type(self.item), torch.float64)
        t = torch.tensor(self.item, dtype=dtype)
        if declared is not None:
            t = _refine(t, declared)
        return t


def _refine(t: torch.Tensor, declared: TensorType) -> torch.Tensor:
    """Give a freshly built one-element tensor the declared shape, device and grad flag."""
    shape = declared.shape
    if shape is not None and all(d is not None for d in shape) and math.prod(d or 0 for d in shape) == 1:
        t = t.reshape([d or 0 for d in shape])
    if declared.device is not None:
        try:
            t = t.to(declared.device)
        except (RuntimeError, AssertionError):  # e.g. a CUDA graph read on a CPU-only machine
            pass
    if declared.requires_grad and (t.is_floating_point() or t.is_complex()):
        t.requires_grad_(True)
    return t


def _coerce(value: object, declared: Optional[Type]) -> object:
    """Convert a parsed literal by the declared type at its position (see the module doc).

    Every conversion here must print as the text it came from, or round-trips would break."""
    t = declared.elem if isinstance(declared, OptionalType) and value is not None else declared
    if isinstance(value, _ScalarTensor):
        return value.build(t if isinstance(t, TensorType) else None)
    if t == BoolType and type(value) is int and value in (0, 1):
        return bool(value)
    if t == DeviceType and isinstance(value, str):
        try:
            device = torch.device(value)
        except (RuntimeError, ValueError, TypeError):
            return value
        return device if str(device) == value else value
    if isinstance(value, list):
        elem = t.elem if isinstance(t, ListType) else None
        return [_coerce(x, elem) for x in value]
    if isinstance(value, tuple):
        elems: Sequence[Optional[Type]] = [None] * len(value)
        if isinstance(t, (TupleType, NamedTupleType)) and len(t.elems) == len(value):
            elems = t.elems
        return tuple(_coerce(x, e) for x, e in zip(value, elems))
    return value


# -- overload resolution ----------------------------------------------------------------------

def _score(schema: Schema, types: Sequence[Type], n_outputs: int) -> Optional[tuple[int, int, int]]:
    """How well ``schema`` fits a node (higher is better), or None when it does not accept it.

    Node inputs bind schema arguments positionally -- keyword-only ones included, as in
    TorchScript graphs.  Ranked by: result count fits, inputs of exactly the argument type,
    fewest defaulted arguments."""
    args = schema.arguments
    if len(types) > len(args) and not schema.is_vararg:
        return None
    if len(types) < len(args) and not all(a.has_default for a in args[len(types):]):
        return None
    exact = 0
    for t, a in zip(types, args):
        if t == a.type or (isinstance(t, TensorType) and isinstance(a.type, TensorType)):
            exact += 1
        elif not accepts(a.type, t, fixed_size=a.fixed_size):
            return None
    outputs_fit = schema.is_varret or len(schema.returns) == n_outputs
    return int(outputs_fit), exact, -max(0, len(args) - len(types))


def resolve_overload(kind: str, input_types: Sequence[Type], n_outputs: int) -> OpInfo:
    """The registry overload of ``kind`` that accepts ``input_types`` (best fit first; among
    equals, the one registered first).  Raises :class:`IRParseError` (without position)."""
    infos = registry.overloads(kind)
    if not infos:
        raise IRParseError(f"unknown operator {kind}")
    best: Optional[OpInfo] = None
    best_score: Optional[tuple[int, int, int]] = None
    for info in infos:
        score = _score(info.schema, input_types, n_outputs)
        if score is not None and (best_score is None or score > best_score):
            best, best_score = info, score
    if best is None:
        shown = ", ".join(map(str, input_types))
        raise IRParseError(f"no overload of {kind} accepts ({shown}); candidates: "
                           + "; ".join(str(i.schema) for i in infos))
    return best


# -- the parser ---------------------------------------------------------------------------------

@dataclass
class _Decl:
    name: str
    type: Type
    at: int


class _Parser:
    def __init__(self, text: str) -> None:
        self.text = text.replace("\r\n", "\n")
        self.pos = 0
        self.graph = Graph()
        self.scopes: list[dict[str, Value]] = []
        self.defined: set[str] = set()
        self.pending: dict[str, Node] = {}   # ``prim::FusionGroup_N`` -> its node, until its section

    # -- positions and errors ---------------------------------------------------------------
    def error(self, message: str, at: Optional[int] = None) -> IRParseError:
        at = self.pos if at is None else at
        start = self.text.rfind("\n", 0, at) + 1
        end = self.text.find("\n", at)
        line_text = self.text[start:end if end >= 0 else len(self.text)]
        line = self.text.count("\n", 0, at) + 1
        col = at - start + 1
        return IRParseError(f"line {line}, col {col}: {message}\n    {line_text}\n    {' ' * (col - 1)}^")

    def line_end(self) -> int:
        end = self.text.find("\n", self.pos)
        return len(self.text) if end < 0 else end

    # -- lexing --------------------------------------------------------------------------
    def spaces(self) -> None:
        while self.pos < len(self.text) and self.text[self.pos] in " \t":
            self.pos += 1

    def blank(self) -> None:
        while self.pos < len(self.text) and self.text[self.pos] in " \t\n":
            self.pos += 1

    def peek(self, s: str) -> bool:
        self.spaces()
        return self.text.startswith(s, self.pos)

    def accept(self, s: str) -> bool:
        if self.peek(s):
            self.pos += len(s)
            return True
        return False

    def expect(self, s: str) -> None:
        if not self.accept(s):
            raise self.error(f"expected {s!r}")

    def token(self, pattern: re.Pattern[str], what: str) -> str:
        self.spaces()
        m = pattern.match(self.text, self.pos)
        if m is None:
            raise self.error(f"expected {what}")
        self.pos = m.end()
        return m.group(0)

    def eol(self) -> None:
        self.spaces()
        if self.pos < len(self.text):
            if self.text[self.pos] != "\n":
                raise self.error("unexpected text at end of statement")
            self.pos += 1

    # -- values --------------------------------------------------------------------------
    def type(self) -> Type:
        self.spaces()
        start = self.text.rfind("\n", 0, self.pos) + 1
        p = TypeParser(self.text[start:self.line_end()], self.pos - start)
        try:
            t = p.parse()
        except IRParseError as e:
            raise self.error(f"malformed type ({e})", start + p.pos) from None
        self.pos = start + p.pos
        return t

    def decl(self) -> _Decl:
        self.spaces()
        at = self.pos
        self.expect("%")
        name = self.token(_NAME, "a value name")
        self.expect(":")
        return _Decl(name, self.type(), at)

    def define(self, decl: _Decl, value: Value, visible: bool = True) -> None:
        """Record a definition; ``visible=False`` defers scoping to :meth:`publish`."""
        if decl.name in self.defined:
            raise self.error(f"value %{decl.name} is defined twice", decl.at)
        self.defined.add(decl.name)
        if visible:
            self.publish(decl.name, value)

    def publish(self, name: str, value: Value) -> None:
        self.scopes[-1][name] = value

    def lookup(self, name: str, at: int) -> Value:
        for scope in reversed(self.scopes):
            if name in scope:
                return scope[name]
        if name in self.defined:
            raise self.error(f"value %{name} is not in scope here (it is defined inside another block, "
                             "or by the node that owns this block)", at)
        raise self.error(f"value %{name} is used before it is defined", at)

    def uses(self, close: str) -> list[Value]:
        values: list[Value] = []
        if self.accept(close):
            return values
        while True:
            self.spaces()
            at = self.pos
            self.expect("%")
            values.append(self.lookup(self.token(_NAME, "a value name"), at))
            if not self.accept(","):
                self.expect(close)
                return values

    # -- literals ------------------------------------------------------------------------
    def literal(self) -> object:
        self.spaces()
        ch = self.text[self.pos:self.pos + 1]
        if ch == '"' or ch == "'":
            return self.string_literal()
        if ch in "[(":
            close = "]" if ch == "[" else ")"
            self.pos += 1
            items = self.literal_items(close)
            return items if ch == "[" else tuple(items)
        if ch == "{":
            self.pos += 1
            item = self.literal()
            self.expect("}")
            return _ScalarTensor(item)
        if ch == "<":
            return Opaque(self.token(_OPAQUE, "'<name>'")[1:-1])
        m = _NUMBER.match(self.text, self.pos)
        if m is not None:
            self.pos = m.end()
            text = m.group(0)
            return float(text) if any(c in text for c in ".eEin") else int(text)
        return self.word_literal()

    def literal_items(self, close: str) -> list[object]:
        """Comma-separated literals up to ``close``; a trailing comma is allowed (``(1,)``)."""
        items: list[object] = []
        while not self.accept(close):
            items.append(self.literal())
            if not self.accept(","):
                self.expect(close)
                break
        return items

    def word_literal(self) -> object:
        at = self.pos
        word = self.token(_WORD, "a literal")
        fixed: dict[str, object] = {"None": None, "True": True, "False": False}
        if word in fixed:
            return fixed[word]
        if word == "complex" and self.accept("("):
            parts = self.literal_items(")")
            real, imag = parts if len(parts) == 2 else (None, None)
            if isinstance(real, (int, float)) and isinstance(imag, (int, float)):
                return complex(real, imag)
        elif word.startswith("torch."):
            value = getattr(torch, word[len("torch."):], None)
            if isinstance(value, (torch.dtype, torch.layout, torch.memory_format)):
                return value
        raise self.error(f"unknown literal {word!r}", at)

    def string_literal(self) -> str:
        quote = self.text[self.pos]
        self.pos += 1
        out: list[str] = []
        octets = bytearray()  # TorchScript writes non-printable bytes as octal escapes
        while True:
            if self.pos >= len(self.text) or self.text[self.pos] == "\n":
                raise self.error("unterminated string literal")
            ch = self.text[self.pos]
            if ch != "\\" and octets:
                out.append(octets.decode("utf-8", "replace"))
                octets.clear()
            if ch == quote:
                self.pos += 1
                return "".join(out)
            if ch == "\\":
                self.escape(out, octets)
            else:
                out.append(ch)
                self.pos += 1

    def escape(self, out: list[str], octets: bytearray) -> None:
        at = self.pos
        code = self.text[self.pos + 1:self.pos + 2]
        if code in _HEX_ESCAPE_DIGITS:
            digits = self.text[self.pos + 2:self.pos + 2 + _HEX_ESCAPE_DIGITS[code]]
            is_hex = len(digits) == _HEX_ESCAPE_DIGITS[code] and all(c in string.hexdigits for c in digits)
            if is_hex and int(digits, 16) <= 0x10FFFF:
                out.append(octets.decode("utf-8", "replace") + chr(int(digits, 16)))
                octets.clear()
                self.pos += 2 + len(digits)
                return
        elif code and code in "01234567":
            m = _OCTAL.match(self.text, self.pos + 1)
            assert m is not None
            octets.append(int(m.group(0), 8) & 0xFF)
            self.pos = m.end()
            return
        elif code in _ESCAPED:
            out.append(octets.decode("utf-8", "replace") + _ESCAPED[code])
            octets.clear()
            self.pos += 2
            return
        raise self.error("bad escape in string literal", at)

    def attrs(self, declared: Optional[Type], kind: str = "") -> dict[str, Any]:
        """``[name=literal, ...]``; ``declared`` is the type a constant's ``value`` has."""
        attrs: dict[str, Any] = {}
        if not self.accept("["):
            return attrs
        while True:
            at = self.pos
            name = self.token(_ATTR, "an attribute name")
            if name in attrs:
                raise self.error(f"attribute {name!r} given twice", at)
            self.expect("=")
            dump = _TORCH_TENSOR_DUMP.match(self.text, self.pos)
            if (kind, name) in _TYPE_ATTRS:
                attrs[name] = self.type_list()
            elif dump is not None:
                self.pos = dump.end()
                attrs[name] = Opaque("Tensor")
            else:
                attrs[name] = _coerce(self.literal(), declared if name == "value" else None)
            if not self.accept(","):
                self.expect("]")
                return attrs

    def type_list(self) -> list[Type]:
        """``[type, ...]``: the value of an attribute holding IR types (TypeCheck's ``types``)."""
        self.expect("[")
        types: list[Type] = []
        while not self.accept("]"):
            types.append(self.type())
            if not self.accept(","):
                self.expect("]")
                break
        return types

    # -- statements ----------------------------------------------------------------------
    def parse(self) -> Graph:
        main = self.graph
        self.graph_text(main)
        self.subgraph_sections()
        self.graph = main
        self.blank()
        if self.pos < len(self.text):
            raise self.error("unexpected text after the graph's return")
        return main

    def subgraph_sections(self) -> None:
        """``with prim::FusionGroup_N = graph(...)`` sections, one per subgraph node.

        Names are unique across the whole text (the printer numbers all subgraphs with one
        counter), so the sections of nested subgraphs can be read in one flat loop."""
        while True:
            self.blank()
            if not self.text.startswith("with ", self.pos):
                break
            self.pos += len("with")
            at = self.pos + 1
            name = self.token(_KIND, "a subgraph name such as prim::FusionGroup_0")
            node = self.pending.pop(name, None)
            if node is None:
                raise self.error(f"no node is named {name}, or its subgraph was given already", at)
            self.expect("=")
            self.blank()
            node.attrs[SUBGRAPH_ATTR] = self.graph_text(Graph())
        if self.pending:
            name, node = next(iter(self.pending.items()))
            raise self.error(f"{name} is used but no 'with {name} = graph(...)' section follows")

    def graph_text(self, graph: Graph) -> Graph:
        """``graph(...): body return (...)`` into ``graph``; value names are local to it."""
        self.graph, self.scopes, self.defined = graph, [], set()
        self.blank()
        self.expect("graph(")
        self.scopes.append({})
        self.blank()
        if not self.peek(")"):
            while True:
                self.blank()
                d = self.decl()
                self.define(d, self.graph.add_input(d.type, d.name))
                self.blank()
                if not self.accept(","):
                    break
        self.expect(")")
        self.expect(":")
        self.eol()
        self.body(self.graph.block, "return")
        return graph

    def body(self, block: Block, terminator: str) -> None:
        """Statements up to and including ``terminator (uses)``, which sets the block's outputs."""
        while True:
            self.blank()
            if self.pos >= len(self.text):
                raise self.error(f"unexpected end of text: expected {terminator!r}")
            if self.text.startswith(terminator, self.pos):
                break
            other = "->" if terminator == "return" else "return"
            if self.text.startswith(other, self.pos):
                raise self.error(f"expected {terminator!r} to end this block, not {other!r}")
            self.statement(block)
        self.pos += len(terminator)
        self.expect("(")
        for v in self.uses(")"):
            block.register_output(v)
        self.eol()

    def statement(self, block: Block) -> None:
        outs: list[_Decl] = []
        if self.peek("%"):
            outs.append(self.decl())
            while self.accept(","):
                outs.append(self.decl())
        self.expect("=")
        self.spaces()
        kind_at = self.pos
        kind = self.token(_KIND, "an operator kind (ns::name)")
        numbered = _NUMBERED.fullmatch(kind)
        subgraph_name: Optional[str] = None
        if numbered is not None and numbered.group(1) in SUBGRAPH_KINDS:
            if kind in self.pending:
                raise self.error(f"{kind} is used twice", kind_at)
            subgraph_name, kind = kind, numbered.group(1)
        attrs = self.attrs(outs[0].type if len(outs) == 1 and kind == "prim::Constant" else None, kind)
        self.expect("(")
        node = self.graph.create(kind, self.uses(")"), attrs=attrs)
        if subgraph_name is not None:
            self.pending[subgraph_name] = node
        node.scope, node.source = self.tail()
        node.op = self.resolve(node, len(outs), kind_at)
        if kind == "prim::Constant" and "value" not in node.attrs:
            node.attrs = {"value": None, **node.attrs}  # TorchScript's None: prim::Constant()
        for d in outs:
            self.define(d, node.add_output(d.type, d.name), visible=False)
        block.append(node)
        self.blocks(node)
        # A node's results come into scope after its blocks: they are not defined inside them.
        for d, v in zip(outs, node.outputs):
            self.publish(d.name, v)

    def tail(self) -> tuple[Optional[str], Optional[SourceRange]]:
        """``, scope: X`` and ``# file:line:col`` after a node's inputs, up to the newline."""
        end = self.line_end()
        scope: Optional[str] = None
        if self.text.startswith(", scope: ", self.pos):
            self.pos += len(", scope: ")
            cut = self.text.find(" # ", self.pos, end)
            stop = end if cut < 0 else cut
            scope, self.pos = self.text[self.pos:stop], stop
        source: Optional[SourceRange] = None
        if self.accept("#"):
            if self.text.startswith(" ", self.pos):
                self.pos += 1
            m = _SOURCE.fullmatch(self.text, self.pos, end)
            if m is None:
                raise self.error("expected a source location 'file:line:col'")
            source, self.pos = SourceRange(m.group(1), int(m.group(2)), int(m.group(3))), end
        self.eol()
        return scope, source

    def resolve(self, node: Node, n_outputs: int, at: int) -> Optional[OpInfo]:
        if node.kind in prims.STRUCTURAL:
            if node.kind in ("prim::Param", "prim::Return"):
                raise self.error(f"{node.kind} is implicit in the text form", at)
            return None
        try:
            return resolve_overload(node.kind, [v.type for v in node.inputs], n_outputs)
        except IRParseError as e:
            raise self.error(str(e), at) from None

    def blocks(self, node: Node) -> None:
        while True:
            self.blank()
            m = _BLOCK.match(self.text, self.pos)
            if m is None:
                return
            if int(m.group(1)) != len(node.blocks):
                raise self.error(f"expected block{len(node.blocks)}")
            self.pos = m.end()
            block = node.add_block()
            self.scopes.append({})
            if not self.accept(")"):
                while True:
                    d = self.decl()
                    self.define(d, block.add_input(d.type, d.name))
                    if not self.accept(","):
                        self.expect(")")
                        break
            self.expect(":")
            self.eol()
            self.body(block, "->")
            self.scopes.pop()


def parse_graph(text: str) -> Graph:
    """Parse the text form of a graph (see ``docs/ir.md``); raises :class:`IRParseError`."""
    return _Parser(text).parse()
