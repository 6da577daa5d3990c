"""Kiln's graph passes, the one registry that names them, and named pipelines.

Each pass lives in its own module, is a function ``Graph -> bool`` (whether it changed
anything) and documents itself with a before/after IR snippet.  A pipeline is a readable list
of names (:data:`PIPELINES`), run by :func:`run_pipeline` to a fixed point::

    run_pipeline(graph, "default")                    # a named pipeline
    run_pipeline(graph, ["constant_fold", "dce"])     # pass (or pipeline) names
    run_pipeline(graph, "constant_fold,cse")          # the same, as ``kiln opt -p`` spells it

Passes that need more than the graph (``inline_calls`` needs a resolver saying which graph a
call runs) are plain functions in their modules and are not registered here; so is
:func:`kiln.freeze` (:mod:`kiln.passes.freeze`), which takes a module and returns a new one.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from typing import Optional, Union

from kiln.errors import IRError, KilnError
from kiln.ir.graph import Graph
from kiln.passes.constant_fold import constant_fold
from kiln.passes.cse import eliminate_common_subexpressions
from kiln.passes.dce import eliminate_dead_code
from kiln.passes.fold_conv_bn import fold_conv_bn
from kiln.passes.fuse import fuse_pointwise
from kiln.passes.fuse_dense import fuse_dense
from kiln.passes.inline import inline_calls
from kiln.passes.inplace_activations import inplace_activations
from kiln.passes.peephole import peephole
from kiln.passes.remove_dropout import remove_dropout

Pass = Callable[[Graph], bool]

PASSES: dict[str, Pass] = {
    "constant_fold": constant_fold,
    "cse": eliminate_common_subexpressions,
    "dce": eliminate_dead_code,
    "fold_conv_bn": fold_conv_bn,
    "fuse": fuse_pointwise,
    "fuse_dense": fuse_dense,
    "inplace_activations": inplace_activations,
    "peephole": peephole,
    "remove_dropout": remove_dropout,
}

# Exact rewrites only: every pipeline here leaves results bit-identical.  (So not ``fuse``:
# its kernels agree with eager PyTorch to rounding, not bit for bit.)
PIPELINES: dict[str, list[str]] = {
    # fold first so the rules see constants, rules before CSE so it sees the simplified
    # graph, and dead code last
    "default": ["constant_fold", "peephole", "cse", "dce"],
    # the same without merging equal nodes (keeps results distinct objects)
    "simplify": ["constant_fold", "peephole", "dce"],
}

MAX_ROUNDS = 10

Spec = Union[str, Sequence[str]]
AfterPass = Callable[[str, int, bool, Graph], None]


def expand(spec: Spec) -> list[str]:
    """The pass names ``spec`` stands for.  ``spec`` is a list of names or a comma-separated
    string; each name is a pass or a pipeline (which stands for its passes)."""
    names = [n.strip() for n in spec.split(",")] if isinstance(spec, str) else list(spec)
    out: list[str] = []
    unknown: list[str] = []
    for name in names:
        if name in PIPELINES:
            out.extend(PIPELINES[name])
        elif name in PASSES:
            out.append(name)
        else:
            unknown.append(name)
    if unknown:
        raise KilnError(f"unknown pass(es) {', '.join(map(repr, unknown))}; known passes: "
                        f"{', '.join(sorted(PASSES))}; pipelines: {', '.join(sorted(PIPELINES))}")
    return out


def run_pipeline(graph: Graph, names: Spec, *, verify: bool = False, max_rounds: int = MAX_ROUNDS,
                 after_each: Optional[AfterPass] = None) -> bool:
    """Run the passes ``names`` stands for (:func:`expand`) in order, and again, until a round
    changes nothing or ``max_rounds`` rounds ran; return whether any pass changed the graph.

    With ``verify``, the IR verifier (:mod:`kiln.ir.verify`) checks the graph after each pass
    and a failure names the pass.  ``after_each(name, round, changed, graph)`` is called after
    each pass (``kiln opt --print-after-each``)."""
    passes = expand(names)
    changed = False
    for round_ in range(1, max_rounds + 1):
        changed_now = False
        for name in passes:
            did = PASSES[name](graph)
            changed_now |= did
            if verify:
                _check_after(graph, name, round_)
            if after_each is not None:
                after_each(name, round_, did, graph)
        changed |= changed_now
        if not changed_now:
            break
    return changed


def _check_after(graph: Graph, name: str, round_: int) -> None:
    from kiln.ir.verify import verify as check  # lazily: the verifier is optional here
    try:
        check(graph)
    except IRError as e:
        raise IRError(f"the graph is invalid after pass {name!r} (round {round_}): {e}") from e


__all__ = ["MAX_ROUNDS", "PASSES", "PIPELINES", "Pass", "constant_fold",
           "eliminate_common_subexpressions", "eliminate_dead_code", "expand", "fold_conv_bn",
           "fuse_dense", "fuse_pointwise", "inline_calls", "inplace_activations", "peephole",
           "remove_dropout", "run_pipeline"]
