"""GLUE metrics against their formulas and against scikit-learn / SciPy themselves."""

import math
import warnings

import numpy as np
import pytest
from scipy import stats
from sklearn import metrics as skm

from jaxmm import evaluate as ev


def test_classification_metrics_against_formulas(rng):
    y = rng.integers(0, 2, 200)
    p = np.where(rng.random(200) < 0.8, y, 1 - y)
    tp, tn = np.sum((p == 1) & (y == 1)), np.sum((p == 0) & (y == 0))
    fp, fn = np.sum((p == 1) & (y == 0)), np.sum((p == 0) & (y == 1))
    assert ev.accuracy(p, y) == pytest.approx((tp + tn) / 200)
    assert ev.f1(p, y) == pytest.approx(2 * tp / (2 * tp + fp + fn))
    mcc = (tp * tn - fp * fn) / math.sqrt((tp + fp) * (tp + fn) * (tn + fp) * (tn + fn))
    assert ev.matthews(p, y) == pytest.approx(mcc)
    y3, p3 = rng.integers(0, 3, 100), rng.integers(0, 3, 100)
    per_class = []
    for c in range(3):
        tpc = np.sum((p3 == c) & (y3 == c))
        per_class.append(2 * tpc / (np.sum(p3 == c) + np.sum(y3 == c)))
    assert ev.f1(p3, y3, average="macro") == pytest.approx(np.mean(per_class))
    a, b = rng.normal(size=50), rng.normal(size=50)
    assert ev.pearson(a, b) == pytest.approx(np.corrcoef(a, b)[0, 1])
    ranks = lambda x: np.argsort(np.argsort(x))  # noqa: E731
    assert ev.spearman(a, b) == pytest.approx(np.corrcoef(ranks(a), ranks(b))[0, 1])
    assert set(ev.glue_metrics("mrpc", p, y)) == {"accuracy", "f1"}
    assert set(ev.glue_metrics("stsb", a, b)) == {"pearson", "spearman"}
    with pytest.raises(ValueError, match="same shape"):
        ev.accuracy([1, 2], [1])


# (predictions, labels): imbalanced, all one class, no positives anywhere, 3 classes.
LABEL_CASES = [
    ([1, 0, 1, 1, 0, 0, 1, 0, 0, 0], [1, 1, 1, 0, 0, 0, 0, 0, 0, 1]),
    ([1, 1, 1, 1, 1, 1], [1, 0, 1, 0, 0, 0]),
    ([0, 0, 0, 0], [0, 0, 0, 0]),
    ([0, 0, 0, 0], [1, 0, 1, 1]),
    ([2, 0, 1, 1, 2, 0, 2, 2, 1], [2, 2, 1, 0, 2, 2, 0, 2, 2]),
]


@pytest.mark.parametrize("preds,labels", LABEL_CASES)
def test_label_metrics_equal_scikit_learn(preds, labels):
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # sklearn warns on the ill-defined cases
        assert ev.accuracy(preds, labels) == skm.accuracy_score(labels, preds)
        assert ev.matthews(preds, labels) == skm.matthews_corrcoef(labels, preds)
        for average in ("macro", "micro", "weighted"):  # weighted is not symmetric
            assert ev.f1(preds, labels, average) == skm.f1_score(labels, preds, average=average)
        if max(preds + labels) <= 1:
            assert ev.f1(preds, labels) == skm.f1_score(labels, preds)
    # weighted F1 weights by the LABELS' class counts: swapping the arguments changes it.
    if preds == LABEL_CASES[-1][0]:
        assert ev.f1(preds, labels, "weighted") != pytest.approx(ev.f1(labels, preds, "weighted"))


def test_correlations_equal_scipy():
    # STS-B-like scores with ties (average ranks in Spearman) and float32 inputs.
    labels = np.array([0.0, 1.2, 2.5, 2.5, 3.0, 4.8, 5.0, 5.0, 1.2, 3.6], np.float32)
    preds = np.array([0.4, 1.0, 2.5, 2.0, 3.3, 4.1, 4.9, 4.9, 2.0, 3.6], np.float32)
    l64, p64 = labels.astype(np.float64), preds.astype(np.float64)
    assert ev.pearson(preds, labels) == stats.pearsonr(p64, l64)[0]
    assert ev.spearman(preds, labels) == stats.spearmanr(p64, l64)[0]
    # The tie handling matters: ordinal ranks would give a different value.
    ordinal = np.corrcoef(np.argsort(np.argsort(p64, kind="stable")),
                          np.argsort(np.argsort(l64, kind="stable")))[0, 1]
    assert ev.spearman(preds, labels) != pytest.approx(ordinal)
    out = ev.glue_metrics("stsb", preds, labels)
    assert out == {"pearson": ev.pearson(preds, labels), "spearman": ev.spearman(preds, labels)}
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        assert math.isnan(ev.pearson([1.0, 2.0, 3.0], [2.0, 2.0, 2.0]))


def test_glue_tasks_use_the_leaderboard_metrics():
    preds, labels = [1, 0, 1, 1, 0, 0], [1, 1, 1, 0, 0, 0]
    mcc = skm.matthews_corrcoef(labels, preds)
    assert ev.glue_metrics("cola", preds, labels) == {"matthews": mcc}
    assert ev.glue_metrics("qqp", preds, labels) == {"accuracy": skm.accuracy_score(labels, preds),
                                                     "f1": skm.f1_score(labels, preds)}
    assert set(ev.glue_metrics("mnli_mismatched", preds, labels)) == {"accuracy"}
    assert set(ev.glue_metrics("ax", preds, labels)) == {"matthews"}
    with pytest.raises(ValueError, match="Unknown GLUE task"):
        ev.glue_metrics("squad", preds, labels)
    with pytest.raises(ValueError, match="1-D"):
        ev.accuracy([[1, 0]], [[1, 0]])
