"""Kiln runtime."""

from kiln.runtime import fusion as _fusion  # noqa: F401  (installs how prim::FusionGroup runs)
