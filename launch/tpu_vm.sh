#!/usr/bin/env bash
# Train on a Cloud TPU VM slice (one host or many), from this machine.
#
#   launch/tpu_vm.sh [OPTIONS] TPU_NAME ZONE CONFIG[:ARG] WORKDIR [--config.KEY=VALUE ...]
#
# Steps, each on every worker of the slice (gcloud ... --worker=all):
#   1. create the slice if --create is given and it does not exist yet;
#   2. code: copy this working tree (tracked and untracked, not ignored files) to
#      $HOME/jaxmm on each worker, or with --ref REF clone/fetch REF of --repo there;
#   3. install: a Python 3.11 virtual environment at $HOME/jaxmm-venv made by uv (a
#      standalone CPython: the TPU VM images ship Python 3.10, jaxmm needs >= 3.11),
#      with jaxmm[tpu] installed from that code (uv is installed for the user first if
#      missing); skipped with --python PATH (an interpreter already set up there);
#   4. train: `jaxmm train` on every worker at once, each writing $HOME/jaxmm-run/train.log;
#      jax.distributed starts itself from the TPU metadata (distributed.initialize=auto);
#   5. logs: every worker's log is copied back to --logs (default tpu_logs/TPU_NAME/
#      worker-N.log) and the end of worker 0's log is printed.
# WORKDIR must be storage every worker sees (a gs:// bucket or a shared mount). A
# preemption notice (SIGTERM) on any worker makes all of them save the same step and
# exit cleanly; re-running the same command resumes from WORKDIR (steps 2-3 are
# repeated and are quick when nothing changed).
#
# Options:
#   --create                 create the slice when `describe` does not find it, with
#   --accelerator-type TYPE  e.g. v4-16, v5litepod-16 (required with --create)
#   --version RUNTIME        TPU software version (default tpu-ubuntu2204-base)
#   --spot                   create a Spot slice (can be preempted: re-run to resume)
#   --project PROJECT        Google Cloud project (default: gcloud's configured one)
#   --ref REF                clone REF (branch, tag, commit) of --repo instead of copying
#   --repo URL               default https://github.com/jaxmm/jaxmm
#   --python PATH            use this interpreter on the workers; skip the install step
#   --logs DIR               where the workers' logs come back to
# Watch a running job: gcloud compute tpus tpu-vm ssh TPU_NAME --zone ZONE --worker=0 \
#   --command 'tail -f jaxmm-run/train.log'
set -euo pipefail
usage="usage: launch/tpu_vm.sh [--create --accelerator-type TYPE [--version V] [--spot]] \
[--project P] [--ref REF [--repo URL]] [--python PATH] [--logs DIR] TPU_NAME ZONE CONFIG[:ARG] \
WORKDIR [--config.KEY=VALUE ...]"
CREATE=0 ACCEL="" RUNTIME=tpu-ubuntu2204-base SPOT=0 PROJECT="" REF=""
REPO_URL=https://github.com/jaxmm/jaxmm REMOTE_PYTHON="" LOGS=""
while [[ $# -gt 0 && $1 == --* && $1 != --config.* ]]; do
  case $1 in
    --create) CREATE=1; shift ;;
    --spot) SPOT=1; shift ;;
    --accelerator-type) ACCEL=${2:?$usage}; shift 2 ;;
    --version) RUNTIME=${2:?$usage}; shift 2 ;;
    --project) PROJECT=${2:?$usage}; shift 2 ;;
    --ref) REF=${2:?$usage}; shift 2 ;;
    --repo) REPO_URL=${2:?$usage}; shift 2 ;;
    --python) REMOTE_PYTHON=${2:?$usage}; shift 2 ;;
    --logs) LOGS=${2:?$usage}; shift 2 ;;
    -h|--help) echo "$usage"; exit 0 ;;
    *) echo "launch/tpu_vm.sh: unknown option $1; $usage" >&2; exit 2 ;;
  esac
done
if [[ $# -lt 4 ]]; then echo "$usage" >&2; exit 2; fi
TPU=$1 ZONE=$2 CONFIG=$3 WORKDIR=$4
shift 4
LOGS=${LOGS:-tpu_logs/$TPU}
HERE=$(cd "$(dirname "$0")/.." && pwd)
where=(--zone "$ZONE")
if [[ -n $PROJECT ]]; then where+=(--project "$PROJECT"); fi
tpu() { gcloud compute tpus tpu-vm "$1" "$TPU" "${where[@]}" "${@:2}"; }
tpu_scp() { gcloud compute tpus tpu-vm scp "$@" "${where[@]}"; }  # SRC DST --worker=W
# Quote for the remote shell: every value below reaches it as one literal word.
q() { printf '%q' "$1"; }

# -- 1. slice ------------------------------------------------------------------
if ! tpu describe --format='value(state)' >/dev/null 2>&1; then
  if [[ $CREATE != 1 ]]; then
    echo "launch/tpu_vm.sh: TPU $TPU not found in $ZONE; create it (pass --create" \
         "--accelerator-type TYPE) or check the name, zone and project." >&2
    exit 2
  fi
  if [[ -z $ACCEL ]]; then echo "launch/tpu_vm.sh: --create needs --accelerator-type" \
    "(e.g. v4-16)." >&2; exit 2; fi
  create=(--accelerator-type "$ACCEL" --version "$RUNTIME")
  if [[ $SPOT == 1 ]]; then create+=(--spot); fi
  echo "launch/tpu_vm.sh: creating $TPU ($ACCEL, $RUNTIME) in $ZONE"
  tpu create "${create[@]}"
fi
# One IP address per worker, separated by ';' (gcloud's list separator) or ','.
WORKERS=$(tpu describe --format='value(networkEndpoints[].ipAddress)' | tr ';,' '\n\n' \
          | grep -c .)
echo "launch/tpu_vm.sh: $TPU has $WORKERS worker(s)"

# -- 2. code -------------------------------------------------------------------
if [[ -z $REF ]]; then
  tarball=$(mktemp "${TMPDIR:-/tmp}/jaxmm-src.XXXXXX")
  trap 'rm -f "$tarball"' EXIT
  (cd "$HERE" && git ls-files -z --cached --others --exclude-standard \
     | xargs -0 sh -c 'for f; do [ -e "$f" ] && printf "%s\0" "$f"; done' _ \
     | tar --null -czf "$tarball" -T -)
  tpu_scp "$tarball" "$TPU:jaxmm-src.tar.gz" --worker=all
  code='mkdir -p "$HOME/jaxmm" && tar -xzf "$HOME/jaxmm-src.tar.gz" -C "$HOME/jaxmm"'
else
  code="if [ ! -d \"\$HOME/jaxmm/.git\" ]; then git clone --quiet $(q "$REPO_URL") \"\$HOME/jaxmm\"; fi
    git -C \"\$HOME/jaxmm\" fetch --quiet origin $(q "$REF")
    git -C \"\$HOME/jaxmm\" checkout --quiet --detach FETCH_HEAD"
fi

# -- 3. install ----------------------------------------------------------------
if [[ -z $REMOTE_PYTHON ]]; then
  PY='"$HOME/jaxmm-venv/bin/python"'
  install='export PATH="$HOME/.local/bin:$PATH"
    command -v uv >/dev/null || curl -LsSf https://astral.sh/uv/install.sh | sh
    [ -x "$HOME/jaxmm-venv/bin/python" ] || uv venv --quiet --python 3.11 "$HOME/jaxmm-venv"
    uv pip install --quiet --python "$HOME/jaxmm-venv/bin/python" -e "$HOME/jaxmm[tpu]"'
else
  PY=$(q "$REMOTE_PYTHON")
  install=":  # --python given: nothing to install"
fi
tpu ssh --worker=all --command "set -eu
  $code
  $install
  $PY -c 'import sys; assert sys.version_info >= (3, 11), sys.version' "

# -- 4. train ------------------------------------------------------------------
overrides=""
for o in "$@"; do overrides+=" $(q "$o")"; done
status=0
tpu ssh --worker=all --command "set -eu
  mkdir -p \"\$HOME/jaxmm-run\" && cd \"\$HOME/jaxmm\"
  export TF_CPP_MIN_LOG_LEVEL=2
  echo \"== \$(date -u) jaxmm train on \$(hostname)\" >> \"\$HOME/jaxmm-run/train.log\"
  exec $PY -m jaxmm train --config $(q "$CONFIG") --workdir $(q "$WORKDIR")$overrides \
    >> \"\$HOME/jaxmm-run/train.log\" 2>&1" || status=$?

# -- 5. logs -------------------------------------------------------------------
mkdir -p "$LOGS"
for ((i = 0; i < WORKERS; i++)); do
  tpu_scp "$TPU:jaxmm-run/train.log" "$LOGS/worker-$i.log" --worker="$i" >/dev/null \
    || echo "launch/tpu_vm.sh: could not copy worker $i's log" >&2
done
if [[ -f $LOGS/worker-0.log ]]; then tail -n 20 "$LOGS/worker-0.log"; fi
echo "launch/tpu_vm.sh: exit status $status; logs in $LOGS/worker-*.log"
exit "$status"
