"""Which cluster a process is in, and the jax.distributed arguments it gets there.

Environments: a multi-host TPU VM (metadata server: a real local HTTP server, and a
fake fetch), TPU on GKE (TPU_WORKER_HOSTNAMES / TPU_WORKER_ID), multislice, SLURM,
Open MPI, a GKE GPU JobSet and a plain machine. The TPU and SLURM results are
checked against JAX's own cluster classes, given the same environment.
"""

import http.server
import threading

import pytest
from jax._src import clusters
from jax._src.clusters import cloud_tpu_cluster

from jaxmm.config import ConfigError
from jaxmm.train import distributed
from jaxmm.train.run_config import default_config

ENDPOINTS_OLD = "w-0:0:10.0.0.2,w-1:1:10.0.0.3,w-2:2:10.0.0.4,w-3:3:10.0.0.5"


def cfg(**kw):
    c = default_config().distributed
    c.update(kw)
    return c


def fake_fetch(attributes):
    calls = []

    def fetch(key):
        calls.append(key)
        return attributes.get(key)

    fetch.calls = calls
    return fetch


@pytest.fixture(autouse=True)
def _fresh_metadata_cache():
    distributed._fetch_metadata.cache_clear()
    yield
    distributed._fetch_metadata.cache_clear()


@pytest.fixture
def metadata_server():
    """A local GCE metadata server; yields (host:port, attributes dict, request log)."""
    attributes, seen = {}, []

    class Handler(http.server.BaseHTTPRequestHandler):
        def do_GET(self):
            prefix = "/computeMetadata/v1/instance/attributes/"
            key = self.path[len(prefix):] if self.path.startswith(prefix) else None
            seen.append(key)
            if self.headers.get("Metadata-Flavor") != "Google":
                self.send_error(403)
            elif key not in attributes:
                self.send_error(404)
            else:
                body = attributes[key].encode()
                self.send_response(200)
                self.send_header("Content-Length", str(len(body)))
                self.end_headers()
                self.wfile.write(body)

        def log_message(self, *args):
            pass

    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), Handler)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        yield f"127.0.0.1:{server.server_address[1]}", attributes, seen
    finally:
        server.shutdown()
        server.server_close()


# -- TPU VM (GCE metadata) -------------------------------------------------------


def test_tpu_vm_slice_from_a_metadata_server(metadata_server):
    host, attributes, seen = metadata_server
    attributes.update({"agent-worker-number": "2", "worker-network-endpoints": ENDPOINTS_OLD,
                       "accelerator-type": "v4-32", "tpu-env": "ACCELERATOR_TYPE: 'v4-32'\n"})
    env = {"GCE_METADATA_IP": host}
    assert distributed.tpu_slice(env) == {
        "source": "tpu-metadata", "coordinator_address": "10.0.0.2:8482",
        "num_processes": 4, "process_id": 2}
    assert distributed.cluster_detected(env) == "tpu-metadata"
    where, kwargs = distributed.resolve(cfg(), env)
    assert where == "tpu-metadata"
    assert kwargs == {"coordinator_address": "10.0.0.2:8482", "num_processes": 4,
                      "process_id": 2, "initialization_timeout": 300}
    # Asked once per attribute (cached), always with the Metadata-Flavor header.
    assert sorted(set(seen)) == sorted(seen)
    # Explicit settings win over the metadata.
    _, kwargs = distributed.resolve(cfg(process_id=0, coordinator_address="h:1"), env)
    assert kwargs["process_id"] == 0 and kwargs["coordinator_address"] == "h:1"
    assert kwargs["num_processes"] == 4


def test_single_host_tpu_vm_and_unreachable_metadata_start_nothing(metadata_server):
    host, attributes, _ = metadata_server
    attributes.update({"agent-worker-number": "0", "worker-network-endpoints": "10.0.0.2"})
    assert distributed.tpu_slice({"GCE_METADATA_IP": host}) is None
    assert distributed.resolve(cfg(), {"GCE_METADATA_IP": host}) == (None, None)
    attributes.clear()  # a GCE VM that is not a TPU worker: 404
    distributed._fetch_metadata.cache_clear()
    assert distributed.tpu_slice({"GCE_METADATA_IP": host}) is None
    # Nothing listening (port 1): connection refused, no slice, no exception.
    assert distributed.tpu_slice({"GCE_METADATA_IP": "127.0.0.1:1"}) is None


def test_no_metadata_probe_off_tpu_vms(monkeypatch):
    def probe(*args):
        raise AssertionError("the metadata server was asked on a non-TPU machine")

    monkeypatch.setattr(distributed, "_fetch_metadata", probe)
    chips = []
    monkeypatch.setattr(distributed, "_tpu_chips", lambda: len(chips))
    assert distributed.cluster_detected({}) is None
    assert distributed.resolve(cfg(), {"PATH": "/usr/bin"}) == (None, None)
    # TPU chips, but JAX's opt-out is set: not asked either.
    chips.append("v4")
    assert distributed.tpu_slice({"TPU_SKIP_MDS_QUERY": "1"}) is None
    # This machine (no TPU): JAX's own PCI check finds no chips.
    monkeypatch.undo()
    assert distributed._tpu_chips() == 0


def test_multislice_from_tpu_env_metadata():
    fetch = fake_fetch({
        "agent-worker-number": "1", "worker-network-endpoints": "t-w-0,t-w-1",
        "tpu-env": "MEGASCALE_NUM_SLICES: '2'\nMEGASCALE_SLICE_ID: '1'\n"
                   "MEGASCALE_COORDINATOR_ADDRESS: '10.1.0.5:8080'\nWORKER_ID: '1'\n"})
    assert distributed.tpu_slice({}, fetch) == {
        "source": "tpu-metadata", "coordinator_address": "10.1.0.5:8482",
        "num_processes": 4, "process_id": 3}


@pytest.mark.parametrize("endpoints, worker", [(ENDPOINTS_OLD, "3"),
                                               ("10.0.0.2,10.0.0.3", "1")])
def test_tpu_vm_matches_jax_gce_tpu_cluster(monkeypatch, endpoints, worker):
    """JAX's GceTpuCluster, given the same metadata, gives the same three values."""
    attributes = {"agent-worker-number": worker, "worker-network-endpoints": endpoints,
                  "tpu-env": ""}
    monkeypatch.setattr(cloud_tpu_cluster, "get_metadata",
                        lambda key: (attributes.get(key, ""), 200))
    monkeypatch.setattr(cloud_tpu_cluster, "running_in_cloud_tpu_vm", True)
    for key in ("MEGASCALE_NUM_SLICES", "MEGASCALE_SLICE_ID", "MEGASCALE_COORDINATOR_ADDRESS",
                "TPU_SKIP_MDS_QUERY", "JAX_COORDINATOR_PORT"):
        monkeypatch.delenv(key, raising=False)
    jax_env = cloud_tpu_cluster.GceTpuCluster
    assert jax_env.is_env_present()
    ours = distributed.tpu_slice({}, fake_fetch(attributes))
    assert ours["num_processes"] == jax_env.get_process_count()
    assert ours["process_id"] == jax_env.get_process_id()
    assert ours["coordinator_address"] == jax_env.get_coordinator_address(1, None)


# -- TPU on GKE ---------------------------------------------------------------


def test_gke_tpu_env_matches_jax_gke_tpu_cluster(monkeypatch):
    env = {"TPU_WORKER_HOSTNAMES": "10.8.0.4,10.8.0.5,10.8.0.6,10.8.0.7",
           "TPU_WORKER_ID": "2", "JAX_COORDINATOR_PORT": "9999"}
    ours = distributed.tpu_slice(env, fake_fetch({}))
    assert ours == {"source": "tpu-env", "coordinator_address": "10.8.0.4:9999",
                    "num_processes": 4, "process_id": 2}
    assert distributed.cluster_detected(env) == "tpu-env"
    monkeypatch.delenv("TPU_PROCESS_ADDRESSES", raising=False)
    # (JAX asks the metadata server for these when they are not in the environment.)
    for key, value in {**env, "MEGASCALE_NUM_SLICES": "1", "MEGASCALE_SLICE_ID": "0",
                       "MEGASCALE_COORDINATOR_ADDRESS": ""}.items():
        monkeypatch.setenv(key, value)
    monkeypatch.setattr(cloud_tpu_cluster, "running_in_cloud_tpu_vm", True)
    jax_env = cloud_tpu_cluster.GkeTpuCluster
    assert jax_env.is_env_present()
    assert (jax_env.get_process_count(), jax_env.get_process_id()) == (4, 2)
    assert jax_env.get_coordinator_address(1, "9999") == ours["coordinator_address"]
    # One host: nothing to start.
    assert distributed.tpu_slice({"TPU_WORKER_HOSTNAMES": "h0", "TPU_WORKER_ID": "0"}) is None
    with pytest.raises(ConfigError, match="process_id"):
        distributed.tpu_slice({"TPU_WORKER_HOSTNAMES": "a,b"})  # no TPU_WORKER_ID


def test_gke_gpu_jobset_env_with_explicit_process():
    """The GPU JobSet (launch/gke/gpu_jobset.yaml) sets JAX_COORDINATOR_ADDRESS and
    passes num_processes / process_id (its completion index) as overrides."""
    env = {"JAX_COORDINATOR_ADDRESS": "jaxmm-gpu-workers-0-0.jaxmm-gpu:1234",
           "JOB_COMPLETION_INDEX": "1", "KUBERNETES_SERVICE_HOST": "10.0.0.1"}
    where, kwargs = distributed.resolve(cfg(num_processes=2, process_id=1), env)
    assert where == "JAX_COORDINATOR_ADDRESS"
    # JAX reads the coordinator from the environment; all GPUs of the pod stay visible.
    assert kwargs == {"num_processes": 2, "process_id": 1, "initialization_timeout": 300}


# -- SLURM and Open MPI GPUs ----------------------------------------------------


SLURM = {"SLURM_JOB_ID": "4242", "SLURM_STEP_NODELIST": "gpu[001-002]", "SLURM_NTASKS": "16",
         "SLURM_PROCID": "11", "SLURM_LOCALID": "3", "SLURM_NODEID": "1",
         "SLURM_NTASKS_PER_NODE": "8", "SLURM_TASKS_PER_NODE": "8(x2)",
         "SLURM_JOB_GPUS": "0,1,2,3,4,5,6,7", "CUDA_VISIBLE_DEVICES": "0,1,2,3,4,5,6,7"}


@pytest.mark.parametrize("update, want", [
    ({}, [3]),  # --ntasks-per-node=8 --gpus-per-node=8: one GPU each
    ({"SLURM_NTASKS_PER_NODE": None, "SLURM_TASKS_PER_NODE": "8(x2)"}, [3]),
    ({"CUDA_VISIBLE_DEVICES": "5"}, [0]),  # --gpus-per-task=1: the one it sees
    ({"SLURM_NTASKS_PER_NODE": "4", "SLURM_TASKS_PER_NODE": "4(x2)"}, [6, 7]),
    ({"SLURM_NTASKS": "2", "SLURM_PROCID": "1", "SLURM_LOCALID": "0",
      "SLURM_NTASKS_PER_NODE": "1", "SLURM_TASKS_PER_NODE": "1(x2)"}, list(range(8))),
    ({"CUDA_VISIBLE_DEVICES": None}, [3]),  # SLURM_JOB_GPUS alone
    ({"CUDA_VISIBLE_DEVICES": None, "SLURM_JOB_GPUS": None}, None),  # CPU job: JAX decides
])
def test_slurm_gpu_assignment(update, want):
    env = {k: v for k, v in {**SLURM, **update}.items() if v is not None}
    assert distributed.cluster_detected(env) == "slurm"
    assert distributed.local_device_ids(env) == want
    where, kwargs = distributed.resolve(cfg(), env)
    assert where == "slurm" and kwargs.get("local_device_ids") == want
    # Coordinator, count and id are JAX's SLURM detection (not set here).
    assert not {"coordinator_address", "num_processes", "process_id"} & set(kwargs)


def test_slurm_matches_jax_and_fixes_its_one_process_per_node_default(monkeypatch):
    for key, value in SLURM.items():
        monkeypatch.setenv(key, value)
    for key in ("JAX_COORDINATOR_ADDRESS", "OMPI_MCA_orte_hnp_uri", "JAX_COORDINATOR_PORT"):
        monkeypatch.delenv(key, raising=False)
    _, kwargs = distributed.resolve(cfg(), dict(SLURM))
    got = clusters.ClusterEnv.auto_detect_unset_distributed_params(
        None, None, None, kwargs["local_device_ids"], None, 1)
    assert got == ("gpu001:" + str(4242 % 4096 + 61440), 16, 11, [3])
    # One task per node with 8 GPUs: JAX alone would use only GPU 0 (MaxText #865).
    for key, value in {"SLURM_NTASKS": "2", "SLURM_PROCID": "1", "SLURM_LOCALID": "0",
                       "SLURM_NTASKS_PER_NODE": "1"}.items():
        monkeypatch.setenv(key, value)
    assert clusters.ClusterEnv.auto_detect_unset_distributed_params(
        None, None, None, None, None, 1)[3] == [0]
    assert distributed.resolve(cfg(), {**SLURM, "SLURM_NTASKS": "2", "SLURM_PROCID": "1",
                                       "SLURM_LOCALID": "0", "SLURM_NTASKS_PER_NODE": "1"}
                               )[1]["local_device_ids"] == list(range(8))


def test_slurm_uneven_gpus_is_one_clear_error():
    env = {**SLURM, "SLURM_NTASKS_PER_NODE": "3", "SLURM_LOCALID": "1"}
    with pytest.raises(ConfigError, match="3 processes on this node but 8 visible GPUs"):
        distributed.resolve(cfg(), env)
    # An explicit mapping is used as given.
    _, kwargs = distributed.resolve(cfg(local_device_ids=(2, 5)), env)
    assert kwargs["local_device_ids"] == [2, 5]


def test_openmpi_gpu_assignment():
    env = {"OMPI_COMM_WORLD_SIZE": "4", "OMPI_COMM_WORLD_RANK": "3",
           "OMPI_COMM_WORLD_LOCAL_RANK": "1", "OMPI_COMM_WORLD_LOCAL_SIZE": "2",
           "CUDA_VISIBLE_DEVICES": "0,1,2,3"}
    where, kwargs = distributed.resolve(cfg(), env)
    assert where == "openmpi" and kwargs["local_device_ids"] == [2, 3]
    assert distributed.cluster_detected({"OMPI_COMM_WORLD_SIZE": "1"}) is None


def test_modes():
    assert distributed.resolve(cfg(initialize="off"), {**SLURM}) == (None, None)
    where, kwargs = distributed.resolve(cfg(initialize="on"), {})
    assert where == "config" and kwargs == {"initialization_timeout": 300}
    with pytest.raises(ConfigError, match="not one of auto, on, off"):
        distributed.resolve(cfg(initialize="maybe"), {})
