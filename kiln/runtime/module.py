"""Kiln's callable objects: :class:`ScriptFunction`, :class:`ScriptModule` and their methods.

A :class:`ScriptModule` is a real ``torch.nn.Module``: the tracer (or the archive loader)
builds it by registering the original parameters and buffers, adding submodules, setting
plain attributes and defining methods as graphs whose input 0 is ``self``.  Everything
``nn.Module`` offers -- ``parameters()``, ``state_dict()``, ``train()``/``eval()``, ``to()``,
hooks -- keeps working because it *is* an ``nn.Module``.

Running a method
    Each method runs its *inlined* graph: calls to submodules' methods (reached through
    ``prim::GetAttr`` chains from ``self``) are replaced by their bodies, dead code is removed,
    and the result is compiled by :func:`~kiln.runtime.codegen.compile_graph` for this
    instance (so attribute reads go straight to the module dicts).  Compilation is lazy,
    happens once per instance and method (a lock with a double check makes concurrent first
    calls compile exactly once), and is undone whenever the structure it relied on changes:
    a method (re)defined, a submodule replaced, a member changing kind, constants converted
    by ``to()``.  A module that compiles registers itself (weakly) with every ScriptModule of
    its subtree; a structural change of any of them drops the compiled code of those
    registered, and their next call recompiles.

Profiling and specialization
    Each compiled method is served by an :class:`~kiln.runtime.executor.Executor`: the first
    call runs the general graph in the interpreter while recording tensor types, then a copy
    specialized to them (input sizes folded, fused where possible) runs behind guards that
    check only what it relies on -- often nothing, and then there is no guard at all.  The
    executor publishes what calls should run (``_kiln_install``): ``ScriptMethod.fn`` and, for
    forward, ``_kiln_forward``.  ``graph_for(*inputs)`` shows the specialized graph;
    ``m.graph`` stays the general one.  Invalidation drops the executors with the code.

The call fast path
    ``module(x)`` skips ``nn.Module.__call__``'s machinery when no hooks are registered (on
    the module or globally) and calls the installed code directly; with hooks, it defers
    to ``nn.Module.__call__``, which calls ``self.forward`` -- the same method.

Devices and dtypes
    ``_apply`` (behind ``to()``, ``cuda()``, ``double()``...) converts tensor constants baked
    into the method graphs with the same function ``nn.Module`` applies to parameters, so a
    device move carries the constants along and a dtype cast changes floating ones only.
"""

from __future__ import annotations

import copy
import threading
import weakref
from collections.abc import Callable
from typing import Any, Optional

import torch
import torch.nn.modules.module as _nn_module

from kiln.errors import KilnRuntimeError
from kiln.ir.graph import Graph, Node, tensor_constants
from kiln.ir.types import TensorType, Type
from kiln.passes.dce import eliminate_dead_code
from kiln.passes.inline import inline_calls
from kiln.runtime.codegen import CompiledFunction, DeferredFunction, EntryGuard, compile_graph, failed_at_call
from kiln.runtime.executor import Executor, compile_lock, profiling_enabled, without_gc
from kiln.runtime.members import slot_of

# The one lock for all compilation (see kiln.runtime.executor).
_compile_lock = compile_lock

# nn.Module's process-wide hook tables (mutated in place by torch, never rebound).
_GLOBAL_HOOKS = (_nn_module._global_forward_hooks, _nn_module._global_forward_pre_hooks,
                 _nn_module._global_backward_hooks, _nn_module._global_backward_pre_hooks)
_nn_call = torch.nn.Module.__call__   # hooks and all


def _graph_to_code(graph: Graph, name: str, defaults: Optional[dict[str, Any]] = None) -> str:
    from kiln.ir.pycode import graph_to_code  # lazily: the code view is optional at run time
    return graph_to_code(graph, name, defaults=defaults)


class _Interception(threading.local):
    """A frontend that records calls (the tracer) sets ``fn`` for its thread: calls of Kiln
    functions are then handed to it, so that it can copy their graphs -- control flow and
    all -- into the graph it is building, instead of seeing only their results."""

    fn: Optional[Callable[[Any, tuple[Any, ...]], Any]] = None


interception = _Interception()


class ScriptFunction:
    """A free function held as a graph; calling it runs the graph's generated code."""

    def __init__(self, name: str, graph: Graph, defaults: Optional[dict[str, Any]] = None) -> None:
        self.name = name
        self.graph = graph
        self.defaults = defaults or {}     # input name -> default value
        self._compiled: Optional[CompiledFunction] = None
        self._executor: Optional[Executor] = None
        self._runner: Optional[Callable[..., Any]] = None   # what a call runs (the executor's choice)

    def __call__(self, *args: Any, **kwargs: Any) -> Any:
        run = self._runner or self._prepare()
        if kwargs or self.defaults:
            args = self._bind(args, kwargs)
        if interception.fn is not None:
            return interception.fn(self, args)
        try:
            return run(*args)
        except TypeError as e:
            if failed_at_call(e):
                raise self._compile().arity_error(len(args)) from None
            raise

    def _bind(self, args: tuple[Any, ...], kwargs: dict[str, Any]) -> tuple[Any, ...]:
        cf = self._compiled or self._compile()
        if kwargs or len(args) < len(cf.input_names):
            return cf.bind(args, kwargs, self.defaults)
        return args

    def _compile(self) -> CompiledFunction:
        with _compile_lock:
            if self._compiled is None:
                self._compiled = compile_graph(self.graph, self.name, self_arg=False)
            return self._compiled

    def _prepare(self) -> Callable[..., Any]:
        """Compile, and set up the executor that chooses what calls run."""
        with _compile_lock:
            cf = self._compile()
            if self._executor is None:
                name = self.name

                def build(graph: Graph) -> CompiledFunction:
                    return compile_graph(graph, name, self_arg=False)
                self._executor = Executor(cf, build, self._install)
                self._executor.reinstall()
            return self._runner or cf.fn

    def _install(self, ex: Executor) -> None:
        if ex is self._executor:
            self._runner = ex.fn

    def graph_for(self, *args: Any, **kwargs: Any) -> Graph:
        """Call the function on these inputs and return the optimized graph that ran them
        (specialized to their types; see :mod:`kiln.runtime.executor`)."""
        self._prepare()
        args = self._bind(args, kwargs)
        assert self._executor is not None
        return self._executor.graph_for(args)

    @property
    def inlined_graph(self) -> Graph:
        """A copy of the graph (a free function has no method calls to inline)."""
        return self.graph.copy()

    @property
    def code(self) -> str:
        return _graph_to_code(self.graph, self.name, self.defaults)

    @property
    def source(self) -> str:
        """The generated Python source that runs this function (for debugging)."""
        return (self._compiled or self._compile()).source

    def __repr__(self) -> str:
        return f"<kiln.ScriptFunction {self.name!r}>"


class ScriptMethod:
    """A method of a :class:`ScriptModule`, bound to its instance."""

    __slots__ = ("owner", "name", "fn")

    def __init__(self, owner: ScriptModule, name: str) -> None:
        self.owner = owner
        self.name = name
        self.fn: Optional[Callable[..., Any]] = None   # the compiled code, once there is some

    def __call__(self, *args: Any, **kwargs: Any) -> Any:
        fn = self.fn
        if fn is None or kwargs:
            return self.owner._kiln_call(self.name, args, kwargs)
        try:
            return fn(self.owner, *args)
        except TypeError as e:
            if failed_at_call(e):
                if self.owner.__dict__["_kiln_defaults"].get(self.name):
                    return self.owner._kiln_call(self.name, args, {})
                raise self.owner._kiln_entry(self.name).arity_error(len(args) + 1) from None
            raise

    @property
    def graph(self) -> Graph:
        return self.owner._kiln_graphs[self.name]

    @property
    def inlined_graph(self) -> Graph:
        return self.owner._kiln_inline(self.name)

    def graph_for(self, *args: Any, **kwargs: Any) -> Graph:
        """Call the method on these inputs and return the optimized graph that ran them
        (specialized to their types; see :mod:`kiln.runtime.executor`)."""
        owner = self.owner
        ex = owner._kiln_executor(self.name)
        defaults = owner.__dict__["_kiln_defaults"].get(self.name)
        if kwargs or (defaults and len(args) < len(ex.general.input_names)):
            args = ex.general.bind(args, kwargs, defaults)
        return ex.graph_for((owner, *args))

    @property
    def code(self) -> str:
        return _graph_to_code(self.graph, self.name, self.owner.__dict__["_kiln_defaults"].get(self.name))

    @property
    def source(self) -> str:
        """The generated Python source this method runs (for debugging)."""
        return self.owner._kiln_entry(self.name).source

    def __repr__(self) -> str:
        return f"<kiln.ScriptMethod {self.owner.original_name}.{self.name}>"


def _pinned(module: Any) -> bool:
    """Modules whose structure compiled code may rely on: Kiln's, which watch it."""
    return isinstance(module, ScriptModule)


def _slot_of(module: torch.nn.Module, name: str) -> str:
    """Where ``name`` lives on ``module``: one of the module dicts, or ``"attr"``."""
    return slot_of(module, name) or "attr"


class ScriptModule(torch.nn.Module):
    """An ``nn.Module`` whose methods are graphs (see the module docstring)."""

    # Kiln's own state; kept in __dict__ directly (not module members), declared for mypy.
    _kiln_qualname: str
    _kiln_original_name: str
    _kiln_graphs: dict[str, Graph]
    _kiln_attributes: list[str]
    _kiln_compiled: dict[str, CompiledFunction]
    _kiln_forward: Optional[Callable[..., Any]]
    _kiln_dependents: weakref.WeakSet[ScriptModule]
    _kiln_executors: dict[str, Executor]

    def __init__(self, qualname: str, original_name: str) -> None:
        super().__init__()
        state = self.__dict__   # bypass __setattr__: these are not module members
        state["_kiln_qualname"] = qualname
        state["_kiln_original_name"] = original_name
        state["_kiln_graphs"] = {}          # method name -> Graph (input 0 is self)
        state["_kiln_attributes"] = []      # names given by _kiln_set_attribute, in order
        state["_kiln_compiled"] = {}        # method name -> CompiledFunction for this instance
        state["_kiln_forward"] = None       # forward's guarded entry, for __call__
        state["_kiln_executors"] = {}       # method name -> its Executor (with the compiled code)
        state["_kiln_defaults"] = {}        # method name -> {input name: default value}
        state["_kiln_dependents"] = weakref.WeakSet()   # modules whose compiled code relies on us
        state["_kiln_attr_types"] = {}      # attribute name -> declared IR type (when known)
        state["_kiln_constants"] = {}       # Final / __constants__ values, folded into the graphs

    # -- construction (used by the tracer and the loader) ------------------------------------
    def _kiln_define_method(self, name: str, graph: Graph,
                            defaults: Optional[dict[str, Any]] = None) -> None:
        """Define (or redefine) method ``name``; ``graph``'s input 0 is ``self``; ``defaults``
        maps input names to the values a call may leave out."""
        self._kiln_graphs[name] = graph
        self.__dict__["_kiln_defaults"][name] = dict(defaults or {})
        self.__dict__[name] = ScriptMethod(self, name)
        self._kiln_invalidate()

    def _kiln_set_attribute(self, name: str, value: Any, type: Optional[Type] = None) -> None:
        """Set a plain attribute (int, float, str, bool, tuple, ...) that methods may read;
        ``type`` is its declared IR type (``List[int]`` for an empty list, ``Optional[int]``
        for None ...), which saving needs when the value alone does not tell."""
        setattr(self, name, value)
        if name not in self._kiln_attributes:
            self._kiln_attributes.append(name)
        if type is not None:
            self.__dict__["_kiln_attr_types"][name] = type

    def _kiln_set_constant(self, name: str, value: Any) -> None:
        """A module constant (``Final``): folded into compiled graphs, readable as an attribute."""
        self.__dict__["_kiln_constants"][name] = value
        self.__dict__[name] = value

    def define(self, source: str) -> None:
        """(Re)define methods from TorchScript source text (``def name(self, ...): ...``)."""
        from kiln.frontend.script.api import define_methods  # the compiler, on demand
        define_methods(self, source)

    @property
    def original_name(self) -> str:
        return str(self._kiln_original_name)

    @property
    def qualified_name(self) -> str:
        return str(self._kiln_qualname)

    @property
    def method_names(self) -> list[str]:
        return list(self._kiln_graphs)

    # -- the forward method's views ------------------------------------------------------------
    @property
    def graph(self) -> Graph:
        return self._kiln_method("forward").graph

    @property
    def inlined_graph(self) -> Graph:
        return self._kiln_method("forward").inlined_graph

    @property
    def code(self) -> str:
        return self._kiln_method("forward").code

    def graph_for(self, *args: Any, **kwargs: Any) -> Graph:
        """Run forward on these inputs and return the optimized graph that ran them
        (specialized to their types; see :mod:`kiln.runtime.executor`)."""
        return self._kiln_method("forward").graph_for(*args, **kwargs)

    def _kiln_method(self, name: str) -> ScriptMethod:
        method = self.__dict__.get(name)
        if not isinstance(method, ScriptMethod):
            raise KilnRuntimeError(f"{self.original_name} ({self.qualified_name}) has no method {name!r}")
        return method

    # -- calling -------------------------------------------------------------------------------
    def __call__(self, *args: Any, **kwargs: Any) -> Any:
        # ``_kiln_forward`` is forward's guarded entry: it checks this module's and the global
        # hook tables itself (closure cells, no attribute reads) and defers to nn.Module's
        # __call__ when any is set.  nn.Module defines __getattr__, which makes every attribute
        # read slow (~50ns in CPython 3.11), so this path reads __dict__ once.
        entry = self.__dict__["_kiln_forward"] or self._kiln_forward_entry()
        if kwargs:
            return _nn_call(self, *args, **kwargs)
        try:
            return entry(self, *args)
        except TypeError as e:
            if failed_at_call(e):
                if self.__dict__["_kiln_defaults"].get("forward"):
                    return self._kiln_call("forward", args, {})   # inputs left to their defaults
                raise self._kiln_entry("forward").arity_error(len(args) + 1) from None
            raise

    def _kiln_forward_entry(self) -> Callable[..., Any]:
        with _compile_lock:   # stored under the lock, so a concurrent invalidation wins
            self._kiln_install(self._kiln_executor("forward"))
            entry: Callable[..., Any] = self.__dict__["_kiln_forward"]
            return entry

    def _kiln_call(self, name: str, args: tuple[Any, ...], kwargs: dict[str, Any]) -> Any:
        ex = self._kiln_executor(name)
        defaults = self.__dict__["_kiln_defaults"].get(name)
        if kwargs or (defaults and len(args) < len(ex.general.input_names)):
            args = ex.general.bind(args, kwargs, defaults)
        try:
            return ex.fn(self, *args)
        except TypeError as e:
            if failed_at_call(e):
                raise ex.general.arity_error(len(args) + 1) from None
            raise

    def _kiln_entry(self, name: str) -> CompiledFunction:
        """The general compiled code of method ``name`` for this instance (compiled on first
        use, with the executor that decides what calls run)."""
        return self._kiln_executor(name).general

    def _kiln_executor(self, name: str) -> Executor:
        """The executor of method ``name``, compiling its general code on first use."""
        with _compile_lock:
            ex: Optional[Executor] = self._kiln_executors.get(name)
            if ex is None:
                self._kiln_method(name)
                guard = EntryGuard(self._kiln_hook_tables(), _nn_call) if name == "forward" else None

                def build(g: Graph) -> CompiledFunction:
                    return compile_graph(g, name, self_arg=True, self_obj=self, pin=_pinned, guard=guard)
                with without_gc():
                    graph = self._kiln_inline(name)
                    self._kiln_fold_state(graph)
                    # with the profiling executor on, the first calls run in the interpreter
                    # and then specialized code: the general code is made when first needed
                    cf = DeferredFunction(graph, name, True, build) if profiling_enabled() else build(graph)
                self._kiln_compiled[name] = cf
                ex = Executor(cf, build, self._kiln_install, guard)
                self._kiln_executors[name] = ex
                ex.reinstall()
                for sub in self.modules():   # the code relies on the whole subtree
                    if isinstance(sub, ScriptModule):
                        sub._kiln_dependents.add(self)
            return ex

    def _kiln_fold_state(self, graph: Graph) -> None:
        """The tree's fixed state (``training`` flags, literal attributes, None members) as
        constants, and the branches on it folded away (see passes/module_state.py)."""
        from kiln.passes import run_pipeline
        from kiln.passes.module_state import fold_module_state
        if fold_module_state(graph, self):
            run_pipeline(graph, ("constant_fold", "dce"), max_rounds=2)
        else:
            eliminate_dead_code(graph)

    def _kiln_install(self, ex: Executor) -> None:
        """Route calls of ``ex``'s method to what it chose (ignored from a dropped executor)."""
        name = ex.name
        if self.__dict__.get("_kiln_executors", {}).get(name) is not ex:
            return
        self._kiln_method(name).fn = ex.fn
        if name == "forward":
            compiled_call = self.__dict__.get("_compiled_call_impl") is not None
            # Module.compile() was used: let nn.Module run it
            self.__dict__["_kiln_forward"] = _nn_call if compiled_call else ex.entry

    def _kiln_hook_tables(self) -> tuple[Any, ...]:
        state = self.__dict__
        return (state["_forward_hooks"], state["_forward_pre_hooks"], state["_backward_hooks"],
                state["_backward_pre_hooks"], *_GLOBAL_HOOKS)

    def _kiln_invalidate(self) -> None:
        """Our structure changed: drop the compiled code of every module relying on it."""
        with _compile_lock:
            dependents = self.__dict__.get("_kiln_dependents")
            for m in list(dependents or ()):
                m._kiln_reset()
            if dependents is not None:
                dependents.clear()
            if "_kiln_compiled" in self.__dict__:
                self._kiln_reset()

    def _kiln_reset(self) -> None:
        self.__dict__["_kiln_compiled"] = {}
        self.__dict__["_kiln_executors"] = {}   # specializations go with the code
        self.__dict__["_kiln_forward"] = None
        for name in self._kiln_graphs:
            method = self.__dict__.get(name)
            if isinstance(method, ScriptMethod):
                method.fn = None

    # -- inlining ------------------------------------------------------------------------------
    def _kiln_inline(self, name: str) -> Graph:
        """A copy of method ``name`` with calls on (sub)modules of ``self`` inlined."""
        graph = self._kiln_graphs[name].copy()
        inline_calls(graph, self._kiln_resolver(graph))
        return graph

    def _kiln_resolver(self, graph: Graph) -> Callable[[Node], Optional[Graph]]:
        """Map a CallMethod in ``graph`` to the callee's graph, following GetAttrs from self."""
        root = graph.inputs[0] if graph.inputs else None

        def resolve(node: Node) -> Optional[Graph]:
            path: list[str] = []
            v = node.inputs[0]
            while v is not root:
                if v.node.kind != "prim::GetAttr":
                    return None
                path.append(v.node.attrs["name"])
                v = v.node.inputs[0]
            obj: Any = self
            for attr in reversed(path):
                obj = obj._modules.get(attr) if isinstance(obj, torch.nn.Module) else None
            if isinstance(obj, ScriptModule):
                return obj._kiln_graphs.get(node.attrs["name"])
            return None
        return resolve

    # -- structural changes invalidate compiled code -------------------------------------------
    def __setattr__(self, name: str, value: Any) -> None:
        before = _slot_of(self, name)
        folded = self.__dict__.get("_kiln_folded")
        old = _member_value(self, name, before) if folded and name in folded else None
        super().__setattr__(name, value)
        # compiled code reads members through the dict they live in, and inlined submodules'
        # bodies: a member changing dict, or a submodule being replaced, makes it stale; so
        # does a new value of state the code was specialized to (passes/module_state.py)
        if before == "_modules" or _slot_of(self, name) != before or name == "_compiled_call_impl" or \
                (folded and name in folded and _changes_folded(self, name, old, value)):
            self._kiln_invalidate()

    def __delattr__(self, name: str) -> None:
        super().__delattr__(name)
        self._kiln_invalidate()   # pinned code may read the attribute from __dict__

    def register_parameter(self, name: str, param: Optional[torch.nn.Parameter]) -> None:
        super().register_parameter(name, param)
        self._kiln_invalidate()

    def register_buffer(self, name: str, tensor: Optional[torch.Tensor], persistent: bool = True) -> None:
        super().register_buffer(name, tensor, persistent)
        self._kiln_invalidate()

    def add_module(self, name: str, module: Optional[torch.nn.Module]) -> None:
        super().add_module(name, module)
        self._kiln_invalidate()

    # -- devices and dtypes ----------------------------------------------------------------------
    def _apply(self, fn: Callable[[torch.Tensor], torch.Tensor], recurse: bool = True) -> ScriptModule:
        super()._apply(fn, recurse)  # type: ignore[no-untyped-call]
        with torch.no_grad():   # constants are not part of any autograd graph
            for graph in self._kiln_graphs.values():
                _convert_constants(graph, fn)
        self._kiln_invalidate()
        return self

    # -- presentation and copying ----------------------------------------------------------------
    def _get_name(self) -> str:
        return "KilnScriptModule"

    def extra_repr(self) -> str:
        return f"original_name={self.original_name}"

    def __deepcopy__(self, memo: dict[int, Any]) -> ScriptModule:
        """A deep copy; graphs are copied with :meth:`Graph.copy` (a linked list of nodes
        would overflow the recursion limit of generic deepcopy), their tensor constants with
        ``memo``; compiled code is not copied (the copy compiles its own)."""
        new = type(self).__new__(type(self))
        memo[id(self)] = new
        for key, value in self.__dict__.items():
            if key == "_kiln_graphs":
                value = {n: _copy_graph(g, memo) for n, g in value.items()}
            elif key in ("_kiln_compiled", "_kiln_executors"):
                value = {}
            elif key == "_kiln_forward":
                value = None
            elif key == "_kiln_dependents":
                value = weakref.WeakSet()
            elif isinstance(value, ScriptMethod):
                value = ScriptMethod(new, value.name)
            else:
                value = copy.deepcopy(value, memo)
            new.__dict__[key] = value
        return new


def _convert_constants(graph: Graph, fn: Callable[[torch.Tensor], torch.Tensor]) -> None:
    for node in tensor_constants(graph):
        new = fn(node.attrs["value"])
        node.attrs["value"] = new
        out = node.outputs[0]
        if isinstance(out.type, TensorType) and not out.type.is_plain():
            out.type = TensorType.of(new)


def _copy_graph(graph: Graph, memo: dict[int, Any]) -> Graph:
    g = graph.copy()
    for node in tensor_constants(g):
        node.attrs["value"] = copy.deepcopy(node.attrs["value"], memo)
    return g


def _member_value(mod: torch.nn.Module, name: str, slot: str) -> Any:
    return mod.__dict__.get(name) if slot == "attr" else mod.__dict__[slot].get(name)


def _changes_folded(mod: ScriptModule, name: str, old: Any, new: Any) -> bool:
    from kiln.passes.module_state import changes_folded
    return changes_folded(mod, name, old, new)
