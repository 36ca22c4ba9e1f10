"""Ahead-of-time compilation of a run's train step for named TPU topologies.

``jaxmm.compile.compile_run(config, "v5e:4x4")`` (and ``jaxmm compile``) builds the
run exactly as training does, on the devices libtpu describes for that slice,
compiles its step without any TPU, and reports memory per chip against HBM,
FLOPs, bytes accessed, collectives, and a roofline step time and MFU. Needs
``jax[tpu]`` (libtpu) in the environment; see :mod:`jaxmm.compile.aot`.
"""

from jaxmm.compile.aot import (
    ASSUMPTIONS,
    REPLICATED_PARAM_BYTES,
    CompileReport,
    DoesNotFitError,
    ReplicatedParameterError,
    check_report,
    compile_run,
    replicated_parameters,
    roofline,
    summary_row,
    tpu_topology,
)
from jaxmm.compile.chips import CHIPS, Chip, chip_for_topology
from jaxmm.compile.hlo import COLLECTIVE_KINDS, Collective, collectives, summarize

__all__ = ["ASSUMPTIONS", "CHIPS", "COLLECTIVE_KINDS", "REPLICATED_PARAM_BYTES", "Chip",
           "Collective", "CompileReport", "DoesNotFitError", "ReplicatedParameterError",
           "check_report", "chip_for_topology", "collectives", "compile_run",
           "replicated_parameters", "roofline", "summarize", "summary_row", "tpu_topology"]
