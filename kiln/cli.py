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

``kiln inspect MODEL.pt [--code/--no-code] [--graph] [--method NAME]``
    Load a ``.pt`` archive (``kiln.save`` or ``torch.jit.save``) and describe it: the root
    class, the format version, the methods with their code (and, with ``--graph``, their IR),
    a table of the parameters and buffers (shape, dtype, bytes, with a total) and the extra
    files (``extra/NAME`` records).  ``--method`` limits code and graph to one method.

``kiln run MODEL.pt [INPUT ...] [--method NAME] [--seed N] [--save-output OUT.pt]``
    Call a method (default ``forward``) under ``torch.no_grad()`` and describe each output.
    An ``INPUT`` is a file -- ``.pt`` (``torch.save`` of a tensor, or of a list or tuple of
    tensors, which give one input each; read with ``weights_only=True``) or ``.npy`` (when
    numpy is installed) -- or a random tensor ``2x3``, ``1x3x224x224:float32``, ``4:int64``
    (normal for floating dtypes, integers in [0, 10) otherwise, false/true for bool; seeded by
    ``--seed``, default 0), or a scalar ``int:3``, ``float:0.5``, ``bool:true``, ``str:text``.
    ``--save-output`` writes the result with ``torch.save``.

``kiln graph MODEL.pt -o OUT.{dot,svg,png,pdf} [--method NAME] [--inlined]``
    Draw a method's graph (``--inlined``: with calls on submodules inlined) as Graphviz DOT
    (:mod:`kiln.graphviz`); formats other than ``.dot`` are rendered by Graphviz's ``dot``.

Outputs (``-o``, ``--save-output``) are written atomically: the path holds the old file or the
complete new one.

Exit status: 0 on success; 2 for a usage error -- bad arguments, an unreadable file, text that
does not parse or a graph that does not verify, an unknown pass, a file that is not a loadable
archive, a bad input spec, inputs the method does not accept, no Graphviz -- reported as one
line on standard error, never a traceback; 1 when a pass leaves an invalid graph (a bug in that
pass; the message names it) or when the method run by ``kiln run`` raises (the message names
the exception).
"""

from __future__ import annotations

import argparse
import math
import os
import re
import sys
from collections.abc import Callable, Iterable, Iterator, Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, Optional, TextIO

import torch

from kiln.errors import CompileError, IRError, IRParseError, KilnError
from kiln.ir.graph import Graph

if TYPE_CHECKING:
    from rich.console import Console
    from rich.table import Table

    from kiln.runtime.module import ScriptModule
    from kiln.serialization.archive import ArchiveReader

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
    # The ``nargs="*"`` positional that also takes positionals given after options
    # (``kiln run M.pt 2x3 --method f int:1``), which argparse alone would refuse.
    rest: Optional[str] = None


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


# -- archives: loading, and the console the archive commands print to ---------------------------

_PIPE_WIDTH = 4096      # off a terminal: wide enough that rich never wraps a line

def _loading_error(path: str, e: KilnError) -> UsageError:
    text = _first_line(e)
    if isinstance(e, CompileError):    # its first line is only the place: say what went wrong
        where = f"{e.filename}:{e.lineno}: " if e.filename else ""
        text = f"cannot compile the archive's code: {where}{_first_line(Exception(e.cause))}"
    return UsageError(text if text.startswith(path) else f"{path}: {text}")


def _cannot_read(path: str, e: OSError) -> UsageError:
    return UsageError(f"cannot read {path}: {e.strerror or _first_line(e)}")


def _open_reader(path: str) -> ArchiveReader:
    """The archive's validated container (for its version and extra files)."""
    from kiln.serialization.archive import open_archive
    try:
        return open_archive(path)
    except OSError as e:
        raise _cannot_read(path, e) from None
    except KilnError as e:
        raise _loading_error(path, e) from None


def _load_model(path: str) -> ScriptModule:
    from kiln.serialization.load import load
    try:
        module: ScriptModule = load(path)
    except OSError as e:
        raise _cannot_read(path, e) from None
    except KilnError as e:
        raise _loading_error(path, e) from None
    return module


def _check_method(module: ScriptModule, name: str, path: str) -> str:
    names = module.method_names
    if name not in names:
        raise UsageError(f"{path}: {module.qualified_name} has no method {name!r} "
                         f"(methods: {', '.join(names) or 'none'})")
    return name


def _console() -> Console:
    """A console on the current standard output.  Nothing from a model is read as markup; off a
    terminal it does not wrap (code lines and long names stay whole)."""
    from rich.console import Console
    console = Console(markup=False, emoji=False, highlight=False)
    if not console.is_terminal:
        console.width = _PIPE_WIDTH
    return console


def _heading(console: Console, text: str) -> None:
    from rich.text import Text
    console.print()
    console.print(Text(text, style="bold underline"))


def _new_table(*columns: str, right: tuple[str, ...] = ()) -> Table:
    from rich.table import Table
    table = Table(show_edge=False, header_style="bold")
    for name in columns:
        table.add_column(name, justify="right" if name in right else "left", no_wrap=True)
    return table


def _row(table: Table, *cells: str, style: Optional[str] = None) -> None:
    from rich.text import Text
    table.add_row(*(Text(c) for c in cells), style=style)


def _human_bytes(n: int) -> str:
    size, units = n / 1024, ["KiB", "MiB", "GiB", "TiB"]
    while size >= 1024 and len(units) > 1:
        size /= 1024
        units.pop(0)
    return f"{size:.1f} {units[0]}"


def _shape(t: torch.Tensor) -> str:
    return "[" + ", ".join(str(d) for d in t.shape) + "]"


def _dtype(t: torch.Tensor) -> str:
    return str(t.dtype).removeprefix("torch.")


# -- kiln inspect ---------------------------------------------------------------------------------

def _configure_inspect(p: argparse.ArgumentParser) -> None:
    p.add_argument("model", metavar="MODEL.pt", help="a TorchScript archive (kiln.save, torch.jit.save)")
    p.add_argument("--code", action=argparse.BooleanOptionalAction, default=True,
                   help="print each method's code (default: on)")
    p.add_argument("--graph", action="store_true", help="print each method's IR graph")
    p.add_argument("--method", metavar="NAME", default=None, help="show only this method")


def _show_summary(console: Console, path: str, module: ScriptModule, version: int) -> None:
    from rich.table import Table
    from rich.text import Text
    console.print(Text(path, style="bold"))
    grid = Table.grid(padding=(0, 2))
    grid.add_column(style="bold")
    grid.add_column()
    submodules = sum(1 for _ in module.named_modules()) - 1
    for key, value in (("class", module.qualified_name), ("format version", str(version)),
                       ("methods", ", ".join(module.method_names) or "(none)"),
                       ("submodules", str(submodules))):
        grid.add_row(Text(key), Text(value))
    console.print(grid)


def _show_method(console: Console, module: ScriptModule, name: str, code: bool, graph: bool) -> None:
    from rich.text import Text
    method = getattr(module, name)
    if code:
        _heading(console, f"code: {name}")
        console.print(Text(method.code.rstrip("\n")))
    if graph:
        _heading(console, f"graph: {name}")
        console.print(Text(str(method.graph).rstrip("\n")))


def _show_tensors(console: Console, module: ScriptModule) -> None:
    _heading(console, "parameters and buffers")
    table = _new_table("name", "kind", "shape", "dtype", "bytes", right=("bytes",))
    count = total = 0
    for kind, named in (("parameter", module.named_parameters()), ("buffer", module.named_buffers())):
        for name, t in named:
            nbytes = t.numel() * t.element_size()
            _row(table, name, kind, _shape(t), _dtype(t), str(nbytes))
            count += 1
            total += nbytes
    table.add_section()
    _row(table, "total", f"{count} tensor{'' if count == 1 else 's'}", "", "",
         str(total) + (f" ({_human_bytes(total)})" if total >= 1024 else ""), style="bold")
    console.print(table)


def _show_extra_files(console: Console, reader: ArchiveReader) -> None:
    from rich.text import Text
    _heading(console, "extra files")
    names = [n for n in reader.names() if n.startswith("extra/")]
    if not names:
        console.print(Text("(none)"))
        return
    table = _new_table("name", "bytes", right=("bytes",))
    for name in names:
        _row(table, name.removeprefix("extra/"), str(reader.record(name).size))
    console.print(table)


def _run_inspect(args: argparse.Namespace) -> int:
    from kiln.serialization.load import archive_version
    path: str = args.model
    reader = _open_reader(path)
    try:
        version = archive_version(reader)
    except KilnError as e:
        raise _loading_error(path, e) from None
    module = _load_model(path)
    names = [_check_method(module, args.method, path)] if args.method else module.method_names
    console = _console()
    _show_summary(console, path, module, version)
    for name in names:
        _show_method(console, module, name, args.code, args.graph)
    _show_tensors(console, module)
    _show_extra_files(console, reader)
    return 0


# -- kiln run -------------------------------------------------------------------------------------

_SHAPE_SPEC = re.compile(r"([0-9]+(?:x[0-9]+)*)(?::([A-Za-z0-9_]+))?")
_SCALAR_SPEC = re.compile(r"(int|float|bool|str):(.*)", re.DOTALL)
_FILE_SUFFIXES = (".pt", ".pth", ".npy")
_MAX_ELEMENTS = 1 << 28
_BOOLS = {"true": True, "1": True, "false": False, "0": False}


def _configure_run(p: argparse.ArgumentParser) -> None:
    p.add_argument("model", metavar="MODEL.pt", help="a TorchScript archive (kiln.save, torch.jit.save)")
    p.add_argument("inputs", metavar="INPUT", nargs="*",
                   help="a .pt or .npy file, a random tensor (2x3, 1x3x224x224:float32, 4:int64) "
                        "or a scalar (int:3, float:0.5, bool:true, str:text)")
    p.add_argument("--method", metavar="NAME", default="forward",
                   help="the method to call (default: forward)")
    p.add_argument("--seed", metavar="N", type=int, default=0, help="seed of the random inputs (default: 0)")
    p.add_argument("--save-output", metavar="OUT.pt", default=None,
                   help="write the output to OUT.pt with torch.save")


def _scalar_input(kind: str, text: str, spec: str) -> Any:
    try:
        if kind == "int":
            return int(text)
        if kind == "float":
            return float(text)
    except ValueError:
        article = "an" if kind == "int" else "a"
        raise UsageError(f"bad input {spec!r}: {text!r} is not {article} {kind}") from None
    if kind == "bool":
        if text.lower() not in _BOOLS:
            raise UsageError(f"bad input {spec!r}: a bool is true, false, 1 or 0")
        return _BOOLS[text.lower()]
    return text


def _parse_dtype(name: Optional[str], spec: str) -> torch.dtype:
    if name is None:
        return torch.float32
    dtype = getattr(torch, name, None)
    if not isinstance(dtype, torch.dtype):
        raise UsageError(f"bad input {spec!r}: unknown dtype {name!r}")
    return dtype


def _random_tensor(shape: list[int], dtype: torch.dtype, gen: torch.Generator) -> torch.Tensor:
    """Drawn in a dtype every generator supports, then converted."""
    if dtype.is_complex:
        wide = torch.complex128 if dtype == torch.complex128 else torch.complex64
        return torch.randn(shape, generator=gen, dtype=wide).to(dtype)
    if dtype.is_floating_point:
        wide = torch.float64 if dtype == torch.float64 else torch.float32
        return torch.randn(shape, generator=gen, dtype=wide).to(dtype)
    if dtype == torch.bool:
        return torch.randint(0, 2, shape, generator=gen).bool()
    return torch.randint(0, 10, shape, generator=gen).to(dtype)


def _random_input(dims: str, dtype_name: Optional[str], spec: str, gen: torch.Generator) -> torch.Tensor:
    shape = [int(d) for d in dims.split("x")]
    dtype = _parse_dtype(dtype_name, spec)
    if math.prod(shape) > _MAX_ELEMENTS:
        raise UsageError(f"bad input {spec!r}: more than {_MAX_ELEMENTS} elements")
    try:
        return _random_tensor(shape, dtype, gen)
    except (RuntimeError, TypeError) as e:    # quantized and other special dtypes
        raise UsageError(f"bad input {spec!r}: no random {dtype_name} tensors: {_first_line(e)}") from None


def _load_npy(path: str) -> list[Any]:
    try:
        import numpy
    except ImportError:
        raise UsageError(f"cannot read {path}: numpy is not installed") from None
    try:
        array = numpy.load(path, allow_pickle=False)
        return [torch.from_numpy(numpy.array(array))]
    except OSError as e:
        raise _cannot_read(path, e) from None
    except (ValueError, TypeError, EOFError) as e:
        raise UsageError(f"cannot read {path}: {_first_line(e)}") from None


def _load_tensors(path: str) -> list[Any]:
    """The inputs in a ``torch.save`` file: a tensor, or a list or tuple of them."""
    try:
        value = torch.load(path, map_location="cpu", weights_only=True)
    except OSError as e:
        raise _cannot_read(path, e) from None
    except Exception as e:   # a pickle the safe loader refuses, a truncated file...: the user's input
        reason = f"{type(e).__name__}: {_first_line(e)}"
        raise UsageError(f"cannot read {path} with torch.load: {reason}") from None
    items = list(value) if isinstance(value, (list, tuple)) else [value]
    if not all(isinstance(t, torch.Tensor) for t in items):
        raise UsageError(f"{path}: expected a tensor, or a list or tuple of tensors "
                         f"(found {type(value).__name__})")
    return items


def _parse_input(spec: str, gen: torch.Generator) -> list[Any]:
    """The input(s) one command-line ``INPUT`` stands for (see the module docstring)."""
    is_file = spec.lower().endswith(_FILE_SUFFIXES)
    scalar = None if is_file else _SCALAR_SPEC.fullmatch(spec)
    if scalar is not None:
        return [_scalar_input(scalar.group(1), scalar.group(2), spec)]
    shape = None if is_file else _SHAPE_SPEC.fullmatch(spec)
    if shape is not None:
        return [_random_input(shape.group(1), shape.group(2), spec, gen)]
    if not is_file and not os.path.exists(spec):
        raise UsageError(f"bad input {spec!r}: not a file, a shape such as 2x3 or 1x3x8x8:float16, "
                         "or a scalar such as int:3")
    return _load_npy(spec) if spec.lower().endswith(".npy") else _load_tensors(spec)


def _flatten(value: Any, name: str) -> Iterator[tuple[str, Any]]:
    if isinstance(value, (tuple, list)) and value:
        for i, item in enumerate(value):
            yield from _flatten(item, f"{name}[{i}]")
    elif isinstance(value, dict) and value:
        for key, item in value.items():
            yield from _flatten(item, f"{name}[{key!r}]")
    else:
        yield name, value


def _number(x: float) -> str:
    return f"{x:.4g}"


def _tensor_summary(t: torch.Tensor) -> str:
    t = t.detach()
    if t.numel() == 0:
        return "empty"
    if t.layout != torch.strided or t.is_quantized or t.device.type == "meta":
        return f"{t.layout}, {t.device.type}".removeprefix("torch.")
    if t.dtype == torch.bool:
        return f"{int(t.sum())} of {t.numel()} true"
    if t.numel() <= 6:
        flat = t.flatten().tolist()
        return "values: [" + ", ".join(_number(v) if isinstance(v, float) else str(v) for v in flat) + "]"
    if t.is_complex():
        return f"mean |x|={_number(float(t.abs().double().mean()))}"
    d = t.double()
    text = f"min={_number(float(d.min()))} max={_number(float(d.max()))} mean={_number(float(d.mean()))}"
    return text + (f" std={_number(float(d.std()))}" if t.is_floating_point() else "")


def _value_row(table: Table, name: str, value: Any) -> None:
    if isinstance(value, torch.Tensor):
        _row(table, name, "Tensor", _shape(value), _dtype(value), _tensor_summary(value))
        return
    text = repr(value)
    _row(table, name, type(value).__name__, "", "", text if len(text) <= 80 else text[:77] + "...")


def _show_values(console: Console, title: str, values: Iterable[tuple[str, Any]]) -> None:
    _heading(console, title)
    table = _new_table("name", "type", "shape", "dtype", "summary")
    for name, value in values:
        _value_row(table, name, value)
    console.print(table)


def _call(module: ScriptModule, name: str, inputs: list[Any]) -> tuple[bool, Any]:
    """(True, result), or (False, one-line message) when the method raised."""
    from kiln.errors import InputError
    try:
        with torch.no_grad():
            return True, getattr(module, name)(*inputs)
    except InputError as e:
        text = _first_line(e)
        raise UsageError(text if name in text else f"{name}: {text}") from None
    except Exception as e:   # the model's own failure: reported in one line, exit status 1
        return False, f"{name} raised {type(e).__name__}: {_first_line(e)}"


def _save_output(value: Any, path: str) -> None:
    import io
    buf = io.BytesIO()
    try:
        torch.save(value, buf)
    except Exception as e:   # an output torch.save cannot pickle
        raise UsageError(f"cannot save the output to {path}: {_first_line(e)}") from None
    _write_file(path, buf.getvalue())


def _run_run(args: argparse.Namespace) -> int:
    path: str = args.model
    gen = torch.Generator().manual_seed(args.seed)
    inputs = [x for spec in args.inputs for x in _parse_input(spec, gen)]
    module = _load_model(path)
    name = _check_method(module, args.method, path)
    ok, result = _call(module, name, inputs)
    if not ok:
        print(f"kiln run: error: {result}", file=sys.stderr)
        return 1
    if args.save_output is not None:
        _save_output(result, args.save_output)
    console = _console()
    _show_values(console, f"inputs of {module.qualified_name}.{name}",
                 ((f"input[{i}]", x) for i, x in enumerate(inputs)))
    _show_values(console, "output", _flatten(result, "output"))
    return 0


# -- kiln graph -----------------------------------------------------------------------------------

def _configure_graph(p: argparse.ArgumentParser) -> None:
    p.add_argument("model", metavar="MODEL.pt", help="a TorchScript archive (kiln.save, torch.jit.save)")
    p.add_argument("-o", "--output", metavar="OUT", required=True,
                   help="the file to write: .dot (DOT text), or .svg, .png or .pdf (needs Graphviz)")
    p.add_argument("--method", metavar="NAME", default="forward",
                   help="the method to draw (default: forward)")
    p.add_argument("--inlined", action="store_true", help="inline calls on submodules first")


def _write_file(path: str, data: bytes) -> None:
    from kiln.serialization.archive import atomic_write
    try:
        atomic_write(path, data)
    except KilnError as e:
        cause = e.__cause__
        reason = cause.strerror if isinstance(cause, OSError) and cause.strerror else _first_line(e)
        raise UsageError(f"cannot write {path}: {reason}") from None


def _run_graph(args: argparse.Namespace) -> int:
    from kiln.graphviz import RENDER_FORMATS, GraphvizError, find_dot, render, to_dot
    path: str = args.model
    fmt = os.path.splitext(args.output)[1].lower().removeprefix(".")
    if fmt != "dot" and fmt not in RENDER_FORMATS:
        raise UsageError(f"cannot write {args.output}: the name must end in .dot, .svg, .png or .pdf")
    dot = find_dot() if fmt != "dot" else None
    if fmt != "dot" and dot is None:
        raise UsageError("graphviz 'dot' not found; install graphviz or write .dot")
    module = _load_model(path)
    name = _check_method(module, args.method, path)
    method = getattr(module, name)
    text = to_dot(method.inlined_graph if args.inlined else method.graph, f"{module.qualified_name}.{name}")
    try:
        data = text.encode("utf-8") if fmt == "dot" else render(text, fmt, dot)
    except GraphvizError as e:
        raise UsageError(str(e)) from None
    _write_file(args.output, data)
    return 0


COMMANDS: tuple[Command, ...] = (
    Command("opt", "run optimization passes over a graph in the text form", _configure_opt, _run_opt),
    Command("inspect", "describe a .pt archive: class, version, code, tensors, extra files",
            _configure_inspect, _run_inspect),
    Command("run", "call a method of a .pt archive on given or random inputs", _configure_run, _run_run,
            rest="inputs"),
    Command("graph", "draw a method's graph as Graphviz DOT (or SVG, PNG, PDF)",
            _configure_graph, _run_graph),
)


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="kiln", description="Kiln: TorchScript-style graphs for PyTorch.")
    sub = parser.add_subparsers(dest="command", metavar="COMMAND")
    for cmd in COMMANDS:
        p = sub.add_parser(cmd.name, help=cmd.help, description=cmd.help)
        cmd.configure(p)
        p.set_defaults(run=cmd.run, rest=cmd.rest)
    return parser


def _parse(parser: argparse.ArgumentParser, argv: Optional[Sequence[str]]) -> argparse.Namespace:
    args, extra = parser.parse_known_args(argv)
    rest: Optional[str] = getattr(args, "rest", None)
    if extra and (rest is None or any(a.startswith("-") for a in extra)):
        parser.error(f"unrecognized arguments: {' '.join(extra)}")
    if extra and rest is not None:
        getattr(args, rest).extend(extra)
    return args


def main(argv: Optional[Sequence[str]] = None) -> int:
    """Run the command line ``argv`` (default: ``sys.argv[1:]``); return the exit status."""
    parser = build_parser()
    try:
        args = _parse(parser, argv)
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
