"""The recording machinery behind ``kiln.trace``.

:class:`Tracer` is a ``TorchFunctionMode``: every torch API call the traced code makes comes
here first.  A call that is an operator (``torch.add``, ``Tensor.view``, ``F.linear`` ...) is run
for real and recorded as one node; a Python-level torch function (``F.relu``, ``Tensor.split``)
has its body run so the operators beneath it are recorded; a Python conversion of a tensor
(``bool(t)``, ``.item()``) warns at the user's line.

Recording happens in a :class:`Frame`: one per module method being traced.  A frame owns a
graph and maps the Python objects flowing through it (tensors, traced ints, devices) to IR
values.  A submodule call opens a new frame, so the module hierarchy survives as
``prim::GetAttr`` + ``prim::CallMethod`` nodes, as TorchScript records it.
"""

from __future__ import annotations

import os
import sys
import types
import warnings
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from typing import Any, Optional

import torch
from torch.overrides import TorchFunctionMode

from kiln.errors import TracerWarning, TracingError
from kiln.frontend import indexing
from kiln.frontend.resolve import Resolved, method_alias, operator_name, resolve_call, unchecked
from kiln.frontend.values import TracedFloat, TracedInt, set_recorder
from kiln.ir.builder import Builder
from kiln.ir.graph import Graph, SourceRange, Value
from kiln.ir.ops import OpInfo, registry
from kiln.ir.types import (
    TENSOR,
    AnyType,
    ClassType,
    DeviceType,
    FloatType,
    IntType,
    ListType,
    TensorType,
    Type,
    list_elem,
    strip_optional,
    type_of_value,
)

# Frames in these package folders are library code, not the user's (trailing separator: so
# that a sibling folder such as ``kiln_extras`` or ``torchvision`` is not mistaken for them).
_SKIP_DIRS = (os.path.dirname(os.path.dirname(os.path.abspath(__file__))) + os.sep,
              os.path.dirname(os.path.abspath(torch.__file__)) + os.sep)


_KILN_DIR = _SKIP_DIRS[0]
_OVERRIDES_FILE = os.path.abspath(torch.overrides.__file__)


def _plain_number(a: Any) -> Any:
    if isinstance(a, bool):
        return a
    if isinstance(a, int):
        return int(a)
    if isinstance(a, float):
        return float(a)
    return a


def called_from_kiln() -> bool:
    """Whether the torch call being intercepted was made by Kiln's own code (not recorded)."""
    f: Optional[types.FrameType] = sys._getframe(2)
    while f is not None and f.f_code.co_filename == _OVERRIDES_FILE:
        f = f.f_back
    return f is not None and f.f_code.co_filename.startswith(_KILN_DIR)


def user_frame() -> Optional[types.FrameType]:
    """The innermost Python frame outside Kiln and torch: where the user's code is."""
    f: Optional[types.FrameType] = sys._getframe(1)
    while f is not None:
        path = f.f_code.co_filename
        if not path.startswith(_SKIP_DIRS) and not path.startswith("<frozen"):
            return f
        f = f.f_back
    return None


def user_location() -> Optional[SourceRange]:
    f = user_frame()
    return None if f is None else SourceRange(f.f_code.co_filename, f.f_lineno, 0)


def warn_at_user(message: str) -> None:
    f = user_frame()
    if f is None:
        warnings.warn(message, TracerWarning, stacklevel=3)
    else:
        message = f"{f.f_code.co_filename}:{f.f_lineno}: {message}"
        warnings.warn_explicit(message, TracerWarning, f.f_code.co_filename, f.f_lineno,
                               module=f.f_globals.get("__name__"))


class Frame:
    """One method being traced: its graph, builder, ``self`` and the objects it has seen."""

    def __init__(self, graph: Graph, module: Optional[torch.nn.Module],
                 self_value: Optional[Value], scope: Optional[str]) -> None:
        self.graph = graph
        self.builder = Builder(graph)
        self.builder.scope = scope
        self.module = module
        self.self_value = self_value
        self.objects: dict[int, tuple[Any, Value]] = {}
        self.attr_values: dict[tuple[str, ...], Value] = {}
        self.attr_paths: dict[int, tuple[str, ...]] = {}
        if module is not None:
            for name, t in [*module.named_parameters(), *module.named_buffers()]:
                self.attr_paths.setdefault(id(t), tuple(name.split(".")))

    def bind(self, obj: Any, value: Value) -> None:
        self.objects[id(obj)] = (obj, value)  # keeping obj alive keeps its id unique

    def lookup(self, obj: Any) -> Optional[Value]:
        hit = self.objects.get(id(obj))
        return hit[1] if hit is not None and hit[0] is obj else None

    def is_traced(self, obj: Any) -> bool:
        """Whether ``obj`` is, or holds, a tensor or a value this frame traced."""
        if isinstance(obj, torch.Tensor) or self.lookup(obj) is not None:
            return True
        if isinstance(obj, (list, tuple)):
            return any(self.is_traced(o) for o in obj)
        if isinstance(obj, dict):
            return any(self.is_traced(o) for o in obj.values())
        return False

    def attribute(self, path: tuple[str, ...], leaf_type: Type) -> Value:
        """``self.a.b.c`` as a chain of ``prim::GetAttr`` (each prefix emitted once)."""
        assert self.self_value is not None and self.module is not None
        value, obj = self.self_value, self.module
        for i, name in enumerate(path):
            obj = getattr(obj, name)
            key = path[: i + 1]
            cached = self.attr_values.get(key)
            if cached is None:
                is_leaf = i == len(path) - 1
                t = leaf_type if is_leaf else module_type(obj)
                cached = self.builder.get_attr(value, name, t)
                self.attr_values[key] = cached
            value = cached
        return value


def module_type(m: Any) -> Type:
    return ClassType(qualified_class_name(type(m)))


def qualified_class_name(cls: type) -> str:
    mod = cls.__module__
    name = cls.__qualname__.replace(".<locals>.", ".").replace("<", "_").replace(">", "_")
    return f"__torch__.{name}" if mod in ("__main__", "builtins") else f"__torch__.{mod}.{name}"


class Tracer(TorchFunctionMode):
    """Records torch API calls into the current :class:`Frame`."""

    def __init__(self) -> None:
        super().__init__()
        self.frames: list[Frame] = []
        self.mode_dependent = False
        self.warned_constants: set[int] = set()
        self._expanding: list[Callable[..., Any]] = []

    @property
    def frame(self) -> Frame:
        return self.frames[-1]

    @contextmanager
    def in_frame(self, frame: Frame) -> Iterator[Frame]:
        self.frames.append(frame)
        try:
            yield frame
        finally:
            self.frames.pop()

    @contextmanager
    def active(self) -> Iterator[Tracer]:
        """Enable recording for this thread (torch API calls, traced-number arithmetic, and
        calls of Kiln functions)."""
        from kiln.runtime.module import interception
        set_recorder(self)
        saved = interception.fn
        interception.fn = self.call_kiln_function
        try:
            with self:
                yield self
        finally:
            set_recorder(None)
            interception.fn = saved

    def call_kiln_function(self, fn: Any, args: tuple[Any, ...]) -> Any:
        """A Kiln function called while tracing: copy its graph in (its control flow is kept),
        and run it for the concrete result."""
        from kiln.ir.graph import clone_node
        from kiln.runtime.module import interception
        graph = fn.graph
        frame = self.frame
        env = {formal: self.value_of(a, formal.type) for formal, a in zip(graph.inputs, args)}
        for n in graph.nodes:
            frame.builder.insert(clone_node(n, frame.graph, env))
        outs = [env[v] for v in graph.outputs]
        saved = interception.fn
        interception.fn = None
        try:
            with torch._C.DisableTorchFunction():
                result = fn(*[_plain_number(a) for a in args])
        finally:
            interception.fn = saved
        return self.bind_result(result, outs[0])

    # -- the torch function hook ------------------------------------------------------------
    def __torch_function__(self, func: Callable[..., Any], types_: Any, args: Any = (),
                           kwargs: Any = None) -> Any:
        kwargs = kwargs or {}
        if called_from_kiln():
            return _concrete(func, args, kwargs)
        self.frame.builder.source = user_location()
        handler = _special_handler(func)
        if handler is not None:
            return handler(self, func, args, kwargs)
        alias = method_alias(func)
        if alias is not None:
            return self.call_op(f"aten::{alias[0]}", args, {**kwargs, **alias[1]}, func=None)
        named = operator_name(func)
        if named is None and func in self._expanding:
            # The body called the builtin under the same public name (``super().unflatten``).
            named = (f"aten::{func.__name__}", False)
        if named is None:
            return self._expand(func, args, kwargs)
        name, swap = named
        if swap:
            args = (args[1], args[0], *args[2:])
        return self.call_op(name, args, kwargs, func=None if swap else func)

    def _expand(self, func: Callable[..., Any], args: Any, kwargs: Any) -> Any:
        """Run a Python-level torch function's body with recording on."""
        body = unchecked(func)
        if body is None:
            raise TracingError(f"kiln.trace cannot record {getattr(func, '__qualname__', func)}: "
                               f"it is not an operator and has no traceable body ({_where()})")
        self._expanding.append(func)
        try:
            with self:
                return body(*args, **kwargs)
        finally:
            self._expanding.pop()

    # -- operators ---------------------------------------------------------------------------
    def call_op(self, name: str, args: Any, kwargs: dict[str, Any],
                func: Optional[Callable[..., Any]] = None) -> Any:
        """Run operator ``name`` on the arguments and record it.

        ``func`` is the callable the user called; it computes the concrete result so that
        tracing never changes what the user's code sees."""
        resolved = resolve_call(name, args, kwargs, lambda v: isinstance(v, TracedInt))
        if resolved is None:
            return self._unresolved(name, args, kwargs, func)
        with torch._C.DisableTorchFunction():
            if func is not None:
                result = func(*args, **kwargs)
            else:
                result = run_op(resolved.op, resolved.args)
        return self.record(resolved, result)

    def _unresolved(self, name: str, args: Any, kwargs: dict[str, Any],
                    func: Optional[Callable[..., Any]]) -> Any:
        known = registry.overloads(name)
        if func is not None and not known:
            with torch._C.DisableTorchFunction():
                result = func(*args, **kwargs)
            if not _contains_tensor(result):
                return result  # an introspection call (x.is_contiguous(), x.stride() ...)
        shown = ", ".join(type(a).__name__ for a in args)
        schemas = "\n  ".join(str(o.schema) for o in known) or "(no such operator)"
        raise TracingError(f"kiln.trace cannot record {name}({shown}) at {_where()}: "
                           f"no overload accepts these arguments; known overloads:\n  {schemas}")

    def record(self, resolved: Resolved, result: Any) -> Any:
        """Add the node for a call already run; return ``result`` (numbers become traced)."""
        op = resolved.op
        frame = self.frame
        inputs = [self.value_of(v, a.type) for v, a in zip(resolved.args, op.schema.arguments)]
        self._note_mode(op, resolved.args)
        results = (result,) if len(op.schema.returns) == 1 else tuple(result)
        out_types = [_observed_type(r.type, v) for r, v in zip(op.schema.returns, results)]
        node = frame.builder.op(op, inputs, out_types)
        outs = [self.bind_result(v, val) for v, val in zip(results, node.outputs)]
        if len(op.schema.returns) != 1:
            return result
        return outs[0]

    def _note_mode(self, op: OpInfo, args: list[Any]) -> None:
        for a, v in zip(op.schema.arguments, args):
            if a.name in ("train", "training") and isinstance(v, bool):
                self.mode_dependent = True

    def bind_result(self, obj: Any, value: Value) -> Any:
        """Map a concrete result to its IR value; numbers are replaced by traced numbers."""
        if isinstance(obj, torch.Tensor):
            self.frame.bind(obj, value)
            return obj
        if isinstance(obj, bool) or obj is None:
            return obj
        if isinstance(obj, int):
            return self._traced_number(TracedInt(obj), value)
        if isinstance(obj, float):
            return self._traced_number(TracedFloat(obj), value)
        if isinstance(obj, (list, tuple)) and obj and all(isinstance(o, torch.Tensor) for o in obj):
            parts = self.frame.builder.unpack(value, [TensorType.of(o) for o in obj])
            part: Value
            for o, part in zip(obj, parts):
                self.frame.bind(o, part)
            return obj
        if isinstance(obj, (list, tuple)) and obj and all(isinstance(o, int) for o in obj):
            ints = self.frame.builder.unpack(value, [IntType] * len(obj))
            return type(obj)(self._traced_number(TracedInt(o), iv) for o, iv in zip(obj, ints))
        return obj

    def _traced_number(self, num: Any, value: Value) -> Any:
        self.frame.bind(num, value)
        return num

    # -- Python values to IR values ----------------------------------------------------------
    def value_of(self, obj: Any, expected: Type = AnyType) -> Value:
        """The IR value for a Python argument in the current frame."""
        frame = self.frame
        found = frame.lookup(obj)
        if found is not None:
            return found
        if isinstance(obj, torch.Tensor):
            value = self._tensor_value(obj)
            if expected == IntType:  # a 0-dim integer tensor used as a size
                return frame.builder.value("aten::Int.Tensor", [value])
            return value
        if isinstance(obj, (list, tuple)) and frame.is_traced(obj):
            return self._sequence_value(obj, expected)
        obj = _as_expected(obj, strip_optional(expected))
        return frame.builder.constant(obj, _constant_type(obj, expected))

    def _tensor_value(self, t: torch.Tensor) -> Value:
        frame = self.frame
        path = frame.attr_paths.get(id(t))
        if path is not None:
            v = frame.attribute(path, TensorType.of(t))
            frame.bind(t, v)
            return v
        if id(t) not in self.warned_constants:
            self.warned_constants.add(id(t))
            warn_at_user(f"a tensor of shape {tuple(t.shape)} that is not an input of the trace was "
                         "baked into the graph as a constant; pass it as an input if it varies")
        v = frame.builder.constant(t.detach(), TensorType.of(t))
        frame.bind(t, v)
        return v

    def constant_tensor(self, t: torch.Tensor) -> torch.Tensor:
        """Record a tensor Kiln made itself (not the user) as a constant, without a warning."""
        self.frame.bind(t, self.frame.builder.constant(t, TensorType.of(t)))
        return t

    def _sequence_value(self, seq: Any, expected: Type) -> Value:
        elem = list_elem(expected)
        values = [self.value_of(x, elem or AnyType) for x in seq]
        if isinstance(seq, tuple) and elem is None:
            return self.frame.builder.tuple(values)
        return self.frame.builder.list(values, None if elem == AnyType else elem)

    # -- traced numbers ------------------------------------------------------------------------
    def record_number_op(self, name: str, args: tuple[Any, ...], result: Any) -> Any:
        if not any(self.frame.lookup(a) is not None for a in args):
            return result
        self.frame.builder.source = user_location()
        inputs = [self.value_of(a, IntType if isinstance(a, int) else FloatType) for a in args]
        out = self.frame.builder.value(name, inputs)
        num = TracedFloat(result) if isinstance(result, float) else TracedInt(result)
        return self._traced_number(num, out)

    def record_comparison(self, name: str, args: tuple[Any, ...], result: bool) -> None:
        """A comparison of a traced number in user code: keep the branch, guard it."""
        if user_frame() is not sys._getframe(2) or all(self.frame.lookup(a) is None for a in args):
            return
        kind = "float" if any(isinstance(a, float) for a in args) else "int"
        b = self.frame.builder
        b.source = user_location()
        cond = b.value(f"aten::{name}.{kind}", [self.value_of(a) for a in args])
        self.guard(cond, result, f"a traced size compared {name} with {args[1]!r}")

    def guard(self, cond: Value, expected: bool, what: str) -> None:
        b = self.frame.builder
        if not expected:
            cond = b.value("aten::__not__", [cond])
        where = _where()
        warn_at_user(f"{what} is used as a Python bool; the trace keeps the branch taken "
                     f"({expected}) and checks it at run time")
        b.guard(cond, f"this input takes another path than the trace: at {where}, {what} was "
                      f"{expected} when traced and is not now, and the trace does not contain the "
                      "other branch (script this code instead)")


def run_op(op: OpInfo, args: list[Any]) -> Any:
    """Run an operator entry concretely with schema-ordered arguments."""
    assert op.impl is not None
    n_kw = len(op.kw_names)
    if n_kw:
        return op.impl(*args[:-n_kw], **dict(zip(op.kw_names, args[-n_kw:])))
    return op.impl(*args)


def _where() -> str:
    loc = user_location()
    return "an unknown location" if loc is None else f"{loc.file}:{loc.line}"


def _contains_tensor(obj: Any) -> bool:
    if isinstance(obj, torch.Tensor):
        return True
    if isinstance(obj, (list, tuple)):
        return any(_contains_tensor(o) for o in obj)
    if isinstance(obj, dict):
        return any(_contains_tensor(o) for o in obj.values())
    return False


def _as_expected(obj: Any, expected: Type) -> Any:
    """A Python constant in the form the parameter declares: a tuple given for a list is a
    list (``stride=(1, 1)``), an int given for a float is a float (``scale_factor=2``)."""
    if isinstance(obj, (tuple, list)) and isinstance(expected, ListType):
        return [_as_expected(o, expected.elem) for o in obj]
    if expected == FloatType and isinstance(obj, int) and not isinstance(obj, bool):
        return float(obj)
    return obj


def _constant_type(obj: Any, expected: Type) -> Type:
    """An empty list constant takes the list type the parameter declares."""
    if isinstance(obj, (list, tuple)) and not obj and list_elem(expected) is not None:
        return strip_optional(expected)
    return type_of_value(obj)


def _observed_type(schema_type: Type, value: Any) -> Type:
    if isinstance(value, torch.Tensor):
        return TensorType.of(value)
    if isinstance(schema_type, ListType) and isinstance(value, (list, tuple)) and value and \
            all(isinstance(v, torch.Tensor) for v in value):
        return ListType(TENSOR)
    return schema_type


# -- special torch functions ----------------------------------------------------------------

Handler = Callable[[Tracer, Callable[..., Any], Any, dict[str, Any]], Any]


def _concrete(func: Callable[..., Any], args: Any, kwargs: dict[str, Any]) -> Any:
    with torch._C.DisableTorchFunction():
        return func(*args, **kwargs)


def _h_size(tr: Tracer, func: Callable[..., Any], args: Any, kwargs: dict[str, Any]) -> Any:
    x = args[0]
    dim = args[1] if len(args) > 1 else kwargs.get("dim")
    if dim is not None:
        return tr.call_op("aten::size", (x, dim), {})
    return tuple(tr.call_op("aten::size", (x, i), {}) for i in range(x.dim()))


def _h_shape(tr: Tracer, func: Callable[..., Any], args: Any, kwargs: dict[str, Any]) -> Any:
    return _h_size(tr, func, args[:1], {})


def _h_device(tr: Tracer, func: Callable[..., Any], args: Any, kwargs: dict[str, Any]) -> Any:
    dev = _concrete(func, args, kwargs)
    v = tr.frame.builder.value("prim::device", [tr.value_of(args[0])], DeviceType)
    tr.frame.bind(dev, v)
    return dev


def _h_numel(tr: Tracer, func: Callable[..., Any], args: Any, kwargs: dict[str, Any]) -> Any:
    return tr.call_op("aten::numel", args, kwargs)


def _h_len(tr: Tracer, func: Callable[..., Any], args: Any, kwargs: dict[str, Any]) -> Any:
    return tr.call_op("aten::len", args, kwargs)


def _h_bool(tr: Tracer, func: Callable[..., Any], args: Any, kwargs: dict[str, Any]) -> Any:
    result = bool(_concrete(func, args, kwargs))
    cond = tr.frame.builder.value("aten::Bool.Tensor", [tr.value_of(args[0])])
    tr.guard(cond, result, "a tensor")
    return result


def _h_number(tr: Tracer, func: Callable[..., Any], args: Any, kwargs: dict[str, Any]) -> Any:
    """``.item()`` stays a traced number; ``int(t)``/``float(t)`` are baked and guarded.

    Python's ``int()`` and ``float()`` turn whatever ``__int__``/``__float__`` return into a
    plain number, so their result cannot stay dynamic: the trace keeps the value it saw and
    checks at run time that the tensor still holds it."""
    t = args[0]
    name = func.__name__
    if name == "item" and t.dtype == torch.bool:
        return _h_bool(tr, func, args, kwargs)
    want_float = name == "__float__" or (name == "item" and t.is_floating_point())
    op = "aten::Float" if want_float else "aten::Int"
    if name == "item":
        warn_at_user("converting a tensor to a Python number (item); the value stays dynamic in "
                     "arithmetic, but Python control flow on it is fixed at trace time")
        return tr.call_op(op, (t,), {})
    seen = tr.call_op(op, (t,), {})
    b = tr.frame.builder
    kind = "float" if want_float else "int"
    plain = float(seen) if want_float else int(seen)
    same = b.value(f"aten::eq.{kind}", [tr.value_of(seen), b.constant(plain)])
    tr.guard(same, True, f"{kind}(tensor) == {seen!r}")
    return plain


def _h_tolist(tr: Tracer, func: Callable[..., Any], args: Any, kwargs: dict[str, Any]) -> Any:
    warn_at_user(f"{func.__name__}() turns a tensor into Python values; they are baked into the "
                 "trace as constants")
    return _concrete(func, args, kwargs)


def _h_constant_factory(tr: Tracer, func: Callable[..., Any], args: Any, kwargs: dict[str, Any]) -> Any:
    result = _concrete(func, args, kwargs)
    if isinstance(result, torch.Tensor):
        warn_at_user(f"torch.{func.__name__} results are recorded as constants in the trace")
        tr.frame.bind(result, tr.frame.builder.constant(result.detach(), TensorType.of(result)))
    return result


def _h_passthrough(tr: Tracer, func: Callable[..., Any], args: Any, kwargs: dict[str, Any]) -> Any:
    return _concrete(func, args, kwargs)


def _h_getitem(tr: Tracer, func: Callable[..., Any], args: Any, kwargs: dict[str, Any]) -> Any:
    return indexing.getitem(tr, args[0], args[1])


def _h_setitem(tr: Tracer, func: Callable[..., Any], args: Any, kwargs: dict[str, Any]) -> Any:
    indexing.setitem(tr, args[0], args[1], args[2])
    return None


def _getter(name: str, op: str) -> Handler:
    def h(tr: Tracer, func: Callable[..., Any], args: Any, kwargs: dict[str, Any]) -> Any:
        return tr.call_op(op, args[:1], {})
    h.__name__ = f"_h_get_{name}"
    return h


_BY_NAME: dict[str, Handler] = {
    "size": _h_size, "numel": _h_numel, "__len__": _h_len, "__bool__": _h_bool,
    "__int__": _h_number, "__float__": _h_number, "__index__": _h_number, "item": _h_number,
    "tolist": _h_tolist, "numpy": _h_tolist, "__array__": _h_tolist,
    "__getitem__": _h_getitem, "__setitem__": _h_setitem,
    "tensor": _h_constant_factory, "as_tensor": _h_constant_factory,
    "from_numpy": _h_constant_factory, "asarray": _h_constant_factory,
}
_PASSTHROUGH = {
    "dim", "ndimension", "__format__", "__repr__", "__str__", "__hash__", "__reduce_ex__",
    "__deepcopy__", "data_ptr", "is_contiguous", "is_floating_point", "is_complex", "stride",
    "storage_offset", "element_size", "get_device", "untyped_storage", "requires_grad_",
    "register_hook", "retain_grad", "is_tensor", "__dir__", "__contains__", "is_nonzero",
    "_is_view", "is_set_to", "has_names", "is_inference", "__instancecheck__",
    "is_same_size", "nbytes", "itemsize", "is_pinned", "is_shared",
}
_GETTERS: dict[str, Handler] = {
    "shape": _h_shape, "device": _h_device, "T": _getter("T", "aten::numpy_T"),
    "mT": _getter("mT", "aten::mT"), "H": _getter("H", "aten::adjoint"),
    "mH": _getter("mH", "aten::mH"), "data": _getter("data", "aten::detach"),
    "real": _getter("real", "aten::real"), "imag": _getter("imag", "aten::imag"),
}


def _special_handler(func: Callable[..., Any]) -> Optional[Handler]:
    name = getattr(func, "__name__", "")
    if name == "__get__":
        owner = getattr(func, "__self__", None)
        attr = getattr(owner, "__name__", "")
        getter: Handler = _GETTERS.get(str(attr), _h_passthrough)
        return getter
    if name in _PASSTHROUGH:
        return _h_passthrough
    return _BY_NAME.get(name)
