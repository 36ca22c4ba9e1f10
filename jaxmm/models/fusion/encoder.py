"""Fusion encoder: early, late, hybrid/bottleneck and cross-attention fusion.

Inputs are per-modality token sequences from modality encoders::

    tokens = {"text": (B, T_t, E_t), "image": (B, T_i, E_i), ...}
    attention_mask = {"text": (B, T_t), ...}    # 1 = real token, 0 = padding

Each modality is projected to ``d_model``, gets a learned modality-type
embedding (and, with ``max_positions``, learned positions), and, with
``pool='cls'``, a learned CLS token of its own in front. Then, by
``config.kind`` (see :mod:`jaxmm.models.fusion.config`):

* separate layers ``0 .. fusion_layer - 1``: one pre-LN stack per modality;
* fused layers ``fusion_layer .. num_layers - 1``: one joint stack over the
  concatenated sequence (padding or prefix-LM mask), or, with bottleneck
  tokens, per-modality layers that read and write shared bottleneck tokens
  (averaged over modalities after every layer, as in MBT);
* ``cross_attention``: per-stream layers of self-attention, cross-attention
  to the other modalities' tokens, and feed-forward.

Padding never changes the result: padded inputs are zeroed, every attention
hides padded keys, pooling ignores them, and padded output rows are zero.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

import flax.linen as nn
import flax.struct
import jax
import jax.numpy as jnp

from jaxmm.layers import (
    DecoderLayer,
    EncoderLayer,
    TransformerStack,
    combine_masks,
    make_norm,
    padding_mask,
    prefix_lm_mask,
)
from jaxmm.layers.stack import remat_module
from jaxmm.models.fusion.combine import ModalityCombiner
from jaxmm.models.fusion.config import FusionConfig

Array = jax.Array

__all__ = ["FusionEncoder", "FusionOutput", "check_modalities"]


@flax.struct.dataclass
class FusionOutput:
    """Outputs of :class:`FusionEncoder`.

    last_hidden_state: ``(B, T, d_model)``, every modality's final tokens
      concatenated in config order (CLS tokens included; padded rows are 0).
    attention_mask: ``(B, T)`` validity of those tokens.
    pooler_output: ``(B, P)`` combined pooled feature (``P = d_model``, or
      ``M * d_model`` for ``combine='concat'``).
    modality_pooled: ``(B, M, d_model)`` pooled feature of each pooled stream
      (``config.streams``).
    modality_present: ``(B, M)`` 1 where that modality has a real token.
    modality_hidden_states: ``{name: (B, T_m, d_model)}`` final tokens per modality.
    attentions: ``{stage: per-layer (B, H, T, S) weights}`` when requested;
      stages are modality names (separate layers), ``joint``, or
      ``<modality>_fusion`` (bottleneck layers).
    cross_attentions: ``{stream: per-layer (B, H, T_stream, S_context)}`` for
      ``cross_attention`` when requested.
    """

    last_hidden_state: Array
    attention_mask: Array
    pooler_output: Array
    modality_pooled: Array
    modality_present: Array
    modality_hidden_states: dict[str, Array]
    attentions: dict[str, tuple[Array, ...]] | None = None
    cross_attentions: dict[str, tuple[Array, ...]] | None = None


def check_modalities(
    names: tuple[str, ...], given: Mapping[str, Any], what: str = "batch"
) -> None:
    """Raises a clear error when a configured modality is missing from ``given``."""
    missing = [m for m in names if m not in given]
    if missing:
        raise ValueError(
            f"Modality {', '.join(repr(m) for m in missing)} is configured but missing from the "
            f"{what}; the {what} has {sorted(given) or 'nothing'}. Provide it, or drop it from "
            f"the config's modalities {tuple(names)}."
        )


class FusionEncoder(nn.Module):
    """Fuses per-modality token sequences into joint representations.

    Call: ``out = encoder(tokens, attention_mask, deterministic=True,
    output_attentions=False)`` with ``tokens`` ``{name: (B, T_m, E_m)}`` and
    ``attention_mask`` ``{name: (B, T_m)}`` (missing masks mean all valid);
    returns a :class:`FusionOutput`.
    """

    config: FusionConfig

    # -- inputs ------------------------------------------------------------
    def _embed_inputs(self, tokens, attention_mask):
        cfg = self.config
        check_modalities(cfg.modalities, tokens, "inputs")
        attention_mask = attention_mask or {}
        dtype = cfg.transformer_config(1).compute_dtype
        pdtype = cfg.transformer_config(1).weights_dtype
        type_embed = self.param(
            "modality_embedding",
            nn.with_logical_partitioning(nn.initializers.normal(0.02), (None, "embed")),
            (len(cfg.modalities), cfg.d_model), pdtype,
        )
        batch = None
        seqs, masks, present = {}, {}, []
        for i, m in enumerate(cfg.modalities):
            x = jnp.asarray(tokens[m])
            if x.ndim != 3:
                raise ValueError(
                    f"Modality {m!r} tokens must be (batch, length, width); got shape {x.shape}. "
                    "Run the modality's encoder first (images/audio/video are not token "
                    "sequences)."
                )
            batch = x.shape[0] if batch is None else batch
            if x.shape[0] != batch:
                raise ValueError(
                    f"Modality {m!r} has batch size {x.shape[0]}, others have {batch}."
                )
            valid = attention_mask.get(m)
            valid = (jnp.ones(x.shape[:2], bool) if valid is None
                     else jnp.asarray(valid).astype(bool))
            if valid.shape != x.shape[:2]:
                raise ValueError(
                    f"attention_mask[{m!r}] has shape {valid.shape}; expected {x.shape[:2]} "
                    "(batch, length) to match its tokens."
                )
            h = nn.Dense(
                cfg.d_model, dtype=dtype, param_dtype=pdtype,
                kernel_init=nn.with_logical_partitioning(
                    nn.initializers.lecun_normal() if cfg.projection_init == "lecun"
                    else nn.initializers.normal(0.02), (None, "embed")),
                bias_init=nn.with_logical_partitioning(nn.initializers.zeros, ("embed",)),
                name=f"{m}_projection",
            )(x)
            if cfg.max_positions:
                if x.shape[1] > cfg.max_positions:
                    raise ValueError(
                        f"Modality {m!r} has {x.shape[1]} tokens but max_positions is "
                        f"{cfg.max_positions}; raise max_positions or shorten the input."
                    )
                pos = self.param(
                    f"{m}_position_embedding",
                    nn.with_logical_partitioning(nn.initializers.normal(0.02),
                                                 ("position", "embed")),
                    (cfg.max_positions, cfg.d_model), pdtype,
                )
                h = h + pos[: x.shape[1]].astype(dtype)
            if cfg.pool == "cls":
                cls = self.param(
                    f"{m}_cls", nn.with_logical_partitioning(nn.initializers.normal(0.02),
                                                             ("embed",)),
                    (cfg.d_model,), pdtype,
                )
                h = jnp.concatenate([jnp.broadcast_to(cls.astype(dtype), (batch, 1, cfg.d_model)),
                                     h], axis=1)
                valid_h = jnp.concatenate([jnp.ones((batch, 1), bool), valid], axis=1)
            else:
                valid_h = valid
            h = h + type_embed[i].astype(dtype)
            seqs[m] = jnp.where(valid_h[..., None], h, 0).astype(dtype)
            masks[m] = valid_h
            present.append(jnp.any(valid, axis=1))
        return seqs, masks, dict(zip(cfg.modalities, present))

    # -- stages --------------------------------------------------------------
    def _separate(self, seqs, masks, deterministic, output_attentions, attentions):
        cfg = self.config
        f = cfg.resolved_fusion_layer
        for m in cfg.modalities:
            out = TransformerStack(
                cfg.transformer_config(f, final_norm=f == cfg.num_layers), name=f"{m}_encoder"
            )(seqs[m], mask=padding_mask(masks[m]), deterministic=deterministic,
              output_attentions=output_attentions)
            seqs[m] = out.last_hidden_state
            if output_attentions:
                attentions[m] = out.attentions
        return seqs

    def _joint(self, seqs, masks, deterministic, output_attentions, attentions):
        cfg = self.config
        names = cfg.modalities
        x = jnp.concatenate([seqs[m] for m in names], axis=1)
        valid = jnp.concatenate([masks[m] for m in names], axis=1)
        mask = padding_mask(valid)
        if cfg.attention_pattern == "prefix_lm":
            prefix = x.shape[1] - seqs[names[-1]].shape[1]
            mask = combine_masks(
                prefix_lm_mask(jnp.full((x.shape[0],), prefix), x.shape[1]), mask)
        f = cfg.resolved_fusion_layer
        out = TransformerStack(cfg.transformer_config(cfg.num_layers - f), name="joint_encoder")(
            x, mask=mask, deterministic=deterministic, output_attentions=output_attentions)
        if output_attentions:
            attentions["joint"] = out.attentions
        start = 0
        for m in names:
            n = seqs[m].shape[1]
            seqs[m] = out.last_hidden_state[:, start:start + n]
            start += n
        return seqs

    def _bottleneck(self, seqs, masks, deterministic, output_attentions, attentions):
        cfg = self.config
        tcfg = cfg.transformer_config(1)
        batch = next(iter(seqs.values())).shape[0]
        nb = cfg.num_bottleneck_tokens
        bottleneck = self.param(
            "bottleneck", nn.with_logical_partitioning(nn.initializers.normal(0.02),
                                                       (None, "embed")),
            (nb, cfg.d_model), tcfg.weights_dtype,
        )
        z = jnp.broadcast_to(bottleneck.astype(tcfg.compute_dtype), (batch, nb, cfg.d_model))
        layer_cls = remat_module(EncoderLayer, cfg.remat_policy,
                                 ("deterministic", "return_weights"))
        per_layer = {m: [] for m in cfg.modalities}
        for layer in range(cfg.resolved_fusion_layer, cfg.num_layers):
            updates = []
            for m in cfg.modalities:
                n = seqs[m].shape[1]
                h = jnp.concatenate([seqs[m], z], axis=1)
                valid = jnp.concatenate([masks[m], jnp.ones((batch, nb), bool)], axis=1)
                h, w = layer_cls(tcfg, name=f"{m}_fusion_{layer}")(
                    h, padding_mask(valid), None, None, deterministic, output_attentions)
                seqs[m] = h[:, :n]
                updates.append(h[:, n:])
                per_layer[m].append(w)
            z = jnp.mean(jnp.stack(updates), axis=0)
        for m in cfg.modalities:
            seqs[m] = make_norm("layernorm", cfg.norm_eps, tcfg.compute_dtype,
                                tcfg.weights_dtype, f"{m}_final_norm")(seqs[m])
            if output_attentions:
                attentions[f"{m}_fusion"] = tuple(per_layer[m])
        return seqs

    def _cross(self, seqs, masks, deterministic, output_attentions, attentions, cross_w):
        cfg = self.config
        tcfg = cfg.transformer_config(1, cross_attention=True)
        layer_cls = remat_module(DecoderLayer, cfg.remat_policy,
                                 ("decode", "deterministic", "return_weights"))
        streams = cfg.streams
        self_w = {s: [] for s in streams}
        xw = {s: [] for s in streams}
        for layer in range(cfg.num_layers):
            new = {}
            for s in streams:
                others = [m for m in cfg.modalities if m != s]
                ctx = jnp.concatenate([seqs[m] for m in others], axis=1)
                ctx_valid = jnp.concatenate([masks[m] for m in others], axis=1)
                new[s], (sw, cw) = layer_cls(tcfg, name=f"{s}_layer_{layer}")(
                    seqs[s], ctx, padding_mask(masks[s]), None, None,
                    padding_mask(masks[s], ctx_valid), None, False, deterministic,
                    output_attentions,
                )
                self_w[s].append(sw)
                xw[s].append(cw)
            seqs.update(new)  # co-attention: all streams read the previous layer
        for s in streams:
            seqs[s] = make_norm("layernorm", cfg.norm_eps, tcfg.compute_dtype,
                                tcfg.weights_dtype, f"{s}_final_norm")(seqs[s])
            if output_attentions:
                attentions[s] = tuple(self_w[s])
                cross_w[s] = tuple(xw[s])
        return seqs

    # -- pooling -----------------------------------------------------------
    def _pool(self, seq: Array, valid: Array) -> Array:
        if self.config.pool == "cls":
            return seq[:, 0]
        w = valid.astype(seq.dtype)[..., None]
        return jnp.sum(seq * w, axis=1) / jnp.maximum(jnp.sum(w, axis=1), 1.0)

    @nn.compact
    def __call__(
        self,
        tokens: Mapping[str, Array],
        attention_mask: Mapping[str, Array] | None = None,
        *,
        deterministic: bool = True,
        output_attentions: bool = False,
    ) -> FusionOutput:
        cfg = self.config
        seqs, masks, present = self._embed_inputs(tokens, attention_mask)
        attentions: dict[str, Any] = {}
        cross_w: dict[str, Any] = {}
        args = (deterministic, output_attentions, attentions)
        if cfg.kind == "cross_attention":
            seqs = self._cross(seqs, masks, *args, cross_w)
        else:
            if cfg.resolved_fusion_layer > 0:
                seqs = self._separate(seqs, masks, *args)
            if cfg.resolved_fusion_layer < cfg.num_layers:
                fuse = self._bottleneck if cfg.num_bottleneck_tokens else self._joint
                seqs = fuse(seqs, masks, *args)
        seqs = {m: jnp.where(masks[m][..., None], seqs[m], 0) for m in cfg.modalities}
        streams = cfg.streams
        pooled = jnp.stack([self._pool(seqs[s], masks[s]) for s in streams], axis=1)
        is_present = jnp.stack([present[s] for s in streams], axis=1)
        tcfg = cfg.transformer_config(1)
        combined = ModalityCombiner(cfg.combine, tcfg.compute_dtype, tcfg.weights_dtype,
                                    name="combine")(pooled, is_present)
        return FusionOutput(
            last_hidden_state=jnp.concatenate([seqs[m] for m in cfg.modalities], axis=1),
            attention_mask=jnp.concatenate([masks[m] for m in cfg.modalities],
                                           axis=1).astype(jnp.int32),
            pooler_output=combined,
            modality_pooled=pooled,
            modality_present=is_present.astype(jnp.int32),
            modality_hidden_states=seqs,
            attentions=attentions if output_attentions else None,
            cross_attentions=cross_w if output_attentions and cross_w else None,
        )
