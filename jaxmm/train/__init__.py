"""The jaxmm training system.

``jaxmm.train.run(config, workdir)`` trains (or resumes) a run described by a
run config; ``jaxmm train --config configs/X.py --workdir DIR`` is the same
from the command line. See :mod:`jaxmm.train.loop` for the path a run takes,
:mod:`jaxmm.train.build` for the set-up shared by training and evaluation,
:mod:`jaxmm.train.hooks` for what runs between steps, :mod:`jaxmm.train.tasks`
for tasks and how to add one, :mod:`jaxmm.evaluate.evaluators` for evaluators,
and :mod:`jaxmm.train.run_config` for every config key.
"""

from jaxmm.train.build import Run, build_run, build_task
from jaxmm.train.checkpoint import Checkpointer, export_params, load_exported
from jaxmm.train.hooks import NonFiniteError
from jaxmm.train.loop import evaluate_checkpoint, run
from jaxmm.train.pretrained import merge_pretrained
from jaxmm.train.run_config import default_config, load_run_config, resolve_config
from jaxmm.train.steps import TrainState, make_eval_step, make_train_step
from jaxmm.train.tasks import LossOutput, Task, available_tasks, get_task, register_task

__all__ = [
    "Checkpointer",
    "LossOutput",
    "NonFiniteError",
    "Run",
    "Task",
    "TrainState",
    "available_tasks",
    "build_run",
    "build_task",
    "default_config",
    "evaluate_checkpoint",
    "export_params",
    "get_task",
    "load_exported",
    "load_run_config",
    "make_eval_step",
    "make_train_step",
    "merge_pretrained",
    "register_task",
    "resolve_config",
    "run",
]
