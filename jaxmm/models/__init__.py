"""Model families. Importing this package registers every family by name."""

from jaxmm.models import vit  # noqa: F401
from jaxmm.models.registry import ModelSpec, available, build, get, register

__all__ = ["ModelSpec", "available", "build", "get", "register"]
