"""Programs that ``kiln.script`` must reject, each with the line it must point at.

Every module here (except those whose name starts with ``_``) defines its programs at top level,
so that ``inspect`` finds their source, and a list ``REJECTED`` of :class:`Rejected`.  The
offending line carries a trailing ``# error`` comment; the harness
(``tests/script/test_rejected.py``) finds that line with ``inspect``, so no test hard-codes a
line number.

The program files silence a few lint rules at the top: undefined and unused names are often
the very error under test (F821, F841), and TorchScript spells types ``List[int]`` (UP006, UP035).
Do not add ``from __future__ import annotations`` to them: the programs' annotations must stay
live objects, as in user code.
"""

from __future__ import annotations

import importlib
import pkgutil

from ._rejected import Rejected

__all__ = ["Rejected", "all_rejected"]


def all_rejected() -> list[Rejected]:
    """Every entry of every module, with ``group`` set to the module's short name."""
    entries: list[Rejected] = []
    for info in sorted(pkgutil.iter_modules(__path__), key=lambda m: m.name):
        if info.name.startswith("_"):
            continue
        module = importlib.import_module(f"{__name__}.{info.name}")
        for entry in module.REJECTED:
            entry.group = info.name
            entries.append(entry)
    return entries
