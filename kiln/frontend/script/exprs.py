"""Expressions: operators, conditions, subscripts, displays, comprehensions, f-strings.

A mixin of :class:`~kiln.frontend.script.emitter.FunctionEmitter`.  ``expr`` returns a
binding (an IR value or a compile-time value); ``value`` insists on an IR value.  Python
operators on tensors resolve through the same resolver the tracer uses
(:func:`kiln.frontend.resolve.resolve_typed`), so ``x + y`` becomes the same node whichever
frontend saw it.
"""

from __future__ import annotations

import ast
import enum
import types
from typing import Any, Optional

import torch

from kiln.frontend.script.base import EmitterBase
from kiln.frontend.script.builtins import AtenName
from kiln.frontend.script.env import (
    Binding,
    Bound,
    Items,
    LambdaVal,
    ModuleVal,
    ObjectVal,
    PyObj,
    SuperVal,
    Undefined,
)
from kiln.ir.graph import Value
from kiln.ir.types import (
    TENSOR,
    AnyType,
    BoolType,
    ClassType,
    DeviceType,
    DictType,
    DtypeType,
    EnumType,
    FloatType,
    InterfaceType,
    IntType,
    ListType,
    NamedTupleType,
    NoneType,
    NumberType,
    OptionalType,
    StrType,
    TensorType,
    TupleType,
    Type,
    UnionType,
    accepts,
    is_subtype,
    type_of_value,
    unify,
)

_BINOPS: dict[type, str] = {
    ast.Add: "add", ast.Sub: "sub", ast.Mult: "mul", ast.Div: "div", ast.FloorDiv: "floordiv",
    ast.Mod: "remainder", ast.Pow: "pow", ast.MatMult: "matmul", ast.BitAnd: "__and__",
    ast.BitOr: "__or__", ast.BitXor: "__xor__", ast.LShift: "__lshift__", ast.RShift: "__rshift__",
}
# Tensor spellings where they differ from the scalar operator names.
_TENSOR_BINOPS = {"floordiv": "floor_divide", "__and__": "bitwise_and", "__or__": "bitwise_or",
                  "__xor__": "bitwise_xor"}
_INPLACE = {"add": "add_", "sub": "sub_", "mul": "mul_", "div": "div_", "pow": "pow_",
            "remainder": "remainder_", "floordiv": "floor_divide_", "__and__": "bitwise_and_",
            "__or__": "bitwise_or_", "__xor__": "bitwise_xor_", "matmul": "matmul"}
_COMPARE: dict[type, str] = {ast.Eq: "eq", ast.NotEq: "ne", ast.Lt: "lt", ast.LtE: "le",
                             ast.Gt: "gt", ast.GtE: "ge"}
_SWAPPED = {"lt": "gt", "gt": "lt", "le": "ge", "ge": "le", "eq": "eq", "ne": "ne"}

# Tensor properties: the operator that reads each, and its result type.
_TENSOR_PROPS: dict[str, tuple[str, Type]] = {
    "shape": ("aten::size", ListType(IntType)), "dtype": ("prim::dtype", DtypeType),
    "device": ("prim::device", DeviceType), "ndim": ("aten::dim", IntType),
    "is_cuda": ("prim::is_cuda", BoolType), "requires_grad": ("prim::requires_grad", BoolType),
    "data": ("prim::data", TENSOR), "T": ("aten::numpy_T", TENSOR),
    "mT": ("aten::mT", TENSOR), "grad": ("prim::grad", OptionalType(TENSOR)),
    "is_leaf": ("aten::is_leaf", BoolType), "layout": ("prim::layout", IntType),
}

Refinements = dict[str, Type]


def is_tensor(t: Type) -> bool:
    return isinstance(t, TensorType)


class ExprMixin(EmitterBase):
    # -- entry points ------------------------------------------------------------------
    def expr(self, node: ast.expr, expected: Optional[Type] = None) -> Binding:
        self.at(node)
        method = getattr(self, "expr_" + type(node).__name__, None)
        if method is None:
            raise self.fail(node, f"{type(node).__name__} expressions are not supported in compiled code")
        if expected is not None and isinstance(node, (ast.List, ast.Dict, ast.ListComp, ast.DictComp)):
            result: Binding = method(node, expected)
        else:
            result = method(node)
        return result

    def value(self, node: ast.expr, expected: Optional[Type] = None) -> Value:
        return self.to_value(self.expr(node, expected), node)

    def to_value(self, b: Binding, where: Optional[ast.AST]) -> Value:
        if isinstance(b, Value):
            return b
        if isinstance(b, (ModuleVal, ObjectVal)):
            return b.value
        if isinstance(b, PyObj):
            return self.constant_value(b.obj, where)
        if isinstance(b, Items) and b.keys is None:
            vals = [self.to_value(i, where) for i in b.items]
            return self.b.tuple(vals)
        if isinstance(b, Undefined):
            raise self.fail(where, b.why)
        what = {Bound: "a method", LambdaVal: "a lambda", SuperVal: "super()", Items: "a module container"}
        raise self.fail(where, f"{what.get(type(b), type(b).__name__)} cannot be used as a value here")

    def constant_value(self, obj: Any, where: Optional[ast.AST]) -> Value:
        if isinstance(obj, (bool, int, float, str, complex, type(None), torch.device, torch.dtype,
                            torch.layout, torch.memory_format)):
            return self.b.constant(obj)
        if isinstance(obj, enum.Enum):
            return self.b.constant(obj, self.comp.enum_type(type(obj)))
        if isinstance(obj, tuple) and not hasattr(obj, "_fields"):
            return self.b.tuple([self.constant_value(x, where) for x in obj])
        if isinstance(obj, list) and all(isinstance(x, (int, float, str, bool)) for x in obj):
            t = type_of_value(obj)
            return self.b.value("prim::ListConstruct", [self.constant_value(x, where) for x in obj], t)
        if isinstance(obj, torch.Tensor):
            return self.b.constant(obj)
        raise self.fail(where, f"the Python value {_short(obj)} cannot be used in compiled code: only "
                               "numbers, strings, tensors, devices, dtypes and tuples/lists of those "
                               "can be captured")

    # -- leaves ------------------------------------------------------------------------
    def expr_Constant(self, node: ast.Constant) -> Binding:
        if node.value is Ellipsis:
            return PyObj(Ellipsis)
        if isinstance(node.value, bytes):
            raise self.fail(node, "bytes literals are not supported; use a str")
        return self.b.constant(node.value)

    def expr_Name(self, node: ast.Name) -> Binding:
        return self.lookup_name(node)

    def expr_NamedExpr(self, node: ast.NamedExpr) -> Binding:
        v = self.expr(node.value)
        self.assign(node.target, v, node, None)
        return v

    def expr_Starred(self, node: ast.Starred) -> Binding:
        raise self.fail(node, "a starred expression is only allowed in a call or an assignment target")

    # -- operators ---------------------------------------------------------------------
    def expr_BinOp(self, node: ast.BinOp) -> Binding:
        name = _BINOPS.get(type(node.op))
        if name is None:
            raise self.fail(node, f"operator {type(node.op).__name__} is not supported")
        a, b = self.value(node.left), self.value(node.right)
        return self.binary(name, a, b, node)

    def binary(self, name: str, a: Value, b: Value, node: ast.AST) -> Value:
        if isinstance(a.type, ClassType):
            info = self.comp.class_info_by_name(a.type.qualname)
            dunder = "__" + {"add": "add", "sub": "sub", "mul": "mul", "div": "truediv",
                             "floordiv": "floordiv", "remainder": "mod", "pow": "pow",
                             "matmul": "matmul"}.get(name, name.strip("_")) + "__"
            if info is not None and hasattr(info.cls, dunder):
                result = self.comp.call_object_method(self.emitter, ObjectVal(a, info), dunder, [b], {}, node)
                return self.to_value(result, node)
        if is_tensor(a.type) or is_tensor(b.type):
            op = _TENSOR_BINOPS.get(name, name)
            if op == "floor_divide" or op == "remainder" or is_tensor(a.type):
                r = self.try_op(f"aten::{op}", [a, b], {})
                if r is not None:
                    return r
            return self.reflected(op, a, b, node)
        if name == "pow" and a.type == IntType and b.type == IntType:
            # Python's int ** int is an int (for the non-negative exponents it is used with);
            # TorchScript makes it a float.
            return self.b.value("aten::pow.int_to_int", [a, b], IntType)
        r = self.try_op(f"aten::{name}", [a, b], {})
        if r is None:
            raise self.fail(node, f"unsupported operand types for {_symbol(name)}: "
                                  f"{a.type.annotation()} and {b.type.annotation()}"
                                  + optional_hint([a, b]))
        return r

    def reflected(self, op: str, a: Value, b: Value, node: ast.AST) -> Value:
        """``scalar <op> tensor``: Python calls the tensor's reflected method."""
        if op in ("add", "mul", "bitwise_and", "bitwise_or", "bitwise_xor"):
            r = self.try_op(f"aten::{op}", [b, a], {})
        elif op == "sub":
            r = self.try_op("aten::rsub", [b, a], {})
        elif op == "div":
            recip = self.op_value("aten::reciprocal", [b], {}, node)
            r = self.try_op("aten::mul", [recip, a], {})
        else:
            r = self.try_op(f"aten::{op}", [a, b], {})
            if r is None:
                t = self.op_value("aten::scalar_tensor", [a], {}, node)
                r = self.try_op(f"aten::{op}", [t, b], {})
        if r is None:
            raise self.fail(node, f"unsupported operand types for {_symbol(op)}: {a.type.annotation()} and "
                                  f"{b.type.annotation()}" + optional_hint([a, b]))
        return r

    def augmented(self, load: ast.expr, op: ast.operator, rhs: ast.expr, where: ast.AST) -> Value:
        name = _BINOPS[type(op)]
        cur = self.value(load)
        v = self.value(rhs)
        if is_tensor(cur.type) and name in _INPLACE:
            # In-place, as in Python: `x += y` changes the tensor everyone holding it sees.
            r = self.try_op(f"aten::{_INPLACE[name]}", [cur, v], {})
            if r is not None:
                return r
        if isinstance(cur.type, ListType) and name == "add":
            self.op_value("aten::extend", [cur, v], {}, where)
            return cur
        return self.binary(name, cur, v, where)

    def expr_UnaryOp(self, node: ast.UnaryOp) -> Binding:
        if isinstance(node.op, ast.Not):
            cond, _, _ = self.condition(node)
            return cond
        v = self.value(node.operand)
        if isinstance(node.op, ast.UAdd):
            return v
        c = self.constant_of(v)
        if isinstance(node.op, ast.USub) and isinstance(c, (int, float)) and not isinstance(c, bool):
            return self.b.constant(-c)
        name = {ast.USub: "neg", ast.Invert: "bitwise_not"}[type(node.op)]
        if name == "bitwise_not" and not is_tensor(v.type):
            name = "__invert__"
        return self.op_value(f"aten::{name}", [v], {}, node)

    def expr_Compare(self, node: ast.Compare) -> Binding:
        result, _, _ = self.compare(node)    # a tensor comparison stays a tensor
        return result

    def expr_BoolOp(self, node: ast.BoolOp) -> Binding:
        cond, _, _ = self.condition(node)
        return cond

    def expr_IfExp(self, node: ast.IfExp) -> Binding:
        cond, t_refs, f_refs = self.condition(node.test)
        const = self.constant_of(cond)
        if const is True or const is False:
            return self.expr(node.body if const else node.orelse)
        n = self.b.if_(cond)
        outer = self.scope
        vals: list[Value] = []
        for block, e, refs in ((n.blocks[0], node.body, t_refs), (n.blocks[1], node.orelse, f_refs)):
            self.scope = outer.child()
            with self.b.at_end(block):
                self.apply_refinements(refs)
                vals.append(self.value(e))
            self.scope = outer
        t = unify(vals[0].type, vals[1].type)
        if t is None:
            raise self.fail(node, f"the two sides of the conditional expression have types "
                                  f"{vals[0].type.annotation()} and {vals[1].type.annotation()}")
        for block, v in zip(n.blocks, vals):
            block.register_output(v)
        return n.add_output(t)

    # -- conditions and refinement -------------------------------------------------------
    def condition(self, node: ast.expr) -> tuple[Value, Refinements, Refinements]:
        """A bool value for ``node``, and the refinements that hold when it is true / false."""
        if isinstance(node, ast.UnaryOp) and isinstance(node.op, ast.Not):
            c, t, f = self.condition(node.operand)
            k = self.constant_of(c)
            if isinstance(k, bool):
                return self.b.constant(not k), f, t
            return self.b.value("aten::__not__", [c], BoolType), f, t
        if isinstance(node, ast.BoolOp):
            return self.bool_op(node)
        if isinstance(node, ast.Compare):
            c, t, f = self.compare(node)
            return self.truth(c, node), t, f
        if isinstance(node, ast.Call) and isinstance(node.func, ast.Name) and node.func.id == "isinstance" \
                and len(node.args) == 2:
            return self.isinstance_check(node)
        v = self.expr(node)
        return self.truth(v, node), {}, {}

    def truth(self, b: Binding, node: ast.AST) -> Value:
        if isinstance(b, PyObj) and not isinstance(b.obj, (torch.Tensor,)):
            return self.b.constant(bool(b.obj))
        v = self.to_value(b, node)
        t = v.type
        if t == BoolType:
            return v
        if is_tensor(t):
            return self.b.value("aten::Bool.Tensor", [v], BoolType)
        if t == IntType:
            return self.op_value("aten::Bool", [v], {}, node)
        if t == FloatType:
            return self.op_value("aten::Bool", [v], {}, node)
        if t == NoneType:
            return self.b.constant(False)
        if t == StrType or isinstance(t, (ListType, DictType)):
            n = self.op_value("aten::len", [v], {}, node)
            return self.op_value("aten::ne", [n, self.b.constant(0)], {}, node)
        if isinstance(t, OptionalType):
            raise self.fail(node, f"the truth value of an {t.annotation()} is ambiguous here; write "
                                  "`x is not None` (and test the value separately)")
        raise self.fail(node, f"a value of type {t.annotation()} cannot be used as a condition")

    def bool_op(self, node: ast.BoolOp) -> tuple[Value, Refinements, Refinements]:
        is_and = isinstance(node.op, ast.And)
        first, t_refs, f_refs = self.condition(node.values[0])
        if len(node.values) == 1:
            return first, t_refs, f_refs
        rest = ast.copy_location(ast.BoolOp(op=node.op, values=node.values[1:]), node)
        k = self.constant_of(first)
        if isinstance(k, bool):
            if k == is_and:        # True and rest / False or rest -> rest
                outer = self.scope
                self.scope = outer.child()
                self.apply_refinements(t_refs if is_and else f_refs)
                try:
                    c, t2, f2 = self.condition(rest)
                finally:
                    self.scope = outer
                return c, ({**t_refs, **t2} if is_and else t2), (f2 if is_and else {**f_refs, **f2})
            return first, t_refs, f_refs
        n = self.b.if_(first)
        outer = self.scope
        self.scope = outer.child()
        with self.b.at_end(n.blocks[0] if is_and else n.blocks[1]):
            self.apply_refinements(t_refs if is_and else f_refs)
            second, t2, f2 = self.condition(rest)
            (n.blocks[0] if is_and else n.blocks[1]).register_output(second)
        self.scope = outer
        with self.b.at_end(n.blocks[1] if is_and else n.blocks[0]):
            (n.blocks[1] if is_and else n.blocks[0]).register_output(self.b.constant(not is_and))
        out = n.add_output(BoolType)
        if is_and:
            return out, {**t_refs, **t2}, {}
        return out, {}, {**f_refs, **f2}

    def compare(self, node: ast.Compare) -> tuple[Value, Refinements, Refinements]:
        if len(node.ops) > 1:
            # a < b < c  ->  (a < b) and (b < c), evaluating b once
            parts: list[ast.expr] = []
            left = node.left
            for op, right in zip(node.ops, node.comparators):
                parts.append(ast.copy_location(ast.Compare(left=left, ops=[op], comparators=[right]), node))
                left = right
            return self.bool_op(ast.copy_location(ast.BoolOp(op=ast.And(), values=parts), node))
        op, right = node.ops[0], node.comparators[0]
        if isinstance(op, (ast.Is, ast.IsNot)):
            return self.identity(node.left, right, isinstance(op, ast.IsNot), node)
        if isinstance(op, (ast.In, ast.NotIn)):
            return self.membership(node.left, right, isinstance(op, ast.NotIn), node), {}, {}
        a_b = self.expr(node.left)
        b_b = self.expr(right)
        name = _COMPARE[type(op)]
        folded = _fold_compare(a_b, b_b, name, self)
        if folded is not None:
            return self.b.constant(folded), {}, {}
        a, b = self.to_value(a_b, node.left), self.to_value(b_b, right)
        return self.compare_values(name, a, b, node), {}, {}

    def membership(self, item: ast.expr, container_expr: ast.expr, negate: bool, node: ast.AST) -> Value:
        """``item in container`` (``not in`` when ``negate``); a ``**kwargs`` key test is
        decided while compiling."""
        container = self.expr(container_expr)
        if isinstance(container, Items) and container.keys is not None:
            key = self.constant_of(self.value(item))
            return self.b.constant((key in container.keys) != negate)
        v = self.contains(item, container_expr, node)
        if negate:
            v = self.b.value("aten::__not__", [v], BoolType)
        return v

    def compare_values(self, name: str, a: Value, b: Value, node: ast.AST) -> Value:
        """``a <op> b`` for IR values (``name`` is ``eq``, ``lt`` ...): an operator, or the
        comparison dunder of a script class."""
        if a.type == DtypeType:
            b = self.enum_constant(b, DtypeType)      # TorchScript source spells dtypes as ints
        elif b.type == DtypeType:
            a = self.enum_constant(a, DtypeType)
        if isinstance(a.type, EnumType) and isinstance(b.type, EnumType) and name in ("eq", "ne"):
            return self.b.value(f"aten::{name}.enum", [a, b], BoolType)
        if isinstance(a.type, ClassType) and name in ("eq", "ne", "lt", "le", "gt", "ge"):
            info = self.comp.class_info_by_name(a.type.qualname)
            dunder = f"__{name}__"
            if info is not None and hasattr(info.cls, dunder) and dunder in _user_dunders(info.cls):
                result = self.comp.call_object_method(self.emitter, ObjectVal(a, info), dunder, [b], {}, node)
                return self.truth(result, node)
        if is_tensor(b.type) and not is_tensor(a.type):
            a, b, name = b, a, _SWAPPED[name]
        r = self.try_op(f"aten::{name}", [a, b], {})
        if r is None:
            raise self.fail(node, f"cannot compare {a.type.annotation()} and {b.type.annotation()} "
                                  f"with {_symbol(name)}")
        return r

    def identity(self, left: ast.expr, right: ast.expr, negate: bool,
                 node: ast.AST) -> tuple[Value, Refinements, Refinements]:
        lb, rb = self.expr(left), self.expr(right)
        if isinstance(rb, PyObj) and rb.obj is None or (isinstance(rb, Value) and rb.type == NoneType):
            return self.none_check(left, lb, negate, node)
        if isinstance(lb, PyObj) and lb.obj is None or (isinstance(lb, Value) and lb.type == NoneType):
            return self.none_check(right, rb, negate, node)
        a, b = self.to_value(lb, left), self.to_value(rb, right)
        r = self.op_value("aten::__isnot__" if negate else "aten::__is__", [a, b], {}, node)
        return r, {}, {}

    def none_check(self, expr: ast.expr, b: Binding, negate: bool,
                   node: ast.AST) -> tuple[Value, Refinements, Refinements]:
        if not isinstance(b, Value):
            known = isinstance(b, PyObj) and b.obj is None
            return self.b.constant(known != negate), {}, {}
        t = b.type
        if t == NoneType or not isinstance(t, (OptionalType, UnionType)) and t != AnyType:
            # Known while compiling: a None-typed value is None, a non-Optional one is not.
            return self.b.constant((t == NoneType) != negate), {}, {}
        refs_not_none: Refinements = {}
        name = expr.id if isinstance(expr, ast.Name) else None
        if name is not None:
            inner = _without_none(t)
            if inner is not None:
                refs_not_none[name] = inner
        none = self.b.constant(None)
        r = self.b.value("aten::__isnot__" if negate else "aten::__is__", [b, none], BoolType)
        # Nothing is learned when the value is None: it is not narrowed to NoneType.
        return (r, refs_not_none, {}) if negate else (r, {}, refs_not_none)

    def isinstance_check(self, node: ast.Call) -> tuple[Value, Refinements, Refinements]:
        b = self.expr(node.args[0])
        types = self.isinstance_types(node.args[1])
        if not isinstance(b, Value):
            obj = b.obj if isinstance(b, PyObj) else None
            pyt = tuple(t for t in types if isinstance(t, type))
            return self.b.constant(bool(pyt) and isinstance(obj, pyt)), {}, {}
        irtypes = [self.comp.type_of_class(t, node) for t in types]
        t = b.type
        members = list(t.elems) if isinstance(t, UnionType) else \
            ([t.elem, NoneType] if isinstance(t, OptionalType) else [t])
        matching = [m for m in members if any(_isinstance_fits(m, it) for it in irtypes)]
        name = node.args[0].id if isinstance(node.args[0], ast.Name) else None
        if len(matching) == len(members) and t != AnyType:
            return self.b.constant(True), {}, {}
        if not matching and t != AnyType:
            return self.b.constant(False), {}, {}
        # Decided at run time: a Union/Optional (or Any) value.
        refine_true = _union_of(matching) if matching and t != AnyType else \
            (irtypes[0] if len(irtypes) == 1 else None)
        rest = [m for m in members if m not in matching]
        refine_false = _union_of(rest) if rest and t != AnyType else None
        r = self.b.value("prim::isinstance", [b], BoolType,
                         types=tuple(str(it) for it in irtypes))
        tr = {name: refine_true} if name and refine_true is not None else {}
        fr = {name: refine_false} if name and refine_false is not None else {}
        return r, tr, fr

    def isinstance_types(self, node: ast.expr) -> list[Any]:
        if isinstance(node, ast.Tuple):
            return [t for e in node.elts for t in self.isinstance_types(e)]
        if isinstance(node, ast.Subscript):
            return [self.annotation(node)]     # List[int], Dict[str, Tensor] ...
        b = self.expr(node)
        if isinstance(b, PyObj):
            return [b.obj]
        raise self.fail(node, "isinstance() needs a type (or a tuple of types) known while compiling")

    def contains(self, item: ast.expr, container: ast.expr, node: ast.AST) -> Value:
        c = self.value(container)
        if isinstance(c.type, ClassType):
            info = self.comp.class_info_by_name(c.type.qualname)
            if info is not None and hasattr(info.cls, "__contains__"):
                r = self.comp.call_object_method(self.emitter, ObjectVal(c, info), "__contains__",
                                                 [self.value(item)], {}, node)
                return self.to_value(r, node)
        x = self.value(item)
        if isinstance(c.type, DictType):
            return self.op_value("aten::__contains__", [c, x], {}, node)
        if c.type == StrType:
            found = self.op_value("aten::find", [c, x], {}, node)
            return self.op_value("aten::ne", [found, self.b.constant(-1)], {}, node)
        if isinstance(c.type, ListType):
            return self.op_value("aten::__contains__", [c, x], {}, node)
        if isinstance(c.type, TupleType):
            parts = self.b.unpack(c, list(c.type.elems))
            result: Optional[Value] = None
            for p in parts:
                if p.type == x.type or accepts(p.type, x.type):
                    eq = self.op_value("aten::eq", [p, x], {}, node)
                    result = eq if result is None else self.op_value("aten::__or__", [result, eq], {}, node)
            return result if result is not None else self.b.constant(False)
        if is_tensor(c.type):
            eq = self.op_value("aten::eq", [c, x], {}, node)
            return self.b.value("aten::Bool.Tensor", [self.op_value("aten::any", [eq], {}, node)], BoolType)
        raise self.fail(node, f"`in` is not supported for {c.type.annotation()}")

    # -- conversions ---------------------------------------------------------------------
    def convert(self, v: Value, t: Type, where: Optional[ast.AST], what: str) -> Value:
        if v in self.uninit:
            return v
        self.check_implements(v, t, where, what)
        if is_subtype(v.type, t):
            return v
        if isinstance(t, TupleType) and isinstance(v.type, TupleType) and len(t.elems) == len(v.type.elems):
            parts = list(v.node.inputs) if v.node.kind == "prim::TupleConstruct" else \
                self.b.unpack(v, list(v.type.elems))
            conv = [self.convert(p, e, where, what) for p, e in zip(parts, t.elems)]
            if all(a is b for a, b in zip(conv, parts)) and accepts(t, v.type):
                return v
            return self.b.tuple(conv)
        if isinstance(t, ListType) and isinstance(v.type, TupleType) and v.type.elems:
            # TorchScript's implicit conversion: a tuple whose elements fit is a list
            parts = list(v.node.inputs) if v.node.kind == "prim::TupleConstruct" else \
                self.b.unpack(v, list(v.type.elems))
            conv = [self.convert(p, t.elem, where, what) for p in parts]
            return self.b.list(conv, t.elem)
        if v.type == NumberType and t in (FloatType, IntType, BoolType):
            op = {FloatType: "aten::Float.Scalar", IntType: "aten::Int.Scalar",
                  BoolType: "aten::Bool.Scalar"}[t]
            return self.b.value(op, [v], t)
        if t == FloatType and v.type == IntType:
            return self.b.value("aten::Float.int", [v], FloatType) if self.constant_of(v) is ... \
                else self.b.constant(float(self.constant_of(v)))
        if accepts(t, v.type) or (isinstance(t, (ListType, DictType)) and _empty_container(v)):
            if _empty_container(v):
                v.type = t      # an empty [] / {} takes the annotated type
            return v
        hint = ""
        if isinstance(v.type, OptionalType) and is_subtype(v.type.elem, t):
            who = v.name if v.name and v.name.isidentifier() else "x"
            hint = f"; it is {v.type.annotation()} here: refine it first with `if {who} is not None:`"
        raise self.fail(where, f"{what} is expected to be {t.annotation()}, but it is "
                               f"{v.type.annotation()}{hint}")

    def check_implements(self, v: Value, t: Type, where: Optional[ast.AST], what: str) -> None:
        """A script-class object going where an interface (or an Optional one) is expected: its
        class must implement the interface (then it is a subtype of it)."""
        target = t.elem if isinstance(t, OptionalType) else t
        if isinstance(target, InterfaceType) and isinstance(v.type, ClassType) and \
                not isinstance(v.type, InterfaceType):
            info = self.comp.class_info_by_name(v.type.qualname)
            if info is not None:
                self.comp.require_implements(info, target, where, what)

    def str_of(self, v: Value, node: ast.AST) -> Value:
        if v.type == StrType:
            return v
        return self.op_value("aten::str", [v], {}, node)

    # -- attributes --------------------------------------------------------------------
    def expr_Attribute(self, node: ast.Attribute) -> Binding:
        base = self.expr(node.value)
        return self.attribute(base, node.attr, node)

    def attribute(self, base: Binding, name: str, node: ast.AST) -> Binding:
        if isinstance(base, PyObj):
            return self.py_attribute(base.obj, name, node)
        if isinstance(base, ModuleVal):
            return self.comp.module_attribute(self.emitter, base, name, node)
        if isinstance(base, ObjectVal):
            return self.comp.object_attribute(self.emitter, base, name, node)
        if isinstance(base, (SuperVal, Items)):
            return Bound(base, name)
        if isinstance(base, Value):
            return self.value_attribute(base, name, node)
        raise self.fail(node, f"{type(base).__name__} has no attribute {name!r}")

    def py_attribute(self, obj: Any, name: str, node: ast.AST) -> Binding:
        if name == "__new__" and isinstance(obj, type):
            return Bound(PyObj(obj), name)
        if isinstance(obj, types.ModuleType) and self.restricted:
            return self.restricted_attribute(obj, name, node)
        if isinstance(obj, type) and issubclass(obj, enum.Enum) and name in obj.__members__:
            return PyObj(obj.__members__[name])
        try:
            return PyObj(getattr(obj, name))
        except AttributeError:
            if obj is torch or getattr(obj, "__name__", "") in ("torch", "torch.nn.functional"):
                return PyObj(AtenName(name))
            raise self.fail(node, f"{_short(obj)} has no attribute {name!r}") from None

    def restricted_attribute(self, module: types.ModuleType, name: str, node: ast.AST) -> Binding:
        """``module.name`` in code from an archive: what the module already holds, never a
        submodule (whose first access would import it) or a Python function (whose source
        would be read and compiled); ``torch.name`` is the operator ``aten::name``, as
        TorchScript's printer means it."""
        value = vars(module).get(name)
        if module is torch and (value is None or isinstance(value, (types.ModuleType, types.FunctionType))):
            return PyObj(AtenName(name))
        if value is None or isinstance(value, (types.ModuleType, types.FunctionType)):
            raise self.fail(node, f"{module.__name__}.{name} cannot be used in an archive's code")
        return PyObj(value)

    def value_attribute(self, v: Value, name: str, node: ast.AST) -> Binding:
        """``v.name`` on an IR value: a property (an operator), a field, or a method (Bound)."""
        t = v.type
        if is_tensor(t):
            return self.tensor_attribute(v, name, node)
        if isinstance(t, NamedTupleType):
            return self.field_attribute(v, t, name, node)
        if isinstance(t, InterfaceType):
            if t.method(name) is None:
                raise self.fail(node, f"interface {t.qualname.rpartition('.')[2]} has no method {name!r} "
                                      "(an interface value has only its interface's methods)")
            return Bound(v, name)
        if isinstance(t, ClassType):
            info = self.comp.class_info_by_name(t.qualname)
            if info is not None:
                return self.comp.object_attribute(self.emitter, ObjectVal(v, info), name, node)
        if isinstance(t, EnumType):
            if name == "name":
                return self.b.value("prim::EnumName", [v], StrType)
            if name == "value":
                return self.b.value("prim::EnumValue", [v], self.comp.enum_value_type(t))
        if t == DeviceType and name in ("type", "index"):
            return self.b.value("prim::GetAttr", [v], StrType if name == "type" else OptionalType(IntType),
                                name=name)
        if isinstance(t, (ListType, DictType, TupleType)) or t in (StrType, IntType, FloatType, DeviceType):
            return Bound(v, name)
        raise self.fail(node, f"a value of type {t.annotation()} has no attribute {name!r}")

    def tensor_attribute(self, v: Value, name: str, node: ast.AST) -> Binding:
        """``t.shape``, ``t.dtype``, ``t.is_sparse`` ... (an operator each), or a method."""
        if name.startswith("is_") and name not in _TENSOR_PROPS and \
                not callable(getattr(torch.Tensor, name, None)):
            return self.b.value("prim::kiln_tensor_flag", [v], BoolType, name=name)
        if name in _TENSOR_PROPS:
            op, rt = _TENSOR_PROPS[name]
            return self.b.value(op, [v], rt) if op.startswith("prim::") or op == "aten::size" \
                else self.op_value(op, [v], {}, node)
        if not hasattr(torch.Tensor, name):
            raise self.fail(node, f"Tensor has no attribute or method {name!r}")
        return Bound(v, name)

    def field_attribute(self, v: Value, t: NamedTupleType, name: str, node: ast.AST) -> Binding:
        """A NamedTuple's field (``prim::TupleIndex``), or its ``count``/``index`` method."""
        names = [f for f, _ in t.fields]
        if name in names:
            i = names.index(name)
            return self.b.value("prim::TupleIndex", [v, self.b.constant(i)], t.fields[i][1])
        if name in ("count", "index"):
            return Bound(v, name)
        raise self.fail(node, f"{t.qualname.rsplit('.', 1)[-1]} has no field {name!r}; its fields "
                              f"are {', '.join(names)}")

    # -- displays ------------------------------------------------------------------------
    def expr_Tuple(self, node: ast.Tuple) -> Binding:
        vals: list[Value] = []
        for e in node.elts:
            if isinstance(e, ast.Starred):
                parts = self.unpack_for_assignment(self.expr(e.value), e, -1, None)
                vals.extend(self.to_value(p, e) for p in parts)
            else:
                vals.append(self.value(e))
        return self.b.tuple(vals)

    def expr_List(self, node: ast.List, expected: Optional[Type] = None) -> Binding:
        vals = [self.value(e) for e in node.elts if not isinstance(e, ast.Starred)]
        if any(isinstance(e, ast.Starred) for e in node.elts):
            raise self.fail(node, "starred items in list displays are not supported; use `+` or extend()")
        elem: Optional[Type] = expected.elem if isinstance(expected, ListType) else None
        if elem is None:
            if not vals:
                elem = TENSOR        # TorchScript's rule for an unannotated []
                lst = self.b.value("prim::ListConstruct", [], ListType(elem))
                self.comp.empty_lists.add(lst)
                return lst
            elem = vals[0].type
            for v in vals[1:]:
                u = unify(elem, v.type)
                if u is None or isinstance(u, UnionType):
                    raise self.fail(node, f"list elements have different types ({elem.annotation()} and "
                                          f"{v.type.annotation()}); annotate the list, e.g. "
                                          f"`xs: List[...] = [...]`")
                elem = u
        vals = [self.convert(v, elem, node, "a list element") for v in vals]
        return self.b.value("prim::ListConstruct", vals, ListType(elem))

    def expr_Dict(self, node: ast.Dict, expected: Optional[Type] = None) -> Binding:
        keys: list[Value] = []
        for k in node.keys:
            if k is None:
                raise self.fail(node, "`**` in dict displays is not supported; use update()")
            keys.append(self.value(k))
        vals = [self.value(v) for v in node.values]
        if isinstance(expected, DictType):
            kt, vt = expected.key, expected.value
        elif keys:
            kt, vt = keys[0].type, vals[0].type
            for v in vals[1:]:
                u = unify(vt, v.type)
                if u is None:
                    raise self.fail(node, "dict values have different types; annotate the dict")
                vt = u
        else:
            kt, vt = StrType, TENSOR     # TorchScript's rule for an unannotated {}
            d = self.b.dict([], [], DictType(kt, vt))
            self.comp.empty_lists.add(d)
            return d
        vals = [self.convert(v, vt, node, "a dict value") for v in vals]
        return self.b.dict(keys, vals, DictType(kt, vt))

    def expr_Set(self, node: ast.Set) -> Binding:
        raise self.fail(node, "sets are not supported in compiled code; use a list or a dict with "
                              "the elements as keys")

    def expr_JoinedStr(self, node: ast.JoinedStr) -> Binding:
        fmt = ""
        args: list[Value] = []
        for part in node.values:
            if isinstance(part, ast.Constant):
                fmt += str(part.value).replace("{", "{{").replace("}", "}}")
                continue
            assert isinstance(part, ast.FormattedValue)
            conv = {-1: "", 115: "!s", 114: "!r", 97: "!a"}[part.conversion]
            spec = ""
            if part.format_spec is not None:
                if not all(isinstance(p, ast.Constant) for p in part.format_spec.values):  # type: ignore[attr-defined]
                    raise self.fail(part, "nested replacement fields in format specs are not supported")
                spec = ":" + "".join(str(p.value) for p in part.format_spec.values)  # type: ignore[attr-defined]
            fmt += "{" + conv + spec + "}"
            args.append(self.value(part.value))
        return self.b.value("aten::format", [self.b.constant(fmt), *args], StrType)

    def expr_Lambda(self, node: ast.Lambda) -> Binding:
        if self.restricted:
            raise self.fail(node, "lambda is not TorchScript; an archive's code cannot use it")
        return LambdaVal(node, self.scope, self.emitter)

    def expr_Slice(self, node: ast.Slice) -> Binding:
        raise self.fail(node, "a slice is only allowed inside a subscript")


def optional_hint(values: list[Value]) -> str:
    """``; x is Optional[Tensor] here: refine it ...`` for the first Optional value, else ""."""
    for v in values:
        if isinstance(v.type, OptionalType):
            who = v.name if v.name and v.name.isidentifier() else "the value"
            return (f"; {who} is {v.type.annotation()} here: refine it first with "
                    f"`if {who} is not None:` (or `assert {who} is not None`)")
    return ""


def _user_dunders(cls: type) -> set[str]:
    return {n for k in cls.__mro__ if k is not object for n in vars(k)}


def _symbol(name: str) -> str:
    return {"add": "+", "sub": "-", "mul": "*", "div": "/", "floordiv": "//", "remainder": "%",
            "pow": "**", "eq": "==", "ne": "!=", "lt": "<", "le": "<=", "gt": ">", "ge": ">="}.get(name, name)


def _short(obj: Any) -> str:
    r = repr(obj)
    return r if len(r) < 60 else r[:57] + "..."


def _without_none(t: Type) -> Optional[Type]:
    if isinstance(t, OptionalType):
        return t.elem
    if isinstance(t, UnionType):
        rest = [e for e in t.elems if e != NoneType]
        return _union_of(rest)
    return None


def _union_of(ts: list[Type]) -> Optional[Type]:
    if not ts:
        return None
    if len(ts) == 1:
        return ts[0]
    if NoneType in ts and len(ts) == 2:
        return OptionalType(next(t for t in ts if t != NoneType))
    return UnionType(tuple(ts))


def _isinstance_fits(member: Type, wanted: Type) -> bool:
    if wanted == AnyType:
        return True
    if isinstance(wanted, ListType) and isinstance(member, ListType):
        return wanted.elem == AnyType or member.elem == wanted.elem
    if isinstance(wanted, TupleType) and isinstance(member, TupleType):
        return not wanted.elems or member == wanted
    if isinstance(wanted, DictType) and isinstance(member, DictType):
        return wanted.key == AnyType or member == wanted
    if wanted == FloatType and member == IntType:
        return False
    if wanted == NumberType:
        return member in (IntType, FloatType, BoolType)
    return is_subtype(member, wanted) and not (wanted == IntType and member == BoolType)


def _empty_container(v: Value) -> bool:
    return v.node.kind in ("prim::ListConstruct", "prim::DictConstruct") and not v.node.inputs


def _fold_compare(a: Binding, b: Binding, name: str, em: EmitterBase) -> Optional[bool]:
    """Compare two values known while compiling (module constants, ``self.training`` is not)."""
    ka = a.obj if isinstance(a, PyObj) else (em.constant_of(a) if isinstance(a, Value) else ...)
    kb = b.obj if isinstance(b, PyObj) else (em.constant_of(b) if isinstance(b, Value) else ...)
    if ka is ... or kb is ... or \
            not all(isinstance(k, (str, int, float, bool, type(None))) for k in (ka, kb)):
        return None
    import operator
    fn = {"eq": operator.eq, "ne": operator.ne, "lt": operator.lt, "le": operator.le,
          "gt": operator.gt, "ge": operator.ge}[name]
    try:
        return bool(fn(ka, kb))
    except TypeError:
        return None
