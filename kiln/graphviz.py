"""A graph as Graphviz DOT text, and rendering it with Graphviz's ``dot`` (``kiln graph``).

:func:`to_dot` draws one box per node, labelled with its kind (plus the ``name`` attribute of
``prim::GetAttr`` / ``prim::SetAttr`` / ``prim::CallMethod`` / ``prim::CallFunction`` nodes and a
short form of a constant's value), the graph's inputs and outputs as ellipses with their names
and types, and one edge per use, labelled with the used value's name (the names of the text
form, :func:`kiln.ir.printer.value_names`).  The blocks of ``prim::If`` / ``prim::Loop`` are
clusters inside which a block's inputs come from its entry node and its outputs go to its exit
node; a dashed edge joins the owning node to each entry.  Node ids are generated (``n12``), so
only labels need quoting, which :func:`quote_label` does.

:func:`render` runs ``dot -T<format>`` on the text; :func:`find_dot` looks for the program.
Neither is needed to write ``.dot`` files.
"""

from __future__ import annotations

import shutil
import subprocess
from collections.abc import Iterable

from kiln.ir.graph import Block, Graph, Node, Value
from kiln.ir.printer import format_literal, value_names

__all__ = ["GraphvizError", "RENDER_FORMATS", "find_dot", "quote_label", "render", "to_dot"]

# Formats ``dot`` is asked to produce; ``dot`` itself is the text :func:`to_dot` returns.
RENDER_FORMATS = frozenset({"svg", "png", "pdf"})

_NAMED_KINDS = frozenset({"prim::GetAttr", "prim::SetAttr", "prim::CallMethod", "prim::CallFunction"})
_MAX_LABEL = 60          # characters of one label line (constant values are cut to fit)
_RENDER_TIMEOUT_S = 120


class GraphvizError(Exception):
    """``dot`` is missing, failed, or timed out (the message is one line)."""


# -- escaping -----------------------------------------------------------------------------------

def _escape_char(ch: str) -> str:
    if ch in '\\"':
        return "\\" + ch
    if ch == "\n":
        return "\\n"          # a centred line break in a DOT label
    if not ch.isprintable():
        return f"\\\\x{ord(ch):02x}"   # shown as the text \xNN: DOT has no escape for control characters
    return ch


def quote_label(text: str) -> str:
    """``text`` as a DOT double-quoted string: backslashes and quotes escaped, newlines as
    ``\\n`` (line breaks in the label), other non-printable characters spelled ``\\xNN``."""
    return '"' + "".join(_escape_char(ch) for ch in text) + '"'


def _shorten(text: str, limit: int = _MAX_LABEL) -> str:
    return text if len(text) <= limit else text[:limit - 3] + "..."


# -- the writer -----------------------------------------------------------------------------------

class _DotWriter:
    def __init__(self, graph: Graph) -> None:
        self.names = value_names(graph)
        self.lines: list[str] = []
        self.edges: list[str] = []             # emitted last, outside every cluster (see edges_into)
        self.source: dict[Value, str] = {}     # value -> id of the DOT node it comes from
        self.ids = 0
        self.clusters = 0

    def new_id(self, prefix: str = "n") -> str:
        self.ids += 1
        return f"{prefix}{self.ids}"

    def value_text(self, v: Value) -> str:
        return f"%{self.names.get(v, '?')} : {v.type}"

    def emit(self, indent: int, text: str) -> None:
        self.lines.append("  " * indent + text)

    def node_label(self, node: Node) -> str:
        parts = [node.kind]
        name = node.attrs.get("name")
        if node.kind in _NAMED_KINDS and isinstance(name, str):
            parts.append(f"name={_shorten(name)}")
        elif node.kind == "prim::Constant" and "value" in node.attrs:
            value = node.attrs["value"]
            if value is not None:
                declared = node.outputs[0].type if len(node.outputs) == 1 else None
                parts.append(f"value={_shorten(format_literal(value, declared))}")
        return "\n".join(parts)

    def edges_into(self, target: str, values: Iterable[Value]) -> None:
        """One edge per use.  Edges are written at the top level: a node named inside a
        ``subgraph`` statement becomes a member of it, so an edge written in a cluster would pull
        the outer value's node into the cluster."""
        for v in values:
            src = self.source.get(v)
            if src is None:      # used but not defined in this graph (malformed): still shown
                src = self.new_id("u")
                self.source[v] = src
                self.edges.append(f"{src} [shape=ellipse, style=dashed, "
                                  f"label={quote_label(self.value_text(v) + ' (undefined)')}];")
            self.edges.append(f"{src} -> {target} [label={quote_label('%' + self.names.get(v, '?'))}];")

    def graph(self, graph: Graph, title: str) -> str:
        self.emit(0, f"digraph {quote_label(title)} {{")
        self.emit(1, "node [fontname=\"Helvetica\", fontsize=11];")
        self.emit(1, "edge [fontname=\"Helvetica\", fontsize=9];")
        for i, v in enumerate(graph.inputs):
            vid = self.new_id("in")
            self.source[v] = vid
            self.emit(1, f"{vid} [shape=ellipse, style=filled, fillcolor=\"#dbe8f6\", "
                         f"label={quote_label(f'input {i}: ' + self.value_text(v))}];")
        self.block_nodes(graph.block, 1)
        for i, v in enumerate(graph.outputs):
            oid = self.new_id("out")
            self.emit(1, f"{oid} [shape=ellipse, style=filled, fillcolor=\"#e3f2dc\", "
                         f"label={quote_label(f'output {i}: ' + self.value_text(v))}];")
            self.edges_into(oid, [v])
        for edge in self.edges:
            self.emit(1, edge)
        self.emit(0, "}")
        return "\n".join(self.lines) + "\n"

    def block_nodes(self, block: Block, indent: int) -> None:
        for node in block.nodes:
            nid = self.new_id()
            self.emit(indent, f"{nid} [shape=box, label={quote_label(self.node_label(node))}];")
            self.edges_into(nid, node.inputs)
            for v in node.outputs:
                self.source[v] = nid
            for i, sub in enumerate(node.blocks):
                self.nested_block(nid, i, sub, indent)

    def nested_block(self, owner: str, index: int, block: Block, indent: int) -> None:
        self.clusters += 1
        self.emit(indent, f"subgraph cluster_{self.clusters} {{")
        self.emit(indent + 1, f"label={quote_label(f'block{index}')}; style=rounded; color=\"#888888\";")
        entry = self.new_id("b")
        params = ", ".join(self.value_text(v) for v in block.inputs)
        self.emit(indent + 1, f"{entry} [shape=cds, label={quote_label(f'block{index}({params})')}];")
        for v in block.inputs:
            self.source[v] = entry
        self.block_nodes(block, indent + 1)
        exit_id = self.new_id("r")
        self.emit(indent + 1, f"{exit_id} [shape=plaintext, label=\"->\"];")
        self.edges_into(exit_id, block.outputs)
        self.emit(indent, "}")
        self.edges.append(f"{owner} -> {entry} [style=dashed, arrowhead=empty];")


def to_dot(graph: Graph, title: str = "graph") -> str:
    """``graph`` as the text of a Graphviz ``digraph`` named ``title`` (see the module docstring)."""
    return _DotWriter(graph).graph(graph, title)


# -- rendering ----------------------------------------------------------------------------------

def find_dot() -> str | None:
    """The path of Graphviz's ``dot`` program, or None when it is not on ``PATH``."""
    return shutil.which("dot")


def _first_line(data: bytes) -> str:
    text = data.decode("utf-8", "replace").strip()
    return text.splitlines()[0] if text else "no message"


def render(text: str, fmt: str, dot: str | None = None) -> bytes:
    """Run ``dot -T<fmt>`` on DOT ``text``; the rendered bytes.  Raises :class:`GraphvizError`
    when ``dot`` is not found, cannot be started, fails or takes too long."""
    if fmt not in RENDER_FORMATS:
        raise GraphvizError(f"unsupported format {fmt!r} (one of: {', '.join(sorted(RENDER_FORMATS))}, dot)")
    exe = dot or find_dot()
    if exe is None:
        raise GraphvizError("graphviz 'dot' not found; install graphviz or write .dot")
    try:
        done = subprocess.run([exe, f"-T{fmt}"], input=text.encode("utf-8"), capture_output=True,
                              timeout=_RENDER_TIMEOUT_S, check=False)
    except subprocess.TimeoutExpired:
        raise GraphvizError(f"'dot -T{fmt}' took more than {_RENDER_TIMEOUT_S} s") from None
    except OSError as e:
        raise GraphvizError(f"cannot run {exe}: {e.strerror or e}") from None
    if done.returncode != 0:
        raise GraphvizError(f"'dot -T{fmt}' failed (exit status {done.returncode}): "
                            f"{_first_line(done.stderr)}")
    return done.stdout
