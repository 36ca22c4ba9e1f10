"""Model families. Importing this package registers every family by name."""

from jaxmm.models.registry import ModelSpec, available, build, get, name_of, register

from jaxmm.models import gpt  # noqa: E402,F401

__all__ = ["ModelSpec", "available", "build", "get", "name_of", "register"]
