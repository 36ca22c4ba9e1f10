"""Evaluators chosen by name in ``config.eval.evaluators`` (see :mod:`.base`).

Built in: ``loss`` (the task's loss and metrics), ``perplexity``, ``retrieval``
(image<->text recall@K), ``zero_shot`` (classification by text prompts),
``captioning`` (BLEU/METEOR/ROUGE-L/CIDEr of generated captions), ``vqa`` (VQA
accuracy by question type), ``classification`` (accuracy/F1/MCC), ``glue``
(official GLUE metrics), ``ner`` (seqeval entity F1), ``squad`` (SQuAD v1.1/v2.0 exact
match and F1 of decoded answer spans), ``wer`` (word/character error rate of generated
transcripts) ``text2text`` (BLEU or ROUGE of generated text) and ``coco_map`` (COCO box mAP,
AP50, AP75 of a detector, pycocotools).
"""

from jaxmm.evaluate.evaluators import (  # noqa: F401  (importing registers them)
    classification,
    detection,
    loss,
    retrieval,
    squad,
    text_generation,
    token_classification,
    vqa,
)
from jaxmm.evaluate.evaluators.base import (
    EVALUATORS,
    EvalContext,
    EvalSettings,
    Evaluator,
    complete_evaluator_configs,
    make_evaluators,
    register_evaluator,
)
from jaxmm.evaluate.evaluators.text_generation import CaptionPredictions
from jaxmm.evaluate.evaluators.vqa import VQAPredictions

__all__ = [
    "EVALUATORS",
    "CaptionPredictions",
    "EvalContext",
    "EvalSettings",
    "Evaluator",
    "VQAPredictions",
    "complete_evaluator_configs",
    "make_evaluators",
    "register_evaluator",
]
