"""Model families. Importing this package registers every family by name."""

from jaxmm.models import (
    bert,  # noqa: F401
    fusion,  # noqa: F401  (registers "fusion")
    vit,  # noqa: F401
    whisper,  # noqa: F401
)
from jaxmm.models.registry import ModelSpec, available, build, get, register

__all__ = ["ModelSpec", "available", "build", "get", "register"]
