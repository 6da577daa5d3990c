"""Calls: torch operators, Python builtins, methods, compiled Python functions, lambdas.

A mixin of :class:`~kiln.frontend.script.emitter.FunctionEmitter`.  What a call means is
decided here, in one place, from what the callee is while compiling:

* a torch builtin (``torch.add``, ``Tensor.add``, ``torch.ops.ns.op``): an operator node,
  overload chosen by :func:`kiln.frontend.resolve.resolve_typed` from the argument types;
* a Python builtin (``len``, ``range``, ``min`` ...) or ``math`` function: the matching
  TorchScript builtin operator (the table is :mod:`kiln.frontend.script.builtins`);
* a Python function (user code, ``torch.nn.functional``): compiled and inlined at the call
  site with its arguments bound -- compile-time values (a lambda, a module, ``*args``)
  included, so ``F.relu(x, inplace=False)`` compiles to one ``aten::relu``;
* a method of a value (``xs.append``, ``s.lower``): the builtin of that name for its type;
* a module: see :mod:`kiln.frontend.script.modules`; a script-class object:
  :mod:`kiln.frontend.script.compiler`.
"""

from __future__ import annotations

import ast
import builtins
import enum
import types
from collections.abc import Callable
from typing import Any, Optional

import torch

from kiln import syntax
from kiln.errors import CompileError
from kiln.frontend.resolve import _METHOD_ALIASES, operator_name, resolve_typed
from kiln.frontend.script.base import EmitterBase
from kiln.frontend.script.builtins import (
    BUILTINS,
    CONSTANT_CALLS,
    UNCHECKED_CAST,
    UNINITIALIZED,
    AtenName,
    RangeVal,
    ZipVal,
)
from kiln.frontend.script.env import (
    Binding,
    Bound,
    Items,
    LambdaVal,
    ModuleVal,
    ObjectVal,
    PyObj,
    Scope,
    SourceFunction,
    SuperVal,
)
from kiln.frontend.script.exits import WITH_ENTER
from kiln.ir.graph import Value
from kiln.ir.types import (
    TENSOR,
    BoolType,
    DictType,
    FloatType,
    InterfaceType,
    IntType,
    ListType,
    NamedTupleType,
    OptionalType,
    StrType,
    TensorType,
    TupleType,
    Type,
    VarType,
)

# Operators that touch files or the process: code from an archive may not call them, however
# it names them (``torch.from_file``, ``ops.aten.from_file``), used or not.
ARCHIVE_DENIED_OPERATORS = {"aten::from_file": "maps (and with shared=True creates) a file"}

_NO_TORCH_FUNCTION = {"has_torch_function", "has_torch_function_unary", "has_torch_function_variadic",
                      "_has_torch_function", "_has_torch_function_unary", "_has_torch_function_variadic"}


class CallMixin(EmitterBase):
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
        why = ARCHIVE_DENIED_OPERATORS.get(m.op.schema.name) if self.restricted else None
        if why is not None:
            raise self.fail(self.here, f"{m.op.schema.name} {why}; an archive's code cannot call it")
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
        if v.node.kind == "prim::TupleConstruct":
            parts = list(v.node.inputs)
        else:
            parts = self.b.unpack(v, list(v.type.elems))
        elem = parts[0].type if parts else target.elem
        if isinstance(target.elem, (TensorType, VarType)):
            elem = elem if not isinstance(elem, TensorType) else TENSOR
        else:
            elem = target.elem
        return self.b.list(parts, elem)

    def op_value(self, name: str, args: list[Value], kwargs: dict[str, Value],
                 node: Optional[ast.AST]) -> Value:
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
            from kiln.ir.ops import missing_operator_hint
            return f"unknown operator {name}{missing_operator_hint(name)}"
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
            return self.comp.call_module(self.emitter, callee, "forward", args, kwargs, node)
        if isinstance(callee, LambdaVal):
            return self.call_lambda(callee, args, kwargs, node)
        raise self.fail(node, "this value is not callable")

    def check_context_manager(self, expr: ast.expr) -> None:
        """``with C(...):`` where ``C`` is a Python class other than torch's grad modes: refuse
        it before the call would compile the class's ``__init__``."""
        if not isinstance(expr, ast.Call):
            return
        func = self.expr(expr.func)
        if isinstance(func, PyObj) and isinstance(func.obj, type) and \
                func.obj not in (torch.no_grad, torch.enable_grad):
            raise self.fail(expr, f"{_name_of(func.obj)} is not supported as a context manager: only "
                                  "`with torch.no_grad():` and `with torch.enable_grad():` are supported")

    def special_call(self, obj: Any, node: ast.Call) -> Optional[Binding]:
        """Calls whose arguments are types or are not evaluated normally."""
        name = getattr(obj, "__name__", None)
        if obj in (torch.jit.annotate,) or getattr(obj, "_kiln_annotate", False):
            t = self.annotation(node.args[0])
            saved, self.expected_type = self.expected_type, t
            try:
                v = self.value(node.args[1], expected=t)
            finally:
                self.expected_type = saved
            scalar = _TENSOR_TO_SCALAR.get(t) if isinstance(v.type, TensorType) else None
            # TorchScript's annotate converts a one-element tensor to the number type it names
            return self.op_value(scalar, [v], {}, node) if scalar is not None else v
        if obj is isinstance:
            c, _, _ = self.isinstance_check(node)
            return c
        if obj == WITH_ENTER:
            self.check_context_manager(node.args[0])
        if obj is builtins.hasattr:
            return self.hasattr_call(node)
        if obj is builtins.getattr:
            return self.getattr_call(node)
        if name in _NO_TORCH_FUNCTION:
            return self.b.constant(False)
        if obj is UNCHECKED_CAST or obj is UNINITIALIZED:
            t = self.annotation(node.args[0])
            if obj is UNINITIALIZED:
                return self.uninitialized(t)
            v = self.value(node.args[1])
            return self.b.value("prim::unchecked_cast", [v], t)
        if _hashable(obj) and obj in CONSTANT_CALLS:
            return self.b.constant(CONSTANT_CALLS[obj])
        if obj is builtins.super:
            return self.super_value(node)
        return None

    def hasattr_call(self, node: ast.Call) -> Value:
        """``hasattr(x, "name")``: decided while compiling."""
        base = self.expr(node.args[0])
        attr = self.expr(node.args[1])
        if not (isinstance(attr, Value) and isinstance(self.constant_of(attr), str)):
            raise self.fail(node, "hasattr() needs a string constant")
        return self.b.constant(self.comp.has_attribute(self.emitter, base, self.constant_of(attr)))

    def getattr_call(self, node: ast.Call) -> Binding:
        """``getattr(x, "name"[, default])`` with a constant name: the attribute (or the default)."""
        base = self.expr(node.args[0])
        attr = self.value(node.args[1])
        key = self.constant_of(attr)
        if not isinstance(key, str):
            raise self.fail(node, "getattr() needs a string constant as its name")
        if len(node.args) == 3 and not self.comp.has_attribute(self.emitter, base, key):
            return self.expr(node.args[2])
        return self.attribute(base, key, node)

    def call_python(self, obj: Any, args: list[Binding], kwargs: dict[str, Binding],
                    node: ast.AST) -> Binding:
        """Call a Python object known while compiling: an operator, a builtin, a class, a function."""
        if isinstance(obj, AtenName):
            vals = self.values_of(args, node)
            if obj.qualified == "aten::format":
                return self.b.value("aten::format", vals, StrType)
            return self.op_value(obj.qualified, vals, {k: self.to_value(v, node) for k, v in kwargs.items()},
                                 node)
        builtin = BUILTINS.get(obj) if _hashable(obj) else None
        if builtin is not None:
            return builtin(self.emitter, args, kwargs, node)
        if obj in (torch.no_grad, torch.enable_grad):
            return PyObj(obj())
        if isinstance(obj, type):
            return self.comp.construct(self.emitter, obj, args, kwargs, node)
        return self.call_function(obj, args, kwargs, node)

    def call_function(self, obj: Any, args: list[Binding], kwargs: dict[str, Binding],
                      node: ast.AST) -> Binding:
        """A Kiln function (its graph is inlined), a torch operator or a Python function."""
        from kiln.runtime.module import ScriptFunction
        if isinstance(obj, ScriptFunction):
            return self.comp.inline_graph(self.emitter, obj, self.values_of(args, node), node)
        if isinstance(obj, torch.nn.Module):
            raise self.fail(node, "calling a module that is not an attribute of self is not supported; "
                                  "make it a submodule")
        if _is_python_builtin(obj):
            raise self.fail(node, f"the Python builtin {getattr(obj, '__name__', obj)}() is not supported "
                                  "in compiled code")
        if isinstance(obj, (torch._ops.OpOverloadPacket, torch._ops.OpOverload)) or _is_torch_builtin(obj):
            return self.call_torch(obj, args, kwargs, node)
        if isinstance(obj, SourceFunction):   # another function of the same kiln.compile source
            return self.comp.inline_function(self.emitter, obj, args, kwargs, node)
        if isinstance(obj, types.FunctionType):
            if self.restricted:
                raise self.fail(node, f"{_name_of(obj)} cannot be called from an archive's code: it may "
                                      "call operators and the archive's own functions only")
            if _is_torch_python(obj):
                return self.call_torch_python(obj, args, kwargs, node)
            return self.comp.inline_function(self.emitter, obj, args, kwargs, node)
        if isinstance(obj, types.MethodType) and isinstance(obj.__self__, torch.nn.Module):
            raise self.fail(node, "bound methods of other modules cannot be called here")
        hint = ""
        owner = getattr(obj, "__self__", None)
        if "random" in (getattr(obj, "__module__", None), type(owner).__module__):
            hint = "; Python's random module is not supported: use torch.rand / torch.randint / torch.randn"
        raise self.fail(node, f"{_name_of(obj)} cannot be called from compiled code{hint}")

    def call_torch(self, fn: Any, args: list[Binding], kwargs: dict[str, Binding],
                   node: ast.AST) -> Value:
        named = operator_name(fn)
        if named is None:
            raise self.fail(node, f"{_name_of(fn)} is not a torch operator")
        name, swap = named
        vals = self.values_of(args, node)
        if swap:
            vals = vals[::-1]
        kw = {k: self.to_value(v, node) for k, v in kwargs.items()}
        if name == "aten::as_tensor":
            name = "aten::tensor"
        return self.op_value(name, vals, kw, node)

    def call_torch_python(self, fn: Any, args: list[Binding], kwargs: dict[str, Binding],
                          node: ast.AST) -> Binding:
        """A Python-level torch function: compile its body; if that fails, its ATen namesake."""
        mod = getattr(fn, "__module__", "") or ""
        name = fn.__name__
        vals = None
        if not mod.startswith("torch.nn.functional"):
            vals = self.values_of(args, node)
            r = self.try_op(f"aten::{name}", vals, {k: self.to_value(v, node) for k, v in kwargs.items()})
            if r is None and len(vals) > 1 and all(isinstance(v.type, TensorType) for v in vals[1:]):
                # torch.einsum("ij,jk", a, b): trailing tensors are the operator's Tensor[]
                packed = [vals[0], self.b.list(vals[1:], TENSOR)]
                r = self.try_op(f"aten::{name}", packed,
                                {k: self.to_value(v, node) for k, v in kwargs.items()})
            if r is not None:
                return r
        try:
            return self.comp.inline_function(self.emitter, fn, args, kwargs, node)
        except CompileError:
            if vals is None:
                vals = self.values_of(args, node)
            r = self.try_op(f"aten::{name.lstrip('_')}", vals,
                            {k: self.to_value(v, node) for k, v in kwargs.items()})
            if r is not None:
                return r
            raise

    # -- methods -------------------------------------------------------------------------
    def call_method(self, m: Bound, args: list[Binding], kwargs: dict[str, Binding],
                    node: ast.AST) -> Binding:
        base = m.base
        if isinstance(base, SuperVal):
            return self.comp.call_super(self.emitter, base, m.name, args, kwargs, node)
        if isinstance(base, ModuleVal):
            return self.comp.call_module(self.emitter, base, m.name, args, kwargs, node)
        if isinstance(base, ObjectVal):
            return self.comp.call_object_method(self.emitter, base, m.name, args, kwargs, node)
        if isinstance(base, Items):
            return self.items_method(base, m.name, node)
        if isinstance(base, PyObj) and m.name == "__new__" and isinstance(base.obj, type):
            info = self.comp.class_info(base.obj)
            return ObjectVal(self.b.value("prim::CreateObject", [], info.type, cls=info.runtime), info)
        if not isinstance(base, Value):
            raise self.fail(node, f"cannot call method {m.name!r} here")
        if isinstance(base.type, InterfaceType):
            return self.comp.call_interface(self.emitter, base, m.name, args, kwargs, node)
        vals = self.values_of(args, node)
        kw = {k: self.to_value(v, node) for k, v in kwargs.items()}
        return self.value_method(base, m.name, vals, kw, node)

    def value_method(self, base: Value, name: str, vals: list[Value], kw: dict[str, Value],
                     node: ast.AST) -> Value:
        """``x.name(...)`` on an IR value: the builtin operator of that name for its type."""
        t = base.type
        if isinstance(t, TensorType):
            return self.tensor_method(base, name, vals, kw, node)
        if t == StrType and name == "format":
            return self.b.value("aten::format", [base, *vals], StrType)
        if isinstance(t, DictType) and name in ("get", "pop", "setdefault"):
            return self.op_value(f"aten::{name}", [base, *vals], kw, node)
        if isinstance(t, ListType) and name == "sort" and "reverse" in kw:
            return self.op_value("aten::sort", [base], {"reverse": kw["reverse"]}, node)
        if isinstance(t, ListType) and isinstance(t.elem, InterfaceType):
            for v in vals:        # a script-class object put in a list of an interface must implement it
                self.check_implements(v, t.elem, node, f"an element of {t.annotation()}")
        if isinstance(t, ListType) and base in self.comp.empty_lists and name in ("append", "insert") \
                and vals:
            # An unannotated `[]` takes the type of the first element appended.
            self.comp.empty_lists.discard(base)
            base.type = ListType(vals[-1].type)
        r = self.try_op(f"aten::{name}", [base, *vals], kw)
        if r is None:
            raise self.fail(node, f"{t.annotation()} has no method {name!r} taking "
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

    def tensor_method(self, base: Value, name: str, vals: list[Value], kw: dict[str, Value],
                      node: ast.AST) -> Value:
        alias = _METHOD_ALIASES.get(name)
        if alias is not None and not vals and not kw:
            op, extra = alias
            kw = {k: self.b.constant(v) for k, v in extra.items()}
            if op == "to" and "device" in kw:
                dtype = self.b.value("prim::dtype", [base], IntType)
                return self.op_value("aten::to", [base, kw["device"], dtype], {}, node)
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
            return self.op_value("aten::item", [base], {}, node)
        if name == "tolist":
            expected = self.expected_type
            if expected is None:
                raise self.fail(node, "Tensor.tolist() needs its result type: annotate the "
                                      "assignment, e.g. `xs: List[float] = t.tolist()`")
            return self.b.value("aten::tolist", [base], expected)
        return self.op_value(f"aten::{name}", [base, *vals], kw, node)

    # -- lambdas -------------------------------------------------------------------------
    def call_lambda(self, lam: LambdaVal, args: list[Binding], kwargs: dict[str, Binding],
                    node: ast.AST) -> Binding:
        params = [a.arg for a in lam.node.args.args]
        if len(args) != len(params) or kwargs:
            raise self.fail(node, f"the lambda takes {len(params)} argument(s), "
                                  f"got {len(args) + len(kwargs)}")
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
            return self.comp.module_items(self.emitter, it, node)
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

    def unpack_for_assignment(self, value: Binding, where: ast.AST, n: int,
                              star: Optional[int]) -> list[Binding]:
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
                rows = self.b.value("aten::unbind.int", [v, self.b.constant(0)], ListType(TENSOR))
                parts = list(self.b.unpack(rows, [TENSOR] * n))
            else:
                how = " with a starred target; unpack a tuple" if star is not None else ""
                raise self.fail(where, f"cannot unpack a value of type {v.type.annotation()}{how}")
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
        start, step = self.b.constant(star), self.b.constant(1)
        out.append(self.op_value("aten::slice", [v, start, end, step], {}, where))
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
            return self.annotation(syntax.parse(comment, mode="eval").body)
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


def _hashable(obj: Any) -> bool:
    try:
        hash(obj)
        return True
    except TypeError:
        return False


def _is_python_builtin(obj: Any) -> bool:
    """A Python builtin with no compiled meaning (``open``, ``iter`` ...)."""
    return _hashable(obj) and (getattr(obj, "__module__", None) == "builtins"
                               or obj in vars(builtins).values())


def _is_torch_builtin(obj: Any) -> bool:
    """A C function of torch's (``torch.add``, ``torch._C._nn.linear``, a Tensor method)."""
    if not callable(obj) or type(obj).__name__ not in ("builtin_function_or_method", "method_descriptor",
                                                        "wrapper_descriptor"):
        return False
    owner = getattr(obj, "__self__", None)
    owner_mod = owner.__name__ if isinstance(owner, types.ModuleType) else \
        getattr(owner, "__module__", None) or type(owner).__module__
    mod = getattr(obj, "__module__", None) or ""
    return mod.startswith("torch") or (owner is not None and str(owner_mod).startswith("torch"))


_TENSOR_TO_SCALAR: dict[Type, str] = {IntType: "aten::Int", FloatType: "aten::Float", BoolType: "aten::Bool"}


def _is_torch_python(fn: types.FunctionType) -> bool:
    mod = fn.__module__ or ""
    return mod == "torch" or mod.startswith("torch.") and not mod.startswith("torch.testing")


def _name_of(obj: Any) -> str:
    mod = getattr(obj, "__module__", None)
    name = getattr(obj, "__qualname__", None) or getattr(obj, "__name__", None) or repr(obj)
    return f"{mod}.{name}" if mod and mod != "builtins" else str(name)


__all__ = ["CallMixin"]
