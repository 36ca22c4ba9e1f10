"""Classification and regression metrics as the GLUE benchmark computes them.

Reference: the GLUE metric definitions (Wang et al., 2019) as computed by the GLUE
baselines and the Hugging Face ``glue`` metric: accuracy is ``mean(pred == label)``
(scikit-learn ``accuracy_score``); F1 is scikit-learn ``f1_score(labels, preds)``
with positive class 1; MCC is scikit-learn ``matthews_corrcoef``; Pearson and
Spearman are ``scipy.stats.pearsonr`` / ``spearmanr`` (ties get average ranks).
Degenerate inputs behave as those libraries do (scikit-learn 1.x, SciPy 1.x): F1 with
no predicted and no true positives is 0.0 (with a warning), MCC of a constant
prediction or label vector is 0.0, Pearson/Spearman of a constant vector is NaN.
All take 1-D sequences of equal length.
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np

__all__ = ["GLUE_METRICS", "accuracy", "f1", "glue_metrics", "matthews", "pearson", "spearman"]


def _arrays(predictions, labels) -> tuple[np.ndarray, np.ndarray]:
    p, y = np.asarray(predictions), np.asarray(labels)
    if p.shape != y.shape:
        raise ValueError(f"predictions {p.shape} and labels {y.shape} must have the same shape.")
    if p.ndim != 1:
        raise ValueError(f"predictions and labels must be 1-D sequences; got shape {p.shape}.")
    if p.size == 0:
        raise ValueError("No predictions to score.")
    return p, y


def accuracy(predictions: Sequence[int], labels: Sequence[int]) -> float:
    """Fraction of predictions equal to their label (scikit-learn ``accuracy_score``)."""
    p, y = _arrays(predictions, labels)
    return float(np.mean(p == y))


def f1(predictions: Sequence[int], labels: Sequence[int], average: str = "binary") -> float:
    """scikit-learn ``f1_score(labels, predictions, average=average)``.

    ``average="binary"`` (positive class 1, GLUE's MRPC/QQP F1) or
    ``"macro"``/``"micro"``/``"weighted"`` (weights: the labels' class counts).
    """
    from sklearn.metrics import f1_score

    p, y = _arrays(predictions, labels)
    return float(f1_score(y, p, average=average))


def matthews(predictions: Sequence[int], labels: Sequence[int]) -> float:
    """Matthews correlation coefficient (scikit-learn ``matthews_corrcoef``; GLUE CoLA)."""
    from sklearn.metrics import matthews_corrcoef

    p, y = _arrays(predictions, labels)
    return float(matthews_corrcoef(y, p))


def pearson(predictions: Sequence[float], labels: Sequence[float]) -> float:
    """Pearson correlation in float64 (``scipy.stats.pearsonr``; GLUE STS-B)."""
    from scipy.stats import pearsonr

    p, y = _arrays(predictions, labels)
    return float(pearsonr(p.astype(np.float64), y.astype(np.float64))[0])


def spearman(predictions: Sequence[float], labels: Sequence[float]) -> float:
    """Spearman rank correlation, ties at average rank (``scipy.stats.spearmanr``; STS-B)."""
    from scipy.stats import spearmanr

    p, y = _arrays(predictions, labels)
    return float(spearmanr(p.astype(np.float64), y.astype(np.float64))[0])


# The official GLUE metrics per task (the leaderboard's; AX is the diagnostic set).
GLUE_METRICS = {
    "cola": ("matthews",),
    "sst2": ("accuracy",),
    "mrpc": ("accuracy", "f1"),
    "qqp": ("accuracy", "f1"),
    "stsb": ("pearson", "spearman"),
    "mnli": ("accuracy",),
    "mnli_matched": ("accuracy",),
    "mnli_mismatched": ("accuracy",),
    "qnli": ("accuracy",),
    "rte": ("accuracy",),
    "wnli": ("accuracy",),
    "ax": ("matthews",),
}
_FUNCS = {"accuracy": accuracy, "f1": f1, "matthews": matthews, "pearson": pearson,
          "spearman": spearman}


def glue_metrics(task: str, predictions, labels) -> dict[str, float]:
    """The official metric(s) of GLUE ``task`` as ``{name: value}`` (class ids; stsb: scores)."""
    if task not in GLUE_METRICS:
        raise ValueError(f"Unknown GLUE task {task!r}; choose one of {sorted(GLUE_METRICS)}.")
    return {name: _FUNCS[name](predictions, labels) for name in GLUE_METRICS[task]}
