"""``kiln.optimize_for_inference``: a module ready to serve, as TorchScript's function of the name.

1. Freeze it, unless it is frozen already (:func:`kiln.freeze`; the module is put in eval
   mode first): parameters become constants, submodules are inlined, batch norm folds into
   the convolution before it, dropout goes.
2. Run the ``default`` pipeline (constant folding, peephole rules, common subexpressions,
   dead code) over every method, to a fixed point.
3. Leave the rest to the profiling executor (:mod:`kiln.runtime.executor`): on the first
   call it specializes each method to the input types it sees, behind guards, and fuses
   chains of pointwise operators into generated kernels where no gradient is needed.

The result is a new module; ``mod`` itself is not changed (except for ``eval()``).
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Optional

from kiln.errors import KilnError
from kiln.passes import run_pipeline
from kiln.passes.freeze import freeze, is_frozen
from kiln.runtime.module import ScriptModule

PIPELINE = "default"


def optimize_for_inference(mod: ScriptModule, other_methods: Optional[Sequence[str]] = None) -> ScriptModule:
    """``mod`` frozen (if it is not) and optimized for inference; ``other_methods`` are methods
    to keep and optimize besides ``forward``."""
    if not isinstance(mod, ScriptModule):
        raise KilnError(f"optimize_for_inference expects a Kiln module (from kiln.trace or kiln.script), "
                        f"got {type(mod).__name__}; script or trace it first")
    out = mod if is_frozen(mod) else freeze(mod.eval(), preserved_attrs=list(other_methods or ()))
    for name in out.method_names:
        run_pipeline(out._kiln_graphs[name], PIPELINE)
    out._kiln_invalidate()
    return out


__all__ = ["optimize_for_inference"]
