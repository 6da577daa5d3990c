"""The profiling executor: run, watch, then run code specialized to what was seen, behind guards.

One :class:`Executor` serves one method of one :class:`~kiln.runtime.module.ScriptModule`
instance (or one :class:`~kiln.runtime.module.ScriptFunction`).  Its life:

1. **Profile.**  A call no specialization covers runs the general graph in the reference
   interpreter with an observer (:class:`~kiln.runtime.specialize.Profile`) recording the
   type of every tensor value.  That run *is* the call: its result is returned, once.
2. **Specialize.**  After ``profile_runs`` such runs (default 1; runs that disagree
   generalize), :func:`~kiln.runtime.specialize.specialize` copies the graph with the recorded
   types and folds questions about the inputs (``x.size(0)``, ``x.dim()``, ``x.dtype``...)
   into constants; then :data:`SPECIALIZED_PIPELINE` (constant folding, peephole rules, dead
   code) runs, then fusion (``PASSES["fuse_dense"]`` and ``PASSES["fuse"]``, looked up when
   needed) unless grad mode was on and some value required grad (a fused kernel has no
   backward; the guard then includes the grad mode, so a later ``no_grad`` call specializes
   again).  A result that is the general graph again (types aside) reuses the general code.
3. **Guard.**  Calls are routed by a generated *dispatcher*::

       def forward(_a0, _a1):                       # self, x
           if (type(_a1) is _k_Tensor or type(_a1) is _k_Parameter) and _a1.shape == (2, 3):
               return _k_run(_a0, _a1)              # the specialized code
           return _k_miss(_a0, _a1)                 # profile a new signature, or general code

   A guard checks only what the specialization relies on (:class:`~kiln.runtime.specialize.
   Guard`): the sizes, dtype, device... of the inputs whose answers were folded, and the grad
   mode when it chose not to fuse.  Fusion guards itself (its ``prim::TypeCheck`` tests dtype,
   sizes, strides, device and requires_grad of the fused inputs and falls back to unfused
   code), and nothing else in a specialized graph depends on types.  So the common case -- a
   graph that asks nothing of its inputs -- gets a specialization valid for every call, and
   the method's entry is its compiled code itself: no guard, no extra frame, zero overhead.
   At most ``max_specializations`` (default 8) are kept; beyond them calls that match none run
   the general code.

Why not guard every property of every input at entry?  A full check (exact type, dtype,
device, sizes, strides, requires_grad, grad mode) costs about 0.6 us per tensor input on this
project's 2-core benchmark machine -- 4 % of the small MLP's whole call -- and buys nothing
where nothing was specialized on it.  Fusion is the one place where kernels are chosen for
exact types, and there the fused graph's own ``prim::TypeCheck`` is the guard (as in
TorchScript, where type checks sit around fusion groups rather than at the graph's entry): a
call with other sizes runs the unfused branch, correctly, at general-code speed.  The price:
a fused specialization made for one signature serves every other one unfused (TorchScript
re-profiles such fallbacks; Kiln does not yet), while a specialization that folded sizes
guards them and so gets one per signature.

Errors inside specialized code are the general code's: the same operators run (a fold never
answers a question that would raise, e.g. ``size(5)`` of a 2-d tensor), so the same exception
types propagate, with the same notes.  The profiled run's errors carry the same note too.

Switches: ``KILN_PROFILING=0`` in the environment, :func:`set_profiling`, or the
:func:`optimized_execution` context manager (torch.jit's name) turn specialization off for
the whole process: every executor then installs its general code (also zero overhead).
"""

from __future__ import annotations

import builtins
import dataclasses
import gc
import itertools
import linecache
import os
import threading
import warnings
import weakref
from collections.abc import Callable, Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass
from typing import Any, Optional

import torch

from kiln.errors import KilnError
from kiln.ir.graph import Graph
from kiln.runtime.codegen import CompiledFunction, EntryGuard
from kiln.runtime.codegen import _input_checker as input_checker
from kiln.runtime.interpreter import interpret
from kiln.runtime.specialize import Guard, InputCheck, Profile, same_structure, specialize, with_fallback_hook

# One lock for all compilation (and the executors' bookkeeping): compiles are rare, and a plain
# lock per object would make modules impossible to deepcopy.  Reentrant, as compiling a module
# never calls user code but may look at other modules.
compile_lock = threading.RLock()


class SpecializationWarning(RuntimeWarning):
    """Building a specialization failed; the method keeps running its general code."""


@dataclass
class Settings:
    enabled: bool
    profile_runs: int = 1
    max_specializations: int = 8


def _env_enabled() -> bool:
    return os.environ.get("KILN_PROFILING", "1").strip().lower() not in ("0", "false", "no", "off")


SETTINGS = Settings(enabled=_env_enabled())


@contextmanager
def without_gc() -> Iterator[None]:
    """Building graphs and code allocates many small, long-lived objects and no garbage
    cycles; the cyclic collector's passes over a large module's graphs would cost about as
    much as the work itself."""
    enabled = gc.isenabled()
    gc.disable()
    try:
        yield
    finally:
        if enabled:
            gc.enable()

# What runs on a specialized graph before fusion: folding what the specialization made
# constant (an input's rank, a dtype test) and the rules and dead code that follow.  Not CSE:
# on a large graph its alias analysis costs more than it saves, and a specialization is built
# while the first call waits.  Two rounds: a third has never found anything new.
SPECIALIZED_PIPELINE = ("constant_fold", "peephole", "dce")
_live: weakref.WeakSet[Executor] = weakref.WeakSet()


def set_profiling(enabled: bool, *, profile_runs: Optional[int] = None,
                  max_specializations: Optional[int] = None) -> bool:
    """Turn the profiling executor on or off for the whole process; return the previous state.

    Off, every method and function runs its general compiled code (as ``optimized_execution
    (False)`` does in TorchScript); on again, specializations made before are used again.
    ``profile_runs``: calls recorded before specializing (runs that differ generalize);
    ``max_specializations``: kept per method."""
    for name, n in (("profile_runs", profile_runs), ("max_specializations", max_specializations)):
        if n is not None and (type(n) is not int or n < 1):
            raise KilnError(f"set_profiling: {name} must be a positive int, got {n!r}")
    with compile_lock:
        previous = SETTINGS.enabled
        SETTINGS.enabled = bool(enabled)
        SETTINGS.profile_runs = profile_runs or SETTINGS.profile_runs
        SETTINGS.max_specializations = max_specializations or SETTINGS.max_specializations
        for ex in list(_live):
            ex.reinstall()
    return previous


def profiling_enabled() -> bool:
    return SETTINGS.enabled


@contextmanager
def optimized_execution(enabled: bool) -> Iterator[None]:
    """``with kiln.optimized_execution(False):`` runs general code only, inside the block."""
    previous = set_profiling(enabled)
    try:
        yield
    finally:
        set_profiling(previous)


# -- specializations and dispatchers -------------------------------------------------------------

@dataclass(eq=False)
class Specialization:
    """Code specialized to a guard.  ``compiled`` is None when it is the general code;
    ``full_guard`` describes the profiled inputs completely (see :meth:`Executor._narrow`)."""

    guard: Guard
    graph: Graph
    fn: Callable[..., Any]
    entry: Callable[..., Any]
    matches: Callable[..., bool]
    compiled: Optional[CompiledFunction]
    full_guard: Guard = Guard()


_counter = itertools.count()


class _Source:
    """Generated guard code: closure cells for every object, a factory, ``exec`` once."""

    def __init__(self, n_params: int) -> None:
        self.params = [f"_a{i}" for i in range(n_params)]
        self.cells: dict[str, Any] = {"_k_Tensor": torch.Tensor, "_k_Parameter": torch.nn.Parameter,
                                      "_k_grad": torch.is_grad_enabled}
        self.lines: list[str] = []

    def bind(self, obj: Any, hint: str) -> str:
        for name, cell in self.cells.items():
            if cell is obj:
                return name
        name = f"_k_{hint}{len(self.cells)}"
        self.cells[name] = obj
        return name

    def condition(self, guard: Guard) -> str:
        terms: list[str] = []
        if guard.grad_enabled is not None:
            terms.append(("" if guard.grad_enabled else "not ") + "_k_grad()")
        for check in guard.inputs:
            terms += _input_terms(check, self.params[check.index], self)
        return " and ".join(terms) or "True"

    def build(self, name: str) -> Callable[..., Any]:
        filename = f"<kiln-guards {name} #{next(_counter)}>"
        body = "\n".join("    " + line for line in self.lines)
        source = f"def _k_make({', '.join(self.cells)}):\n{body}\n    return {name}\n"
        namespace: dict[str, Any] = {"__builtins__": builtins}
        exec(compile(source, filename, "exec"), namespace)  # noqa: S102  (our own text: names and ints)
        fn: Callable[..., Any] = namespace["_k_make"](*self.cells.values())
        linecache.cache[filename] = (len(source), None, source.splitlines(True), filename)
        weakref.finalize(fn, linecache.cache.pop, filename, None)
        return fn


def _input_terms(check: InputCheck, p: str, src: _Source) -> list[str]:
    """Cheap tests of one input, in the order that fails fastest; the first makes sure it is a
    plain tensor, so the attribute reads after it cannot raise."""
    terms = [f"(type({p}) is _k_Tensor or type({p}) is _k_Parameter)"]
    if check.rank is not None and len(check.dims) == check.rank:
        terms.append(f"{p}.shape == ({''.join(f'{size}, ' for _, size in check.dims)})")
    elif check.rank is not None and check.dims:   # some sizes: one read of the shape
        shape = f"_k_s{check.index}"
        terms.append(f"len({shape} := {p}.shape) == {check.rank}")
        terms += [f"{shape}[{dim}] == {size}" for dim, size in check.dims]
    elif check.rank is not None:
        terms.append(f"{p}.ndim == {check.rank}")
    if check.strides is not None:
        terms.append(f"{p}.stride() == ({''.join(f'{n}, ' for n in check.strides)})")
    if check.dtype is not None:
        terms.append(f"{p}.dtype is {src.bind(check.dtype, 'dtype')}")
    if check.device is not None:
        terms.append(_device_test(p, check.device, src))
    if check.requires_grad is not None:
        terms.append(f"{'' if check.requires_grad else 'not '}{p}.requires_grad")
    return terms


def _device_test(p: str, device: torch.device, src: _Source) -> str:
    if device.type == "cpu":
        return f"{p}.is_cpu"
    if device.type == "cuda" and device.index is not None:
        return f"({p}.is_cuda and {p}.get_device() == {int(device.index)})"
    return f"{p}.device == {src.bind(device, 'device')}"


def make_matcher(guard: Guard, n_params: int) -> Callable[..., bool]:
    """A function of the call's inputs: whether ``guard`` holds."""
    src = _Source(n_params)
    src.lines += [f"def matches({', '.join(src.params)}):", f"    return bool({src.condition(guard)})"]
    return src.build("matches")


def make_dispatcher(name: str, n_params: int, cases: Sequence[tuple[Guard, Callable[..., Any]]],
                    terminal: Callable[..., Any]) -> Callable[..., Any]:
    """A function of the call's inputs running the first case whose guard holds, else
    ``terminal``.  It takes exactly ``n_params`` positional inputs, so a wrong count fails at
    the call as it does for compiled code (callers turn that into an ``InputError``)."""
    src = _Source(n_params)
    args = ", ".join(src.params)
    src.lines.append(f"def {name}({args}):")
    for guard, run in cases:
        src.lines += [f"    if {src.condition(guard)}:", f"        return {src.bind(run, 'run')}({args})"]
    src.lines.append(f"    return {src.bind(terminal, 'miss')}({args})")
    return src.build(name)


# -- the executor ----------------------------------------------------------------------------------

Install = Callable[["Executor"], None]


class Executor:
    """Profiling, specializations and call routing for one compiled graph (module docstring).

    ``fn`` is what calls should run now (a dispatcher, specialized code or the general code);
    ``entry`` the same behind the module's hook check (``hooks``, forward only).  Whenever they
    change, ``install(self)`` is called (under :data:`compile_lock`) to publish them."""

    def __init__(self, general: CompiledFunction, build: Callable[[Graph], CompiledFunction],
                 install: Install, hooks: Optional[EntryGuard] = None) -> None:
        self.general = general
        self.name = general.name
        self.n_inputs = len(general.graph.inputs)
        self.specializations: tuple[Specialization, ...] = ()
        self.failure: Optional[str] = None
        self._build = build
        self._install = install
        self._hooks = hooks
        self._pending: Optional[Profile] = None
        self._check_inputs = input_checker(general.name, general.graph, general.self_arg)
        self._miss_fn: Callable[..., Any] = self._miss
        self._miss_entry_fn: Callable[..., Any] = self._miss_entry if hooks is not None else self._miss
        # until :meth:`reinstall` chooses (the general code may not exist yet: DeferredFunction)
        self.fn: Callable[..., Any] = self._miss_fn
        self.entry: Callable[..., Any] = self._miss_entry_fn
        _live.add(self)

    # -- routing -----------------------------------------------------------------------------
    def reinstall(self) -> None:
        """Choose ``fn``/``entry`` from the settings and the specializations; publish them."""
        with compile_lock:
            if not SETTINGS.enabled or self.failure is not None:
                self.fn, self.entry = self.general.fn, self.general.entry
            else:
                self.fn = self._dispatcher(False)
                self.entry = self._dispatcher(True) if self._hooks is not None else self.fn
            self._install(self)

    def _dispatcher(self, with_hooks: bool) -> Callable[..., Any]:
        def run(s: Specialization) -> Callable[..., Any]:
            return s.entry if with_hooks else s.fn
        universal = next((s for s in self.specializations if s.guard.empty), None)
        if universal is not None:
            terminal = run(universal)
        elif len(self.specializations) >= SETTINGS.max_specializations:
            terminal = self.general.entry if with_hooks else self.general.fn
        else:
            terminal = self._miss_entry_fn if with_hooks else self._miss_fn
        cases = []
        for s in self.specializations:
            if s is universal:
                break
            if run(s) is not terminal:   # a case running what the terminal runs is redundant
                cases.append((s.guard, run(s)))
        if not cases and terminal not in (self._miss_fn, self._miss_entry_fn):
            return terminal
        return make_dispatcher(self.name, self.n_inputs, cases, terminal)

    def _miss_entry(self, *args: Any) -> Any:
        hooks = self._hooks
        if hooks is not None and any(hooks.objects):
            return hooks.fallback(*args)
        return self._miss(*args)

    def _miss(self, *args: Any) -> Any:
        """No installed case matched: a specialization made meanwhile, a new profile, or the
        general code once the cache is full."""
        spec = self.find(args)
        if spec is not None:
            return spec.fn(*args)
        if not SETTINGS.enabled or self.failure is not None or \
                len(self.specializations) >= SETTINGS.max_specializations:
            return self.general.fn(*args)
        return self._profile(args, force=False)[0]

    def find(self, args: Sequence[Any]) -> Optional[Specialization]:
        for s in self.specializations:
            if s.matches(*args):
                return s
        return None

    # -- profiling and specializing --------------------------------------------------------------
    def _profile(self, args: Sequence[Any], force: bool) -> tuple[Any, Optional[Specialization]]:
        """Run the call in the interpreter, recording types; once enough runs (or ``force``) are
        in, specialize and install the result if there is room.  Returns the call's result and
        the specialization made (None while still collecting runs, or on failure)."""
        if len(args) != self.n_inputs:
            raise self.general.arity_error(len(args))
        self._check_inputs(*args)          # wrong kinds of inputs: the general code's InputError
        profile = Profile(runs=1, grad_modes={torch.is_grad_enabled()})
        result = interpret(self.general.graph, args, observe=profile.observe, where=f"'{self.name}'")
        with compile_lock:
            pending = self._pending or Profile()
            pending.merge(profile)
            self._pending = pending
            if pending.runs < SETTINGS.profile_runs and not force:
                return result, None
            self._pending = None
            spec = self._specialize(pending)
            if spec is not None and self.find(args) is None:   # (another thread may have been first)
                self._add(spec)
        return result, spec

    def _add(self, spec: Specialization) -> None:
        """Install ``spec`` if there is room.  A guard-free one goes last, where it catches
        every call the others do not."""
        if len(self.specializations) >= SETTINGS.max_specializations or self.failure is not None:
            return
        guarded = [s for s in self.specializations if not s.guard.empty]
        universal = [s for s in self.specializations if s.guard.empty]
        self.specializations = (*guarded, spec, *universal)
        self.reinstall()

    def _specialize(self, profile: Profile) -> Optional[Specialization]:
        try:
            with without_gc():
                return self._make_specialization(profile)
        except Exception as e:   # a defect in a pass or in codegen must not break the program
            self.failure = f"{type(e).__name__}: {e}"
            warnings.warn(f"kiln: could not specialize {self.name!r} ({self.failure}); it runs its "
                          "general code from now on", SpecializationWarning, stacklevel=4)
            self.reinstall()
            return None

    def _make_specialization(self, profile: Profile) -> Specialization:
        from kiln.passes import PASSES, run_pipeline  # lazily: passes are not needed to run
        made = specialize(self.general.graph, profile)
        graph, guard = made.graph, made.guard
        run_pipeline(graph, SPECIALIZED_PIPELINE, max_rounds=2)
        fuse = PASSES.get("fuse")
        fused = False
        if fuse is not None:
            if profile.grad_enabled and profile.requires_grad:
                guard = Guard(guard.inputs, grad_enabled=True)   # no_grad calls may do better
            else:
                # in-place activations (as freezing leaves them) rejoin pointwise chains, and
                # those left outside fusion groups go back in place
                from kiln.passes.inplace_activations import functional_activations
                candidate = graph.copy()
                functional_activations(candidate)
                fused = bool("fuse_dense" in PASSES and PASSES["fuse_dense"](candidate)) | fuse(candidate)
                if fused:
                    graph = candidate
                    PASSES["inplace_activations"](graph)
                    PASSES["dce"](graph)
        matches = make_matcher(guard, self.n_inputs)
        if same_structure(graph, self.general.graph):
            return Specialization(guard, graph, self.general.fn, self.general.entry, matches, None)
        holder: list[Specialization] = []
        code = graph
        if fused and guard != made.full_guard:
            code = with_fallback_hook(graph, lambda: self._narrow(holder[0]))
        cf = self._build(code)
        spec = Specialization(guard, graph, cf.fn, cf.entry, matches, cf, made.full_guard)
        holder.append(spec)
        return spec

    def _narrow(self, spec: Specialization) -> None:
        """A fused specialization just ran an unfused branch: its type checks saw inputs of
        another signature.  From now on it takes only calls exactly like the ones it was made
        for, so other signatures miss and get specializations (fused for them) of their own.
        Until this happens, the usual fixed-signature caller pays for no guard at all."""
        with compile_lock:
            if spec not in self.specializations or spec.guard == spec.full_guard:
                return
            narrowed = dataclasses.replace(spec, guard=spec.full_guard,
                                           matches=make_matcher(spec.full_guard, self.n_inputs))
            rest = [s for s in self.specializations if s is not spec]
            self.specializations = (narrowed, *rest)
            self.reinstall()

    # -- graph_for ---------------------------------------------------------------------------
    def graph_for(self, args: Sequence[Any]) -> Graph:
        """Make one call on ``args`` and return a copy of the optimized graph for them.

        The call is profiled (it runs in the interpreter, with the effects of a normal call),
        so the graph is typed by these inputs.  If a specialization already covers them, it
        stays what runs, and the graph returned is the fresh one when its code is the same
        (the usual case), else the covering one's; if none does, the new one is installed as a
        call would install it (when there is room).  When the executor is off, the call runs
        the general code and its graph is returned."""
        if len(args) != self.n_inputs:
            raise self.general.arity_error(len(args))
        if not SETTINGS.enabled or self.failure is not None:
            self.general.fn(*args)
            return self.general.graph.copy()
        covering = self.find(args)
        spec = self._profile(args, force=True)[1]
        if spec is None:
            return self.general.graph.copy()
        if covering is not None and not same_structure(covering.graph, spec.graph):
            return covering.graph.copy()
        return spec.graph.copy()

    def describe(self) -> str:
        """One line per specialization: its guard and whether it has code of its own."""
        lines = [f"{self.name}: {'on' if SETTINGS.enabled else 'off'}, "
                 f"{len(self.specializations)} specialization(s)"]
        lines += [f"  [{i}] {s.guard}{'' if s.compiled else ' (general code)'}"
                  for i, s in enumerate(self.specializations)]
        return "\n".join(lines)
