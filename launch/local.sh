#!/usr/bin/env bash
# Train on this machine (all local GPUs/TPUs, or the CPU).
#   launch/local.sh configs/lm_gpt.py:tiny,data=synthetic runs/gpt [--config.num_steps=100 ...]
# Re-running the same command resumes from the latest checkpoint in the workdir.
# Python: $JAXMM_PYTHON if set, else the project's .venv/bin/python (what `make demo` / `make test`
# create), else python3 (an environment where jaxmm is installed).
set -euo pipefail
CONFIG=${1:?usage: launch/local.sh CONFIG[:ARG] WORKDIR [--config.KEY=VALUE ...]}
WORKDIR=${2:?usage: launch/local.sh CONFIG[:ARG] WORKDIR [--config.KEY=VALUE ...]}
shift 2
cd "$(dirname "$0")/.."
# Keep TensorFlow (tf.data in jaxmm.data) off the accelerators.
export TF_CPP_MIN_LOG_LEVEL=${TF_CPP_MIN_LOG_LEVEL:-2} CUDA_MODULE_LOADING=LAZY
if [[ -z "${JAXMM_PYTHON:-}" ]]; then
  if [[ -x .venv/bin/python ]]; then JAXMM_PYTHON=.venv/bin/python; else JAXMM_PYTHON=python3; fi
fi
echo "launch/local.sh: using $JAXMM_PYTHON" >&2
exec "$JAXMM_PYTHON" -m jaxmm train --config "$CONFIG" --workdir "$WORKDIR" \
  --config.compilation_cache_dir="$WORKDIR/xla_cache" "$@"
