"""Conformance of ``kiln.script`` / ``kiln.compile`` with Python (and with ``torch.jit.script``)."""
