"""The tf.data pipeline: determinism, exact resume, per-process sharding, device batches."""

import json

import jax
import numpy as np
import pytest
from data_helpers import SCENES

from jaxmm.config import ConfigError
from jaxmm.data import make_iterator
from jaxmm.data.device import make_global_batch, prefetch_to_device
from jaxmm.data.pipeline import MASK_KEY
from jaxmm.data.sources import DataError
from jaxmm.sharding import make_mesh

PP = "resize(16)|random_crop(12)|flip_lr|value_range(-1, 1)|keep('image', 'image_id', 'label')"


def _config(scenes_dir, pp=PP):
    return {"name": SCENES, "data_dir": scenes_dir, "pp": pp}


def _take(it, n):
    return [next(it) for _ in range(n)]


def _ids(batches):
    return np.concatenate([b["image_id"] for b in batches])


def test_deterministic_given_seed(scenes_dir):
    cfg = _config(scenes_dir)
    kw = dict(split="train", batch_size=8, process_index=0, process_count=1)
    with make_iterator(cfg, seed=3, **kw) as a, make_iterator(cfg, seed=3, **kw) as b, \
            make_iterator(cfg, seed=4, **kw) as c:
        ba, bb, bc = _take(a, 3), _take(b, 3), _take(c, 3)
    for x, y in zip(ba, bb):
        np.testing.assert_array_equal(x["image"], y["image"])  # same order and augmentation
        np.testing.assert_array_equal(x["image_id"], y["image_id"])
    assert not np.array_equal(_ids(ba), _ids(bc))
    assert ba[0]["image"].shape == (8, 12, 12, 3) and ba[0]["image"].dtype == np.float32
    assert ba[0]["label"].dtype == np.int32 and ba[0]["image_id"].dtype == np.int32
    assert -1.0 <= ba[0]["image"].min() and ba[0]["image"].max() <= 1.0


def test_epochs_are_permutations_and_unshuffled_order(scenes_dir):
    cfg = _config(scenes_dir, "keep('image_id')")
    with make_iterator(cfg, split="train", batch_size=8, seed=0, process_index=0,
                       process_count=1) as it:
        ids = _ids(_take(it, 12))  # 48 examples -> two epochs
    first, second = ids[:48], ids[48:]
    assert len(set(first)) == 48 and set(first) == set(second)
    assert not np.array_equal(first, second)  # reshuffled each epoch
    with make_iterator(cfg, split="train", batch_size=8, seed=0, shuffle=False,
                       process_index=0, process_count=1) as it:
        plain = _ids(_take(it, 6))
    assert set(plain) == set(first) and not np.array_equal(plain, first)


def test_checkpoint_restore_no_repeats_or_skips(scenes_dir):
    cfg = _config(scenes_dir)
    kw = dict(split="train", batch_size=8, seed=1, process_index=0, process_count=1)
    with make_iterator(cfg, **kw) as it:
        reference = _take(it, 10)  # crosses the epoch boundary at batch 6
    with make_iterator(cfg, **kw) as it:
        _take(it, 4)
        state = json.loads(json.dumps(it.get_state()))  # JSON round trip
        assert state["next"] == 32
    with make_iterator(cfg, **kw) as restored:
        restored.set_state(state)
        resumed = _take(restored, 6)
    for x, y in zip(reference[4:], resumed):
        np.testing.assert_array_equal(x["image_id"], y["image_id"])
        np.testing.assert_array_equal(x["image"], y["image"])  # augmentation too


def test_restore_rejects_other_settings(scenes_dir):
    cfg = _config(scenes_dir)
    with make_iterator(cfg, split="train", batch_size=8, seed=1, process_index=0,
                       process_count=1) as it:
        state = it.get_state()
    with make_iterator(cfg, split="train", batch_size=8, seed=2, process_index=0,
                       process_count=1) as other:
        with pytest.raises(DataError, match="seed: saved 1 vs now 2"):
            other.set_state(state)


def test_process_shards_disjoint_and_complete(scenes_dir):
    cfg = _config(scenes_dir, "keep('image_id')")
    # Training: 48 examples over 3 processes -> 16 each per epoch.
    per_process = []
    for p in range(3):
        with make_iterator(cfg, split="train", batch_size=12, seed=5, process_index=p,
                           process_count=3) as it:
            per_process.append(_ids(_take(it, 4)))
    for ids in per_process:
        assert len(set(ids)) == 16
    union = np.concatenate(per_process)
    assert len(set(union)) == 48  # disjoint and complete
    # Evaluation: 16 examples over 3 processes, batch 2 per process -> padded,
    # each example exactly once, same number of batches on every process.
    seen, counts = [], []
    for p in range(3):
        with make_iterator(cfg, split="validation", batch_size=6, seed=0, shuffle=False,
                           repeat=False, process_index=p, process_count=3) as it:
            batches = list(it)
        counts.append(len(batches))
        for b in batches:
            seen.extend(b["image_id"][b[MASK_KEY] > 0].tolist())
    assert counts == [3, 3, 3]
    assert len(seen) == 16 and len(set(seen)) == 16


def test_eval_iterator_all_examples_once(scenes_dir):
    cfg = _config(scenes_dir, "keep('image_id')")
    with make_iterator(cfg, split="test", batch_size=5, seed=0, shuffle=False, repeat=False,
                       process_index=0, process_count=1) as it:
        batches = list(it)
        assert len(batches) == 4 and it.num_batches == 4
        with pytest.raises(StopIteration):
            next(it)
    masks = np.concatenate([b[MASK_KEY] for b in batches])
    assert masks.dtype == np.float32 and masks.sum() == 16 and not masks[16:].any()


def test_global_batch_and_device_prefetch_state(scenes_dir):
    mesh = make_mesh(data=4, fsdp=2)
    cfg = _config(scenes_dir)
    kw = dict(split="train", batch_size=16, seed=0, process_index=0, process_count=1)
    with make_iterator(cfg, **kw) as host:
        dev = prefetch_to_device(host, mesh, size=2)
        first = next(dev)
        assert isinstance(first["image"], jax.Array)
        assert first["image"].shape == (16, 12, 12, 3)
        assert first["image"].sharding.spec[0] == ("data", "fsdp")
        assert len(first["image"].addressable_shards) == 8
        second = next(dev)
        state = dev.get_state()
        assert state["next"] == 32  # consumed, not prefetched (host is ahead)
        assert host.get_state()["next"] > 32
    with make_iterator(cfg, **kw) as ref:
        batches = _take(ref, 3)
    np.testing.assert_array_equal(np.asarray(second["image_id"]), batches[1]["image_id"])
    with make_iterator(cfg, **kw) as host2:
        dev2 = prefetch_to_device(host2, mesh)
        dev2.set_state(state)
        np.testing.assert_array_equal(np.asarray(next(dev2)["image_id"]),
                                      batches[2]["image_id"])
    with pytest.raises(ConfigError, match="not divisible"):
        make_global_batch({"x": np.zeros((6, 2), np.float32)}, mesh)


def test_config_errors(scenes_dir, tmp_path):
    with pytest.raises(ConfigError, match="did you mean 'data_dir'"):
        make_iterator({"name": SCENES, "data_dri": scenes_dir}, split="train", batch_size=8,
                      process_index=0, process_count=1)
    with pytest.raises(ConfigError, match="Unknown preprocessing op 'resise'.*'resize'"):
        make_iterator(_config(scenes_dir, "resise(8)"), split="train", batch_size=8,
                      process_index=0, process_count=1)
    with pytest.raises(ConfigError, match="not divisible"):
        make_iterator(_config(scenes_dir), split="train", batch_size=9, process_index=0,
                      process_count=2)
    with pytest.raises(DataError, match="too few"):
        make_iterator(_config(scenes_dir), split="validation", batch_size=32, process_index=0,
                      process_count=1)
    with pytest.raises(DataError, match="no split 'dev'"):
        make_iterator(_config(scenes_dir), split="dev", batch_size=8, process_index=0,
                      process_count=1)
    missing = str(tmp_path / "nowhere")
    with pytest.raises(DataError, match=f"jaxmm data build-builtin --data-dir {missing}"):
        make_iterator({"name": SCENES, "data_dir": missing,
                       "prepare": "jaxmm data build-builtin --data-dir {data_dir} --size tiny"},
                      split="train", batch_size=8, process_index=0, process_count=1)
    empty = tmp_path / "empty"
    empty.mkdir()
    with pytest.raises(DataError, match="not prepared.*Prepare it with"):
        make_iterator({"name": "jaxmm_scenes/tiny", "data_dir": str(empty)}, split="train",
                      batch_size=8, process_index=0, process_count=1)
