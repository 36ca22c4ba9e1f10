"""jaxmm.generate vs Hugging Face ``generate`` with the same weights.

Tiny randomly initialised transformers models (GPT-2, Llama with GQA, and the
encoder-decoders T5 (text-to-text) and Whisper (speech-to-text)) are
saved, imported with ``jaxmm.convert.from_hf`` and asked for the same
generations: greedy must give identical ids; beam search must give the same
best hypothesis for at least 9 of 10 prompts, and where it does not, the two
hypotheses must be a near-tie under both implementations.
"""

import numpy as np
import pytest

torch = pytest.importorskip("torch")
transformers = pytest.importorskip("transformers")

import jaxmm  # noqa: E402
from jaxmm.convert import from_hf  # noqa: E402
from tests.generation.hf_tiny import EOS, NEW, NUM_PROMPTS, PAD, VOCAB, hf_model  # noqa: E402


@pytest.fixture(scope="module", params=["gpt2", "llama", "t5", "whisper"])
def pair(request, tmp_path_factory):
    kind = request.param
    torch.manual_seed(0)
    hf = hf_model(kind).eval()
    path = tmp_path_factory.mktemp(kind)
    hf.save_pretrained(path)
    model, params, _ = from_hf(str(path))
    rng = np.random.default_rng(1)
    if kind == "whisper":  # log-mel-like features (B, mels, frames); 2x frames per position
        features = rng.normal(size=(NUM_PROMPTS, 8, 16)).astype(np.float32)
        return kind, hf, model, params, features, None
    lengths = rng.integers(2, 9, size=NUM_PROMPTS)
    width = lengths.max()
    ids = np.full((NUM_PROMPTS, width), PAD if kind != "t5" else 0, np.int64)
    mask = np.zeros_like(ids)
    for r, n in enumerate(lengths):
        cols = slice(width - n, None) if kind != "t5" else slice(0, n)  # T5: right padding
        ids[r, cols] = rng.integers(4, VOCAB, size=n)
        mask[r, cols] = 1
    return kind, hf, model, params, ids, mask


def _run_both(pair, **kw):
    kind, hf, model, params, ids, mask = pair
    with torch.no_grad():
        if kind == "whisper":
            ref = hf.generate(input_features=torch.tensor(ids), return_dict_in_generate=True,
                              output_scores=True, **kw)
            out = jaxmm.generate(model, params, encoder_inputs={"input_features": ids},
                                 output_scores=True, **kw)
        else:
            ref = hf.generate(input_ids=torch.tensor(ids), attention_mask=torch.tensor(mask),
                              return_dict_in_generate=True, output_scores=True, **kw)
            out = jaxmm.generate(model, params, ids, mask, output_scores=True, **kw)
    seq, ours = ref.sequences.numpy(), np.asarray(out.sequences)
    if kind in ("t5", "whisper") and kw.get("num_beams", 1) > 1:
        # HF fills finished beams with `pad_token_id or eos` (eos when pad is 0); compare
        # with jaxmm's pad fill (ids after each hypothesis' EOS).
        seq = _fill_after_eos(seq, start=1, fill=0)
    if not (kind == "whisper" and kw.get("num_beams", 1) > 1):
        # (HF's Whisper generate reorders beam scores along each final hypothesis.)
        _check_scores(ref, out)
    return ref, seq, out, ours


def _check_scores(ref, out):
    """Every step's processed scores agree (same -inf entries, finite ones close)."""
    theirs = np.stack([s.numpy() for s in ref.scores], axis=1)
    ours = np.asarray(out.scores)
    assert ours.shape == theirs.shape
    np.testing.assert_array_equal(np.isneginf(ours), np.isneginf(theirs))
    finite = np.isfinite(theirs)
    np.testing.assert_allclose(ours[finite], theirs[finite], rtol=1e-4, atol=1e-4)


def _fill_after_eos(seq, start, fill):
    seq = seq.copy()
    for row in seq:
        hit = np.flatnonzero(row[start:] == EOS)
        if hit.size:
            row[start + hit[0] + 1:] = fill
    return seq


@pytest.mark.slow
def test_greedy_identical(pair):
    _, seq, _, ours = _run_both(pair, max_new_tokens=NEW)
    np.testing.assert_array_equal(ours, seq)


@pytest.mark.parametrize("pair", ["gpt2", "t5"], indirect=True)
def test_greedy_with_penalties_identical(pair):
    _, seq, _, ours = _run_both(pair, max_new_tokens=NEW, repetition_penalty=1.3,
                                no_repeat_ngram_size=2, min_new_tokens=3)
    np.testing.assert_array_equal(ours, seq)


@pytest.mark.parametrize("pair", ["gpt2"], indirect=True)
def test_greedy_up_to_the_position_limit(pair):
    """10 prompt + 54 new tokens fill GPT-2's 64 positions; the prompt bucket (16)
    shrinks so the KV cache fits the position table."""
    _, hf, model, params, _, _ = pair
    ids = np.random.default_rng(5).integers(4, VOCAB, size=(1, 10))
    with torch.no_grad():
        ref = hf.generate(input_ids=torch.tensor(ids), max_new_tokens=54, min_new_tokens=54)
    out = jaxmm.generate(model, params, ids, max_new_tokens=54, min_new_tokens=54)
    np.testing.assert_array_equal(np.asarray(out.sequences), ref.numpy())
    with pytest.raises(ValueError, match="more than the model's maximum of 64"):
        jaxmm.generate(model, params, ids, max_new_tokens=55)


# Each knob is covered at least once; knobs share runs to keep the suite fast.
BEAM_SETTINGS = {
    "lp0.6_rep1.3": dict(length_penalty=0.6, repetition_penalty=1.3),
    "lp2.0_ngram2_never": dict(length_penalty=2.0, no_repeat_ngram_size=2, early_stopping="never"),
    "ngram3_early": dict(no_repeat_ngram_size=3, early_stopping=True),
}


# Every setting on GPT-2, Llama and T5; one on Whisper (same code path as T5).
BEAM_CASES = [(k, s) for k in ("gpt2", "llama", "t5") for s in BEAM_SETTINGS]
BEAM_CASES.append(("whisper", "lp0.6_rep1.3"))


@pytest.mark.slow
@pytest.mark.parametrize("pair,setting", BEAM_CASES, indirect=["pair"])
def test_beam_search_matches(pair, setting):
    beams = 4
    ref, seq, out, ours = _run_both(pair, max_new_tokens=NEW, num_beams=beams,
                                    num_return_sequences=beams, **BEAM_SETTINGS[setting])
    ref_scores = ref.sequences_scores.numpy()
    our_scores = np.asarray(out.sequences_scores)
    width = max(seq.shape[1], ours.shape[1])
    fill = 0 if pair[0] in ("t5", "whisper") else PAD
    seq = np.pad(seq, ((0, 0), (0, width - seq.shape[1])), constant_values=fill)
    ours = np.pad(ours, ((0, 0), (0, width - ours.shape[1])), constant_values=fill)
    same_top = 0
    for b in range(NUM_PROMPTS):
        rows = slice(b * beams, (b + 1) * beams)
        theirs_b, ours_b = [tuple(s) for s in seq[rows]], [tuple(s) for s in ours[rows]]
        if theirs_b[0] == ours_b[0]:
            same_top += 1
        else:
            # A near-tie: each implementation also found the other's best hypothesis and
            # scored it within 1e-4 of its own best.
            assert ours_b[0] in theirs_b and theirs_b[0] in ours_b, (b, theirs_b, ours_b)
            their_score_of_ours = ref_scores[rows][theirs_b.index(ours_b[0])]
            our_score_of_theirs = our_scores[rows][ours_b.index(theirs_b[0])]
            assert abs(their_score_of_ours - ref_scores[rows][0]) < 1e-4
            assert abs(our_score_of_theirs - our_scores[rows][0]) < 1e-4
        # Hypotheses both found carry the same score.
        for h, s in zip(ours_b, our_scores[rows]):
            if h in theirs_b:
                assert abs(s - ref_scores[rows][theirs_b.index(h)]) < 1e-4
    assert same_top >= NUM_PROMPTS - 1, f"top hypothesis matched for {same_top}/{NUM_PROMPTS}"
