"""Multi-process start-up and preemption signals.

``initialize(config.distributed)`` calls ``jax.distributed.initialize`` when a
run spans several processes:

* ``initialize="on"`` or an explicit ``coordinator_address``: always, with the
  given ``coordinator_address`` / ``num_processes`` / ``process_id`` (unset ones
  are auto-detected);
* ``"auto"`` (default): when the platform says so (:func:`cluster_detected`):
  a SLURM job step with more than one task, Open MPI with more than one rank, a
  multi-host TPU slice, or ``JAX_COORDINATOR_ADDRESS`` set;
* ``"off"``: never.

A multi-host TPU slice is read the way JAX's ``cloud_tpu_cluster`` reads it:
``TPU_PROCESS_ADDRESSES`` / ``TPU_WORKER_HOSTNAMES`` and ``TPU_WORKER_ID`` (TPU
on GKE), else the GCE metadata server's ``agent-worker-number`` and
``worker-network-endpoints`` (a TPU VM created with ``gcloud``), plus
``MEGASCALE_*`` (from the environment or the metadata's ``tpu-env``) for several
slices. The metadata server is asked only where the machine has TPU chips (JAX's
PCI check) or ``GCE_METADATA_IP`` names the server, with a short timeout and
once per attribute and process. The
coordinator is worker 0 on port ``JAX_COORDINATOR_PORT`` (default 8482, JAX's).

GPUs: with several processes per node (SLURM ``--ntasks-per-node``, Open MPI
ranks), each process drives its share of the GPUs it sees
(:func:`local_device_ids`); one process per node drives all of them (JAX's own
SLURM detection would give it only GPU 0).

Preemption: :class:`PreemptionWatch` says when to save and stop. With one
process it catches SIGTERM itself. With several, JAX's preemption sync manager
(started by ``jax.distributed.initialize``) catches the signal and picks a step
that every process reaches, so all save the same step together.
"""

from __future__ import annotations

import functools
import logging
import os
import signal
import urllib.error
import urllib.request
from collections.abc import Callable, Mapping
from typing import Any

import jax

from jaxmm.config import ConfigError

log = logging.getLogger(__name__)

__all__ = ["PreemptionWatch", "cluster_detected", "initialize", "local_device_ids",
           "resolve", "tpu_slice"]

_MODES = ("auto", "on", "off")
TPU_COORDINATOR_PORT = 8482  # JAX's cloud_tpu_cluster.coordinator_port
METADATA_TIMEOUT_S = 2.0
# fetch(key) -> the metadata attribute's text, or None when it is absent/unreachable.
Fetch = Callable[[str], "str | None"]


# -- TPU slices: environment (GKE) or GCE metadata server (TPU VM) -------------


def _tpu_chips() -> int:
    """TPU chips on this machine's PCI bus (JAX's own check; no network)."""
    from jax._src import hardware_utils

    try:
        return hardware_utils.num_available_tpu_chips_and_device_id()[0]
    except OSError:
        return 0


def _looks_like_tpu_vm(env: Mapping[str, str]) -> bool:
    """Whether the metadata server is worth asking: ``GCE_METADATA_IP`` names one, or
    this machine has TPU chips and ``TPU_SKIP_MDS_QUERY`` is unset (JAX sets it where
    it finds no chips)."""
    if env.get("GCE_METADATA_IP"):
        return True
    return env.get("TPU_SKIP_MDS_QUERY") is None and _tpu_chips() > 0


@functools.lru_cache(maxsize=64)
def _fetch_metadata(host: str, key: str) -> str | None:
    """One attribute from the GCE metadata server at ``host`` (cached; None if absent)."""
    url = f"http://{host}/computeMetadata/v1/instance/attributes/{key}"
    request = urllib.request.Request(url, headers={"Metadata-Flavor": "Google"})
    try:
        with urllib.request.urlopen(request, timeout=METADATA_TIMEOUT_S) as response:
            return response.read().decode()
    except (urllib.error.URLError, OSError, ValueError):
        return None


def metadata_fetch(env: Mapping[str, str]) -> Fetch:
    """The fetch function for this machine's metadata server (``GCE_METADATA_IP``)."""
    host = env.get("GCE_METADATA_IP") or "metadata.google.internal"
    return functools.partial(_fetch_metadata, host)


def _tpu_env_value(key: str, env: Mapping[str, str], fetch: Fetch | None) -> str | None:
    """``key`` from the environment, else from the metadata's ``tpu-env`` (``KEY: 'v'``
    lines), as JAX's ``get_tpu_env_value``."""
    if key in env:
        return env[key]
    text = fetch("tpu-env") if fetch is not None else None
    for line in (text or "").splitlines():
        name, sep, value = line.partition(":")
        if sep and name.strip() == key:
            return value.strip().strip("'\"")
    return None


def _endpoint_hosts(text: str) -> list[str]:
    """``worker-network-endpoints``: ``host,host`` or ``name:id:ip,...`` (JAX's formats)."""
    hosts = []
    for worker in filter(None, text.strip().split(",")):
        parts = worker.split(":")
        if len(parts) not in (1, 3):
            raise ConfigError(f"TPU metadata worker-network-endpoints entry {worker!r} is "
                              "neither 'host' nor 'name:id:ip'; set "
                              "--config.distributed.coordinator_address and friends.")
        hosts.append(parts[-1])
    return hosts


def tpu_slice(env: Mapping[str, str] | None = None, fetch: Fetch | None = None
              ) -> dict[str, Any] | None:
    """``{"source", "coordinator_address", "num_processes", "process_id"}`` of a
    multi-host TPU slice, or None when this is not one (or a single host).

    ``fetch``: the metadata reader (default: this machine's metadata server, asked
    only when :func:`_looks_like_tpu_vm`).
    """
    env = dict(os.environ if env is None else env)
    listed = env.get("TPU_PROCESS_ADDRESSES") or env.get("TPU_WORKER_HOSTNAMES")
    if listed:  # TPU on GKE (and the MEGASCALE multislice env)
        source, hosts = "tpu-env", [h for h in listed.split(",") if h]
        worker = env.get("TPU_WORKER_ID")
    else:
        if fetch is None:
            if not _looks_like_tpu_vm(env):
                return None
            fetch = metadata_fetch(env)
        worker = fetch("agent-worker-number")
        if worker is None:
            return None
        source, hosts = "tpu-metadata", _endpoint_hosts(fetch("worker-network-endpoints") or "")
    num_slices = int(_tpu_env_value("MEGASCALE_NUM_SLICES", env, fetch) or 1)
    slice_id = int(_tpu_env_value("MEGASCALE_SLICE_ID", env, fetch) or 0)
    if len(hosts) * num_slices <= 1:
        return None
    try:
        worker_id = int(str(worker).strip())
    except ValueError:
        raise ConfigError(f"TPU worker id {worker!r} ({source}) is not a number; set "
                          "--config.distributed.process_id.") from None
    coordinator = _tpu_env_value("MEGASCALE_COORDINATOR_ADDRESS", env, fetch) or hosts[0]
    port = env.get("JAX_COORDINATOR_PORT") or TPU_COORDINATOR_PORT
    return {"source": source,
            "coordinator_address": f"{coordinator.split(':')[0]}:{port}",
            "num_processes": len(hosts) * num_slices,
            "process_id": worker_id + slice_id * len(hosts)}


# -- GPUs: which of the visible GPUs this process drives -----------------------


def _local_rank_and_size(env: Mapping[str, str]) -> tuple[int, int] | None:
    """(this process's index on its node, processes on the node) under SLURM/Open MPI."""
    if "SLURM_LOCALID" in env and "SLURM_PROCID" in env:
        per_node = env.get("SLURM_NTASKS_PER_NODE") or env.get("SLURM_STEP_TASKS_PER_NODE") \
            or env.get("SLURM_TASKS_PER_NODE") or "1"
        # "8" or "8(x2)" or "8(x2),4": the count for this node is not in the env in the
        # last (uneven) form; every form starts with the first node's count.
        return int(env["SLURM_LOCALID"]), int(per_node.split("(")[0].split(",")[0])
    if "OMPI_COMM_WORLD_LOCAL_RANK" in env:
        return (int(env["OMPI_COMM_WORLD_LOCAL_RANK"]),
                int(env.get("OMPI_COMM_WORLD_LOCAL_SIZE", "1")))
    return None


def _visible_gpus(env: Mapping[str, str]) -> int | None:
    """How many GPUs this process sees, when the environment says (else None)."""
    for name in ("CUDA_VISIBLE_DEVICES", "SLURM_STEP_GPUS", "SLURM_JOB_GPUS"):
        value = env.get(name)
        if value is not None and value.strip() not in ("", "NoDevFiles"):
            return len([d for d in value.split(",") if d.strip()])
    return None


def local_device_ids(env: Mapping[str, str] | None = None) -> list[int] | None:
    """The GPU ordinals (after ``CUDA_VISIBLE_DEVICES``) this process should use, or
    None to leave JAX's choice (no GPUs in the environment, or not a cluster job).

    ``k`` processes on a node that sees ``n`` GPUs (``n`` a multiple of ``k``): process
    ``r`` gets ``[r*n/k, ..., (r+1)*n/k - 1]``; one GPU per process when ``n == k``
    (``--ntasks-per-node=8 --gpus-per-node=8``), all of them for one process per
    node. A process that sees exactly one GPU (``--gpus-per-task=1`` binding) uses it.
    """
    env = dict(os.environ if env is None else env)
    rank = _local_rank_and_size(env)
    visible = _visible_gpus(env)
    if rank is None or visible is None:
        return None
    local, per_node = rank
    if visible == 1:
        return [0]
    if per_node <= 0 or visible % per_node or local >= per_node:
        raise ConfigError(
            f"{per_node} processes on this node but {visible} visible GPUs (local process "
            f"{local}); run one process per GPU (--ntasks-per-node = GPUs per node) or set "
            "--config.distributed.local_device_ids.")
    share = visible // per_node
    return list(range(local * share, (local + 1) * share))


# -- which cluster, and the arguments for jax.distributed.initialize -----------


def cluster_detected(env: Mapping[str, str] | None = None, fetch: Fetch | None = None
                     ) -> str | None:
    """Name of the multi-process environment this process runs in, or ``None``."""
    env = dict(os.environ if env is None else env)
    if env.get("JAX_COORDINATOR_ADDRESS"):
        return "JAX_COORDINATOR_ADDRESS"
    if int(env.get("SLURM_NTASKS", env.get("SLURM_NPROCS", "1")) or 1) > 1 and \
            "SLURM_PROCID" in env:
        return "slurm"
    if int(env.get("OMPI_COMM_WORLD_SIZE", "1") or 1) > 1:
        return "openmpi"
    found = tpu_slice(env, fetch)
    if found:
        return found["source"]
    if env.get("MEGASCALE_COORDINATOR_ADDRESS"):  # multislice: JAX's detection fills in
        return "tpu"
    return None


def resolve(cfg: Any, env: Mapping[str, str] | None = None, fetch: Fetch | None = None
            ) -> tuple[str | None, dict[str, Any] | None]:
    """(where, keyword arguments for ``jax.distributed.initialize``) for ``cfg``
    (``config.distributed``) in ``env``; ``(None, None)`` when it should not start.

    Unset arguments are left to JAX's own detection, except on a TPU slice (read
    here, so a slice is found even where JAX's detection is not: see
    :func:`tpu_slice`) and for the GPUs of SLURM / Open MPI processes
    (:func:`local_device_ids`).
    """
    mode = cfg.initialize
    if mode not in _MODES:
        raise ConfigError(
            f"distributed.initialize={mode!r} is not one of {', '.join(_MODES)}."
        )
    env = dict(os.environ if env is None else env)
    if mode == "off":
        return None, None
    explicit = cfg.coordinator_address is not None
    where = cluster_detected(env, fetch)
    if mode == "auto" and not explicit and where is None:
        return None, None
    kwargs = {
        "coordinator_address": cfg.coordinator_address,
        "num_processes": cfg.num_processes,
        "process_id": cfg.process_id,
        "local_device_ids": list(cfg.local_device_ids) if cfg.local_device_ids else None,
        "initialization_timeout": int(cfg.timeout_s),
    }
    if where in ("tpu-env", "tpu-metadata"):
        found = tpu_slice(env, fetch) or {}
        for key in ("coordinator_address", "num_processes", "process_id"):
            if kwargs[key] is None:
                kwargs[key] = found[key]
    elif where in ("slurm", "openmpi") and kwargs["local_device_ids"] is None:
        kwargs["local_device_ids"] = local_device_ids(env)
    return where or "config", {k: v for k, v in kwargs.items() if v is not None}


def initialize(cfg: Any) -> bool:
    """Starts ``jax.distributed`` as ``cfg`` (``config.distributed``) says.

    Returns True when this call initialised it. Must run before anything else
    touches JAX devices.
    """
    from jax._src import distributed as _dist  # the only way to ask "already initialised?"

    if cfg.initialize not in _MODES:
        raise ConfigError(
            f"distributed.initialize={cfg.initialize!r} is not one of {', '.join(_MODES)}."
        )
    if _dist.global_state.client is not None:
        return False
    where, kwargs = resolve(cfg)
    if kwargs is None:
        return False
    log.info("jax.distributed.initialize (%s): %s", where, kwargs)
    jax.distributed.initialize(**kwargs)
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
