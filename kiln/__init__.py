"""Kiln: capture PyTorch programs as typed graphs, optimize, save and run them.

The public API mirrors ``torch.jit`` so that ``import kiln as jit`` serves most code written
for TorchScript.  Submodules are imported on first use to keep ``import kiln`` cheap.
"""

from __future__ import annotations

import importlib
from typing import Any

from kiln.errors import (
    ArchiveError,
    CompileError,
    InputError,
    IRError,
    IRParseError,
    KilnError,
    KilnRuntimeError,
    ModelFormatError,
    PickleError,
    ResourceLimitExceeded,
    SchemaError,
    TensorLayoutError,
    TracerWarning,
    TracingCheckError,
    TracingError,
    UnsupportedFeature,
)

__version__ = "0.1.0"

_LAZY = {
    "trace": "kiln.frontend.trace",
    "trace_module": "kiln.frontend.trace",
    "freeze": "kiln.passes.freeze",
    "optimize_for_inference": "kiln.passes.optimize",
    "script": "kiln.frontend.script",
    "compile": "kiln.frontend.script",
    "CompilationUnit": "kiln.frontend.script",
    "export": "kiln.frontend.script",
    "ignore": "kiln.frontend.script",
    "interface": "kiln.frontend.script",
    "unused": "kiln.frontend.script",
    "script_if_tracing": "kiln.frontend.script",
    "annotate": "kiln.frontend.script",
    "fork": "kiln.frontend.script",
    "wait": "kiln.frontend.script",
    "is_scripting": "kiln.frontend.script",
    "ScriptModule": "kiln.runtime.module",
    "ScriptFunction": "kiln.runtime.module",
    "optimized_execution": "kiln.runtime.executor",
    "set_profiling": "kiln.runtime.executor",
    "save": "kiln.serialization.save",
    "serialize": "kiln.serialization.save",
    "load": "kiln.serialization.load",
    "deserialize": "kiln.serialization.load",
    "Limits": "kiln.serialization.limits",
    "Graph": "kiln.ir.graph",
    "parse_graph": "kiln.ir.parser",
    "verify": "kiln.ir.verify",
}

__all__ = [
    "ArchiveError", "CompileError", "InputError", "IRError", "IRParseError", "KilnError", "KilnRuntimeError",
    "ModelFormatError", "PickleError", "ResourceLimitExceeded", "SchemaError", "TensorLayoutError",
    "TracerWarning", "TracingCheckError", "TracingError", "UnsupportedFeature", *_LAZY,
]


def __getattr__(name: str) -> Any:
    module = _LAZY.get(name)
    if module is None:
        raise AttributeError(f"module 'kiln' has no attribute {name!r}")
    value = getattr(importlib.import_module(module), name)
    globals()[name] = value
    return value
