"""Video decoding (PyAV), the local video builders (frames kept at a fixed rate,
resized, stored, read back as clips through the catalog presets) and audio captions."""

import json

import numpy as np
import pytest

from jaxmm.data import make_iterator
from jaxmm.data.catalog import data_config
from jaxmm.data.local import build_local
from jaxmm.data.sources import DataError

av = pytest.importorskip("av")


def write_video(path, levels, fps=10, size=(24, 32)):
    """A lossless (FFV1) video whose frame i is uniformly gray at ``levels[i]``."""
    with av.open(str(path), "w") as out:
        stream = out.add_stream("ffv1", rate=fps)
        stream.height, stream.width = size
        stream.pix_fmt = "bgr0"
        for level in levels:
            frame = np.full((*size, 3), level, np.uint8)
            for packet in stream.encode(av.VideoFrame.from_ndarray(frame, format="rgb24")):
                out.mux(packet)
        for packet in stream.encode():
            out.mux(packet)


LEVELS = [10 * i for i in range(20)]  # 2 s at 10 fps


def test_read_video_keeps_frames_at_a_fixed_rate_and_resizes(tmp_path):
    from jaxmm.data.video_io import read_video

    write_video(tmp_path / "a.mkv", LEVELS)
    every = read_video(str(tmp_path / "a.mkv"), fps=None)
    assert every.shape == (20, 24, 32, 3) and every.dtype == np.uint8
    np.testing.assert_array_equal(every[:, 0, 0, 0], LEVELS)
    # 5 fps from 10 fps: every second frame (t = 0, 0.2, 0.4, ...), resized to 16x16.
    five = read_video(str(tmp_path / "a.mkv"), fps=5, size=16)
    assert five.shape == (10, 16, 16, 3)
    np.testing.assert_array_equal(five[:, 8, 8, 1], LEVELS[::2])
    # 3 fps: the first frame at or after each third of a second (frames 0, 4, 7, 10, ...).
    three = read_video(str(tmp_path / "a.mkv"), fps=3, size=(8, 12), max_frames=4)
    assert three.shape == (4, 8, 12, 3)
    np.testing.assert_array_equal(three[:, 0, 0, 2], [0, 40, 70, 100])
    (tmp_path / "bad.mp4").write_bytes(b"\x00" * 64)
    with pytest.raises(ValueError, match="cannot decode video|no decodable"):
        read_video(str(tmp_path / "bad.mp4"))


def _read(config, split="validation"):
    with make_iterator(config, split=split, batch_size=1, shuffle=False, repeat=False,
                       process_index=0, process_count=1) as it:
        return list(it)


def test_video_label_and_caption_builders_read_back_as_clips(tmp_path):
    root = tmp_path / "videos"
    root.mkdir()
    write_video(root / "up.mkv", LEVELS)
    write_video(root / "down.mkv", LEVELS[::-1])
    (root / "broken.mp4").write_bytes(b"not a video")
    (root / "labels.csv").write_text("video,label\nup.mkv,brighter\ndown.mkv,darker\n"
                                     "broken.mp4,darker\n")
    data_dir = str(tmp_path / "data")
    summary = build_local("video-labels", str(root), {"validation": {"input": "labels.csv"}},
                          data_dir, name="mini", video={"fps": 5, "size": 16})
    assert summary["classes"] == ["brighter", "darker"]
    assert summary["splits"] == {"validation": 2} and summary["skipped"] == {"validation": 1}
    # Eval clips are centred: 4 of the 10 stored frames (5 fps x 2 s), frames 3..6.
    config = data_config("video_labels/mini", data_dir=data_dir, num_frames=4, image_size=8)
    batches = _read(config)
    assert [int(b["label"][0]) for b in batches] == [0, 1]
    up = batches[0]["video"][0]
    assert up.shape == (4, 8, 8, 3)
    np.testing.assert_allclose(up[:, 4, 4, 0], np.array([60, 80, 100, 120]) / 127.5 - 1,
                               atol=1e-5)
    # Training clips start at random frames and are flipped at random, never re-decoded.
    train = data_config("video_labels/mini", data_dir=data_dir, num_frames=4, image_size=8)
    assert "random=True" in train.pp_train and "random=False" in train.pp_eval

    (root / "captions.jsonl").write_text("\n".join(json.dumps(r) for r in [
        {"video": "up.mkv", "caption": "it gets brighter"},
        {"video": "down.mkv", "caption": "it gets darker"},
        {"video": "up.mkv", "caption": "the light comes up"}]) + "\n")
    summary = build_local("video-captions", str(root), {"train": {"input": "captions.jsonl"}},
                          data_dir, name="caps", video={"fps": 2, "size": 8, "max_frames": 3})
    assert summary["splits"] == {"train": 2}
    rows = _read({"name": "jaxmm_local_video_captions/caps", "data_dir": data_dir,
                  "pp": "keep('video', 'captions', 'file_name')"}, split="train")
    got = {r["file_name"][0].decode(): r for r in rows}
    assert [c.decode() for c in got["up.mkv"]["captions"][0]] == [
        "it gets brighter", "the light comes up"]
    assert got["down.mkv"]["video"].shape == (1, 3, 8, 8, 3)  # 2 fps, at most 3 frames
    np.testing.assert_array_equal(got["down.mkv"]["video"][0, :, 0, 0, 0], [190, 140, 90])
    config = data_config("video_captions/caps", task="retrieval", data_dir=data_dir)
    assert config.task == "video_retrieval" and "keep('video'" in config.pp_train
    with pytest.raises(DataError, match="Unknown video option"):
        build_local("video-labels", str(root), {"train": {"input": "labels.csv"}}, data_dir,
                    video={"frames": 3})
    with pytest.raises(DataError, match="video options apply to the video formats"):
        build_local("image-labels", str(root), {"train": {"input": "labels.csv"}}, data_dir,
                    video={"fps": 3})


@pytest.mark.slow
def test_video_classifier_trains_and_evaluates_on_a_built_video_dataset(tmp_path, capsys):
    """jaxmm train + eval of classification(modality=video) on videos built with
    build-video-labels and read through the video_labels preset (one run per capability)."""
    from tests.train.helpers import QUICK_CLI, train_and_eval_cli

    root = tmp_path / "videos"
    root.mkdir()
    rows = ["video,label"]
    for i in range(8):
        write_video(root / f"{i}.mkv", LEVELS[::1 if i % 2 else -1], size=(16, 16))
        rows.append(f"{i}.mkv,{'brighter' if i % 2 else 'darker'}")
    (root / "all.csv").write_text("\n".join(rows) + "\n")
    data_dir = str(tmp_path / "data")
    build_local("video-labels", str(root), {"train": {"input": "all.csv"},
                                            "validation": {"input": "all.csv"}},
                data_dir, name="light", video={"fps": 4, "size": 16})
    config = tmp_path / "video.py"
    config.write_text(f'''
import ml_collections
from jaxmm.data.catalog import data_config

def get_config():
    c = ml_collections.ConfigDict()
    c.task = {{"name": "classification", "modality": "video"}}
    c.model = {{"name": "video_classifier", "size": "tiny",
               "config": {{"num_frames": 4, "num_labels": 2}}}}
    c.data = data_config("video_labels/light", data_dir={data_dir!r}, num_frames=4,
                         image_size=16)
    c.num_steps, c.batch_size = 2, 8
    return c
''')
    result = train_and_eval_cli(str(config), str(tmp_path / "run"), QUICK_CLI, capsys)
    assert result["step"] == 2 and 0.0 <= result["metrics"]["accuracy"] <= 1.0


def test_audio_caption_builder_groups_clips_for_captioning_and_retrieval(tmp_path):
    """build-audio-captions (AudioCaps / Clotho style): one example per clip with all its
    captions, 16 kHz int16 (a 8 kHz file is resampled), a corrupt clip skipped; the
    audio_captions preset gives the retrieval layout with audio and its mask."""
    import soundfile as sf

    from jaxmm.data.tokenizers import train_tokenizer

    root = tmp_path / "clips"
    root.mkdir()
    tone = np.sin(2 * np.pi * 440 * np.arange(8000) / 8000).astype(np.float32) * 0.5
    sf.write(root / "a.wav", tone, 8000)  # 1 s at 8 kHz
    sf.write(root / "b.flac", tone[:4000], 8000)
    (root / "c.wav").write_bytes(b"RIFF-not-audio")
    rows = [("a.wav", "a bell rings"), ("b.flac", "a short beep"), ("a.wav", "one long tone"),
            ("c.wav", "broken")]
    (root / "dev.csv").write_text("audio,caption\n" + "".join(f"{a},{c}\n" for a, c in rows))
    data_dir = str(tmp_path / "data")
    summary = build_local("audio-captions", str(root), {"validation": {"input": "dev.csv"}},
                          data_dir, name="bells")
    assert summary["splits"] == {"validation": 2} and summary["skipped"] == {"validation": 1}
    got = {r["file_name"][0].decode(): r for r in _read(
        {"name": "jaxmm_local_audio_captions/bells", "data_dir": data_dir,
         "pp": "keep('audio', 'captions', 'file_name')"})}
    assert [c.decode() for c in got["a.wav"]["captions"][0]] == ["a bell rings",
                                                                  "one long tone"]
    assert got["a.wav"]["audio"].shape == (1, 16000) and got["b.flac"]["audio"].shape == (
        1, 8000)
    (tmp_path / "corpus.txt").write_text("a bell rings one long tone a short beep\n" * 20)
    tok = train_tokenizer("wordpiece", str(tmp_path / "corpus.txt"), 40,
                          out_dir=str(tmp_path / "tok"), min_frequency=1)
    config = data_config("audio_captions/bells", task="retrieval", data_dir=data_dir,
                         audio_seconds=2.0, max_length=8)
    assert config.task == "audio_retrieval"
    with make_iterator(config, split="validation", batch_size=2, shuffle=False, repeat=False,
                       process_index=0, process_count=1, tokenizer=tok) as it:
        batch = next(iter(it))
    assert batch["audio"].shape == (2, 32000) and batch["input_ids"].shape == (2, 5, 8)
    assert batch["audio_mask"].sum(1).tolist() == [16000, 8000]
    assert batch["image_id"].tolist() == [0, 1]
