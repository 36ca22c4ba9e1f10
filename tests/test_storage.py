"""jaxmm.storage: local paths and gs:// URLs, the latter against an in-memory fake GCS
(gcp-storage-emulator, tests/gcs_fake.py), read back with a separate gcsfs client."""

import importlib.util
import json
import os
import struct

import pytest

from jaxmm import storage
from jaxmm.errors import InputError
from tests.gcs_fake import fake_gcs, gcs_listing

BUCKET = "jaxmm-unit"


@pytest.fixture(scope="module")
def gcs():
    """gs://jaxmm-unit on the fake, with this process's epath using gcsfs for gs://."""
    from etils.epath import gpath

    with fake_gcs(BUCKET) as env, pytest.MonkeyPatch.context() as mp:
        for key, value in env.items():
            mp.setenv(key, value)
        gpath._is_tf_installed.cache_clear()  # epath reads EPATH_USE_TF once, and caches it
        try:
            yield env
        finally:
            gpath._is_tf_installed.cache_clear()


# -- paths -------------------------------------------------------------------


def test_resolve_keeps_urls_and_makes_local_paths_absolute(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    assert storage.resolve("runs/x") == str(tmp_path / "runs" / "x")
    assert storage.resolve("gs://bucket/runs/x/") == "gs://bucket/runs/x"
    assert storage.is_url("gs://b/x") and not storage.is_url("runs/gs:/x")
    assert str(storage.as_path("gs://bucket/r") / "checkpoints") == "gs://bucket/r/checkpoints"
    assert not os.path.exists(tmp_path / "gs:")


@pytest.mark.parametrize("url, says", [
    ("memory://bucket/run", "cannot store files at a memory:// URL"),
    ("s3://bucket/run", "cannot store files at a s3:// URL"),
    ("gs:///run", "names no bucket"),
])
def test_unusable_urls_are_refused_in_one_line(url, says):
    with pytest.raises(InputError, match=says) as e:
        storage.resolve(url, "--workdir")
    assert "\n" not in str(e.value)


def test_gs_without_gcsfs_when_epath_does_not_use_tensorflow(monkeypatch):
    monkeypatch.setenv("EPATH_USE_TF", "false")
    real = importlib.util.find_spec
    monkeypatch.setattr(importlib.util, "find_spec",
                        lambda name, *a: None if name == "gcsfs" else real(name, *a))
    with pytest.raises(InputError, match=r"need gcsfs .* pip install 'jaxmm\[gcs\]'"):
        storage.resolve("gs://bucket/run", "--workdir")
    monkeypatch.delenv("EPATH_USE_TF")  # epath's default client, tf.io.gfile: no gcsfs needed
    assert storage.resolve("gs://bucket/run") == "gs://bucket/run"


# -- local files: unchanged behaviour -----------------------------------------


def test_local_text_log_appends_like_open_a(tmp_path):
    path = tmp_path / "metrics.jsonl"
    path.write_text('{"step": 1}\n')
    log = storage.TextLog(path)
    log.append('{"step": 2}\n')
    assert path.read_text() == '{"step": 1}\n{"step": 2}\n'  # on disk at once, no flush
    storage.write_text(path, "new\n")
    assert path.read_text() == "new\n" and os.listdir(tmp_path) == ["metrics.jsonl"]


# -- gs:// on the fake object store --------------------------------------------


def test_text_files_and_folders_in_a_bucket(gcs):
    root = f"gs://{BUCKET}/files"
    storage.makedirs(root)
    storage.write_text(f"{root}/config.json", '{"a": 1}')
    storage.write_text(f"{root}/checkpoints/4/meta", "x")
    assert storage.read_text(f"{root}/config.json") == '{"a": 1}'
    assert storage.exists(f"{root}/config.json") and not storage.exists(f"{root}/nope.json")
    assert storage.is_dir(f"{root}/checkpoints") and not storage.is_dir(f"{root}/config.json")
    assert storage.listdir(f"{root}/checkpoints") == ["4"]
    assert storage.listdir(f"{root}/absent") == []
    storage.remove(f"{root}/config.json")
    assert gcs_listing(gcs, root) == {"checkpoints/4/meta": b"x"}


def test_text_log_in_a_bucket_is_uploaded_whole(gcs):
    path = f"gs://{BUCKET}/log/metrics.jsonl"
    storage.write_text(path, "1\n")
    log = storage.TextLog(path, upload_secs=1e9)  # uploads only on flush here
    log.append("2\n")
    log.append("3\n")
    assert gcs_listing(gcs, f"gs://{BUCKET}/log") == {"metrics.jsonl": b"1\n"}
    log.flush()
    assert gcs_listing(gcs, f"gs://{BUCKET}/log") == {"metrics.jsonl": b"1\n2\n3\n"}
    eager = storage.TextLog(path, upload_secs=0)  # a new writer continues the object
    eager.append("4\n")
    assert gcs_listing(gcs, f"gs://{BUCKET}/log") == {"metrics.jsonl": b"1\n2\n3\n4\n"}


def _events(data: bytes):
    """The Event protos of a TFRecord event file (length, crc, payload, crc)."""
    from tensorboardX.proto import event_pb2

    out, i = [], 0
    while i < len(data):
        (n,) = struct.unpack("<Q", data[i:i + 8])
        out.append(event_pb2.Event.FromString(data[i + 12:i + 12 + n]))
        i += 12 + n + 4
    return out


def test_metric_writer_and_tensorboard_in_a_bucket(gcs, tmp_path, monkeypatch):
    from jaxmm.train.logging import MetricWriter, read_jsonl

    monkeypatch.chdir(tmp_path)
    workdir = f"gs://{BUCKET}/writer"
    writer = MetricWriter(workdir, tensorboard=True)
    writer.write(1, {"train/loss": 2.5})
    writer.write(2, {"train/loss": 1.25, "bad": float("nan")})
    writer.write_summary({"step": 2}, f"{workdir}/summary.json")
    writer.close()
    files = gcs_listing(gcs, workdir)
    assert read_jsonl(f"{workdir}/metrics.jsonl") == [
        {"step": 1, "train/loss": 2.5}, {"step": 2, "train/loss": 1.25, "bad": "nan"}]
    assert json.loads(files["summary.json"]) == {"step": 2}
    (name,) = [n for n in files if n.startswith("tensorboard/events.out.tfevents.")]
    scalars = [(e.step, v.tag, v.simple_value) for e in _events(files[name])
               for v in e.summary.value]
    assert scalars == [(1, "train/loss", 2.5), (2, "train/loss", 1.25)]
    assert os.listdir(tmp_path) == []  # nothing local, no "gs:" folder


def test_run_record_and_checkpoint_steps_in_a_bucket(gcs):
    from ml_collections import ConfigDict

    from jaxmm.train.workdir import RunRecord, checkpoint_steps, resolve_workdir

    workdir = resolve_workdir(f"gs://{BUCKET}/record/")
    assert workdir == f"gs://{BUCKET}/record"
    old = RunRecord(workdir, ConfigDict({"seed": 1}))
    old.write(0)
    new = RunRecord(workdir, ConfigDict({"seed": 2}))
    assert new.recorded() == {"seed": 1}
    new.write(4)
    assert json.loads(gcs_listing(gcs, workdir)["config.4.json"]) == {"seed": 2}
    new.rollback()
    files = gcs_listing(gcs, workdir)
    assert sorted(files) == ["config.0.json", "config.json"]
    assert json.loads(files["config.json"]) == {"seed": 1}
    for step in (2, 10):
        storage.write_text(f"{workdir}/checkpoints/{step}/meta", "{}")
    storage.write_text(f"{workdir}/checkpoints/7.corrupt-1/meta", "{}")
    assert checkpoint_steps(f"{workdir}/checkpoints") == [2, 10]
