"""``kiln.trace`` and ``kiln.trace_module``: record a run of a function or module as a graph.

A trace runs the user's code once on example inputs under a :class:`~kiln.frontend.tracer.Tracer`
and keeps what it did.  For a module, every submodule call becomes its own method graph on a
:class:`~kiln.runtime.module.ScriptModule` mirroring the module tree (sharing its parameters and
buffers), called from the parent through ``prim::GetAttr`` + ``prim::CallMethod``.

What Python decided at trace time (branches, loop counts, list lengths) is fixed in the graph.
Kiln warns at the user's line where that happens and, unlike TorchScript, records run-time checks
(guards, list-length checks) so a trace raises rather than silently returns a wrong answer for an
input that would have taken another path.
"""

from __future__ import annotations

import inspect
import threading
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from typing import Any, Optional, Union

import torch

from kiln.errors import TracingCheckError, TracingError
from kiln.frontend.tracer import (
    Frame,
    Tracer,
    qualified_class_name,
    user_location,
    warn_at_user,
)
from kiln.frontend.values import TracedFloat, TracedInt
from kiln.ir.builder import Builder
from kiln.ir.graph import Graph, Value, clone_block_into
from kiln.ir.types import BoolType, ClassType, ListType, type_of_value, unify
from kiln.runtime.module import ScriptFunction, ScriptModule

_ORIGINAL_CALL = torch.nn.Module.__call__
_Scripted = dict[int, tuple[ScriptModule, str]]  # id(nn.Module) -> (its ScriptModule, scope)
_tls = threading.local()
_patch_lock = threading.Lock()
_patch_users = 0


def _module_call(self: torch.nn.Module, *args: Any, **kwargs: Any) -> Any:
    session: Optional[_Session] = getattr(_tls, "session", None)
    if session is None:
        return _ORIGINAL_CALL(self, *args, **kwargs)
    return session.call_module(self, args, kwargs)


@contextmanager
def _submodule_calls_traced(session: _Session) -> Iterator[None]:
    """Route ``nn.Module.__call__`` through the session, for this thread only."""
    global _patch_users
    with _patch_lock:
        _patch_users += 1
        torch.nn.Module.__call__ = _module_call  # type: ignore[method-assign]
    _tls.session = session
    try:
        yield
    finally:
        _tls.session = None
        with _patch_lock:
            _patch_users -= 1
            if _patch_users == 0:
                torch.nn.Module.__call__ = _ORIGINAL_CALL  # type: ignore[method-assign]


class _Session:
    """One trace of a module tree (or a function) in one training mode."""

    def __init__(self, root: Optional[torch.nn.Module], scripted: _Scripted) -> None:
        self.root = root
        self.scripted = scripted
        self.tracer = Tracer()
        self.methods: dict[int, dict[str, Graph]] = {}
        self._paths: dict[int, dict[int, tuple[str, ...]]] = {}

    def trace_callable(self, fn: Callable[..., Any], args: tuple[Any, ...], kwargs: dict[str, Any],
                       self_type: Optional[ClassType]) -> Graph:
        graph = Graph()
        self_value = graph.add_input(self_type, "self") if self_type is not None else None
        frame = Frame(graph, self.root if self_type is not None else None, self_value, None)
        inputs = [(n, _as_traced_number(v)) for n, v in _bind_inputs(fn, args, kwargs)]
        with self.tracer.in_frame(frame):
            for name, obj in inputs:
                bind_structure(self.tracer, obj, graph.add_input(type_of_value(obj), name))
            with _submodule_calls_traced(self), self.tracer.active():
                result = fn(*[obj for _, obj in inputs])
            graph.register_output(structure_value(self.tracer, result))
        _clean(graph)
        return graph

    def call_module(self, mod: torch.nn.Module, args: tuple[Any, ...], kwargs: dict[str, Any]) -> Any:
        tracer = self.tracer
        parent = tracer.frame
        location = user_location()
        entry = self.scripted.get(id(mod))
        path = self._path_from(parent.module, mod)
        if entry is None or path is None:
            return _ORIGINAL_CALL(mod, *args, **kwargs)  # not part of the traced tree: inline
        sm, scope = entry
        inputs = [(n, v) for n, v in _bind_inputs(mod.forward, args, kwargs) if parent.is_traced(v)]
        graph = Graph()
        child = Frame(graph, mod, graph.add_input(ClassType(sm.qualified_name), "self"), scope)
        with tracer.in_frame(child):
            for name, obj in inputs:
                bind_structure(tracer, obj, graph.add_input(type_of_value(obj), name))
            result = _ORIGINAL_CALL(mod, *args, **kwargs)
            out = structure_value(tracer, result)
            graph.register_output(out)
        _clean(graph)
        method = self._add_method(sm, "forward", graph)
        parent.builder.source = location
        sub = parent.attribute(path, ClassType(sm.qualified_name))
        in_values = [structure_value(tracer, obj) for _, obj in inputs]
        called = parent.builder.call_method(sub, method, in_values, out.type)
        bind_structure(tracer, result, called)
        return result

    def _path_from(self, parent: Optional[torch.nn.Module],
                   mod: torch.nn.Module) -> Optional[tuple[str, ...]]:
        if parent is None:
            return None
        paths = self._paths.get(id(parent))
        if paths is None:
            paths = {id(m): tuple(n.split(".")) for n, m in parent.named_modules() if n}
            self._paths[id(parent)] = paths
        return paths.get(id(mod))

    def _add_method(self, sm: ScriptModule, base: str, graph: Graph) -> str:
        table = self.methods.setdefault(id(sm), {})
        text = str(graph)
        name, k = base, 0
        while name in table and str(table[name]) != text:
            k += 1
            name = f"{base}_{k}"
        table.setdefault(name, graph)
        return name


def _clean(graph: Graph) -> None:
    from kiln.passes import PASSES
    PASSES["dce"](graph)


def _bind_inputs(fn: Callable[..., Any], args: tuple[Any, ...],
                 kwargs: dict[str, Any]) -> list[tuple[str, Any]]:
    """Example inputs matched to the parameter names of ``fn``, in signature order."""
    try:
        sig = inspect.signature(fn)
        bound = sig.bind(*args, **kwargs)
    except (TypeError, ValueError) as e:
        if kwargs:
            raise TracingError(f"example inputs do not match the signature of {fn!r}: {e}") from None
        return [(f"input_{i}", a) for i, a in enumerate(args)]
    out: list[tuple[str, Any]] = []
    for name, value in bound.arguments.items():
        kind = sig.parameters[name].kind
        if kind is inspect.Parameter.VAR_POSITIONAL:
            out.extend((f"{name}_{i}", v) for i, v in enumerate(value))
        elif kind is inspect.Parameter.VAR_KEYWORD:
            raise TracingError(f"kiln.trace cannot take **{name} inputs; name the arguments")
        else:
            out.append((name, value))
    return out


def _as_traced_number(obj: Any) -> Any:
    """Python numbers given as inputs stay inputs: they become traced numbers."""
    if isinstance(obj, bool):
        return obj
    if isinstance(obj, int):
        return TracedInt(obj)
    if isinstance(obj, float):
        return TracedFloat(obj)
    return obj


def structure_value(tracer: Tracer, obj: Any) -> Value:
    """The IR value of an input/output structure in the current frame."""
    b = tracer.frame.builder
    if isinstance(obj, tuple):
        return b.tuple([structure_value(tracer, o) for o in obj])
    if isinstance(obj, list):
        list_type = type_of_value(obj)
        assert isinstance(list_type, ListType)
        return b.list([structure_value(tracer, o) for o in obj], list_type.elem)
    if isinstance(obj, dict):
        keys = [b.constant(k) for k in obj]
        vals = [structure_value(tracer, v) for v in obj.values()]
        return b.dict(keys, vals, type_of_value(obj))
    if isinstance(obj, (torch.Tensor, TracedInt, TracedFloat)) or tracer.frame.lookup(obj) is not None:
        return tracer.value_of(obj)
    if obj is None or isinstance(obj, (bool, int, float, str)):
        return b.constant(obj)
    raise TracingError(f"kiln.trace cannot use a {type(obj).__name__} as an input or output; "
                       "use tensors, numbers, and tuples, lists or dicts of them")


def bind_structure(tracer: Tracer, obj: Any, value: Value) -> None:
    """Map the leaves of ``obj`` (tensors, traced numbers) to parts of ``value``."""
    frame = tracer.frame
    b = frame.builder
    if isinstance(obj, (torch.Tensor, TracedInt, TracedFloat)):
        frame.bind(obj, value)
    elif isinstance(obj, (tuple, list)) and obj:
        parts = b.unpack(value, [type_of_value(o) for o in obj])
        part: Value
        for o, part in zip(obj, parts):
            bind_structure(tracer, o, part)
    elif isinstance(obj, dict):
        for k, o in obj.items():
            op = "aten::__getitem__.Dict_str" if isinstance(k, str) else "aten::__getitem__.Dict_int"
            bind_structure(tracer, o, b.value(op, [value, b.constant(k)], type_of_value(o)))


# ---------------------------------------------------------------------------------------------
# module trees


def _script_tree(root: torch.nn.Module) -> _Scripted:
    """A ScriptModule for every module under ``root``, sharing parameters and buffers."""
    made: _Scripted = {}

    def build(m: torch.nn.Module, scope: str) -> ScriptModule:
        if id(m) in made:
            return made[id(m)][0]
        sm = ScriptModule(qualified_class_name(type(m)), type(m).__name__)
        made[id(m)] = (sm, scope)
        for name, child in m.named_children():
            sm.add_module(name, build(child, f"{scope}.{name}"))
        for name, p in m._parameters.items():
            sm.register_parameter(name, p)
        for name, buf in m._buffers.items():
            sm.register_buffer(name, buf, persistent=name not in m._non_persistent_buffers_set)
        sm.training = m.training
        return sm

    build(root, "__module")
    return made


def _merge_modes(train: Graph, eval_: Graph) -> Graph:
    """One graph that runs ``train`` when ``self.training`` is set and ``eval_`` otherwise."""
    g = Graph()
    env_t: dict[Value, Value] = {}
    env_e: dict[Value, Value] = {}
    for vt, ve in zip(train.inputs, eval_.inputs):
        t = unify(vt.type, ve.type) or vt.type
        nv = g.add_input(t, vt.name)
        env_t[vt], env_e[ve] = nv, nv
    b = Builder(g)
    flag = b.get_attr(g.inputs[0], "training", BoolType)
    out_types = [unify(a.type, c.type) or a.type for a, c in zip(train.outputs, eval_.outputs)]
    node = b.if_(flag, out_types)
    clone_block_into(train.block, node.blocks[0], env_t)
    clone_block_into(eval_.block, node.blocks[1], env_e)
    for v in node.outputs:
        g.register_output(v)
    return g


def _run_session(root: torch.nn.Module, scripted: _Scripted,
                 methods: dict[str, tuple[tuple[Any, ...], dict[str, Any]]]) -> _Session:
    session = _Session(root, scripted)
    root_sm = scripted[id(root)][0]
    for name, (args, kwargs) in methods.items():
        fn = getattr(root, name)
        graph = session.trace_callable(fn, args, kwargs, ClassType(root_sm.qualified_name))
        session.methods.setdefault(id(root_sm), {})[name] = graph
    return session


@contextmanager
def _mode(root: torch.nn.Module, training: Optional[bool]) -> Iterator[None]:
    saved = [(m, m.training) for m in root.modules()]
    if training is not None:
        root.train(training)
    try:
        yield
    finally:
        for m, t in saved:
            m.training = t


def _define_methods(scripted: _Scripted, tables: list[dict[int, dict[str, Graph]]]) -> None:
    by_id = {id(sm): sm for sm, _ in scripted.values()}
    if len(tables) == 1:
        merged = tables[0]
    else:
        merged = {}
        for key in set(tables[0]) | set(tables[1]):
            a, b = tables[0].get(key, {}), tables[1].get(key, {})
            merged[key] = {}
            for name in {**a, **b}:
                ga, gb = a.get(name), b.get(name)
                if ga is None or gb is None or str(ga) == str(gb):
                    merged[key][name] = ga or gb  # type: ignore[assignment]
                else:
                    merged[key][name] = _merge_modes(ga, gb)
    for key, table in merged.items():
        for name, graph in table.items():
            by_id[key]._kiln_define_method(name, graph)


# ---------------------------------------------------------------------------------------------
# public API

Inputs = Union[Any, tuple[Any, ...]]


def _as_args(example: Inputs) -> tuple[Any, ...]:
    return example if isinstance(example, tuple) else (example,)


def trace_module(mod: torch.nn.Module, inputs: dict[str, Inputs], *, check_trace: bool = True,
                 check_inputs: Optional[list[dict[str, Inputs]]] = None, check_tolerance: float = 1e-5,
                 respect_mode: bool = False, example_inputs_is_kwarg: bool = False) -> ScriptModule:
    """Trace several methods of ``mod``: ``{"forward": inputs, "score": inputs}``.

    By default the module's current training mode is baked in (as TorchScript does) with a
    warning when the module has mode-dependent layers; ``respect_mode=True`` traces both modes
    and the result follows ``.train()``/``.eval()``."""
    if not isinstance(mod, torch.nn.Module):
        raise TracingError(f"trace_module expects an nn.Module, got {type(mod).__name__}")
    calls = {name: ((), dict(v)) if example_inputs_is_kwarg else (_as_args(v), {})
             for name, v in inputs.items()}
    for name in calls:
        if not callable(getattr(mod, name, None)):
            raise TracingError(f"{type(mod).__name__} has no method {name!r} to trace")
    scripted = _script_tree(mod)
    modes: list[Optional[bool]] = [True, False] if respect_mode else [None]
    tables = []
    mode_dependent = False
    for training in modes:
        with _mode(mod, training):
            session = _run_session(mod, scripted, calls)
        tables.append(session.methods)
        mode_dependent |= session.tracer.mode_dependent
    _define_methods(scripted, tables)
    result = scripted[id(mod)][0]
    if mode_dependent and not respect_mode:
        warn_at_user(f"{type(mod).__name__} has layers that behave differently in training and eval "
                     f"mode; the trace is fixed to {'training' if mod.training else 'eval'} mode "
                     "(trace with respect_mode=True to follow .train()/.eval())")
    if check_trace:
        for name, (args, kwargs) in calls.items():
            extra = [_as_args(ci[name]) for ci in (check_inputs or []) if name in ci]
            _check(getattr(mod, name), getattr(result, name), [args, *extra], kwargs, check_tolerance)
    return result


def trace(func: Any, example_inputs: Optional[Inputs] = None, *, check_trace: bool = True,
          check_inputs: Optional[list[Inputs]] = None, check_tolerance: float = 1e-5,
          example_kwarg_inputs: Optional[dict[str, Any]] = None,
          respect_mode: bool = False) -> Union[ScriptModule, ScriptFunction]:
    """Trace a function or module on example inputs (see the module docstring)."""
    if example_inputs is None and example_kwarg_inputs is None:
        raise TracingError("kiln.trace needs example_inputs or example_kwarg_inputs")
    kw = example_kwarg_inputs or {}
    bound_module = inspect.ismethod(func) and isinstance(func.__self__, torch.nn.Module)
    if isinstance(func, torch.nn.Module) or bound_module:
        mod: torch.nn.Module = func if isinstance(func, torch.nn.Module) else func.__self__
        name = "forward" if isinstance(func, torch.nn.Module) else func.__name__
        value: Inputs = kw if example_inputs is None else example_inputs
        cis = [{name: ci} for ci in check_inputs or []]
        return trace_module(mod, {name: value}, check_trace=check_trace, check_inputs=cis,
                            check_tolerance=check_tolerance, respect_mode=respect_mode,
                            example_inputs_is_kwarg=example_inputs is None)
    if not callable(func):
        raise TracingError(f"kiln.trace expects a function or nn.Module, got {type(func).__name__}")
    args = () if example_inputs is None else _as_args(example_inputs)
    session = _Session(None, {})
    graph = session.trace_callable(func, args, kw, None)
    fn = ScriptFunction(getattr(func, "__name__", "fn"), graph)
    if check_trace:
        extra = [_as_args(ci) for ci in check_inputs or []]
        _check(func, fn, [args, *extra], kw, check_tolerance)
    return fn


def _check(original: Callable[..., Any], traced: Callable[..., Any], inputs: list[tuple[Any, ...]],
           kwargs: dict[str, Any], tol: float) -> None:
    """Re-run the trace and the original on each input set and compare."""
    graph = getattr(traced, "inlined_graph", None)
    if graph is not None and not _checkable(graph):
        warn_at_user("the trace has nondeterministic nodes or changes module state; check_trace skipped")
        return
    for i, args in enumerate(inputs):
        label = "the example inputs" if i == 0 else f"check_inputs[{i - 1}]"
        with torch.no_grad():
            expected = original(*_clone(args), **_clone(kwargs))
            try:
                got = traced(*_clone(args), **_clone(kwargs))
            except Exception as e:  # noqa: BLE001 -- any failure of the trace is the finding
                raise TracingCheckError(f"the trace fails on {label}: {e}") from e
        try:
            torch.testing.assert_close(got, expected, rtol=tol, atol=tol, equal_nan=True,
                                       check_device=True, check_dtype=True)
        except (AssertionError, TypeError) as e:
            raise TracingCheckError(f"the trace disagrees with Python on {label}:\n{e}") from None


def _checkable(graph: Graph) -> bool:
    """Whether re-running the graph is harmless and repeatable: no random ops, and no writes to
    module state (a value read by ``prim::GetAttr``, or a view of one through a first input)."""
    state: set[Value] = set()
    for n in graph.all_nodes():
        if n.kind == "prim::GetAttr" or (n.inputs and n.inputs[0] in state and n.outputs):
            state.update(n.outputs)
        if n.op is None:
            continue
        if n.op.nondeterministic:
            return False
        written = (v for v, a in zip(n.inputs, n.op.schema.arguments) if a.is_write)
        if any(v in state for v in written):
            return False
    return True


def _clone(obj: Any) -> Any:
    if isinstance(obj, torch.Tensor):
        return obj.clone()
    if isinstance(obj, tuple):
        return tuple(_clone(o) for o in obj)
    if isinstance(obj, list):
        return [_clone(o) for o in obj]
    if isinstance(obj, dict):
        return {k: _clone(v) for k, v in obj.items()}
    return obj

