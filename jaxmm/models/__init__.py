"""Model families. Importing this package registers every family by name."""

from jaxmm.models import (
    clip,  # noqa: F401
    dual_encoder,  # noqa: F401
    fusion,  # noqa: F401  (registers "fusion")
    vit,  # noqa: F401
)
from jaxmm.models.registry import ModelSpec, available, build, get, register

__all__ = ["ModelSpec", "available", "build", "get", "register"]
