"""Text generation with Hugging Face ``generate`` semantics, in one compiled loop.

* :mod:`~jaxmm.generation.config`: :class:`GenerationConfig`, every knob in one
  frozen, validated dataclass; the static plan and the traced settings of the
  compiled loop derive from it.
* :mod:`~jaxmm.generation.api`: :func:`generate` (also ``jaxmm.generate``).
* :mod:`~jaxmm.generation.inputs`: input checks, left alignment, prompt buckets,
  the encoder run of encoder-decoders.
* :mod:`~jaxmm.generation.loop`: the ``jit``-compiled prefill and
  ``lax.while_loop`` with typed states (:class:`SamplingState`, :class:`BeamState`).
* :mod:`~jaxmm.generation.processors`: the logits processors and warpers.
* :mod:`~jaxmm.generation.answers`: :func:`generate_answers` for generative VQA.

Usage::

    out = jaxmm.generate(model, params, ids, mask, max_new_tokens=32, num_beams=4)
    config = GenerationConfig(max_new_tokens=32, do_sample=True, top_p=0.9)
    out = jaxmm.generate(model, params, ids, mask, generation_config=config, rng=0)
"""

from jaxmm.generation.answers import generate_answers
from jaxmm.generation.api import GenerateOutput, generate, is_encoder_decoder
from jaxmm.generation.config import DecodePlan, GenerationConfig, SpecialTokens, TracedSettings
from jaxmm.generation.inputs import prompt_bucket
from jaxmm.generation.loop import BeamState, SamplingState

__all__ = [
    "BeamState",
    "DecodePlan",
    "GenerateOutput",
    "GenerationConfig",
    "SamplingState",
    "SpecialTokens",
    "TracedSettings",
    "generate",
    "generate_answers",
    "is_encoder_decoder",
    "prompt_bucket",
]
