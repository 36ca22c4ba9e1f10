"""Stand-ins for the cluster tools the launch scripts call, written onto ``PATH``.

* ``gcloud compute tpus tpu-vm create|describe|scp|ssh``: a simulated TPU VM slice on
  this machine. Each worker is a local process with its own ``$HOME``
  (``$FAKE_TPU_DIR/home-N``) and its own GCE metadata server (a local HTTP server
  giving ``agent-worker-number``, ``worker-network-endpoints``, ``accelerator-type``
  and ``tpu-env``, reached through ``GCE_METADATA_IP`` as on a TPU VM); ``ssh
  --worker=all`` runs the command on every worker at once and waits for all.
  The workers coordinate over jax.distributed on 127.0.0.1 (``JAX_COORDINATOR_PORT``).
* ``srun``: runs its command as ``SLURM_NTASKS`` local tasks with the SLURM
  variables of a one-node job step, forwarding SIGTERM to every task (as srun does).
* ``scontrol``: records its arguments.

Every call is appended to ``$FAKE_TPU_DIR/calls.jsonl`` / ``$FAKE_SLURM_DIR/calls.jsonl``.
"""

from __future__ import annotations

import json
import os
import stat
import sys

GCLOUD = r'''
import http.server, json, os, socket, subprocess, sys, threading

SIM = os.environ["FAKE_TPU_DIR"]
WORKERS = int(os.environ.get("FAKE_TPU_WORKERS", "2"))


def record(kind, **data):
    with open(os.path.join(SIM, "calls.jsonl"), "a") as f:
        f.write(json.dumps({"call": kind, **data}) + "\n")


def free_port():
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def metadata_server(attributes):
    class Handler(http.server.BaseHTTPRequestHandler):
        def do_GET(self):
            key = self.path.rsplit("/", 1)[-1]
            record("metadata", key=key, worker=attributes["agent-worker-number"])
            value = attributes.get(key)
            if self.headers.get("Metadata-Flavor") != "Google" or value is None:
                self.send_error(403 if value is not None else 404)
                return
            body = value.encode()
            self.send_response(200)
            self.send_header("Content-Length", str(len(body)))
            self.end_headers()
            self.wfile.write(body)

        def log_message(self, *args):
            pass

    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), Handler)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    return server.server_address[1]


VALUED = ("zone", "project", "command", "accelerator-type", "version", "format", "worker")


def options(args):
    """--key value / --key=value / --flag -> dict; the rest -> list."""
    opts, rest, i = {}, [], 0
    while i < len(args):
        a = args[i]
        if a.startswith("--"):
            key, eq, value = a[2:].partition("=")
            if not eq and key in VALUED:
                i += 1
                value = args[i]
            opts[key] = value if (eq or key in VALUED) else True
        else:
            rest.append(a)
        i += 1
    return opts, rest


def workers(spec):
    return range(WORKERS) if spec in (None, "all") else [int(spec)]


def home(i):
    path = os.path.join(SIM, f"home-{i}")
    os.makedirs(path, exist_ok=True)
    return path


def main(argv):
    assert argv[:3] == ["compute", "tpus", "tpu-vm"], argv
    verb, opts, rest = argv[3], *options(argv[4:])
    name = rest[0] if verb not in ("scp",) else None
    record(verb, argv=argv)
    created = os.path.join(SIM, "created")
    if verb == "describe":
        if not os.path.exists(created):
            print(f"ERROR: (gcloud.compute.tpus.tpu-vm.describe) NOT_FOUND: {name}",
                  file=sys.stderr)
            return 1
        if "networkEndpoints" in opts.get("format", ""):
            print(";".join(["127.0.0.1"] * WORKERS))
        else:
            print("READY")
        return 0
    if verb == "create":
        with open(created, "w") as f:
            json.dump(opts, f)
        return 0
    if not os.path.exists(created):
        print("ERROR: no such TPU", file=sys.stderr)
        return 1
    if verb == "scp":
        src, dst = rest
        for i in workers(opts.get("worker")):
            if ":" in src:  # from the worker
                subprocess.run(["cp", os.path.join(home(i), src.split(":", 1)[1]), dst],
                               check=True)
            else:
                subprocess.run(["cp", src, os.path.join(home(i), dst.split(":", 1)[1])],
                               check=True)
        return 0
    if verb == "ssh":
        accel = json.load(open(created)).get("accelerator-type", "v4-16")
        endpoints = ",".join(f"{name}-w-{i}:{i}:127.0.0.1" for i in range(WORKERS))
        coordinator_port = str(free_port())
        procs = []
        for i in workers(opts.get("worker")):
            port = metadata_server({
                "agent-worker-number": str(i), "worker-network-endpoints": endpoints,
                "accelerator-type": accel,
                "tpu-env": f"ACCELERATOR_TYPE: '{accel}'\nWORKER_ID: '{i}'\n"})
            env = {k: v for k, v in os.environ.items()
                   if not k.startswith(("FAKE_", "TPU_", "MEGASCALE_", "JAX_COORDINATOR",
                                        "SLURM_", "OMPI_"))}
            env.update(HOME=home(i), GCE_METADATA_IP=f"127.0.0.1:{port}",
                       JAX_COORDINATOR_PORT=coordinator_port)
            procs.append(subprocess.Popen(["bash", "-c", opts["command"]], cwd=home(i),
                                          env=env))
            with open(os.path.join(SIM, f"worker-{i}.pid"), "w") as f:
                f.write(str(procs[-1].pid))
        codes = [p.wait() for p in procs]
        record("ssh-done", codes=codes)
        return next((c for c in codes if c), 0)
    raise SystemExit(f"fake gcloud: unsupported {verb}")


sys.exit(main(sys.argv[1:]))
'''

SRUN = r'''
import json, os, signal, subprocess, sys

SIM = os.environ["FAKE_SLURM_DIR"]
args = sys.argv[1:]
opts = []
while args and args[0].startswith("-"):
    opts.append(args.pop(0))
n = int(os.environ["SLURM_NTASKS"])
with open(os.path.join(SIM, "calls.jsonl"), "a") as f:
    f.write(json.dumps({"call": "srun", "options": opts, "argv": args}) + "\n")
procs = []
for i in range(n):
    env = dict(os.environ, SLURM_PROCID=str(i), SLURM_LOCALID=str(i), SLURM_NODEID="0",
               SLURM_STEP_NODELIST=os.environ.get("SLURM_JOB_NODELIST", "localhost"),
               SLURM_STEP_NUM_TASKS=str(n), SLURM_STEP_TASKS_PER_NODE=str(n))
    procs.append(subprocess.Popen(args, env=env))
with open(os.path.join(SIM, "srun.pid"), "w") as f:
    f.write(str(os.getpid()))


def forward(signum, frame):
    for p in procs:
        if p.poll() is None:
            p.send_signal(signum)


signal.signal(signal.SIGTERM, forward)
codes = [p.wait() for p in procs]
sys.exit(next((c for c in codes if c), 0))
'''

SCONTROL = r'''
import json, os, sys

with open(os.path.join(os.environ["FAKE_SLURM_DIR"], "calls.jsonl"), "a") as f:
    f.write(json.dumps({"call": "scontrol", "argv": sys.argv[1:]}) + "\n")
'''


def install(bin_dir, **scripts: str) -> str:
    """Writes ``name -> python source`` as executables in ``bin_dir``; returns it."""
    os.makedirs(bin_dir, exist_ok=True)
    for name, source in scripts.items():
        path = os.path.join(bin_dir, name)
        with open(path, "w") as f:
            f.write(f"#!{sys.executable}\n{source}")
        os.chmod(path, os.stat(path).st_mode | stat.S_IXUSR | stat.S_IXGRP | stat.S_IXOTH)
    return str(bin_dir)


def calls(sim_dir) -> list[dict]:
    path = os.path.join(sim_dir, "calls.jsonl")
    if not os.path.exists(path):
        return []
    with open(path) as f:
        return [json.loads(line) for line in f]
