"""Bring-your-own-data builders: (text, label), (image, label), (image, caption) and
(audio, label) tables and class folders; skipped rows are counted, the good ones kept;
paths stay inside the root; shipped configs train on what they build."""

import json
import math
import os

import numpy as np
import pytest
import soundfile as sf
from PIL import Image

from jaxmm.cli import data as data_cli
from jaxmm.data import make_iterator
from jaxmm.data.local import build_local
from jaxmm.data.sources import DataError
from tests.train.helpers import QUICK_CLI, ROOT, train_and_eval_cli


def _read(name, data_dir, split="train", pp=""):
    with make_iterator({"name": name, "data_dir": data_dir, "pp": pp}, split=split,
                       batch_size=1, shuffle=False, repeat=False, process_index=0,
                       process_count=1) as it:
        return [{k: v[0] for k, v in b.items()} for b in it]


def test_text_labels_csv_counts_bad_rows_and_keeps_the_good(tmp_path):
    root = tmp_path / "reviews"
    root.mkdir()
    (root / "train.csv").write_text(
        'review,stars,other\n'
        '"good, really good",10,x\n'
        'bad,2,x\n'
        ',2,x\n'               # empty text: skipped
        'fine,3,x\n'
        'odd,,x\n')            # empty label: skipped
    out = str(tmp_path / "out")
    summary = build_local("text-labels", str(root), {"train": {"input": "train.csv"}}, out,
                          name="rev", columns={"text": "review", "label": "stars"})
    # integer labels sort numerically (2 < 3 < 10), not as strings
    assert summary["classes"] == ["2", "3", "10"]
    assert summary["splits"] == {"train": 3} and summary["skipped"] == {"train": 2}
    rows = _read("jaxmm_local_text_labels/rev", out)
    assert [(r["text"].decode(), int(r["label"])) for r in rows] == [
        ("good, really good", 2), ("bad", 0), ("fine", 1)]


def test_text_labels_jsonl_pairs_and_classes(tmp_path):
    root = tmp_path / "nli"
    root.mkdir()
    lines = [{"premise": "a man sleeps", "hypothesis": "a person rests", "y": "entail"},
             {"premise": "a dog runs", "hypothesis": "a cat sits", "y": "contradict"},
             "{not json",
             {"premise": "x", "hypothesis": "y", "y": "maybe"},      # not a class: skipped
             {"premise": "sun", "y": "entail"}]                      # no hypothesis: skipped
    (root / "t.jsonl").write_text("\n".join(
        line if isinstance(line, str) else json.dumps(line) for line in lines) + "\n")
    out = str(tmp_path / "out")
    summary = build_local("text-labels", str(root), {"train": {"input": "t.jsonl"}}, out,
                          name="nli", classes=["contradict", "entail"],
                          columns={"text": "premise", "text_pair": "hypothesis", "label": "y"})
    assert summary["splits"] == {"train": 2} and summary["skipped"] == {"train": 3}
    rows = _read("jaxmm_local_text_labels/nli", out)
    assert [(r["text"].decode(), r["text_pair"].decode(), int(r["label"])) for r in rows] == [
        ("a man sleeps", "a person rests", 1), ("a dog runs", "a cat sits", 0)]
    with pytest.raises(DataError, match="Corrupt file .*t.jsonl:3"):
        build_local("text-labels", str(root), {"train": {"input": "t.jsonl"}}, out,
                    name="strict", on_corrupt="fail",
                    columns={"text": "premise", "text_pair": "hypothesis", "label": "y"})


def test_a_table_without_the_column_is_refused_in_one_line(tmp_path, capsys):
    (tmp_path / "t.csv").write_text("sentence,label\nhello,1\n")
    with pytest.raises(DataError) as e:
        build_local("text-labels", str(tmp_path), {"train": {"input": "t.csv"}},
                    str(tmp_path / "out"))
    assert "has no 'text' column (its columns: sentence, label)" in str(e.value)
    assert "--column text=COLUMN" in str(e.value)
    code = data_cli.main(["build-text-labels", "--root", str(tmp_path), "--data-dir",
                          str(tmp_path / "o"), "--split", "train=t.csv"])
    err = capsys.readouterr().err.strip().splitlines()
    assert code == 2 and len(err) == 1 and "has no 'text' column" in err[0]
    assert data_cli.main(["build-text-labels", "--root", str(tmp_path), "--data-dir",
                          str(tmp_path / "o"), "--split", "train=t.csv",
                          "--column", "text"]) == 2
    assert "expected ROLE=COLUMN" in capsys.readouterr().err


def _png(path, value):
    path.parent.mkdir(parents=True, exist_ok=True)
    img = np.full((6, 5, 3), value, np.uint8)
    Image.fromarray(img).save(path)
    return img


def test_image_labels_from_class_folders_and_from_a_table(tmp_path):
    root = tmp_path / "pets"
    cat = _png(root / "train" / "cat" / "a.png", 10)
    dog = _png(root / "train" / "dog" / "b.png", 200)
    (root / "train" / "dog" / "broken.png").write_bytes(b"not a png")
    out = str(tmp_path / "out")
    summary = build_local("image-labels", str(root), {"train": {"input": "train"}}, out,
                          name="folders")
    assert summary["classes"] == ["cat", "dog"]
    assert summary["splits"] == {"train": 2} and summary["skipped"] == {"train": 1}
    rows = _read("jaxmm_local_image_labels/folders", out)
    np.testing.assert_array_equal(rows[0]["image"], cat)
    np.testing.assert_array_equal(rows[1]["image"], dog)
    assert [int(r["label"]) for r in rows] == [0, 1]

    (root / "list.csv").write_text("path,kind\ntrain/dog/b.png,dog\ntrain/cat/a.png,cat\n")
    build_local("image-labels", str(root), {"train": {"input": "list.csv"}}, out, name="table",
                columns={"image": "path", "label": "kind"})
    rows = _read("jaxmm_local_image_labels/table", out)
    assert [int(r["label"]) for r in rows] == [1, 0]
    np.testing.assert_array_equal(rows[0]["image"], dog)


def test_paths_in_a_table_must_stay_inside_the_root(tmp_path):
    root = tmp_path / "ds"
    root.mkdir()
    _png(tmp_path / "outside.png", 1)
    (root / "t.csv").write_text("image,label\n../outside.png,a\n")
    with pytest.raises(DataError, match=r"contains '\.\.'"):
        build_local("image-labels", str(root), {"train": {"input": "t.csv"}},
                    str(tmp_path / "out"))
    with pytest.raises(DataError, match="leave|absolute|contains"):
        build_local("text-labels", str(root), {"train": {"input": "../t.csv"}},
                    str(tmp_path / "out"))


def test_image_captions_groups_the_captions_of_an_image(tmp_path):
    root = tmp_path / "flickr"
    first = _png(root / "img" / "1.png", 50)
    _png(root / "img" / "2.png", 90)
    rows = [{"image": "img/1.png", "caption": "a grey square"},
            {"image": "img/2.png", "caption": "a lighter square"},
            {"image": "img/1.png", "caption": "dark grey"},
            {"image": "img/3.png", "caption": "missing file"}]
    (root / "c.jsonl").write_text("\n".join(map(json.dumps, rows)) + "\n")
    out = str(tmp_path / "out")
    summary = build_local("image-captions", str(root), {"train": {"input": "c.jsonl"}}, out,
                          name="f")
    assert summary["splits"] == {"train": 2} and summary["skipped"] == {"train": 1}
    got = _read("jaxmm_local_image_captions/f", out)
    assert [c.decode() for c in got[0]["captions"]] == ["a grey square", "dark grey"]
    assert got[0]["file_name"].decode() == "img/1.png"
    np.testing.assert_array_equal(got[0]["image"], first)


def test_audio_labels_resample_and_skip_corrupt(tmp_path):
    root = tmp_path / "emotion"
    root.mkdir()
    t = np.arange(8000) / 8000
    sf.write(root / "a.wav", 0.5 * np.sin(2 * np.pi * 440 * t), 8000)
    (root / "b.wav").write_bytes(b"RIFF garbage")
    (root / "t.csv").write_text("audio,label\na.wav,happy\nb.wav,sad\n")
    out = str(tmp_path / "out")
    summary = build_local("audio-labels", str(root), {"train": {"input": "t.csv"}}, out,
                          name="e")
    assert summary["classes"] == ["happy", "sad"] and summary["skipped"] == {"train": 1}
    (row,) = _read("jaxmm_local_audio_labels/e", out)
    assert row["audio"].shape == (16000,) and int(row["label"]) == 0  # 1 s at 16 kHz
    # the resampled tone still peaks at 440 Hz
    spectrum = np.abs(np.fft.rfft(row["audio"].astype(np.float32)))
    assert abs(np.argmax(spectrum) * 16000 / 16000 - 440) <= 1


def test_cli_builds_a_table_with_columns_and_classes(tmp_path, capsys):
    (tmp_path / "t.tsv").write_text("words\ttag\nyes please\tpos\nno thanks\tneg\nhm\tmeh\n")
    assert data_cli.main(["build-text-labels", "--root", str(tmp_path), "--data-dir",
                          str(tmp_path / "o"), "--name", "tsv", "--split", "train=t.tsv",
                          "--column", "text=words", "--column", "label=tag",
                          "--classes", "neg,pos"]) == 0
    summary = json.loads(capsys.readouterr().out.strip().splitlines()[-1])  # after tfds
    assert summary["classes"] == ["neg", "pos"] and summary["splits"] == {"train": 2}
    assert summary["skipped"] == {"train": 1}


def _text_table(root):
    """Sentences from the README as a two-class table (has a digit or not)."""
    with open(os.path.join(ROOT, "README.md"), encoding="utf-8") as f:
        lines = [" ".join(line.split()[:12]) for line in f if len(line.split()) > 4][:80]
    rows = ["text,label"] + ['"{}",{}'.format(t.replace('"', "'"), int(any(c.isdigit()
                                                                         for c in t)))
                             for t in lines]
    (root / "train.csv").write_text("\n".join(rows[:61]) + "\n")
    (root / "validation.csv").write_text("\n".join([rows[0]] + rows[61:]) + "\n")
    return lines


@pytest.mark.slow
@pytest.mark.parametrize("kind", ["text", "image", "captions", "wikitext"])
def test_shipped_configs_train_on_data_built_from_local_files(kind, tmp_path, capsys):
    """Build a dataset from local files, then ``jaxmm train`` (2 steps) and ``jaxmm eval``
    with the shipped config that takes its layout, through ``data=<preset>/<name>``."""
    root, out = tmp_path / "src", str(tmp_path / "data")
    root.mkdir()
    split = {"train": {"input": "train.csv"}, "validation": {"input": "validation.csv"}}
    if kind == "text":
        from jaxmm.data.tokenizers import train_tokenizer

        lines = _text_table(root)
        (root / "corpus.txt").write_text("\n".join(lines) + "\n")
        tok = train_tokenizer("wordpiece", str(root / "corpus.txt"), 200, min_frequency=1,
                              out_dir=str(tmp_path / "tok"))
        build_local("text-labels", str(root), split, out, name="mine")
        config = (f"glue_bert.py:data=text_labels/mine,labels=2,size=tiny,seq_len=16,"
                  f"vocab={tok.vocab_size},tokenizer={tmp_path / 'tok'}")
        metric = "cls/accuracy"
    elif kind == "wikitext":  # WikiText-103's raw files, as build-text reads them
        from jaxmm.data.tokenizers import train_tokenizer

        lines = _text_table(root)
        (root / "wiki.train.raw").write_text(" = Heading = \n\n" + "\n".join(lines[:60]))
        (root / "wiki.valid.raw").write_text("\n".join(lines[60:]) + "\n")
        (root / "corpus.txt").write_text("\n".join(lines) + "\n")
        tok = train_tokenizer("wordpiece", str(root / "corpus.txt"), 200, min_frequency=1,
                              out_dir=str(tmp_path / "tok"))
        build_local("text", str(root), {"train": {"input": "wiki.train.raw"},
                                        "validation": {"input": "wiki.valid.raw"}},
                    out, name="wikitext103")
        config = (f"lm_gpt.py:tiny,data=wikitext103,seq_len=16,vocab={tok.vocab_size},"
                  f"tokenizer={tmp_path / 'tok'}")
        metric = None
    else:
        for s, n in (("train", 8), ("validation", 8)):
            table = ["image,label,caption"]
            for i in range(n):
                _png(root / s / f"{i}.png", 30 * i)
                table.append(f"{s}/{i}.png,{i % 2},a picture of number {i}")
            (root / f"{s}.csv").write_text("\n".join(table) + "\n")
        if kind == "image":
            build_local("image-labels", str(root), split, out, name="mine")
            config = "vit_classification.py:tiny,data=image_labels/mine,classes=2"
            metric = "accuracy"
        else:
            from jaxmm.data.tokenizers import train_tokenizer

            (root / "corpus.txt").write_text("a picture of number 0 1 2 3 4 5 6 7\n" * 4)
            train_tokenizer("wordpiece", str(root / "corpus.txt"), 60, min_frequency=1,
                            out_dir=str(tmp_path / "tok"))
            build_local("image-captions", str(root), split, out, name="mine")
            config = (f"clip_contrastive.py:tiny,data=image_captions/mine,res=32,seq_len=16,"
                      f"tokenizer={tmp_path / 'tok'}")
            metric = None  # the config evaluates the contrastive loss
    overrides = [f"--config.data.data_dir={out}", "--config.batch_size=8",
                 "--config.num_steps=2", *QUICK_CLI]
    result = train_and_eval_cli(config, str(tmp_path / "run"), overrides, capsys)
    assert result["step"] == 2 and math.isfinite(result["metrics"]["loss"])
    if metric:
        assert 0.0 <= result["metrics"][metric] <= 1.0, result["metrics"]


def test_karpathy_splits_build_flickr30k(tmp_path):
    """Karpathy's dataset_flickr30k.json layout: train/val/test by the file's own split
    field, raw sentences as captions; the flickr30k preset reads the result."""
    from jaxmm.data.catalog import data_config

    root = tmp_path / "flickr30k"
    images = {}
    entries = []
    for i, split in enumerate(["train", "train", "val", "test", "train"]):
        name = f"{1000 + i}.jpg"
        images[name] = _png(root / "flickr30k-images" / name, 40 * i)
        entries.append({"filename": name, "imgid": i, "split": split,
                        "sentences": [{"raw": f"image {i} caption {k}", "tokens": []}
                                      for k in range(5)]})
    (root / "flickr30k-images" / "1004.jpg").write_bytes(b"broken")
    entries.append({"filename": "1005.jpg", "split": "train"})  # no sentences: counted
    (root / "dataset_flickr30k.json").write_text(json.dumps({"images": entries,
                                                            "dataset": "flickr30k"}))
    out = str(tmp_path / "out")
    spec = {"annotations": "dataset_flickr30k.json", "images": "flickr30k-images"}
    summary = build_local("karpathy", str(root), {"train": spec, "validation": spec,
                                                  "test": spec}, out, name="flickr30k")
    assert summary["splits"] == {"train": 2, "validation": 1, "test": 1}
    assert summary["skipped"] == {"train": 2}
    cfg = data_config("flickr30k", task="retrieval", image_size=8, data_dir=out)
    assert cfg.name == "jaxmm_local_karpathy/flickr30k"
    rows = _read(cfg.name, out, "validation", "keep('image', 'image_id', 'captions')")
    assert [int(r["image_id"]) for r in rows] == [2]
    assert [c.decode() for c in rows[0]["captions"]] == [f"image 2 caption {k}" for k in range(5)]
    rows = _read(cfg.name, out, "train", "keep('image', 'image_id')")
    np.testing.assert_array_equal(rows[1]["image"], images["1001.jpg"])
