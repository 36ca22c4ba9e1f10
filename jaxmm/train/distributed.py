"""Multi-process start-up and preemption signals.

``initialize(config.distributed)`` calls ``jax.distributed.initialize`` when a
run spans several processes:

* ``initialize="on"`` or an explicit ``coordinator_address``: always, with the
  given ``coordinator_address`` / ``num_processes`` / ``process_id`` (unset ones
  are auto-detected by JAX);
* ``"auto"`` (default): when the platform says so, i.e. a SLURM job step with
  more than one task, Open MPI with more than one rank, a multi-host TPU VM
  slice (``TPU_WORKER_HOSTNAMES`` with several hosts, or Cloud TPU
  ``MEGASCALE_*``), or ``JAX_COORDINATOR_ADDRESS`` set; JAX then detects the
  coordinator, process count and id;
* ``"off"``: never.

Preemption: :class:`PreemptionWatch` says when to save and stop. With one
process it catches SIGTERM itself. With several, JAX's preemption sync manager
(started by ``jax.distributed.initialize``) catches the signal and picks a step
that every process reaches, so all save the same step together.
"""

from __future__ import annotations

import logging
import os
import signal
from typing import Any

import jax

from jaxmm.config import ConfigError

log = logging.getLogger(__name__)

__all__ = ["PreemptionWatch", "cluster_detected", "initialize"]

_MODES = ("auto", "on", "off")


def cluster_detected(env: dict[str, str] | None = None) -> str | None:
    """Name of the multi-process environment this process runs in, or ``None``."""
    env = dict(os.environ if env is None else env)
    if env.get("JAX_COORDINATOR_ADDRESS"):
        return "JAX_COORDINATOR_ADDRESS"
    if int(env.get("SLURM_NTASKS", env.get("SLURM_NPROCS", "1")) or 1) > 1 and \
            "SLURM_PROCID" in env:
        return "slurm"
    if int(env.get("OMPI_COMM_WORLD_SIZE", "1") or 1) > 1:
        return "openmpi"
    hosts = [h for h in env.get("TPU_WORKER_HOSTNAMES", "").split(",") if h]
    if len(hosts) > 1 or env.get("MEGASCALE_COORDINATOR_ADDRESS"):
        return "tpu"
    return None


def initialize(cfg: Any) -> bool:
    """Starts ``jax.distributed`` as ``cfg`` (``config.distributed``) says.

    Returns True when this call initialised it. Must run before anything else
    touches JAX devices.
    """
    mode = cfg.initialize
    if mode not in _MODES:
        raise ConfigError(
            f"distributed.initialize={mode!r} is not one of {', '.join(_MODES)}."
        )
    from jax._src import distributed as _dist  # the only way to ask "already initialised?"

    if _dist.global_state.client is not None or mode == "off":
        return False
    explicit = cfg.coordinator_address is not None
    where = cluster_detected()
    if mode == "auto" and not explicit and where is None:
        return False
    kwargs = {
        "coordinator_address": cfg.coordinator_address,
        "num_processes": cfg.num_processes,
        "process_id": cfg.process_id,
        "local_device_ids": list(cfg.local_device_ids) if cfg.local_device_ids else None,
        "initialization_timeout": int(cfg.timeout_s),
    }
    log.info("jax.distributed.initialize (%s): %s", where or "config",
             {k: v for k, v in kwargs.items() if v is not None})
    jax.distributed.initialize(**{k: v for k, v in kwargs.items() if v is not None})
    return True


class PreemptionWatch:
    """Tells the loop when a preemption notice (SIGTERM) asks it to save and stop.

    Use as a context manager around the loop; :meth:`reached(step)` is called
    once per step, by every process, with the same step numbers.
    """

    def __init__(self) -> None:
        self._flag = False
        self._previous: Any = None
        self._multi = jax.process_count() > 1

    def _handler(self, signum, frame) -> None:
        del frame
        log.warning("Received signal %d: will save a checkpoint and stop.", signum)
        self._flag = True

    def __enter__(self) -> PreemptionWatch:
        if not self._multi:
            try:
                self._previous = signal.signal(signal.SIGTERM, self._handler)
            except ValueError:  # not the main thread: no signal handling
                self._previous = None
        return self

    def __exit__(self, *exc) -> None:
        if self._previous is not None:
            signal.signal(signal.SIGTERM, self._previous)

    def reached(self, step: int) -> bool:
        """True when the run should save at ``step`` and stop."""
        if self._multi:
            from jax.experimental import multihost_utils

            try:
                return bool(multihost_utils.reached_preemption_sync_point(step))
            except RuntimeError:  # preemption service disabled
                return False
        return self._flag

    @property
    def signalled(self) -> bool:
        return self._flag
