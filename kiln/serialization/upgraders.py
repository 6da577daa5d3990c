"""Operator upgraders: code from an old archive keeps the meaning it had when it was written.

Some operators changed meaning between format versions.  An archive records the version it
was written at; a call in its code to an operator that changed later is compiled as a call
to the operator's *upgrader* -- TorchScript source that computes the old meaning with
today's operators -- which the compiler inlines like any helper function:

=================  =======  ============================================================
operator           changed  old meaning
=================  =======  ============================================================
``div``, ``div_``  4        integer / integer truncated (floor for positives), unless
                            either side is floating point; ``rounding_mode`` as given
``full``           5        no ``dtype``: the fill value is a float, so the result is too
``linspace``       8        ``steps`` could be left out: 100
``logspace``       9        ``steps`` could be left out: 100
``gelu``           10       no ``approximate`` argument: exact gelu, today's default (so
                            no rewrite is needed)
=================  =======  ============================================================

Only ``torch.<op>(...)`` calls are rewritten: TorchScript's printer writes every operator
call in that form.  The rewrite works on a copy of the method's syntax tree.
"""

from __future__ import annotations

import ast
import copy
from typing import Any, Optional

from kiln import syntax

# op name -> (version that changed it, upgrader function name)
UPGRADERS = {
    "div": (4, "__kiln_upgrade_div_0_3"),
    "div_": (4, "__kiln_upgrade_div__0_3"),
    "full": (5, "__kiln_upgrade_full_0_4"),
    "linspace": (8, "__kiln_upgrade_linspace_0_7"),
    "logspace": (9, "__kiln_upgrade_logspace_0_8"),
}

UPGRADER_SOURCE = '''
def __kiln_upgrade_div_0_3(self: Tensor, other, rounding_mode=None):
    if rounding_mode is not None:
        return torch.div(self, other, rounding_mode=rounding_mode)
    if isinstance(other, Tensor):
        if self.is_floating_point() or other.is_floating_point():
            return torch.true_divide(self, other)
        return torch.div(self, other, rounding_mode="trunc")
    if self.is_floating_point() or isinstance(other, float):
        return torch.true_divide(self, other)
    return torch.div(self, other, rounding_mode="trunc")

def __kiln_upgrade_div__0_3(self: Tensor, other, rounding_mode=None):
    if rounding_mode is not None:
        return self.div_(other, rounding_mode=rounding_mode)
    if isinstance(other, Tensor):
        if self.is_floating_point() or other.is_floating_point():
            return self.true_divide_(other)
        return self.div_(other, rounding_mode="trunc")
    if self.is_floating_point() or isinstance(other, float):
        return self.true_divide_(other)
    return self.div_(other, rounding_mode="trunc")

def __kiln_upgrade_full_0_4(size, fill_value, dtype=None,
                            layout=None, device=None,
                            pin_memory=None):
    if dtype is None:
        return torch.full(size, float(fill_value), layout=layout, device=device, pin_memory=pin_memory)
    return torch.full(size, fill_value, dtype=dtype, layout=layout, device=device, pin_memory=pin_memory)

def __kiln_upgrade_linspace_0_7(start, end, steps=None, dtype=None,
                                layout=None, device=None,
                                pin_memory=None):
    n = 100 if steps is None else steps
    return torch.linspace(start, end, n, dtype=dtype, layout=layout, device=device, pin_memory=pin_memory)

def __kiln_upgrade_logspace_0_8(start, end, steps=None, base=10.0,
                                dtype=None, layout=None,
                                device=None, pin_memory=None):
    n = 100 if steps is None else steps
    return torch.logspace(start, end, n, base, dtype=dtype, layout=layout, device=device,
                          pin_memory=pin_memory)
'''


class _Rewrite(ast.NodeTransformer):
    def __init__(self, version: int) -> None:
        self.version = version
        self.changed = False

    def visit_Call(self, node: ast.Call) -> Any:
        self.generic_visit(node)
        name = _upgrader_of(node, self.version)
        if name is not None:
            node.func = ast.copy_location(ast.Name(id=name, ctx=ast.Load()), node.func)
            self.changed = True
        return node


def _upgrader_of(node: ast.AST, version: int) -> Optional[str]:
    """The upgrader a ``torch.<op>(...)`` call needs in code of ``version`` (None: none)."""
    if not isinstance(node, ast.Call):
        return None
    f = node.func
    if not (isinstance(f, ast.Attribute) and isinstance(f.value, ast.Name) and f.value.id == "torch"):
        return None
    entry = UPGRADERS.get(f.attr)
    return entry[1] if entry is not None and version < entry[0] else None


def upgrade(fdef: ast.FunctionDef, version: int, text: str = "") -> ast.FunctionDef:
    """``fdef`` with calls of operators that changed after ``version`` sent to their
    upgraders (``fdef`` itself when there are none).  ``text``, the source the definition
    comes from, lets most definitions skip the walk: no ``torch.<op>(`` in it, nothing to do."""
    ops = [op for op, (v, _) in UPGRADERS.items() if version < v]
    if not ops or (text and not any(f"torch.{op}(" in text for op in ops)):
        return fdef
    if all(_upgrader_of(n, version) is None for n in ast.walk(fdef)):
        return fdef
    new = copy.deepcopy(fdef)
    rw = _Rewrite(version)
    rw.visit(new)
    return new if rw.changed else fdef


def upgrader_functions(unit: Any, version: int = 0) -> dict[str, Any]:
    """The upgraders as source functions of ``unit`` (names callable from rewritten code);
    none for code of a ``version`` that needs none."""
    if all(version >= v for v, _ in UPGRADERS.values()):
        return {}
    from kiln.frontend.script.env import SourceFunction
    from kiln.frontend.script.source import Source
    tree = syntax.parse(UPGRADER_SOURCE, filename="<kiln upgraders>")
    src = Source(UPGRADER_SOURCE, "<kiln upgraders>")
    return {f.name: SourceFunction(f.name, src, f, unit) for f in tree.body if isinstance(f, ast.FunctionDef)}
