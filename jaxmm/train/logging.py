"""Run logging: console progress, JSON lines, TensorBoard, throughput and MFU.

Only process 0 writes (console, ``workdir/metrics.jsonl``, TensorBoard events
under ``workdir/tensorboard``); other processes' writers do nothing, so
multi-host runs never duplicate or interleave lines.

TensorBoard events are written with ``tensorboardX``: it writes the standard
event-file format that TensorBoard reads, without importing TensorFlow into
the training process (``tf.summary`` costs ~3.5 s and ~600 MB of RSS at start
and needs the ``tensorboard`` package on top).

In a ``gs://`` workdir (:mod:`jaxmm.storage`), which cannot append to an
object, ``metrics.jsonl`` is rewritten whole from memory at most every 30 s,
at every checkpoint and at the end (:class:`jaxmm.storage.TextLog`), and each
event file is uploaded whole when tensorboardX flushes it (every 30 s and at
the end) through :class:`EpathEventFile`, registered with tensorboardX for
``gs://`` in place of its own writer (which needs ``google-cloud-storage``),
so that every byte of a run goes through one client, epath.

Model FLOP utilisation (MFU) = model FLOPs per second / peak FLOPs per second.
Model FLOPs per step come from XLA's cost analysis of the task's forward pass
on the global batch, times 3 (backward ~ 2x forward), so they do not count
rematerialisation. The peak is the published dense bf16 figure per chip for
TPUs and NVIDIA GPUs (:data:`PEAK_BF16_FLOPS`) times the device count, and on
CPU a measured float32 matmul rate of this host.
"""

from __future__ import annotations

import json
import math
import os
import sys
import time
from collections.abc import Mapping
from typing import Any, TextIO

import jax
import jax.numpy as jnp
import numpy as np
from etils import epath

from jaxmm import storage

__all__ = [
    "PEAK_BF16_FLOPS",
    "MetricWriter",
    "Progress",
    "device_peak_flops",
    "forward_flops",
    "measure_matmul_peak",
]

# Published dense bf16 peak FLOP/s per chip (vendor spec sheets). Matched in
# order against ``device.device_kind`` (lower case), so specific names first.
PEAK_BF16_FLOPS: tuple[tuple[str, float], ...] = (
    ("tpu v6 lite", 918e12),  # v6e (Trillium)
    ("tpu v6e", 918e12),
    ("tpu v5 lite", 197e12),  # v5e
    ("tpu v5e", 197e12),
    ("tpu v5p", 459e12),
    ("tpu v5", 459e12),
    ("tpu v4", 275e12),
    ("h200", 989e12),  # SXM
    ("h100 pcie", 756e12),
    ("h100", 989e12),  # SXM
    ("a100", 312e12),
)


def device_peak_flops(device: jax.Device | None = None) -> float | None:
    """Published bf16 peak of one accelerator, or ``None`` (CPU / unknown)."""
    device = device or jax.devices()[0]
    kind = str(getattr(device, "device_kind", "")).lower()
    for name, peak in PEAK_BF16_FLOPS:
        if name in kind:
            return peak
    return None


def measure_matmul_peak(size: int = 1024, repeats: int = 5, dtype: Any = jnp.float32) -> float:
    """FLOP/s of the best of ``repeats`` jitted ``size``-square matmuls on device 0."""
    x = jax.device_put(jnp.ones((size, size), dtype) / size, jax.devices()[0])
    f = jax.jit(lambda a: a @ a)
    f(x).block_until_ready()
    best = math.inf
    for _ in range(repeats):
        t = time.perf_counter()
        f(x).block_until_ready()
        best = min(best, time.perf_counter() - t)
    return 2.0 * size**3 / best


def forward_flops(fn, *abstract_args) -> float | None:
    """XLA's FLOP count of ``fn(*abstract_args)`` (lowered, not compiled)."""
    try:
        cost = jax.jit(fn).lower(*abstract_args).cost_analysis()
    except Exception:  # noqa: BLE001 - cost analysis is best effort
        return None
    if isinstance(cost, list | tuple):
        cost = cost[0] if cost else None
    flops = (cost or {}).get("flops")
    return float(flops) if flops and flops > 0 else None


def peak_flops_total() -> tuple[float | None, str]:
    """``(peak FLOP/s of all devices, how it was obtained)``."""
    per_chip = device_peak_flops()
    if per_chip is not None:
        return per_chip * jax.device_count(), "published bf16 peak"
    if jax.default_backend() == "cpu":
        # Simulated CPU devices share the host's cores: the host rate is the peak.
        return measure_matmul_peak() * jax.process_count(), "measured f32 matmul"
    return None, "unknown device"


def _fmt_time(seconds: float) -> str:
    if not math.isfinite(seconds):
        return "?"
    seconds = int(seconds)
    h, rem = divmod(seconds, 3600)
    m, s = divmod(rem, 60)
    return f"{h}:{m:02d}:{s:02d}"


class Progress:
    """One console line per update: step, loss, throughput, MFU and ETA.

    On a terminal the line is redrawn in place; otherwise (log files) each
    update is a new line.
    """

    def __init__(self, total: int, *, start: int = 0, unit: str = "examples",
                 stream: TextIO | None = None, enabled: bool = True):
        self.total, self.start, self.unit = total, start, unit
        self.stream = stream or sys.stdout
        self.main = jax.process_index() == 0
        self.enabled = enabled and self.main  # the per-step line; messages always print
        self.tty = hasattr(self.stream, "isatty") and self.stream.isatty()
        self.t0 = time.perf_counter()

    def update(self, step: int, metrics: Mapping[str, float]) -> None:
        if not self.enabled:
            return
        done = max(step - self.start, 1)
        elapsed = time.perf_counter() - self.t0
        eta = elapsed / done * (self.total - step)
        pct = 100.0 * step / max(self.total, 1)
        parts = [f"step {step}/{self.total} [{pct:3.0f}%]"]
        if "loss" in metrics:
            parts.append(f"loss {metrics['loss']:.4f}")
        rate = metrics.get(f"{self.unit}_per_sec")
        if rate is not None:
            parts.append(f"{rate:,.0f} {self.unit}/s")
        if metrics.get("mfu") is not None:
            parts.append(f"MFU {100 * metrics['mfu']:.1f}%")
        parts.append(f"ETA {_fmt_time(eta)}")
        line = " | ".join(parts)
        if self.tty:
            self.stream.write("\r" + line.ljust(100))
        else:
            self.stream.write(line + "\n")
        self.stream.flush()

    def message(self, text: str) -> None:
        if not self.main:
            return
        if self.tty and self.enabled:
            self.stream.write("\n")
        self.stream.write(text + "\n")
        self.stream.flush()


class EpathEventFile:
    """A TensorBoard event file in an object store, written through epath.

    tensorboardX's record writers append; an object cannot be appended to, so
    the file's bytes are kept in memory and uploaded whole on every flush.
    """

    def __init__(self, path: str):
        self.path = epath.Path(path)
        self.buffer = bytearray()
        self._uploaded = 0

    def write(self, data: bytes) -> None:
        self.buffer += data

    def flush(self) -> None:
        if len(self.buffer) != self._uploaded:
            self.path.write_bytes(bytes(self.buffer))
            self._uploaded = len(self.buffer)

    def close(self) -> None:
        self.flush()


class _EpathEventFiles:
    """tensorboardX's writer factory for ``gs://`` log dirs (:class:`EpathEventFile`)."""

    def open(self, path: str) -> EpathEventFile:
        return EpathEventFile(path)

    def directory_check(self, path: str) -> None:
        pass  # object stores have no folders to create


def _summary_writer(logdir: str) -> Any:
    from tensorboardX import SummaryWriter, record_writer

    if storage.is_url(logdir):
        for scheme in storage.URL_SCHEMES:
            record_writer.register_writer_factory(scheme, _EpathEventFiles())
    return SummaryWriter(logdir, flush_secs=30)


class MetricWriter:
    """Appends ``{"step", **metrics}`` to ``metrics.jsonl`` and TensorBoard (process 0).

    ``workdir``: a local folder or a ``gs://`` URL (see the module docstring)."""

    def __init__(self, workdir: str, *, tensorboard: bool = True):
        self.enabled = jax.process_index() == 0
        self.path = os.path.join(workdir, "metrics.jsonl")
        self._log = storage.TextLog(self.path)
        self._tb = None
        if self.enabled:
            storage.makedirs(workdir)
            if tensorboard:
                self._tb = _summary_writer(os.path.join(workdir, "tensorboard"))

    def write(self, step: int, metrics: Mapping[str, Any]) -> None:
        if not self.enabled:
            return
        clean = {}
        for k, v in metrics.items():
            v = float(np.asarray(v))
            clean[k] = v if math.isfinite(v) else str(v)
        self._log.append(json.dumps({"step": int(step), **clean}) + "\n")
        if self._tb is not None:
            for k, v in clean.items():
                if isinstance(v, float):
                    self._tb.add_scalar(k, v, int(step))

    def write_summary(self, summary: Mapping[str, Any], path: str) -> None:
        if self.enabled:
            storage.write_text(path, json.dumps(summary, indent=2, default=str))

    def flush_metrics(self) -> None:
        """Uploads ``metrics.jsonl`` to an object store (local files are already written)."""
        if self.enabled:
            self._log.flush()

    def flush(self) -> None:
        """Uploads ``metrics.jsonl`` (object stores) and the TensorBoard events."""
        if self.enabled:
            self._log.flush()
        if self._tb is not None:
            self._tb.flush()

    def close(self) -> None:
        self.flush()
        if self._tb is not None:
            self._tb.close()
            self._tb = None


def read_jsonl(path: str) -> list[dict[str, Any]]:
    """The records of a ``metrics.jsonl`` file (a path or URL)."""
    return [json.loads(line) for line in storage.read_text(path).splitlines() if line.strip()]
