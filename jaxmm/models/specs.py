"""What a model reads: the names, shapes and dtypes of its inputs, declared per family.

Each model family declares its inputs next to its config, as a method
``input_specs() -> {field: InputSpec}`` of the config (or, where one config
serves modules that read different things, a classmethod
``input_specs(config)`` of the module, which wins). Composite models build
theirs from their parts' (a dual encoder from its towers, a captioner from its
encoder), so a new encoder never needs a change in the training tasks:

=========================  ===============================================
model (config)             inputs (per example, no batch axis)
=========================  ===============================================
vit / clip_vision          ``image`` ``(H, W, C)`` from ``image_size``
resnet                     ``image`` ``(image_size, image_size, C)`` (free)
video                      ``video`` ``(num_frames, H, W, C)``
ast                        ``input_features`` ``(num_mel_bins, max_frames)``
whisper                    ``input_features`` ``(num_mel_bins, num_frames)``,
                           ``decoder_input_ids`` / ``decoder_attention_mask``
bert / gpt / clip_text     ``input_ids`` / ``attention_mask`` ``(seq_len,)``
=========================  ===============================================

A shape entry is an ``int`` (fixed by the config) or the name of a free axis
(``"seq_len"``, ``"image_size"``, ``"n_mels"``, ``"frames"``,
``"video_frames"``) that the data decides; ``max_shape`` bounds a free axis
(a text model's ``max_position_embeddings``). :func:`example_inputs` makes the
zeros (ones for masks) that ``model.init`` needs.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Mapping
from typing import Any

import numpy as np

from jaxmm.config import ConfigError

__all__ = [
    "FREE_AXIS_DEFAULTS",
    "audio_to_features",
    "MODALITY_FIELDS",
    "InputSpec",
    "example_inputs",
    "input_specs",
    "main_field",
    "spec_modalities",
    "text_specs",
]

# modality -> batch fields that carry it (any one of them; first match wins).
MODALITY_FIELDS: dict[str, tuple[str, ...]] = {
    "text": ("input_ids",),
    "image": ("image",),
    "audio": ("input_features", "audio"),
    "video": ("video",),
}

# Free axes and their sizes when neither the data nor the caller names them.
FREE_AXIS_DEFAULTS: dict[str, int] = {
    "seq_len": 16, "image_size": 16, "channels": 3, "n_mels": 16, "frames": 32,
    "video_frames": 4,
}


@dataclasses.dataclass(frozen=True)
class InputSpec:
    """One input of a model, per example (without the batch axis).

    shape: ints (fixed by the config) or free-axis names (:data:`FREE_AXIS_DEFAULTS`).
    dtype: NumPy dtype name. max_shape: an upper bound per axis (``None``: none).
    """

    shape: tuple[int | str, ...]
    dtype: str = "float32"
    max_shape: tuple[int | None, ...] | None = None

    def resolve(self, dims: Mapping[str, Any] | None = None) -> tuple[int, ...]:
        """The concrete shape: free axes from ``dims`` (else their defaults), bounded."""
        dims = dims or {}
        out = []
        for i, axis in enumerate(self.shape):
            if isinstance(axis, str):
                size = dims.get(axis)
                size = int(FREE_AXIS_DEFAULTS.get(axis, 1) if size is None else size)
                bound = None if self.max_shape is None else self.max_shape[i]
                out.append(size if bound is None else min(size, int(bound)))
            else:
                out.append(int(axis))
        return tuple(out)

    @property
    def fixed(self) -> bool:
        """Whether the config fixes every axis."""
        return all(isinstance(a, int) for a in self.shape)


def text_specs(max_len: int | None = None, *, token_type_ids: bool = False,
               prefix: str = "") -> dict[str, InputSpec]:
    """``input_ids`` / ``attention_mask`` (``prefix`` e.g. ``"decoder_"``) of free length
    ``seq_len`` up to ``max_len``; BERT-style models add ``token_type_ids``."""
    bound = None if max_len is None else (max_len,)
    spec = InputSpec(("seq_len",), "int32", bound)
    out = {f"{prefix}input_ids": spec, f"{prefix}attention_mask": spec}
    if token_type_ids:
        out["token_type_ids"] = spec
    return out


def image_spec(image_size: Any, channels: int) -> InputSpec:
    """``(H, W, C)`` from an int or ``(H, W)`` ``image_size``."""
    h, w = (image_size, image_size) if isinstance(image_size, int) else tuple(image_size)
    return InputSpec((int(h), int(w), int(channels)))


def input_specs(model: Any, config: Any = None) -> dict[str, InputSpec] | None:
    """``{field: InputSpec}`` a model declares (a module, or a module class and its
    ``config``), or ``None`` when its family declares none (then tasks fall back to their
    fixed layout)."""
    cls = model if isinstance(model, type) else type(model)
    config = getattr(model, "config", None) if config is None else config
    if hasattr(cls, "input_specs") and config is not None:
        return dict(cls.input_specs(config))
    return config_input_specs(config)


def config_input_specs(config: Any) -> dict[str, InputSpec] | None:
    """The specs a config declares (``config.input_specs()``), or ``None``."""
    fn = getattr(config, "input_specs", None)
    if fn is None:
        return None
    specs = fn()
    return None if specs is None else dict(specs)


def spec_modalities(specs: Mapping[str, InputSpec]) -> tuple[str, ...]:
    """The modalities whose fields ``specs`` name, in :data:`MODALITY_FIELDS` order."""
    return tuple(m for m, fields in MODALITY_FIELDS.items() if any(f in specs for f in fields))


def main_field(specs: Mapping[str, InputSpec], modality: str) -> str:
    """The field that carries ``modality`` in ``specs`` (e.g. ``input_features`` for audio)."""
    if modality not in MODALITY_FIELDS:
        raise ConfigError(f"Unknown modality {modality!r}; use one of "
                          f"{', '.join(MODALITY_FIELDS)}.")
    for field in MODALITY_FIELDS[modality]:
        if field in specs:
            return field
    raise ConfigError(f"The model reads no {modality} input (it reads {', '.join(specs)}).")


def example_inputs(specs: Mapping[str, InputSpec], batch_size: int = 1,
                   **dims: Any) -> dict[str, np.ndarray]:
    """A batch of ``batch_size`` rows with the declared shapes: zeros (ones for masks)."""
    out = {}
    for name, spec in specs.items():
        fill = 1 if name.endswith("attention_mask") else 0
        out[name] = np.full((batch_size, *spec.resolve(dims)), fill, np.dtype(spec.dtype))
    return out


def audio_to_features(batch: Mapping[str, Any], specs: Mapping[str, InputSpec] | None
                      ) -> dict[str, Any]:
    """``batch`` with ``input_features`` made from raw ``audio`` when the model declares
    fixed-size features and the batch has only the waveform (else unchanged)."""
    batch = dict(batch)
    spec = (specs or {}).get("input_features")
    if spec is None or "audio" not in batch or "input_features" in batch or not spec.fixed:
        return batch
    from jaxmm.audio_features import log_mel

    n_mels, frames = spec.shape
    batch["input_features"] = log_mel(batch["audio"], n_mels=int(n_mels), frames=int(frames))
    return batch
