"""Tensor indexing as operators.

``x[i]`` and ``x[i] = v`` are not single operators: like PyTorch itself, Kiln splits an index
into basic steps -- ``aten::select`` for an int, ``aten::slice`` for a slice,
``aten::unsqueeze`` for None, Ellipsis skipping dimensions -- applied left to right, followed
by one ``aten::index`` (or ``aten::index_put_``) for the tensor indices.  The steps are run and
recorded through the tracer's ``call_op``, so the result the user's code sees is the one the
graph computes.
"""

from __future__ import annotations

from typing import Any, Protocol

import torch

from kiln.errors import TracingError


class OpCaller(Protocol):
    def call_op(self, name: str, args: Any, kwargs: dict[str, Any], func: Any = None) -> Any: ...
    def constant_tensor(self, t: torch.Tensor) -> torch.Tensor: ...


def _as_tuple(idx: Any) -> tuple[Any, ...]:
    if isinstance(idx, tuple):
        return idx
    if isinstance(idx, list) and any(isinstance(i, (slice, type(None), type(Ellipsis), list,
                                                    torch.Tensor)) for i in idx):
        return tuple(idx)
    return (idx,)


def _dims_used(i: Any) -> int:
    if i is None or i is Ellipsis:
        return 0
    if isinstance(i, torch.Tensor) and i.dtype == torch.bool:
        return i.dim()
    return 1


def _basic(tr: OpCaller, x: torch.Tensor, idx: tuple[Any, ...]) -> tuple[torch.Tensor, list[tuple[int, Any]]]:
    """Apply the basic steps of ``idx``; return the view and the advanced indices by dim."""
    used = sum(_dims_used(i) for i in idx)
    if used > x.dim():
        raise TracingError(f"too many indices for a tensor of dimension {x.dim()}")
    result, dim = x, 0
    advanced: list[tuple[int, Any]] = []
    for i in idx:
        if i is None:
            result = tr.call_op("aten::unsqueeze", (result, dim), {})
            dim += 1
        elif i is Ellipsis:
            dim += x.dim() - used
        elif isinstance(i, bool):
            raise TracingError("indexing with a Python bool is not supported by kiln.trace")
        elif isinstance(i, int):
            result = tr.call_op("aten::select", (result, dim, i), {})
        elif isinstance(i, slice):
            if i != slice(None):
                step = 1 if i.step is None else i.step
                result = tr.call_op("aten::slice", (result, dim, i.start, i.stop, step), {})
            dim += 1
        elif isinstance(i, (torch.Tensor, list, tuple)):
            advanced.append((dim, i))
            dim += _dims_used(i)
        else:
            raise TracingError(f"kiln.trace cannot index a tensor with {type(i).__name__}")
    return result, advanced


def _index_list(tr: OpCaller, advanced: list[tuple[int, Any]]) -> list[Any]:
    last = max(d for d, _ in advanced)
    indices: list[Any] = [None] * (last + 1)
    for d, i in advanced:
        if not isinstance(i, torch.Tensor):
            i = tr.constant_tensor(torch.tensor(list(i)))
        indices[d] = i
    return indices


def getitem(tr: OpCaller, x: torch.Tensor, idx: Any) -> torch.Tensor:
    view, advanced = _basic(tr, x, _as_tuple(idx))
    if advanced:
        return tr.call_op("aten::index", (view, _index_list(tr, advanced)), {})  # type: ignore[no-any-return]
    if view is x:  # x[:] or x[...]: a new view of the whole tensor
        return tr.call_op("aten::alias", (x,), {})  # type: ignore[no-any-return]
    return view


def setitem(tr: OpCaller, x: torch.Tensor, idx: Any, value: Any) -> None:
    view, advanced = _basic(tr, x, _as_tuple(idx))
    if advanced:
        if not isinstance(value, torch.Tensor):
            value = tr.constant_tensor(torch.tensor(value, dtype=x.dtype, device=x.device))
        tr.call_op("aten::index_put_", (view, _index_list(tr, advanced), value), {})
    elif isinstance(value, torch.Tensor):
        tr.call_op("aten::copy_", (view, value), {})
    else:
        tr.call_op("aten::fill_", (view, value), {})
