"""The conformance corpus: small programs in TorchScript's typed subset of Python (and a few beyond it).

Every module here (except those whose name starts with ``_``) defines its programs at top level,
so that ``inspect.getsource`` finds them, and a list ``CASES`` of :class:`Case`.
"""

from __future__ import annotations

import importlib
import pkgutil

from ._case import Case

__all__ = ["Case", "all_cases"]


def all_cases() -> list[Case]:
    """Every case of every corpus module, with ``group`` set to the module's short name."""
    cases: list[Case] = []
    for info in sorted(pkgutil.iter_modules(__path__), key=lambda m: m.name):
        if info.name.startswith("_"):
            continue
        module = importlib.import_module(f"{__name__}.{info.name}")
        for case in module.CASES:
            case.group = info.name
            cases.append(case)
    return cases
