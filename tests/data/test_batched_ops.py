"""Batched tokenisation: the input pipeline tokenises a chunk of examples in one
tokenizer call, and every batch equals what the ops give one example at a time."""

import numpy as np
import pytest
from data_helpers import SCENES

from jaxmm.data import make_iterator, preprocess

SPECS = {
    # one caption per example, a question/answer pair, all five captions (N, T), and a
    # variable-length feature (speech) carried through the chunk untouched
    "single": "select('captions', 0, 'text')|tokenize(12)|pad_to('speech', 40000)"
              "|keep('input_ids', 'attention_mask', 'token_type_ids', 'speech')",
    "pair": "select('questions', 1, 'q')|select('answers', 1, 'a')"
            "|tokenize(16, key='q', pair_key='a')|keep('input_ids', "
            "'token_type_ids', 'attention_mask', 'image', 'label')",
    "grouped": "tokenize(10, key='captions', prefix='c_')|keep('c_input_ids', 'c_attention_mask')",
    "unpadded": "select('captions', 2, 'text')|tokenize(12, pad=False)|keep('input_ids')",
    "two_tokenizers": "select('captions', 0, 'text')|tokenize(8)|lowercase('speech_text')"
                      "|tokenize(20, key='speech_text', prefix='s_')|keep('input_ids', "
                      "'s_input_ids', 's_attention_mask', 'speech_text')",
}


class CountingTokenizer:
    def __init__(self, inner):
        self.inner, self.calls = inner, 0

    def __getattr__(self, name):
        return getattr(self.inner, name)

    def encode(self, *args, **kwargs):
        self.calls += 1
        return self.inner.encode(*args, **kwargs)


def _batches(scenes_dir, spec, tokenizer, per_example: bool, batch_size: int = 4):
    cfg = {"name": SCENES, "data_dir": scenes_dir, "pp": spec, "read_chunk": 16}
    it = make_iterator(cfg, split="train", batch_size=batch_size, seed=3, shuffle=True,
                       repeat=False, process_index=0, process_count=1, tokenizer=tokenizer)
    if per_example:  # the same ops as one plain callable: no batched stage
        chain = it._pp
        it._pp = lambda example, seed: chain(example, seed)
    with it:
        return list(it)


@pytest.mark.parametrize("name", sorted(SPECS))
def test_batched_pipeline_equals_one_example_at_a_time(scenes_dir, tokenizer, name):
    counting = CountingTokenizer(tokenizer)
    size = 1 if name == "unpadded" else 4  # (unpadded ids differ in length: for packing)
    fast = _batches(scenes_dir, SPECS[name], counting, False, size)
    calls = counting.calls
    counting.calls = 0
    slow = _batches(scenes_dir, SPECS[name], counting, True, size)
    assert len(fast) == len(slow) == 48 // size
    for a, b in zip(fast, slow):
        assert sorted(a) == sorted(b)
        for key in a:
            assert a[key].shape == b[key].shape, key
            np.testing.assert_array_equal(a[key], b[key], err_msg=key)
    # 48 examples in chunks of 16: 3 tokenizer calls per tokenize op, not one per example
    ops = SPECS[name].count("tokenize(")
    assert calls <= 3 * ops + 2, calls  # (+ the probes when the ops are built)
    assert counting.calls >= 48 * ops


def test_stages_split_the_chain_at_batched_ops(tokenizer):
    chain = preprocess.build(SPECS["two_tokenizers"], tokenizer=tokenizer)
    assert [(lo, hi, fn is not None) for lo, hi, fn in chain.stages] == [
        (0, 1, True), (2, 3, True), (4, 5, False)]
    assert preprocess.build("lowercase('text')").stages == [(0, 1, None)]


def test_unpadded_tokenize_refuses_several_texts_per_example(scenes_dir, tokenizer):
    from jaxmm.config import ConfigError

    with pytest.raises(ConfigError, match="one text per example"):
        _batches(scenes_dir, "tokenize(12, key='captions', pad=False)", tokenizer, False)
