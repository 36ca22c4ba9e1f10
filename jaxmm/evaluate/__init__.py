"""Evaluation metrics: retrieval, captioning, VQA, GLUE, SQuAD, WER, perplexity.

Functions take plain Python/NumPy inputs (host side, after gathering model
outputs) and return floats or dicts of floats. Each module names the official
script or library whose rules it follows (VQA v2 ``vqaEval.py``, SQuAD
``evaluate-v1.1.py``, ``pycocoevalcap``, scikit-learn/SciPy for GLUE, jiwer), and
tests/evaluate compares it with that reference on edge cases.
:mod:`jaxmm.evaluate.evaluators` runs a model over eval data and computes them:
the evaluators a run config picks (``config.eval.evaluators``), used in
training, by ``jaxmm eval`` and the demo.
"""

from jaxmm.evaluate.captioning import caption_metrics, repeated_ngram_rate, score_captions
from jaxmm.evaluate.classification import (
    GLUE_METRICS,
    accuracy,
    f1,
    glue_metrics,
    matthews,
    pearson,
    spearman,
)
from jaxmm.evaluate.retrieval import retrieval_recall
from jaxmm.evaluate.squad import (
    exact_match,
    normalize_answer,
    squad_f1,
    squad_metrics,
    squad_v2_metrics,
)
from jaxmm.evaluate.text import cer, perplexity, wer
from jaxmm.evaluate.vqa import VQA_NORMALIZATIONS, normalize_vqa_answer, vqa_accuracy, vqa_score

__all__ = [
    "GLUE_METRICS",
    "VQA_NORMALIZATIONS",
    "accuracy",
    "caption_metrics",
    "cer",
    "exact_match",
    "f1",
    "glue_metrics",
    "matthews",
    "normalize_answer",
    "normalize_vqa_answer",
    "pearson",
    "perplexity",
    "retrieval_recall",
    "repeated_ngram_rate",
    "score_captions",
    "spearman",
    "squad_f1",
    "squad_metrics",
    "squad_v2_metrics",
    "vqa_accuracy",
    "vqa_score",
    "wer",
]
