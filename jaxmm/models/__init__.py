"""Model families. Importing this package registers every family by name."""

import jaxmm.models.bert  # noqa: F401  (BERT, RoBERTa)
from jaxmm.models.registry import ModelSpec, available, build, get, register

__all__ = ["ModelSpec", "available", "build", "get", "register"]
