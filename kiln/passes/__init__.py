"""Kiln's graph passes and the one registry that names them.

Each pass lives in its own module, is a function ``Graph -> bool`` (whether it changed
anything) and documents itself with a before/after IR snippet.  A pipeline is a readable list
of names, run by :func:`run_pipeline`::

    run_pipeline(graph, ["dce"])

Passes that need more than the graph (``inline_calls`` needs a resolver saying which graph a
call runs) are plain functions in their modules and are not registered here; so is
:func:`kiln.freeze` (:mod:`kiln.passes.freeze`), which takes a module and returns a new one.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence

from kiln.errors import KilnError
from kiln.ir.graph import Graph
from kiln.passes.dce import eliminate_dead_code
from kiln.passes.fold_conv_bn import fold_conv_bn
from kiln.passes.inline import inline_calls
from kiln.passes.inplace_activations import inplace_activations
from kiln.passes.remove_dropout import remove_dropout

Pass = Callable[[Graph], bool]

PASSES: dict[str, Pass] = {
    "dce": eliminate_dead_code,
    "fold_conv_bn": fold_conv_bn,
    "inplace_activations": inplace_activations,
    "remove_dropout": remove_dropout,
}


def run_pipeline(graph: Graph, names: Sequence[str], *, verify: bool = False) -> bool:
    """Run the named passes in order; return whether any changed the graph.

    With ``verify``, the IR verifier (:mod:`kiln.ir.verify`) checks the graph after each pass."""
    unknown = [n for n in names if n not in PASSES]
    if unknown:
        raise KilnError(f"unknown pass(es) {', '.join(map(repr, unknown))}; "
                        f"known: {', '.join(sorted(PASSES))}")
    changed = False
    for name in names:
        changed |= PASSES[name](graph)
        if verify:
            from kiln.ir.verify import verify as check  # lazily: the verifier is optional here
            check(graph)
    return changed


__all__ = ["PASSES", "Pass", "eliminate_dead_code", "fold_conv_bn", "inline_calls",
           "inplace_activations", "remove_dropout", "run_pipeline"]
