"""C++ kernels for fusion groups on the CPU.

A fusion group's subgraph -- pointwise ATen operators on tensors of complete types, all
results of one shape -- becomes one ``extern "C"`` function.  For ``relu(a * b + 2.0)`` on two
contiguous float tensors of one shape::

    extern "C" void kiln_kernel(const float* __restrict p0, const float* __restrict p1,
                                float* __restrict o0, int64_t n, int nthreads) {
      if (n >= 32768 && nthreads > 1) {
    #pragma omp parallel for simd num_threads(nthreads) schedule(simd:static)
        for (int64_t i = 0; i < n; ++i) { <body> }
      } else {
    #pragma omp simd
        for (int64_t i = 0; i < n; ++i) { <body> }
      }
    }
    // <body>:  const float x0 = p0[i];  const float x1 = p1[i];
    //          const float v0 = (x0 * x1);  const float v1 = (v0 + ((float)(2.0)));
    //          const float v2 = k_relu(v1);  o0[i] = v2;

Design points:

* **Semantics follow eager PyTorch's CPU kernels**: each operator computes in its result's
  dtype, with its operands (other dtypes, Python scalars) converted to it first, as ATen's
  type promotion does; NaN propagates through ``relu``, ``clamp``, ``minimum`` ... as in
  ATen; ``pow`` with exponent 2, 3, 0.5, -0.5, -1, -2 uses the same special forms.
* **Vector math**: ``exp``, ``log``, ``tanh``, ``erf`` ... are declared ``#pragma omp declare
  simd``, so gcc calls glibc's vector versions (``libmvec``) inside the vectorized loop.
* **Loops**: when every tensor operand is either the result's shape and contiguous, or has one
  element (a 0-dim tensor, broadcast), the loop is flat and the element count is a parameter,
  so one library serves every size.  Otherwise (broadcasting along some dimensions, strided
  operands) the dimensions are coalesced and the kernel is a loop nest with sizes and strides
  baked in; only the innermost loop is vectorized, the outer one is threaded.
* **Threads**: OpenMP with ``torch.get_num_threads()`` threads, passed per call; below
  :data:`MIN_PARALLEL` elements the loop runs serially (starting threads would cost more).
  The library links the same ``libgomp`` PyTorch loaded, so both share one thread pool.

:func:`fusible` says which nodes the backend computes; :func:`generate` writes the source;
:func:`build_kernel` compiles it (:mod:`kiln.backends.toolchain`) and returns a Python callable
taking the subgraph's inputs and returning a tuple of new contiguous output tensors.
"""

from __future__ import annotations

import ctypes
import math
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any, Optional

import torch

from kiln.backends import toolchain
from kiln.errors import KilnError
from kiln.ir.graph import Graph, Node, Value
from kiln.ir.types import BoolType, FloatType, IntType, TensorType

__all__ = ["MIN_PARALLEL", "KernelSource", "Unsupported", "build_kernel", "contiguous_strides", "fusible",
           "generate"]

MIN_PARALLEL = 32768   # elements; below this the loop runs on the calling thread

C_TYPES: dict[torch.dtype, str] = {
    torch.float32: "float", torch.float64: "double", torch.int64: "int64_t", torch.int32: "int32_t",
    torch.int16: "int16_t", torch.int8: "int8_t", torch.uint8: "uint8_t", torch.bool: "bool"}
RESULT_DTYPES = frozenset({torch.float32, torch.float64})   # what fused operators may produce
SCALAR_TYPES = (IntType, FloatType, BoolType)                # non-tensor inputs passed as doubles


class Unsupported(KilnError):
    """A subgraph this backend cannot turn into a kernel (the group then runs unfused)."""


# -- operands -------------------------------------------------------------------------------------

_VARIABLE: Any = object()


@dataclass(frozen=True)
class _Arg:
    expr: str              # C expression of the value, in its own C type
    ctype: str
    const: Any = _VARIABLE  # the Python value, for a constant


def c_literal(x: Any, ctype: str) -> str:
    """A Python number as a C expression of type ``ctype`` (exact: doubles print round-trip)."""
    if isinstance(x, bool):
        text = "1" if x else "0"
    elif isinstance(x, int):
        if not -(2 ** 63) <= x < 2 ** 63:
            raise Unsupported(f"integer constant {x} does not fit in 64 bits")
        text = "(-9223372036854775807LL - 1)" if x == -(2 ** 63) else f"{x}LL"
    elif isinstance(x, float):
        if math.isnan(x):
            text = '__builtin_nan("")'
        elif math.isinf(x):
            text = "__builtin_inf()" if x > 0 else "(-__builtin_inf())"
        else:
            text = repr(x)
    else:
        raise Unsupported(f"constant {x!r} is not a number")
    return f"(({ctype})({text}))"


class _Operands:
    """What an operator's emitter sees: its inputs, converted to the compute type ``ct``."""

    def __init__(self, args: list[_Arg], ct: str) -> None:
        self.args, self.ct = args, ct

    def __getitem__(self, i: int) -> str:
        a = self.args[i]
        if a.const is not _VARIABLE:
            return self.lit(a.const)
        return a.expr if a.ctype == self.ct else f"(({self.ct})({a.expr}))"

    def __len__(self) -> int:
        return len(self.args)

    def raw(self, i: int) -> str:
        return self.args[i].expr

    def const(self, i: int) -> Any:
        """The constant value of input ``i`` (None for a variable or a missing input)."""
        return self.args[i].const if i < len(self.args) and self.args[i].const is not _VARIABLE else None

    def lit(self, x: Any) -> str:
        return c_literal(x, self.ct)

    def fn(self, name: str) -> str:
        """The C math function ``name`` for the compute type (``expf`` for float)."""
        return name + ("f" if self.ct == "float" else "")


# -- the operators ----------------------------------------------------------------------------------

Emitter = Callable[[_Operands], str]


@dataclass(frozen=True)
class _Op:
    emit: Emitter
    check: Optional[Callable[[Node], bool]] = None   # constants/dtypes the emitter needs
    compare: bool = False   # computes in its operands' promoted dtype and produces bool


def _const_input(node: Node, i: int) -> Any:
    """The constant at input ``i`` (``_VARIABLE`` if it is computed, None if absent)."""
    if i >= len(node.inputs):
        return None
    v = node.inputs[i]
    return v.node.attrs.get("value") if v.node.kind == "prim::Constant" else _VARIABLE


def _is_one(x: Any) -> bool:
    return x is not None and not isinstance(x, str) and x == 1


def _add_like(sign: str, reverse: bool = False) -> Emitter:
    """``self + alpha * other`` (``-`` for sub; ``other - alpha * self`` for rsub)."""
    def emit(n: _Operands) -> str:
        x, y = (n[1], n[0]) if reverse else (n[0], n[1])
        if len(n) < 3 or _is_one(n.const(2)):
            return f"({x} {sign} {y})"
        return f"({x} {sign} {n[2]} * {y})"
    return emit


def _binary(sign: str) -> Emitter:
    return lambda n: f"({n[0]} {sign} {n[1]})"


def _call(name: str) -> Emitter:
    return lambda n: f"{n.fn(name)}({n[0]})"


def _helper(name: str) -> Emitter:
    return lambda n: f"{name}({', '.join(n[i] for i in range(len(n)))})"


def _pow(n: _Operands) -> str:
    x, e = n[0], n.const(1)
    special = {2: f"({x} * {x})", 3: f"({x} * {x} * {x})", 0.5: f"__builtin_sqrt{n.fn('')}({x})",
               -0.5: f"({n.lit(1)} / __builtin_sqrt{n.fn('')}({x}))", -1: f"({n.lit(1)} / {x})",
               -2: f"({n.lit(1)} / ({x} * {x}))", 1: x}
    if isinstance(e, (int, float)) and not isinstance(e, bool) and e in special:
        return special[e]
    return f"{n.fn('pow')}({x}, {n[1]})"


def _clamp(n: _Operands) -> str:
    """``clamp(x, min, max)``; a bound given as None is no bound."""
    out = n[0]
    if len(n) > 1 and n.args[1].const is not None:
        out = f"k_lo({out}, {n[1]})"
    if len(n) > 2 and n.args[2].const is not None:
        out = f"k_hi({out}, {n[2]})"
    return out


def _elu(n: _Operands) -> str:
    x = n[0]
    alpha, scale, input_scale = (n[i] if i < len(n) else n.lit(1) for i in (1, 2, 3))
    return f"({x} <= {n.lit(0)} ? {n.fn('expm1')}({x} * {input_scale}) * ({alpha} * {scale}) : {x} * {scale})"


def _gelu(n: _Operands) -> str:
    x, half, one = n[0], n.lit(0.5), n.lit(1)
    if n.const(1) == "tanh":
        beta, kappa = n.lit(math.sqrt(2.0) * (2.0 / math.sqrt(math.pi)) * 0.5), n.lit(0.044715)
        return f"({half} * {x} * ({one} + {n.fn('tanh')}({beta} * ({x} + {kappa} * ({x} * {x} * {x})))))"
    return f"({x} * {half} * ({one} + {n.fn('erf')}({x} * {n.lit(math.sqrt(0.5))})))"


def _where(n: _Operands) -> str:
    return f"({n.raw(0)} ? {n[1]} : {n[2]})"


def _gelu_ok(node: Node) -> bool:
    return _const_input(node, 1) in ("none", "tanh", None)


def _no_rounding(node: Node) -> bool:
    return _const_input(node, 2) is None


def _clamp_ok(node: Node) -> bool:
    return not any(isinstance(_const_input(node, i), str) for i in (1, 2))


def _bool_condition(node: Node) -> bool:
    t = node.inputs[0].type
    return isinstance(t, TensorType) and t.dtype == torch.bool


def _plain_cast(node: Node) -> bool:
    """``x.to(dtype)`` to another dtype (to the same one it is an alias, not a new tensor)."""
    src, dst = node.inputs[0].type, node.outputs[0].type
    flags_ok = _const_input(node, 2) is False and _const_input(node, 3) is False and \
        _const_input(node, 4) is None
    return isinstance(src, TensorType) and isinstance(dst, TensorType) and src.dtype != dst.dtype and flags_ok


def _all_bool(node: Node) -> bool:
    return all(isinstance(v.type, TensorType) and v.type.dtype == torch.bool for v in node.inputs)


def _sigmoid(n: _Operands) -> str:
    return f"({n.lit(1)} / ({n.lit(1)} + {n.fn('exp')}(-{n[0]})))"


def _silu(n: _Operands) -> str:
    return f"({n[0]} / ({n.lit(1)} + {n.fn('exp')}(-{n[0]})))"


OPS: dict[str, _Op] = {
    **{f"aten::add.{o}": _Op(_add_like("+")) for o in ("Tensor", "Scalar")},
    **{f"aten::sub.{o}": _Op(_add_like("-")) for o in ("Tensor", "Scalar")},
    **{f"aten::rsub.{o}": _Op(_add_like("-", reverse=True)) for o in ("Tensor", "Scalar")},
    **{f"aten::mul.{o}": _Op(_binary("*")) for o in ("Tensor", "Scalar")},
    **{f"aten::div.{o}": _Op(_binary("/")) for o in ("Tensor", "Scalar")},
    **{f"aten::div.{o}_mode": _Op(_binary("/"), _no_rounding) for o in ("Tensor", "Scalar")},
    "aten::neg": _Op(lambda n: f"(-{n[0]})"),
    "aten::relu": _Op(_helper("k_relu")),
    "aten::sigmoid": _Op(_sigmoid),
    "aten::silu": _Op(_silu),
    **{f"aten::{f}": _Op(_call(f)) for f in ("tanh", "exp", "log", "sin", "cos", "erf", "expm1", "log1p")},
    "aten::sqrt": _Op(lambda n: f"__builtin_sqrt{n.fn('')}({n[0]})"),
    "aten::rsqrt": _Op(lambda n: f"({n.lit(1)} / __builtin_sqrt{n.fn('')}({n[0]}))"),
    "aten::abs": _Op(lambda n: f"__builtin_fabs{n.fn('')}({n[0]})"),
    "aten::reciprocal": _Op(lambda n: f"({n.lit(1)} / {n[0]})"),
    "aten::square": _Op(lambda n: f"({n[0]} * {n[0]})"),
    "aten::pow.Tensor_Scalar": _Op(_pow),
    "aten::pow.Tensor_Tensor": _Op(lambda n: f"{n.fn('pow')}({n[0]}, {n[1]})"),
    "aten::clamp": _Op(_clamp, _clamp_ok),
    "aten::clamp_min": _Op(_helper("k_lo")),
    "aten::clamp_max": _Op(_helper("k_hi")),
    "aten::hardtanh": _Op(lambda n: f"k_hi(k_lo({n[0]}, {n[1] if len(n) > 1 else n.lit(-1)}), "
                                    f"{n[2] if len(n) > 2 else n.lit(1)})"),
    "aten::leaky_relu": _Op(lambda n: f"({n[0]} > {n.lit(0)} ? {n[0]} : {n[0]} * "
                                      f"{n[1] if len(n) > 1 else n.lit(0.01)})"),
    "aten::elu": _Op(_elu),
    "aten::gelu": _Op(_gelu, _gelu_ok),
    "aten::hardsigmoid": _Op(lambda n: f"(k_relu6(({n[0]} + {n.lit(3)})) / {n.lit(6)})"),
    "aten::hardswish": _Op(lambda n: f"({n[0]} * k_relu6(({n[0]} + {n.lit(3)})) / {n.lit(6)})"),
    "aten::minimum": _Op(_helper("k_minimum")),
    "aten::maximum": _Op(_helper("k_maximum")),
    **{f"aten::where.{o}": _Op(_where, _bool_condition)
       for o in ("self", "ScalarOther", "ScalarSelf", "Scalar")},
    "aten::to.dtype": _Op(lambda n: n[0], _plain_cast),
    **{f"aten::{name}.{o}": _Op(_binary(sign), compare=True)
       for name, sign in (("eq", "=="), ("ne", "!="), ("lt", "<"), ("le", "<="), ("gt", ">"), ("ge", ">="))
       for o in ("Tensor", "Scalar")},
    # logic on bool tensors (the results of comparisons)
    **{name: _Op(_binary(sign), _all_bool, compare=True)
       for name, sign in (("aten::bitwise_and.Tensor", "&&"), ("aten::bitwise_or.Tensor", "||"),
                          ("aten::bitwise_xor.Tensor", "!="), ("aten::logical_and", "&&"),
                          ("aten::logical_or", "||"), ("aten::logical_xor", "!="))},
    **{name: _Op(lambda n: f"(!{n[0]})", _all_bool, compare=True)
       for name in ("aten::bitwise_not", "aten::logical_not")},
}

_SAMPLE_SCALARS: dict[Any, Any] = {FloatType: 1.5, IntType: 1, BoolType: True}


def _sample(v: Value) -> Any:
    """A value standing for ``v`` in :func:`torch.result_type` (only kind, dtype and rank count)."""
    t = v.type
    if isinstance(t, TensorType) and t.dtype is not None and t.shape is not None:
        return torch.empty((1,) * len(t.shape), dtype=t.dtype)
    if v.node.kind == "prim::Constant" and isinstance(v.node.attrs.get("value"), (bool, int, float)):
        return v.node.attrs["value"]
    return _SAMPLE_SCALARS.get(t)


def compute_dtype(node: Node) -> Optional[torch.dtype]:
    """The dtype ``node`` computes in: its result's, or for a comparison the promoted dtype
    of its operands (as ATen's type promotion decides it); None when not known."""
    op = OPS.get(node.op.schema.qualified) if node.op is not None else None
    t = node.outputs[0].type if len(node.outputs) == 1 else None
    if op is None or not isinstance(t, TensorType):
        return None
    if not op.compare:
        return t.dtype
    samples = [_sample(v) for v in node.inputs[:2]]
    if not samples or any(x is None for x in samples):
        return None
    if len(samples) == 1:
        return samples[0].dtype if isinstance(samples[0], torch.Tensor) else None
    try:
        return torch.result_type(*samples)
    except (RuntimeError, TypeError):
        return None


def fusible(node: Node) -> bool:
    """Whether this backend can compute ``node`` inside a kernel: its operator, constant
    arguments and result dtype (float and double; bool from comparisons).  The fusion pass
    checks the rest of the types."""
    op = OPS.get(node.op.schema.qualified) if node.op is not None else None
    if op is None or (op.check is not None and not op.check(node)):
        return False
    out = node.outputs[0].type if len(node.outputs) == 1 else None
    if not isinstance(out, TensorType) or out.dtype not in ({torch.bool} if op.compare else RESULT_DTYPES):
        return False
    return compute_dtype(node) in C_TYPES


# -- the source ---------------------------------------------------------------------------------------

_VECTOR_MATH = ("exp", "log", "tanh", "erf", "expm1", "log1p", "sin", "cos")


# NaN-propagating helpers, written as ATen's CPU kernels behave (``relu(nan)`` is nan, a NaN
# bound of ``clamp`` gives nan, ``minimum``/``maximum`` return a NaN operand).
_HELPERS = r"""
template <typename T> static inline T k_relu(T x) { return x < T(0) ? T(0) : x; }
template <typename T> static inline T k_relu6(T x) {
  T t = x < T(0) ? T(0) : x;
  return T(6) < t ? T(6) : t;
}
template <typename T> static inline T k_lo(T x, T lo) { return (x < lo || lo != lo) ? lo : x; }
template <typename T> static inline T k_hi(T x, T hi) { return (x > hi || hi != hi) ? hi : x; }
template <typename T> static inline T k_minimum(T a, T b) {
  return a != a ? a : (b != b ? b : (b < a ? b : a));
}
template <typename T> static inline T k_maximum(T a, T b) {
  return a != a ? a : (b != b ? b : (a < b ? b : a));
}
"""


def _prelude() -> str:
    decls = []
    for f in _VECTOR_MATH:
        decls += ["#pragma omp declare simd notinbranch", f"float {f}f(float);",
                  "#pragma omp declare simd notinbranch", f"double {f}(double);"]
    decls += ["#pragma omp declare simd notinbranch", "float powf(float, float);",
              "#pragma omp declare simd notinbranch", "double pow(double, double);"]
    return "\n".join(["// Generated by kiln.backends.cpp for one fusion group.", "#include <cstdint>",
                      'extern "C" {', *decls, "}"]) + _HELPERS


@dataclass(frozen=True)
class KernelSource:
    """A generated kernel: its source and how to call it."""

    source: str
    tensor_inputs: tuple[bool, ...]                            # per input: pointer, or double
    outputs: tuple[tuple[tuple[int, ...], torch.dtype], ...]   # shape and dtype of each result
    numel: int
    # per result: an input of its exact shape, dtype and (contiguous) strides, whose
    # ``torch.empty_like`` allocates it about twice as fast as ``torch.empty`` does
    like: tuple[Optional[int], ...] = ()


def loop_layout(shape: Sequence[int], inputs: Sequence[TensorType]) -> tuple[list[int], list[list[int]]]:
    """The loop nest for a result of ``shape``: coalesced sizes, and each input's element
    strides over them (0 where it is broadcast).  Dimensions of size 1 are dropped, and
    neighbours are merged when every operand steps through them as through one dimension."""
    rank = len(shape)
    expanded: list[list[int]] = []
    for t in inputs:
        assert t.shape is not None and t.strides is not None
        pad = rank - len(t.shape)
        expanded.append([0 if i < pad or t.shape[i - pad] == 1 else int(t.strides[i - pad] or 0)
                         for i in range(rank)])
    if math.prod(shape) == 0:
        return [0], [[0] for _ in inputs]
    dims: list[int] = []
    strides: list[list[int]] = [[] for _ in inputs]
    for d in reversed(range(rank)):
        if shape[d] == 1:
            continue
        if dims and all(e[d] == s[0] * dims[0] for e, s in zip(expanded, strides)):
            dims[0] *= shape[d]
            continue
        dims.insert(0, shape[d])
        for e, s in zip(expanded, strides):
            s.insert(0, e[d])
    if not dims:
        return [1], [[0] for _ in inputs]
    return dims, strides


def _complete(t: Any) -> bool:
    return isinstance(t, TensorType) and t.dtype is not None and t.shape is not None and \
        t.strides is not None and all(d is not None for d in (*t.shape, *t.strides)) and \
        t.device is not None and t.device.type == "cpu"


def _result_shape(graph: Graph) -> tuple[int, ...]:
    types = [v.type for v in graph.outputs]
    if not types or not all(_complete(t) for t in types):
        raise Unsupported("the subgraph's results need complete tensor types")
    shapes = {tuple(int(d or 0) for d in t.shape or ()) for t in types if isinstance(t, TensorType)}
    if len(shapes) != 1:
        raise Unsupported(f"the subgraph's results have different shapes {sorted(shapes)}")
    return shapes.pop()


class _Writer:
    """Builds the kernel's statements: parameters, hoisted loads, per-element body."""

    def __init__(self, graph: Graph, shape: tuple[int, ...]) -> None:
        self.graph, self.shape = graph, shape
        self.params: list[str] = []
        self.top: list[str] = []          # once per call
        self.outer: list[str] = []        # once per outer iteration (loop nests)
        self.body: list[str] = []         # once per element
        self.env: dict[Value, _Arg] = {}
        tensors = [v for v in graph.inputs if isinstance(v.type, TensorType)]
        for v in tensors:
            t = v.type
            if not _complete(t) or not isinstance(t, TensorType) or t.dtype not in C_TYPES or \
                    not _broadcasts(t.shape or (), shape):
                raise Unsupported(f"input type {t} is not a complete CPU tensor type broadcasting to {shape}")
        self.dims, strides = loop_layout(shape, [v.type for v in tensors if isinstance(v.type, TensorType)])
        self.strides = dict(zip(tensors, strides))
        self.flat = len(self.dims) == 1 and all(s[0] in (0, 1) for s in strides)

    def index(self) -> str:
        return "i" if self.flat else f"o * {self.dims[-1]} + j"

    def inputs(self) -> None:
        for k, v in enumerate(self.graph.inputs):
            if isinstance(v.type, TensorType):
                self.tensor_input(k, v, v.type)
            elif v.type in SCALAR_TYPES:
                self.params.append(f"double s{k}")
                self.env[v] = _Arg(f"s{k}", "double")
            else:
                raise Unsupported(f"input of type {v.type}")

    def tensor_input(self, k: int, v: Value, t: TensorType) -> None:
        assert t.dtype is not None
        ct = C_TYPES[t.dtype]
        self.params.append(f"const {ct}* __restrict p{k}")
        strides = self.strides[v]
        if not any(strides):
            self.top.append(f"const {ct} h{k} = p{k}[0];")
            self.env[v] = _Arg(f"h{k}", ct)
            return
        if self.flat:
            self.body.append(f"const {ct} x{k} = p{k}[i];")
            self.env[v] = _Arg(f"x{k}", ct)
            return
        base = " + ".join(f"i{d} * {s}" for d, s in enumerate(strides[:-1]) if s) or "0"
        self.outer.append(f"const int64_t b{k} = {base};")
        inner = strides[-1]
        if inner == 0:
            self.outer.append(f"const {ct} h{k} = p{k}[b{k}];")
            self.env[v] = _Arg(f"h{k}", ct)
        else:
            self.body.append(f"const {ct} x{k} = p{k}[b{k} + j{'' if inner == 1 else f' * {inner}'}];")
            self.env[v] = _Arg(f"x{k}", ct)

    def nodes(self) -> None:
        for k, node in enumerate(self.graph.nodes):
            if node.kind == "prim::Constant":
                self.env[node.output] = _Arg("", "", const=node.attrs.get("value"))
                continue
            if not fusible(node):
                raise Unsupported(f"no C++ for {node.kind} with these arguments and types")
            t = node.output.type
            if not _complete(t) or not isinstance(t, TensorType) or tuple(t.shape or ()) != self.shape:
                raise Unsupported(f"{node.kind} produces {t}; this kernel's results have shape {self.shape}")
            dtype = compute_dtype(node)
            assert t.dtype is not None and dtype is not None
            op, ct, out_ct = OPS[node.op.schema.qualified], C_TYPES[dtype], C_TYPES[t.dtype]
            expr = op.emit(_Operands([self.env[v] for v in node.inputs], ct))
            self.body.append(f"const {out_ct} v{k} = {expr};")
            self.env[node.output] = _Arg(f"v{k}", out_ct)

    def stores(self) -> list[tuple[tuple[int, ...], torch.dtype]]:
        outputs = []
        for k, v in enumerate(self.graph.outputs):
            t = v.type
            if v.node.owner is not self.graph.block or v.node.kind == "prim::Constant" or \
                    not isinstance(t, TensorType) or t.dtype not in C_TYPES:
                raise Unsupported("every result of a kernel must be computed by one of its operators")
            ct = C_TYPES[t.dtype]
            self.params.append(f"{ct}* __restrict o{k}")
            self.body.append(f"o{k}[{self.index()}] = {self.env[v].expr};")
            outputs.append((self.shape, t.dtype))
        return outputs


def _broadcasts(shape: Sequence[Optional[int]], to: Sequence[int]) -> bool:
    return len(shape) <= len(to) and all(d == 1 or d == t for d, t in zip(reversed(shape), reversed(to)))


def generate(graph: Graph) -> KernelSource:
    """The C++ source of a kernel computing ``graph``; raises :class:`Unsupported`."""
    shape = _result_shape(graph)
    w = _Writer(graph, shape)
    w.inputs()
    w.nodes()
    outputs = w.stores()
    numel = math.prod(shape)
    head = f'extern "C" void kiln_kernel({", ".join([*w.params, "int64_t n", "int nthreads"])}) {{'
    lines = [_prelude(), head, *("  " + s for s in w.top)]
    body = ["      " + s for s in w.body]
    if w.flat:
        loop = "    for (int64_t i = 0; i < n; ++i) {"
        lines += [f"  if (n >= {MIN_PARALLEL} && nthreads > 1) {{",
                  "#pragma omp parallel for simd num_threads(nthreads) schedule(simd:static)",
                  loop, *body, "    }", "  } else {", "#pragma omp simd", loop, *body, "    }", "  }"]
    else:
        outer = math.prod(w.dims[:-1])
        index = []
        for d in reversed(range(len(w.dims) - 1)):
            index.append(f"const int64_t i{d} = r % {w.dims[d]}; r /= {w.dims[d]};")
        parallel = f"nthreads > 1 && {numel} >= {MIN_PARALLEL}"
        lines += ["  (void)n;",
                  f"#pragma omp parallel for num_threads(nthreads) if({parallel}) schedule(static)",
                  f"  for (int64_t o = 0; o < {outer}; ++o) {{", "    int64_t r = o; (void)r;",
                  *("    " + s for s in index + w.outer), "#pragma omp simd",
                  f"    for (int64_t j = 0; j < {w.dims[-1]}; ++j) {{", *body, "    }", "  }"]
    lines.append("}")
    tensor_inputs = tuple(isinstance(v.type, TensorType) for v in graph.inputs)
    like = tuple(_same_layout_input(graph, shape, dtype) for shape, dtype in outputs)
    return KernelSource("\n".join(lines) + "\n", tensor_inputs, tuple(outputs), numel, like)


def _same_layout_input(graph: Graph, shape: tuple[int, ...], dtype: torch.dtype) -> Optional[int]:
    want = TensorType(dtype, shape, contiguous_strides(shape), torch.device("cpu"), False)
    return next((i for i, v in enumerate(graph.inputs) if v.type == want), None)


def contiguous_strides(shape: Sequence[int]) -> tuple[int, ...]:
    """The strides of a contiguous tensor of ``shape`` (as ``torch.empty`` makes it)."""
    strides, step = [], 1
    for d in reversed(shape):
        strides.append(step)
        step *= max(d, 1)
    return tuple(reversed(strides))


# -- building and calling -------------------------------------------------------------------------------

Runner = Callable[..., tuple[torch.Tensor, ...]]


def build_kernel(graph: Graph) -> Optional[Runner]:
    """A callable running ``graph`` as a compiled kernel, or None (with a debug note on the
    ``kiln.fusion`` logger) when the subgraph is not supported or nothing can compile it.

    The callable takes the subgraph's inputs -- tensors of exactly the input types, which the
    caller guarantees (a ``prim::TypeCheck``) -- and returns a tuple of new tensors."""
    try:
        src = generate(graph)
    except Unsupported as e:
        toolchain.note_once(f"unsupported:{e}", f"kiln.fusion: not compiled ({e}); the group runs unfused")
        return None
    lib = toolchain.build_library(src.source)
    if lib is None:
        return None
    fn = lib.kiln_kernel
    fn.restype = None
    fn.argtypes = [ctypes.c_void_p if t else ctypes.c_double for t in src.tensor_inputs] + \
        [ctypes.c_void_p] * len(src.outputs) + [ctypes.c_int64, ctypes.c_int]
    return _runner(fn, src)


def _runner(fn: Any, src: KernelSource) -> Runner:
    """A small generated Python function: allocate the results, pass pointers, call."""
    names = [f"a{i}" for i in range(len(src.tensor_inputs))]
    outs = [f"r{i}" for i in range(len(src.outputs))]
    args = [f"{a}.data_ptr()" if t else a for a, t in zip(names, src.tensor_inputs)]
    args += [f"{r}.data_ptr()" for r in outs] + [str(src.numel), "_threads()"]
    lines = [f"def run({', '.join(names)}):"]
    for i, (r, k) in enumerate(zip(outs, src.like or [None] * len(outs))):
        alloc = f"_empty_like(a{k})" if k is not None else f"_empty(_shape{i}, dtype=_dtype{i})"
        lines.append(f"    {r} = {alloc}")
    if src.numel:   # nothing to compute for empty results (and nothing a pointer may be read from)
        lines.append(f"    _fn({', '.join(args)})")
    lines.append(f"    return ({', '.join(outs)},)")
    namespace: dict[str, Any] = {"_empty": torch.empty, "_empty_like": torch.empty_like, "_fn": fn,
                                 "_threads": torch.get_num_threads}
    for i, (shape, dtype) in enumerate(src.outputs):
        namespace[f"_shape{i}"], namespace[f"_dtype{i}"] = shape, dtype
    exec(compile("\n".join(lines) + "\n", "<kiln kernel runner>", "exec"), namespace)  # noqa: S102  (our own text)
    run: Runner = namespace["run"]
    return run
