"""Where a member of an ``nn.Module`` lives.

An ``nn.Module`` keeps parameters, buffers and submodules in three dicts rather than as
instance attributes.  The code generator reads members straight from those dicts (skipping
``nn.Module.__getattr__``), the module runtime watches them for structural changes, and
freezing folds them into constants; all three ask the question answered here.
"""

from __future__ import annotations

from typing import Optional

import torch

SLOTS = ("_parameters", "_buffers", "_modules")


def slot_of(module: torch.nn.Module, name: str) -> Optional[str]:
    """The dict of ``module`` (one of :data:`SLOTS`) that holds ``name``, or None."""
    for slot in SLOTS:
        table = module.__dict__.get(slot)
        if table is not None and name in table:
            return slot
    return None
