"""Subscripts (reading, assigning, deleting), attribute stores and comprehensions.

A mixin of :class:`~kiln.frontend.script.emitter.FunctionEmitter`.

Tensor indexing follows TorchScript: the index is walked left to right keeping a dimension
counter; an int selects (``aten::select``, the dimension disappears), a slice narrows
(``aten::slice``), ``None`` inserts a dimension (``aten::unsqueeze``), ``...`` switches to
counting dimensions from the end, and tensor indices are gathered into one ``aten::index``
(or ``aten::index_put_`` when assigning).

Comprehensions compile as the loop they stand for, appending to a fresh list (or setting
keys of a fresh dict); the loop variables are renamed so they do not leak, as in Python 3.
"""

from __future__ import annotations

import ast
import itertools
from typing import Any, Optional

from kiln.frontend.script.base import EmitterBase
from kiln.frontend.script.env import Binding, Items, ModuleVal, ObjectVal, PyObj
from kiln.frontend.script.source import set_location
from kiln.ir.graph import Value
from kiln.ir.types import (
    TENSOR,
    DictType,
    IntType,
    ListType,
    NamedTupleType,
    OptionalType,
    StrType,
    TensorType,
    TupleType,
    Type,
)

_counter = itertools.count()


class SubscriptMixin(EmitterBase):
    # -- reading -----------------------------------------------------------------------
    def expr_Subscript(self, node: ast.Subscript) -> Binding:
        base = self.expr(node.value)
        if isinstance(base, PyObj):
            raise self.fail(node, f"cannot subscript the Python value {base.obj!r} in compiled code")
        if isinstance(base, Items):
            return self.items_subscript(base, node)
        if isinstance(base, ModuleVal):
            items = self.comp.module_items_raw(self.emitter, base)
            keys = self.comp.module_keys(base)
            return self.items_subscript(Items(tuple(items), keys), node)
        v = self.to_value(base, node)
        t = v.type
        if isinstance(t, TensorType):
            return self.index_tensor(v, node.slice, node)
        if isinstance(t, (TupleType, NamedTupleType)):
            return self.tuple_subscript(v, t.elems, node)
        if isinstance(node.slice, ast.Slice):
            if not (isinstance(t, ListType) or t == StrType):
                raise self.fail(node, f"cannot slice a value of type {t.annotation()}")
            start, end, step = self.slice_parts(node.slice)
            return self.op_value("aten::slice", [v, start, end, step], {}, node)
        idx = self.value(node.slice)
        if isinstance(t, (ListType, DictType)) or t == StrType:
            return self.op_value("aten::__getitem__", [v, idx], {}, node)
        raise self.fail(node, f"a value of type {t.annotation()} cannot be subscripted")

    def slice_parts(self, s: ast.Slice) -> tuple[Value, Value, Value]:
        def part(e: Optional[ast.expr], default: Any) -> Value:
            if e is None:
                return self.b.constant(default, OptionalType(IntType) if default is None else None)
            return self.value(e)
        return part(s.lower, None), part(s.upper, None), part(s.step, 1)

    def items_subscript(self, base: Items, node: ast.Subscript) -> Binding:
        key = self.value(node.slice) if not isinstance(node.slice, ast.Slice) else None
        k = self.constant_of(key) if key is not None else ...
        if base.keys is not None:
            if not isinstance(k, str) or k not in base.keys:
                raise self.fail(node, "a ModuleDict can only be indexed with a string constant naming a key")
            return base.items[base.keys.index(k)]
        if isinstance(node.slice, ast.Slice):
            return Items(tuple(base.items[self._const_slice(node.slice, node)]))
        if not isinstance(k, int):
            raise self.fail(node, "a module container or tuple can only be indexed with an int constant")
        return base.items[k]

    def _const_slice(self, s: ast.Slice, node: ast.AST) -> slice:
        """A slice whose bounds are int constants (of a tuple, or of a module container)."""
        lo, hi, st = (self._const_index(e, node) for e in (s.lower, s.upper, s.step))
        return slice(lo, hi, st)

    def _const_index(self, e: Optional[ast.expr], node: ast.AST) -> Optional[int]:
        if e is None:
            return None
        k = self.constant_of(self.value(e))
        if not isinstance(k, int):
            raise self.fail(node, "this slice needs int constants")
        return k

    def tuple_subscript(self, v: Value, elems: tuple[Type, ...], node: ast.Subscript) -> Binding:
        """``t[i]`` (``i`` a constant: the elements' types may differ) or ``t[i:j]``."""
        if isinstance(node.slice, ast.Slice):
            sl = self._const_slice(node.slice, node)
            parts = self.b.unpack(v, list(elems))
            return self.b.tuple(parts[sl])
        idx = self.value(node.slice)
        k = self.constant_of(idx)
        if not isinstance(k, int):
            raise self.fail(node, "a tuple can only be indexed with an int constant (its elements may "
                                  "have different types); use a list for run-time indices")
        if not -len(elems) <= k < len(elems):
            raise self.fail(node, f"tuple index {k} out of range for a tuple of {len(elems)}")
        k %= len(elems)
        return self.b.value("prim::TupleIndex", [v, self.b.constant(k)], elems[k])

    # -- tensors -----------------------------------------------------------------------
    def index_parts(self, sl: ast.expr) -> list[ast.expr]:
        return list(sl.elts) if isinstance(sl, ast.Tuple) else [sl]

    def index_tensor(self, v: Value, sl: ast.expr, node: ast.AST) -> Value:
        view, tensors = self.index_view(v, sl, node)
        if tensors is None:
            return view
        lst = self.b.list(tensors, OptionalType(TENSOR))
        return self.op_value("aten::index", [view, lst], {}, node)

    def index_view(self, v: Value, sl: ast.expr, node: ast.AST) -> tuple[Value, Optional[list[Value]]]:
        """Apply selects/slices/unsqueezes; return the view and the tensor indices (or None)."""
        parts = self.index_parts(sl)
        consuming = [p for p in parts if not (isinstance(p, ast.Constant) and p.value in (None, Ellipsis))]
        dim = 0
        after_ellipsis = False
        remaining = len(consuming)
        pending: dict[int, Value] = {}     # dimension -> tensor index
        for p in parts:
            if isinstance(p, ast.Constant) and p.value is Ellipsis:
                after_ellipsis = True
                dim = -remaining
                continue
            if isinstance(p, ast.Constant) and p.value is None:
                v = self.op_value("aten::unsqueeze", [v, self.b.constant(dim)], {}, node)
                dim += 1
                continue
            remaining -= 1
            if isinstance(p, ast.Slice):
                start, end, step = self.slice_parts(p)
                if not (self.constant_of(start) is None and self.constant_of(end) is None
                        and self.constant_of(step) == 1):
                    v = self.op_value("aten::slice", [v, self.b.constant(dim), start, end, step], {}, node)
                dim += 1
                continue
            idx = self.value(p)
            if idx.type == IntType:
                v = self.op_value("aten::select", [v, self.b.constant(dim), idx], {}, node)
                if after_ellipsis:
                    dim += 1
                continue
            if isinstance(idx.type, ListType) and idx.type.elem in (IntType,):
                idx = self.op_value("aten::tensor", [idx], {}, node)
            if not isinstance(idx.type, TensorType):
                raise self.fail(p, f"a tensor cannot be indexed with a {idx.type.annotation()}")
            pending[dim] = idx
            dim += 1
        return v, self._index_list(pending, node)

    def _index_list(self, pending: dict[int, Value], node: ast.AST) -> Optional[list[Value]]:
        """``aten::index``'s indices: the tensor index of each dimension up to the last one
        indexed, None for the others (None: no tensor indices at all)."""
        if not pending:
            return None
        if any(d < 0 for d in pending):
            raise self.fail(node, "tensor indices after `...` are not supported")
        return [pending[d] if d in pending else self.b.constant(None, OptionalType(TENSOR))
                for d in range(max(pending) + 1)]

    # -- stores ------------------------------------------------------------------------
    def assign_subscript(self, target: ast.Subscript, value: Value, where: ast.AST) -> None:
        base = self.value(target.value)
        t = base.type
        if isinstance(t, TensorType):
            view, tensors = self.index_view(base, target.slice, target)
            if tensors is not None:
                lst = self.b.list(tensors, OptionalType(TENSOR))
                if not isinstance(value.type, TensorType):
                    value = self.op_value("aten::tensor", [value], {}, where)
                self.op_value("aten::index_put_", [view, lst, value], {}, where)
                return
            if isinstance(value.type, TensorType):
                self.op_value("aten::copy_", [view, value], {}, where)
            else:
                self.op_value("aten::fill_", [view, value], {}, where)
            return
        if isinstance(t, ListType) or isinstance(t, DictType):
            if isinstance(t, DictType) and base in self.comp.empty_lists:
                key = self.value(target.slice)
                base.type = DictType(key.type, value.type)
                self.comp.empty_lists.discard(base)
                self.op_value("aten::_set_item", [base, key, value], {}, where)
                return
            key = self.value(target.slice)
            self.op_value("aten::_set_item", [base, key, value], {}, where)
            return
        raise self.fail(target, f"cannot assign into a value of type {t.annotation()}")

    def delete_item(self, target: ast.Subscript) -> None:
        base = self.value(target.value)
        if isinstance(target.slice, ast.Slice) and isinstance(base.type, ListType):
            start, end, step = self.slice_parts(target.slice)
            self.b.op("prim::kiln_del_slice", [base, start, end, step], [])
            return
        key = self.value(target.slice)
        if isinstance(base.type, DictType):
            self.op_value("aten::Delete", [base, key], {}, target)
        elif isinstance(base.type, ListType):
            self.op_value("aten::pop", [base, key], {}, target)
        else:
            raise self.fail(target, f"`del` of an item of {base.type.annotation()} is not supported")

    def assign_attribute(self, target: ast.Attribute, value: Value, where: ast.AST,
                         declared: Optional[Type] = None) -> None:
        base = self.expr(target.value)
        if isinstance(base, (ModuleVal, ObjectVal)):
            self.comp.set_attribute(self.emitter, base, target.attr, value, where, declared)
            return
        raise self.fail(target, "only attributes of `self` (or of script-class objects) can be assigned")

    # -- comprehensions ------------------------------------------------------------------
    def expr_ListComp(self, node: ast.ListComp, expected: Optional[Type] = None) -> Binding:
        return self.comprehension(node, node.generators, [node.elt], expected)

    def expr_GeneratorExp(self, node: ast.GeneratorExp) -> Binding:
        if self.restricted:
            raise self.fail(node, "a generator expression is not TorchScript; archive code cannot use it")
        return self.comprehension(node, node.generators, [node.elt], None)

    def expr_DictComp(self, node: ast.DictComp, expected: Optional[Type] = None) -> Binding:
        return self.comprehension(node, node.generators, [node.key, node.value], expected)

    def expr_SetComp(self, node: ast.SetComp) -> Binding:
        raise self.fail(node, "set comprehensions are not supported; use a list or dict comprehension")

    def comprehension(self, node: ast.expr, gens: list[ast.comprehension], elts: list[ast.expr],
                      expected: Optional[Type]) -> Binding:
        """A list (one element expression) or dict (key and value) comprehension: a fresh
        container, filled by the loops the comprehension stands for."""
        k = next(_counter)
        acc = f"__kiln_comp{k}"
        is_dict = len(elts) == 2
        body = self._comprehension_loops(node, gens, elts, k, acc)
        if is_dict:
            kt, vt = (expected.key, expected.value) if isinstance(expected, DictType) else (StrType, TENSOR)
            container = self.b.dict([], [], DictType(kt, vt))
        else:
            elem = expected.elem if isinstance(expected, ListType) else TENSOR
            container = self.b.value("prim::ListConstruct", [], ListType(elem))
        if expected is None:
            self.comp.empty_lists.add(container)
        self.scope.vars[acc] = container
        for s in body:
            self.emit_stmt(s)
        del self.scope.vars[acc]
        for name in list(self.scope.vars):
            if name.startswith(f"__kiln_c{k}_"):
                del self.scope.vars[name]
        if container in self.comp.empty_lists:
            # The loop never appended while compiling (it cannot happen), or the element type
            # was known from the start.
            self.comp.empty_lists.discard(container)
        return container

    def _comprehension_loops(self, node: ast.expr, gens: list[ast.comprehension], elts: list[ast.expr],
                             k: int, acc: str) -> list[ast.stmt]:
        """The comprehension as statements: nested ``for``/``if`` around ``acc.append(elt)``
        (``acc[key] = value``), loop variables renamed ``__kiln_c<k>_<name>``, every node at
        the comprehension's location."""
        renames: dict[str, str] = {}
        new_gens = []
        for g in gens:
            if g.is_async:
                raise self.fail(node, "async comprehensions are not supported")
            iter_ = _Rename(dict(renames)).visit(_copy(g.iter))
            for n in ast.walk(g.target):
                if isinstance(n, ast.Name):
                    renames[n.id] = f"__kiln_c{k}_{n.id}"
            new_gens.append((_Rename(renames).visit(_copy(g.target)), iter_,
                             [_Rename(renames).visit(_copy(c)) for c in g.ifs]))
        new_elts = [_Rename(renames).visit(_copy(e)) for e in elts]
        if len(elts) == 2:
            store: ast.stmt = ast.Assign(targets=[ast.Subscript(value=ast.Name(id=acc, ctx=ast.Load()),
                                                                slice=new_elts[0], ctx=ast.Store())],
                                         value=new_elts[1])
        else:
            store = ast.Expr(value=ast.Call(func=ast.Attribute(value=ast.Name(id=acc, ctx=ast.Load()),
                                                               attr="append", ctx=ast.Load()),
                                            args=[new_elts[0]], keywords=[]))
        body: list[ast.stmt] = [store]
        for target, iter_, ifs in reversed(new_gens):
            for cond in reversed(ifs):
                body = [ast.If(test=cond, body=body, orelse=[])]
            body = [ast.For(target=target, iter=iter_, body=body, orelse=[])]
        for s in body:
            ast.fix_missing_locations(ast.copy_location(s, node))
        for n in ast.walk(ast.Module(body=body, type_ignores=[])):
            if hasattr(n, "lineno"):
                set_location(n, lineno=node.lineno, col_offset=node.col_offset)
        return body


class _Rename(ast.NodeTransformer):
    def __init__(self, names: dict[str, str]) -> None:
        self.names = names

    def visit_Name(self, node: ast.Name) -> ast.Name:
        if node.id in self.names:
            return ast.copy_location(ast.Name(id=self.names[node.id], ctx=node.ctx), node)
        return node


def _copy(node: ast.AST) -> Any:
    import copy
    return copy.deepcopy(node)


__all__ = ["SubscriptMixin"]
