"""Evaluation batches with several texts per example: (B, K, T) groups."""

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from jaxmm.models import build
from jaxmm.train.tasks.base import first_of_groups, flatten_groups, get_task


def _grouped(rng, b=3, k=4, t=5):
    ids = rng.integers(1, 50, size=(b, k, t)).astype(np.int32)
    mask = np.ones((b, k, t), np.int32)
    mask[2, 3] = 0  # an empty (padding) question
    return {
        "image": rng.normal(size=(b, 8, 8, 3)).astype(np.float32),
        "input_ids": ids, "attention_mask": mask,
        "label": rng.integers(0, 6, size=(b, k)).astype(np.int32),
        "image_id": np.arange(b, dtype=np.int32),
        "example_mask": np.array([1.0, 1.0, 0.0], np.float32),  # last row is eval padding
    }


@pytest.mark.slow
def test_flatten_and_first_of_groups(rng):
    batch = _grouped(rng)
    flat = flatten_groups({k: jnp.asarray(v) for k, v in batch.items()})
    assert flat["input_ids"].shape == (12, 5) and flat["image"].shape == (12, 8, 8, 3)
    for row in range(12):
        b, k = divmod(row, 4)
        np.testing.assert_array_equal(flat["input_ids"][row], batch["input_ids"][b, k])
        np.testing.assert_array_equal(flat["image"][row], batch["image"][b])
        assert flat["label"][row] == batch["label"][b, k]
        assert flat["image_id"][row] == b
    want = np.repeat(batch["example_mask"], 4)
    want[2 * 4 + 3] = 0.0
    np.testing.assert_array_equal(flat["example_mask"], want)
    first = first_of_groups(batch)
    np.testing.assert_array_equal(first["input_ids"], batch["input_ids"][:, 0])
    np.testing.assert_array_equal(first["image"], batch["image"])
    # Ungrouped batches pass through unchanged.
    assert flatten_groups(first)["input_ids"].shape == (3, 5)


@pytest.mark.slow
def test_vqa_task_scores_every_question_of_a_grouped_batch(rng):
    model = build("vqa", "tiny", num_answers=6, encoders={"text": {"vocab_size": 50},
                                                          "image": {"patch_size": 4}})
    task = get_task("vqa").from_config({"name": "vqa"}, model)
    batch = {k: jnp.asarray(v) for k, v in _grouped(rng).items()}
    variables = task.init(jax.random.key(0), flatten_groups(batch))
    grouped = task.loss(variables, task.prepare(batch, jax.random.key(1), False), train=False,
                        rng=jax.random.key(1))
    # Reference: the model on each real (image, question) pair, one at a time.
    logits = []
    for b in range(2):  # example 2 is eval padding
        for k in range(4):
            out = model.apply(variables, image=batch["image"][b:b + 1],
                              input_ids=batch["input_ids"][b, k][None],
                              attention_mask=batch["attention_mask"][b, k][None])
            logits.append((np.asarray(out.logits[0]), int(batch["label"][b, k])))
    nll = [-jax.nn.log_softmax(lg)[y] for lg, y in logits]
    assert float(grouped.weight) == 8
    np.testing.assert_allclose(float(grouped.loss) / float(grouped.weight), np.mean(nll),
                               rtol=1e-4)
