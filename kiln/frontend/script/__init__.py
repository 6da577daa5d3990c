"""The script compiler: typed Python (functions, modules, classes) -> Kiln IR."""

from kiln.frontend.script.api import (
    CompilationUnit,
    annotate,
    compile,
    export,
    fork,
    ignore,
    interface,
    is_scripting,
    script,
    script_if_tracing,
    unused,
    wait,
)

__all__ = ["CompilationUnit", "annotate", "compile", "export", "fork", "ignore", "interface", "is_scripting",
           "script", "script_if_tracing", "unused", "wait"]
