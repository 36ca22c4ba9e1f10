"""Sequence packing: hand-checked rows, token stream preserved, exact resume mid-window."""

import numpy as np
import pytest
from data_helpers import SCENES

from jaxmm.config import ConfigError
from jaxmm.data import make_iterator
from jaxmm.data.packing import pack_sequences

P = -100


def test_concat_mode_hand_checked():
    out = pack_sequences([[1, 2, 3], [4, 5], [6]], length=4, mode="concat", eos_id=9, pad_id=0)
    np.testing.assert_array_equal(out["input_ids"], [[1, 2, 3, 9], [4, 5, 9, 6], [9, 0, 0, 0]])
    np.testing.assert_array_equal(out["attention_mask"], [[1] * 4, [1] * 4, [1, 0, 0, 0]])
    np.testing.assert_array_equal(out["labels"], [[1, 2, 3, 9], [4, 5, 9, 6], [9, P, P, P]])


def test_segments_mode_first_fit_hand_checked():
    seqs = [[11, 12, 13], [21, 22], [31, 32, 33, 34, 35, 36], [41]]
    out = pack_sequences(seqs, length=4, mode="segments", pad_id=0)
    # Pieces: a(3) b(2) c1(4) c2(2) d(1); first fit: row0 a+d, row1 b+c2, row2 c1.
    np.testing.assert_array_equal(out["input_ids"], [[11, 12, 13, 41], [21, 22, 35, 36],
                                                     [31, 32, 33, 34]])
    np.testing.assert_array_equal(out["segment_ids"], [[1, 1, 1, 2], [1, 1, 2, 2],
                                                       [1, 1, 1, 1]])
    np.testing.assert_array_equal(out["positions"], [[0, 1, 2, 0], [0, 1, 0, 1], [0, 1, 2, 3]])
    np.testing.assert_array_equal(out["labels"], [[P, 12, 13, P], [P, 22, P, 36],
                                                  [P, 32, 33, 34]])
    with pytest.raises(ValueError, match="Unknown pack mode"):
        pack_sequences(seqs, 4, mode="zip")


def _cfg(scenes_dir, **pack):
    return {"name": SCENES, "data_dir": scenes_dir,
            "pp": "select('captions', 0, 'text')|tokenize(16, key='text', pad=False)"
                  "|keep('input_ids')",
            "pack": {"length": 16, "window": 8, **pack}}


def test_packed_stream_keeps_every_token_in_order(scenes_dir, tokenizer):
    kw = dict(split="train", seed=2, process_index=0, process_count=1, tokenizer=tokenizer)
    with make_iterator(_cfg(scenes_dir, eos_id=99), batch_size=4, **kw) as it:
        rows = np.concatenate([next(it)["input_ids"] for _ in range(12)])
    plain = dict(_cfg(scenes_dir))
    del plain["pack"]
    with make_iterator(plain, batch_size=1, **kw) as it:
        examples = [next(it)["input_ids"][0] for _ in range(48)]
    stream = np.concatenate([np.append(e, 99) for e in examples])
    # Rows of a window end padded; drop padding and compare token streams.
    packed = rows[rows != tokenizer.pad_token_id]
    n = min(len(packed), len(stream))
    assert n > 300
    np.testing.assert_array_equal(packed[:n], stream[:n])


@pytest.mark.parametrize("mode", ["concat", "segments"])
def test_packed_resume_mid_window_is_exact(scenes_dir, tokenizer, mode):
    kw = dict(split="train", batch_size=3, seed=4, process_index=0, process_count=1,
              tokenizer=tokenizer)
    with make_iterator(_cfg(scenes_dir, mode=mode), **kw) as it:
        reference = [next(it) for _ in range(8)]
    with make_iterator(_cfg(scenes_dir, mode=mode), **kw) as it:
        for _ in range(3):
            next(it)
        state = it.get_state()
    assert state["skip"] > 0  # stopped inside a window
    with make_iterator(_cfg(scenes_dir, mode=mode), **kw) as it:
        it.set_state(state)
        resumed = [next(it) for _ in range(5)]
    for a, b in zip(reference[3:], resumed):
        assert set(a) == set(b)
        for k in a:
            np.testing.assert_array_equal(a[k], b[k])
    if mode == "segments":
        assert {"segment_ids", "positions"} <= set(reference[0])


def test_pack_config_errors(scenes_dir, tokenizer):
    with pytest.raises(ConfigError, match="training streams"):
        make_iterator(_cfg(scenes_dir), split="train", batch_size=2, repeat=False,
                      process_index=0, process_count=1, tokenizer=tokenizer)
    with pytest.raises(ConfigError, match="Unknown pack option"):
        make_iterator(_cfg(scenes_dir, lenght=3), split="train", batch_size=2,
                      process_index=0, process_count=1, tokenizer=tokenizer)
