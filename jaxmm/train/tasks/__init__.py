"""Training tasks: model + batch layout + loss + metrics, picked by name.

Built in: ``lm``, ``mlm``, ``classification``, ``contrastive``, ``captioning``,
``vqa``, ``asr``, ``distillation``, ``token_classification``, ``extractive_qa``,
``seq2seq``, ``pretraining``, ``itm``, ``detection``. See
:mod:`jaxmm.train.tasks.base` for how to add one.
"""

from jaxmm.train.tasks import (  # noqa: F401  (importing registers them)
    classification,
    contrastive,
    detection,
    distillation,
    extractive_qa,
    itm,
    lm,
    mlm,
    pretraining,
    seq2seq,
    token_classification,
    vqa,
)
from jaxmm.train.tasks.base import (
    IGNORE_INDEX,
    LossOutput,
    NoOptions,
    Task,
    available_tasks,
    example_weights,
    get_task,
    register_task,
    softmax_xent,
)

__all__ = [
    "IGNORE_INDEX",
    "LossOutput",
    "NoOptions",
    "Task",
    "available_tasks",
    "example_weights",
    "get_task",
    "register_task",
    "softmax_xent",
]
