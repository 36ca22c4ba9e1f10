"""Retrieval recall@K against hand-computed ranks, the ALBEF/BLIP ``itm_eval`` ranking
(restated below) and scikit-learn's ``top_k_accuracy_score``."""

import numpy as np
import pytest
from sklearn.metrics import top_k_accuracy_score

from jaxmm import evaluate as ev


def test_retrieval_recall_hand_computed():
    # 3 images (ids 10, 20, 30), 6 captions (2 per image).
    text_ids = [10, 10, 20, 20, 30, 30]
    sim = np.array([
        # captions: 10a 10b 20a 20b 30a 30b
        [0.9, 0.1, 0.2, 0.0, 0.3, 0.1],  # image 10: best text is its own -> i2t rank 0
        [0.1, 0.2, 0.3, 0.1, 0.8, 0.0],  # image 20: 30a (0.8) beats 20a (0.3) -> rank 1
        [0.5, 0.4, 0.0, 0.1, 0.2, 0.3],  # image 30: best own 0.3 < 0.5, 0.4 -> rank 2
    ])
    out = ev.retrieval_recall(sim, [10, 20, 30], text_ids, ks=(1, 2, 3))
    assert out["i2t_R@1"] == pytest.approx(100 / 3)
    assert out["i2t_R@2"] == pytest.approx(200 / 3)
    assert out["i2t_R@3"] == pytest.approx(100.0)
    # text -> image ranks (column-wise): 10a:0, 10b:2, 20a:0, 20b:0 (tie with image 30
    # counts for the correct image), 30a:2, 30b:0
    assert out["t2i_R@1"] == pytest.approx(100 * 4 / 6)
    assert out["t2i_R@2"] == pytest.approx(100 * 4 / 6)
    assert out["t2i_R@3"] == pytest.approx(100.0)
    assert out["mean_recall"] == pytest.approx(
        np.mean([100 / 3, 200 / 3, 100, 400 / 6, 400 / 6, 100]))
    with pytest.raises(ValueError, match="not in image_ids"):
        ev.retrieval_recall(sim, [10, 20, 40], text_ids)
    with pytest.raises(ValueError, match="num_images, num_texts"):
        ev.retrieval_recall(sim.T, [10, 20, 30], text_ids)


def albef_ranks(sim, text_image_index):
    """itm_eval's ranking: argsort each row/column, best position of a correct item."""
    i2t = []
    for index, score in enumerate(sim):
        inds = np.argsort(score)[::-1]
        i2t.append(min(np.where(inds == t)[0][0] for t in np.where(text_image_index == index)[0]))
    t2i = []
    for index, score in enumerate(sim.T):
        inds = np.argsort(score)[::-1]
        t2i.append(np.where(inds == text_image_index[index])[0][0])
    return np.array(i2t), np.array(t2i)


def test_retrieval_matches_brute_force_ranking(rng):
    sim = rng.normal(size=(7, 21))
    text_ids = np.repeat(np.arange(7), 3)
    out = ev.retrieval_recall(sim, np.arange(7), text_ids, ks=(1, 5))
    i2t = [min(list(np.argsort(-row)).index(t) for t in np.where(text_ids == i)[0])
           for i, row in enumerate(sim)]
    t2i = [list(np.argsort(-sim[:, t])).index(text_ids[t]) for t in range(21)]
    for k in (1, 5):
        assert out[f"i2t_R@{k}"] == pytest.approx(100 * np.mean(np.array(i2t) < k))
        assert out[f"t2i_R@{k}"] == pytest.approx(100 * np.mean(np.array(t2i) < k))


def test_without_ties_equals_itm_eval_and_scikit_learn(rng):
    # 12 images with 1 to 5 captions each (uneven, shuffled), ids not 0..n-1.
    counts = rng.integers(1, 6, 12)
    image_ids = np.arange(12) * 7 + 3
    text_index = rng.permutation(np.repeat(np.arange(12), counts))
    sim = rng.normal(size=(12, len(text_index)))
    ks = (1, 3, 5, 10)
    out = ev.retrieval_recall(sim, image_ids, image_ids[text_index], ks=ks)
    i2t, t2i = albef_ranks(sim, text_index)
    for k in ks:
        assert out[f"i2t_R@{k}"] == pytest.approx(100 * np.mean(i2t < k))
        assert out[f"t2i_R@{k}"] == pytest.approx(100 * np.mean(t2i < k))
        # scikit-learn: text -> image is top-k accuracy with the text's image as label;
        # image -> text is a hit when any of the image's captions is a top-k label.
        t2i_sk = top_k_accuracy_score(text_index, sim.T, k=k, labels=np.arange(12))
        assert out[f"t2i_R@{k}"] == pytest.approx(100 * t2i_sk)
        hits = [any(top_k_accuracy_score([t], sim[i][None], k=k, labels=np.arange(sim.shape[1]))
                    for t in np.where(text_index == i)[0]) for i in range(12)]
        assert out[f"i2t_R@{k}"] == pytest.approx(100 * np.mean(hits))
    assert out["mean_recall"] == pytest.approx(np.mean([out[f"{d}_R@{k}"] for d in ("i2t", "t2i")
                                                        for k in ks]))
    assert 0 < out["i2t_R@1"] < 100 and 0 < out["t2i_R@1"] < 100


def test_ties_favour_the_query():
    # Every score equal: each correct item counts as ranked first.
    out = ev.retrieval_recall(np.zeros((4, 8)), [0, 1, 2, 3], [0, 0, 1, 1, 2, 2, 3, 3], ks=(1,))
    assert out == {"i2t_R@1": 100.0, "t2i_R@1": 100.0, "mean_recall": 100.0}
    # scikit-learn breaks the tie against the query here (labels in reverse order),
    # so it is a lower bound; on the tied columns jaxmm counts strictly higher scores.
    sim = np.array([[0.5, 0.2, 0.2], [0.5, 0.9, 0.2], [0.1, 0.2, 0.2]])
    out = ev.retrieval_recall(sim, [0, 1, 2], [0, 1, 2], ks=(1,))
    strictly_higher = [np.sum(sim[:, t] > sim[t, t]) for t in range(3)]
    assert strictly_higher == [0, 0, 0]
    assert out["t2i_R@1"] == 100.0
    assert 100 * top_k_accuracy_score([0, 1, 2], sim.T, k=1, labels=[0, 1, 2]) < 100.0
