"""Pointwise fusion on the CPU: Kiln's C++ kernel vs eager PyTorch vs ``torch.compile``.

Run from the repository root::

    python benchmarks/bench_fusion.py                  # 1M float32, 2 and 1 threads
    python benchmarks/bench_fusion.py --numel 65536 --threads 1

The function is a chain of seven elementwise operators::

    ((x * 1.5 + y).relu() * y - 0.5).sigmoid() * x

Contenders, in one process:

* ``eager``         -- the function itself;
* ``kiln-fused``    -- ``kiln.trace`` of it, the ``fuse`` pass, compiled by Kiln's code
  generator: a type check and one call of a generated C++ kernel;
* ``torch.compile`` -- Inductor's CPU backend (its first call compiles, which takes a while).

Every contender's output is first checked against eager's with ``torch.testing.assert_close``.
Then, per thread count, many timed loops are run with the contenders taking turns in a rotating
order; the figure is the median per-call time over loops.  Ratios are of medians.
"""

from __future__ import annotations

import argparse
import gc
import statistics
import sys
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import torch

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

import kiln  # noqa: E402
from kiln.backends import toolchain  # noqa: E402
from kiln.passes.fuse import fuse_pointwise  # noqa: E402
from kiln.runtime.codegen import compile_graph  # noqa: E402


def chain(x: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
    return ((x * 1.5 + y).relu() * y - 0.5).sigmoid() * x


def kiln_fused(example: tuple[torch.Tensor, ...]) -> Callable[..., Any]:
    graph = kiln.trace(chain, example).graph.copy()
    if not fuse_pointwise(graph):
        raise RuntimeError("nothing was fused")
    return compile_graph(graph, "chain", self_arg=False)


def contenders(example: tuple[torch.Tensor, ...]) -> dict[str, Callable[..., Any]]:
    out: dict[str, Callable[..., Any]] = {"eager": chain}
    if toolchain.find_compiler() is None:
        print("note: no C++ compiler; kiln-fused would run unfused, skipped")
    else:
        out["kiln-fused"] = kiln_fused(example)
    try:
        compiled = torch.compile(chain)
        t0 = time.perf_counter()
        compiled(*example)
        print(f"torch.compile: first call (compilation) {time.perf_counter() - t0:.1f} s")
        out["torch.compile"] = compiled
    except Exception as e:  # a peer that cannot run here is reported, not fatal
        print(f"note: torch.compile unavailable ({type(e).__name__}: {e})")
    return out


def timed_loop(fn: Callable[..., Any], args: tuple[torch.Tensor, ...], calls: int) -> float:
    t0 = time.perf_counter_ns()
    for _ in range(calls):
        fn(*args)
    return (time.perf_counter_ns() - t0) / calls / 1000.0


def measure(fns: dict[str, Callable[..., Any]], args: tuple[torch.Tensor, ...], rounds: int,
            loop_ms: float) -> dict[str, float]:
    calls: dict[str, int] = {}
    for name, fn in fns.items():
        for _ in range(5):
            fn(*args)
        per_call = timed_loop(fn, args, 5)
        calls[name] = max(1, int(loop_ms * 1000 / max(per_call, 1e-3)))
    samples: dict[str, list[float]] = {name: [] for name in fns}
    names = list(fns)
    gc.disable()
    try:
        for r in range(rounds):
            order = names[r % len(names):] + names[:r % len(names)]
            for name in order:
                samples[name].append(timed_loop(fns[name], args, calls[name]))
    finally:
        gc.enable()
    return {name: statistics.median(s) for name, s in samples.items()}


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--numel", type=int, default=1 << 20)
    parser.add_argument("--dtype", choices=("float32", "float64"), default="float32")
    parser.add_argument("--threads", default="2,1", help="comma-separated intra-op thread counts")
    parser.add_argument("--rounds", type=int, default=21)
    parser.add_argument("--loop-ms", type=float, default=20.0)
    opts = parser.parse_args()
    torch.manual_seed(0)
    dtype = getattr(torch, opts.dtype)
    args = (torch.randn(opts.numel, dtype=dtype), torch.randn(opts.numel, dtype=dtype))
    with torch.no_grad():
        fns = contenders(args)
        want = chain(*args)
        for name, fn in fns.items():
            torch.testing.assert_close(fn(*args), want, msg=lambda m, name=name: f"{name}: {m}")
        print(f"{opts.numel} x {opts.dtype}; median microseconds per call (ratio to kiln-fused)")
        for threads in (int(t) for t in opts.threads.split(",")):
            torch.set_num_threads(threads)
            result = measure(fns, args, opts.rounds, opts.loop_ms)
            base = result.get("kiln-fused")
            cells = [f"{name} {us:9.1f}" + (f" ({us / base:.2f}x)" if base else "")
                     for name, us in result.items()]
            print(f"threads={threads}: " + " | ".join(cells))
    return 0


if __name__ == "__main__":
    sys.exit(main())
