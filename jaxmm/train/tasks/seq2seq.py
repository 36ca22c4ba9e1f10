"""Encoder-decoder text generation tasks: image ``captioning``, speech ``asr`` and
text-to-text ``seq2seq`` (T5, the original Transformer: summarisation, translation).

The model reads encoder inputs (``image`` for captioning, ``input_features``
for ASR, ``input_ids`` / ``attention_mask`` for text-to-text) and
``decoder_input_ids`` / ``decoder_attention_mask``, and returns ``logits``
``(B, T, V)`` for the next token (teacher forcing, optionally with label
smoothing: ``task.label_smoothing``).

Batch, either:
* ``decoder_input_ids`` (+ ``decoder_attention_mask``) and ``labels`` aligned
  with them (the Hugging Face convention: ``labels[t]`` is the token after
  ``decoder_input_ids[t]``; ``-100`` = ignore); or
* ``input_ids`` / ``attention_mask``: the target text *including* its start
  token; the task feeds ``input_ids[:, :-1]`` and predicts ``input_ids[:, 1:]``
  (captioning and ASR only: for text-to-text ``input_ids`` is the source, and the
  catalog's ``decoder_targets`` op makes the decoder fields from the target text).

Metrics: ``loss`` (per token), ``accuracy`` (next-token top-1), ``perplexity``.
"""

from __future__ import annotations

import jax.numpy as jnp

from jaxmm.errors import ConfigError
from jaxmm.train.tasks.base import (
    IGNORE_INDEX,
    LossOutput,
    Task,
    example_weights,
    register_task,
    softmax_xent,
)
from jaxmm.train.tasks.lm import LMOptions, perplexity
from jaxmm.train.tasks.modalities import audio_to_features


def decoder_batch(batch) -> dict:
    """``decoder_input_ids``, ``decoder_attention_mask`` and ``labels`` for teacher forcing."""
    keep = example_weights(batch)[:, None] > 0
    if "decoder_input_ids" in batch:
        dec = batch["decoder_input_ids"]
        mask = batch.get("decoder_attention_mask", jnp.ones_like(dec))
        labels = batch["labels"] if "labels" in batch else jnp.where(
            mask > 0, jnp.roll(dec, -1, axis=1), IGNORE_INDEX).at[:, -1].set(IGNORE_INDEX)
    else:
        ids, mask = batch["input_ids"], batch.get("attention_mask",
                                                  jnp.ones_like(batch["input_ids"]))
        dec, labels = ids[:, :-1], jnp.where(mask[:, 1:] > 0, ids[:, 1:], IGNORE_INDEX)
        mask = mask[:, :-1]
    return {"decoder_input_ids": dec, "decoder_attention_mask": mask,
            "labels": jnp.where(keep, labels, IGNORE_INDEX)}


class Seq2SeqTask(Task):
    """Teacher-forced next-token loss of an encoder-decoder model."""

    Options = LMOptions
    encoder_inputs: tuple[str, ...] = ()

    @property
    def model_inputs(self):  # type: ignore[override]
        return (*self.encoder_inputs, "decoder_input_ids", "decoder_attention_mask")

    def example_batch(self, batch_size=1, **dims):
        batch = super().example_batch(batch_size, **dims)
        dec = decoder_batch({k: jnp.asarray(v) for k, v in batch.items()})
        return {**batch, **{k: v for k, v in dec.items() if k != "labels"}}

    def loss(self, variables, batch, *, train, rng, constants=None) -> LossOutput:
        dec = decoder_batch(batch)
        out, extra = self.apply(variables, {**batch, **dec}, train=train, rng=rng)
        nll, correct, n = softmax_xent(out.logits, dec["labels"],
                                       label_smoothing=self.options.label_smoothing)
        return LossOutput(loss=nll, weight=n, metrics={"accuracy": (correct, n)}, extra=extra)

    def summarize(self, metrics):
        return perplexity(metrics)


@register_task
class CaptioningTask(Seq2SeqTask):
    """Captioning of images, videos or audio (AudioCaps-style): the encoder input is the
    field the captioner's encoder reads (``model.config.encoder_input``: ``image``,
    ``video`` or ``input_features``; raw ``audio`` becomes the declared log-mel features)."""

    name = "captioning"
    default_model = "captioner"
    encoder_inputs = ("image",)
    layout = "image_text"

    def __init__(self, options, model, teacher=None):
        super().__init__(options, model, teacher)
        field = getattr(self.model_config, "encoder_input", "image")
        self.encoder_inputs = (field,)
        if field != "image":
            self.layout = "inputs"

    def prepare(self, batch, rng, train):
        del rng, train
        return audio_to_features(batch, self.input_specs())


@register_task
class TextToTextTask(Seq2SeqTask):
    """Text-to-text (T5 and the original Transformer): the source is ``input_ids`` /
    ``attention_mask``, the target ``decoder_input_ids`` / ``decoder_attention_mask`` /
    ``labels``. Evaluated by generating (the ``text2text`` evaluator: BLEU or ROUGE)."""

    name = "seq2seq"
    default_model = "t5"
    encoder_inputs = ("input_ids", "attention_mask")
    layout = "text2text"

    def loss(self, variables, batch, *, train, rng, constants=None) -> LossOutput:
        if "decoder_input_ids" not in batch:
            raise ConfigError(
                "The seq2seq task needs decoder_input_ids and labels in its batches (the "
                f"target text), but the batch has only {sorted(batch)}.",
                hint="Tokenise the target with prefix='target_' and add decoder_targets("
                "START_ID, key='target_input_ids', mask_key='target_attention_mask') to the "
                "data's pp (the cnn_dailymail and wmt14_translate presets do).")
        return super().loss(variables, batch, train=train, rng=rng, constants=constants)


@register_task
class ASRTask(Seq2SeqTask):
    name = "asr"
    default_model = "whisper"
    encoder_inputs = ("input_features",)
    layout = "audio_text"

    def prepare(self, batch, rng, train):
        """Raw 16 kHz ``audio`` (the catalog's speech batches) becomes the model's log-mel
        ``input_features`` on device: Whisper's front end
        (:func:`jaxmm.audio_features.whisper_log_mel`), padded or cut to the encoder's
        ``num_frames``."""
        del rng, train
        if "input_features" in batch or "audio" not in batch:
            return batch
        from jaxmm.audio_features import WHISPER_HOP_LENGTH, WHISPER_SAMPLE_RATE, whisper_log_mel

        cfg = self.model_config
        if cfg.num_mel_bins not in (80, 128):
            raise ConfigError(
                f"The batch holds raw audio, and Whisper's front end makes 80 or 128 mel bins, "
                f"but model.config.num_mel_bins={cfg.num_mel_bins}.",
                hint="Set --config.model.config.num_mel_bins=80 (or 128), or feed "
                "input_features computed for the model.")
        seconds = cfg.num_frames * WHISPER_HOP_LENGTH / WHISPER_SAMPLE_RATE
        features = whisper_log_mel(batch["audio"], sample_rate=WHISPER_SAMPLE_RATE,
                                   n_mels=cfg.num_mel_bins, chunk_seconds=seconds)
        return {**batch, "input_features": features}
