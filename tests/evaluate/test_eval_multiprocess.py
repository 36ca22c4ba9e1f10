"""Evaluation across two processes (jax.distributed on localhost): each process's rows
come back from the mesh in its own order, every process gathers all rows (numbers
and strings), and ``jaxmm eval`` on two processes equals one process."""

import json
import socket
import subprocess
import sys
import textwrap

import pytest

from jaxmm.train import run
from tests.train.helpers import (
    HANG_GUARD_S,
    PEER_GUARD_S,
    ROOT,
    cpu_env,
    jaxmm_cmd,
    run_cli,
    tiny_config,
    write_config,
)

WORKER = textwrap.dedent("""
    import sys
    import jax
    import numpy as np
    jax.distributed.initialize(coordinator_address=sys.argv[1], num_processes=2,
                               process_id=int(sys.argv[2]), initialization_timeout=int(sys.argv[3]))
    from jaxmm.data.device import host_local_rows, make_global_batch
    from jaxmm.evaluate.evaluators.base import gather_processes
    from jaxmm.sharding import make_mesh

    p = jax.process_index()
    mesh = make_mesh(data=2, fsdp=2)
    local = {"x": np.arange(6, dtype=np.float32).reshape(3, 2) + 100 * p,
             "name": np.array([f"p{p}-r{i}-ü".encode() for i in range(3)], object)}
    batch = make_global_batch({"x": np.concatenate([local["x"]] * 2)}, mesh)
    doubled = jax.jit(lambda b: {"y": 2 * b["x"]})(batch)["y"]
    rows = host_local_rows(doubled, mesh)  # sharded over both processes
    assert np.array_equal(rows, 2 * np.concatenate([local["x"]] * 2)), rows
    replicated = jax.jit(lambda a: a, out_shardings=jax.sharding.NamedSharding(
        mesh, jax.sharding.PartitionSpec()))(doubled)
    assert np.array_equal(host_local_rows(replicated, mesh), rows)
    every = gather_processes({"x": local["x"], "name": local["name"]})
    assert every["x"].tolist() == [[0, 1], [2, 3], [4, 5], [100, 101], [102, 103], [104, 105]]
    assert every["name"].tolist() == [f"p{q}-r{i}-ü" for q in range(2) for i in range(3)]
    print("ok", p)
""")


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _two_processes(make_cmd, timeout=HANG_GUARD_S):
    port = _free_port()
    procs = [subprocess.Popen(make_cmd(f"127.0.0.1:{port}", i), cwd=ROOT, env=cpu_env(2),
                              stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
             for i in range(2)]
    outs = []
    try:
        for p in procs:
            outs.append(p.communicate(timeout=timeout))
    finally:
        for p in procs:
            p.kill()
    for p, (_, err) in zip(procs, outs):
        assert p.returncode == 0, err[-3000:]
    return [out for out, _ in outs]


def _eval_one_and_two_processes(tmp_path, task, overrides, name):
    """Trains ``overrides`` briefly, then ``jaxmm eval --evaluator name`` on one process
    (4 devices) and on two (2 devices each); returns ``(one's metrics, [each of two's])``."""
    workdir = str(tmp_path / "run")
    run(tiny_config(task, overrides), workdir)
    cfg = write_config(tmp_path / "cfg.py", task, overrides)
    command = ("eval", "--config", cfg, "--workdir", workdir, "--evaluator", name)
    one = run_cli(*command, devices=4)
    assert one.returncode == 0, one.stderr[-3000:]
    outs = _two_processes(lambda addr, i: jaxmm_cmd(
        *command, f"--config.distributed.coordinator_address={addr}",
        "--config.distributed.num_processes=2", f"--config.distributed.process_id={i}",
        f"--config.distributed.timeout_s={PEER_GUARD_S}"))
    # every process computes the metrics over all rows (after gloo's connection lines)
    return (json.loads(one.stdout)["metrics"],
            [json.loads(out[out.index("{\n"):])["metrics"] for out in outs])


def test_rows_and_strings_gather_across_processes():
    outs = _two_processes(lambda addr, i: [sys.executable, "-c", WORKER, addr, str(i),
                                                     str(PEER_GUARD_S)])
    assert [o.strip().splitlines()[-1] for o in outs] == ["ok 0", "ok 1"]  # after gloo's lines


@pytest.mark.slow
def test_eval_on_two_processes_equals_one(tmp_path):
    overrides = {"model.name": "test_tiny_dual_encoder", "num_steps": 2,
                 "checkpoint.export_params": True,
                 "eval.evaluators.retrieval": {"type": "retrieval", "ks": (1, 5),
                                               "num_batches": 3, "batch_size": 8}}
    want, got = _eval_one_and_two_processes(tmp_path, "contrastive", overrides, "retrieval")
    assert want["retrieval/num_images"] == 24
    assert got == [want, want]


@pytest.mark.slow
@pytest.mark.heavy
def test_captioning_on_two_processes_equals_one(tmp_path):
    """Generation across processes: encoder states are replicated for jaxmm.generate,
    each process keeps its rows, and references (decoded input_ids) are gathered."""
    from jaxmm.data.tokenizers import train_tokenizer

    words = [f"w{i}" for i in range(120)]
    (tmp_path / "corpus.txt").write_text("\n".join(
        " ".join(words[(7 * j + k) % 120] for k in range(5)) for j in range(200)))
    tok = train_tokenizer("wordpiece", str(tmp_path / "corpus.txt"), 96, min_frequency=1,
                          out_dir=str(tmp_path / "tok"))
    assert tok.vocab_size >= 64  # the synthetic captions use ids below the model's vocabulary
    tower = {"num_layers": 1, "d_model": 32, "num_heads": 2, "mlp_dim": 64}
    overrides = {
        "model.name": "captioner", "tokenizer": str(tmp_path / "tok"), "num_steps": 20,
        "model.config": {"encoder": "vit", "encoder_config": {**tower, "image_size": 16,
                                                              "patch_size": 8},
                         "decoder": {**tower, "vocab_size": tok.vocab_size,
                                     "max_position_embeddings": 16, "bos_token_id": 1,
                                     "eos_token_id": 2, "pad_token_id": 0}},
        "eval.evaluators.captions": {"type": "captioning", "max_new_tokens": 6,
                                     "num_batches": 2, "batch_size": 8}}
    want, got = _eval_one_and_two_processes(tmp_path, "captioning", overrides, "captions")
    assert want["captions/BLEU-1"] > 0  # it says words of the references
    assert got == [want, want]
