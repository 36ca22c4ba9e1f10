"""GenerationConfig: validation messages, the special ids it resolves, the static
plan and traced settings derived from it, and one compiled program per plan."""

import dataclasses
import types

import numpy as np
import pytest

import jaxmm
from jaxmm.config import ConfigError
from jaxmm.generation import DecodePlan, GenerationConfig
from jaxmm.generation.loop import compiled_decoder
from tests.generation.toy_decoders import TRACES


@pytest.mark.parametrize(
    "settings,match",
    [
        (dict(max_new_tokens=0), "max_new_tokens must be an int >= 1"),
        (dict(max_new_tokens=2.0), "max_new_tokens must be an int >= 1"),
        (dict(min_new_tokens=-1), "min_new_tokens must be an int >= 0"),
        (dict(num_beams=0), "num_beams must be an int >= 1"),
        (dict(num_return_sequences=0), "num_return_sequences must be an int >= 1"),
        (dict(num_beams=2, num_return_sequences=3), r"\(3\) cannot exceed num_beams \(2\)"),
        (dict(num_return_sequences=2), "Greedy search returns one sequence"),
        (dict(do_sample=True, temperature=0.0), "temperature must be a float > 0"),
        (dict(do_sample=True, top_k=-1), "top_k must be an int >= 0"),
        (dict(do_sample=True, top_p=0.0), r"top_p must be in \(0, 1\]"),
        (dict(length_penalty="long"), "length_penalty must be a float"),
        (dict(early_stopping="sometimes"), "early_stopping must be True, False or 'never'"),
        (dict(repetition_penalty=-1.0), "repetition_penalty must be > 0"),
        (dict(no_repeat_ngram_size=-2), "no_repeat_ngram_size must be an int >= 0"),
        (dict(eos_token_id=(1, -3)), "eos_token_id must be a non-negative int"),
        (dict(pad_token_id=-1), "pad_token_id must be a non-negative int or None"),
        (dict(bucket_multiple=0), "bucket_multiple must be an int >= 1 or None"),
    ],
)
def test_invalid_settings_raise_one_line_errors(settings, match):
    settings = dict(dict(max_new_tokens=4), **settings)
    with pytest.raises(ConfigError, match=match) as info:
        GenerationConfig(**settings)
    assert "\n" not in str(info.value)


def test_defaults_follow_hugging_face():
    transformers = pytest.importorskip("transformers")
    ours = GenerationConfig(max_new_tokens=4)
    # transformers 5 stores None for unset fields and fills these defaults in generate().
    theirs = transformers.GenerationConfig._get_default_generation_params()
    for name in ("do_sample", "temperature", "top_k", "top_p", "num_beams", "length_penalty",
                 "early_stopping", "num_return_sequences", "repetition_penalty",
                 "no_repeat_ngram_size", "output_scores"):
        assert getattr(ours, name) == theirs[name], name
    assert ours.min_new_tokens == theirs["min_length"] == 0
    # The one required setting (TypeError from the dataclass, or ConfigError where
    # ConfigBase fills in defaults itself).
    with pytest.raises((TypeError, ConfigError), match="max_new_tokens"):
        GenerationConfig()


def test_from_dict_rejects_unknown_names_and_stores_lists_as_tuples():
    config = GenerationConfig.from_dict(dict(max_new_tokens=3, eos_token_id=[4, 5]))
    assert config.eos_token_id == (4, 5)
    assert config == GenerationConfig(max_new_tokens=3, eos_token_id=(4, 5))
    assert hash(config) == hash(GenerationConfig(max_new_tokens=3, eos_token_id=(4, 5)))
    with pytest.raises(ConfigError, match="Did you mean 'num_beams'"):
        GenerationConfig.from_dict(dict(max_new_tokens=3, num_beam=2))


def test_sampling_knobs_without_sampling_warn():
    with pytest.warns(UserWarning, match="only apply with do_sample=True"):
        GenerationConfig(max_new_tokens=3, top_p=0.5)


def test_special_tokens_fall_back_to_the_model_config():
    model_config = types.SimpleNamespace(eos_token_id=[7, 8], pad_token_id=None, bos_token_id=1,
                                         decoder_start_token_id=None)
    tokens = GenerationConfig(max_new_tokens=3).special_tokens(model_config)
    # pad falls back to the first EOS id, the decoder start to BOS (as in Hugging Face).
    assert (tokens.eos, tokens.pad, tokens.bos, tokens.decoder_start) == ((7, 8), 7, 1, 1)
    given = GenerationConfig(max_new_tokens=3, eos_token_id=(), pad_token_id=0,
                             decoder_start_token_id=5).special_tokens(model_config)
    assert (given.eos, given.pad, given.decoder_start, given.fill) == ((), 0, 5, 0)
    assert GenerationConfig(max_new_tokens=3).special_tokens(None).fill == 0
    with pytest.raises(ConfigError, match="no eos_token_id is set"):
        GenerationConfig(max_new_tokens=3, min_new_tokens=1).special_tokens(None)
    with pytest.raises(ConfigError, match="eos_token_id must be a non-negative int"):
        GenerationConfig(max_new_tokens=3).special_tokens(
            types.SimpleNamespace(eos_token_id=-1))


def test_plan_keeps_only_what_must_be_static():
    with pytest.warns(UserWarning):
        greedy = GenerationConfig(max_new_tokens=6, temperature=0.7, top_k=10, top_p=0.9,
                                  repetition_penalty=1.2, length_penalty=0.5)
    # Greedy search: the sampling warpers are off, whatever their values.
    assert greedy.plan(encoder_decoder=True, num_eos=2) == DecodePlan(
        encoder_decoder=True, max_new_tokens=6, num_beams=1, num_return_sequences=1,
        do_sample=False, top_k=0, use_top_p=False, use_temperature=False,
        use_repetition_penalty=True, no_repeat_ngram_size=0, num_eos=2, early_stopping=False,
        output_scores=False)
    sample = greedy.replace(do_sample=True, num_return_sequences=3)
    plan = sample.plan(encoder_decoder=False, num_eos=0)
    assert (plan.do_sample, plan.top_k, plan.use_top_p, plan.use_temperature) == (
        True, 10, True, True)
    assert plan.rows_per_input == 3
    # Traced values (temperature, top_p, penalties, length penalty) leave the plan alone...
    other = sample.replace(temperature=1.3, top_p=0.5, repetition_penalty=1.9,
                           length_penalty=2.0, min_new_tokens=0)
    assert other.plan(encoder_decoder=False, num_eos=0) == plan
    # ... and arrive as arrays.
    traced = other.traced(other.special_tokens(types.SimpleNamespace(eos_token_id=(4, 6))))
    np.testing.assert_allclose([traced.temperature, traced.top_p, traced.repetition_penalty,
                                traced.length_penalty], [1.3, 0.5, 1.9, 2.0], rtol=1e-6)
    np.testing.assert_array_equal(traced.eos, [4, 6])
    assert int(traced.pad) == 4 and traced.eos.dtype == np.int32
    # Turning a processor on or off is static.
    assert sample.replace(top_p=1.0).plan(encoder_decoder=False, num_eos=0) != plan
    assert sample.replace(repetition_penalty=1.0).plan(encoder_decoder=False, num_eos=0) != plan


def test_equal_configs_share_one_compiled_program(lm):
    model, params = lm
    ids = np.random.default_rng(0).integers(3, 61, size=(2, 5))
    base = GenerationConfig(max_new_tokens=5, repetition_penalty=1.3, eos_token_id=(9,))
    plan = base.plan(encoder_decoder=False, num_eos=1)
    first = jaxmm.generate(model, params, ids, generation_config=base).sequences
    program = compiled_decoder(model, plan)
    programs, compiled, traces = (compiled_decoder.cache_info().currsize,
                                  program._cache_size(), TRACES["lm"])
    # An equal config built again, the keyword form, and traced-only changes.
    again = jaxmm.generate(model, params, ids, generation_config=GenerationConfig(
        max_new_tokens=5, repetition_penalty=1.3, eos_token_id=(9,))).sequences
    keywords = jaxmm.generate(model, params, ids, max_new_tokens=5, repetition_penalty=1.3,
                              eos_token_id=[9]).sequences
    jaxmm.generate(model, params, ids, generation_config=base, repetition_penalty=1.7,
                   eos_token_id=11)
    np.testing.assert_array_equal(np.asarray(again), np.asarray(first))
    np.testing.assert_array_equal(np.asarray(keywords), np.asarray(first))
    assert compiled_decoder.cache_info().currsize == programs
    assert program._cache_size() == compiled
    assert TRACES["lm"] == traces
    # A static change (beam search) is another program.
    jaxmm.generate(model, params, ids, generation_config=base, num_beams=2)
    assert compiled_decoder(model, dataclasses.replace(plan, num_beams=2)) is not program
    assert TRACES["lm"] > traces


def test_generation_config_with_overrides_equals_keywords(lm):
    model, params = lm
    ids = np.random.default_rng(1).integers(3, 61, size=(2, 4))
    config = GenerationConfig(max_new_tokens=4, num_beams=3, eos_token_id=())
    out = jaxmm.generate(model, params, ids, generation_config=config, length_penalty=0.5,
                         num_return_sequences=2)
    ref = jaxmm.generate(model, params, ids, max_new_tokens=4, num_beams=3, eos_token_id=[],
                         length_penalty=0.5, num_return_sequences=2)
    np.testing.assert_array_equal(np.asarray(out.sequences), np.asarray(ref.sequences))
    np.testing.assert_array_equal(np.asarray(out.sequences_scores),
                                  np.asarray(ref.sequences_scores))
    assert config.num_return_sequences == 1  # the config itself is unchanged


def test_generate_setting_errors(lm):
    model, params = lm
    ids = np.full((1, 3), 5)
    with pytest.raises(ValueError, match="needs max_new_tokens="):
        jaxmm.generate(model, params, ids)
    with pytest.raises(ValueError, match="Did you mean 'num_beams'"):
        jaxmm.generate(model, params, ids, max_new_tokens=2, num_beam=2)
    with pytest.raises(ValueError, match="must be a jaxmm GenerationConfig"):
        jaxmm.generate(model, params, ids, generation_config=dict(max_new_tokens=2))
