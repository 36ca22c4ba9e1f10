"""What the training loop does between steps: periodic hooks with explicit state.

After each step the loop asks every :class:`Hook` whether it is due (every
``every_steps`` steps, after the last step, on a preemption notice) and calls
the due ones in order: :class:`LogHook` (train metrics, throughput, MFU,
progress line), one :class:`EvalHook` per evaluator, :class:`CheckpointHook`
(which keeps the step's eval metrics for best-checkpoint tracking) and
:class:`PreemptionHook`. Each hook returns the metrics it produced, so later
hooks of the same step see them.

:class:`StepMetrics` fetches a step's metrics from the device one step late (so
the host never waits for the step it just dispatched) and stops the run on
NaN/Inf; :class:`Throughput` measures rates between log steps.
"""

from __future__ import annotations

import abc
import math
import time
from collections.abc import Callable, Mapping
from typing import Any

import jax
import numpy as np

from jaxmm.errors import NonFiniteError
from jaxmm.train import logging as log_lib
from jaxmm.train.steps import TrainState

__all__ = [
    "CheckpointHook",
    "EvalHook",
    "Hook",
    "LogHook",
    "NonFiniteError",
    "PreemptionHook",
    "StepMetrics",
    "Throughput",
]

Metrics = dict[str, float]


class StepMetrics:
    """Train metrics of each step, fetched one step late, with the NaN/Inf guard.

    Args:
      last_saved: returns the last checkpointed step (``None``: none yet), for
        the error message.
    """

    def __init__(self, last_saved: Callable[[], int | None]):
        self._last_saved = last_saved
        self._pending: tuple[int, Mapping[str, jax.Array]] | None = None
        self._history: dict[str, list[float]] = {}

    def push(self, step: int, device_metrics: Mapping[str, jax.Array]) -> None:
        """Keeps ``step``'s metrics pending and fetches the previous step's."""
        self.flush()
        self._pending = (step, device_metrics)

    def flush(self) -> None:
        """Fetches the pending step's metrics now (raises :class:`NonFiniteError`)."""
        if self._pending is None:
            return
        step, device_metrics = self._pending
        self._pending = None
        metrics = {k: float(v) for k, v in jax.device_get(dict(device_metrics)).items()}
        bad = sorted(k for k, v in metrics.items() if not math.isfinite(v))
        if bad:
            saved = self._last_saved()
            where = (f"the last checkpoint (step {saved}) is intact" if saved is not None
                     else "no checkpoint was written")
            raise NonFiniteError(
                f"Non-finite values at step {step}: "
                f"{', '.join(f'{k}={metrics[k]}' for k in bad)}. Training stopped without "
                f"saving this state; {where}. Check the data of this step, lower the learning "
                "rate, or enable gradient clipping (optimizer.clip_norm).")
        for k, v in metrics.items():
            self._history.setdefault(k, []).append(v)

    def window(self) -> Metrics:
        """Mean of every fetched step since the last call (then forgotten)."""
        out = {k: float(np.mean(v)) for k, v in self._history.items()}
        self._history.clear()
        return out


class Throughput:
    """Steps, examples and tokens per second, and MFU, since the last (re)start.

    The clock starts after the first step has finished (compilation is not
    throughput) and restarts after evaluations (eval time is not train time).

    Args:
      batch_size: global examples per step.
      model_flops: ``batch -> FLOPs of one step`` or ``None`` (no MFU).
      peak_flops: FLOP/s of all devices (``None``: no MFU).
    """

    def __init__(self, batch_size: int, model_flops: Callable[[Any], float | None] | None,
                 peak_flops: float | None):
        self.batch_size, self.peak = batch_size, peak_flops
        self._model_flops = model_flops
        self.flops_per_step: float | None = None
        self.tokens_per_example = 0
        self._mark: tuple[float, int] | None = None

    @property
    def started(self) -> bool:
        return self._mark is not None

    def start(self, step: int, batch: Mapping[str, jax.Array],
              metrics: Mapping[str, jax.Array]) -> None:
        """After the first step: measures the batch, waits for the step, starts the clock."""
        if "input_ids" in batch:
            self.tokens_per_example = int(np.prod(batch["input_ids"].shape[1:]))
        if self.peak and self._model_flops is not None:
            self.flops_per_step = self._model_flops(batch)
        jax.block_until_ready(metrics)
        self.restart(step)

    def restart(self, step: int) -> None:
        self._mark = (time.perf_counter(), step)

    def rates(self, step: int) -> Metrics:
        """Rates over the steps since the mark (``{}`` if none), and a new mark."""
        if self._mark is None or step <= self._mark[1]:
            return {}
        now = time.perf_counter()
        rate = (step - self._mark[1]) / (now - self._mark[0])
        out = {"steps_per_sec": rate, "examples_per_sec": rate * self.batch_size}
        if self.tokens_per_example:
            out["tokens_per_sec"] = rate * self.batch_size * self.tokens_per_example
        if self.flops_per_step and self.peak:
            out["mfu"] = self.flops_per_step * rate / self.peak
        self._mark = (now, step)
        return out


class Hook(abc.ABC):
    """Something the loop runs every ``every_steps`` steps (0: never periodically),
    after the last step when ``at_end``, and on a preemption notice when
    ``on_preemption``."""

    def __init__(self, every_steps: int = 0, *, at_end: bool = False,
                 on_preemption: bool = False):
        self.every_steps, self.at_end, self.on_preemption = every_steps, at_end, on_preemption

    def due(self, step: int, *, last: bool, preempted: bool) -> bool:
        return (bool(self.every_steps) and step % self.every_steps == 0) \
            or (last and self.at_end) or (preempted and self.on_preemption)

    @abc.abstractmethod
    def __call__(self, step: int, state: TrainState, report: Metrics) -> Metrics:
        """Runs at ``step``; ``report``: what earlier hooks of this step returned.
        Returns the metrics this hook produced (``{}`` if none)."""


class LogHook(Hook):
    """Writes the mean train metrics since the last log, throughput and MFU
    (``train/...``), and updates the progress line."""

    def __init__(self, every_steps: int, *, metrics: StepMetrics, throughput: Throughput,
                 summarize: Callable[[Metrics], Metrics], writer: log_lib.MetricWriter,
                 progress: log_lib.Progress):
        super().__init__(every_steps, at_end=True, on_preemption=True)
        self.metrics, self.throughput, self.summarize = metrics, throughput, summarize
        self.writer, self.progress = writer, progress

    def __call__(self, step: int, state: TrainState, report: Metrics) -> Metrics:
        window = self.summarize(self.metrics.window())
        window.update(self.throughput.rates(step))
        self.writer.write(step, {f"train/{k}": v for k, v in window.items()})
        self.progress.update(step, window)
        return {f"train/{k}": v for k, v in window.items()}


class EvalHook(Hook):
    """Runs one evaluator on the current variables and writes ``eval/<prefix><metric>``.

    ``latest`` holds its last results (``{prefix + metric: value}``).
    """

    def __init__(self, name: str, evaluator: Callable[[Any], Metrics], *, every_steps: int,
                 at_end: bool, prefix: str, writer: log_lib.MetricWriter,
                 progress: log_lib.Progress, throughput: Throughput):
        super().__init__(every_steps, at_end=at_end)
        self.name, self.evaluator, self.prefix = name, evaluator, prefix
        self.writer, self.progress, self.throughput = writer, progress, throughput
        self.latest: Metrics = {}

    def evaluate(self, state: TrainState) -> Metrics:
        """Runs the evaluator; returns (and keeps as ``latest``) its prefixed metrics."""
        self.latest = {f"{self.prefix}{k}": v for k, v in self.evaluator(state.variables).items()}
        return self.latest

    def __call__(self, step: int, state: TrainState, report: Metrics) -> Metrics:
        results = self.evaluate(state)
        self.writer.write(step, {f"eval/{k}": v for k, v in results.items()})
        where = f"eval @ {step}" if not self.prefix else f"eval {self.name} @ {step}"
        self.progress.message(f"{where}: " + ", ".join(
            f"{k.removeprefix(self.prefix)} {v:.4f}" for k, v in results.items()))
        self.throughput.restart(step)  # evaluation is not train time
        return {f"eval/{k}": v for k, v in results.items()}


class CheckpointHook(Hook):
    """Saves the state (and the data position) every ``every_steps``, after the last
    step when ``at_end``, and on preemption. Eval metrics of the same step go with
    the checkpoint (best-checkpoint tracking); ``last_saved`` is the last step saved."""

    def __init__(self, every_steps: int, *, at_end: bool, checkpointer: Any,
                 data_state: Callable[[], Any], meta: dict[str, Any],
                 last_saved: int | None):
        super().__init__(every_steps, at_end=at_end, on_preemption=True)
        self.checkpointer, self.data_state, self.meta = checkpointer, data_state, meta
        self.last_saved = last_saved

    def __call__(self, step: int, state: TrainState, report: Metrics) -> Metrics:
        evals = {k: v for k, v in report.items() if k.startswith("eval/")}
        self.last_saved = self.checkpointer.save(state, data_state=self.data_state(),
                                                 metrics=evals or None, meta=self.meta)
        return {}


class PreemptionHook(Hook):
    """On a preemption notice (after the save): says so; the loop then stops."""

    def __init__(self, progress: log_lib.Progress):
        super().__init__(on_preemption=True)
        self.progress = progress

    def __call__(self, step: int, state: TrainState, report: Metrics) -> Metrics:
        self.progress.message(f"Preemption notice: saved step {step}; exiting cleanly. "
                              "Re-run the same command to resume.")
        return {}
