"""``compile_run``: a run config's real train step compiled for a TPU slice you don't have.

libtpu (``pip install "jax[tpu]"``, in its own environment) describes any TPU
topology on a CPU-only machine; ``jax.experimental.topologies`` turns a name such
as ``v5e:4x4`` into that slice's devices. The run is built on a mesh of them
exactly as ``jaxmm train`` builds it (:func:`jaxmm.train.build.build_run`: mesh,
logical-axis shardings, optimizer, the jitted step with donation), the state and
a global batch are ``jax.ShapeDtypeStruct``s with the run's ``NamedSharding``s
(nothing is allocated), and the step is lowered and compiled by XLA:TPU.

The :class:`CompileReport` gives, per chip: argument / output / temp memory
against the chip's HBM, XLA's FLOPs and bytes accessed, the collectives of the
compiled HLO (:mod:`jaxmm.compile.hlo`), and a roofline estimate of the step
time and MFU from the published peaks in :mod:`jaxmm.compile.chips`.

Roofline assumptions (stated in every report): compute runs at the chip's peak
bf16 FLOP/s on XLA's per-chip FLOP count (which includes remat recomputation);
memory traffic runs at the peak HBM bandwidth on XLA's bytes accessed; each
collective is a ring over its group on a bidirectional torus axis (2 links);
compute and memory traffic overlap (their max), collectives do not (added).
The optimistic bound (everything overlapped) is reported next to it.
"""

from __future__ import annotations

import copy
import dataclasses
import math
import re
from collections.abc import Mapping, Sequence
from typing import Any

import jax
import numpy as np
from jax.sharding import NamedSharding

from jaxmm import sharding
from jaxmm.compile import hlo
from jaxmm.compile.chips import Chip, chip_for_topology
from jaxmm.errors import ConfigError, InputError

__all__ = ["ASSUMPTIONS", "CompileReport", "DoesNotFitError", "ReplicatedParameterError",
           "compile_run", "replicated_parameters", "roofline", "tpu_topology"]

# A parameter at least this large, fully replicated while the mesh has an fsdp or
# tensor axis > 1, fails the report (every chip holds all of it and its optimizer state).
REPLICATED_PARAM_BYTES = 4 << 20

ASSUMPTIONS = (
    "compute at peak bf16 FLOP/s on XLA's per-chip FLOPs (remat recompute included), or on "
    "model FLOPs / chips when larger (XLA counts a loop body once); "
    "HBM traffic at peak bandwidth on XLA's bytes accessed; collectives as rings on one "
    "bidirectional torus axis (2 ICI links per chip); step = max(compute, HBM) + collectives "
    "(no compute/communication overlap); the bound = max of all three; MFU = model FLOPs "
    "(3x forward, no recompute) / (chips x peak x step)")


class DoesNotFitError(ConfigError):
    """The compiled step needs more memory per chip than the chip's HBM."""


class ReplicatedParameterError(ConfigError):
    """A large parameter is replicated on a mesh that could shard it."""


def tpu_topology(name: str) -> Sequence[jax.Device]:
    """The devices of a named TPU topology (``v5e:4x4``), from libtpu, without hardware."""
    chip_for_topology(name)
    try:
        import libtpu  # noqa: F401
    except ImportError:
        raise InputError(
            "jaxmm compile needs libtpu to describe TPU topologies, and it is not installed.",
            hint=f'Install it in its own environment: pip install "jax[tpu]=={jax.__version__}" '
                 "(it does not need a TPU; `make tpu-venv` makes .venv-tpu).") from None
    from jax.experimental import topologies

    try:
        topo = topologies.get_topology_desc(platform="tpu", topology_name=name)
    except Exception as error:  # noqa: BLE001 - libtpu's message names the problem
        raise ConfigError(f"libtpu cannot describe topology {name!r}: "
                          f"{str(error).splitlines()[0]}",
                          hint="Use GEN:AxB[xC], e.g. v5e:4x4, v5p:2x2x2, v4:2x2x1.") from None
    return list(topo.devices)


def replicated_parameters(params: Any, shardings: Any, mesh: jax.sharding.Mesh,
                          min_bytes: int = REPLICATED_PARAM_BYTES) -> list[tuple[str, int]]:
    """``(path, bytes)`` of parameters of ``min_bytes`` or more that every chip holds whole
    although the mesh has an ``fsdp`` or ``tensor`` axis larger than 1 (else ``[]``)."""
    if mesh.shape.get("fsdp", 1) * mesh.shape.get("tensor", 1) <= 1:
        return []
    flat = jax.tree_util.tree_flatten_with_path(params)[0]
    shards = jax.tree.leaves(shardings, is_leaf=lambda x: isinstance(x, NamedSharding))
    out = []
    for (path, leaf), sh in zip(flat, shards):
        nbytes = math.prod(leaf.shape) * np.dtype(leaf.dtype).itemsize
        if nbytes >= min_bytes and sh.is_fully_replicated:
            out.append(("/".join(sharding._tree_key_str(k) for k in path), int(nbytes)))
    return out


def roofline(chip: Chip, *, flops: float, bytes_accessed: float, ici_bytes: float,
             model_flops: float | None, num_chips: int) -> dict[str, float | None]:
    """Step-time estimate (seconds) and MFU from per-chip counts (see :data:`ASSUMPTIONS`)."""
    # XLA counts a loop body once (XLA:TPU makes loops of its own, e.g. windowed einsums
    # over an fsdp axis), so its count can fall below the model's share: use the larger.
    t_compute = max(flops, (model_flops or 0.0) / num_chips) / chip.bf16_flops
    t_hbm = bytes_accessed / chip.hbm_bandwidth
    t_ici = ici_bytes / chip.collective_bandwidth
    step = max(t_compute, t_hbm) + t_ici
    bound = max(t_compute, t_hbm, t_ici)

    def mfu(t):
        if not model_flops or t <= 0:
            return None
        return model_flops / (num_chips * chip.bf16_flops * t)

    return {"compute_s": t_compute, "hbm_s": t_hbm, "collectives_s": t_ici, "step_s": step,
            "step_bound_s": bound, "mfu": mfu(step), "mfu_bound": mfu(bound)}


@dataclasses.dataclass
class CompileReport:
    """What :func:`compile_run` found; byte counts and FLOPs are per chip."""

    topology: str
    chip: Chip
    num_chips: int
    mesh: dict[str, int]
    model: str
    num_params: int
    batch_size: int
    per_device_batch: float
    seq_len: int | None
    remat_policy: str | None
    memory: dict[str, int]
    flops: float
    bytes_accessed: float
    model_flops: float | None
    collectives: dict[str, dict[str, float]]
    estimate: dict[str, float | None]
    replicated: list[tuple[str, int]]
    compile_seconds: float
    notes: list[str] = dataclasses.field(default_factory=list)
    hlo_text: str = dataclasses.field(repr=False, default="")

    @property
    def fits(self) -> bool:
        return self.memory["total"] <= self.chip.hbm_bytes

    def to_dict(self) -> dict[str, Any]:
        d = dataclasses.asdict(self)
        d.pop("hlo_text")
        d["chip"] = dataclasses.asdict(self.chip)
        d["fits"] = self.fits
        d["assumptions"] = ASSUMPTIONS
        return d

    def format(self) -> str:
        """The human-readable report (what ``jaxmm compile`` prints)."""
        gib = lambda b: f"{b / 2**30:.2f} GiB"  # noqa: E731
        m, e = self.memory, self.estimate
        lines = [
            f"{self.model} ({self.num_params / 1e9:.3f} B params) on {self.topology}: "
            f"{self.num_chips} x TPU {self.chip.name}, mesh "
            + " ".join(f"{k}={v}" for k, v in self.mesh.items()),
            f"  batch {self.batch_size} ({self.per_device_batch:g} per chip)"
            + (f" x {self.seq_len} tokens" if self.seq_len else "")
            + f", remat {self.remat_policy}; compiled in {self.compile_seconds:.1f} s",
            f"  memory per chip: {gib(m['total'])} of {gib(self.chip.hbm_bytes)} HBM "
            f"({100 * m['total'] / self.chip.hbm_bytes:.0f}%): arguments {gib(m['argument'])}, "
            f"outputs {gib(m['output'])} (aliased {gib(m['alias'])}), temp {gib(m['temp'])}, "
            f"code {gib(m['code'])}",
            f"  per chip: {self.flops / 1e12:.3f} TFLOP, {self.bytes_accessed / 1e9:.3f} GB "
            "accessed (XLA cost analysis)",
            "  collectives per chip per step (count, array bytes, ICI bytes sent):",
        ]
        for kind, s in self.collectives.items():
            if s["count"]:
                mb = s["array_bytes"] / 1e6, s["ici_bytes"] / 1e6
                lines.append(f"    {kind:<19} {int(s['count']):>5}  {mb[0]:>10.1f} MB  "
                             f"{mb[1]:>10.1f} MB")
        mfu = lambda x: "?" if x is None else f"{100 * x:.1f}%"  # noqa: E731
        lines += [
            f"  roofline: compute {e['compute_s'] * 1e3:.2f} ms, HBM {e['hbm_s'] * 1e3:.2f} ms, "
            f"collectives {e['collectives_s'] * 1e3:.2f} ms",
            f"  estimated step {e['step_s'] * 1e3:.2f} ms (MFU {mfu(e['mfu'])}); "
            f"bound {e['step_bound_s'] * 1e3:.2f} ms (MFU {mfu(e['mfu_bound'])})",
            *(f"  note: {n}." for n in self.notes),
            f"  assumptions: {ASSUMPTIONS}.",
            f"  peaks: {self.chip.bf16_flops / 1e12:g} TFLOP/s bf16, "
            f"{self.chip.hbm_bandwidth / 1e9:g} GB/s HBM, {self.chip.ici_link_bandwidth / 1e9:g} "
            f"GB/s per ICI link one way ({self.chip.source})",
        ]
        return "\n".join(lines)


def _global_batch(run: Any) -> dict[str, jax.ShapeDtypeStruct]:
    rows = int(run.config.batch_size)
    return {k: jax.ShapeDtypeStruct((rows,) + tuple(v.shape[1:]), v.dtype,
                                    sharding=NamedSharding(run.mesh, run.data_sharding.spec))
            for k, v in run.example.items()}


def _memory(compiled: Any) -> dict[str, int]:
    m = compiled.memory_analysis()
    mem = {"argument": int(m.argument_size_in_bytes), "output": int(m.output_size_in_bytes),
           "alias": int(m.alias_size_in_bytes), "temp": int(m.temp_size_in_bytes),
           "code": int(m.generated_code_size_in_bytes)}
    mem["total"] = mem["argument"] + mem["output"] - mem["alias"] + mem["temp"] + mem["code"]
    return mem


def _cost(compiled: Any) -> tuple[float, float]:
    cost = compiled.cost_analysis()
    if isinstance(cost, list | tuple):
        cost = cost[0] if cost else {}
    cost = cost or {}
    return float(cost.get("flops", 0.0)), float(cost.get("bytes accessed", 0.0))


def _model_flops(run: Any, batch: Mapping[str, jax.ShapeDtypeStruct]) -> float | None:
    """3x the forward FLOPs of the loss on the global batch (XLA's count, lowered for the
    host: a TPU lowering has no cost analysis), so no remat recomputation is counted."""
    import flax.linen as nn

    from jaxmm.train import logging as log_lib

    task, rng = run.task, jax.random.PRNGKey(0)
    fwd = lambda v, b, c: task.loss(v, task.prepare(b, rng, False), train=False,  # noqa: E731
                                    rng=rng, constants=c).loss
    shapes = {k: jax.ShapeDtypeStruct(v.shape, v.dtype) for k, v in batch.items()}
    with nn.logical_axis_rules(run.rules):
        flops = log_lib.forward_flops(fwd, run.abstract_state.variables, shapes, None)
    return 3.0 * flops if flops else None


def _fit_hint(report: CompileReport, activations: bool) -> str:
    """What would make the step fit; ``activations``: temporaries dominate the need."""
    mesh, n, state = report.mesh, report.num_chips, report.memory["argument"]
    remat, shard = [], []
    if report.remat_policy in ("dots", "everything"):
        remat.append(f"save less for the backward pass (remat_policy={report.remat_policy} "
                     "keeps every matmul output, attention scores included): "
                     "--config.model.config.remat_policy=dots_no_batch or full")
    elif report.remat_policy in ("none", "dots_no_batch"):
        remat.append("recompute more in the backward pass: "
                     "--config.model.config.remat_policy=full")
    if mesh["fsdp"] * mesh["tensor"] < n:
        more = n // mesh["tensor"]
        shard.append(f"shard the parameters and optimizer state over all chips "
                     f"(--config.mesh.fsdp={more} --config.mesh.data=1: "
                     f"{state / 2**30:.2f} GiB per chip now, about "
                     f"{state * mesh['fsdp'] / more / 2**30:.2f} GiB then)")
    hints = remat + shard if activations else shard + remat
    if report.per_device_batch > 1:
        hints.append(f"halve the per-chip batch (--config.batch_size="
                     f"{report.batch_size // 2}, or --config.grad_accum_steps=2 to keep it)")
    return "; or ".join(hints) if hints else "use a larger slice or a chip with more HBM"


def _compile_step(config: Any, devices: Sequence[jax.Device],
                  topology: str) -> tuple[Any, Any, dict, float]:
    """``(run, compiled step, global batch, compile seconds)`` of ``config`` on ``devices``."""
    import time

    from jaxmm.train.build import build_run

    mesh = sharding.make_mesh(config.mesh, devices=devices)
    run = build_run(config, mesh)
    if run.constants is not None:
        raise ConfigError(f"task {config.task.name!r} has device constants; jaxmm compile "
                          "supports tasks without them.")
    batch = _global_batch(run)
    start = time.perf_counter()
    with jax.set_mesh(mesh):
        lowered = run.train_step.lower(run.state_target(), batch, run.constants)
        try:
            compiled = lowered.compile()
        except Exception as error:  # noqa: BLE001 - XLA:TPU's out-of-memory is a runtime error
            if "RESOURCE_EXHAUSTED" not in str(error) and "out of memory" not in str(error):
                raise
            raise _compile_oom(config, run, topology, str(error)) from None
    return run, compiled, batch, time.perf_counter() - start


def _state_bytes_per_chip(run: Any) -> int:
    """Bytes of one chip's shard of the train state (params, optimizer state, ...)."""
    total = 0
    for leaf in jax.tree.leaves(run.state_target()):
        shard = leaf.sharding.shard_shape(leaf.shape)
        total += math.prod(shard) * np.dtype(leaf.dtype).itemsize
    return total


def _compile_oom(config: Any, run: Any, topology: str, message: str) -> DoesNotFitError:
    """XLA refused to compile for lack of HBM: say by how much and what would help."""
    state = _state_bytes_per_chip(run)
    what, activations = oom_summary(message, state)
    mesh = run.mesh
    dp = mesh.shape["data"] * mesh.shape["fsdp"]
    report = CompileReport(
        topology=topology, chip=chip_for_topology(topology), num_chips=run.mesh.size,
        mesh=dict(mesh.shape), model=_model_name(config), num_params=run.num_params,
        batch_size=int(config.batch_size), per_device_batch=config.batch_size / dp,
        seq_len=None, remat_policy=config.model.config.get("remat_policy"),
        memory={"argument": state}, flops=0.0, bytes_accessed=0.0, model_flops=None,
        collectives={}, estimate={}, replicated=[], compile_seconds=0.0)
    return DoesNotFitError(f"{report.model} does not fit on {topology}: {what}.",
                           hint=f"To fit, {_fit_hint(report, activations)}.")


def oom_summary(message: str, state_bytes: int) -> tuple[str, bool]:
    """``(what XLA:TPU's out-of-memory ``message`` says, in GiB; whether temporaries
    (activations) alone exceed HBM)``; ``state_bytes``: the train state per chip."""
    unit = {"K": 2**10, "M": 2**20, "G": 2**30, "T": 2**40}

    def gib(pattern: str) -> float | None:
        m = re.search(pattern + r"\(?([\d.]+)([KMGT])", message)
        return float(m.group(1)) * unit[m.group(2)] / 2**30 if m else None

    need = gib(r"required for HLO temporaries \(")
    have = gib(r"exceeds available HBM \(")
    over = gib(r"[Ee]xceeded \w+ capacity by ")
    if need is not None and have is not None:
        return (f"its temporaries (activations) alone need {need:.2f} GiB per chip of the "
                f"{have:.2f} GiB HBM XLA can use, {need - have:.2f} GiB too many, besides "
                f"{state_bytes / 2**30:.2f} GiB of train state"), True
    if over is not None:
        return f"it needs {over:.2f} GiB per chip more than the chip's HBM", False
    return f"XLA ran out of HBM ({message.strip().splitlines()[0][:200]})", False


def _model_name(config: Any) -> str:
    return (f"{config.model.name}:{config.model.size}" if config.model.size
            else str(config.model.name))


def _unrolled_costs(config: Any, devices: Sequence[jax.Device], topology: str,
                    layers: int) -> tuple[float, float, float | None]:
    """Per-chip FLOPs, bytes accessed and model FLOPs of a ``layers``-deep scanned stack,
    extrapolated from unrolled 1- and 2-layer compiles (exact for identical layers):
    XLA's cost analysis counts a loop body once, whatever its trip count."""
    costs = []
    for depth in (1, 2):
        c = copy.deepcopy(config)
        with c.unlocked():
            c.model.config.num_layers = depth
            c.model.config.scan_layers = False
        run, compiled, batch, _ = _compile_step(c, devices, topology)
        costs.append((*_cost(compiled), _model_flops(run, batch)))
    (f1, b1, m1), (f2, b2, m2) = costs
    model = m1 + (layers - 1) * (m2 - m1) if m1 and m2 else None
    return f1 + (layers - 1) * (f2 - f1), b1 + (layers - 1) * (b2 - b1), model


def compile_run(config: Any, topology: str, *,
                replicated_threshold: int = REPLICATED_PARAM_BYTES,
                check: bool = True) -> CompileReport:
    """Compiles ``config``'s train step for ``topology`` and reports (see module doc).

    ``config``: a run config (ConfigDict or mapping, completed with the defaults)
    whose ``mesh`` uses the topology's chips. With ``check`` (the default) a step
    that does not fit in HBM raises :class:`DoesNotFitError` and a replicated large
    parameter :class:`ReplicatedParameterError`, each a one-line message with the fix.

    A stack with ``scan_layers`` compiles fast (one layer body), and memory and
    collectives (counted per loop trip) come from it; its FLOPs and bytes come from
    unrolled 1- and 2-layer compiles, extrapolated to ``num_layers``.
    """
    from jaxmm.train.run_config import resolve_config

    chip = chip_for_topology(topology)
    devices = tpu_topology(topology)
    config = resolve_config(config)
    with config.unlocked():
        config.distributed.initialize = "off"  # one process describes the whole slice
    notes = []
    if config.model.config.get("attention_impl") == "auto":
        # "auto" picks by the default backend, which is this host's CPU, not the TPU.
        with config.unlocked():
            config.model.config.attention_impl = "xla"
        notes.append("attention_impl auto compiled as xla (jax.nn.dot_product_attention), "
                     "what auto picks on a TPU")
    run, compiled, batch, seconds = _compile_step(config, devices, topology)
    mesh = run.mesh
    text = compiled.as_text() or ""
    summary = hlo.summarize(hlo.collectives(text))
    ici = sum(s["ici_bytes"] for s in summary.values())
    mcfg = config.model.config
    layers = mcfg.get("num_layers")
    loops = [n for _, n in hlo.loops(text) if n > 1]
    if loops and mcfg.get("scan_layers") and layers and layers > 2 and layers in loops:
        flops, bytes_accessed, model_flops = _unrolled_costs(config, devices, topology, layers)
        notes.append(f"FLOPs and bytes: unrolled 1- and 2-layer compiles extrapolated to "
                     f"{layers} layers (the step scans its layers)")
    else:
        flops, bytes_accessed = _cost(compiled)
        model_flops = _model_flops(run, batch)
    own = [n for n in loops if n != layers or not mcfg.get("scan_layers")]
    if own:
        notes.append(f"the step has {len(own)} loop(s) besides the layer scan (XLA's own, e.g. "
                     "windowed einsums over fsdp, or grad accumulation) whose bodies XLA's cost "
                     "analysis counts once: its FLOPs and bytes accessed are lower bounds")
    dp = mesh.shape["data"] * mesh.shape["fsdp"]
    report = CompileReport(
        topology=topology, chip=chip, num_chips=len(devices), mesh=dict(mesh.shape),
        model=_model_name(config),
        num_params=run.num_params, batch_size=int(config.batch_size),
        per_device_batch=config.batch_size / dp,
        seq_len=next((int(v.shape[1]) for v in batch.values() if len(v.shape) >= 2), None),
        remat_policy=mcfg.get("remat_policy"), memory=_memory(compiled), flops=flops,
        bytes_accessed=bytes_accessed, model_flops=model_flops, collectives=summary,
        estimate=roofline(chip, flops=flops, bytes_accessed=bytes_accessed, ici_bytes=ici,
                          model_flops=model_flops, num_chips=len(devices)),
        replicated=replicated_parameters(run.abstract_state.params,
                                         run.state_shardings.params, mesh,
                                         replicated_threshold),
        compile_seconds=seconds, notes=notes, hlo_text=text)
    if check:
        check_report(report)
    return report


def check_report(report: CompileReport) -> None:
    """Raises the report's first failure: a replicated large parameter, or no fit."""
    if report.replicated:
        total = sum(b for _, b in report.replicated)
        names = ", ".join(f"{p} ({b / 2**20:.1f} MiB)" for p, b in report.replicated[:4])
        more = f" and {len(report.replicated) - 4} more" if len(report.replicated) > 4 else ""
        raise ReplicatedParameterError(
            f"{len(report.replicated)} parameter(s) of {total / 2**20:.1f} MiB are replicated "
            f"on every chip although the mesh has fsdp={report.mesh['fsdp']}, "
            f"tensor={report.mesh['tensor']}: {names}{more}",
            hint="Give them logical axis names that the sharding rules map to fsdp/tensor, or "
                 "remove the config.sharding_rules entry that maps their axes to None.")
    if not report.fits:
        over = report.memory["total"] - report.chip.hbm_bytes
        raise DoesNotFitError(
            f"{report.model} does not fit on {report.topology}: it needs "
            f"{report.memory['total'] / 2**30:.2f} GiB per chip, "
            f"{over / 2**30:.2f} GiB more than the {report.chip.hbm_bytes / 2**30:.0f} GiB HBM "
            f"of a TPU {report.chip.name} (arguments {report.memory['argument'] / 2**30:.2f} "
            f"GiB, temp {report.memory['temp'] / 2**30:.2f} GiB).",
            hint=f"To fit, {_fit_hint(report, report.memory['temp'] > report.memory['argument'])}.")


def summary_row(report: CompileReport) -> Mapping[str, Any]:
    """One row of the README's scale table."""
    e = report.estimate
    return {"model": report.model, "params_B": round(report.num_params / 1e9, 2),
            "topology": report.topology, "mesh": report.mesh, "remat": report.remat_policy,
            "per_device_batch": report.per_device_batch, "seq_len": report.seq_len,
            "hbm_GiB": round(report.memory["total"] / 2**30, 2),
            "hbm_pct": round(100 * report.memory["total"] / report.chip.hbm_bytes),
            "step_ms": round(e["step_s"] * 1e3, 1),
            "mfu": None if e["mfu"] is None else round(100 * e["mfu"], 1)}
