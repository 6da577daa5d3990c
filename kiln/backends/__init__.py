"""Kernels generated for fusion groups.

A backend turns the subgraph of a ``prim::FusionGroup`` (straight-line pointwise operators on
tensors whose types are complete) into one compiled kernel, and says which nodes it can
compute (:func:`kiln.backends.cpp.fusible`), which is what the fusion pass
(:mod:`kiln.passes.fuse`) groups.  Backends depend only on :mod:`kiln.ir`; the runtime
(:mod:`kiln.runtime.fusion`) asks them for kernels when a graph is compiled.

* :mod:`kiln.backends.cpp` -- C++ source for the CPU: one flat (or broadcasting) loop that gcc
  vectorizes, threaded with OpenMP.
* :mod:`kiln.backends.toolchain` -- finding the system compiler, compiling, the on-disk and
  in-process caches of built libraries, loading them with ``ctypes``.
"""
