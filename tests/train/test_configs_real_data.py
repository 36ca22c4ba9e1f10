"""Every shipped config trains on a catalog dataset named by its ``data=`` argument and
is evaluated: ``jaxmm train`` for two steps, then ``jaxmm eval``, under
``tfds.testing.mock_data`` (nothing is downloaded)."""

import json
import math
import os

import pytest

from jaxmm.config import ConfigError, load_config
from tests.data.data_helpers import mock_catalog
from tests.train.helpers import QUICK_CLI, ROOT, train_and_eval_cli

CORPUS = ("a small red circle is left of a large blue square . "
          "the quick brown fox jumps over the lazy dog . "
          "two green triangles and one purple diamond on a gray background .").split(" . ")

# config file -> its ``:arg`` for a catalog dataset ({tok}: the tokenizer folder, {vocab},
# {mask} and {sep}: its size, [MASK] and [SEP] ids).
CASES = {
    "lm_gpt": "tiny,data=lm1b,seq_len=16,vocab={vocab},tokenizer={tok}",
    "lm_gpt:c4": "tiny,data=c4,seq_len=16,vocab={vocab},tokenizer={tok}",
    "mlm_bert": "tiny,data=lm1b,seq_len=16,vocab={vocab},mask={mask},tokenizer={tok}",
    "mlm_bert:nsp": "tiny,nsp=true,data=c4,seq_len=16,vocab={vocab},mask={mask},tokenizer={tok}",
    "vit_classification": "tiny,data=imagenet2012,classes=1000",
    "clip_contrastive": "tiny,data=coco_captions,res=32,seq_len=16,tokenizer={tok}",
    "itm": "tiny,data=coco_captions,res=32,seq_len=16,vocab={vocab},tokenizer={tok}",
    "asr_whisper": "tiny,data=librispeech,seq_len=16,tokenizer={tok}",
    "qa_bert": "size=tiny,data=squad,seq_len=48,stride=8,vocab={vocab},tokenizer={tok}",
    "glue_bert": "mrpc,size=tiny,seq_len=16,vocab={vocab},tokenizer={tok}",
    "glue_bert:stsb": "stsb,size=tiny,seq_len=16,vocab={vocab},tokenizer={tok}",
    "ner_bert": "tiny,data=conll2003,seq_len=16,vocab={vocab},tokenizer={tok}",
    "t5_text2text": "data=cnn_dailymail,size=tiny,src_len=16,tgt_len=8,vocab={vocab},"
                    "tokenizer={tok},beams=2,eos={sep}",
    "detr_scenes": "tiny,data=coco/2017,res=32",
    "audio_classification": "tiny,data=crema_d,seconds=1.0",
    "video_classification": "tiny,data=ucf101,frames=4",
    "t5_text2text:wmt": "data=wmt14_translate/de-en,size=tiny,src_len=16,tgt_len=8,"
                        "vocab={vocab},tokenizer={tok},eos={sep}",
}
# metrics `jaxmm eval` reports besides the loss
EVAL_METRICS = {"mlm_bert:nsp": ("nsp_accuracy", "accuracy"),
                "glue_bert": ("glue/accuracy", "glue/f1"),
                "itm": ("balanced_accuracy", "itm_pos_accuracy", "itm_neg_accuracy"),
                "glue_bert:stsb": ("glue/pearson", "glue/spearman"),
                "ner_bert": ("ner/f1", "ner/precision", "ner/recall", "ner/accuracy"),
                "t5_text2text": ("text/rouge1", "text/rougeL"),
                "t5_text2text:wmt": ("text/bleu",),
                "detr_scenes": ("coco/map", "coco/ap50"),
                "audio_classification": ("accuracy",), "video_classification": ("accuracy",)}


@pytest.fixture(scope="module")
def tokenizer(tmp_path_factory):
    from jaxmm.data import tokenizers

    root = tmp_path_factory.mktemp("tok")
    (root / "corpus.txt").write_text("\n".join(CORPUS * 4) + "\n")
    tok = tokenizers.train_tokenizer("wordpiece", str(root / "corpus.txt"), 96,
                                     out_dir=str(root / "tokenizer"), min_frequency=1)
    return str(root / "tokenizer"), tok


def test_every_shipped_config_has_a_catalog_case():
    shipped = {os.path.splitext(n)[0] for n in os.listdir(os.path.join(ROOT, "configs"))
               if n.endswith(".py") and not n.startswith("_")}
    # demo.py runs the built-in data (test_demo); distill_vit needs a teacher export;
    # sft_gpt trains on conversations built locally (tests/data/test_chat.py).
    cased = {c.split(":")[0] for c in CASES}
    assert shipped - {"demo", "distill_vit", "sft_gpt"} <= cased, shipped - cased


@pytest.mark.parametrize("name,arg", [("lm_gpt", "tiny,data=glue/sst2"),
                                      ("vit_classification", "tiny,data=lm1b"),
                                      ("clip_contrastive", "tiny,data=imagenet2012"),
                                      ("itm", "tiny,data=imagenet2012"),
                                      ("ner_bert", "tiny,data=glue/sst2")])
def test_a_dataset_of_another_layout_is_refused_with_the_ones_that_fit(name, arg):
    with pytest.raises(ConfigError, match="trains on .*Pick one of:") as e:
        load_config(os.path.join(ROOT, "configs", f"{name}.py:{arg}"))
    assert "synthetic" in str(e.value)


@pytest.mark.slow
@pytest.mark.parametrize("name", sorted(CASES))
def test_config_trains_and_evaluates_on_its_catalog_dataset(name, tokenizer, tmp_path, capsys):
    tok_dir, tok = tokenizer
    arg = CASES[name].format(vocab=tok.vocab_size, mask=tok.mask_token_id, tok=tok_dir,
                             sep=tok.sep_token_id)
    config = f"{os.path.join(ROOT, 'configs', name.split(':')[0])}.py:{arg},steps=2,batch=8"
    workdir = str(tmp_path / "run")
    with mock_catalog(16):
        result = train_and_eval_cli(config, workdir, QUICK_CLI, capsys)
    assert result["step"] == 2 and math.isfinite(result["metrics"]["loss"])
    for metric in EVAL_METRICS.get(name, ()):
        low, high = (0.0, 100.0) if metric.startswith("text/") else (-1.0, 1.0)
        assert low <= result["metrics"][metric] <= high, (metric, result["metrics"])
    with open(os.path.join(workdir, "metrics.jsonl")) as f:
        losses = [r["train/loss"] for r in map(json.loads, f) if "train/loss" in r]
    assert len(losses) == 2 and all(math.isfinite(x) for x in losses)
    with open(os.path.join(workdir, "config.json")) as f:
        assert json.load(f)["data"]["name"] != "synthetic"
    if name == "qa_bert":  # the squad evaluator's SQuAD scores (percentages)
        for metric in ("squad/exact_match", "squad/f1"):
            assert 0.0 <= result["metrics"][metric] <= 100.0, (metric, result["metrics"])
        assert result["metrics"]["squad/num_examples"] > 0


# -- every config x every catalog dataset of its layout: one batch of each split ----------
# (the train + eval runs above take one or two presets per config; this covers the rest of
# the tfds catalog; jaxmm's own builders, scenes and the Karpathy flickr30k, are built for
# real in their own tests)
TFDS_PRESETS = ["coco_captions", "imagenet2012", "squad",
                "librispeech", "lm1b", "c4/en", "c4/realnewslike", "cnn_dailymail",
                "conll2003"] + [f"glue/{t}" for t in ("cola", "sst2", "mrpc", "stsb", "qqp",
                                                       "mnli", "qnli", "rte", "wnli")] + [
    f"wmt14_translate/{p}" for p in ("cs-en", "de-en", "fr-en", "hi-en", "ru-en")]
MATRIX_ARGS = {  # the non-data arguments each config needs for real data
    "lm_gpt": "tiny,seq_len=16,vocab={vocab},tokenizer={tok}",
    "mlm_bert": "tiny,seq_len=16,vocab={vocab},mask={mask},tokenizer={tok}",
    "mlm_bert:nsp": "tiny,nsp=true,seq_len=16,vocab={vocab},mask={mask},tokenizer={tok}",
    "vit_classification": "tiny,classes=1000",
    "clip_contrastive": "tiny,res=32,seq_len=16,tokenizer={tok}",
    "itm": "tiny,res=32,seq_len=16,vocab={vocab},tokenizer={tok}",
    "asr_whisper": "tiny,seq_len=16,tokenizer={tok}",
    "qa_bert": "size=tiny,seq_len=48,stride=8,vocab={vocab},tokenizer={tok}",
    "qa_bert:v2": "size=tiny,version=2,seq_len=48,stride=8,vocab={vocab},tokenizer={tok}",
    "ner_bert": "tiny,seq_len=16,vocab={vocab},tokenizer={tok}",
    "t5_text2text": "size=tiny,src_len=16,tgt_len=8,vocab={vocab},tokenizer={tok},eos={sep}",
}


# the target each layout must carry
LABELLED = {"classification": "label", "text_classification": "label",
            "token_classification": "labels", "language_modeling": "labels",
            "text2text": "labels", "speech": "labels", "pretraining": "next_sentence_label",
            "extractive_qa": "start_positions"}


def _matrix():
    """(config, config arg) for every catalog preset each config accepts."""
    out = []
    for name, arg in MATRIX_ARGS.items():
        for preset in TFDS_PRESETS:
            full = f"{arg},data={preset}"
            try:
                load_config(os.path.join(ROOT, "configs", f"{name.split(':')[0]}.py:"
                                         + full.format(vocab=96, mask=4, tok="t", sep=3)))
            except ConfigError as e:
                if "trains on" in str(e) or "Unknown GLUE" in str(e):
                    continue  # a dataset of another layout (refused: tested above)
                raise
            out.append((name, full))
    # glue_bert names its GLUE task with ``task`` (data=glue is the default)
    out += [("glue_bert", f"{t},size=tiny,seq_len=16,vocab={{vocab}},tokenizer={{tok}}")
            for t in ("cola", "sst2", "mrpc", "stsb", "qqp", "mnli", "qnli", "rte", "wnli")]
    return out


def test_the_matrix_covers_every_tfds_preset_and_config():
    pairs = _matrix()
    covered = {a.split("data=")[1].split(",")[0] for _, a in pairs if "data=" in a}
    assert set(TFDS_PRESETS) - {"glue/" + t for t in (
        "cola", "sst2", "mrpc", "stsb", "qqp", "mnli", "qnli", "rte", "wnli")} <= covered
    assert {n for n, _ in pairs} >= set(MATRIX_ARGS) | {"glue_bert"}


@pytest.mark.slow
@pytest.mark.parametrize("name,arg", _matrix())
def test_config_reads_a_batch_of_each_split_of_every_catalog_dataset(name, arg, tokenizer):
    """The config's data section yields batches with the model's inputs, for training and
    for evaluation, under tfds mock data."""
    from jaxmm.data import make_iterator
    from jaxmm.data.tokenizers import load

    tok_dir, tok = tokenizer
    arg = arg.format(vocab=tok.vocab_size, mask=tok.mask_token_id, tok=tok_dir,
                     sep=tok.sep_token_id)
    config = load_config(os.path.join(ROOT, "configs", f"{name.split(':')[0]}.py:{arg}"))
    with mock_catalog(16):
        for split, repeat in (("train", True), ("validation", False)):
            with make_iterator(config.data, split=split, batch_size=4, repeat=repeat,
                               process_index=0, process_count=1,
                               tokenizer=load(tok_dir)) as it:
                batch = next(it)
            assert len(next(iter(batch.values()))) == 4
            assert {"image", "input_ids", "audio"} & set(batch), (split, sorted(batch))
            if config.data.task in LABELLED:
                assert LABELLED[config.data.task] in batch, (split, sorted(batch))
