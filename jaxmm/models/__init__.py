"""Model families. Importing this package registers every family by name."""

from jaxmm.models import (
    ast,  # noqa: F401
    bert,  # noqa: F401
    captioner,  # noqa: F401
    classifier,  # noqa: F401
    clip,  # noqa: F401
    detr,  # noqa: F401
    dual_encoder,  # noqa: F401
    encoder_decoder,  # noqa: F401
    fusion,  # noqa: F401  (registers "fusion")
    gpt,  # noqa: F401
    itm,  # noqa: F401
    resnet,  # noqa: F401
    t5,  # noqa: F401
    video,  # noqa: F401
    vit,  # noqa: F401
    vqa,  # noqa: F401
    whisper,  # noqa: F401
)
from jaxmm.models.registry import ModelSpec, available, build, get, name_of, register

__all__ = ["ModelSpec", "available", "build", "get", "name_of", "register"]
