"""Contrastive pre-training over any two modalities (CLIP, SigLIP, triplet).

The two sides come from the config: ``task.modalities`` (e.g.
``("audio", "text")``), else the model's own (``model.config.modalities`` of a
:class:`~jaxmm.models.dual_encoder.DualEncoder`), else image-text. Any pair of
``image`` / ``video`` / ``audio`` / ``text`` works when the model has an encoder
for each; the batch fields passed are the ones the model declares
(:mod:`jaxmm.models.specs`); raw ``audio`` (the scenes ``audio_text`` preset)
becomes the log-mel ``input_features`` the audio tower declares, on device.

The model returns ``<modality>_embeds`` ``(B, D)`` for both sides; the
learnable log inverse temperature is the output's ``logit_scale`` or the
parameter ``logit_scale`` (and ``logit_bias`` for SigLIP). Negatives are the
other examples of the *global* batch (the arrays are global under ``jax.jit``).

Losses (``task.loss``): ``infonce`` (CLIP, :func:`jaxmm.losses.infonce_loss`),
``siglip`` (alias ``sigmoid``, :func:`jaxmm.losses.sigmoid_contrastive_loss`) or
``triplet`` (:func:`jaxmm.losses.triplet_loss` in both directions, averaged:
``task.margin``, ``task.mining`` ``hardest`` (VSE++) or ``all``, cosine distance).

Hard negatives (``task.hard_negatives``, NegCLIP): the batch-field prefix of one
extra text per example, e.g. ``"foil_"`` for ``foil_input_ids`` /
``foil_attention_mask`` that the ``swap_words`` op and ``tokenize(prefix='foil_')``
write (each caption with its shape words swapped: a false caption of the same image).
They are encoded by the model's text tower (``encode_text``) and appended to the
candidates of the other side's softmax (:func:`jaxmm.losses.infonce_loss`,
:func:`jaxmm.losses.sigmoid_contrastive_loss`); a foil identical to its caption is
left out. Training batches must carry them; eval batches without them are scored
without. Needs a text side and the ``infonce`` or ``siglip`` loss.

Metrics: ``loss``, ``<a>2<b>_accuracy`` / ``<b>2<a>_accuracy`` (in-batch top-1
retrieval, e.g. ``i2t`` / ``t2i``, ``a2t`` / ``t2a``). A padded short eval
batch is skipped (the loss couples all rows). Retrieval eval batches with
several captions per item (``input_ids`` ``(B, C, T)``, the ``jaxmm.data``
retrieval layout) are scored on their first caption; full multi-caption
recall@K is :func:`jaxmm.evaluate.retrieval_recall`.
"""

from __future__ import annotations

import dataclasses
import math

import jax
import jax.numpy as jnp

from jaxmm import losses
from jaxmm.config import ConfigBase, ConfigError
from jaxmm.models.specs import spec_modalities
from jaxmm.train.tasks.base import LossOutput, Task, first_of_groups, register_task
from jaxmm.train.tasks.modalities import audio_to_features, check_modalities, modality_fields

LOSSES = ("infonce", "siglip", "sigmoid", "triplet")


@dataclasses.dataclass(frozen=True)
class ContrastiveOptions(ConfigBase):
    """loss: ``infonce`` (CLIP), ``siglip`` / ``sigmoid`` (SigLIP) or ``triplet``.
    modalities: the two sides (``()``: the model's, else image-text).
    margin, mining: of the triplet loss (``hardest`` or ``all`` negatives).
    hard_negatives: batch-field prefix of hard-negative texts (``"foil_"``), or ``""``."""

    loss: str = "infonce"
    modalities: tuple[str, ...] = ()
    margin: float = 0.2
    mining: str = "hardest"
    hard_negatives: str = ""

    def validate(self) -> None:
        if self.loss not in LOSSES:
            raise ConfigError(f"task.loss={self.loss!r} is not one of {', '.join(LOSSES)}.")
        if self.mining not in ("hardest", "all"):
            raise ConfigError(f"task.mining={self.mining!r} is not one of hardest, all.")
        if self.hard_negatives and self.loss == "triplet":
            raise ConfigError("task.hard_negatives works with the infonce and siglip losses, "
                              "not triplet.", hint="Set task.loss=infonce (NegCLIP).")
        mods = tuple(self.modalities)
        if mods and (len(mods) != 2 or mods[0] == mods[1]):
            raise ConfigError(
                f"task.modalities={mods} must name two different modalities, e.g. "
                "('audio', 'text').")


def _scalar(out, params, name, default):
    value = getattr(out, name, None)
    if value is None:
        value = params.get(name, default) if isinstance(params, dict) else default
    return jnp.asarray(value, jnp.float32).reshape(())


def _sides(options: ConfigBase, model, specs) -> tuple[str, str]:
    wanted = tuple(getattr(options, "modalities", ()))  # subclasses' options may lack it
    if wanted:
        return check_modalities(wanted, specs, model, "task.modalities")
    own = getattr(getattr(model, "config", None), "modalities", None)
    if isinstance(own, tuple | list) and len(own) == 2:
        return tuple(own)
    have = spec_modalities(specs) if specs else ()
    if not specs or set(have) == {"image", "text"}:
        return ("image", "text")
    if len(have) != 2:
        raise ConfigError(f"The contrastive task needs a model with two modalities; "
                          f"{type(model).__name__} reads {', '.join(have)}.",
                          hint="Set task.modalities to the two sides, e.g. ('audio', 'text').")
    return have


@register_task
class ContrastiveTask(Task):
    name = "contrastive"
    Options = ContrastiveOptions
    default_model = "clip"
    model_inputs = ("image", "input_ids", "attention_mask")
    layout = "image_text"
    supports_padding = False

    def __init__(self, options, model, teacher=None):
        super().__init__(options, model, teacher)
        specs = self.input_specs()
        self.sides = _sides(options, model, specs)
        if specs:
            self.model_inputs = modality_fields(specs, self.sides)
        if set(self.sides) != {"image", "text"}:
            self.layout = "inputs"
        # Subclasses' options (the ITM task's) may lack hard negatives.
        self.hard_negatives = getattr(options, "hard_negatives", "")
        if self.hard_negatives:
            if "text" not in self.sides:
                raise ConfigError(f"task.hard_negatives needs a text side; this task "
                                  f"contrasts {self.sides[0]} with {self.sides[1]}.")
            if not hasattr(model, "encode_text"):
                raise ConfigError(f"task.hard_negatives needs a model with encode_text; "
                                  f"{type(model).__name__} has none.")

    def _hard_negatives(self, variables, batch, train, rng):
        """``(embeddings (B, D), valid (B,))`` of the batch's hard-negative texts, or
        ``None`` (none configured, or an eval batch without them)."""
        prefix = self.hard_negatives
        ids_key, mask_key = f"{prefix}input_ids", f"{prefix}attention_mask"
        if not prefix:
            return None
        if ids_key not in batch:
            if not train:
                return None
            raise ConfigError(
                f"task.hard_negatives={prefix!r} but the training batch has no {ids_key} "
                f"(it has {', '.join(sorted(batch))}).",
                hint=f"Add swap_words(...)|tokenize(N, key='foil_text', prefix='{prefix}') "
                     f"and keep {ids_key}, {mask_key} in data.pp_train.")
        ids, mask = batch[ids_key], batch.get(mask_key)
        rngs = {"dropout": jax.random.fold_in(rng, 1)} if (train and rng is not None) else None
        emb = self.model.apply(variables, ids, mask, normalize=False,
                               deterministic=not train, rngs=rngs,
                               method=type(self.model).encode_text)
        same = jnp.all(ids == batch["input_ids"], axis=-1)  # a foil without the words
        return emb, ~same

    def prepare(self, batch, rng, train):
        # Retrieval eval pipelines give all captions, (B, C, T): score the first.
        batch = audio_to_features(first_of_groups(batch), self.input_specs())
        return super().prepare(batch, rng, train)

    def inputs(self, batch):
        out = super().inputs(batch)
        if "input_features" in out:  # the audio tower reads the features, not the waveform
            out.pop("audio", None)
        return out

    def loss(self, variables, batch, *, train, rng, constants=None) -> LossOutput:
        out, extra = self.apply(variables, batch, train=train, rng=rng)
        a, b = self.sides
        emb_a, emb_b = getattr(out, f"{a}_embeds"), getattr(out, f"{b}_embeds")
        params = variables["params"]
        scale = _scalar(out, params, "logit_scale", math.log(1 / 0.07))
        opts = self.options
        # Hard negatives are texts: the loss takes them with the text side second.
        negatives = self._hard_negatives(variables, batch, train, rng)
        neg = {} if negatives is None else dict(zip(("negatives", "negative_mask"), negatives))
        first, second = (emb_b, emb_a) if a == "text" else (emb_a, emb_b)
        if opts.loss == "infonce":
            loss = losses.infonce_loss(first, second, scale, **neg)
        elif opts.loss == "triplet":
            loss = 0.5 * (
                losses.triplet_loss(emb_a, emb_b, margin=opts.margin, mining=opts.mining)
                + losses.triplet_loss(emb_b, emb_a, margin=opts.margin, mining=opts.mining))
        else:
            loss = losses.sigmoid_contrastive_loss(first, second, scale,
                                                   _scalar(out, params, "logit_bias", -10.0),
                                                   **neg)
        n = jnp.asarray(emb_a.shape[0], jnp.float32)
        sim = emb_a.astype(jnp.float32) @ emb_b.astype(jnp.float32).T
        target = jnp.arange(emb_a.shape[0])
        a2b = (jnp.argmax(sim, axis=1) == target).sum().astype(jnp.float32)
        b2a = (jnp.argmax(sim, axis=0) == target).sum().astype(jnp.float32)
        return LossOutput(loss=loss * n, weight=n, extra=extra,
                          metrics={f"{a[0]}2{b[0]}_accuracy": (a2b, n),
                                   f"{b[0]}2{a[0]}_accuracy": (b2a, n)})
