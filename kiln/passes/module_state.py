"""Folding a module's fixed state into the code that runs it, behind invalidation.

The executable graph of a module method (its submodule calls inlined) reads the module tree's
*state* at every call: the ``training`` flags, plain attributes with literal values, and
members that are None (an optional submodule, a buffer not tracked).  Such state rarely
changes between calls, and most of the code that reads it is branches on it: an inlined
``BatchNorm2d`` is some twenty nodes of ``if self.training`` and batch-size checks around one
``aten::batch_norm``.  :func:`fold_module_state` replaces those reads by constants of the
current values (and a member that is a tensor now by a read typed ``Tensor`` rather than
``Optional[Tensor]``), so that constant folding drops the branches not taken, before the
graph is profiled, specialized and compiled::

    %bn : __torch__.BatchNorm2d = prim::GetAttr[name="bn"](%self)       %training : bool =
    %training : bool = prim::GetAttr[name="training"](%bn)       ==>        prim::Constant[value=0]()

Unlike :func:`kiln.freeze` the module keeps its state: every folded name is recorded on the
module that holds it (``_kiln_folded``), and assigning it a value that differs -- another
literal, a member that becomes None or stops being None -- drops the compiled code of every
module that relies on it (``ScriptModule._kiln_invalidate``), which is rebuilt on the next
call.  ``m.eval()`` on a module already in eval mode changes nothing and costs nothing.
Names some graph of the tree writes (``prim::SetAttr``) are never folded: the code itself
changes them.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

import torch

from kiln.ir.graph import Graph
from kiln.ir.types import OptionalType

if TYPE_CHECKING:
    from kiln.runtime.module import ScriptModule

_LITERALS = (bool, int, float, str)


def written_names(mod: ScriptModule) -> set[str]:
    """Attribute names that some method graph of ``mod``'s tree writes with ``prim::SetAttr``."""
    from kiln.runtime.module import ScriptModule
    names: set[str] = set()
    for sub in mod.modules():
        if isinstance(sub, ScriptModule):
            for graph in sub._kiln_graphs.values():
                names.update(n.attrs["name"] for n in graph.all_nodes() if n.kind == "prim::SetAttr")
    return names


def fold_module_state(graph: Graph, mod: ScriptModule) -> bool:
    """Fold the reads of ``mod``'s tree state in ``graph`` (whose input 0 is ``mod``) that
    have a literal value or are None, and narrow reads of optional members that hold a
    tensor; record what was relied on.  Returns whether anything changed."""
    from kiln.passes.freeze import _replace_by_constant, attribute_path, lookup_member
    from kiln.runtime.module import ScriptModule
    if not graph.inputs:
        return False
    root, written, changed = graph.inputs[0], written_names(mod), False
    for node in list(graph.all_nodes()):
        if node.kind != "prim::GetAttr" or node.owner is None:
            continue
        name = node.attrs["name"]
        path = attribute_path(node.output, root)
        if path is None or name in written:
            continue
        owner: Any = mod
        for step in path[:-1]:
            found, owner = lookup_member(owner, step)
            if not found:
                break
        if not isinstance(owner, ScriptModule):
            continue
        found, value = lookup_member(owner, name)
        if not found:
            continue
        if value is None or type(value) in _LITERALS:
            _replace_by_constant(node, value)
        elif isinstance(value, torch.Tensor) and isinstance(node.output.type, OptionalType):
            node.output.type = node.output.type.elem
        else:
            continue
        owner.__dict__.setdefault("_kiln_folded", set()).add(name)
        changed = True
    return changed


def changes_folded(mod: ScriptModule, name: str, old: Any, new: Any) -> bool:
    """Whether assigning ``new`` to ``mod.name`` (which held ``old``) invalidates code that
    folded it: another literal, or a member that becomes or stops being None."""
    folded = mod.__dict__.get("_kiln_folded")
    if not folded or name not in folded:
        return False
    if old is None or new is None:
        return (old is None) != (new is None)
    if type(old) in _LITERALS:
        return type(new) is not type(old) or new != old
    return not isinstance(new, torch.Tensor)
