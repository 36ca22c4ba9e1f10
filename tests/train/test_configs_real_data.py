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
    "t5_text2text:wmt": "data=wmt14_translate/de-en,size=tiny,src_len=16,tgt_len=8,"
                        "vocab={vocab},tokenizer={tok},eos={sep}",
}
# metrics `jaxmm eval` reports besides the loss
EVAL_METRICS = {"glue_bert": ("glue/accuracy", "glue/f1"),
                "itm": ("balanced_accuracy", "itm_pos_accuracy", "itm_neg_accuracy"),
                "glue_bert:stsb": ("glue/pearson", "glue/spearman"),
                "ner_bert": ("ner/f1", "ner/precision", "ner/recall", "ner/accuracy"),
                "t5_text2text": ("text/rouge1", "text/rougeL"),
                "t5_text2text:wmt": ("text/bleu",)}


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
