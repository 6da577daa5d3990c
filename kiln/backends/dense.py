"""C++ kernels for dense fusion groups: tiny linears with baked-in weights, and activations.

:mod:`kiln.passes.fuse_dense` groups a chain of ``aten::linear`` calls with constant float32
weights and the pointwise operators between them.  Every size is known, so the kernel is
straight-line loops over stack arrays; for ``sigmoid(linear(relu(linear(x, w1, b1)), w2))`` at
one row::

    extern "C" void kiln_dense(const float* __restrict p0, float* __restrict o0) {
      static const float w1[24] = {0x1.3c0ep-2f, ...};  static const float b1[8] = {...};
      static const float w2[8] = {...};
      float v0[8];
      for (int r = 0; r < 1; ++r) for (int j = 0; j < 8; ++j) {
        double acc = 0.0;
        for (int k = 0; k < 3; ++k) acc += (double)p0[r * 3 + k] * (double)w1[j * 3 + k];
        v0[r * 8 + j] = (float)(acc + (double)b1[j]);
      }
      float v1[8];
      for (int i = 0; i < 8; ++i) { const float a0 = v0[i]; v1[i] = k_relu(a0); }
      ...
      for (int i = 0; i < 1; ++i) o0[i] = v3[i];
    }

* **Weights** are ``static const float`` arrays of hex-float literals: exactly the constant's
  values, and the compiler sees them (no pointer to chase, no tensor to keep alive).
* **Dot products** accumulate in double and round once, so a result is within rounding of
  the exact value -- as close to eager's BLAS as two float32 summation orders are to each
  other, well inside ``torch.testing.assert_close``'s float32 tolerances.
* **Pointwise operators** use the C++ pointwise backend's emitters (:data:`kiln.backends.cpp.OPS`),
  so they compute exactly as fused pointwise kernels do.
* **Calls** go through a generated Python function: ``torch.empty`` per result, then one
  ``ctypes`` call with prebuilt ``argtypes``.  No threads: the work is far below any size
  where starting them pays.

:func:`handles` says whether a subgraph is this backend's (it holds a linear);
:func:`build_kernel` returns the runner, or None (the group then runs unfused) when the
subgraph is not supported or no compiler is found.
"""

from __future__ import annotations

import ctypes
import math
from typing import Any, Optional

import torch

from kiln.backends import cpp, toolchain
from kiln.backends.cpp import Runner, Unsupported
from kiln.ir.graph import Graph, Node, Value
from kiln.ir.types import TensorType

__all__ = ["build_kernel", "generate", "handles"]


def handles(graph: Graph) -> bool:
    """Whether ``graph`` (a fusion group's subgraph) is a dense group: it holds a linear."""
    return any(n.kind == "aten::linear" for n in graph.nodes)


def _shape(v: Value) -> tuple[int, ...]:
    t = v.type
    if not isinstance(t, TensorType) or t.dtype != torch.float32 or t.shape is None or \
            any(d is None for d in t.shape):
        raise Unsupported(f"dense kernels take complete float32 tensors, not {t}")
    return tuple(int(d or 0) for d in t.shape)


def _array(name: str, t: torch.Tensor) -> str:
    values = ", ".join(float(x).hex() + "f" for x in t.reshape(-1).tolist())
    return f"  static const float {name}[{t.numel()}] = {{{values}}};"


class _Writer:
    def __init__(self, graph: Graph) -> None:
        self.graph = graph
        self.params: list[str] = []
        self.lines: list[str] = []
        self.env: dict[Value, Any] = {}     # value -> C array name, or cpp._Arg of a literal
        self.consts: dict[Value, torch.Tensor] = {}

    def inputs(self) -> None:
        for k, v in enumerate(self.graph.inputs):
            _shape(v)
            self.params.append(f"const float* __restrict p{k}")
            self.env[v] = f"p{k}"

    def nodes(self) -> None:
        for k, node in enumerate(self.graph.nodes):
            if node.kind == "prim::Constant":
                value = node.attrs.get("value")
                if isinstance(value, torch.Tensor):
                    self.consts[node.output] = value
                    self.lines.append(_array(f"c{k}", value))
                    self.env[node.output] = f"c{k}"
                else:
                    self.env[node.output] = cpp._Arg("", "", const=value)
            elif node.kind == "aten::linear":
                self.linear(k, node)
            else:
                self.pointwise(k, node)

    def linear(self, k: int, node: Node) -> None:
        x, w, b = node.inputs
        weight = self.consts.get(w)
        if weight is None or weight.dim() != 2:
            raise Unsupported("a dense linear needs a constant 2-D weight")
        n, kk = weight.shape
        rows = math.prod(_shape(x)[:-1])
        if _shape(x)[-1] != kk or _shape(node.output) != (*_shape(x)[:-1], n):
            raise Unsupported("linear shapes do not match its weight")
        bias = "" if b not in self.consts else f" + (double){self.env[b]}[j]"
        src, out = self.env[x], f"v{k}"
        self.lines += [f"  float {out}[{rows * n}];",
                       f"  for (int r = 0; r < {rows}; ++r) for (int j = 0; j < {n}; ++j) {{",
                       "    double acc = 0.0;",
                       f"    for (int k = 0; k < {kk}; ++k) "
                       f"acc += (double){src}[r * {kk} + k] * (double){self.env[w]}[j * {kk} + k];",
                       f"    {out}[r * {n} + j] = (float)(acc{bias});", "  }"]
        self.env[node.output] = out

    def pointwise(self, k: int, node: Node) -> None:
        shape = _shape(node.output)
        op = cpp.OPS.get(node.op.schema.qualified) if node.op is not None else None
        if op is None or op.compare or not cpp.fusible(node) or cpp.compute_dtype(node) != torch.float32:
            raise Unsupported(f"no dense C++ for {node.kind}")
        args, loads = [], []
        for j, v in enumerate(node.inputs):
            if isinstance(v.type, TensorType):
                if _shape(v) != shape or not isinstance(self.env.get(v), str):
                    raise Unsupported(f"{node.kind}: operands must have the result's shape")
                loads.append(f"const float a{j} = {self.env[v]}[i];")
                args.append(cpp._Arg(f"a{j}", "float"))
            elif isinstance(self.env.get(v), cpp._Arg):
                args.append(self.env[v])
            else:
                raise Unsupported(f"{node.kind}: operand {v.name} is not a literal")
        expr = op.emit(cpp._Operands(args, "float"))
        numel, out = math.prod(shape), f"v{k}"
        self.lines += [f"  float {out}[{numel}];",
                       f"  for (int i = 0; i < {numel}; ++i) {{ {' '.join(loads)} {out}[i] = {expr}; }}"]
        self.env[node.output] = out

    def stores(self) -> list[tuple[int, ...]]:
        shapes = []
        for k, v in enumerate(self.graph.outputs):
            if not isinstance(self.env.get(v), str) or v in self.consts or v in self.graph.inputs:
                raise Unsupported("every result of a dense kernel must be computed by it")
            shape = _shape(v)
            self.params.append(f"float* __restrict o{k}")
            self.lines.append(f"  for (int i = 0; i < {math.prod(shape)}; ++i) o{k}[i] = {self.env[v]}[i];")
            shapes.append(shape)
        return shapes


def generate(graph: Graph) -> tuple[str, list[tuple[int, ...]]]:
    """The kernel's C++ source (function ``kiln_dense``) and the shapes of its results."""
    w = _Writer(graph)
    w.inputs()
    w.nodes()
    shapes = w.stores()
    head = f'extern "C" void kiln_dense({", ".join(w.params)}) {{'
    source = "\n".join([cpp._prelude().replace("kiln.backends.cpp", "kiln.backends.dense"),
                        head, *w.lines, "}"]) + "\n"
    return source, shapes


def build_kernel(graph: Graph) -> Optional[Runner]:
    """A callable running ``graph`` as a compiled dense kernel, or None (with a debug note on
    the ``kiln.fusion`` logger).  It takes the subgraph's inputs -- contiguous float32
    tensors of exactly the input types, which the caller guarantees -- and returns a tuple of
    new tensors."""
    try:
        source, shapes = generate(graph)
    except Unsupported as e:
        toolchain.note_once(f"unsupported:{e}", f"kiln.fusion: not compiled ({e}); the group runs unfused")
        return None
    lib = toolchain.build_library(source)
    if lib is None:
        return None
    fn = lib.kiln_dense
    fn.restype = None
    fn.argtypes = [ctypes.c_void_p] * (len(graph.inputs) + len(shapes))
    return _runner(fn, len(graph.inputs), shapes)


def _runner(fn: Any, n_inputs: int, shapes: list[tuple[int, ...]]) -> Runner:
    """A small generated Python function: allocate the results, pass pointers, call."""
    names = [f"a{i}" for i in range(n_inputs)]
    outs = [f"r{i}" for i in range(len(shapes))]
    lines = [f"def run({', '.join(names)}):"]
    lines += [f"    {r} = _empty(_shape{i}, dtype=_f32)" for i, r in enumerate(outs)]
    lines.append(f"    _fn({', '.join(f'{x}.data_ptr()' for x in names + outs)})")
    lines.append(f"    return ({', '.join(outs)},)")
    namespace: dict[str, Any] = {"_empty": torch.empty, "_fn": fn, "_f32": torch.float32}
    for i, shape in enumerate(shapes):
        namespace[f"_shape{i}"] = shape
    exec(compile("\n".join(lines) + "\n", "<kiln kernel runner>", "exec"), namespace)  # noqa: S102  (our own text)
    run: Runner = namespace["run"]
    return run
