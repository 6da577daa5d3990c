"""The one operator registry.

Every node kind that is not structural (``prim::If``, ``prim::Loop`` ...) is an operator
overload described by a :class:`Schema`.  ATen and other ``ns::op`` schemas are read from the
dispatcher (``torch.ops.<ns>.<op>.<overload>._schema``) the first time an operator name is
looked up; Kiln's own scalar/list operators are declared in :mod:`kiln.ir.prims` with the same
schema syntax.

An :class:`OpInfo` entry joins a schema to what the rest of Kiln needs to know about it:
traits (pure, side effects, nondeterministic), how to run it (``impl``: the cheapest correct
Python entry point), and -- for prims -- how to emit it as Python (``emit``).  Per-kind logic
lives on these entries, not in ``if kind == ...`` chains in the drivers.
"""

from __future__ import annotations

import threading
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any, Optional

import torch

from kiln import syntax
from kiln.errors import SchemaError
from kiln.ir.types import DtypeType, LayoutType, MemoryFormatType, OptionalType, Type, parse_type


class _NoDefault:
    def __repr__(self) -> str:
        return "NO_DEFAULT"


NO_DEFAULT: Any = _NoDefault()


@dataclass(frozen=True)
class Argument:
    name: str
    type: Type
    default: Any = NO_DEFAULT
    kwarg_only: bool = False
    is_write: bool = False
    fixed_size: Optional[int] = None   # N of a schema type such as int[2]

    @property
    def has_default(self) -> bool:
        return self.default is not NO_DEFAULT


@dataclass(frozen=True)
class Schema:
    name: str                        # "aten::add"
    overload: str                    # "Tensor", or "" for the default overload
    arguments: tuple[Argument, ...]
    returns: tuple[Argument, ...]
    is_vararg: bool = False
    is_varret: bool = False

    @property
    def qualified(self) -> str:
        return f"{self.name}.{self.overload}" if self.overload else self.name

    @property
    def namespace(self) -> str:
        return self.name.split("::", 1)[0]

    @property
    def opname(self) -> str:
        return self.name.split("::", 1)[1]

    @property
    def is_mutable(self) -> bool:
        return any(a.is_write for a in self.arguments)

    def __str__(self) -> str:
        args: list[str] = []
        star = False
        for a in self.arguments:
            if a.kwarg_only and not star:
                args.append("*")
                star = True
            d = "" if not a.has_default else f"={a.default!r}"
            args.append(f"{a.type.annotation()} {a.name}{d}")
        rets = ", ".join(r.type.annotation() for r in self.returns)
        return f"{self.qualified}({', '.join(args)}) -> ({rets})"


@dataclass
class OpInfo:
    """What Kiln knows about one operator overload."""

    schema: Schema
    impl: Optional[Callable[..., Any]] = None     # runs the op; positional args in schema order
    kw_names: tuple[str, ...] = ()                # trailing schema args passed by keyword to impl
    side_effects: bool = False
    nondeterministic: bool = False
    binding_name: str = ""                        # how generated code refers to ``impl``
    emit: Optional[Callable[..., str]] = None     # custom Python emission (prims)
    # Custom Python emission that needs closure cells: ``lower(node, args, bind)`` returns the
    # expression, and ``bind(obj, hint)`` gives the name of a cell holding ``obj`` (a dtype
    # for a type check, a compiled kernel for a fusion group).
    lower: Optional[Callable[..., str]] = None
    # What analyses derive from the schema alone, computed once per operator (see passes/cse.py)
    derived: dict[Any, Any] = field(default_factory=dict, repr=False, compare=False)

    @property
    def pure(self) -> bool:
        return not (self.side_effects or self.nondeterministic or self.schema.is_mutable)


# Normalizations that, in training mode, write their running statistics although the
# dispatcher's schema does not mark ``running_mean``/``running_var`` as written.
_RUNNING_STATS = {"aten::batch_norm": 5, "aten::instance_norm": 5}   # kind -> index of `training`


def updates_running_stats(node: Any) -> bool:
    """Whether ``node`` is a batch/instance norm that may update its running statistics: its
    training flag is not the constant False.  Such a node is an effect (dce keeps it, cse
    never merges it) even though its schema looks pure."""
    index = _RUNNING_STATS.get(node.kind)
    if index is None or len(node.inputs) <= index:
        return False
    flag = node.inputs[index]
    return not (flag.node.kind == "prim::Constant" and flag.node.attrs.get("value") is False)


_NONDETERMINISTIC = {
    "rand", "randn", "randint", "randperm", "rand_like", "randn_like", "randint_like",
    "bernoulli", "bernoulli_", "multinomial", "normal", "normal_", "uniform_", "exponential_",
    "geometric_", "log_normal_", "cauchy_", "random_", "poisson", "dropout", "dropout_",
    "feature_dropout", "alpha_dropout", "feature_alpha_dropout", "native_dropout", "rrelu",
    "rrelu_with_noise",
}
_SIDE_EFFECTS = {"prim::RaiseException", "prim::SetAttr", "prim::Print", "aten::warn",
                 "prim::TraceGuard"}


def schema_from_torch(s: Any) -> Schema:
    """Convert a dispatcher ``FunctionSchema`` into Kiln's :class:`Schema`."""
    def arg(a: Any) -> Argument:
        t = parse_type(str(getattr(a, "real_type", a.type)))
        default = _enum_default(t, a.default_value) if a.has_default_value() else NO_DEFAULT
        ali = a.alias_info
        return Argument(a.name, t, default, bool(a.kwarg_only),
                        bool(ali is not None and ali.is_write), getattr(a, "N", None))
    return Schema(s.name, s.overload_name, tuple(arg(a) for a in s.arguments),
                  tuple(arg(r) for r in s.returns), bool(getattr(s, "is_vararg", False)),
                  bool(getattr(s, "is_varret", False)))


# The dispatcher gives enum defaults as their integer codes (c10's ScalarType, Layout and
# MemoryFormat numbering); Python bindings want the torch objects.
_MEMORY_FORMATS = (torch.contiguous_format, torch.preserve_format, torch.channels_last,
                   torch.channels_last_3d)
_LAYOUTS = (torch.strided, torch.sparse_coo)
_SCALAR_TYPES = {0: torch.uint8, 1: torch.int8, 2: torch.int16, 3: torch.int32, 4: torch.int64,
                 5: torch.float16, 6: torch.float32, 7: torch.float64, 9: torch.complex64,
                 10: torch.complex128, 11: torch.bool, 15: torch.bfloat16}


def _enum_default(t: Type, value: Any) -> Any:
    if not isinstance(value, int) or isinstance(value, bool):
        return value
    base = t.elem if isinstance(t, OptionalType) else t
    if base == MemoryFormatType and 0 <= value < len(_MEMORY_FORMATS):
        return _MEMORY_FORMATS[value]
    if base == LayoutType and 0 <= value < len(_LAYOUTS):
        return _LAYOUTS[value]
    if base == DtypeType and value in _SCALAR_TYPES:
        return _SCALAR_TYPES[value]
    return value


def parse_schema(text: str) -> Schema:
    """Parse a schema written as ``ns::name.overload(Type arg=default, *, ...) -> Ret``.

    Alias annotations (``Tensor(a!)``, ``t[](a!)``, ``t(b -> *)``, ``t(*)?``) are read as
    the dispatcher writes them: they are dropped from the type, and an argument whose
    annotation carries ``!`` is recorded as written (``is_write``, so the op is not pure).
    Quoted string defaults are unescaped (``" \\n\\t"`` is a space, a newline and a tab)."""
    import re
    alias = re.compile(r"(\w*)\((\*|[a-z](?:\|[a-z])*!?(?:\s*->\s*(?:\*|[a-z]))?)\)")
    generics = ("Future", "Await", "RRef", "Dict", "Union", "Optional", "List", "Tuple")

    def strip_alias(decl: str) -> tuple[str, bool]:
        written = False

        def drop(m: re.Match[str]) -> str:
            nonlocal written
            if m.group(1) in generics:   # ``Future(t)`` is a type, not an alias set
                return m.group(0)
            written = written or "!" in m.group(2)
            return m.group(1)
        return alias.sub(drop, decl), written

    head, _, rest = text.partition("(")
    close = _matching_paren(rest)
    body, ret = rest[:close], strip_alias(rest[close + 1:])[0]
    name, _, overload = head.strip().partition(".")
    args: list[Argument] = []
    kw_only = False
    for part in _split_top(body):
        if part == "*":
            kw_only = True
            continue
        if part == "...":
            return Schema(name, overload, tuple(args), _parse_returns(ret), is_vararg=True,
                          is_varret=ret.strip().endswith("..."))
        decl, _, default = part.partition("=")
        decl, written = strip_alias(decl.strip())
        tname, _, aname = decl.rpartition(" ")
        default = default.strip()
        d: Any = NO_DEFAULT if not default else (
            syntax.literal_eval(default) if default[:1] in "\"'" else _literal(default))
        args.append(Argument(aname, parse_type(tname), d, kw_only, written))
    return Schema(name, overload, tuple(args), _parse_returns(ret),
                  is_varret=ret.strip().endswith("..."))


def _matching_paren(s: str) -> int:
    depth = 1
    for i, ch in enumerate(s):
        depth += 1 if ch in "([" else (-1 if ch in ")]" else 0)
        if depth == 0:
            return i
    raise SchemaError(f"unbalanced parentheses in schema {s!r}")


def _parse_returns(ret: str) -> tuple[Argument, ...]:
    ret = ret.strip().removeprefix("->").strip()
    if ret == "...":
        return ()
    if ret.startswith("(") and ret.endswith(")"):
        ret = ret[1:-1]
    return tuple(Argument("", parse_type(r.strip())) for r in _split_top(ret))


def _split_top(s: str) -> list[str]:
    parts, depth, cur = [], 0, ""
    for ch in s:
        depth += 1 if ch in "([" else (-1 if ch in ")]" else 0)
        if ch == "," and depth == 0:
            parts.append(cur.strip())
            cur = ""
        else:
            cur += ch
    if cur.strip():
        parts.append(cur.strip())
    return parts


def _literal(s: str) -> Any:
    table = {"None": None, "True": True, "False": False}
    if s in table:
        return table[s]
    for conv in (int, float):
        try:
            return conv(s)
        except ValueError:
            pass
    if s.startswith("[") and s.endswith("]"):
        return [_literal(x) for x in _split_top(s[1:-1])]
    return s.strip("\"'")


class Registry:
    """Operator overloads by qualified name, loaded from the dispatcher on first use."""

    def __init__(self) -> None:
        self._by_name: dict[str, list[OpInfo]] = {}
        self._by_qualified: dict[str, OpInfo] = {}
        self._loaded: set[str] = set()
        self._lock = threading.RLock()   # (loading an op registers its overloads)

    def register(self, info: OpInfo) -> OpInfo:
        with self._lock:
            self._by_qualified[info.schema.qualified] = info
            self._by_name.setdefault(info.schema.name, []).append(info)
        return info

    def overloads(self, name: str) -> list[OpInfo]:
        """All overloads of ``ns::op`` (dispatcher ones loaded lazily); [] when unknown."""
        if name not in self._loaded:
            with self._lock:       # another thread asking meanwhile waits for the whole load
                if name not in self._loaded:
                    self._load(name)
                    self._loaded.add(name)
        return self._by_name.get(name, [])

    def get(self, qualified: str) -> OpInfo:
        info = self._by_qualified.get(qualified)
        if info is None:
            self.overloads(qualified.split(".", 1)[0] if "." in qualified.split("::", 1)[-1] else qualified)
            info = self._by_qualified.get(qualified)
        if info is None:
            raise SchemaError(f"unknown operator {qualified!r}")
        return info

    def _load(self, name: str) -> None:
        ns, _, op = name.partition("::")
        try:
            packet = getattr(getattr(torch.ops, ns), op)
            overloads = packet.overloads()
        except (AttributeError, RuntimeError):
            self._by_name.setdefault(name, [])
            return
        dispatcher_ops = _dispatcher_op_names()
        for ov in overloads:
            qual = name if ov == "default" else f"{name}.{ov}"
            if qual in self._by_qualified:
                continue
            schema = schema_from_torch(getattr(packet, ov)._schema)
            if schema.overload == "out" or schema.overload.endswith("_out") or \
                    any(a.name == "out" for a in schema.arguments):
                continue  # out= overloads are never chosen by Kiln
            if qual not in dispatcher_ops and ns in ("aten", "prim"):
                continue  # a JIT-only builtin Kiln does not implement (prims declares its own)
            self.register(_dispatcher_info(schema, getattr(packet, ov)))
        self._by_name.setdefault(name, [])


_DISPATCHER_NAMES: set[str] = set()


def _dispatcher_op_names() -> set[str]:
    """Qualified names the dispatcher knows (as opposed to JIT-only builtins); read once."""
    if not _DISPATCHER_NAMES:
        _DISPATCHER_NAMES.update(torch._C._dispatch_get_all_op_names())
    return _DISPATCHER_NAMES


def _dispatcher_info(schema: Schema, overload: Any) -> OpInfo:
    impl, kw, binding = _fast_binding(schema)
    if impl is None:
        impl, kw, binding = overload, tuple(a.name for a in schema.arguments if a.kwarg_only), \
            f"torch.ops.{schema.namespace}.{schema.opname}.{schema.overload or 'default'}"
    return OpInfo(schema, impl, kw, side_effects=schema.qualified in _SIDE_EFFECTS,
                  nondeterministic=schema.opname in _NONDETERMINISTIC, binding_name=binding)


_BINDING_MODULES: tuple[tuple[str, Any, str], ...] = tuple(
    (f"torch._C.{mod}" if mod != "_VariableFunctions" else "torch", getattr(torch._C, mod), prefix)
    for mod, prefix in (("_VariableFunctions", ""), ("_nn", ""), ("_linalg", "linalg_"),
                        ("_special", "special_"), ("_fft", "fft_")))


_OPTIONAL_TENSOR_LIST = parse_type("Tensor?[]")


def _fast_binding(schema: Schema) -> tuple[Any, tuple[str, ...], str]:
    """The Python binding that parses arguments fastest for an ``aten::`` overload.

    Positional schema arguments are passed positionally and keyword-only ones by name; the
    binding's own argument parser picks the same overload because the argument kinds match.
    """
    if schema.namespace != "aten" or schema.is_vararg:
        return None, (), ""
    if any(a.type == _OPTIONAL_TENSOR_LIST for a in schema.arguments):
        return None, (), ""  # Python bindings take tuples of tensors, without the None holes
    op = schema.opname
    # Python bindings take some arguments by keyword although the schema lists them
    # positionally: a trailing `alpha` (aten::add_.Scalar -- positionally it selects a deprecated
    # signature) and `memory_format` (Tensor.to).  Everything after the first such argument is
    # passed by keyword too.
    args = schema.arguments
    first_kw = next((i for i, a in enumerate(args) if a.kwarg_only or a.name == "memory_format" or
                     (a.name == "alpha" and i == len(args) - 1)), len(args))
    kw = tuple(a.name for a in args[first_kw:])
    for modname, mod, prefix in _BINDING_MODULES:
        if prefix and not op.startswith(prefix):
            continue
        fn = getattr(mod, op, None)
        if callable(fn) and type(fn).__name__ == "builtin_function_or_method":
            return fn, kw, f"{modname}.{op}"
    meth = getattr(torch._C.TensorBase, op, None)
    if meth is not None and schema.arguments and schema.arguments[0].name == "self" \
            and schema.arguments[0].type == parse_type("Tensor"):
        return meth, kw, f"torch._C.TensorBase.{op}"
    return None, (), ""


registry = Registry()


# Libraries that register custom operators, by namespace: the hint an unknown ``ns::op`` gets.
# Kiln never loads a library itself (an archive cannot make it run code): the caller imports
# the package, which registers its operators with the dispatcher, before loading.
OPERATOR_LIBRARIES = {
    "torchvision": "torchvision (pip install torchvision; import torchvision)",
    "torchaudio": "torchaudio (pip install torchaudio; import torchaudio)",
    "torchtext": "torchtext (import torchtext)",
    "fbgemm": "fbgemm_gpu (import fbgemm_gpu)",
    "detectron2": "detectron2 (import detectron2)",
}


def missing_operator_hint(name: str) -> str:
    """What to say about the unknown operator ``ns::op``: which library provides it."""
    ns = name.partition("::")[0]
    if ns in ("aten", "prim"):
        return ""
    lib = OPERATOR_LIBRARIES.get(ns)
    if lib is not None:
        return f"; it is provided by {lib}: import that library before compiling or loading"
    return (f"; no library has registered operators in namespace {ns!r}: load the library that "
            f"defines it (import its Python package, or torch.ops.load_library(path)) first")

