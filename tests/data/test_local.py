"""Local-format builders on tiny fixture folders, path safety, corrupt files, the CLI."""

import json
import os
import subprocess
import sys

import numpy as np
import pytest
import soundfile as sf
from PIL import Image

from jaxmm.cli import data as cli
from jaxmm.data import make_iterator
from jaxmm.data.local import build_local, safe_path
from jaxmm.data.sources import DataError

ROOT = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))


def _read_all(name, data_dir, split, pp):
    with make_iterator({"name": name, "data_dir": data_dir, "pp": pp}, split=split,
                       batch_size=1, shuffle=False, repeat=False, process_index=0,
                       process_count=1) as it:
        return [b for b in it]


@pytest.fixture
def coco_root(tmp_path, rng):
    root = tmp_path / "coco"
    (root / "images").mkdir(parents=True)
    images = {1: rng.integers(0, 256, (8, 10, 3), dtype=np.uint8),
              2: rng.integers(0, 256, (6, 6, 3), dtype=np.uint8)}
    Image.fromarray(images[1]).save(root / "images" / "a.png")
    Image.fromarray(images[2]).convert("L").save(root / "images" / "b.bmp")  # converted
    (root / "images" / "c.jpg").write_bytes(b"not a jpeg at all")
    ann = {"images": [{"id": 1, "file_name": "a.png"}, {"id": 2, "file_name": "b.bmp"},
                      {"id": 3, "file_name": "c.jpg"}],
           "annotations": [{"image_id": 1, "id": 10, "caption": "a red circle"},
                           {"image_id": 1, "id": 11, "caption": "one red shape "},
                           {"image_id": 2, "id": 12, "caption": "gray noise"},
                           {"image_id": 3, "id": 13, "caption": "broken"}]}
    (root / "captions.json").write_text(json.dumps(ann))
    return root, images


def test_coco_builder_skips_corrupt_and_reads_back(coco_root, tmp_path):
    root, images = coco_root
    data_dir = str(tmp_path / "out")
    summary = build_local("coco", str(root), {"train": {"annotations": "captions.json",
                                                        "images": "images"}}, data_dir,
                          name="mini")
    assert summary["splits"] == {"train": 2} and summary["skipped"] == {"train": 1}
    batches = _read_all("jaxmm_local_coco/mini", data_dir, "train",
                        "keep('image', 'image_id', 'captions')")
    by_id = {int(b["image_id"][0]): b for b in batches}
    np.testing.assert_array_equal(by_id[1]["image"][0], images[1])
    gray = np.asarray(Image.fromarray(images[2]).convert("L"))
    np.testing.assert_array_equal(by_id[2]["image"][0][..., 0], gray)
    assert [c.decode() for c in by_id[1]["captions"][0]] == ["a red circle", "one red shape"]
    with pytest.raises(DataError, match="Corrupt file .*c.jpg"):
        build_local("coco", str(root), {"train": {"annotations": "captions.json",
                                                  "images": "images"}}, data_dir,
                    name="strict", on_corrupt="fail")


def test_coco_detection_builder_reads_back_as_the_coco_preset_boxes(tmp_path, rng):
    """COCO instances JSON -> tfds coco/2017 features; the coco_detection preset's eval
    pipeline gives the detection task's normalised cxcywh boxes, computed here by hand."""
    from jaxmm.data.catalog import data_config

    root = tmp_path / "coco"
    (root / "img").mkdir(parents=True)
    Image.fromarray(rng.integers(0, 256, (40, 80, 3), dtype=np.uint8)).save(root / "img" / "a.png")
    Image.fromarray(rng.integers(0, 256, (20, 20, 3), dtype=np.uint8)).save(root / "img" / "b.png")
    (root / "img" / "c.jpg").write_bytes(b"corrupt")
    ann = {"images": [{"id": 5, "file_name": "a.png"}, {"id": 6, "file_name": "b.png"},
                      {"id": 7, "file_name": "c.jpg"}],
           "categories": [{"id": 18, "name": "dog"}, {"id": 1, "name": "person"}],
           "annotations": [
               {"id": 1, "image_id": 5, "category_id": 18, "bbox": [8, 4, 16, 20], "area": 320,
                "iscrowd": 0},
               {"id": 2, "image_id": 5, "category_id": 1, "bbox": [60, 30, 40, 20], "area": 9,
                "iscrowd": 0},  # runs off the right and bottom edges: clipped
               {"id": 3, "image_id": 5, "category_id": 1, "bbox": [0, 0, 80, 40], "area": 3200,
                "iscrowd": 1},  # a crowd region: not a training target
               {"id": 4, "image_id": 5, "category_id": 1, "bbox": [90, 0, 5, 5], "area": 25,
                "iscrowd": 0}]}  # wholly outside the image: skipped and counted
    (root / "instances.json").write_text(json.dumps(ann))
    data_dir = str(tmp_path / "out")
    assert cli.main(["build-coco-detection", "--root", str(root), "--data-dir", data_dir,
                     "--name", "mini", "--split", "validation=instances.json:img"]) == 0
    summary = build_local("coco-detection", str(root),
                          {"validation": {"annotations": "instances.json", "images": "img"}},
                          data_dir, name="mini")
    # Categories in id order: person (1) is class 0, dog (18) class 1.
    assert summary["classes"] == ["person", "dog"] and summary["splits"] == {"validation": 2}
    assert summary["skipped"] == {"validation": 1, "validation/empty_boxes": 1}
    config = data_config("coco_detection/mini", data_dir=data_dir, image_size=32, max_objects=4)
    with make_iterator(config, split="validation", batch_size=1, shuffle=False, repeat=False,
                       process_index=0, process_count=1) as it:
        batches = {int(b["image_id"][0]): b for b in it}
    a = batches[5]
    assert a["image"].shape == (1, 32, 32, 3)
    np.testing.assert_allclose(a["boxes"][0], [
        [16 / 80, 14 / 40, 16 / 80, 20 / 40],              # the dog: x 8..24, y 4..24
        [70 / 80, 35 / 40, 20 / 80, 10 / 40],              # the person: x 60..80, y 30..40
        [0, 0, 0, 0], [0, 0, 0, 0]], atol=1e-6)
    assert a["labels"][0].tolist()[:2] == [1, 0] and a["box_mask"][0].tolist() == [1, 1, 0, 0]
    assert batches[6]["box_mask"][0].tolist() == [0, 0, 0, 0]  # an image without objects
    # Crowds are kept on request; another split with other categories is refused.
    crowd = _read_all("jaxmm_local_coco_detection/mini", data_dir, "validation",
                      "decode|tfds_boxes(4, crowd=True)|keep('box_mask', 'image/id')")
    assert [int(b["box_mask"].sum()) for b in crowd] == [3, 0]
    other = dict(ann, categories=[{"id": 1, "name": "person"}])
    (root / "other.json").write_text(json.dumps(other))
    with pytest.raises(DataError, match="different categories"):
        build_local("coco-detection", str(root), {
            "train": {"annotations": "other.json", "images": "img"},
            "validation": {"annotations": "instances.json", "images": "img"}}, data_dir,
            name="mixed")
    (root / "captions.json").write_text(json.dumps({"images": [], "annotations": []}))
    with pytest.raises(DataError, match="no 'categories'.*build-coco"):
        build_local("coco-detection", str(root), {"train": {"annotations": "captions.json"}},
                    data_dir, name="captions")


def test_vqa_builder(tmp_path, rng):
    root = tmp_path / "vqa"
    (root / "img").mkdir(parents=True)
    img = rng.integers(0, 256, (5, 5, 3), dtype=np.uint8)
    Image.fromarray(img).save(root / "img" / "COCO_val2014_000000000042.png")
    questions = {"questions": [{"image_id": 42, "question": "what color?", "question_id": 7},
                               {"image_id": 42, "question": "how many?", "question_id": 8}]}
    answers = {"annotations": [
        {"question_id": 7, "image_id": 42, "answers": [{"answer": "red"}] * 10,
         "multiple_choice_answer": "red", "answer_type": "other"},
        {"question_id": 8, "image_id": 42, "answers": [{"answer": "2"}] * 9 + [{"answer": "3"}],
         "multiple_choice_answer": "2", "answer_type": "number"}]}
    (root / "q.json").write_text(json.dumps(questions))
    (root / "a.json").write_text(json.dumps(answers))
    data_dir = str(tmp_path / "out")
    assert cli.main(["build-vqa", "--root", str(root), "--data-dir", data_dir,
                     "--split", "validation=q.json:a.json:img"]) == 0
    batches = _read_all("jaxmm_local_vqa/default", data_dir, "validation",
                        "keep('image', 'question', 'answers', 'question_id')")
    got = {int(b["question_id"][0]): b for b in batches}
    assert got[7]["question"][0] == b"what color?"
    assert [a.decode() for a in got[8]["answers"][0]].count("2") == 9
    np.testing.assert_array_equal(got[8]["image"][0], img)


def test_audio_builder_resamples_and_handles_corrupt(tmp_path, rng):
    root = tmp_path / "speech"
    (root / "wav").mkdir(parents=True)
    tone = (0.5 * np.sin(2 * np.pi * 440 * np.arange(8000) / 8000)).astype(np.float32)
    sf.write(root / "wav" / "a.wav", tone, 8000)  # 1 s at 8 kHz -> 16000 samples
    (root / "wav" / "b.wav").write_bytes(b"RIFF garbage")
    lines = [{"audio": "wav/a.wav", "text": "hello world", "id": "a"},
             {"audio": "wav/b.wav", "text": "broken", "id": "b"}]
    (root / "m.jsonl").write_text("\n".join(json.dumps(x) for x in lines) + "\n")
    data_dir = str(tmp_path / "out")
    summary = build_local("audio", str(root), {"train": {"manifest": "m.jsonl"}}, data_dir)
    assert summary["splits"] == {"train": 1} and summary["skipped"] == {"train": 1}
    (batch,) = _read_all("jaxmm_local_audio/default", data_dir, "train",
                         "audio_to_float|keep('audio', 'text')")
    audio = batch["audio"][0]
    assert audio.shape == (16000,) and batch["text"][0] == b"hello world"
    spectrum = np.abs(np.fft.rfft(audio))
    assert abs(np.argmax(spectrum) * 16000 / 16000 - 440) <= 2  # still a 440 Hz tone


def test_text_builder_plain_and_jsonl(tmp_path):
    root = tmp_path / "text"
    root.mkdir()
    (root / "c.txt").write_text("first line\n\nsecond line\n")
    (root / "c.jsonl").write_text('{"body": "x y"}\n{"body": "z"}\n')
    data_dir = str(tmp_path / "out")
    build_local("text", str(root), {"train": {"input": "c.txt"}}, data_dir, name="plain")
    build_local("text", str(root), {"train": {"input": "c.jsonl"}}, data_dir, name="js",
                text_field="body")
    texts = [b["text"][0] for b in _read_all("jaxmm_local_text/plain", data_dir, "train", "")]
    assert texts == [b"first line", b"second line"]
    texts = [b["text"][0] for b in _read_all("jaxmm_local_text/js", data_dir, "train", "")]
    assert texts == [b"x y", b"z"]
    with pytest.raises(DataError, match="JSON object with a 'text' field"):
        build_local("text", str(root), {"train": {"input": "c.jsonl"}}, data_dir, name="bad")


def test_paths_leaving_the_dataset_folder_are_refused(tmp_path):
    root = tmp_path / "ds"
    root.mkdir()
    outside = tmp_path / "secret.wav"
    outside.write_bytes(b"x")
    os.symlink(outside, root / "link.wav")
    (root / "ok.wav").write_bytes(b"x")
    assert safe_path(str(root), "ok.wav") == os.path.realpath(root / "ok.wav")
    with pytest.raises(DataError, match="absolute"):
        safe_path(str(root), str(outside))
    with pytest.raises(DataError, match=r"contains '\.\.'"):
        safe_path(str(root), "sub/../../secret.wav")
    with pytest.raises(DataError, match="symlink escape"):
        safe_path(str(root), "link.wav")
    (root / "m.jsonl").write_text(json.dumps({"audio": "../secret.wav", "text": "t"}) + "\n")
    with pytest.raises(DataError, match=r"contains '\.\.'"):
        build_local("audio", str(root), {"train": {"manifest": "m.jsonl"}},
                    str(tmp_path / "out"))


def test_missing_inputs_give_clear_errors(tmp_path, capsys):
    with pytest.raises(DataError, match="does not exist"):
        build_local("coco", str(tmp_path / "nope"), {"train": {"annotations": "a.json"}},
                    str(tmp_path / "out"))
    with pytest.raises(DataError, match="needs \\['manifest'\\]"):
        build_local("audio", str(tmp_path), {"train": {}}, str(tmp_path / "out"))
    (tmp_path / "empty.txt").write_text("\n\n")
    with pytest.raises(DataError, match="no usable examples"):
        build_local("text", str(tmp_path), {"train": {"input": "empty.txt"}},
                    str(tmp_path / "out"))
    assert cli.main(["build-text", "--root", str(tmp_path), "--data-dir", str(tmp_path / "o"),
                     "--split", "train"]) == 2
    assert "expected NAME=INPUT" in capsys.readouterr().err


@pytest.mark.slow
def test_cli_build_builtin_subprocess(tmp_path, capsys):
    data_dir = str(tmp_path / "data")
    out = subprocess.run(
        [sys.executable, "-m", "jaxmm", "data", "build-builtin", "--data-dir", data_dir,
         "--size", "tiny", "--train-size", "8", "--validation-size", "4", "--test-size", "4",
         "--no-audio"],
        cwd=ROOT, capture_output=True, text=True, timeout=1800,
    )
    assert out.returncode == 0, out.stderr[-2000:]
    summary = json.loads(out.stdout.strip().splitlines()[-1])
    assert summary["splits"] == {"train": 8, "validation": 4, "test": 4}
    assert summary["name"].startswith("jaxmm_scenes/tiny-")
    with open(summary["text_corpus"]) as f:
        assert len(f.read().splitlines()) == 8 * (5 + 4)  # captions + questions per scene
    capsys.readouterr()
    assert cli.main(["info", "--data-dir", data_dir, "--name", summary["name"]]) == 0
    info = json.loads(capsys.readouterr().out)
    # Size, disk use (the folder's files, summed here independently), build time, speech.
    assert info["examples"] == 16 and info["splits"]["train"] == 8
    folder = info["path"]
    assert info["disk_bytes"] == sum(os.path.getsize(os.path.join(folder, n))
                                     for n in os.listdir(folder)) > 0
    assert set(info["metadata"]["generate_seconds"]) == {"train", "validation", "test"}
    assert info["metadata"]["speech"].startswith("none")
