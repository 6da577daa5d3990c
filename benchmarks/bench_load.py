"""Load time of ``kiln.load`` vs ``torch.jit.load`` on ResNet-18 and a 16-block conv net.

Run from the repository root::

    python benchmarks/bench_load.py                         # both models, scripted and traced archives
    python benchmarks/bench_load.py --reps 11 --models resnet18 --capture script
    python benchmarks/bench_load.py --threads 2 --json out.json

Models, in eval mode, with non-trivial BatchNorm statistics:

* ``resnet18``: ``torchvision.models.resnet18()`` when torchvision can be imported, else a copy
  of its architecture defined here (BasicBlock x [2, 2, 2, 2], 7x7/2 stem, BN, ReLU, max pool,
  64/128/256/512 channels, average pool, 1000-way fc; 11.7M parameters).  The output says which.
  Input for the first call: 1x3x224x224.
* ``convnet16``: a 3x3 stem (3 -> 64, BN, ReLU), 16 blocks ``x + relu(bn(conv3x3(x)))`` of 64
  channels, average pool, a 10-way linear head.  Input for the first call: 1x3x32x32.

For each model and capture (``--capture``: ``script`` = ``torch.jit.script`` / ``kiln.script``,
``trace`` = ``torch.jit.trace`` / ``kiln.trace``) two archives are written, in memory: one by
``torch.jit.save`` and one by ``kiln.save``.  Each archive is loaded by both loaders from the
same bytes (``torch.jit.load(io.BytesIO(data))``, ``kiln.load(data)``) and from the same file
(a path to a file in a temporary directory; after the first read it is in the page cache).

What is timed (wall clock, ``time.perf_counter``):

* **load**: the call ``torch.jit.load(...)`` / ``kiln.load(...)`` alone.  ``kiln.load``
  compiles every method of the archive to Kiln graphs inside this call, but generates the
  Python code that runs a graph lazily, on its first call;
* **load + first call**: a fresh load from bytes, then the first forward call (under
  ``torch.no_grad()``), reported as the sum and the first call alone.  For Kiln the first call
  includes generating and compiling the code of each graph; for TorchScript it is the profiling
  run (its optimised plan is built on a later call, which is not timed).

Before any timing each archive is loaded once by each loader and the two modules' outputs are
compared with ``torch.testing.assert_close`` (default tolerances); a mismatch or a loader that
raises aborts the script (exit status 1) with a message.  These loads also pay each loader's
one-time costs in this process (Kiln imports its compiler lazily), which the timed samples
therefore do not include.  Then ``--reps`` rounds: in each round every (archive, source,
loader) case is timed once, the two loaders of a case in alternating order.  A ``gc.collect()``
runs before every timed call; the collector stays enabled.  Figures are medians over rounds in
milliseconds, with the interquartile range; ``kiln/torch`` is the ratio of medians: below 1.00x
means ``kiln.load`` is faster.
"""

from __future__ import annotations

import argparse
import contextlib
import gc
import io
import json
import statistics
import sys
import tempfile
import time
import warnings
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch
from bench_core import _randomize_batchnorm, _short, import_kiln, machine_info
from torch import nn

MODELS = ("resnet18", "convnet16")
CAPTURES = ("script", "trace")
LOADERS = ("torch", "kiln")

# -- the models ---------------------------------------------------------------------------------


def conv3x3(cin: int, cout: int, stride: int = 1) -> nn.Conv2d:
    return nn.Conv2d(cin, cout, kernel_size=3, stride=stride, padding=1, bias=False)


class BasicBlock(nn.Module):
    """torchvision's ``BasicBlock`` (expansion 1)."""

    expansion: int = 1

    def __init__(self, inplanes: int, planes: int, stride: int = 1,
                 downsample: nn.Module | None = None) -> None:
        super().__init__()
        self.conv1 = conv3x3(inplanes, planes, stride)
        self.bn1 = nn.BatchNorm2d(planes)
        self.relu = nn.ReLU(inplace=True)
        self.conv2 = conv3x3(planes, planes)
        self.bn2 = nn.BatchNorm2d(planes)
        self.downsample = downsample
        self.stride = stride

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        identity = x
        out = self.conv1(x)
        out = self.bn1(out)
        out = self.relu(out)
        out = self.conv2(out)
        out = self.bn2(out)
        if self.downsample is not None:
            identity = self.downsample(x)
        out += identity
        out = self.relu(out)
        return out


class ResNet18(nn.Module):
    """torchvision's ``resnet18()`` architecture: same modules, names and forward."""

    def __init__(self, num_classes: int = 1000) -> None:
        super().__init__()
        self.inplanes = 64
        self.conv1 = nn.Conv2d(3, 64, kernel_size=7, stride=2, padding=3, bias=False)
        self.bn1 = nn.BatchNorm2d(64)
        self.relu = nn.ReLU(inplace=True)
        self.maxpool = nn.MaxPool2d(kernel_size=3, stride=2, padding=1)
        self.layer1 = self._make_layer(64, 2)
        self.layer2 = self._make_layer(128, 2, stride=2)
        self.layer3 = self._make_layer(256, 2, stride=2)
        self.layer4 = self._make_layer(512, 2, stride=2)
        self.avgpool = nn.AdaptiveAvgPool2d((1, 1))
        self.fc = nn.Linear(512, num_classes)

    def _make_layer(self, planes: int, blocks: int, stride: int = 1) -> nn.Sequential:
        downsample = None
        if stride != 1 or self.inplanes != planes:
            downsample = nn.Sequential(nn.Conv2d(self.inplanes, planes, 1, stride=stride, bias=False),
                                       nn.BatchNorm2d(planes))
        layers = [BasicBlock(self.inplanes, planes, stride, downsample)]
        self.inplanes = planes
        layers += [BasicBlock(planes, planes) for _ in range(1, blocks)]
        return nn.Sequential(*layers)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = self.conv1(x)
        x = self.bn1(x)
        x = self.relu(x)
        x = self.maxpool(x)
        x = self.layer1(x)
        x = self.layer2(x)
        x = self.layer3(x)
        x = self.layer4(x)
        x = self.avgpool(x)
        x = torch.flatten(x, 1)
        x = self.fc(x)
        return x


class ConvBlock(nn.Module):
    """``x + relu(bn(conv3x3(x)))``."""

    def __init__(self, channels: int) -> None:
        super().__init__()
        self.conv = nn.Conv2d(channels, channels, 3, padding=1)
        self.bn = nn.BatchNorm2d(channels)
        self.relu = nn.ReLU()

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return x + self.relu(self.bn(self.conv(x)))


class ConvNet16(nn.Module):
    """A 3x3 stem, 16 residual ConvBlocks of 64 channels, average pooling, a linear head."""

    def __init__(self, blocks: int = 16, channels: int = 64, classes: int = 10) -> None:
        super().__init__()
        self.stem = nn.Sequential(nn.Conv2d(3, channels, 3, padding=1), nn.BatchNorm2d(channels), nn.ReLU())
        self.blocks = nn.Sequential(*(ConvBlock(channels) for _ in range(blocks)))
        self.pool = nn.AdaptiveAvgPool2d(1)
        self.head = nn.Linear(channels, classes)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = self.blocks(self.stem(x))
        return self.head(torch.flatten(self.pool(x), 1))


@dataclass
class Case:
    name: str
    description: str
    model: nn.Module
    example: torch.Tensor


def make_case(name: str) -> Case:
    torch.manual_seed(0)
    gen = torch.Generator().manual_seed(1)
    if name == "resnet18":
        try:
            import torchvision
        except ImportError:
            model, origin = ResNet18(), "ResNet-18 defined in bench_load.py (torchvision not installed)"
        else:
            model, origin = torchvision.models.resnet18(), f"torchvision {torchvision.__version__} resnet18()"
        x = torch.randn(1, 3, 224, 224, generator=gen)
    else:
        model, origin = ConvNet16(), "ConvNet16: stem + 16 x (conv3x3 64->64, BN, ReLU, residual add) + head"
        x = torch.randn(1, 3, 32, 32, generator=gen)
    model = _randomize_batchnorm(model).eval()
    params = sum(p.numel() for p in model.parameters())
    return Case(name, f"{origin}; {params / 1e6:.2f}M parameters; input {tuple(x.shape)}", model, x)


# -- archives and loaders -----------------------------------------------------------------------

@contextlib.contextmanager
def quiet() -> Iterator[None]:
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        yield


def write_archive(writer: str, capture: str, case: Case) -> bytes:
    """The archive bytes of ``case.model`` captured and saved by ``writer`` (torch or kiln)."""
    buf = io.BytesIO()
    with quiet(), torch.no_grad():
        if writer == "torch":
            m = torch.jit.script(case.model) if capture == "script" else torch.jit.trace(case.model, case.example)
            torch.jit.save(m, buf)
        else:
            kiln = import_kiln()
            m = kiln.script(case.model) if capture == "script" else kiln.trace(case.model, (case.example,))
            kiln.save(m, buf)
    return buf.getvalue()


def loader(name: str, source: str, data: bytes, path: Path) -> Callable[[], Any]:
    """The timed call: ``name``'s load of the archive, from ``data`` or from the file ``path``."""
    if name == "torch":
        if source == "bytes":
            return lambda: torch.jit.load(io.BytesIO(data))
        return lambda: torch.jit.load(str(path))
    kiln_load = import_kiln().load
    if source == "bytes":
        return lambda: kiln_load(data)
    return lambda: kiln_load(str(path))


@dataclass
class Archive:
    model: str
    capture: str
    writer: str
    data: bytes
    path: Path
    example: torch.Tensor


class Aborted(Exception):
    pass


def verify(a: Archive) -> None:
    """The Kiln-loaded module computes what the torch.jit-loaded one does, from both sources."""
    with quiet(), torch.no_grad():
        try:
            expected = loader("torch", "bytes", a.data, a.path)()(a.example)
        except Exception as e:
            raise Aborted(f"{a.model}/{a.capture}, archive by {a.writer}, torch.jit.load: {_short(e, 600)}") from e
        for source in ("bytes", "file"):
            try:
                got = loader("kiln", source, a.data, a.path)()(a.example)
                torch.testing.assert_close(got, expected)
            except Exception as e:
                raise Aborted(f"{a.model}/{a.capture}, archive by {a.writer}, kiln.load from {source}: "
                              f"{_short(e, 600)}") from e


# -- timing -------------------------------------------------------------------------------------

@dataclass
class Series:
    samples: list[float] = field(default_factory=list)   # wall clock, seconds
    cpu: list[float] = field(default_factory=list)       # CPU time of this process, seconds

    @property
    def cpu_median_ms(self) -> float | None:
        return statistics.median(self.cpu) * 1e3 if self.cpu else None

    @property
    def median_ms(self) -> float | None:
        return statistics.median(self.samples) * 1e3 if self.samples else None

    @property
    def iqr_ms(self) -> float | None:
        if len(self.samples) < 2:
            return None
        q = statistics.quantiles(self.samples, n=4)
        return (q[2] - q[0]) * 1e3


@dataclass
class LoadResult:
    archive: Archive
    source: str
    times: dict[str, Series] = field(default_factory=lambda: {n: Series() for n in LOADERS})


@dataclass
class FirstCallResult:
    archive: Archive
    load: dict[str, Series] = field(default_factory=lambda: {n: Series() for n in LOADERS})
    call: dict[str, Series] = field(default_factory=lambda: {n: Series() for n in LOADERS})


def time_load(fn: Callable[[], Any], into: Series) -> None:
    gc.collect()
    with quiet():
        start, start_cpu = time.perf_counter(), time.process_time()
        fn()
        into.samples.append(time.perf_counter() - start)
        into.cpu.append(time.process_time() - start_cpu)


def time_first_call(fn: Callable[[], Any], x: torch.Tensor) -> tuple[float, float]:
    gc.collect()
    with quiet(), torch.no_grad():
        start = time.perf_counter()
        m = fn()
        loaded = time.perf_counter()
        m(x)
        called = time.perf_counter()
    return loaded - start, called - loaded


def rotated(names: Sequence[str], r: int) -> list[str]:
    k = r % len(names)
    return list(names[k:]) + list(names[:k])


def measure(archives: list[Archive], reps: int) -> tuple[list[LoadResult], list[FirstCallResult]]:
    loads = [LoadResult(a, s) for a in archives for s in ("bytes", "file")]
    firsts = [FirstCallResult(a) for a in archives]
    for r in range(reps):
        print(f"  round {r + 1}/{reps}", file=sys.stderr, flush=True)
        for lr in loads:
            for name in rotated(LOADERS, r):
                fn = loader(name, lr.source, lr.archive.data, lr.archive.path)
                time_load(fn, lr.times[name])
        for fr in firsts:
            for name in rotated(LOADERS, r):
                fn = loader(name, "bytes", fr.archive.data, fr.archive.path)
                t_load, t_call = time_first_call(fn, fr.archive.example)
                fr.load[name].samples.append(t_load)
                fr.call[name].samples.append(t_call)
    return loads, firsts


# -- reporting ----------------------------------------------------------------------------------

def _fmt(x: float | None, spec: str = ".1f", suffix: str = "") -> str:
    return "-" if x is None else f"{x:{spec}}{suffix}"


def _ratio(a: float | None, b: float | None) -> float | None:
    return a / b if a is not None and b else None


LOAD_HEADERS = ["model", "capture", "archive by", "from", "torch.jit.load ms", "IQR", "kiln.load ms", "IQR",
                "kiln/torch", "kiln/torch CPU"]
FIRST_HEADERS = ["model", "capture", "archive by", "torch load+call ms", "of it call",
                 "kiln load+call ms", "of it call", "kiln/torch"]


def load_rows(loads: list[LoadResult]) -> list[list[str]]:
    rows = []
    for lr in loads:
        a, t, k = lr.archive, lr.times["torch"], lr.times["kiln"]
        rows.append([a.model, a.capture, a.writer, lr.source, _fmt(t.median_ms), _fmt(t.iqr_ms),
                     _fmt(k.median_ms), _fmt(k.iqr_ms), _fmt(_ratio(k.median_ms, t.median_ms), ".2f", "x"),
                     _fmt(_ratio(k.cpu_median_ms, t.cpu_median_ms), ".2f", "x")])
    return rows


def _sum_median_ms(load: Series, call: Series) -> float | None:
    totals = [a + b for a, b in zip(load.samples, call.samples)]
    return statistics.median(totals) * 1e3 if totals else None


def first_rows(firsts: list[FirstCallResult]) -> list[list[str]]:
    rows = []
    for fr in firsts:
        a = fr.archive
        t = _sum_median_ms(fr.load["torch"], fr.call["torch"])
        k = _sum_median_ms(fr.load["kiln"], fr.call["kiln"])
        rows.append([a.model, a.capture, a.writer, _fmt(t), _fmt(fr.call["torch"].median_ms), _fmt(k),
                     _fmt(fr.call["kiln"].median_ms), _fmt(_ratio(k, t), ".2f", "x")])
    return rows


def print_table(title: str, headers: list[str], rows: list[list[str]], numeric_from: int) -> None:
    try:
        from rich.console import Console
        from rich.table import Table
    except ImportError:
        print(title)
        widths = [max(len(r[i]) for r in [headers, *rows]) for i in range(len(headers))]
        for r in [headers, ["-" * w for w in widths], *rows]:
            print("  ".join(cell.ljust(w) for cell, w in zip(r, widths, strict=True)).rstrip())
    else:
        table = Table(title=title)
        for i, h in enumerate(headers):
            table.add_column(h, justify="right" if i >= numeric_from else "left", no_wrap=True)
        for r in rows:
            table.add_row(*r)
        Console(width=max(132, Console().width)).print(table)


def print_report(info: dict[str, Any], cases: list[Case], loads: list[LoadResult],
                 firsts: list[FirstCallResult], args: argparse.Namespace) -> None:
    kiln = import_kiln()
    print(f"CPU: {info['processor']} ({info['machine']}), {info['cpu_count']} CPUs "
          f"({info['cpus_usable']} usable); {info['system']}")
    print(f"Python {info['python']}, torch {info['torch']}, kiln {kiln.__version__}; "
          f"torch.set_num_threads({info['torch_threads']})")
    for c in cases:
        print(f"{c.name}: {c.description}")
    print(f"{args.reps} interleaved rounds; median wall-clock ms and IQR; kiln/torch = ratio of medians "
          "(below 1.00x: kiln faster);\nkiln/torch CPU = the same for the CPU time of the process "
          "(less disturbed by other load on the machine)\n")
    print_table("Load only: torch.jit.load vs kiln.load on the same archive", LOAD_HEADERS, load_rows(loads), 4)
    print()
    print_table("Load from bytes, then the first forward call (no_grad; Kiln generates its code on it)",
                FIRST_HEADERS, first_rows(firsts), 3)
    print()
    for m in dict.fromkeys(lr.archive.model for lr in loads):
        ratios = [_ratio(lr.times["kiln"].median_ms, lr.times["torch"].median_ms)
                  for lr in loads if lr.archive.model == m]
        got = [x for x in ratios if x is not None]
        if got:
            print(f"{m}: kiln.load/torch.jit.load over {len(got)} cases: "
                  f"min {min(got):.2f}x, median {statistics.median(got):.2f}x, max {max(got):.2f}x")


def write_json(path: str, info: dict[str, Any], loads: list[LoadResult], firsts: list[FirstCallResult],
               args: argparse.Namespace) -> None:
    def key(a: Archive) -> dict[str, Any]:
        return {"model": a.model, "capture": a.capture, "archive_by": a.writer, "archive_bytes": len(a.data)}

    payload = {
        "machine": info,
        "settings": {"reps": args.reps, "models": args.models, "capture": args.capture},
        "load": [{**key(lr.archive), "source": lr.source,
                  **{f"{n}_s": lr.times[n].samples for n in LOADERS},
                  **{f"{n}_cpu_s": lr.times[n].cpu for n in LOADERS}} for lr in loads],
        "load_then_first_call": [{**key(fr.archive), **{f"{n}_load_s": fr.load[n].samples for n in LOADERS},
                                  **{f"{n}_call_s": fr.call[n].samples for n in LOADERS}} for fr in firsts],
    }
    Path(path).write_text(json.dumps(payload, indent=2) + "\n", encoding="utf-8")


# -- main ---------------------------------------------------------------------------------------

def _subset(p: argparse.ArgumentParser, flag: str, value: str, allowed: Sequence[str]) -> list[str]:
    chosen = [x.strip() for x in value.split(",") if x.strip()]
    bad = [x for x in chosen if x not in allowed]
    if bad or not chosen:
        p.error(f"{flag}: unknown {bad} (choose from {', '.join(allowed)})")
    return chosen


def parse_args(argv: Sequence[str] | None = None) -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0] if __doc__ else None)
    p.add_argument("--reps", type=int, default=7, help="timed rounds (default 7)")
    p.add_argument("--models", default=",".join(MODELS), help="comma-separated subset of " + ", ".join(MODELS))
    p.add_argument("--capture", choices=("script", "trace", "both"), default="both",
                   help="how the archives are made (default both)")
    p.add_argument("--threads", type=int, default=1, help="torch.set_num_threads (default 1)")
    p.add_argument("--json", metavar="PATH", help="also write every sample as JSON")
    args = p.parse_args(argv)
    args.models = _subset(p, "--models", args.models, MODELS)
    if args.reps < 1:
        p.error("--reps must be at least 1")
    return args


def main(argv: Sequence[str] | None = None) -> int:
    args = parse_args(argv)
    torch.set_num_threads(args.threads)
    info = machine_info(torch.get_num_threads())
    captures = CAPTURES if args.capture == "both" else (args.capture,)
    cases = [make_case(m) for m in args.models]
    with tempfile.TemporaryDirectory(prefix="bench_load_") as tmp:
        archives = []
        for c in cases:
            for cap in captures:
                for writer in LOADERS:
                    print(f"  writing {c.name}/{cap} with {writer} ...", file=sys.stderr, flush=True)
                    data = write_archive(writer, cap, c)
                    path = Path(tmp) / f"{c.name}-{cap}-{writer}.pt"
                    path.write_bytes(data)
                    archives.append(Archive(c.name, cap, writer, data, path, c.example))
        try:
            for a in archives:
                print(f"  checking {a.model}/{a.capture} (archive by {a.writer}) ...", file=sys.stderr, flush=True)
                verify(a)
        except Aborted as e:
            print(f"ABORTED: Kiln-loaded and torch.jit-loaded modules could not be compared or disagree: {e}",
                  file=sys.stderr)
            return 1
        loads, firsts = measure(archives, args.reps)
    print_report(info, cases, loads, firsts, args)
    if args.json:
        write_json(args.json, info, loads, firsts, args)
        print(f"wrote {args.json}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
