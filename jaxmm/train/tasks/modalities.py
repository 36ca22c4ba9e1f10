"""How tasks read any modality: from the model's declared inputs.

A model declares the fields it reads (:mod:`jaxmm.models.specs`); the tasks
take from that declaration which batch fields to pass, the shapes of the init
example and the synthetic layout, so a new encoder needs no task change. Raw
``audio`` waveforms (the built-in scenes' ``audio_text`` and
``audio_classification`` batches) become the log-mel ``input_features`` an
audio encoder declares, on device (:func:`audio_to_features`, defined with
:func:`log_mel` in lower layers so evaluators share them).
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any

from jaxmm.audio_features import log_mel
from jaxmm.config import ConfigError
from jaxmm.models.specs import MODALITY_FIELDS, InputSpec, audio_to_features, spec_modalities

__all__ = ["audio_to_features", "check_modalities", "log_mel", "modality_fields"]

_TEXT_EXTRA = ("attention_mask", "token_type_ids")


def modality_fields(specs: Mapping[str, InputSpec], modalities: Sequence[str]) -> tuple[str, ...]:
    """The batch fields a task passes for ``modalities``: the declared ones, the other
    fields of the same modality (raw ``audio`` next to ``input_features``) and, for text,
    the mask and segment ids the model declares."""
    fields: list[str] = []
    for m in modalities:
        fields += [f for f in MODALITY_FIELDS[m] if f in specs]
        fields += [f for f in MODALITY_FIELDS[m] if f not in fields]
        if m == "text":
            fields += [f for f in _TEXT_EXTRA if f in specs]
    return tuple(dict.fromkeys(fields))


def check_modalities(wanted: Sequence[str], specs: Mapping[str, InputSpec] | None,
                     model: Any, option: str) -> tuple[str, ...]:
    """``wanted`` if the model has an encoder for each; else a one-line :class:`ConfigError`
    naming the fix. ``option`` is the config key that named them."""
    unknown = [m for m in wanted if m not in MODALITY_FIELDS]
    if unknown:
        raise ConfigError(
            f"{option}: unknown modality {', '.join(map(repr, unknown))}; use "
            f"{', '.join(MODALITY_FIELDS)}.")
    if specs is None:
        return tuple(wanted)
    have = spec_modalities(specs)
    lacking = [m for m in wanted if m not in have]
    if lacking:
        name = type(model).__name__
        raise ConfigError(
            f"{option} asks for {', '.join(lacking)}, but the model ({name}) has no encoder "
            f"for it: it reads {', '.join(have) or 'nothing declared'}.",
            hint=f"Set {option} to modalities of the model ({', '.join(have)}), or choose a "
            f"model with a {lacking[0]} encoder (e.g. dual_encoder with "
            f"modalities=({lacking[0]!r}, 'text'), multimodal_classifier with "
            f"fusion.modalities including {lacking[0]!r}, ast_classifier, video_classifier).")
    return tuple(wanted)
