"""Calls: torch operators, Python builtins, methods, compiled Python functions, lambdas.

A mixin of :class:`~kiln.frontend.script.emitter.FunctionEmitter`.  What a call means is
decided here, in one place, from what the callee is while compiling:

* a torch builtin (``torch.add``, ``Tensor.add``, ``torch.ops.ns.op``): an operator node,
  overload chosen by :func:`kiln.frontend.resolve.resolve_typed` from the argument types;
* a Python builtin (``len``, ``range``, ``min`` ...) or ``math`` function: the matching
  TorchScript builtin operator;
* a Python function (user code, ``torch.nn.functional``): compiled and inlined at the call
  site with its arguments bound -- compile-time values (a lambda, a module, ``*args``)
  included, so ``F.relu(x, inplace=False)`` compiles to one ``aten::relu``;
* a method of a value (``xs.append``, ``s.lower``): the builtin of that name for its type;
* a module or a script-class object: see :mod:`kiln.frontend.script.compiler`.
"""

from __future__ import annotations

import ast
import builtins
import enum
import math
import types
import warnings
from typing import TYPE_CHECKING, Any, Callable, Optional

import torch

from kiln.frontend.resolve import _METHOD_ALIASES, operator_name, resolve_typed
from kiln.frontend.script.env import (
    Binding,
    Bound,
    Items,
    LambdaVal,
    ModuleVal,
    ObjectVal,
    PyObj,
    Scope,
    SuperVal,
)
from kiln.ir.graph import Value
from kiln.ir.types import (
    TENSOR,
    AnyType,
    BoolType,
    DictType,
    FloatType,
    FutureType,
    IntType,
    ListType,
    NamedTupleType,
    NoneType,
    OptionalType,
    StrType,
    TensorType,
    TupleType,
    Type,
)

if TYPE_CHECKING:
    from kiln.frontend.script.emitter import FunctionEmitter as _Base
else:
    _Base = object

_NO_TORCH_FUNCTION = {"has_torch_function", "has_torch_function_unary", "has_torch_function_variadic",
                      "_has_torch_function", "_has_torch_function_unary", "_has_torch_function_variadic"}


class CallMixin(_Base):
    # -- operators -----------------------------------------------------------------------
    def try_op(self, name: str, args: list[Value], kwargs: dict[str, Value]) -> Optional[Value]:
        outs = self.try_op_outputs(name, args, kwargs)
        if outs is None:
            return None
        if len(outs) != 1:
            return self.b.tuple(outs) if outs else self.b.constant(None)
        return outs[0]

    def try_op_outputs(self, name: str, args: list[Value], kwargs: dict[str, Value]) -> Optional[list[Value]]:
        from kiln.ir.types import DtypeType
        if len(args) == 2 and DtypeType in (args[0].type, args[1].type):
            # `dtype == 7` in TorchScript source: the int is a dtype
            args = [self.enum_constant(a, DtypeType) for a in args]
        m = resolve_typed(name, [a.type for a in args], {k: v.type for k, v in kwargs.items()})
        if m is None:
            return None
        inputs: list[Value] = []
        for p, (kind, what) in zip(m.op.schema.arguments, m.slots):
            if kind == "arg":
                inputs.append(self.tuple_as_list(args[what], p.type))
            elif kind == "kw":
                inputs.append(self.tuple_as_list(kwargs[what], p.type))
            elif kind == "pack":
                inputs.append(self.b.list([args[i] for i in what], IntType))
            else:
                typed = what is None or isinstance(what, (list, tuple))
                inputs.append(self.b.constant(what, p.type if typed else None))
        node = self.b.op(m.op, inputs, m.out_types)
        for v, t in zip(inputs, [p.type for p in m.op.schema.arguments]):
            if v in self.comp.empty_lists and isinstance(t, ListType) and t.elem != AnyType:
                pass
        return list(node.outputs)

    def enum_constant(self, v: Value, expected: Type) -> Value:
        """TorchScript source spells dtypes, layouts and memory formats as ints (``dtype=6``);
        the bindings want the torch objects."""
        from kiln.ir.ops import _LAYOUTS, _MEMORY_FORMATS, _SCALAR_TYPES
        from kiln.ir.types import DtypeType, LayoutType, MemoryFormatType
        base = expected.elem if isinstance(expected, OptionalType) else expected
        k = self.constant_of(v)
        if not isinstance(k, int) or isinstance(k, bool) or v.type != IntType:
            return v
        if base == DtypeType and k in _SCALAR_TYPES:
            return self.b.constant(_SCALAR_TYPES[k])
        if base == LayoutType and 0 <= k < len(_LAYOUTS):
            return self.b.constant(_LAYOUTS[k])
        if base == MemoryFormatType and 0 <= k < len(_MEMORY_FORMATS):
            return self.b.constant(_MEMORY_FORMATS[k])
        return v

    def tuple_as_list(self, v: Value, expected: Type) -> Value:
        """A tuple passed for a list parameter (``stride=(1, 1)``) becomes a list."""
        target = expected.elem if isinstance(expected, OptionalType) else expected
        if v.node.kind == "prim::Constant" and v.type == IntType:
            return self.enum_constant(v, expected)
        if not isinstance(v.type, TupleType) or not isinstance(target, ListType):
            return v
        k = self.constant_of(v)
        if v.node.kind == "prim::TupleConstruct":
            parts = list(v.node.inputs)
        else:
            parts = self.b.unpack(v, list(v.type.elems))
        elem = parts[0].type if parts else target.elem
        if isinstance(target.elem, TensorType) or target.elem.__class__.__name__ == "VarType":
            elem = elem if not isinstance(elem, TensorType) else TENSOR
        else:
            elem = target.elem
        del k
        return self.b.list(parts, elem)

    def op_value(self, name: str, args: list[Value], kwargs: dict[str, Value], node: Optional[ast.AST]) -> Value:
        r = self.try_op(name, args, kwargs)
        if r is None:
            raise self.fail(node, self.no_match(name, args, kwargs))
        return r

    def no_match(self, name: str, args: list[Value], kwargs: dict[str, Value]) -> str:
        from kiln.ir.ops import registry
        given = ", ".join([a.type.annotation() for a in args] +
                          [f"{k}={v.type.annotation()}" for k, v in kwargs.items()])
        overloads = registry.overloads(name)
        if not overloads:
            return f"unknown operator {name}"
        from kiln.frontend.script.exprs import optional_hint
        shown = "\n".join(f"    {o.schema}" for o in overloads[:8])
        more = f"\n    ... and {len(overloads) - 8} more" if len(overloads) > 8 else ""
        hint = optional_hint([*args, *kwargs.values()])
        return f"no overload of {name} accepts ({given}){hint}; the candidates are:\n{shown}{more}"

    # -- the call expression -------------------------------------------------------------
    def expr_Call(self, node: ast.Call) -> Binding:
        callee = self.expr(node.func)
        return self.call(callee, node)

    def call_args(self, node: ast.Call) -> tuple[list[Binding], dict[str, Binding]]:
        args: list[Binding] = []
        for a in node.args:
            if isinstance(a, ast.Starred):
                args.extend(self.unpack_for_assignment(self.expr(a.value), a, -1, None))
            else:
                args.append(self.expr(a))
        kwargs: dict[str, Binding] = {}
        for k in node.keywords:
            if k.arg is None:
                b = self.expr(k.value)
                if not (isinstance(b, Items) and b.keys is not None):
                    raise self.fail(k, "`**` in a call needs a **kwargs parameter passed on")
                kwargs.update(zip(b.keys, b.items))
            else:
                kwargs[k.arg] = self.expr(k.value)
        return args, kwargs

    def values_of(self, args: list[Binding], node: ast.AST) -> list[Value]:
        return [self.to_value(a, node) for a in args]

    def call(self, callee: Binding, node: ast.Call) -> Binding:
        if isinstance(callee, PyObj):
            special = self.special_call(callee.obj, node)
            if special is not None:
                return special
        args, kwargs = self.call_args(node)
        return self.call_with(callee, args, kwargs, node)

    def call_with(self, callee: Binding, args: list[Binding], kwargs: dict[str, Binding],
                  node: ast.AST) -> Binding:
        if isinstance(callee, PyObj):
            return self.call_python(callee.obj, args, kwargs, node)
        if isinstance(callee, Bound):
            return self.call_method(callee, args, kwargs, node)
        if isinstance(callee, ModuleVal):
            return self.comp.call_module(self, callee, "forward", args, kwargs, node)
        if isinstance(callee, LambdaVal):
            return self.call_lambda(callee, args, kwargs, node)
        raise self.fail(node, "this value is not callable")

    def special_call(self, obj: Any, node: ast.Call) -> Optional[Binding]:
        """Calls whose arguments are types or are not evaluated normally."""
        name = getattr(obj, "__name__", None)
        if obj in (torch.jit.annotate,) or getattr(obj, "_kiln_annotate", False):
            t = self.annotation(node.args[0])
            return self.value(node.args[1], expected=t) if True else None
        if obj is isinstance:
            c, _, _ = self.isinstance_check(node)
            return c
        if obj is builtins.hasattr:
            base = self.expr(node.args[0])
            attr = self.expr(node.args[1])
            if not (isinstance(attr, Value) and isinstance(self.constant_of(attr), str)):
                raise self.fail(node, "hasattr() needs a string constant")
            return self.b.constant(self.comp.has_attribute(self, base, self.constant_of(attr)))
        if obj is builtins.getattr:
            base = self.expr(node.args[0])
            attr = self.value(node.args[1])
            key = self.constant_of(attr)
            if not isinstance(key, str):
                raise self.fail(node, "getattr() needs a string constant as its name")
            if len(node.args) == 3 and not self.comp.has_attribute(self, base, key):
                return self.expr(node.args[2])
            return self.attribute(base, key, node)
        if name in _NO_TORCH_FUNCTION:
            return self.b.constant(False)
        if obj is UNCHECKED_CAST or obj is UNINITIALIZED:
            t = self.annotation(node.args[0])
            if obj is UNINITIALIZED:
                return self.uninitialized(t)
            v = self.value(node.args[1])
            return self.b.value("prim::unchecked_cast", [v], t)
        if obj is builtins.isinstance or obj in _CONSTANT_CALLS and False:
            pass
        if _hashable(obj) and obj in _CONSTANT_CALLS:
            return self.b.constant(_CONSTANT_CALLS[obj])
        if obj is builtins.super:
            return self.super_value(node)
        return None

    def call_python(self, obj: Any, args: list[Binding], kwargs: dict[str, Binding], node: ast.AST) -> Binding:
        from kiln.frontend.script.exprs import _AtenName
        if isinstance(obj, _AtenName):
            vals = self.values_of(args, node)
            if obj.qualified == "aten::format":
                return self.b.value("aten::format", vals, StrType)
            return self.op_value(obj.qualified, vals, {k: self.to_value(v, node) for k, v in kwargs.items()},
                                 node)
        builtin = _BUILTINS.get(obj) if _hashable(obj) else None
        if builtin is not None:
            return builtin(self, args, kwargs, node)
        if obj in (torch.no_grad, torch.enable_grad):
            return PyObj(obj())
        if isinstance(obj, type):
            return self.comp.construct(self, obj, args, kwargs, node)
        from kiln.runtime.module import ScriptFunction
        if isinstance(obj, ScriptFunction):
            return self.comp.inline_graph(self, obj, self.values_of(args, node), node)
        if isinstance(obj, torch.nn.Module):
            raise self.fail(node, "calling a module that is not an attribute of self is not supported; "
                                  "make it a submodule")
        if getattr(obj, "__module__", None) == "builtins" or obj in vars(builtins).values() \
                if _hashable(obj) else False:
            raise self.fail(node, f"the Python builtin {getattr(obj, '__name__', obj)}() is not supported "
                                  "in compiled code")
        if isinstance(obj, (torch._ops.OpOverloadPacket, torch._ops.OpOverload)) or _is_torch_builtin(obj):
            return self.call_torch(obj, args, kwargs, node)
        if isinstance(obj, types.FunctionType):
            if _is_torch_python(obj):
                return self.call_torch_python(obj, args, kwargs, node)
            return self.comp.inline_function(self, obj, args, kwargs, node)
        if isinstance(obj, types.MethodType) and isinstance(obj.__self__, torch.nn.Module):
            raise self.fail(node, "bound methods of other modules cannot be called here")
        raise self.fail(node, f"{_name_of(obj)} cannot be called from compiled code")

    def call_torch(self, fn: Any, args: list[Binding], kwargs: dict[str, Binding], node: ast.AST) -> Value:
        named = operator_name(fn)
        if named is None:
            raise self.fail(node, f"{_name_of(fn)} is not a torch operator")
        name, swap = named
        vals = self.values_of(args, node)
        if swap:
            vals = vals[::-1]
        kw = {k: self.to_value(v, node) for k, v in kwargs.items()}
        if name == "aten::tensor" or name == "aten::as_tensor":
            return self.torch_tensor(vals, kw, node)
        return self.op_value(name, vals, kw, node)

    def call_torch_python(self, fn: Any, args: list[Binding], kwargs: dict[str, Binding], node: ast.AST) -> Binding:
        """A Python-level torch function: compile its body; if that fails, its ATen namesake."""
        from kiln.errors import CompileError
        mod = getattr(fn, "__module__", "") or ""
        name = fn.__name__
        vals = None
        if not mod.startswith("torch.nn.functional"):
            vals = self.values_of(args, node)
            r = self.try_op(f"aten::{name}", vals, {k: self.to_value(v, node) for k, v in kwargs.items()})
            if r is None and len(vals) > 1 and all(isinstance(v.type, TensorType) for v in vals[1:]):
                # torch.einsum("ij,jk", a, b): trailing tensors are the operator's Tensor[]
                packed = [vals[0], self.b.list(vals[1:], TENSOR)]
                r = self.try_op(f"aten::{name}", packed, {k: self.to_value(v, node) for k, v in kwargs.items()})
            if r is not None:
                return r
        saved = self.b.before
        try:
            return self.comp.inline_function(self, fn, args, kwargs, node)
        except CompileError:
            if vals is None:
                vals = self.values_of(args, node)
            r = self.try_op(f"aten::{name.lstrip('_')}", vals,
                            {k: self.to_value(v, node) for k, v in kwargs.items()})
            if r is not None:
                return r
            del saved
            raise

    def torch_tensor(self, vals: list[Value], kw: dict[str, Value], node: ast.AST) -> Value:
        if vals and vals[0].type in (IntType, FloatType, BoolType):
            return self.op_value("aten::tensor", vals, kw, node)
        return self.op_value("aten::tensor", vals, kw, node)

    # -- methods -------------------------------------------------------------------------
    def call_method(self, m: Bound, args: list[Binding], kwargs: dict[str, Binding], node: ast.AST) -> Binding:
        base = m.base
        if isinstance(base, SuperVal):
            return self.comp.call_super(self, base, m.name, args, kwargs, node)
        if isinstance(base, ModuleVal):
            return self.comp.call_module(self, base, m.name, args, kwargs, node)
        if isinstance(base, ObjectVal):
            return self.comp.call_object_method(self, base, m.name, args, kwargs, node)
        if isinstance(base, Items):
            return self.items_method(base, m.name, node)
        if isinstance(base, PyObj) and m.name == "__new__" and isinstance(base.obj, type):
            info = self.comp.class_info(base.obj)
            return ObjectVal(self.b.value("prim::CreateObject", [], info.type), info)
        if not isinstance(base, Value):
            raise self.fail(node, f"cannot call method {m.name!r} here")
        t = base.type
        vals = self.values_of(args, node)
        kw = {k: self.to_value(v, node) for k, v in kwargs.items()}
        if isinstance(t, TensorType):
            return self.tensor_method(base, m.name, vals, kw, node)
        if t == StrType and m.name == "format":
            return self.b.value("aten::format", [base, *vals], StrType)
        if isinstance(t, DictType) and m.name in ("get", "pop", "setdefault"):
            return self.op_value(f"aten::{m.name}", [base, *vals], kw, node)
        if isinstance(t, ListType) and m.name == "sort" and "reverse" in kw:
            return self.op_value("aten::sort", [base], {"reverse": kw["reverse"]}, node)
        if isinstance(t, ListType) and base in self.comp.empty_lists and m.name in ("append", "insert") \
                and vals:
            self.comp.empty_lists.discard(base)
            elem = vals[-1].type
            base.type = ListType(elem)
        if isinstance(t, DictType) and base in self.comp.empty_lists and len(vals) == 0:
            pass
        r = self.try_op(f"aten::{m.name}", [base, *vals], kw)
        if r is None:
            raise self.fail(node, f"{t.annotation()} has no method {m.name!r} taking "
                                  f"({', '.join(v.type.annotation() for v in vals)})")
        return r

    def items_method(self, base: Items, name: str, node: ast.AST) -> Binding:
        """``kwargs.items()`` and friends on a sequence fixed while compiling."""
        keys = [self.b.constant(k) for k in base.keys] if base.keys is not None else None
        if name == "items" and keys is not None:
            return Items(tuple(Items((k, v)) for k, v in zip(keys, base.items)))
        if name == "keys" and keys is not None:
            return Items(tuple(keys))
        if name == "values":
            return Items(base.items)
        raise self.fail(node, f"{name}() is not available on this compile-time sequence")

    def tensor_method(self, base: Value, name: str, vals: list[Value], kw: dict[str, Value], node: ast.AST) -> Value:
        alias = _METHOD_ALIASES.get(name)
        if alias is not None and not vals and not kw:
            op, extra = alias
            kw = {k: self.b.constant(v) for k, v in extra.items()}
            if op == "to" and "device" in kw:
                return self.op_value("aten::to", [base, kw["device"], self.b.value("prim::dtype", [base], IntType)],
                                     {}, node)
            return self.op_value(f"aten::{op}", [base], kw, node)
        if name == "to" and vals and vals[0].type == StrType:
            dev = self.op_value("aten::device", [vals[0]], {}, node)
            vals = [dev, *vals[1:]]
        if name == "to" and vals and vals[0].type.annotation() == "Device" and \
                (len(vals) == 1 or vals[1].type not in (IntType,)):
            dtype = self.b.value("prim::dtype", [base], IntType)
            r = self.try_op("aten::to", [base, vals[0], dtype, *vals[1:]], kw)
            if r is not None:
                return r
        if name == "size" and not vals and not kw:
            return self.b.value("aten::size", [base], ListType(IntType))
        if name in ("dim", "numel") and not vals:
            return self.b.value(f"aten::{name}", [base], IntType)
        if name == "item" and not vals:
            return self.b.value("aten::item", [base], AnyType if False else FloatType) if False else \
                self.op_value("aten::item", [base], {}, node)
        if name == "tolist":
            expected = getattr(self, "expected_type", None)
            if expected is None:
                raise self.fail(node, "Tensor.tolist() needs its result type: annotate the "
                                      "assignment, e.g. `xs: List[float] = t.tolist()`")
            return self.b.value("aten::tolist", [base], expected)
        return self.op_value(f"aten::{name}", [base, *vals], kw, node)

    # -- lambdas -------------------------------------------------------------------------
    def call_lambda(self, lam: LambdaVal, args: list[Binding], kwargs: dict[str, Binding], node: ast.AST) -> Binding:
        params = [a.arg for a in lam.node.args.args]
        if len(args) != len(params) or kwargs:
            raise self.fail(node, f"the lambda takes {len(params)} argument(s), got {len(args) + len(kwargs)}")
        saved = self.scope
        self.scope = Scope(lam.scope)
        try:
            for p, a in zip(params, args):
                self.scope.vars[p] = a
            return self.expr(lam.node.body)
        finally:
            self.scope = saved

    def super_value(self, node: ast.Call) -> Binding:
        if self.self_class is None:
            raise self.fail(node, "super() is only supported inside methods")
        me = self.scope.get("self")
        if not isinstance(me, (ModuleVal, ObjectVal)):
            raise self.fail(node, "super() needs `self`")
        return SuperVal(me, self.self_class)

    # -- iteration -----------------------------------------------------------------------
    def unrolled_items(self, it: Binding, node: ast.AST) -> Optional[list[Binding]]:
        """The items of a sequence fixed while compiling (tuples, module containers), else None."""
        if isinstance(it, Items):
            if it.keys is not None:
                return [self.b.constant(k) for k in it.keys]
            return list(it.items)
        if isinstance(it, Value) and isinstance(it.type, TupleType):
            return list(self.b.unpack(it, list(it.type.elems)))
        if isinstance(it, PyObj) and isinstance(it.obj, (tuple, list)):
            return [PyObj(x) for x in it.obj]
        if isinstance(it, ModuleVal):
            return self.comp.module_items(self, it, node)
        if isinstance(it, PyObj) and isinstance(it.obj, type) and issubclass(it.obj, enum.Enum):
            return [PyObj(m) for m in it.obj]
        return None

    def iteration(self, it: Binding, node: ast.AST) -> tuple[Value, Callable[[Value], Binding]]:
        """(trip count, element of iteration i) for a loop over ``it``."""
        if isinstance(it, RangeVal):
            return it.trip, it.element
        if isinstance(it, ZipVal):
            return it.trip, it.element
        v = self.to_value(it, node)
        t = v.type
        if isinstance(t, ListType):
            n = self.b.value("aten::len.t", [v], IntType)
            return n, lambda i: self.op_value("aten::__getitem__", [v, i], {}, node)
        if t == StrType:
            n = self.op_value("aten::len", [v], {}, node)
            return n, lambda i: self.op_value("aten::__getitem__", [v, i], {}, node)
        if isinstance(t, DictType):
            keys = self.op_value("aten::keys", [v], {}, node)
            return self.iteration(keys, node)
        if isinstance(t, TensorType):
            n = self.b.value("aten::len.Tensor", [v], IntType)
            return n, lambda i: self.op_value("aten::select", [v, self.b.constant(0), i], {}, node)
        raise self.fail(node, f"cannot iterate over a value of type {t.annotation()}")

    def unpack_for_assignment(self, value: Binding, where: ast.AST, n: int, star: Optional[int]) -> list[Binding]:
        """Split ``value`` into ``n`` parts (``n`` = -1: all of them) for ``a, b = value``."""
        if isinstance(value, Items):
            parts: list[Binding] = list(value.items)
        elif isinstance(value, PyObj) and isinstance(value.obj, tuple):
            parts = [PyObj(x) for x in value.obj]
        else:
            v = self.to_value(value, where)
            if isinstance(v.type, (TupleType, NamedTupleType)):
                parts = list(self.b.unpack(v, list(v.type.elems)))
            elif isinstance(v.type, ListType) and star is None and n >= 0:
                parts = list(self.b.unpack(v, [v.type.elem] * n))
            elif isinstance(v.type, ListType) and star is not None:
                return self.unpack_list_starred(v, n, star, where)
            elif isinstance(v.type, TensorType) and star is None and n >= 0:
                parts = list(self.b.op("aten::unbind.int", [v, self.b.constant(0)], [ListType(TENSOR)]).outputs)
                parts = list(self.b.unpack(parts[0], [TENSOR] * n))
            else:
                raise self.fail(where, f"cannot unpack a value of type {v.type.annotation()}"
                                       + (" with a starred target; unpack a tuple" if star is not None else ""))
        if n < 0:
            return parts
        if star is None:
            if len(parts) != n:
                raise self.fail(where, f"cannot unpack {len(parts)} values into {n} targets")
            return parts
        before, after = star, n - star - 1
        if len(parts) < before + after:
            raise self.fail(where, f"not enough values to unpack ({len(parts)} for {n - 1}+ targets)")
        middle = parts[before:len(parts) - after]
        mvals = [self.to_value(p, where) for p in middle]
        starred = self.b.list(mvals) if mvals else self.b.list([], TENSOR)
        return [*parts[:before], starred, *parts[len(parts) - after:]]

    def unpack_list_starred(self, v: Value, n: int, star: int, where: ast.AST) -> list[Binding]:
        """``a, *b, c = xs`` on a list: items by index, the starred part as a slice."""
        after = n - star - 1
        out: list[Binding] = []
        for i in range(star):
            out.append(self.op_value("aten::__getitem__", [v, self.b.constant(i)], {}, where))
        end = self.b.constant(-after if after else None, None if after else OptionalType(IntType))
        out.append(self.op_value("aten::slice", [v, self.b.constant(star), end, self.b.constant(1)], {}, where))
        for i in range(after):
            out.append(self.op_value("aten::__getitem__", [v, self.b.constant(i - after)], {}, where))
        return out

    # -- exceptions and annotations ------------------------------------------------------
    def exception_parts(self, exc: Optional[ast.expr], node: ast.AST) -> tuple[Optional[str], Any]:
        if exc is None:
            raise self.fail(node, "a bare `raise` (re-raise) is not supported; raise an exception")
        if isinstance(exc, ast.Call):
            cls = self.expr(exc.func)
            cname = cls.obj.__name__ if isinstance(cls, PyObj) and isinstance(cls.obj, type) else "Exception"
            if not exc.args:
                return cname, ""
            msg = self.value(exc.args[0])
            k = self.constant_of(msg)
            if isinstance(k, str):
                return cname, k
            return cname, self.str_of(msg, exc)
        cls = self.expr(exc)
        if isinstance(cls, PyObj) and isinstance(cls.obj, type):
            return cls.obj.__name__, ""
        raise self.fail(exc, "raise needs an exception class or an exception instance")

    def annotation(self, node: ast.expr) -> Type:
        from kiln.frontend.script.annotations import AnnotationError, from_ast
        try:
            return from_ast(node, self.lookup_python, self.comp.class_type_for)
        except AnnotationError as e:
            raise self.fail(node, str(e)) from None

    def annotation_from_comment(self, comment: str, node: ast.AST) -> Optional[Type]:
        try:
            return self.annotation(ast.parse(comment, mode="eval").body)
        except SyntaxError:
            return None

    def lookup_python(self, dotted: str) -> Any:
        head, *rest = dotted.split(".")
        v = self.scope.get(head)
        obj: Any
        if v is not None:
            return None
        if head in self.closure:
            obj = self.closure[head]
        elif head in self.globals:
            obj = self.globals[head]
        else:
            return self.comp.lookup_type_name(dotted)
        for part in rest:
            obj = getattr(obj, part, None)
            if obj is None:
                return None
        return obj


class _Marker:
    def __init__(self, name: str) -> None:
        self.name = name

    def __repr__(self) -> str:
        return self.name


# TorchScript source's typed builtins: ``unchecked_cast(T, x)`` and ``uninitialized(T)``.
UNCHECKED_CAST = _Marker("unchecked_cast")
UNINITIALIZED = _Marker("uninitialized")


class RangeVal:
    """``range(...)`` being iterated: the trip count and the i-th element."""

    def __init__(self, em: Any, start: Value, stop: Value, step: Value, simple: bool) -> None:
        self.em = em
        self.start, self.step, self.simple = start, step, simple
        if simple:
            self.trip = stop
        else:
            self.trip = em.b.value("aten::__range_length", [start, stop, step], IntType)

    def element(self, i: Value) -> Value:
        if self.simple:
            return i
        return self.em.b.value("aten::__derive_index", [i, self.start, self.step], IntType)


class ZipVal:
    """``zip``/``enumerate`` being iterated."""

    def __init__(self, trip: Value, element: Callable[[Value], Binding]) -> None:
        self.trip = trip
        self.element = element


# -- Python builtins -------------------------------------------------------------------------

def _range(em: Any, args: list[Binding], kwargs: dict[str, Binding], node: ast.AST) -> Any:
    vals = em.values_of(args, node)
    if not 1 <= len(vals) <= 3 or any(v.type != IntType for v in vals):
        raise em.fail(node, "range() takes 1 to 3 int arguments")
    if len(vals) == 1:
        return RangeVal(em, em.b.constant(0), vals[0], em.b.constant(1), True)
    step = vals[2] if len(vals) == 3 else em.b.constant(1)
    return RangeVal(em, vals[0], vals[1], step, False)


def _enumerate(em: Any, args: list[Binding], kwargs: dict[str, Binding], node: ast.AST) -> Any:
    inner = args[0]
    items = em.unrolled_items(inner, node) if not isinstance(inner, (RangeVal, ZipVal)) else None
    start = em.to_value(args[1], node) if len(args) > 1 else em.b.constant(0)
    if items is not None:
        k = em.constant_of(start)
        return Items(tuple(Items((em.b.constant(k + j), it)) for j, it in enumerate(items)))
    trip, element = em.iteration(inner, node)

    def elem(i: Value) -> Binding:
        idx = i if em.constant_of(start) == 0 else em.b.value("aten::add.int", [i, start], IntType)
        return Items((idx, element(i)))
    return ZipVal(trip, elem)


def _zip(em: Any, args: list[Binding], kwargs: dict[str, Binding], node: ast.AST) -> Any:
    unrolled = [em.unrolled_items(a, node) if not isinstance(a, (RangeVal, ZipVal)) else None for a in args]
    if all(u is not None for u in unrolled):
        n = min(len(u) for u in unrolled if u is not None)
        return Items(tuple(Items(tuple(u[j] for u in unrolled if u is not None)) for j in range(n)))
    iters = [em.iteration(a, node) for a in args]
    trip = iters[0][0]
    for t, _ in iters[1:]:
        trip = em.b.value("prim::min.int", [trip, t], IntType)

    def elem(i: Value) -> Binding:
        return Items(tuple(e(i) for _, e in iters))
    return ZipVal(trip, elem)


def _len(em: Any, args: list[Binding], kwargs: dict[str, Binding], node: ast.AST) -> Any:
    if isinstance(args[0], Items):
        return em.b.constant(len(args[0].items))
    if isinstance(args[0], ModuleVal):
        return em.b.constant(len(args[0].info.subs))
    if isinstance(args[0], ObjectVal):
        return em.comp.call_object_method(em, args[0], "__len__", [], {}, node)
    v = em.to_value(args[0], node)
    if isinstance(v.type, NamedTupleType):
        return em.b.constant(len(v.type.elems))
    if isinstance(v.type, TupleType):
        return em.b.constant(len(v.type.elems))
    if isinstance(v.type, TensorType):
        return em.b.value("aten::len.Tensor", [v], IntType)
    return em.op_value("aten::len", [v], {}, node)


def _minmax(which: str) -> Callable[..., Any]:
    def fn(em: Any, args: list[Binding], kwargs: dict[str, Binding], node: ast.AST) -> Any:
        if set(kwargs) == {"key"} and len(args) == 1:
            return em.comp.sorted_by_key(em, args[0], kwargs, node, pick=which)
        if kwargs:
            raise em.fail(node, f"{which}() with default= is not supported; test for an empty "
                                "sequence first")
        if len(args) == 1 and isinstance(args[0], Items):
            args = list(args[0].items)
        vals = em.values_of(args, node)
        if len(vals) == 1:
            v = vals[0]
            if isinstance(v.type, TensorType):
                return em.op_value(f"aten::{which}", [v], {}, node)
            return em.op_value(f"prim::{which}", [v], {}, node)
        if all(isinstance(v.type, TensorType) for v in vals):
            out = vals[0]
            for v in vals[1:]:
                out = em.op_value("aten::maximum" if which == "max" else "aten::minimum", [out, v], {}, node)
            return out
        out = vals[0]
        for v in vals[1:]:
            out = em.op_value(f"prim::{which}", [out, v], {}, node)
        return out
    return fn


def _simple(op: str, arity: Optional[int] = None) -> Callable[..., Any]:
    def fn(em: Any, args: list[Binding], kwargs: dict[str, Binding], node: ast.AST) -> Any:
        vals = em.values_of(args, node)
        kw = {k: em.to_value(v, node) for k, v in kwargs.items()}
        if arity is not None and len(vals) != arity:
            raise em.fail(node, f"{op.split('::')[1]}() takes {arity} argument(s)")
        return em.op_value(op, vals, kw, node)
    return fn


def _cast(target: Type, op: str) -> Callable[..., Any]:
    def fn(em: Any, args: list[Binding], kwargs: dict[str, Binding], node: ast.AST) -> Any:
        if not args:
            return em.b.constant({IntType: 0, FloatType: 0.0, BoolType: False, StrType: ""}[target])
        v = em.to_value(args[0], node)
        if v.type == target and len(args) == 1:
            return v
        if target == BoolType:
            return em.truth(v, node)
        if target == StrType:
            return em.op_value("aten::str", [v], {}, node)
        if isinstance(v.type, TensorType):
            return em.b.value(f"aten::{op}.Tensor", [v], target)
        return em.op_value(f"aten::{op}", em.values_of(args, node), {}, node)
    return fn


def _print(em: Any, args: list[Binding], kwargs: dict[str, Binding], node: ast.AST) -> Any:
    if kwargs:
        raise em.fail(node, "print() with keyword arguments is not supported")
    em.b.op("prim::Print", em.values_of(args, node), [])
    return em.b.constant(None)


def _sum(em: Any, args: list[Binding], kwargs: dict[str, Binding], node: ast.AST) -> Any:
    if isinstance(args[0], Items):
        vals = em.values_of(list(args[0].items), node)
        out = vals[0] if vals else em.b.constant(0)
        for v in vals[1:]:
            out = em.binary("add", out, v, node)
        return out
    v = em.to_value(args[0], node)
    if isinstance(v.type, TensorType):
        return em.op_value("aten::sum", [v], {}, node)
    r = em.op_value("aten::sum", [v], {}, node)
    if len(args) > 1:
        r = em.binary("add", r, em.to_value(args[1], node), node)
    return r


def _list(em: Any, args: list[Binding], kwargs: dict[str, Binding], node: ast.AST) -> Any:
    if not args:
        lst = em.b.value("prim::ListConstruct", [], ListType(TENSOR))
        em.comp.empty_lists.add(lst)
        return lst
    items = em.unrolled_items(args[0], node) if isinstance(args[0], (Items, PyObj)) else None
    if items is not None:
        return em.b.list(em.values_of(items, node))
    if isinstance(args[0], (RangeVal, ZipVal)):
        return em.comp.materialize(em, args[0], node)
    v = em.to_value(args[0], node)
    if v.type == StrType:
        return em.op_value("aten::list", [v], {}, node)
    return em.op_value("aten::list", [v], {}, node)


def _tuple(em: Any, args: list[Binding], kwargs: dict[str, Binding], node: ast.AST) -> Any:
    items = em.unrolled_items(args[0], node) if args else []
    if items is None:
        raise em.fail(node, "tuple() of a sequence whose length is only known at run time is not "
                            "supported: use list(...) instead")
    return em.b.tuple(em.values_of(items, node))


def _dict(em: Any, args: list[Binding], kwargs: dict[str, Binding], node: ast.AST) -> Any:
    if not args and not kwargs:
        d = em.b.dict([], [], DictType(StrType, TENSOR))
        em.comp.empty_lists.add(d)
        return d
    if kwargs and not args:
        keys = [em.b.constant(k) for k in kwargs]
        vals = em.values_of(list(kwargs.values()), node)
        return em.b.dict(keys, vals, DictType(StrType, vals[0].type))
    return em.op_value("aten::dict", em.values_of(args, node), {}, node)


def _sorted(em: Any, args: list[Binding], kwargs: dict[str, Binding], node: ast.AST) -> Any:
    if "key" in kwargs:
        return em.comp.sorted_by_key(em, args[0], kwargs, node)
    v = em.to_value(args[0], node)
    out = em.op_value("aten::sorted", [v], {}, node)
    if "reverse" in kwargs:
        rev = em.to_value(kwargs["reverse"], node)
        if em.constant_of(rev) is True:
            em.op_value("aten::reverse", [out], {}, node)
    return out


def _reversed(em: Any, args: list[Binding], kwargs: dict[str, Binding], node: ast.AST) -> Any:
    items = em.unrolled_items(args[0], node) if isinstance(args[0], (Items,)) else None
    if items is not None:
        return Items(tuple(reversed(items)))
    v = em.to_value(args[0], node)
    out = em.op_value("aten::copy", [v], {}, node)
    em.op_value("aten::reverse", [out], {}, node)
    return out


def _abs(em: Any, args: list[Binding], kwargs: dict[str, Binding], node: ast.AST) -> Any:
    v = em.to_value(args[0], node)
    if isinstance(v.type, TensorType):
        return em.op_value("aten::abs", [v], {}, node)
    return em.op_value("prim::abs", [v], {}, node)


def _round(em: Any, args: list[Binding], kwargs: dict[str, Binding], node: ast.AST) -> Any:
    vals = em.values_of(args, node)
    if isinstance(vals[0].type, TensorType):
        return em.op_value("aten::round", vals, {}, node)
    if len(vals) == 1:
        r = em.op_value("aten::round", vals, {}, node)
        return em.op_value("aten::Int", [r], {}, node) if r.type == FloatType else r
    return em.b.value("prim::kiln_round_ndigits", vals, vals[0].type)


def _anyall(which: str) -> Callable[..., Any]:
    def fn(em: Any, args: list[Binding], kwargs: dict[str, Binding], node: ast.AST) -> Any:
        if isinstance(args[0], Items):
            vals = [em.truth(i, node) for i in args[0].items]
            out = em.b.constant(which == "all")
            for v in vals:
                out = em.op_value("aten::__and__" if which == "all" else "aten::__or__", [out, v], {}, node)
            return out
        v = em.to_value(args[0], node)
        return em.op_value(f"aten::{which}", [v], {}, node)
    return fn


def _with_enter(em: Any, args: list[Binding], kwargs: dict[str, Binding], node: ast.AST) -> Any:
    ctx = args[0]
    if isinstance(ctx, PyObj) and isinstance(ctx.obj, torch.no_grad):
        prev = em.b.value("aten::is_grad_enabled", [], BoolType)
        em.op_value("aten::set_grad_enabled", [em.b.constant(False)], {}, node) if False else \
            em.b.op("aten::_set_grad_enabled", [em.b.constant(False)], [])
        return prev
    if isinstance(ctx, PyObj) and isinstance(ctx.obj, torch.enable_grad):
        prev = em.b.value("aten::is_grad_enabled", [], BoolType)
        em.b.op("aten::_set_grad_enabled", [em.b.constant(True)], [])
        return prev
    raise em.fail(node, "only `with torch.no_grad():` and `with torch.enable_grad():` are supported")


def _with_exit(em: Any, args: list[Binding], kwargs: dict[str, Binding], node: ast.AST) -> Any:
    prev = em.to_value(args[0], node)
    em.b.op("aten::_set_grad_enabled", [prev], [])
    return em.b.constant(None)


def _warn(em: Any, args: list[Binding], kwargs: dict[str, Binding], node: ast.AST) -> Any:
    msg = em.to_value(args[0], node)
    em.op_value("aten::warn", [msg], {}, node)
    return em.b.constant(None)


def _torch_assert(em: Any, args: list[Binding], kwargs: dict[str, Binding], node: ast.AST) -> Any:
    cond = em.truth(args[0], node)
    n = em.b.if_(cond)
    with em.b.at_end(n.blocks[1]):
        msg = em.to_value(args[1], node) if len(args) > 1 else em.b.constant("assertion failed")
        em._raise_value(msg, "AssertionError")
    return em.b.constant(None)


def _fork(em: Any, args: list[Binding], kwargs: dict[str, Binding], node: ast.AST) -> Any:
    result = em.call_with(args[0], list(args[1:]), kwargs, node)
    v = em.to_value(result, node)
    return em.b.value("kiln::future", [v], FutureType(v.type)) if False else \
        em.op_value("aten::_kiln_future", [v], {}, node) if False else em.comp.make_future(em, v)


def _wait(em: Any, args: list[Binding], kwargs: dict[str, Binding], node: ast.AST) -> Any:
    fut = em.to_value(args[0], node)
    if not isinstance(fut.type, FutureType):
        raise em.fail(node, f"wait() needs a Future, got {fut.type.annotation()}")
    return em.op_value("aten::wait", [fut], {}, node)


def _divmod(em: Any, args: list[Binding], kwargs: dict[str, Binding], node: ast.AST) -> Any:
    return em.op_value("aten::divmod", em.values_of(args, node), {}, node)


_CONSTANT_CALLS: dict[Any, Any] = {
    torch.jit.is_scripting: True, torch.jit.is_tracing: False,
    torch._C._get_tracing_state: None,
}

_BUILTINS: dict[Any, Callable[..., Any]] = {
    builtins.range: _range, builtins.enumerate: _enumerate, builtins.zip: _zip, builtins.len: _len,
    builtins.min: _minmax("min"), builtins.max: _minmax("max"), builtins.abs: _abs,
    builtins.sum: _sum, builtins.all: _anyall("all"), builtins.any: _anyall("any"),
    builtins.print: _print, builtins.round: _round, builtins.divmod: _divmod,
    builtins.sorted: _sorted, builtins.reversed: _reversed, builtins.list: _list,
    builtins.tuple: _tuple, builtins.dict: _dict,
    builtins.int: _cast(IntType, "Int"), builtins.float: _cast(FloatType, "Float"),
    builtins.bool: _cast(BoolType, "Bool"), builtins.str: _cast(StrType, "str"),
    builtins.ord: _simple("aten::ord", 1), builtins.chr: _simple("aten::chr", 1),
    builtins.hex: _simple("aten::hex", 1), builtins.bin: _simple("aten::bin", 1),
    builtins.oct: _simple("aten::oct", 1),
    warnings.warn: _warn, torch._assert: _torch_assert,
    torch.jit.fork: _fork, torch.jit.wait: _wait,
    "__kiln_with_enter__": _with_enter, "__kiln_with_exit__": _with_exit,
}
for _name in ("sqrt", "log", "log10", "log1p", "exp", "expm1", "sin", "cos", "tan", "asin", "acos",
              "atan", "sinh", "cosh", "tanh", "asinh", "acosh", "atanh", "erf", "erfc", "gamma",
              "lgamma", "fabs", "floor", "ceil", "trunc", "isnan", "isinf", "isfinite", "degrees",
              "radians", "atan2", "copysign", "fmod", "gcd", "factorial", "pow", "hypot", "log2",
              "remainder", "modf", "frexp", "ldexp", "comb", "perm", "prod", "dist"):
    if hasattr(math, _name):
        _BUILTINS[getattr(math, _name)] = _simple(f"aten::{_name}")
_BUILTINS[math.fabs] = _simple("aten::fabs")
_BUILTINS[math.log] = lambda em, a, k, n: em.op_value("aten::log", em.values_of(a, n), {}, n)


def register_builtin(obj: Any, fn: Callable[..., Any]) -> None:
    _BUILTINS[obj] = fn


def _hashable(obj: Any) -> bool:
    try:
        hash(obj)
        return True
    except TypeError:
        return False


def _is_torch_builtin(obj: Any) -> bool:
    mod = getattr(obj, "__module__", None) or ""
    return callable(obj) and type(obj).__name__ in ("builtin_function_or_method", "method_descriptor",
                                                     "wrapper_descriptor") and \
        (mod.startswith("torch") or getattr(obj, "__self__", None) is not None)


def _is_torch_python(fn: types.FunctionType) -> bool:
    mod = fn.__module__ or ""
    return mod == "torch" or mod.startswith("torch.") and not mod.startswith("torch.testing")


def _name_of(obj: Any) -> str:
    mod = getattr(obj, "__module__", None)
    name = getattr(obj, "__qualname__", None) or getattr(obj, "__name__", None) or repr(obj)
    return f"{mod}.{name}" if mod and mod != "builtins" else str(name)


__all__ = ["CallMixin", "RangeVal", "ZipVal", "register_builtin", "OptionalType", "NoneType"]
