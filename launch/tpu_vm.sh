#!/usr/bin/env bash
# Train on a Cloud TPU VM slice: runs the same command on every host of the slice.
#   launch/tpu_vm.sh TPU_NAME ZONE CONFIG[:ARG] WORKDIR [--config.KEY=VALUE ...]
# WORKDIR must be storage every host sees (a gs:// bucket or a shared mount). Each
# host runs one process; jax.distributed initialises itself from the TPU metadata
# (distributed.initialize="auto"), every process reads its own data shard, and a
# preemption notice (SIGTERM) makes all hosts save the same step and exit cleanly:
# re-running this script resumes.
set -euo pipefail
TPU=${1:?usage: launch/tpu_vm.sh TPU_NAME ZONE CONFIG[:ARG] WORKDIR [overrides]}
ZONE=${2:?zone}
CONFIG=${3:?config}
WORKDIR=${4:?workdir}
shift 4
REPO=${JAXMM_REPO_DIR:-~/jaxmm}   # a checkout of this repository on every host
OVERRIDES=$(printf ' %q' "$@")
gcloud compute tpus tpu-vm ssh "$TPU" --zone "$ZONE" --worker=all --command "
  set -e; cd $REPO
  export TF_CPP_MIN_LOG_LEVEL=2
  python -m jaxmm train --config '$CONFIG' --workdir '$WORKDIR' $OVERRIDES
"
