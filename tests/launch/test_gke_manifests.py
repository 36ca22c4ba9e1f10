"""launch/gke/*.yaml: JobSet structure, accelerator resources and node selectors, and
the command each pod runs: a real `jaxmm train` invocation whose config and
overrides load, and whose jax.distributed arguments (from the environment GKE
gives each pod) name the same coordinator, process count and distinct ids."""

import os
import shlex

import pytest
import yaml

from jaxmm.config import parse_override_args
from jaxmm.train import distributed
from jaxmm.train.run_config import load_run_config
from tests.train.helpers import ROOT

GKE = os.path.join(ROOT, "launch", "gke")
# Chips per host of the GKE TPU machine types (v5e podslice hosts: 4 chips; v4: 4).
TOPOLOGY_CHIPS = {"2x2": 4, "2x4": 8, "4x4": 16, "4x8": 32, "2x2x2": 8, "2x2x4": 16}


def _load(name):
    with open(os.path.join(GKE, name)) as f:
        docs = [d for d in yaml.safe_load_all(f) if d]
    assert len(docs) == 1
    return docs[0]


def _pod(manifest):
    assert manifest["apiVersion"] == "jobset.x-k8s.io/v1alpha2"
    assert manifest["kind"] == "JobSet"
    (job,) = manifest["spec"]["replicatedJobs"]
    spec = job["template"]["spec"]
    assert spec["parallelism"] == spec["completions"] >= 2
    assert spec["template"]["spec"]["restartPolicy"] == "Never"
    (container,) = spec["template"]["spec"]["containers"]
    return job, spec, spec["template"]["spec"], container


def _train_argv(container, env):
    """The `python3 -m jaxmm train ...` argv of the container's script, with ``$VAR``
    expanded from ``env`` (as the pod's shell does)."""
    assert container["command"][:2] == ["bash", "-c"]
    script = container["command"][2]
    (line,) = [ln for ln in script.splitlines() if "-m jaxmm train" in ln]
    for key, value in env.items():
        line = line.replace(f"${key}", value)
    argv = shlex.split(line)
    assert argv[:5] == ["exec", "python3", "-m", "jaxmm", "train"]
    assert "set -eu" in script and "git clone" in script and "pip install" in script
    return argv[5:]


def _check_invocation(args):
    overrides, rest = parse_override_args(args)
    opts = dict(zip(rest[::2], rest[1::2]))
    assert set(opts) == {"--config", "--workdir"} and len(rest) == 4
    assert opts["--workdir"].startswith("gs://")
    config_file = opts["--config"].split(":")[0]
    assert os.path.isfile(os.path.join(ROOT, config_file))
    config = load_run_config(os.path.join(ROOT, opts["--config"]), overrides)
    return config


def test_tpu_jobset():
    manifest = _load("tpu_jobset.yaml")
    job, spec, pod, container = _pod(manifest)
    selectors = pod["nodeSelector"]
    assert selectors["cloud.google.com/gke-tpu-accelerator"].startswith("tpu-")
    topology = selectors["cloud.google.com/gke-tpu-topology"]
    chips_per_host = container["resources"]["limits"]["google.com/tpu"]
    assert spec["parallelism"] * chips_per_host == TOPOLOGY_CHIPS[topology]
    assert manifest["metadata"]["annotations"][
        "alpha.jobset.sigs.k8s.io/exclusive-topology"] == "cloud.google.com/gke-nodepool"
    assert {p["containerPort"] for p in container["ports"]} >= {8471, 8482}
    assert "'.[tpu]'" in container["command"][2]

    # Each pod: GKE's TPU env (hostnames of the JobSet's pods, its worker id).
    n, name = spec["parallelism"], manifest["metadata"]["name"]
    hosts = ",".join(f"{name}-{job['name']}-0-{i}.{name}" for i in range(n))
    resolved = []
    for i in range(n):
        env = {"TPU_WORKER_HOSTNAMES": hosts, "TPU_WORKER_ID": str(i)}
        config = _check_invocation(_train_argv(container, env))
        assert config.distributed.initialize == "auto"
        where, kwargs = distributed.resolve(config.distributed, env)
        assert where == "tpu-env"
        resolved.append(kwargs)
    assert {k["coordinator_address"] for k in resolved} == {f"{name}-workers-0-0.{name}:8482"}
    assert [k["num_processes"] for k in resolved] == [n] * n
    assert [k["process_id"] for k in resolved] == list(range(n))


def test_gpu_jobset():
    manifest = _load("gpu_jobset.yaml")
    job, spec, pod, container = _pod(manifest)
    assert pod["nodeSelector"]["cloud.google.com/gke-accelerator"].startswith("nvidia-")
    gpus = container["resources"]["limits"]["nvidia.com/gpu"]
    assert gpus == 8
    assert manifest["spec"]["network"]["enableDNSHostnames"] is True
    env = {e["name"]: e for e in container["env"]}
    assert env["JOB_COMPLETION_INDEX"]["valueFrom"]["fieldRef"]["fieldPath"] == (
        "metadata.annotations['batch.kubernetes.io/job-completion-index']")
    coordinator = env["JAX_COORDINATOR_ADDRESS"]["value"]
    name = manifest["metadata"]["name"]
    host, port = coordinator.rsplit(":", 1)
    # Pod 0 of the JobSet through its headless service: <jobset>-<job>-0-0.<jobset>.
    assert host == f"{name}-{job['name']}-0-0.{name}"
    assert int(port) in {p["containerPort"] for p in container["ports"]}
    assert "'.[cuda12]'" in container["command"][2]

    n = spec["parallelism"]
    ids = []
    for i in range(n):
        pod_env = {"JAX_COORDINATOR_ADDRESS": coordinator, "JOB_COMPLETION_INDEX": str(i)}
        config = _check_invocation(_train_argv(container, pod_env))
        where, kwargs = distributed.resolve(config.distributed, pod_env)
        assert where == "JAX_COORDINATOR_ADDRESS"
        assert kwargs["num_processes"] == n
        assert "local_device_ids" not in kwargs  # one process drives all 8 GPUs of its node
        ids.append(kwargs["process_id"])
    assert ids == list(range(n))


@pytest.mark.parametrize("name", ["tpu_jobset.yaml", "gpu_jobset.yaml"])
def test_manifests_train_the_same_run(name):
    """Both run the same config into a bucket workdir (only the hardware differs)."""
    _, _, _, container = _pod(_load(name))
    args = _train_argv(container, {"JOB_COMPLETION_INDEX": "0"})
    assert args[:4] == ["--config", "configs/lm_gpt.py:small", "--workdir",
                        "gs://YOUR_BUCKET/runs/gpt-small"]
