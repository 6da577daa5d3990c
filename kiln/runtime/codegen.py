"""Compile a graph to a Python function: Kiln's fast runtime path.

The generated source has one statement per node, ``if``/``else`` for ``prim::If`` and
``for``/``while`` for ``prim::Loop``.  Everything the body needs -- operator entry points,
tensor constants, helpers -- is passed to a factory function and so becomes a closure cell of
the generated function: the body touches only locals and cells, never a dict::

    def _k_make(_k_linear, _k_relu, _k_Tensor, _k_bad, _k_note, _prims, math):
        def forward(self, x):
            if not (isinstance(x, _k_Tensor)):
                _k_bad(self, x)
            try:
                fc = self._modules['fc']
                weight = fc._parameters['weight']
                ...
                y = _k_linear(x, weight, bias)
                return _k_relu(y)
            except Exception as _k_e:
                _k_note(_k_e)
                raise
        return forward

Design points:

* **Constants** are not statements: a literal (int, finite float, bool, None, str, tuples and
  lists of those) is written inline at each use, anything else (tensors, dtypes, devices) is a
  closure cell.  Keyword arguments equal to their schema default are left out, so the binding
  parses fewer arguments.
* **Attributes of modules** (``prim::GetAttr``) are the hot spot of a traced module:
  ``module.weight`` goes through ``nn.Module.__getattr__`` (almost a microsecond).  Given the
  module instance (``self_obj``), the compiler resolves each GetAttr chain from ``self`` and
  reads ``_parameters`` / ``_buffers`` / ``_modules`` directly; values are still read on every
  call, so replacing a parameter is seen, while a change of *kind* (a parameter becoming a
  plain attribute, a new submodule) requires recompiling -- :mod:`kiln.runtime.module` does
  that.
* **Inputs** are checked at entry with one combined ``isinstance`` test; only on failure does
  ``_k_bad`` work out which input is wrong and raise :class:`InputError`.  A wrong number of
  inputs is a ``TypeError`` at the call itself; :meth:`CompiledFunction.__call__` (and the
  module fast path) turn it into an :class:`InputError` via :meth:`CompiledFunction.arity_error`.
* **Errors** inside the body keep their type (a shape mismatch stays a ``RuntimeError``) but
  get a note naming the node kind and its source location; the body's one ``try`` costs
  nothing on the fast path (zero-cost exceptions).  Generated sources are registered with
  :mod:`linecache`, so tracebacks show the generated line.
* **Lowering hooks**: an operator entry with ``lower(node, args, bind)`` writes its own
  expression and may bind closure cells through ``bind``: ``prim::TypeCheck`` becomes one
  inline test of dtype, sizes, strides, device and requires_grad; ``prim::FusionGroup`` a call
  of the kernel built for it now (:mod:`kiln.runtime.fusion`).
* **Safety**: archive-controlled strings never reach the source unescaped.  Value names are
  reduced to ``[A-Za-z0-9_]``, strings are written with ``repr``, and an operator's custom
  ``emit`` is only used when every string attribute of the node is a plain identifier.
"""

from __future__ import annotations

import builtins
import itertools
import keyword
import linecache
import math
import re
import threading
import weakref
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any, Optional

import torch

from kiln.errors import InputError, IRError
from kiln.ir import objects as _objects
from kiln.ir import prims as _prims
from kiln.ir.graph import Block, Graph, Node, Value
from kiln.ir.types import (
    BoolType,
    ComplexType,
    DictType,
    FloatType,
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
)
from kiln.runtime.interpreter import add_note, describe_node, keyword_slots, unpacks_result
from kiln.runtime.members import slot_of

_counter = itertools.count()
_counter_lock = threading.Lock()
_FIXED_BINDINGS = ("_k_Tensor", "_k_bad", "_k_note", "_prims", "_objects", "math", "torch")
_RESERVED = frozenset(dir(builtins)) | frozenset(keyword.kwlist) | {"_k_e", "_k_make", *_FIXED_BINDINGS}


_SCALAR_KINDS: dict[Type, str] = {
    # an int parameter also takes a dtype, layout or memory format (TorchScript spells them as ints)
    IntType: "(int, torch.dtype, torch.layout, torch.memory_format)", FloatType: "(float, int)",
    BoolType: "bool", StrType: "str",
    ComplexType: "(complex, float, int)", NumberType: "(int, float, complex)"}


def _check_expr(t: Type, var: str) -> Optional[str]:
    """A cheap Python test that ``var`` has the kind of value ``t`` describes; None: unchecked."""
    if isinstance(t, TensorType):
        return f"isinstance({var}, _k_Tensor)"
    if isinstance(t, (TupleType, NamedTupleType)):
        return f"(isinstance({var}, tuple) and len({var}) == {len(t.elems)})"
    if isinstance(t, ListType):
        return f"isinstance({var}, list)"
    if isinstance(t, DictType):
        return f"isinstance({var}, dict)"
    if t == NoneType:
        return f"{var} is None"
    if isinstance(t, OptionalType):
        inner = _check_expr(t.elem, var)
        return None if inner is None else f"({var} is None or {inner})"
    if isinstance(t, UnionType):
        parts = [_check_expr(e, var) for e in t.elems]
        return None if any(p is None for p in parts) else "(" + " or ".join(p or "" for p in parts) + ")"
    kind = _SCALAR_KINDS.get(t)
    return None if kind is None else f"isinstance({var}, {kind})"


def _literal(value: Any) -> Optional[str]:
    """Python source for a constant that can be written inline, or None.

    Exact types only: a subclass (an IntEnum, a str subclass) could print as anything."""
    kind = type(value)
    if value is None or kind in (bool, str):
        return repr(value)
    if kind is int or (kind is float and math.isfinite(value)):
        negative = value < 0 or (value == 0 and math.copysign(1, value) < 0)
        return f"({value!r})" if negative else repr(value)
    if kind in (tuple, list) and len(value) <= _MAX_INLINE:
        parts = [_literal(x) for x in value]
        if any(p is None for p in parts):
            return None
        inner = ", ".join(p or "" for p in parts)
        return f"[{inner}]" if kind is list else f"({inner}{',' if parts else ''})"
    return None


_MAX_INLINE = 16   # longer literal sequences become closure cells


def _identifier(hint: Optional[str], fallback: str) -> str:
    base = re.sub(r"[^0-9A-Za-z_]", "_", hint or "") or fallback
    if base[0].isdigit():
        base = "v" + base
    return base


@dataclass
class _Emitter:
    """Writes the source of one graph; collects bindings and the line -> node map."""

    self_obj: Any
    pin: Optional[Callable[[Any], bool]] = None
    body: list[tuple[int, str, Optional[Node]]] = field(default_factory=list)  # indent, text, node
    exprs: dict[Value, str] = field(default_factory=dict)
    bindings: dict[str, Any] = field(default_factory=dict)
    bound_ids: dict[int, str] = field(default_factory=dict)
    used: set[str] = field(default_factory=lambda: set(_RESERVED))
    next_suffix: dict[str, int] = field(default_factory=dict)
    modules: dict[Value, Any] = field(default_factory=dict)   # values known to be a module

    # -- names -------------------------------------------------------------------------------
    def unique(self, base: str) -> str:
        name, n = base, self.next_suffix.get(base, 1)
        if name in self.used:
            name = f"{base}_{n}"
        while name in self.used:
            n += 1
            name = f"{base}_{n}"
        self.next_suffix[base] = n + 1     # the next probe starts here: naming stays linear
        self.used.add(name)
        return name

    def fresh(self, hint: Optional[str], fallback: str = "v") -> str:
        """A new local name from a value's name hint; ``_k``-names are kept for bindings."""
        base = _identifier(hint, fallback)
        return self.unique("v" + base if base.startswith(("_k", "_prims")) else base)

    def define(self, v: Value) -> str:
        kind = v.node.kind
        name = self.fresh(v.name, "arg" if kind == "prim::Param" else kind.rpartition("::")[2])
        self.exprs[v] = name
        return name

    def bind(self, obj: Any, hint: str) -> str:
        """A closure cell holding ``obj`` (one per distinct object)."""
        name = self.bound_ids.get(id(obj))
        if name is None:
            name = self.unique("_k_" + _identifier(hint.rsplit(".", 1)[-1], "c").lstrip("_"))
            self.bound_ids[id(obj)] = name
            self.bindings[name] = obj
        return name

    def value(self, obj: Any, hint: str) -> str:
        """An expression for a constant: a literal, or a closure cell.  A list is rebuilt at
        each use, as a literal display would be, so no caller can mutate a shared one."""
        lit = _literal(obj)
        if lit is not None:
            return lit
        if type(obj) is list:
            return f"list({self.bind(tuple(obj), hint)})"
        return self.bind(obj, hint)

    def line(self, indent: int, text: str, node: Optional[Node] = None) -> None:
        self.body.append((indent, text, node))

    # -- blocks ------------------------------------------------------------------------------
    def block(self, block: Block, indent: int) -> None:
        for node in block.nodes:
            if node.kind == "prim::Constant":
                self.exprs[node.output] = self.value(node.attrs["value"], "const")
            elif node.kind == "prim::If":
                self.if_(node, indent)
            elif node.kind == "prim::Loop":
                self.loop(node, indent)
            else:
                self.op(node, indent)

    def assign_outputs(self, targets: list[str], block: Block, indent: int, node: Node) -> None:
        if targets:
            rets = ", ".join(self.exprs[v] for v in block.outputs)
            self.line(indent, f"{', '.join(targets)} = {rets}", node)

    def if_(self, node: Node, indent: int) -> None:
        targets = [self.define(v) for v in node.outputs]
        self.line(indent, f"if {self.exprs[node.inputs[0]]}:", node)
        for i, blk in enumerate(node.blocks):
            if i == 1:
                self.line(indent, "else:", node)
            start = len(self.body)
            self.block(blk, indent + 1)
            self.assign_outputs(targets, blk, indent + 1, node)
            if len(self.body) == start:
                self.line(indent + 1, "pass", node)

    def loop(self, node: Node, indent: int) -> None:
        """TorchScript's loop; the carried values share one Python name inside and after.

        A loop whose start and continue conditions are the constant ``True`` is a ``for``
        over ``range``; any other is a ``while`` keeping the condition and index by hand."""
        body = node.blocks[0]
        trip, start = (self.exprs[v] for v in node.inputs[:2])
        carried = [self.define(v) for v in node.outputs]
        self.exprs.update(zip(body.inputs[1:], carried))
        index = self.define(body.inputs[0])
        if carried:
            inits = ", ".join(self.exprs[v] for v in node.inputs[2:])
            self.line(indent, f"{', '.join(carried)} = {inits}", node)
        counted = _is_true(node.inputs[1]) and _is_true(body.outputs[0])
        if counted:
            self.line(indent, f"for {index} in range({trip}):", node)
            targets = carried
        else:
            cond = self.fresh("cond")
            self.line(indent, f"{cond}, {index} = {start}, 0", node)
            self.line(indent, f"while {cond} and {index} < {trip}:", node)
            targets = [cond, *carried]
        start_len = len(self.body)
        self.block(body, indent + 1)
        rets = [self.exprs[v] for v in body.outputs[(1 if counted else 0):]]
        if targets:
            # one tuple assignment: every right-hand side still sees this iteration's values
            self.line(indent + 1, f"{', '.join(targets)} = {', '.join(rets)}", node)
        if not counted:
            self.line(indent + 1, f"{index} += 1", node)
        elif len(self.body) == start_len:
            self.line(indent + 1, "pass", node)

    # -- operators ---------------------------------------------------------------------------
    def op(self, node: Node, indent: int) -> None:
        if node.op is None or node.op.impl is None:
            raise IRError(f"cannot compile {node.kind}: no operator implementation")
        args = [self.exprs[v] for v in node.inputs]
        if node.kind == "prim::GetAttr":
            text = self.get_attr(node, args[0])
            if text is None:
                return
        elif node.kind == "prim::TupleConstruct" and isinstance(node.output.type, NamedTupleType):
            cls = _objects.namedtuple_class(node.output.type)
            text = f"{self.bind(cls, cls.__name__)}({', '.join(args)})"
        elif node.op.lower is not None:
            text = node.op.lower(node, args, self.bind)
        elif node.op.emit is not None and _plain_attrs(node):
            text = node.op.emit(node, args)
        else:
            text = self.call(node, args)
        outs = [self.define(v) for v in node.outputs]
        if unpacks_result(node):
            target = ", ".join(outs) + ("," if len(outs) == 1 else "") if outs else "()"
            self.line(indent, f"{target} = {text}", node)
        elif outs:
            self.line(indent, f"{outs[0]} = {text}", node)
        else:
            self.line(indent, text, node)

    def call(self, node: Node, args: list[str]) -> str:
        op = node.op
        fn = self.bind(op.impl, op.binding_name or node.kind)
        kw = keyword_slots(node)
        schema_args = op.schema.arguments
        parts = [a for i, a in enumerate(args) if i not in kw]
        for i, name in kw.items():
            if not _is_default(node.inputs[i], schema_args[i].default):
                parts.append(f"{name}={args[i]}")
        if all(_plain_name(k) for k in node.attrs):
            parts.extend(f"{k}={self.value(v, k)}" for k, v in node.attrs.items())
        elif node.attrs:
            parts.append(f"**{self.bind(dict(node.attrs), 'attrs')}")
        return f"{fn}({', '.join(parts)})"

    def get_attr(self, node: Node, obj: str) -> Optional[str]:
        """Read an attribute; straight from the module's dicts when the holder is known.

        On a *pinned* holder (one whose structure the caller watches, recompiling on change)
        the dicts themselves are closure cells and a submodule is a constant: None is
        returned and no statement is needed."""
        name = node.attrs.get("name")
        if not isinstance(name, str):
            raise IRError(f"prim::GetAttr needs a string 'name' attribute, got {name!r}")
        holder = self.modules.get(node.inputs[0])
        if isinstance(holder, torch.nn.Module):
            pinned = self.pin is not None and self.pin(holder)
            slot = slot_of(holder, name)
            if slot is not None:
                table = holder.__dict__[slot]
                if slot == "_modules":
                    self.modules[node.output] = table[name]
                    if pinned:
                        self.exprs[node.output] = self.bind(table[name], name)
                        return None
                if pinned:
                    return f"{self.bind(table, slot)}[{name!r}]"
                return f"{obj}.{slot}[{name!r}]"
            if pinned and name in holder.__dict__:
                return f"{self.bind(holder.__dict__, 'attrs')}[{name!r}]"
        if _plain_name(name):
            return f"{obj}.{name}"
        return f"getattr({obj}, {name!r})"


def _is_true(v: Value) -> bool:
    return v.node.kind == "prim::Constant" and v.node.attrs.get("value") is True


def _is_default(v: Value, default: Any) -> bool:
    if v.node.kind != "prim::Constant":
        return False
    value = v.node.attrs.get("value")
    return type(value) is type(default) and bool(value == default)


def _plain_name(s: str) -> bool:
    """An ASCII identifier that is not a keyword: safe to paste into source as a name."""
    return s.isidentifier() and s.isascii() and not keyword.iskeyword(s)


def _plain_attrs(node: Node) -> bool:
    """Whether every string attribute is a plain name (a custom ``emit`` may paste it)."""
    return all(not isinstance(v, str) or _plain_name(v) for v in node.attrs.values())


# -- the compiled function -----------------------------------------------------------------------

@dataclass(eq=False)
class CompiledFunction:
    """A graph compiled to Python: ``fn`` is the generated function, ``source`` its text.

    ``fn`` takes the graph inputs positionally (``self`` first when ``self_arg``); calling the
    CompiledFunction itself adds only the conversion of a wrong input count to InputError.
    """

    name: str
    graph: Graph
    fn: Callable[..., Any]
    source: str
    filename: str
    line_nodes: dict[int, Node]
    input_names: tuple[str, ...]      # the inputs a caller passes (``self`` excluded)
    self_arg: bool
    entry: Callable[..., Any]         # ``fn`` behind an EntryGuard, or ``fn`` itself

    def __call__(self, *args: Any) -> Any:
        try:
            return self.fn(*args)
        except TypeError as e:
            if failed_at_call(e):
                raise self.arity_error(len(args)) from None
            raise

    def arity_error(self, given: int) -> InputError:
        """The error for a call passing ``given`` positional values (``self`` included)."""
        n = len(self.input_names)
        given -= int(self.self_arg)
        names = ", ".join(self.input_names)
        return InputError(f"{self.name}() takes {n} input{'s' if n != 1 else ''} ({names}) "
                          f"but {given} {'was' if given == 1 else 'were'} given")

    def bind(self, args: tuple[Any, ...], kwargs: dict[str, Any],
             defaults: Optional[dict[str, Any]] = None) -> tuple[Any, ...]:
        """Positional values for a call that names some inputs by keyword or leaves some to
        their defaults (the slow path)."""
        values = list(args) + [_MISSING] * (len(self.input_names) - len(args))
        for key, v in kwargs.items():
            if key not in self.input_names:
                raise InputError(f"{self.name}() got an unexpected keyword argument {key!r}; "
                                 f"its inputs are ({', '.join(self.input_names)})")
            i = self.input_names.index(key)
            if i >= len(values) or values[i] is not _MISSING:
                raise InputError(f"{self.name}() got multiple values for input {key!r}")
            values[i] = v
        for i, name in enumerate(self.input_names):
            if values[i] is _MISSING and defaults and name in defaults:
                values[i] = defaults[name]
        missing = [n for n, v in zip(self.input_names, values) if v is _MISSING]
        if missing:
            raise InputError(f"{self.name}() is missing input(s) {', '.join(missing)}")
        return tuple(values)

    def node_at(self, lineno: int) -> Optional[Node]:
        """The node a line of the generated source came from."""
        return self.line_nodes.get(lineno)


_MISSING: Any = object()


def failed_at_call(e: BaseException) -> bool:
    """Whether a TypeError was raised binding the call (the callee's frame never ran)."""
    tb = e.__traceback__
    return tb is not None and tb.tb_next is None


def input_name(v: Value, index: int) -> str:
    """The user-facing name of a graph input: its hint without the ``.N`` suffix."""
    return re.sub(r"\.\d+$", "", v.name) if v.name else f"input{index}"


def _input_checker(name: str, graph: Graph, self_arg: bool) -> Callable[..., None]:
    """``_k_bad``: called only when the combined entry test failed; finds the culprit."""
    checks: list[tuple[int, str, Type, Callable[[Any], bool]]] = []
    for i, v in enumerate(graph.inputs):
        expr = None if (self_arg and i == 0) else _check_expr(v.type, "_k_x")
        if expr is not None:
            test = eval(f"lambda _k_x: {expr}", {"_k_Tensor": torch.Tensor, "torch": torch})  # noqa: S307  (our own text)
            checks.append((i, input_name(v, i), v.type, test))

    def bad(*values: Any) -> None:
        for i, iname, t, test in checks:
            if not test(values[i]):
                got = type(values[i]).__name__
                pos = i - int(self_arg)
                raise InputError(f"{name}(): input '{iname}' (position {pos}) expected "
                                 f"{t.annotation()} but got {got}")
    return bad


def _note_adder(filename: str, line_nodes: dict[int, Node], where: str) -> Callable[[BaseException], None]:
    """``_k_note``: add the failing node's kind and source to an exception leaving the body."""
    def note(e: BaseException) -> None:
        tb = e.__traceback__
        while tb is not None and tb.tb_frame.f_code.co_filename != filename:
            tb = tb.tb_next
        node = line_nodes.get(tb.tb_lineno) if tb is not None else None
        if node is not None:
            add_note(e, describe_node(node, where))
    return note


@dataclass(frozen=True)
class EntryGuard:
    """Ask :func:`compile_graph` for a second function, ``entry``: the same body preceded by
    ``if any(objects): return fallback(*inputs)``.  Objects are tested for truth on every call
    (for a module: its hook dicts), so an empty ``objects`` gives an unconditional body."""

    objects: tuple[Any, ...]
    fallback: Callable[..., Any]


def compile_graph(graph: Graph, name: str, *, self_arg: bool, self_obj: Any = None,
                  pin: Optional[Callable[[Any], bool]] = None,
                  guard: Optional[EntryGuard] = None) -> CompiledFunction:
    """Generate, compile and bind a Python function running ``graph``.

    ``self_arg``: the first graph input is ``self`` (not type-checked).  ``self_obj``: the
    module instance the code will run on, if known; it lets GetAttr chains from ``self``
    read the module's parameter/buffer/submodule dicts directly.  ``pin(module)``: whether
    the caller guarantees that ``module``'s members keep their kind and its submodules their
    identity while this code is in use (it recompiles otherwise); pinned dicts and submodules
    become closure cells.  ``guard``: also build :attr:`CompiledFunction.entry`.
    """
    em = _Emitter(self_obj, pin)
    params = [em.define(v) for v in graph.inputs]
    if self_arg and graph.inputs and self_obj is not None:
        em.modules[graph.inputs[0]] = self_obj
    fname = em.fresh(name, "fn")
    em.block(graph.block, 0)
    outs = [em.exprs[v] for v in graph.outputs]
    em.line(0, "return " + (outs[0] if len(outs) == 1 else f"({', '.join(outs)}{',' if outs else ''})"))
    tests = [t for i, (v, p) in enumerate(zip(graph.inputs, params))
             if not (self_arg and i == 0) and (t := _check_expr(v.type, p)) is not None]
    src = _Source()
    src.function(fname, params, tests, em.body)
    entry_name = fname
    if guard is not None:
        entry_name = em.fresh(fname + "_entry")
        flags = [em.bind(obj, "hooks") for obj in guard.objects]
        src.function(entry_name, params, tests, em.body,
                     (" or ".join(flags), f"{em.bind(guard.fallback, 'fallback')}({', '.join(params)})"))
    with _counter_lock:
        filename = f"<kiln-generated {name} #{next(_counter)}>"
    values: dict[str, Any] = {
        "_k_Tensor": torch.Tensor, "_k_bad": _input_checker(name, graph, self_arg),
        "_k_note": _note_adder(filename, src.line_nodes, f"'{name}'"),
        "_prims": _prims, "_objects": _objects, "math": math, "torch": torch, **em.bindings}
    source = src.finish(values, f"{fname}, {entry_name}")
    namespace: dict[str, Any] = {"__builtins__": builtins}
    exec(compile(source, filename, "exec"), namespace)  # noqa: S102  (source built above from sanitized parts)
    fn, entry = namespace["_k_make"](*values.values())
    names = tuple(input_name(v, i) for i, v in enumerate(graph.inputs))[int(self_arg):]
    cf = CompiledFunction(name, graph, fn, source, filename, src.line_nodes, names, self_arg, entry)
    linecache.cache[filename] = (len(source), None, source.splitlines(True), filename)
    weakref.finalize(fn, linecache.cache.pop, filename, None)
    return cf


class DeferredFunction(CompiledFunction):
    """A graph's general code, generated when first used.  Its profiling executor runs the
    first calls in the interpreter and then specialized code, so the general code may never
    run; until it is needed only the inputs' names are known.  ``fn``, ``entry``, ``source``,
    ``filename`` and ``line_nodes`` generate it (once, under a lock)."""

    def __init__(self, graph: Graph, name: str, self_arg: bool,
                 build: Callable[[Graph], CompiledFunction]) -> None:
        # (the dataclass fields that need code are properties here, filled from ``compiled()``)
        self.name, self.graph, self.self_arg = name, graph, self_arg
        self.input_names = tuple(input_name(v, i) for i, v in enumerate(graph.inputs))[int(self_arg):]
        self._build = build
        self._compiled: Optional[CompiledFunction] = None
        self._lock = threading.Lock()

    def compiled(self) -> CompiledFunction:
        cf = self._compiled
        if cf is None:
            with self._lock:
                if self._compiled is None:
                    self._compiled = self._build(self.graph)
                cf = self._compiled
        return cf

    @property
    def fn(self) -> Callable[..., Any]:  # type: ignore[override]
        return self.compiled().fn

    @property
    def entry(self) -> Callable[..., Any]:  # type: ignore[override]
        return self.compiled().entry

    @property
    def source(self) -> str:  # type: ignore[override]
        return self.compiled().source

    @property
    def filename(self) -> str:  # type: ignore[override]
        return self.compiled().filename

    @property
    def line_nodes(self) -> dict[int, Node]:  # type: ignore[override]
        return self.compiled().line_nodes


class _Source:
    """Assembles the factory's source and the generated-line -> node map."""

    def __init__(self) -> None:
        self.lines: list[str] = [""]   # line 1, the factory's def, is written last
        self.line_nodes: dict[int, Node] = {}

    def add(self, indent: int, text: str, node: Optional[Node] = None) -> None:
        self.lines.append("    " * indent + text)
        if node is not None:
            self.line_nodes[len(self.lines)] = node

    def function(self, fname: str, params: list[str], tests: list[str],
                 body: list[tuple[int, str, Optional[Node]]],
                 guard: Optional[tuple[str, str]] = None) -> None:
        self.add(1, f"def {fname}({', '.join(params)}):")
        if guard is not None and guard[0]:
            self.add(2, f"if {guard[0]}:")
            self.add(3, f"return {guard[1]}")
        if tests:
            self.add(2, f"if not ({' and '.join(tests)}):")
            self.add(3, f"_k_bad({', '.join(params)})")
        self.add(2, "try:")
        for indent, text, node in body:
            self.add(3 + indent, text, node)
        self.add(2, "except Exception as _k_e:")
        self.add(3, "_k_note(_k_e)")
        self.add(3, "raise")

    def finish(self, values: dict[str, Any], result: str) -> str:
        self.add(1, f"return {result}")
        self.lines[0] = f"def _k_make({', '.join(values)}):"
        return "\n".join(self.lines) + "\n"
