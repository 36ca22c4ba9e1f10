"""Catalog data configs under tfds mock data (never downloading) and scenes task layouts."""

import numpy as np
import pytest
from data_helpers import mock_catalog

from jaxmm.config import ConfigError
from jaxmm.data import make_iterator, scenes, tokenizers
from jaxmm.data.catalog import data_config
from jaxmm.data.pipeline import MASK_KEY

I32, F32 = np.dtype("int32"), np.dtype("float32")

CASES = {
    "coco_captions": ({"image_size": 32, "max_length": 12}, {
        "image": ((4, 32, 32, 3), F32), "input_ids": ((4, 12), I32),
        "attention_mask": ((4, 12), I32), "labels": ((4, 12), I32), "image_id": ((4,), I32)}),
    "imagenet2012": ({"image_size": 32}, {"image": ((4, 32, 32, 3), F32),
                                          "label": ((4,), I32)}),
    "glue/sst2": ({"max_length": 16}, {"input_ids": ((4, 16), I32), "label": ((4,), I32),
                                       "attention_mask": ((4, 16), I32),
                                       "token_type_ids": ((4, 16), I32)}),
    "glue/mrpc": ({"max_length": 16}, {"input_ids": ((4, 16), I32), "label": ((4,), I32),
                                       "attention_mask": ((4, 16), I32),
                                       "token_type_ids": ((4, 16), I32)}),
    "glue/stsb": ({"max_length": 16}, {"input_ids": ((4, 16), I32), "label": ((4,), F32),
                                       "attention_mask": ((4, 16), I32),
                                       "token_type_ids": ((4, 16), I32)}),
    "squad": ({"max_length": 48}, {"input_ids": ((4, 48), I32), "attention_mask": ((4, 48), I32),
                                   "token_type_ids": ((4, 48), I32),
                                   "start_positions": ((4,), I32),
                                   "end_positions": ((4,), I32)}),
    "librispeech": ({"audio_seconds": 0.5, "max_length": 16}, {
        "audio": ((4, 8000), F32), "audio_mask": ((4, 8000), I32), "input_ids": ((4, 16), I32),
        "attention_mask": ((4, 16), I32), "labels": ((4, 16), I32)}),
    "lm1b": ({"max_length": 16}, {"input_ids": ((4, 16), I32), "attention_mask": ((4, 16), I32),
                                  "labels": ((4, 16), I32)}),
}


def _layout(batch):
    return {k: (v.shape, v.dtype) for k, v in batch.items() if k != MASK_KEY}


@pytest.mark.parametrize("name", list(CASES))
def test_catalog_config_under_mock_data(name, tokenizer):
    kwargs, expected = CASES[name]
    if name == "squad":  # doc-stride windows need character offsets: the jaxmm HF wrapper
        tokenizer = tokenizers.HFTokenizer(tokenizer._tok, {
            "pad": "[PAD]", "unk": "[UNK]", "cls": "[CLS]", "sep": "[SEP]", "mask": "[MASK]"})
    cfg = data_config(name, **kwargs)
    assert cfg.data_dir is None  # the tfds default dir; mock_data intercepts every read
    with mock_catalog(8):
        with make_iterator(cfg, split="train", batch_size=4, seed=0, process_index=0,
                           process_count=1, tokenizer=tokenizer) as it:
            batch = next(it)
    assert _layout(batch) == expected
    if "labels" in batch:
        np.testing.assert_array_equal(batch["labels"] == -100, batch["attention_mask"] == 0)
    if name == "squad":
        assert (batch["start_positions"] <= batch["end_positions"]).all()


def test_mnli_validation_maps_to_matched_and_eval_pads(tokenizer):
    cfg = data_config("glue/mnli", max_length=16)
    assert cfg.splits["validation"] == "validation_matched"
    with mock_catalog(6):
        with make_iterator(cfg, split="validation", batch_size=4, shuffle=False, repeat=False,
                           process_index=0, process_count=1, tokenizer=tokenizer) as it:
            batches = list(it)
    assert [b[MASK_KEY].sum() for b in batches] == [4, 2]


def test_coco_retrieval_eval_keeps_five_captions(tokenizer):
    cfg = data_config("coco_captions", task="retrieval", image_size=16, max_length=8)
    with mock_catalog(4):
        with make_iterator(cfg, split="validation", batch_size=2, shuffle=False, repeat=False,
                           process_index=0, process_count=1, tokenizer=tokenizer) as it:
            batch = next(it)
    assert batch["input_ids"].shape == (2, 5, 8) and batch["image_id"].shape == (2,)


def test_unknown_names():
    with pytest.raises(ConfigError, match="Did you mean 'lm1b'"):
        data_config("lm1c")
    with pytest.raises(ConfigError, match="Unknown GLUE task 'sst3'"):
        data_config("glue/sst3")
    with pytest.raises(ConfigError, match="Unknown scenes task"):
        data_config("scenes", task="segmentation")


@pytest.mark.parametrize("task", ["classification", "captioning", "retrieval", "vqa", "speech",
                                  "audio_text", "detection"])
def test_scenes_task_layouts(task, scenes_dir, tokenizer):
    cfg = data_config("scenes", task=task, data_dir=scenes_dir, image_size=32, max_length=24,
                      audio_seconds=2.0)
    cfg.name = "jaxmm_scenes/test"
    kw = dict(batch_size=4, seed=0, process_index=0, process_count=1, tokenizer=tokenizer)
    with make_iterator(cfg, split="train", **kw) as it:
        train = next(it)
    with make_iterator(cfg, split="validation", shuffle=False, repeat=False, **kw) as it:
        evaluation = next(it)
    if task in ("classification", "captioning", "retrieval", "vqa"):
        assert train["image"].shape == (4, 32, 32, 3)
    if task == "captioning":
        ids = train["input_ids"]
        assert ids.shape == (4, 24) and (ids[:, 0] == tokenizer.cls_token_id).all()
        text = tokenizer.decode(ids[0])
        assert "[UNK]" not in tokenizer.decode(ids[0], skip_special_tokens=False)
        assert len(text.split()) >= 3
    if task == "retrieval":
        assert evaluation["input_ids"].shape == (4, 5, 24)
        assert evaluation["image_id"].shape == (4,)
    if task == "vqa":
        assert train["label"].shape == (4,) and (train["label"] >= 0).all()
        assert evaluation["label"].shape == (4, 4) and evaluation["input_ids"].shape == (4, 4, 24)
        answers = [[a.decode() for a in row] for row in evaluation["answers"]]
        np.testing.assert_array_equal(
            evaluation["label"], [[scenes.ANSWERS.index(a) for a in row] for row in answers])
    if task in ("speech", "audio_text"):
        assert train["audio"].shape == (4, 32000) and train["audio"].dtype == np.float32
        assert 0 < train["audio_mask"].sum(axis=1).min() and np.abs(train["audio"]).max() <= 1
    if task == "classification":
        assert set(train) == {"image", "label"} and train["label"].max() < len(scenes.SHAPES)
    if task == "detection":  # each object's drawn box, from the scene that made the image
        from jaxmm.data import builtin

        plan = builtin.plan_splits(builtin.make_config("tiny", name="test", train_size=48,
                                                       validation_size=16, test_size=16))
        by_id = dict(plan["validation"])
        assert train["boxes"].shape == (4, 9, 4) and train["box_mask"].shape == (4, 9)
        for row in range(4):
            scene = by_id[int(evaluation["image_id"][row])]
            n = len(scene.objects)
            assert evaluation["box_mask"][row].tolist() == [1] * n + [0] * (9 - n)
            x0, y0, x1, y1 = np.array([scenes.object_box(o) for o in scene.objects]).T / 64
            want = np.stack([(x0 + x1) / 2, (y0 + y1) / 2, x1 - x0, y1 - y0], -1)
            np.testing.assert_allclose(evaluation["boxes"][row, :n], want, atol=1e-6)
            assert evaluation["labels"][row, :n].tolist() == [
                scenes.SHAPES.index(o.shape) for o in scene.objects]


def test_scenes_with_the_project_tokenizer(scenes_dir, tmp_path):
    """The built-in text corpus trains a jaxmm tokenizer that round-trips captions."""
    import os

    from jaxmm.data.tokenizers import train_tokenizer

    corpus = os.path.join(scenes_dir, "jaxmm_scenes", "test", "train_text.txt")
    lines = open(corpus).read().splitlines()
    assert len(lines) == 48 * (5 + 4)
    tok = train_tokenizer("wordpiece", [corpus], vocab_size=120, min_frequency=1)
    cfg = {"name": "jaxmm_scenes/test", "data_dir": scenes_dir,
           "pp": "select('captions', 0, 'text')|tokenize(32, key='text')|keep('text', 'input_ids')"}
    with make_iterator(cfg, split="test", batch_size=4, shuffle=False, repeat=False,
                       process_index=0, process_count=1, tokenizer=tok) as it:
        batch = next(it)
    for text, ids in zip(batch["text"], batch["input_ids"]):
        assert tok.decode(ids).replace(" ,", ",") == text.decode()
