"""Text generation: greedy, sampling and beam search in one compiled loop.

:func:`generate` follows Hugging Face ``generate`` for the same settings (the
same processors in the same order, the same beam-search bookkeeping), so the
same weights give the same tokens. It works for any model that implements the
decoding protocol in :mod:`jaxmm.models.outputs`: decoder-only LMs, and
encoder-decoders (text, image or speech encoders), whose encoder runs once.

The settings are one :class:`~jaxmm.generation.config.GenerationConfig`,
passed as ``generation_config=`` or as keyword arguments (which build one).
How it runs: the inputs are checked and the prompt padded to a length bucket
(:mod:`jaxmm.generation.inputs`); prefill and the whole token loop (a
``lax.while_loop`` over a fixed-size KV cache, which stops early once every
sequence is done) run in a single ``jax.jit`` function
(:mod:`jaxmm.generation.loop`), cached per (model, static plan).
"""

from __future__ import annotations

import dataclasses
from collections.abc import Mapping
from typing import Any

import flax.struct
import jax
import jax.numpy as jnp
import numpy as np

from jaxmm.generation.config import DecodePlan, GenerationConfig
from jaxmm.generation.inputs import Prompt, bucket_prompt, prepare_prompt
from jaxmm.generation.loop import LoopResult, compiled_decoder

Array = jax.Array

__all__ = ["GenerateOutput", "generate", "is_encoder_decoder"]


@flax.struct.dataclass
class GenerateOutput:
    """What :func:`generate` returns (Hugging Face field names).

    sequences: ``(B * num_return_sequences, P + n)`` int32: the prompt (for
      encoder-decoders the decoder prompt, usually ``decoder_start_token_id``)
      then ``n <= max_new_tokens`` new tokens, ``pad_token_id`` after EOS.
    scores: ``(rows, n, V)`` float32 when ``output_scores``: the processed
      next-token scores of every step (logits after processors and warpers;
      for beam search the processed log-probabilities of the running beams,
      ``rows = B * num_beams``).
    sequences_scores: ``(B * num_return_sequences,)`` beam search only: each
      hypothesis' ``sum_logprobs / generated_length ** length_penalty``.
    """

    sequences: Array
    scores: Array | None = None
    sequences_scores: Array | None = None


def is_encoder_decoder(model: Any) -> bool:
    """Whether ``model`` exposes the ``encode``/``decode`` methods of the protocol."""
    return callable(getattr(model, "encode", None)) and callable(getattr(model, "decode", None))


def generate(
    model: Any,
    params: Any,
    input_ids: Any = None,
    attention_mask: Any = None,
    *,
    generation_config: GenerationConfig | None = None,
    rng: Any = None,
    decoder_input_ids: Any = None,
    decoder_attention_mask: Any = None,
    encoder_inputs: Mapping[str, Any] | None = None,
    encoder_outputs: Any = None,
    encoder_attention_mask: Any = None,
    **settings: Any,
) -> GenerateOutput:
    """Generates tokens with greedy search, sampling or beam search.

    Args:
      model: a Flax module implementing the decoding protocol
        (:mod:`jaxmm.models.outputs`), e.g. from ``jaxmm.convert.from_hf``.
      params: its parameters (``variables["params"]`` or ``{"params": ...}``).
      input_ids: ``(B, P)`` int token ids. Decoder-only: the prompt, left-padded
        (right-padded rows are moved to the left; outputs are then left-padded).
        Encoder-decoder: the encoder's tokens (T5-style text-to-text).
      attention_mask: ``(B, P)`` 1/0 for ``input_ids``. If omitted it is
        inferred from ``pad_token_id`` when that differs from EOS, as in
        Hugging Face; otherwise all ones.
      generation_config: the settings
        (:class:`~jaxmm.generation.config.GenerationConfig`).
      rng: a ``jax.random`` key or an int seed; required with ``do_sample``.
      decoder_input_ids / decoder_attention_mask: encoder-decoder decoder
        prompt (``decoder_start_token_id`` is prepended when missing).
      encoder_inputs: encoder-decoder inputs other than token ids, passed as
        keyword arguments to ``model.encode`` (e.g. ``{"image": x}``).
      encoder_outputs / encoder_attention_mask: a precomputed encoder output
        (``EncoderOutput`` or ``(B, S, E)`` array); the encoder is not run.
      **settings: fields of ``GenerationConfig`` (``max_new_tokens``,
        ``num_beams``, ``temperature``, ...): without ``generation_config``
        they build one (``max_new_tokens`` is then required); with it they
        override its fields, as in Hugging Face.

    Returns:
      :class:`GenerateOutput`; ``sequences`` is ``(B * num_return_sequences,
      P + n)`` with ``n <= max_new_tokens`` (generation stops once every
      sequence has finished).
    """
    config = _settings(generation_config, settings)
    model_config = getattr(model, "config", None)
    tokens = config.special_tokens(model_config)
    if isinstance(params, Mapping) and set(params) == {"params"}:
        params = params["params"]
    key = _sampling_key(config, rng)
    encoder_decoder = is_encoder_decoder(model)
    prompt = prepare_prompt(
        model, params, tokens, config.max_new_tokens, config.bucket_multiple,
        encoder_decoder=encoder_decoder, input_ids=input_ids, attention_mask=attention_mask,
        decoder_input_ids=decoder_input_ids, decoder_attention_mask=decoder_attention_mask,
        encoder_inputs=encoder_inputs, encoder_outputs=encoder_outputs,
        encoder_attention_mask=encoder_attention_mask)
    plan = config.plan(encoder_decoder=encoder_decoder, num_eos=len(tokens.eos))
    padded = bucket_prompt(prompt, tokens.fill, config.max_new_tokens, model_config,
                           config.bucket_multiple)
    result = compiled_decoder(model, plan)(
        params, padded.ids, padded.mask, jnp.int32(padded.start), prompt.encoder_hidden,
        prompt.encoder_mask, config.traced(tokens), key)
    return _output(result, prompt, padded.ids.shape[1], plan, tokens.fill)


def _settings(generation_config: GenerationConfig | None,
              overrides: Mapping[str, Any]) -> GenerationConfig:
    """The call's :class:`GenerationConfig`: ``generation_config`` with
    ``overrides`` applied, or one built from ``overrides``. Unknown names raise
    a ``ValueError`` naming the nearest setting."""
    if generation_config is None:
        if "max_new_tokens" not in overrides:
            raise ValueError("generate needs max_new_tokens= (or generation_config="
                             "GenerationConfig(max_new_tokens=...)).")
        return GenerationConfig.from_dict(overrides)
    if not isinstance(generation_config, GenerationConfig):
        raise ValueError(f"generation_config must be a jaxmm GenerationConfig; got "
                         f"{type(generation_config).__name__}.")
    if not overrides:
        return generation_config
    fields = {f.name: getattr(generation_config, f.name)
              for f in dataclasses.fields(generation_config)}
    return GenerationConfig.from_dict({**fields, **overrides})


def _sampling_key(config: GenerationConfig, rng: Any) -> Array:
    """The PRNG key of the run (an int seed becomes ``jax.random.key(seed)``)."""
    if not config.do_sample:
        return jax.random.key(0)
    if rng is None:
        raise ValueError("do_sample=True needs rng= (a jax.random key or an int seed).")
    return jax.random.key(int(rng)) if isinstance(rng, (int, np.integer)) else rng


def _output(result: LoopResult, prompt: Prompt, bucket: int, plan: DecodePlan,
            fill: int) -> GenerateOutput:
    """The prompt as given (left-aligned) followed by the new tokens."""
    steps = int(result.steps)
    new = np.asarray(result.tokens[:, bucket: bucket + steps])
    if plan.num_beams > 1:
        # Past each hypothesis' own end (EOS), fill with padding.
        new = np.where(np.arange(steps)[None, :] < np.asarray(result.lengths)[:, None], new,
                       fill)
    rows = new.shape[0] // prompt.ids.shape[0]
    sequences = jnp.asarray(np.concatenate([np.repeat(prompt.ids, rows, axis=0), new], axis=1))
    scored = steps if result.scored_steps is None else int(result.scored_steps)
    scores = result.scores[:, :scored] if plan.output_scores else None
    return GenerateOutput(sequences, scores, result.sequences_scores)
