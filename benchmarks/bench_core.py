"""Latency of small models on the CPU: eager PyTorch vs TorchScript vs Kiln, in one process.

Run from the repository root::

    python benchmarks/bench_core.py                 # all models, all contenders
    python benchmarks/bench_core.py --json out.json # also write the results as JSON
    python benchmarks/bench_core.py --contenders eager,torchscript   # without Kiln

Method (see benchmarks/README.md): every contender's output is first checked against eager
PyTorch with ``torch.testing.assert_close``; each is warmed up; then many timed loops are run,
the contenders interleaved round-robin (in a rotating order) so that drift of the machine hits
all of them alike.  The figure reported is the median over loops of the per-call latency, with
the interquartile range beside it; ratios are of medians.  Everything runs under
``torch.no_grad()`` with the models in eval mode and, unless ``--threads`` says otherwise, on
one intra-op thread.

Contenders:

* ``eager``       -- the ``nn.Module`` itself;
* ``torchscript`` -- ``torch.jit.freeze(torch.jit.trace(model.eval(), inputs))``; skipped,
  with a note, where this PyTorch has no working ``torch.jit``;
* ``kiln``        -- ``kiln.trace(model.eval(), inputs)``.

A contender that cannot be built or that computes a wrong answer is reported as FAILED with
the reason, is not timed, and makes the script exit with status 1.
"""

from __future__ import annotations

import argparse
import gc
import json
import math
import os
import platform
import statistics
import sys
import time
import traceback
import warnings
from collections.abc import Callable, Sequence
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import torch
import torch.nn.functional as F
from torch import nn

REPO_ROOT = Path(__file__).resolve().parent.parent
CONTENDERS = ("eager", "torchscript", "kiln", "kiln-frozen")

# -- the models ---------------------------------------------------------------------------------


class MLP(nn.Module):
    """3 -> 8 -> 16 -> 1, ReLU between layers, sigmoid at the end."""

    def __init__(self) -> None:
        super().__init__()
        self.fc1 = nn.Linear(3, 8)
        self.fc2 = nn.Linear(8, 16)
        self.fc3 = nn.Linear(16, 1)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = torch.relu(self.fc1(x))
        x = torch.relu(self.fc2(x))
        return torch.sigmoid(self.fc3(x))


class LLTM(nn.Module):
    """The cell of PyTorch's custom C++/CUDA extension tutorial, in plain PyTorch."""

    def __init__(self, input_features: int, state_size: int) -> None:
        super().__init__()
        self.state_size = state_size
        self.weights = nn.Parameter(torch.empty(3 * state_size, input_features + state_size))
        self.bias = nn.Parameter(torch.empty(3 * state_size))
        stdv = 1.0 / math.sqrt(state_size)
        for p in self.parameters():
            nn.init.uniform_(p, -stdv, stdv)

    def forward(self, input: torch.Tensor, old_h: torch.Tensor,
                old_cell: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        X = torch.cat([old_h, input], 1)
        gate_weights = F.linear(X, self.weights, self.bias)
        gates = gate_weights.chunk(3, dim=1)
        input_gate = torch.sigmoid(gates[0])
        output_gate = torch.sigmoid(gates[1])
        candidate_cell = F.elu(gates[2], alpha=1.0)
        new_cell = old_cell + candidate_cell * input_gate
        new_h = torch.tanh(new_cell) * output_gate
        return new_h, new_cell


class ConvNet(nn.Module):
    """Three 3x3 conv + BatchNorm + ReLU stages (3->16->32->32), max pooling, a linear head."""

    def __init__(self) -> None:
        super().__init__()
        chans = (3, 16, 32, 32)
        self.stages = nn.Sequential(*(
            nn.Sequential(nn.Conv2d(cin, cout, 3, padding=1), nn.BatchNorm2d(cout), nn.ReLU())
            for cin, cout in zip(chans[:-1], chans[1:], strict=True)))
        self.pool = nn.MaxPool2d(2)
        self.gap = nn.AdaptiveAvgPool2d(1)
        self.head = nn.Linear(chans[-1], 10)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        for i, stage in enumerate(self.stages):
            x = stage(x)
            if i < len(self.stages) - 1:
                x = self.pool(x)
        return self.head(torch.flatten(self.gap(x), 1))


def _randomize_batchnorm(model: nn.Module) -> nn.Module:
    """Give BatchNorm non-trivial running statistics so that folding them is really tested."""
    for m in model.modules():
        if isinstance(m, nn.BatchNorm2d):
            m.running_mean.uniform_(-0.5, 0.5)
            m.running_var.uniform_(0.5, 1.5)
            m.weight.data.uniform_(0.5, 1.5)
            m.bias.data.uniform_(-0.5, 0.5)
    return model


@dataclass
class Case:
    name: str
    description: str
    model: nn.Module
    inputs: tuple[torch.Tensor, ...]


def make_cases() -> list[Case]:
    torch.manual_seed(0)
    lltm_in, lltm_state, lltm_batch = 32, 128, 16
    return [
        Case("mlp", "MLP 3-8-16-1, batch 1", MLP(), (torch.randn(1, 3),)),
        Case("lltm", f"LLTM {lltm_in}->{lltm_state}, batch {lltm_batch}", LLTM(lltm_in, lltm_state),
             (torch.randn(lltm_batch, lltm_in), torch.randn(lltm_batch, lltm_state),
              torch.randn(lltm_batch, lltm_state))),
        Case("convnet", "ConvNet 3x(conv3x3+BN+ReLU), 1x3x32x32", _randomize_batchnorm(ConvNet()),
             (torch.randn(1, 3, 32, 32),)),
    ]


# -- building the contenders --------------------------------------------------------------------

@dataclass
class Contender:
    name: str
    fn: Callable[..., Any] | None = None
    status: str = "ok"          # ok | skipped | FAILED
    note: str = ""


def build_torchscript(model: nn.Module, inputs: tuple[torch.Tensor, ...]) -> Contender:
    jit = getattr(torch, "jit", None)
    if jit is None or not hasattr(jit, "trace"):
        return Contender("torchscript", status="skipped", note="torch.jit is not available")
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", DeprecationWarning)
        try:
            fn = jit.freeze(jit.trace(model.eval(), inputs))
        except Exception as e:  # a torch without a working torch.jit: skip, do not fail
            return Contender("torchscript", status="skipped", note=f"torch.jit failed: {_short(e)}")
    return Contender("torchscript", fn)


def import_kiln() -> Any:
    """Import the checkout's kiln (the installed one if any, else the one beside this file)."""
    try:
        import kiln
    except ModuleNotFoundError as e:
        if e.name != "kiln":
            raise
        sys.path.insert(0, str(REPO_ROOT))
        import kiln
    return kiln


def build_kiln(model: nn.Module, inputs: tuple[torch.Tensor, ...], verbose: bool,
               frozen: bool = False) -> Contender:
    """Kiln's trace of the model; with ``frozen``, ``kiln.freeze`` of it (the counterpart of the
    TorchScript contender, which is frozen too)."""
    name = "kiln-frozen" if frozen else "kiln"
    try:
        kiln = import_kiln()
        fn = kiln.trace(model.eval(), inputs)
        if frozen:
            fn = kiln.freeze(fn)
    except Exception as e:
        if verbose:
            traceback.print_exc()
        return Contender(name, status="FAILED", note=f"{'kiln.freeze' if frozen else 'kiln.trace'} raised {_short(e)}")
    return Contender(name, fn)


def build_contenders(case: Case, names: Sequence[str], verbose: bool) -> list[Contender]:
    model = case.model.eval()
    builders: dict[str, Callable[[], Contender]] = {
        "eager": lambda: Contender("eager", model),
        "torchscript": lambda: build_torchscript(model, case.inputs),
        "kiln": lambda: build_kiln(model, case.inputs, verbose),
        "kiln-frozen": lambda: build_kiln(model, case.inputs, verbose, frozen=True),
    }
    contenders = [builders[n]() for n in names]
    expected = model(*case.inputs)
    for c in contenders:
        if c.fn is not None:
            _check_output(c, expected, case.inputs)
    return contenders


def _check_output(c: Contender, expected: Any, inputs: tuple[torch.Tensor, ...]) -> None:
    """Mark ``c`` FAILED unless it computes what eager PyTorch computes (twice, to catch state)."""
    try:
        for _ in range(2):
            torch.testing.assert_close(c.fn(*inputs), expected)  # type: ignore[misc]
    except Exception as e:
        c.status, c.note, c.fn = "FAILED", f"output differs from eager: {_short(e)}", None


def _short(e: BaseException, limit: int = 160) -> str:
    text = f"{type(e).__name__}: {e}".strip().replace("\n", " ")
    return text if len(text) <= limit else text[:limit - 3] + "..."


# -- timing -------------------------------------------------------------------------------------

@dataclass
class Timing:
    model: str
    description: str
    contender: str
    status: str
    note: str = ""
    median_us: float | None = None
    p25_us: float | None = None
    p75_us: float | None = None
    calls_per_loop: int = 0
    loops: int = 0
    samples_us: list[float] = field(default_factory=list, repr=False)


def calibrate(fn: Callable[..., Any], inputs: tuple[torch.Tensor, ...], target_s: float) -> int:
    """Calls per timed loop so that one loop takes about ``target_s`` seconds."""
    number = 1
    while True:
        start = time.perf_counter_ns()
        for _ in range(number):
            fn(*inputs)
        elapsed = (time.perf_counter_ns() - start) / 1e9
        if elapsed >= target_s or number >= 1 << 20:
            return number
        number = max(number * 2, int(number * target_s / max(elapsed, 1e-9) * 1.1))


def measure(case: Case, contenders: list[Contender], args: argparse.Namespace) -> list[Timing]:
    live = [c for c in contenders if c.fn is not None]
    for c in live:
        for _ in range(args.warmup):
            c.fn(*case.inputs)  # type: ignore[misc]
    numbers = {c.name: calibrate(c.fn, case.inputs, args.loop_ms / 1e3) for c in live}  # type: ignore[arg-type]
    samples: dict[str, list[float]] = {c.name: [] for c in live}
    gc.collect()
    gc_was_enabled = gc.isenabled()
    gc.disable()
    try:
        for r in range(args.loops):
            order = live[r % len(live):] + live[:r % len(live)] if live else []
            for c in order:
                samples[c.name].append(_timed_loop(c.fn, case.inputs, numbers[c.name]))  # type: ignore[arg-type]
    finally:
        if gc_was_enabled:
            gc.enable()
    return [_summarize(case, c, samples.get(c.name, []), numbers.get(c.name, 0)) for c in contenders]


def _timed_loop(fn: Callable[..., Any], inputs: tuple[torch.Tensor, ...], number: int) -> float:
    """Per-call latency in microseconds over ``number`` back-to-back calls."""
    start = time.perf_counter_ns()
    for _ in range(number):
        fn(*inputs)
    return (time.perf_counter_ns() - start) / number / 1e3


def _summarize(case: Case, c: Contender, samples: list[float], number: int) -> Timing:
    t = Timing(case.name, case.description, c.name, c.status, c.note)
    if samples:
        q = statistics.quantiles(samples, n=4) if len(samples) > 1 else [samples[0]] * 3
        t.median_us, t.p25_us, t.p75_us = statistics.median(samples), q[0], q[2]
        t.calls_per_loop, t.loops, t.samples_us = number, len(samples), samples
    return t


def ratio(timings: list[Timing], model: str, num: str, den: str) -> float | None:
    by = {t.contender: t.median_us for t in timings if t.model == model}
    a, b = by.get(num), by.get(den)
    return a / b if a is not None and b else None


# -- reporting ----------------------------------------------------------------------------------

def machine_info(threads: int) -> dict[str, Any]:
    return {
        "processor": _cpu_name(),
        "machine": platform.machine(),
        "cpu_count": os.cpu_count(),
        "cpus_usable": len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else None,
        "system": f"{platform.system()} {platform.release()}",
        "python": platform.python_version(),
        "torch": torch.__version__,
        "torch_threads": threads,
    }


def _cpu_name() -> str:
    """platform.processor() is often empty on Linux; /proc/cpuinfo has the model name."""
    name = platform.processor()
    try:
        with open("/proc/cpuinfo", encoding="utf-8") as f:
            for line in f:
                if line.startswith("model name"):
                    return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return name or platform.machine() or "unknown"


def _fmt(x: float | None, spec: str = ".1f", suffix: str = "") -> str:
    return "-" if x is None else f"{x:{spec}}{suffix}"


def table_rows(timings: list[Timing]) -> tuple[list[list[str]], list[str]]:
    """The table's rows, and the notes they refer to as ``[n]``."""
    rows, notes = [], []
    for t in timings:
        spread = None if t.p25_us is None or t.p75_us is None else t.p75_us - t.p25_us
        status = t.status
        if t.note:
            notes.append(f"[{len(notes) + 1}] {t.model}/{t.contender}: {t.note}")
            status += f" [{len(notes)}]"
        rows.append([t.model, t.contender, _fmt(t.median_us), _fmt(spread),
                     _fmt(ratio(timings, t.model, t.contender, "eager"), ".2f", "x"),
                     _fmt(ratio(timings, t.model, t.contender, "torchscript"), ".2f", "x"), status])
    return rows, notes


HEADERS = ["model", "contender", "median us", "IQR us", "/ eager", "/ torchscript", "status"]


def report_header(info: dict[str, Any], args: argparse.Namespace) -> str:
    threads = f"torch.set_num_threads({info['torch_threads']})"
    if args.threads == 1:
        threads += " (the default; change with --threads)"
    return "\n".join([
        f"CPU: {info['processor']} ({info['machine']}), {info['cpu_count']} CPUs "
        f"({info['cpus_usable']} usable); {info['system']}",
        f"Python {info['python']}, torch {info['torch']}; {threads}; under torch.no_grad()",
        f"{args.warmup} warm-up calls each, then {args.loops} timed loops of ~{args.loop_ms:g} ms "
        "per contender, interleaved; median per-call latency (us) and its interquartile range",
    ])


def print_report(info: dict[str, Any], timings: list[Timing], args: argparse.Namespace) -> None:
    print(report_header(info, args) + "\n")
    rows, notes = table_rows(timings)
    try:
        from rich.console import Console
        from rich.table import Table
    except ImportError:
        widths = [max(len(r[i]) for r in [HEADERS, *rows]) for i in range(len(HEADERS))]
        for r in [HEADERS, ["-" * w for w in widths], *rows]:
            print("  ".join(cell.ljust(w) for cell, w in zip(r, widths, strict=True)).rstrip())
    else:
        table = Table(title="Latency per call on the CPU (lower is better)")
        for i, h in enumerate(HEADERS):
            table.add_column(h, justify="right" if 2 <= i <= 5 else "left", no_wrap=True)
        for r in rows:
            table.add_row(*r, style="red" if r[-1].startswith("FAILED") else None)
        Console(width=max(100, Console().width)).print(table)
    for model, r in kiln_summary(timings).items() if "kiln" in args.contenders else ():
        print(f"{model}: kiln/torchscript = {_fmt(r['kiln/torchscript'], '.2f')}, "
              f"kiln/eager = {_fmt(r['kiln/eager'], '.2f')}, "
              f"kiln-frozen/torchscript = {_fmt(r['kiln-frozen/torchscript'], '.2f')}")
    if notes:
        print("\n" + "\n".join(notes))


def kiln_summary(timings: list[Timing]) -> dict[str, dict[str, float | None]]:
    models = dict.fromkeys(t.model for t in timings)
    return {m: {"kiln/torchscript": ratio(timings, m, "kiln", "torchscript"),
                "kiln/eager": ratio(timings, m, "kiln", "eager"),
                "kiln-frozen/torchscript": ratio(timings, m, "kiln-frozen", "torchscript")}
            for m in models}


def write_json(path: str, info: dict[str, Any], timings: list[Timing], args: argparse.Namespace) -> None:
    payload = {
        "machine": info,
        "settings": {"warmup": args.warmup, "loops": args.loops, "loop_ms": args.loop_ms,
                     "contenders": args.contenders, "grad": "torch.no_grad()"},
        "results": [asdict(t) for t in timings],
        "ratios": kiln_summary(timings),
    }
    Path(path).write_text(json.dumps(payload, indent=2) + "\n", encoding="utf-8")


# -- main ---------------------------------------------------------------------------------------

def parse_args(argv: Sequence[str] | None = None) -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0] if __doc__ else None)
    p.add_argument("--threads", type=int, default=1, help="torch.set_num_threads (default 1)")
    p.add_argument("--json", metavar="PATH", help="also write the results as JSON")
    p.add_argument("--models", default="mlp,lltm,convnet", help="comma-separated subset")
    p.add_argument("--contenders", default=",".join(CONTENDERS), help="comma-separated subset")
    p.add_argument("--warmup", type=int, default=50, help="calls per contender before timing")
    p.add_argument("--loops", type=int, default=41, help="timed loops per contender")
    p.add_argument("--loop-ms", type=float, default=5.0, help="target duration of one timed loop")
    p.add_argument("--verbose", action="store_true", help="print tracebacks of failures")
    args = p.parse_args(argv)
    for opt, allowed in (("models", ("mlp", "lltm", "convnet")), ("contenders", CONTENDERS)):
        chosen = [x.strip() for x in getattr(args, opt).split(",") if x.strip()]
        bad = [x for x in chosen if x not in allowed]
        if bad or not chosen:
            p.error(f"--{opt}: unknown {bad} (choose from {', '.join(allowed)})")
        setattr(args, opt, chosen)
    return args


def main(argv: Sequence[str] | None = None) -> int:
    args = parse_args(argv)
    torch.set_num_threads(args.threads)
    info = machine_info(torch.get_num_threads())
    timings: list[Timing] = []
    with torch.no_grad():
        for case in make_cases():
            if case.name not in args.models:
                continue
            print(f"measuring {case.name} ...", file=sys.stderr, flush=True)
            contenders = build_contenders(case, args.contenders, args.verbose)
            timings += measure(case, contenders, args)
    print_report(info, timings, args)
    if args.json:
        write_json(args.json, info, timings, args)
        print(f"wrote {args.json}")
    failed = [t for t in timings if t.status == "FAILED"]
    for t in failed:
        print(f"FAILED {t.model}/{t.contender}: {t.note}", file=sys.stderr)
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main())
