"""The IR printer: a :class:`~kiln.ir.graph.Graph` as TorchScript's ``graph(...)`` text.

The text form is documented in ``docs/ir.md``; :mod:`kiln.ir.parser` reads it back, and
``print_graph(parse_graph(print_graph(g))) == print_graph(g)`` holds for every graph (only the
payload of constants that cannot be spelled -- a tensor with more than one element -- is lost
on the way, see :class:`Opaque`).  Three decisions make that exact:

* **Names.**  ``Value.name`` is only a hint.  :func:`value_names` gives every value of a graph
  a unique name, deterministically, in text order: hints first (a taken hint gets ``.1``,
  ``.2`` ...), then numbers for values without hints, skipping numbers already used.  A parsed
  graph keeps each printed name as its hint, and unique hints print unchanged.
* **Literals are self-describing where TorchScript's spelling is not.**  Spellings only depend
  on the value and on the declared type at that position (:func:`format_literal`); the parser
  converts a literal by the same type, and every conversion it makes prints the same text.
* **Line structure.**  One node per line; nested blocks follow their node.  Indentation is
  cosmetic; the parser relies on the ``blockN(``, ``->`` and ``return`` keywords.
* **Subgraphs** (fusion groups) print as TorchScript prints them: the node's kind gets a
  number, ``prim::FusionGroup_0(%a, %b)``, and after the graph's ``return`` comes
  ``with prim::FusionGroup_0 = graph(...)`` followed by the subgraph's own text.
"""

from __future__ import annotations

import itertools
import numbers
import re
from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from typing import Optional

import torch

from kiln.ir.graph import SUBGRAPH_ATTR, Block, Graph, Node, Value, subgraph_of
from kiln.ir.types import BoolType, ListType, NamedTupleType, OptionalType, TensorType, TupleType, Type

__all__ = ["Opaque", "format_literal", "print_graph", "quote", "value_names"]


@dataclass(frozen=True)
class Opaque:
    """A constant whose payload the text form cannot carry, e.g. a tensor of many elements.

    It prints as ``<what>`` (``<Tensor>``), and the parser reads ``<what>`` back as
    ``Opaque(what)``: the text round-trips, the payload does not.  Executing a graph that
    holds one fails, because an ``Opaque`` is not the tensor an operator expects -- a loud
    failure rather than a silently wrong constant.
    """

    what: str

    def __str__(self) -> str:
        return f"<{self.what}>"


# -- names ------------------------------------------------------------------------------------

_NOT_NAME_CHAR = re.compile(r"[^A-Za-z0-9_.]")
_SUFFIXED = re.compile(r"(.+)\.(\d+)")


def _sanitize(hint: Optional[str]) -> Optional[str]:
    """A hint reduced to name characters (letters, digits, ``_``, ``.``), or None."""
    return _NOT_NAME_CHAR.sub("_", hint) if hint else None


def _defined_values(block: Block) -> Iterator[Value]:
    """Values defined inside ``block``, in the order the text form defines them."""
    for node in block.nodes:
        yield from node.outputs
        for sub in node.blocks:
            yield from sub.inputs
            yield from _defined_values(sub)


class _Namer:
    """Unique names for the values of one graph (see :func:`value_names`)."""

    def __init__(self, graph: Graph) -> None:
        values = [*graph.inputs, *_defined_values(graph.block)]
        hints = {v: _sanitize(v.name) for v in values}
        # Every hint is reserved up front, so a renamed duplicate never takes the name a
        # later value asked for -- which keeps names stable when a graph is edited.
        self._reserved = {h for h in hints.values() if h is not None}
        self.names: dict[Value, str] = {}
        self._taken: set[str] = set()
        self._counter = 1
        for v in values:
            hint = hints[v]
            if hint is not None:
                self._assign(v, hint if hint not in self._taken else self._suffixed(hint))
        for v in values:
            if v not in self.names:
                self._assign(v, self._number())

    def _assign(self, v: Value, name: str) -> None:
        self.names[v] = name
        self._taken.add(name)

    def _suffixed(self, hint: str) -> str:
        m = _SUFFIXED.fullmatch(hint)
        base = m.group(1) if m else hint
        k = 1
        while f"{base}.{k}" in self._taken or f"{base}.{k}" in self._reserved:
            k += 1
        return f"{base}.{k}"

    def _number(self) -> str:
        while str(self._counter) in self._taken:
            self._counter += 1
        return str(self._counter)

    def __call__(self, v: Value) -> str:
        # A value used but not defined in this graph (a malformed graph) still gets a name,
        # so that the printer can show the mistake; the parser will reject the text.
        if v not in self.names:
            self._assign(v, self._number())
        return self.names[v]


def value_names(graph: Graph) -> dict[Value, str]:
    """The unique name :func:`print_graph` gives each value defined in ``graph``."""
    return dict(_Namer(graph).names)


# -- literals ---------------------------------------------------------------------------------

_ESCAPES = {"\\": "\\\\", '"': '\\"', "\n": "\\n", "\t": "\\t", "\r": "\\r"}


def quote(s: str) -> str:
    """``s`` as a double-quoted string literal; every non-printable character is escaped,
    so that a literal never spans lines."""
    out: list[str] = []
    for ch in s:
        if ch in _ESCAPES:
            out.append(_ESCAPES[ch])
        elif ch.isprintable():
            out.append(ch)
        else:
            code = ord(ch)
            out.append(f"\\x{code:02x}" if code < 0x100 else
                       f"\\u{code:04x}" if code < 0x10000 else f"\\U{code:08x}")
    return '"' + "".join(out) + '"'


def _elem_types(value: Sequence[object], declared: Optional[Type]) -> Sequence[Optional[Type]]:
    """The declared type of each element of a list/tuple literal (None where unknown)."""
    if isinstance(value, list) and isinstance(declared, ListType):
        return [declared.elem] * len(value)
    if isinstance(value, tuple) and isinstance(declared, (TupleType, NamedTupleType)) \
            and len(declared.elems) == len(value):
        return declared.elems
    return [None] * len(value)


def scalar_tensor_spellable(t: torch.Tensor, declared: Optional[Type]) -> bool:
    """Whether tensor ``t`` prints as ``{item}``: one element, and a declared type (if any)
    that lets the parser rebuild exactly this shape and dtype from the item."""
    if t.numel() != 1 or t.layout != torch.strided or t.is_quantized or t.device.type == "meta":
        return False
    if not isinstance(declared, TensorType):
        return t.dim() == 0
    if declared.dtype is not None and declared.dtype != t.dtype:
        return False
    return tuple(t.shape) == (declared.shape or ())


def _tensor_literal(t: torch.Tensor, declared: Optional[Type]) -> str:
    if not scalar_tensor_spellable(t, declared):
        return str(Opaque("Tensor"))
    try:
        item = t.item()
    except (RuntimeError, ValueError):  # a tensor subclass or backend that cannot give one
        return str(Opaque("Tensor"))
    return "{" + format_literal(item) + "}"


def _float(x: float) -> str:
    # float.__repr__ is the shortest spelling that reads back to the same double, and it
    # spells the specials inf, -inf, nan and -0.0 -- all of which the parser accepts.
    return float.__repr__(float(x))


def _scalar_literal(value: object, declared: Optional[Type]) -> Optional[str]:
    """The spelling of a non-container, non-tensor literal; None for other values."""
    if value is None:
        return "None"
    if isinstance(value, bool):
        return str(int(value)) if declared == BoolType else str(value)
    if isinstance(value, numbers.Integral):  # int, and numpy's integers
        return int.__repr__(int(value))
    if isinstance(value, numbers.Real):
        return _float(float(value))
    if isinstance(value, complex):
        return f"complex({_float(value.real)}, {_float(value.imag)})"
    if isinstance(value, str):
        return quote(value)
    if isinstance(value, torch.device):
        return quote(str(value))
    if isinstance(value, (torch.dtype, torch.layout, torch.memory_format)):
        return str(value)
    return None


def format_literal(value: object, declared: Optional[Type] = None) -> str:
    """The text of an attribute value; ``declared`` is the declared type at that position.

    Spellings: ``None``; int ``3``; float ``1.5`` / ``inf`` / ``nan`` / ``-0.0``; bool ``1``/``0``
    where the declared type is ``bool`` (TorchScript's spelling) and ``True``/``False``
    elsewhere; ``complex(1.0, 2.0)``; string ``"a\\n"``; device ``"cpu"`` (as TorchScript);
    dtype/layout/memory format ``torch.float32``; list ``[1, 2]``; tuple ``(1, 2)`` / ``(1,)``;
    one-element tensor ``{1.5}``; an IR type as it prints (``Float(3, strides=[1], ...)``, read back
    where the parser expects types: a TypeCheck's ``types``); anything else ``<TypeName>`` (see
    :class:`Opaque`).
    """
    t = declared.elem if isinstance(declared, OptionalType) and value is not None else declared
    scalar = _scalar_literal(value, t)
    if scalar is not None:
        return scalar
    if isinstance(value, torch.Tensor):
        return _tensor_literal(value, t)
    if isinstance(value, list):
        return "[" + ", ".join(format_literal(x, et) for x, et in zip(value, _elem_types(value, t))) + "]"
    if isinstance(value, tuple):
        parts = [format_literal(x, et) for x, et in zip(value, _elem_types(value, t))]
        return "(" + ", ".join(parts) + ("," if len(parts) == 1 else "") + ")"
    if isinstance(value, (Opaque, Type)):
        return str(value)   # a Type: ``prim::TypeCheck[types=[Float(3, strides=[1], ...)]]``
    return str(Opaque(_NOT_NAME_CHAR.sub("_", type(value).__name__)))


# -- the graph ----------------------------------------------------------------------------------

def _clean(text: str, forbidden: str = "") -> str:
    """Scope and file text on one line: non-printables (and ``forbidden``) become ``?``."""
    return "".join("?" if not ch.isprintable() or ch in forbidden else ch for ch in text)


class _Printer:
    """Prints one graph.  Subgraphs of fusion groups are numbered in text order by one counter
    shared with the printers of those subgraphs, and printed after the graph's ``return``."""

    def __init__(self, graph: Graph, counter: Optional[Iterator[int]] = None) -> None:
        self.name = _Namer(graph)
        self.lines: list[str] = []
        self.counter = counter if counter is not None else itertools.count()
        self.subgraphs: list[tuple[str, Graph]] = []

    def decl(self, v: Value) -> str:
        return f"%{self.name(v)} : {v.type}"

    def uses(self, values: Sequence[Value]) -> str:
        return ", ".join(f"%{self.name(v)}" for v in values)

    def graph(self, graph: Graph) -> str:
        self.lines.append("graph(" + ",\n      ".join(self.decl(v) for v in graph.inputs) + "):")
        self.body(graph.block, 2)
        self.lines.append(f"  return ({self.uses(graph.outputs)})")
        text = "\n".join(self.lines) + "\n"
        for name, sub in self.subgraphs:
            text += f"with {name} = " + _Printer(sub, self.counter).graph(sub)
        return text

    def kind(self, node: Node) -> str:
        """``prim::FusionGroup_N`` for a node holding a subgraph (queued for printing)."""
        sub = subgraph_of(node)
        if sub is None:
            return node.kind
        name = f"{node.kind}_{next(self.counter)}"
        self.subgraphs.append((name, sub))
        return name

    def body(self, block: Block, indent: int) -> None:
        for node in block.nodes:
            self.node(node, indent)

    def node(self, node: Node, indent: int) -> None:
        pad = " " * indent
        outs = ", ".join(self.decl(v) for v in node.outputs)
        line = f"{pad}{outs} = {self.kind(node)}{self.attrs(node)}({self.uses(node.inputs)})"
        if node.scope:
            # '#' would make the scope ambiguous with the source comment that follows it
            line += f", scope: {_clean(node.scope, '#')}"
        if node.source is not None:
            line += f" # {_clean(str(node.source))}"
        self.lines.append(line)
        for i, block in enumerate(node.blocks):
            params = ", ".join(self.decl(v) for v in block.inputs)
            self.lines.append(f"{pad}  block{i}({params}):")
            self.body(block, indent + 4)
            self.lines.append(f"{pad}    -> ({self.uses(block.outputs)})")

    def attrs(self, node: Node) -> str:
        items: list[str] = []
        for key, value in node.attrs.items():
            if key == SUBGRAPH_ATTR and subgraph_of(node) is not None:
                continue   # printed after the graph, as ``with prim::FusionGroup_N = graph(...)``
            if node.kind == "prim::Constant" and key == "value":
                if value is None:
                    continue  # TorchScript spells the None constant ``prim::Constant()``
                declared = node.outputs[0].type if len(node.outputs) == 1 else None
                items.append(f"value={format_literal(value, declared)}")
            else:
                items.append(f"{key}={format_literal(value)}")
        return f"[{', '.join(items)}]" if items else ""


def print_graph(graph: Graph) -> str:
    """``graph`` in TorchScript's text form (ends with a newline); deterministic."""
    return _Printer(graph).graph(graph)
