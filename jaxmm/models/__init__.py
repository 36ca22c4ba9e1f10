"""Model families. Importing this package registers every family by name."""

from jaxmm.models.registry import ModelSpec, available, build, get, name_of, register

__all__ = ["ModelSpec", "available", "build", "get", "name_of", "register"]
