"""Compile time of ``kiln.script`` vs ``torch.jit.script`` on a 50-block residual network.

Run from the repository root::

    python benchmarks/bench_script.py                  # cold and warm, both contenders
    python benchmarks/bench_script.py --json out.json  # also write the results as JSON
    python benchmarks/bench_script.py --reps 11 --cold-runs 7 --blocks 50 --channels 8

The model is a ResNet-style stack: a 3x3 stem (3 -> C channels, BatchNorm, ReLU), ``--blocks``
residual blocks (conv3x3 -> BatchNorm2d -> ReLU -> conv3x3 -> BatchNorm2d, plus the skip
connection, then ReLU; C -> C channels, as torchvision's BasicBlock), global average pooling and
a linear head: 50 blocks make 308 modules.  What is timed is the call ``kiln.script(model)`` /
``torch.jit.script(model)`` on a model already built (never the model's construction), and,
separately, the first forward call of the result (see below).

What each figure includes
-------------------------

* **cold**: the first script call in a fresh Python process (one subprocess per sample, the
  contenders' processes alternating).  ``import torch`` and ``import kiln`` are done before the
  clock starts, but everything the first call pays lazily is included: for Kiln, importing its
  compiler modules (``import kiln`` is lazy) and building its operator registry from PyTorch's
  dispatcher schemas; for TorchScript, initialising its frontend and compiling the module types.
  Both read and parse the model's source files (``inspect``/``linecache``).  A separate process
  per sample keeps one contender's warm-up (shared source caches, torch internals) from
  helping the other.
* **warm**: repeat calls in one process after one untimed call of each contender, interleaved
  round-robin in a rotating order; each repetition scripts a *fresh* model instance.
  ``torch.jit.script`` keeps per-type caches across calls (``torch.jit._recursive.
  concrete_type_store``: a module type seen before gets its ConcreteModuleType and already
  compiled methods back), so it is measured twice:

  - ``torchscript``: as a user sees it, caches kept.  A repeat still builds a ScriptModule per
    module instance and re-parses each instance's methods (most of its time goes there), but
    compiles no method again;
  - ``torchscript-uncached``: the caches reset before each call (a new ``ConcreteTypeStore``,
    and the free-function caches ``torch.jit._state._jit_caching_layer`` /
    ``_jit_function_overload_caching`` cleared), so every type is compiled again (under a
    mangled name, as the old ones stay in TorchScript's global compilation unit).  This is the
    like-for-like counterpart of Kiln, whose process-wide caches (scripted free functions,
    every Python function parsed and lowered, and operator overloads chosen by argument types)
    are cleared before each of its calls.

  Within one call both compile each module *type* once (all 50 blocks share one type).
* **first call**: the first forward call of the scripted model on a 1x3x32x32 input, timed
  separately.  For Kiln it includes generating and compiling the Python code of every graph
  (done lazily on first use); for TorchScript, its profiling run (the optimised plan is built
  on a later call, which is not timed).

Every result is checked against eager PyTorch (``torch.testing.assert_close``) outside the
timing.  The figures are medians over samples, with the interquartile range of the wall-clock
times; ratios are of medians.  Each script call is timed by the wall clock and by the CPU time of
the process (``time.process_time``): on a small shared machine other load stretches the wall
clock but hardly the CPU time, so compare the CPU figures when the IQR is large.  The garbage collector stays enabled (compilation allocates many objects; collecting
them is part of its cost), and a ``gc.collect()`` runs before every timed call.

A contender that fails (for Kiln, e.g., a builtin the compiler does not support yet) is reported
as FAILED with the exception and where it was raised, is not timed, and makes the script exit
with status 1; the other contender is still measured.
"""

from __future__ import annotations

import argparse
import contextlib
import gc
import json
import statistics
import subprocess
import sys
import time
import traceback
import warnings
from collections.abc import Callable, Iterator, Sequence
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import torch
from bench_core import _short, import_kiln, machine_info
from torch import nn

CONTENDERS = ("kiln", "torchscript", "torchscript-uncached")

# -- the model ----------------------------------------------------------------------------------


class BasicBlock(nn.Module):
    """conv3x3 -> BN -> ReLU -> conv3x3 -> BN, plus the input, then ReLU (torchvision's BasicBlock)."""

    def __init__(self, channels: int) -> None:
        super().__init__()
        self.conv1 = nn.Conv2d(channels, channels, 3, padding=1, bias=False)
        self.bn1 = nn.BatchNorm2d(channels)
        self.relu = nn.ReLU(inplace=True)
        self.conv2 = nn.Conv2d(channels, channels, 3, padding=1, bias=False)
        self.bn2 = nn.BatchNorm2d(channels)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        identity = x
        out = self.relu(self.bn1(self.conv1(x)))
        out = self.bn2(self.conv2(out))
        out = out + identity
        return self.relu(out)


class ResNet(nn.Module):
    """A 3x3 stem, ``blocks`` BasicBlocks of ``channels`` channels, global average pooling, a head."""

    def __init__(self, blocks: int = 50, channels: int = 8, classes: int = 10) -> None:
        super().__init__()
        self.stem = nn.Sequential(nn.Conv2d(3, channels, 3, padding=1, bias=False),
                                  nn.BatchNorm2d(channels), nn.ReLU(inplace=True))
        self.blocks = nn.Sequential(*(BasicBlock(channels) for _ in range(blocks)))
        self.pool = nn.AdaptiveAvgPool2d(1)
        self.head = nn.Linear(channels, classes)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = self.blocks(self.stem(x))
        return self.head(torch.flatten(self.pool(x), 1))


def make_model(args: argparse.Namespace) -> nn.Module:
    """A fresh model in eval mode with non-trivial BatchNorm statistics (the same for every seed 0)."""
    torch.manual_seed(0)
    model = ResNet(args.blocks, args.channels)
    for m in model.modules():
        if isinstance(m, nn.BatchNorm2d):
            m.running_mean.uniform_(-0.5, 0.5)
            m.running_var.uniform_(0.5, 1.5)
    return model.eval()


def example_input() -> torch.Tensor:
    return torch.randn(1, 3, 32, 32, generator=torch.Generator().manual_seed(1))


# -- the contenders -----------------------------------------------------------------------------

@contextlib.contextmanager
def quiet_jit() -> Iterator[None]:
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", DeprecationWarning)
        yield


def reset_torchscript_caches() -> None:
    """Forget what ``torch.jit.script`` learnt in earlier calls (see the module docstring)."""
    from torch.jit import _recursive, _state
    _recursive.concrete_type_store = _recursive.ConcreteTypeStore()
    _state._jit_caching_layer.clear()
    _state._jit_function_overload_caching.clear()


def reset_kiln_caches() -> None:
    from kiln.frontend import resolve
    from kiln.frontend.script import api, compiler
    api._function_cache.clear()
    compiler._PARSED.clear()
    resolve._TYPED_MATCHES.clear()


def scripter(name: str) -> Callable[[nn.Module], Any]:
    """The call that is timed, for contender ``name``."""
    if name == "kiln":
        kiln = import_kiln()
        return kiln.script  # type: ignore[no-any-return]
    return torch.jit.script


def prepare(name: str) -> None:
    """Untimed work before each timed call: reset the caches the contender must not use."""
    if name == "torchscript-uncached":
        reset_torchscript_caches()
    elif name == "kiln":
        reset_kiln_caches()


@dataclass
class Sample:
    script_s: float          # wall clock
    script_cpu_s: float      # CPU time of this process (less disturbed by other load on the machine)
    first_call_s: float


def timed_sample(name: str, model: nn.Module, x: torch.Tensor, expected: torch.Tensor) -> Sample:
    """Script ``model`` and call the result once, timing both; check the result against eager."""
    fn = scripter(name)
    prepare(name)
    gc.collect()
    with quiet_jit():
        start, start_cpu = time.perf_counter(), time.process_time()
        compiled = fn(model)
        scripted, scripted_cpu = time.perf_counter(), time.process_time()
        with torch.no_grad():
            out = compiled(x)
        called = time.perf_counter()
    torch.testing.assert_close(out, expected)
    return Sample(scripted - start, scripted_cpu - start_cpu, called - scripted)


def failure_note(e: BaseException) -> str:
    """The exception, and the innermost frame that raised it."""
    frames = traceback.extract_tb(e.__traceback__)
    where = f" (raised at {Path(frames[-1].filename).name}:{frames[-1].lineno} in {frames[-1].name})" if frames else ""
    return _short(e, 300) + where


# -- cold: one subprocess per sample ------------------------------------------------------------

def child(args: argparse.Namespace) -> int:
    """Run by each cold subprocess: one timed sample of ``args.child``; prints one JSON line."""
    import_kiln()  # `import kiln` (lazy and cheap) before the clock, like `import torch`
    model, x = make_model(args), example_input()
    with torch.no_grad():
        expected = model(x)
    try:
        s = timed_sample(args.child, model, x, expected)
    except Exception as e:
        print(json.dumps({"ok": False, "note": failure_note(e)}))
        return 0
    print(json.dumps({"ok": True, **asdict(s)}))
    return 0


def cold_sample(name: str, args: argparse.Namespace) -> dict[str, Any]:
    cmd = [sys.executable, str(Path(__file__).resolve()), "--child", name, "--blocks", str(args.blocks),
           "--channels", str(args.channels), "--threads", str(args.threads)]
    proc = subprocess.run(cmd, capture_output=True, text=True, check=False)
    lines = [ln for ln in proc.stdout.splitlines() if ln.startswith("{")]
    if proc.returncode != 0 or not lines:
        tail = (proc.stderr.strip().splitlines() or ["no output"])[-1]
        return {"ok": False, "note": f"subprocess exited with {proc.returncode}: {tail}"}
    return json.loads(lines[-1])  # type: ignore[no-any-return]


# -- results ------------------------------------------------------------------------------------

@dataclass
class Result:
    contender: str
    mode: str                      # cold | warm
    status: str = "ok"             # ok | FAILED | skipped
    note: str = ""
    script_s: list[float] = field(default_factory=list)
    script_cpu_s: list[float] = field(default_factory=list)
    first_call_s: list[float] = field(default_factory=list)

    def add(self, s: Sample) -> None:
        self.script_s.append(s.script_s)
        self.script_cpu_s.append(s.script_cpu_s)
        self.first_call_s.append(s.first_call_s)

    def fail(self, note: str) -> None:
        self.status, self.note = "FAILED", note
        self.script_s.clear()
        self.script_cpu_s.clear()
        self.first_call_s.clear()


def median(xs: list[float]) -> float | None:
    return statistics.median(xs) if xs else None


def iqr(xs: list[float]) -> float | None:
    if len(xs) < 2:
        return None
    q = statistics.quantiles(xs, n=4)
    return q[2] - q[0]


def measure_cold(names: Sequence[str], args: argparse.Namespace) -> list[Result]:
    """``args.cold_runs`` fresh processes per contender, the contenders alternating."""
    results = {n: Result(n, "cold") for n in names}
    for r in range(args.cold_runs):
        order = list(names[r % len(names):]) + list(names[:r % len(names)])
        for n in order:
            res = results[n]
            if res.status != "ok":
                continue
            print(f"  cold {n} {r + 1}/{args.cold_runs}", file=sys.stderr, flush=True)
            out = cold_sample(n, args)
            if out.get("ok"):
                res.add(Sample(out["script_s"], out["script_cpu_s"], out["first_call_s"]))
            else:
                res.fail(out.get("note", "failed"))
    return list(results.values())


def measure_warm(names: Sequence[str], args: argparse.Namespace) -> list[Result]:
    """One untimed call per contender, then ``args.reps`` interleaved rounds, each on fresh models."""
    x = example_input()
    with torch.no_grad():
        expected = make_model(args)(x)
    results = {n: Result(n, "warm") for n in names}
    for n in names:
        try:
            timed_sample(n, make_model(args), x, expected)
        except Exception as e:
            if args.verbose:
                traceback.print_exc()
            results[n].fail(failure_note(e))
    for r in range(args.reps):
        live = [n for n in names if results[n].status == "ok"]
        order = live[r % len(live):] + live[:r % len(live)] if live else []
        for n in order:
            print(f"  warm {n} {r + 1}/{args.reps}", file=sys.stderr, flush=True)
            try:
                results[n].add(timed_sample(n, make_model(args), x, expected))
            except Exception as e:
                results[n].fail(failure_note(e))
    return list(results.values())


# -- reporting ----------------------------------------------------------------------------------

def _fmt(x: float | None, spec: str = ".3f", suffix: str = "") -> str:
    return "-" if x is None else f"{x:{spec}}{suffix}"


def ratio(results: list[Result], mode: str, num: str, den: str, what: str = "script_s") -> float | None:
    by = {r.contender: median(getattr(r, what)) for r in results if r.mode == mode}
    a, b = by.get(num), by.get(den)
    return a / b if a is not None and b else None


HEADERS = ["mode", "contender", "script s", "IQR s", "script CPU s", "first call s", "samples",
           "kiln / this (wall)", "kiln / this (CPU)", "status"]


def table_rows(results: list[Result]) -> tuple[list[list[str]], list[str]]:
    rows, notes = [], []
    for r in results:
        status = r.status
        if r.note:
            notes.append(f"[{len(notes) + 1}] {r.mode}/{r.contender}: {r.note}")
            status += f" [{len(notes)}]"
        wall = None if r.contender == "kiln" else ratio(results, r.mode, "kiln", r.contender)
        cpu = None if r.contender == "kiln" else ratio(results, r.mode, "kiln", r.contender, "script_cpu_s")
        rows.append([r.mode, r.contender, _fmt(median(r.script_s)), _fmt(iqr(r.script_s)),
                     _fmt(median(r.script_cpu_s)), _fmt(median(r.first_call_s)), str(len(r.script_s)),
                     _fmt(wall, ".2f", "x"), _fmt(cpu, ".2f", "x"), status])
    return rows, notes


def summary(results: list[Result]) -> dict[str, float | None]:
    return {f"{mode}: kiln/{den} ({clock})": ratio(results, mode, "kiln", den, what)
            for mode in ("cold", "warm") for den in ("torchscript", "torchscript-uncached")
            for clock, what in (("wall", "script_s"), ("CPU", "script_cpu_s"))
            if any(r.mode == mode and r.contender == den for r in results)}


def print_report(info: dict[str, Any], results: list[Result], args: argparse.Namespace) -> None:
    print(f"CPU: {info['processor']} ({info['machine']}), {info['cpu_count']} CPUs "
          f"({info['cpus_usable']} usable); {info['system']}")
    print(f"Python {info['python']}, torch {info['torch']}; torch.set_num_threads({info['torch_threads']})")
    print(f"model: ResNet, {args.blocks} BasicBlocks of {args.channels} channels "
          f"({sum(1 for _ in make_model(args).modules())} modules); cold: {args.cold_runs} fresh processes "
          f"per contender; warm: {args.reps} interleaved rounds on fresh instances; median seconds\n")
    rows, notes = table_rows(results)
    widths = [max(len(r[i]) for r in [HEADERS, *rows]) for i in range(len(HEADERS))]
    for r in [HEADERS, ["-" * w for w in widths], *rows]:
        print("  ".join(cell.ljust(w) for cell, w in zip(r, widths, strict=True)).rstrip())
    print()
    for key, value in summary(results).items():
        print(f"{key} = {_fmt(value, '.2f')}")
    if notes:
        print("\n" + "\n".join(notes))


def write_json(path: str, info: dict[str, Any], results: list[Result], args: argparse.Namespace) -> None:
    payload = {
        "machine": info,
        "settings": {"blocks": args.blocks, "channels": args.channels, "reps": args.reps,
                     "cold_runs": args.cold_runs, "contenders": args.contenders},
        "results": [{**asdict(r), "script_median_s": median(r.script_s), "script_iqr_s": iqr(r.script_s),
                     "script_cpu_median_s": median(r.script_cpu_s),
                     "first_call_median_s": median(r.first_call_s)} for r in results],
        "ratios": summary(results),
    }
    Path(path).write_text(json.dumps(payload, indent=2) + "\n", encoding="utf-8")


# -- main ---------------------------------------------------------------------------------------

def parse_args(argv: Sequence[str] | None = None) -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0] if __doc__ else None)
    p.add_argument("--blocks", type=int, default=50, help="residual blocks (default 50)")
    p.add_argument("--channels", type=int, default=8, help="channels of every block (default 8)")
    p.add_argument("--reps", type=int, default=7, help="warm rounds per contender (default 7)")
    p.add_argument("--cold-runs", type=int, default=5, help="fresh processes per contender (default 5; 0 skips)")
    p.add_argument("--contenders", default=",".join(CONTENDERS), help="comma-separated subset")
    p.add_argument("--threads", type=int, default=1, help="torch.set_num_threads (default 1)")
    p.add_argument("--json", metavar="PATH", help="also write the results as JSON")
    p.add_argument("--verbose", action="store_true", help="print tracebacks of failures")
    p.add_argument("--child", choices=CONTENDERS, help=argparse.SUPPRESS)  # one cold sample (internal)
    args = p.parse_args(argv)
    chosen = [x.strip() for x in args.contenders.split(",") if x.strip()]
    bad = [x for x in chosen if x not in CONTENDERS]
    if bad or not chosen:
        p.error(f"--contenders: unknown {bad} (choose from {', '.join(CONTENDERS)})")
    args.contenders = chosen
    return args


def main(argv: Sequence[str] | None = None) -> int:
    args = parse_args(argv)
    torch.set_num_threads(args.threads)
    if args.child:
        return child(args)
    info = machine_info(torch.get_num_threads())
    # Cold runs first: while they run, this process has not scripted anything yet.
    cold_names = [n for n in args.contenders if n != "torchscript-uncached"]  # a fresh process has no cache
    results: list[Result] = []
    if args.cold_runs > 0 and cold_names:
        print("cold runs ...", file=sys.stderr, flush=True)
        results += measure_cold(cold_names, args)
    if args.reps > 0:
        print("warm runs ...", file=sys.stderr, flush=True)
        results += measure_warm(args.contenders, args)
    print_report(info, results, args)
    if args.json:
        write_json(args.json, info, results, args)
        print(f"wrote {args.json}")
    failed = [r for r in results if r.status == "FAILED"]
    for r in failed:
        print(f"FAILED {r.mode}/{r.contender}: {r.note}", file=sys.stderr)
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main())
