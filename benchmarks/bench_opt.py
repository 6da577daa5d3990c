"""Optimized inference: Kiln against eager, optimized TorchScript and torch.compile.

Contenders, all built from the same ``nn.Module`` in eval mode and run under
``torch.no_grad()`` in one process:

* ``eager``: the module itself;
* ``torchscript``: ``torch.jit.optimize_for_inference(torch.jit.freeze(torch.jit.trace(m, x)))``
  (skipped, with a note, where this PyTorch has no working ``torch.jit``);
* ``torch.compile``: ``torch.compile(m)`` (on CUDA with ``mode="reduce-overhead"``);
* ``kiln``: ``kiln.optimize_for_inference(kiln.trace(m, x))`` -- frozen, optimized, and run by
  the profiling executor, which specializes on the first call's input types and fuses
  pointwise chains into generated kernels (C++ on the CPU, Triton on CUDA).

Models:

* ``pointwise``: ``sigmoid((relu(x * 1.5 + y) * y - 0.5)) * x`` on two tensors of ``--numel``
  floats (1M on the CPU, 64M on CUDA), with ``copy`` -- one device-to-device copy of the same
  bytes (``out.copy_(x)``) -- as the memory-bandwidth floor on CUDA;
* ``mlp``: bench_core's MLP 3-8-16-1 at batch 1 (per-op overhead);
* ``lltm``: bench_core's LLTM cell at batch 16 (a chain of elementwise ops after a linear);
* ``resnet50`` (CUDA only, with torchvision): batch 1, 224x224.

The method is bench_core's (warm-up, calibrated loops of ~5 ms, interleaved rounds, median
and IQR).  *build s* is the wall time from the eval-mode module to the end of the first call
(tracing, freezing, compiling, profiling, kernel builds); for ``kiln`` it includes a C++
compile unless the kernel cache (``$KILN_CACHE_DIR`` or ``~/.cache/kiln``) already holds it.

    python benchmarks/bench_opt.py                       # CPU, everything
    python benchmarks/bench_opt.py --device cuda         # the GPU table
    python benchmarks/bench_opt.py --models pointwise --threads 2
"""

from __future__ import annotations

import argparse
import json
import sys
import time
import traceback
import warnings
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

import torch
from torch import nn

sys.path.insert(0, str(Path(__file__).resolve().parent))

from bench_core import (  # noqa: E402  (after the path set-up)
    LLTM,
    MLP,
    Case,
    Contender,
    Timing,
    _check_output,
    _fmt,
    _short,
    import_kiln,
    machine_info,
    measure,
    ratio,
)

CONTENDERS = ("eager", "torchscript", "torch.compile", "kiln")
MODELS = ("pointwise", "mlp", "lltm", "resnet50")


class Pointwise(nn.Module):
    """A chain of five pointwise ops over two inputs: one fused kernel reads 2 and writes 1."""

    def forward(self, x: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
        return torch.sigmoid(torch.relu(x * 1.5 + y) * y - 0.5) * x


class Copy(nn.Module):
    """The bandwidth floor of the pointwise chain: one copy of an input's bytes."""

    def forward(self, x: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
        return x.clone()


def make_cases(device: str, numel: int, models: Sequence[str]) -> list[Case]:
    torch.manual_seed(0)
    dev = torch.device(device)
    cases: list[Case] = []
    if "pointwise" in models:
        xy = (torch.randn(numel, device=dev), torch.randn(numel, device=dev))
        cases.append(Case("pointwise", f"5 pointwise ops, {numel:,} floats", Pointwise(), xy))
        if dev.type == "cuda":
            cases.append(Case("copy", f"one copy of {numel:,} floats", Copy(), xy))
    if "mlp" in models:
        cases.append(Case("mlp", "MLP 3-8-16-1, batch 1", MLP().to(dev), (torch.randn(1, 3, device=dev),)))
    if "lltm" in models:
        cases.append(Case("lltm", "LLTM 32->128, batch 16", LLTM(32, 128).to(dev),
                          tuple(torch.randn(16, n, device=dev) for n in (32, 128, 128))))
    if "resnet50" in models and dev.type == "cuda":
        try:
            import torchvision
        except ImportError:
            print("resnet50: skipped (torchvision is not installed)")
        else:
            cases.append(Case("resnet50", "resnet50, batch 1, 224x224",
                              torchvision.models.resnet50().to(dev),
                              (torch.randn(1, 3, 224, 224, device=dev),)))
    return cases


# -- contenders ---------------------------------------------------------------------------------

def _torchscript(model: nn.Module, inputs: tuple[torch.Tensor, ...]) -> Callable[..., Any]:
    jit = torch.jit
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        return jit.optimize_for_inference(jit.freeze(jit.trace(model, inputs)))  # type: ignore[no-any-return]


def _torch_compile(model: nn.Module, device: str) -> Callable[..., Any]:
    mode = "reduce-overhead" if device == "cuda" else None
    return torch.compile(model, mode=mode)  # type: ignore[no-any-return]


def _kiln(model: nn.Module, inputs: tuple[torch.Tensor, ...]) -> Callable[..., Any]:
    kiln = import_kiln()
    return kiln.optimize_for_inference(kiln.trace(model, inputs))  # type: ignore[no-any-return]


def build(name: str, case: Case, device: str, verbose: bool) -> tuple[Contender, float | None]:
    """The contender and its build time (to the end of the first call), in seconds."""
    model = case.model.eval()
    makers: dict[str, Callable[[], Callable[..., Any]]] = {
        "eager": lambda: model,
        "torchscript": lambda: _torchscript(model, case.inputs),
        "torch.compile": lambda: _torch_compile(model, device),
        "kiln": lambda: _kiln(model, case.inputs),
    }
    start = time.perf_counter()
    try:
        fn = makers[name]()
        fn(*case.inputs)
        _sync(device)
    except Exception as e:
        if verbose:
            traceback.print_exc()
        skip = name == "torchscript" and not hasattr(torch, "jit")
        return Contender(name, status="skipped" if skip else "FAILED", note=_short(e)), None
    return Contender(name, fn), time.perf_counter() - start


def _sync(device: str) -> None:
    if device == "cuda":
        torch.cuda.synchronize()


def _synced(fn: Callable[..., Any], device: str) -> Callable[..., Any]:
    if device != "cuda":
        return fn

    def call(*args: Any) -> Any:
        out = fn(*args)
        torch.cuda.synchronize()
        return out
    return call


# -- the run ------------------------------------------------------------------------------------

def run_case(case: Case, args: argparse.Namespace) -> tuple[list[Timing], dict[str, float | None]]:
    built = [build(n, case, args.device, args.verbose) for n in args.contenders]
    contenders = [c for c, _ in built]
    builds = {c.name: t for c, t in built}
    expected = case.model(*case.inputs)
    for c in contenders:
        if c.fn is not None:
            _check_output(c, expected, case.inputs)
            if c.fn is not None:
                c.fn = _synced(c.fn, args.device)
    return measure(case, contenders, args), builds


def print_table(rows: list[tuple[Timing, float | None]], info: dict[str, Any], args: argparse.Namespace) -> None:
    print(f"CPU: {info['processor']} ({info['machine']}), {info['cpu_count']} CPUs; {info['system']}")
    print(f"Python {info['python']}, torch {info['torch']}; device {args.device}; "
          f"torch.set_num_threads({args.threads}); under torch.no_grad()")
    if args.device == "cuda":
        print(f"GPU: {torch.cuda.get_device_name()}")
    header = f"{'model':<10} {'contender':<14} {'median us':>10} {'IQR us':>8} {'/ eager':>8} " \
             f"{'/ torchscript':>13} {'/ torch.compile':>15} {'build s':>8}  status"
    print(header)
    print("-" * len(header))
    for t, build_s in rows:
        timings = [r[0] for r in rows if r[0].model == t.model]
        iqr = None if t.p25_us is None or t.p75_us is None else t.p75_us - t.p25_us
        cells = [ratio(timings, t.model, t.contender, d) for d in ("eager", "torchscript", "torch.compile")]
        print(f"{t.model:<10} {t.contender:<14} {_fmt(t.median_us):>10} {_fmt(iqr):>8} "
              f"{_fmt(cells[0], '.2f', 'x'):>8} {_fmt(cells[1], '.2f', 'x'):>13} "
              f"{_fmt(cells[2], '.2f', 'x'):>15} {_fmt(build_s, '.2f'):>8}  {t.status} {t.note}")
    models = dict.fromkeys(t.model for t, _ in rows)
    for m in models:
        timings = [t for t, _ in rows if t.model == m]
        parts = [f"kiln/{d} = {_fmt(ratio(timings, m, 'kiln', d), '.2f')}"
                 for d in ("eager", "torchscript", "torch.compile")]
        print(f"{m}: " + ", ".join(parts))
    if "copy" in models and "pointwise" in models:
        kiln_t = next((t.median_us for t, _ in rows if t.model == "pointwise" and t.contender == "kiln"), None)
        copy_t = next((t.median_us for t, _ in rows if t.model == "copy" and t.contender == "eager"), None)
        if kiln_t and copy_t:
            print(f"pointwise: kiln / device copy = {kiln_t / copy_t:.2f}")


def parse_args(argv: Sequence[str] | None = None) -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0],
                                formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--device", default="cpu", choices=("cpu", "cuda"))
    p.add_argument("--models", default=",".join(MODELS), help="comma-separated subset of " + ", ".join(MODELS))
    p.add_argument("--contenders", default=",".join(CONTENDERS))
    p.add_argument("--numel", type=int, default=None, help="pointwise size (default 1M CPU, 64M CUDA)")
    p.add_argument("--threads", type=int, default=1, help="torch.set_num_threads (default 1)")
    p.add_argument("--warmup", type=int, default=20)
    p.add_argument("--loops", type=int, default=31)
    p.add_argument("--loop-ms", type=float, default=5.0)
    p.add_argument("--json", metavar="PATH")
    p.add_argument("--verbose", action="store_true")
    args = p.parse_args(argv)
    args.models = [m for m in args.models.split(",") if m]
    args.contenders = [c for c in args.contenders.split(",") if c]
    unknown = [m for m in args.models if m not in MODELS] + [c for c in args.contenders if c not in CONTENDERS]
    if unknown:
        p.error(f"unknown model(s)/contender(s): {', '.join(unknown)}")
    if args.numel is None:
        args.numel = 64 * 2**20 if args.device == "cuda" else 2**20
    return args


def main(argv: Sequence[str] | None = None) -> int:
    args = parse_args(argv)
    if args.device == "cuda" and not torch.cuda.is_available():
        print("no CUDA device: nothing to measure")
        return 0
    torch.set_num_threads(args.threads)
    info = machine_info(args.threads)
    rows: list[tuple[Timing, float | None]] = []
    failed = False
    with torch.no_grad():
        for case in make_cases(args.device, args.numel, args.models):
            timings, builds = run_case(case, args)
            rows.extend((t, builds.get(t.contender)) for t in timings)
            failed |= any(t.status == "FAILED" for t in timings)
    print_table(rows, info, args)
    if args.json:
        data = {"machine": info, "device": args.device, "threads": args.threads,
                "results": [{**t.__dict__, "build_s": b} for t, b in rows]}
        Path(args.json).write_text(json.dumps(data, indent=2, default=str))
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main())
