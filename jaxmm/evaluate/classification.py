"""Classification and regression metrics (GLUE-style), via scikit-learn and SciPy."""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np

__all__ = ["GLUE_METRICS", "accuracy", "f1", "glue_metrics", "matthews", "pearson", "spearman"]


def _arrays(predictions, labels) -> tuple[np.ndarray, np.ndarray]:
    p, y = np.asarray(predictions), np.asarray(labels)
    if p.shape != y.shape:
        raise ValueError(f"predictions {p.shape} and labels {y.shape} must have the same shape.")
    if p.size == 0:
        raise ValueError("No predictions to score.")
    return p, y


def accuracy(predictions: Sequence[int], labels: Sequence[int]) -> float:
    p, y = _arrays(predictions, labels)
    return float(np.mean(p == y))


def f1(predictions: Sequence[int], labels: Sequence[int], average: str = "binary") -> float:
    """F1: ``average="binary"`` (positive class 1) or ``"macro"``/``"micro"``/``"weighted"``."""
    from sklearn.metrics import f1_score

    p, y = _arrays(predictions, labels)
    return float(f1_score(y, p, average=average))


def matthews(predictions: Sequence[int], labels: Sequence[int]) -> float:
    """Matthews correlation coefficient."""
    from sklearn.metrics import matthews_corrcoef

    p, y = _arrays(predictions, labels)
    return float(matthews_corrcoef(y, p))


def pearson(predictions: Sequence[float], labels: Sequence[float]) -> float:
    from scipy.stats import pearsonr

    p, y = _arrays(predictions, labels)
    return float(pearsonr(p.astype(np.float64), y.astype(np.float64))[0])


def spearman(predictions: Sequence[float], labels: Sequence[float]) -> float:
    from scipy.stats import spearmanr

    p, y = _arrays(predictions, labels)
    return float(spearmanr(p.astype(np.float64), y.astype(np.float64))[0])


# The official GLUE metrics per task.
GLUE_METRICS = {
    "cola": ("matthews",),
    "sst2": ("accuracy",),
    "mrpc": ("accuracy", "f1"),
    "qqp": ("accuracy", "f1"),
    "stsb": ("pearson", "spearman"),
    "mnli": ("accuracy",),
    "qnli": ("accuracy",),
    "rte": ("accuracy",),
    "wnli": ("accuracy",),
}
_FUNCS = {"accuracy": accuracy, "f1": f1, "matthews": matthews, "pearson": pearson,
          "spearman": spearman}


def glue_metrics(task: str, predictions, labels) -> dict[str, float]:
    """The official metric(s) of GLUE ``task`` (class ids, or scores for stsb)."""
    if task not in GLUE_METRICS:
        raise ValueError(f"Unknown GLUE task {task!r}; choose one of {sorted(GLUE_METRICS)}.")
    return {name: _FUNCS[name](predictions, labels) for name in GLUE_METRICS[task]}
