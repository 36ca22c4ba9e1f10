"""jaxmm.compile: ahead-of-time compilation for TPU topologies, its HLO collective
parser, the replicated-parameter check, the fit check and the roofline.

Tests that compile for a TPU topology need libtpu (``jax[tpu]``); the test
environment does not have it (it must not change the CPU tests), so they skip
there and ``make test`` runs this file again in ``.venv-tpu`` (the test
environment plus libtpu), where they run.
"""

import math
import subprocess
import sys

import jax
import numpy as np
import pytest
from jax.sharding import NamedSharding, PartitionSpec

from jaxmm import sharding
from jaxmm.compile import (
    CHIPS,
    CompileReport,
    DoesNotFitError,
    chip_for_topology,
    collectives,
    replicated_parameters,
    roofline,
    summarize,
)
from jaxmm.compile.aot import check_report
from jaxmm.config import ConfigError

try:
    import libtpu  # noqa: F401

    HAVE_LIBTPU = True
except ImportError:
    HAVE_LIBTPU = False

needs_libtpu = pytest.mark.skipif(
    not HAVE_LIBTPU,
    reason="libtpu (jax[tpu]) is not installed in this environment; `make test` runs this "
           "file in .venv-tpu (`make tpu-venv`), where it is")


# -- roofline arithmetic (by hand) ---------------------------------------------------------

def test_roofline_matches_hand_arithmetic():
    v5e = CHIPS["v5e"]
    # 1.97e12 FLOPs at 197 TFLOP/s = 10 ms; 4.095e9 bytes at 819 GB/s = 5 ms;
    # 1.8e8 ICI bytes at 2 x 45 GB/s = 2 ms. Step = max(10, 5) + 2 = 12 ms; bound = 10 ms.
    est = roofline(v5e, flops=1.97e12, bytes_accessed=4.095e9, ici_bytes=1.8e8,
                   model_flops=4 * 1.5e12, num_chips=4)
    assert est["compute_s"] == pytest.approx(0.010)
    assert est["hbm_s"] == pytest.approx(0.005)
    assert est["collectives_s"] == pytest.approx(0.002)
    assert est["step_s"] == pytest.approx(0.012)
    assert est["step_bound_s"] == pytest.approx(0.010)
    # MFU = 6e12 / (4 chips x 197e12 x 12 ms) = 0.6345...
    assert est["mfu"] == pytest.approx(6e12 / (4 * 197e12 * 0.012))
    assert est["mfu_bound"] == pytest.approx(6e12 / (4 * 197e12 * 0.010))
    # HBM-bound case: memory time dominates compute.
    est = roofline(v5e, flops=1.97e11, bytes_accessed=8.19e9, ici_bytes=0.0,
                   model_flops=None, num_chips=1)
    assert est["step_s"] == pytest.approx(0.010) and est["mfu"] is None
    # XLA's count below the model's share (loops counted once): the model's share is used.
    est = roofline(v5e, flops=1e11, bytes_accessed=0.0, ici_bytes=0.0,
                   model_flops=4 * 1.97e12, num_chips=4)
    assert est["compute_s"] == pytest.approx(0.010) and est["mfu"] == pytest.approx(1.0)


def test_chip_table_and_topology_names():
    assert chip_for_topology("v5e:4x4").hbm_bytes == 16 * 2**30
    assert chip_for_topology("v5p:2x2x2").bf16_flops == 459e12
    assert chip_for_topology("v6e:8x8").collective_bandwidth == 2 * 9e10
    with pytest.raises(ConfigError, match="Unknown TPU generation 'v9'"):
        chip_for_topology("v9:2x2")


# -- the HLO parser on real compiled modules -----------------------------------------------

def _shard_map_module(mesh):
    """A step with one collective of each kind over the 8-device axis 'fsdp'."""
    from jax import lax

    spec = PartitionSpec("fsdp")

    def body(x):  # x: this device's (16, 64) f32 block of a (128, 64) array
        g = lax.all_gather(x, "fsdp", tiled=True)  # (128, 64)
        r = lax.psum(x, "fsdp")  # (16, 64)
        s = lax.psum_scatter(g, "fsdp", tiled=True)  # (16, 64) of a (128, 64) operand
        a = lax.all_to_all(x, "fsdp", 0, 0, tiled=True)  # (16, 64)
        p = lax.ppermute(x, "fsdp", [(i, (i + 1) % 8) for i in range(8)])
        return g[:16] + r + s + a + p

    f = jax.jit(jax.shard_map(body, mesh=mesh, in_specs=spec, out_specs=spec))
    x = jax.ShapeDtypeStruct((128, 64), np.float32, sharding=NamedSharding(mesh, spec))
    return f.lower(x).compile().as_text()


def test_collective_parser_on_a_compiled_cpu_module():
    mesh = sharding.make_mesh(data=1, fsdp=8, tensor=1)
    found = collectives(_shard_map_module(mesh))
    by_kind = summarize(found)
    full, block = 128 * 64 * 4, 16 * 64 * 4  # bytes of the whole array, of one block
    assert by_kind["all-gather"]["count"] == 1
    assert by_kind["all-gather"]["array_bytes"] == full
    assert by_kind["all-gather"]["ici_bytes"] == pytest.approx(7 / 8 * full)
    assert by_kind["all-reduce"]["array_bytes"] == block
    assert by_kind["all-reduce"]["ici_bytes"] == pytest.approx(2 * 7 / 8 * block)
    assert by_kind["reduce-scatter"]["array_bytes"] == full  # the full operand
    assert by_kind["all-to-all"]["array_bytes"] == block
    assert by_kind["collective-permute"]["ici_bytes"] == block
    assert {c.group_size for c in found if c.kind != "collective-permute"} == {8}


def test_collective_parser_counts_loop_bodies_by_trip_count():
    text = "\n".join([
        "HloModule m",
        "%body (p: (s32[], f32[8])) -> (s32[], f32[8]) {",
        "  %p = (s32[], f32[8]) parameter(0)",
        "  %x = f32[8] get-tuple-element(%p), index=1",
        "  %all-reduce.1 = f32[8]{0} all-reduce(%x), replica_groups=[2,4]<=[8], to_apply=%add",
        "  ROOT %t = (s32[], f32[8]) tuple(%i, %all-reduce.1)",
        "}",
        "ENTRY %main (a: f32[8]) -> f32[8] {",
        "  %w = (s32[], f32[8]) while(%init), condition=%cond, body=%body, "
        'backend_config={"known_trip_count":{"n":"12"}}',
        "  %all-gather-start = (f32[2], f32[8]) all-gather-start(%a), "
        "replica_groups={{0,1,2,3}}, dimensions={0}",
        "  ROOT %all-gather-done = f32[8] all-gather-done(%all-gather-start)",
        "}"])
    found = {c.kind: c for c in collectives(text)}
    assert found["all-reduce"].count == 12 and found["all-reduce"].group_size == 4
    assert summarize(list(found.values()))["all-reduce"]["array_bytes"] == 12 * 32
    assert found["all-gather"].array_bytes == 32 and found["all-gather"].group_size == 4
    assert len(found) == 2  # the -done op is not counted again


# -- the replicated-parameter check and the fit check (no TPU needed) ----------------------

def test_replicated_parameter_check_flags_large_replicated_leaves():
    mesh = sharding.make_mesh(data=1, fsdp=8, tensor=1)
    params = {"big": jax.ShapeDtypeStruct((1024, 2048), np.float32),  # 8 MiB
              "sharded": jax.ShapeDtypeStruct((1024, 2048), np.float32),
              "small": jax.ShapeDtypeStruct((64, 64), np.float32)}
    repl = NamedSharding(mesh, PartitionSpec())
    shards = {"big": repl, "sharded": NamedSharding(mesh, PartitionSpec("fsdp")),
              "small": repl}
    assert replicated_parameters(params, shards, mesh) == [("big", 8 << 20)]
    # Pure data parallelism replicates by design: nothing to flag.
    dp = sharding.make_mesh(data=8, fsdp=1, tensor=1)
    assert replicated_parameters(params, {k: NamedSharding(dp, PartitionSpec())
                                          for k in params}, dp) == []


def _report(total_gib: float, **kw) -> CompileReport:
    mem = {"argument": int(6 * 2**30), "output": 0, "alias": 0, "code": 0,
           "temp": int((total_gib - 6) * 2**30)}
    mem["total"] = int(total_gib * 2**30)
    base = dict(topology="v5e:2x2", chip=CHIPS["v5e"], num_chips=4,
                mesh={"data": 2, "fsdp": 2, "tensor": 1}, model="gpt:x", num_params=10**9,
                batch_size=32, per_device_batch=8.0, seq_len=1024, remat_policy="dots",
                memory=mem, flops=1.0, bytes_accessed=1.0, model_flops=None,
                collectives={}, estimate={}, replicated=[], compile_seconds=1.0)
    return CompileReport(**{**base, **kw})


def test_fit_check_says_by_how_much_and_what_helps():
    check_report(_report(15.0))  # fits: no error
    with pytest.raises(DoesNotFitError) as info:
        check_report(_report(20.5))
    msg = str(info.value)
    assert "20.50 GiB per chip, 4.50 GiB more than the 16 GiB HBM" in msg
    assert "--config.mesh.fsdp=4" in msg and "about 3.00 GiB then" in msg
    assert "remat_policy=dots_no_batch or full" in msg and "--config.batch_size=16" in msg
    assert "\n" not in msg


def test_out_of_memory_message_of_xla_tpu_is_summarised():
    from jaxmm.compile.aot import oom_summary

    # The message XLA:TPU gave compiling GPT-2 XL (remat dots, 8 x 1024 tokens per chip).
    message = ("RESOURCE_EXHAUSTED: Ran out of memory on HBM, the total memory required for "
               "HLO temporaries (54.04G) exceeds available HBM (15.75G).")
    what, activations = oom_summary(message, int(1.09 * 2**30))
    assert activations
    assert what == ("its temporaries (activations) alone need 54.04 GiB per chip of the "
                    "15.75 GiB HBM XLA can use, 38.29 GiB too many, besides 1.09 GiB of "
                    "train state")
    what, activations = oom_summary("Exceeded hbm capacity by 512.00M", 0)
    assert not activations and "0.50 GiB per chip more" in what


# -- compiling for a TPU topology (libtpu) -------------------------------------------------

_TINY = ["--config.mesh.data=1", "--config.mesh.fsdp=4"]


@needs_libtpu
def test_collective_parser_on_a_compiled_tpu_module():
    from jaxmm.compile import tpu_topology

    mesh = sharding.make_mesh(data=1, fsdp=4, tensor=1, devices=tpu_topology("v5e:2x2"))
    rows = NamedSharding(mesh, PartitionSpec("fsdp"))
    x = jax.ShapeDtypeStruct((2048, 1024), jax.numpy.bfloat16, sharding=rows)
    f = jax.jit(lambda x: x * 2, out_shardings=NamedSharding(mesh, PartitionSpec()))
    found = collectives(f.lower(x).compile().as_text())
    gathers = [c for c in found if c.kind == "all-gather"]
    assert len(gathers) == 1, found
    assert gathers[0].array_bytes == 2048 * 1024 * 2 and gathers[0].group_size == 4
    assert gathers[0].ici_bytes == pytest.approx(3 / 4 * 2048 * 1024 * 2)


@needs_libtpu
def test_compile_tiny_gpt_for_v5e_2x2():
    from jaxmm.compile import compile_run
    from jaxmm.train.run_config import load_run_config

    config = load_run_config("configs/lm_gpt.py:tiny,batch=8,seq_len=64", _TINY)
    report = compile_run(config, "v5e:2x2")
    assert report.num_chips == 4 and report.mesh == {"data": 1, "fsdp": 4, "tensor": 1}
    assert report.per_device_batch == 2 and report.seq_len == 64
    mem = report.memory
    assert 0 < mem["total"] < report.chip.hbm_bytes and report.fits
    # The donated state is aliased: params (f32) + Adam moments, a quarter per chip.
    state_bytes = 3 * report.num_params * 4 / 4
    assert state_bytes <= mem["argument"] < 2 * state_bytes
    assert mem["alias"] >= state_bytes
    # XLA's per-chip FLOPs (with remat recompute) cover a quarter of the model FLOPs.
    assert report.model_flops > 0
    assert report.flops * 4 >= 0.9 * report.model_flops
    # FSDP: the step gathers each weight matrix (bf16) and reduce-scatters its gradient.
    wte = 50257 * 64 * 2
    assert any(c.kind == "all-gather" and c.array_bytes == wte and c.group_size == 4
               for c in collectives(report.hlo_text))
    assert report.collectives["reduce-scatter"]["count"] >= 1
    e = report.estimate
    assert e["step_s"] >= e["step_bound_s"] > 0 and 0 < e["mfu"] <= e["mfu_bound"] < 1
    assert "memory per chip" in report.format()


@needs_libtpu
@pytest.mark.slow
def test_cli_fails_on_a_replicated_embedding(tmp_path):
    # Mapping the embedding's logical axes to no mesh axis replicates the 12.9 MB token
    # embedding on every chip of an fsdp=4 mesh: the report must fail, in one line.
    args = [sys.executable, "-m", "jaxmm", "compile", "--config",
            "configs/lm_gpt.py:tiny,batch=8,seq_len=64", "--topology", "v5e:2x2",
            "--config.sharding_rules=(('vocab', None), ('embed', None))",
            "--json", str(tmp_path / "r.json"), *_TINY]
    out = subprocess.run(args, capture_output=True, text=True, timeout=600)
    assert out.returncode == 2, out.stderr[-2000:]
    errors = [line for line in out.stderr.splitlines() if "jaxmm compile: error:" in line]
    assert len(errors) == 1, out.stderr[-2000:]
    assert "replicated on every chip" in errors[0]
    assert "token_embedding/embedding" in errors[0]
    assert "memory per chip" in out.stdout  # the report is printed before the failure
    assert math.isfinite(float((tmp_path / "r.json").stat().st_size))
