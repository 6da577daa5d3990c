"""Kiln's command line: ``kiln COMMAND ...`` (the ``kiln`` script, or ``python -m kiln``).

Commands are rows of one table, :data:`COMMANDS`: a name, a help line, a function adding the
command's arguments to its ``argparse`` parser, and a function running it (parsed arguments
-> exit status).  Adding a command is adding a row.

``kiln opt FILE [-p PASSES] [--print-after-each] [-o OUT]``
    Read a graph in the text form (``docs/ir.md``; ``-`` reads standard input), verify it, run
    the passes, verifying after each, and print the result.  ``PASSES`` is a comma-separated
    list of pass and pipeline names (``-p constant_fold,cse``, ``-p default``; see
    :mod:`kiln.passes`), run to a fixed point.  ``FILE`` may also be a pass test case
    (``tests/passes/<pass>/<case>.ir``, the format :func:`split_ir_file` reads): its input
    half is the graph and its ``# passes:`` line the default for ``-p`` -- so any optimizer
    bug reduces to one file and one command.

Exit status: 0 on success; 2 for a usage error -- bad arguments, an unreadable file, text that
does not parse or a graph that does not verify, an unknown pass -- reported as one line on
standard error, never a traceback; 1 when a pass leaves an invalid graph (a bug in that pass;
the message names it).
"""

from __future__ import annotations

import argparse
import re
import sys
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Optional, TextIO

from kiln.errors import IRError, IRParseError, KilnError
from kiln.ir.graph import Graph

# -- the pass test file format ------------------------------------------------------------------

SEPARATOR = "--- expected ---"
_SEPARATOR = re.compile(r"-{3,}\s*expected\s*-{3,}\s*")
_PASSES_LINE = re.compile(r"#\s*passes:\s*(.*)")


@dataclass(frozen=True)
class IRFile:
    """An IR file: leading ``#`` comment lines, a graph, and optionally a separator line
    (``--- expected ---``) followed by the expected result of running the passes named by the
    ``# passes: a,b`` comment.  A plain graph file is one with no comments and no separator."""

    header: tuple[str, ...]
    input: str
    expected: Optional[str]

    @property
    def passes(self) -> Optional[str]:
        """The ``# passes:`` comment's value, if the header has one."""
        for line in self.header:
            m = _PASSES_LINE.fullmatch(line.strip())
            if m is not None:
                return m.group(1).strip()
        return None

    def with_expected(self, expected: str) -> str:
        """This file's text with ``expected`` as its expected half (header and input kept)."""
        parts = [*self.header, self.input.strip("\n"), SEPARATOR, expected.rstrip("\n")]
        return "\n".join(parts) + "\n"


def split_ir_file(text: str) -> IRFile:
    """Split an IR file's text into its header comments, input graph and expected graph."""
    lines = text.replace("\r\n", "\n").split("\n")
    sep = next((i for i, line in enumerate(lines) if _SEPARATOR.fullmatch(line.strip())), None)
    top = lines if sep is None else lines[:sep]
    n_header = 0
    while n_header < len(top) and (not top[n_header].strip() or top[n_header].lstrip().startswith("#")):
        n_header += 1
    header = tuple(line for line in top[:n_header] if line.strip())
    expected = None if sep is None else "\n".join(lines[sep + 1:]).strip("\n") + "\n"
    return IRFile(header, "\n".join(top[n_header:]).strip("\n") + "\n", expected)


# -- commands -------------------------------------------------------------------------------------

class UsageError(Exception):
    """A mistake in what the user gave: reported in one line, exit status 2."""


@dataclass(frozen=True)
class Command:
    name: str
    help: str
    configure: Callable[[argparse.ArgumentParser], None]
    run: Callable[[argparse.Namespace], int]


def _first_line(e: BaseException) -> str:
    text = str(e).strip()
    return text.splitlines()[0] if text else type(e).__name__


def _read(path: str) -> str:
    if path == "-":
        return sys.stdin.read()
    try:
        with open(path, encoding="utf-8") as f:
            return f.read()
    except (OSError, UnicodeDecodeError) as e:
        reason = e.strerror if isinstance(e, OSError) and e.strerror else _first_line(e)
        raise UsageError(f"cannot read {path}: {reason}") from None


def load_graph(text: str, where: str) -> Graph:
    """Parse and verify a graph, turning failures into a one-line :class:`UsageError`."""
    from kiln.ir.parser import parse_graph
    from kiln.ir.verify import verify
    try:
        graph = parse_graph(text)
    except IRParseError as e:
        raise UsageError(f"{where}: {_first_line(e)}") from None
    try:
        verify(graph)
    except IRError as e:
        raise UsageError(f"{where}: invalid graph: {_first_line(e)}") from None
    return graph


def _configure_opt(p: argparse.ArgumentParser) -> None:
    p.add_argument("file", metavar="FILE", help="a graph in the text form, or a pass test case; "
                                                "'-' reads standard input")
    p.add_argument("-p", "--passes", metavar="PASSES", default=None,
                   help="comma-separated pass and pipeline names (default: the file's "
                        "'# passes:' line, else 'default')")
    p.add_argument("--print-after-each", action="store_true",
                   help="print the graph after every pass")
    p.add_argument("--max-rounds", type=int, default=None, metavar="N",
                   help="stop after N rounds even if the passes still change the graph")
    p.add_argument("-o", "--output", metavar="OUT", default=None,
                   help="write the result to OUT instead of standard output")


def _after_each(out: TextIO) -> Callable[[str, int, bool, Graph], None]:
    def show(name: str, round_: int, changed: bool, graph: Graph) -> None:
        out.write(f"# after {name} (round {round_}): {'changed' if changed else 'unchanged'}\n")
        out.write(str(graph))
    return show


def _run_opt(args: argparse.Namespace) -> int:
    from kiln.passes import MAX_ROUNDS, expand, run_pipeline
    case = split_ir_file(_read(args.file))
    try:
        names = expand(args.passes or case.passes or "default")
    except KilnError as e:
        raise UsageError(_first_line(e)) from None
    if args.max_rounds is not None and args.max_rounds < 1:
        raise UsageError("--max-rounds must be at least 1")
    graph = load_graph(case.input, "<stdin>" if args.file == "-" else args.file)
    after = _after_each(sys.stdout) if args.print_after_each else None
    try:
        run_pipeline(graph, names, verify=True, after_each=after,
                     max_rounds=args.max_rounds or MAX_ROUNDS)
    except IRError as e:
        print(f"kiln opt: error: {_first_line(e)}", file=sys.stderr)
        return 1
    result = str(graph)
    if args.output is not None:
        try:
            with open(args.output, "w", encoding="utf-8") as f:
                f.write(result)
        except OSError as e:
            raise UsageError(f"cannot write {args.output}: {e.strerror or e}") from None
    else:
        if args.print_after_each:
            sys.stdout.write("# result\n")
        sys.stdout.write(result)
    return 0


COMMANDS: tuple[Command, ...] = (
    Command("opt", "run optimization passes over a graph in the text form", _configure_opt, _run_opt),
)


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="kiln", description="Kiln: TorchScript-style graphs for PyTorch.")
    sub = parser.add_subparsers(dest="command", metavar="COMMAND")
    for cmd in COMMANDS:
        p = sub.add_parser(cmd.name, help=cmd.help, description=cmd.help)
        cmd.configure(p)
        p.set_defaults(run=cmd.run)
    return parser


def main(argv: Optional[Sequence[str]] = None) -> int:
    """Run the command line ``argv`` (default: ``sys.argv[1:]``); return the exit status."""
    parser = build_parser()
    try:
        args = parser.parse_args(argv)
    except SystemExit as e:   # --help, or argparse's own usage error (already printed)
        return e.code if isinstance(e.code, int) else (0 if e.code is None else 2)
    if args.command is None:
        parser.print_usage(sys.stderr)
        print("kiln: error: a command is required", file=sys.stderr)
        return 2
    try:
        status: int = args.run(args)
    except UsageError as e:
        print(f"kiln {args.command}: error: {e}", file=sys.stderr)
        return 2
    return status
