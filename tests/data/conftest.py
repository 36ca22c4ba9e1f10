"""Shared fixtures: a tiny built-in dataset and a word-level tokenizer.

The tokenizer implements the project Tokenizer interface (encode/decode and
special-token ids) on top of the ``tokenizers`` library, so the pipeline tests
do not depend on ``jaxmm.data.tokenizers``.
"""

import numpy as np
import pytest
from tokenizers import Tokenizer as HFTokenizer
from tokenizers import models, pre_tokenizers, processors

SPECIALS = ["[PAD]", "[UNK]", "[CLS]", "[SEP]", "[MASK]"]
WORDS = (
    "a an the there is of and at on to in shape shapes image picture showing gray background "
    "largest biggest object large small left right center middle top bottom above below "
    "how many are what color which column yes no red green blue yellow purple orange "
    "circle circles square squares triangle triangles diamond diamonds zero one two three four "
    "five six seven eight nine , ? who wrote it hello world"
).split()


class WordTokenizer:
    """Word-level tokenizer with [CLS] x [SEP] (y [SEP]) templates."""

    def __init__(self):
        vocab = {w: i for i, w in enumerate(SPECIALS + sorted(set(WORDS)))}
        tok = HFTokenizer(models.WordLevel(vocab, unk_token="[UNK]"))
        tok.pre_tokenizer = pre_tokenizers.Sequence(
            [pre_tokenizers.Whitespace(), pre_tokenizers.Punctuation()])
        tok.post_processor = processors.TemplateProcessing(
            single="[CLS] $A [SEP]", pair="[CLS] $A [SEP] $B:1 [SEP]:1",
            special_tokens=[("[CLS]", vocab["[CLS]"]), ("[SEP]", vocab["[SEP]"])])
        self._tok = tok
        self.vocab_size = len(vocab)
        self.pad_token_id, self.cls_token_id = vocab["[PAD]"], vocab["[CLS]"]
        self.sep_token_id, self.mask_token_id = vocab["[SEP]"], vocab["[MASK]"]
        self.bos_token_id = self.eos_token_id = None

    def encode(self, texts, pairs=None, max_length=None, padding=True, truncation=True,
               add_special_tokens=True):
        inputs = list(zip(texts, pairs)) if pairs is not None else list(texts)
        encs = self._tok.encode_batch(inputs, add_special_tokens=add_special_tokens)
        ids = [e.ids for e in encs]
        types = [e.type_ids for e in encs]
        if truncation and max_length:
            ids, types = [x[:max_length] for x in ids], [t[:max_length] for t in types]
        width = max(len(x) for x in ids)
        if padding and max_length:
            width = max_length
        out = np.full((len(ids), width), self.pad_token_id, np.int32)
        mask = np.zeros((len(ids), width), np.int32)
        tt = np.zeros((len(ids), width), np.int32)
        for i, (x, t) in enumerate(zip(ids, types)):
            out[i, : len(x)], mask[i, : len(x)], tt[i, : len(t)] = x, 1, t
        return {"input_ids": out, "attention_mask": mask, "token_type_ids": tt}

    def decode(self, ids, skip_special_tokens=True):
        return self._tok.decode([int(i) for i in ids], skip_special_tokens=skip_special_tokens)


@pytest.fixture(scope="session")
def tokenizer():
    return WordTokenizer()


@pytest.fixture(scope="session")
def scenes_dir(tmp_path_factory):
    """A small built-in dataset (48/16/16 examples), built once per session."""
    from jaxmm.data import builtin

    data_dir = str(tmp_path_factory.mktemp("scenes"))
    builtin.build(data_dir, "tiny", name="test", train_size=48, validation_size=16,
                  test_size=16)
    return data_dir
