"""TorchScript's ``.pt`` archive, both ways (see docs/architecture.md, "kiln/serialization")."""

from kiln.serialization.limits import Limits

__all__ = ["Limits"]
