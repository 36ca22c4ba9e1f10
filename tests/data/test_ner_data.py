"""NER data: word -> sub-word label alignment (vs a pure-Python reference), the local
CoNLL builder and its bad inputs, and the conll2003 preset under tfds mock data."""

import numpy as np
import pytest
from data_helpers import mock_catalog

from jaxmm.cli import data as cli
from jaxmm.data import make_iterator
from jaxmm.data.catalog import CONLL2003_NER_TAGS, data_config
from jaxmm.data.local import build_local
from jaxmm.data.ops_text import align_word_labels
from jaxmm.data.sources import DataError
from jaxmm.data.tokenizers import train_tokenizer

TAGS = CONLL2003_NER_TAGS
CONLL = """-DOCSTART- -X- -X- O

EU NNP B-NP B-ORG
rejects VBZ B-VP O
German JJ B-NP B-MISC
call NN I-NP O
to TO B-VP O
boycott VB I-VP O
British JJ B-NP B-MISC
lamb NN I-NP O
. . O O

Peter NNP B-NP B-PER
Blackburn NNP I-NP I-PER

BRUSSELS NNP B-NP B-LOC
1996-08-22 CD I-NP O

The DT B-NP O
European NNP I-NP B-ORG
Commission NNP I-NP I-ORG
said VBD B-VP O
on IN B-PP O
Thursday NNP B-NP O
it PRP B-NP O
disagreed VBD B-VP O
with IN B-PP O
German JJ B-NP B-MISC
advice NN I-NP O
to TO B-PP O
consumers NNS B-NP O
to TO B-VP O
shun VB I-VP O
British JJ B-NP B-MISC
lamb NN I-NP O
until IN B-SBAR O
scientists NNS B-NP O
determine VBP B-VP O
whether IN B-SBAR O
"""


def _sentences(text):
    out, cur = [], []
    for line in text.splitlines():
        cols = line.split()
        if not cols or cols[0] == "-DOCSTART-":
            if cur:
                out.append(cur)
            cur = []
        else:
            cur.append((cols[0], TAGS.index(cols[-1])))
    return out + ([cur] if cur else [])


@pytest.fixture(scope="module")
def wordpiece(tmp_path_factory):
    """A real WordPiece tokenizer small enough that most words split into sub-words."""
    folder = tmp_path_factory.mktemp("tok")
    corpus = folder / "corpus.txt"
    corpus.write_text(" ".join(w for s in _sentences(CONLL) for w, _ in s) * 3 + "\n")
    return train_tokenizer("wordpiece", [str(corpus)], vocab_size=60, min_frequency=1,
                           out_dir=str(folder / "wp"))


def _reference(tok, words, tags, max_length):
    """run_ner (label_all_tokens=False) by hand: [CLS] pieces... [SEP], first piece labelled."""
    ids, labels = [], []
    for word, tag in zip(words, tags):
        pieces = [tok.token_to_id(p) for p in tok.tokenize(word)]
        ids += pieces
        labels += [tag] + [-100] * (len(pieces) - 1)
    ids, labels = ids[:max_length - 2], labels[:max_length - 2]
    ids = [tok.cls_token_id] + ids + [tok.sep_token_id]
    labels = [-100] + labels + [-100]
    pad = max_length - len(ids)
    return (np.asarray(ids + [tok.pad_token_id] * pad), np.asarray(labels + [-100] * pad),
            np.asarray([1] * len(ids) + [0] * pad))


def test_align_word_labels_by_hand():
    # "EU rejects Blackburn" -> [CLS] EU re ##jects Black ##burn [SEP] [PAD] [PAD];
    # tags B-ORG O I-PER (3, 0, 2): only each word's first piece carries its tag.
    word_ids = np.asarray([[-1, 0, 1, 1, 2, 2, -1, -1, -1],
                           [-1, 0, 0, 0, -1, -1, -1, -1, -1]])  # one word in 3 pieces
    tags = np.asarray([[3, 0, 2], [1, 0, 0]])
    expected = np.asarray([[-100, 3, 0, -100, 2, -100, -100, -100, -100],
                           [-100, 1, -100, -100, -100, -100, -100, -100, -100]])
    got = align_word_labels(word_ids, tags)
    assert got.dtype == np.int32
    np.testing.assert_array_equal(got, expected)
    with pytest.raises(ValueError, match="word 2, but there are tags for only 2 words"):
        align_word_labels(word_ids[0], tags[0, :2])


def test_align_word_labels_matches_a_loop():
    rng = np.random.default_rng(0)
    for _ in range(20):
        n_words = int(rng.integers(0, 6))
        word_ids = np.concatenate([[-1], np.repeat(np.arange(n_words), rng.integers(1, 4, n_words)),
                                   [-1] * int(rng.integers(1, 4))])
        tags = rng.integers(0, 9, n_words)
        expected, prev = [], None
        for w in word_ids:
            expected.append(-100 if w < 0 or w == prev else int(tags[w]))
            prev = w
        np.testing.assert_array_equal(align_word_labels(word_ids, tags), expected)


@pytest.mark.parametrize("max_length", [64, 12])  # 12 truncates the long sentences
def test_conll_build_and_tokenize_words_match_the_reference(tmp_path, wordpiece, max_length):
    (tmp_path / "train.txt").write_text(CONLL)
    summary = build_local("conll", str(tmp_path), {"train": {"input": "train.txt"}},
                          str(tmp_path / "data"), name="mini")
    assert summary["splits"] == {"train": 4} and summary["skipped"] == {}
    assert summary["classes"] == list(TAGS)
    cfg = data_config("conll/mini", data_dir=str(tmp_path / "data"), max_length=max_length)
    with make_iterator(cfg, split="train", batch_size=1, shuffle=False, repeat=False,
                       process_index=0, process_count=1, tokenizer=wordpiece) as it:
        batches = list(it)
    sentences = _sentences(CONLL)
    assert len(batches) == len(sentences)
    split_words = 0
    for batch, sentence in zip(batches, sentences):
        words, tags = zip(*sentence)
        ids, labels, mask = _reference(wordpiece, words, tags, max_length)
        np.testing.assert_array_equal(batch["input_ids"][0], ids)
        np.testing.assert_array_equal(batch["labels"][0], labels)
        np.testing.assert_array_equal(batch["attention_mask"][0], mask)
        split_words += sum(len(wordpiece.tokenize(w)) > 1 for w in words)
    assert split_words > 10  # the test exercises sub-word splits


def test_conll_malformed_lines_are_skipped_or_fail_with_file_and_line(tmp_path, caplog, capsys):
    bad = CONLL.replace("call NN I-NP O\n", "call NN O\n")  # 3 columns in a 4-column file
    (tmp_path / "train.txt").write_text(bad)
    summary = build_local("conll", str(tmp_path), {"train": {"input": "train.txt"}},
                          str(tmp_path / "data"), name="skip")
    assert summary["splits"] == {"train": 3} and summary["skipped"] == {"train": 1}
    assert "train.txt:6" in caplog.text
    with pytest.raises(DataError, match=r"train\.txt:6: .*expected 4 .*columns, found 3"):
        build_local("conll", str(tmp_path), {"train": {"input": "train.txt"}},
                    str(tmp_path / "data"), name="fail", on_corrupt="fail")
    # The CLI: one error line naming the file and line, no traceback.
    capsys.readouterr()
    assert cli.main(["build-conll", "--root", str(tmp_path), "--data-dir", str(tmp_path / "data"),
                     "--split", "train=train.txt", "--name", "cli", "--on-corrupt", "fail"]) == 2
    err = capsys.readouterr().err
    assert "train.txt:6: " in err and "found 3" in err and "Traceback" not in err


def test_conll_unknown_tag_names_the_tag_and_the_list(tmp_path, capsys):
    (tmp_path / "train.txt").write_text(CONLL.replace("Thursday NNP B-NP O",
                                                      "Thursday NNP B-NP B-DATE"))
    with pytest.raises(DataError, match=r"train\.txt:24: tag 'B-DATE' is not in the classes "
                                        r"\['O', 'B-PER'"):
        build_local("conll", str(tmp_path), {"train": {"input": "train.txt"}},
                    str(tmp_path / "data"))
    # The CLI: one error line; --classes accepts the dataset's own tag list.
    args = ["build-conll", "--root", str(tmp_path), "--data-dir", str(tmp_path / "data"),
            "--split", "train=train.txt"]
    assert cli.main(args) == 2
    err = capsys.readouterr().err
    assert "B-DATE" in err and "Traceback" not in err
    assert cli.main(args + ["--name", "own", "--classes", ",".join(TAGS + ("B-DATE",))]) == 0
    assert '"train": 4' in capsys.readouterr().out


def test_conll2003_preset_under_mock_data(wordpiece):
    cfg = data_config("conll2003", max_length=16)
    assert cfg.task == "token_classification" and cfg.splits["validation"] == "dev"
    with mock_catalog(6):
        with make_iterator(cfg, split="validation", batch_size=2, shuffle=False, repeat=False,
                           process_index=0, process_count=1, tokenizer=wordpiece) as it:
            batch = next(it)
    assert batch["input_ids"].shape == batch["labels"].shape == (2, 16)
    assert ((batch["labels"] == -100) | ((batch["labels"] >= 0) & (batch["labels"] < 9))).all()
    assert (batch["labels"][:, 0] == -100).all() and (batch["labels"] >= 0).any()


def test_tokenize_words_refuses_a_tokenizer_without_word_ids_when_built(tmp_path, wordpiece):
    from jaxmm.data.preprocess import build
    from jaxmm.errors import TokenizerError

    corpus = tmp_path / "corpus.txt"
    corpus.write_text("\n".join(" ".join(w for w, _ in s) for s in _sentences(CONLL)) * 20)
    sp = train_tokenizer("sentencepiece", [str(corpus)], vocab_size=60)
    with pytest.raises(TokenizerError, match="cannot encode pre-split words"):
        build("tokenize_words(16)", tokenizer=sp)
    with pytest.raises(TokenizerError, match="max_length=2 leaves no room"):
        build("tokenize_words(2)", tokenizer=wordpiece)


@pytest.mark.parametrize("kind", ["wordpiece", "bpe"])
def test_encode_words_tokenises_as_running_text(tmp_path, kind):
    """Pre-split words give the tokens of the sentence as running text (byte-level BPE
    keeps the space before each later word: ``Ġword``), each tagged with its word."""
    corpus = tmp_path / "corpus.txt"
    corpus.write_text("\n".join(" ".join(w for w, _ in s) for s in _sentences(CONLL)) * 5)
    tok = train_tokenizer(kind, [str(corpus)], vocab_size=300, min_frequency=1)
    for sentence in _sentences(CONLL):
        words = [w for w, _ in sentence]
        enc = tok.encode_words([words], 256)
        n = int(enc["attention_mask"][0].sum())
        ids, word_ids = enc["input_ids"][0, 1:n - 1], enc["word_ids"][0, 1:n - 1]
        assert [tok.id_to_token(int(i)) for i in ids] == tok.tokenize(" ".join(words))
        pieces = [len(tok.tokenize(" ".join(words[:k + 1]))) for k in range(len(words))]
        np.testing.assert_array_equal(word_ids, np.repeat(np.arange(len(words)),
                                                          np.diff([0] + pieces)))
