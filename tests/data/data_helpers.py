"""Names the data tests import (a plain module: ``conftest`` is not importable by
name once several test folders have one)."""

import contextlib
from unittest import mock

SCENES = "jaxmm_scenes/test"


@contextlib.contextmanager
def mock_catalog(num_examples: int = 8):
    """``tfds.testing.mock_data`` for random-access sources.

    tfds 4.9.10's mock data source draws each dynamic dimension independently,
    so a ``Sequence`` of dicts (squad ``answers``, coco ``captions``) gets
    sub-features of different lengths and cannot be serialised; fixing dynamic
    dimensions (to 10) avoids that. Its random boxes also have min > max, which
    the BBox encoder rejects, so they are sorted. Nothing is downloaded.
    """
    import tensorflow_datasets as tfds
    from tensorflow_datasets.testing import mocking

    original_init = mocking.RandomFakeGenerator.__init__
    original_bbox = tfds.features.BBoxFeature.encode_example

    def init(self, *args, **kwargs):
        kwargs["constant_dynamic_shape"] = True
        original_init(self, *args, **kwargs)

    def encode_bbox(self, bbox):
        y0, x0, y1, x1 = (float(v) for v in bbox)
        box = tfds.features.BBox(min(y0, y1), min(x0, x1), max(y0, y1), max(x0, x1))
        return original_bbox(self, box)

    with mock.patch.object(mocking.RandomFakeGenerator, "__init__", init), \
            mock.patch.object(tfds.features.BBoxFeature, "encode_example", encode_bbox), \
            tfds.testing.mock_data(num_examples=num_examples):
        yield


def save_word_tokenizer(path, ids: dict[str, int], first: int, vocab_size: int) -> None:
    """A word-level tokenizer folder: the special tokens ``ids`` (``{"<pad>": 0, ...}``,
    named in special_tokens_map.json by role) and the words ``w<first>`` ..
    ``w<vocab_size - 1>`` as ids ``first`` .. ``vocab_size - 1``."""
    import json

    from tokenizers import Tokenizer, models, pre_tokenizers

    vocab = {**ids, **{f"w{i}": i for i in range(first, vocab_size)}}
    tok = Tokenizer(models.WordLevel(vocab, unk_token="<unk>"))
    tok.pre_tokenizer = pre_tokenizers.WhitespaceSplit()
    tok.save(str(path / "tokenizer.json"))
    roles = {"<s>": "bos_token", "</s>": "eos_token", "<pad>": "pad_token", "<unk>": "unk_token"}
    (path / "special_tokens_map.json").write_text(json.dumps({roles[t]: t for t in ids}))
