"""Model families. Importing this package registers every family by name."""

from jaxmm.models.registry import ModelSpec, available, build, get, register

from jaxmm.models import bert  # noqa: E402,F401,I001

__all__ = ["ModelSpec", "available", "build", "get", "register"]
