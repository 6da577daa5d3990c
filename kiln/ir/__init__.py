"""Kiln's IR: types, graphs, the operator registry, the builder, text form and verifier."""
