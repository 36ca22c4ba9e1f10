"""``jaxmm compile --config configs/X.py[:arg] --topology v5e:4x4 [--config.a.b=v ...]``.

Compiles the run's real train step for a TPU slice without the hardware (needs
libtpu: ``pip install "jax[tpu]"`` in its own environment, or ``make tpu-venv``)
and prints memory per chip against HBM, FLOPs, bytes accessed, collectives and a
roofline step time and MFU (:mod:`jaxmm.compile`). Exit status 0 when the step
fits; 2 with one line naming the shortfall and the fix when it does not, or when
a large parameter is replicated on a mesh that could shard it.
"""

from __future__ import annotations

import argparse
import json
import os

from jaxmm.cli.failures import command
from jaxmm.config import parse_override_args


@command("jaxmm compile")
def main(argv: list[str]) -> int:
    overrides, rest = parse_override_args(argv)
    parser = argparse.ArgumentParser(
        prog="jaxmm compile",
        description="Compile a run's train step for a named TPU topology (no TPU needed) and "
                    "report memory, FLOPs, collectives and an estimated step time and MFU.",
        epilog="Override any config key with --config.KEY=VALUE, e.g. --config.mesh.fsdp=16 "
               "--config.mesh.data=1 --config.model.config.remat_policy=full.",
    )
    parser.add_argument("--config", required=True, help="path/to/config.py[:arg]")
    parser.add_argument("--topology", required=True,
                        help="TPU slice, GEN:AxB[xC]: v4:2x2x1, v5e:4x4, v5p:2x2x2, v6e:8x8")
    parser.add_argument("--per-device-batch", type=int, default=None,
                        help="set batch_size to this times the data-parallel size (data x fsdp)")
    parser.add_argument("--replicated-threshold-mib", type=float, default=None,
                        help="fail when a parameter this large is replicated although the mesh "
                             "has fsdp or tensor > 1 (default 4 MiB)")
    parser.add_argument("--json", default=None, help="also write the report to this JSON file")
    parser.add_argument("--hlo", default=None, help="write the compiled HLO text to this file")
    parser.add_argument("--no-check", action="store_true",
                        help="print the report even when the step does not fit")
    args = parser.parse_args(rest)
    os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
    # Compiling needs no TPU, so several compiles (and a TPU job) may share libtpu.
    os.environ.setdefault("ALLOW_MULTIPLE_LIBTPU_LOAD", "1")

    from jaxmm import compile as aot
    from jaxmm.sharding import make_mesh  # noqa: F401 - fail early on a broken install
    from jaxmm.train.run_config import load_run_config, resolve_config

    config = resolve_config(load_run_config(args.config, overrides))
    if args.per_device_batch:
        devices = aot.tpu_topology(args.topology)
        from jaxmm.sharding import mesh_shape

        data, fsdp, _ = mesh_shape(**config.mesh.to_dict(), num_devices=len(devices))
        config.batch_size = args.per_device_batch * data * fsdp * config.grad_accum_steps
    threshold = (aot.REPLICATED_PARAM_BYTES if args.replicated_threshold_mib is None
                 else int(args.replicated_threshold_mib * 2**20))
    report = aot.compile_run(config, args.topology, replicated_threshold=threshold, check=False)
    print(report.format())
    if args.json:
        with open(args.json, "w") as f:
            json.dump({**report.to_dict(), "row": aot.summary_row(report)}, f, indent=1)
    if args.hlo:
        with open(args.hlo, "w") as f:
            f.write(report.hlo_text)
    if not args.no_check:
        aot.check_report(report)
    return 0
