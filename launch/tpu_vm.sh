#!/usr/bin/env bash
# Cloud TPU VM lifecycle for brave_jax: create a TPU VM or pod slice, install the
# project on every worker, train on all workers, follow logs, stop, delete.
#
# Usage: launch/tpu_vm.sh [--dry-run] COMMAND [ARGS...]
#   plan [PLAN FLAGS...]   on this machine, no TPU needed: compile the training step for the
#                          slice's topology and print memory, FLOPs, clips/s and host cores
#                          (python -m brave_jax.plan; needs pip install -e '.[tpu-plan]')
#   create                 create the TPU VM / pod slice
#   install                copy this checkout to every worker and pip-install it
#   train [MAIN FLAGS...]  start training on all workers (in the background, logging to ~/brave.log)
#   logs [WORKER]          follow the training log of one worker (default 0)
#   stop                   stop training on all workers
#   delete                 delete the TPU VM / pod slice
#
# Settings (flags override environment variables; defaults in brackets):
#   --project / TPU_PROJECT      Google Cloud project                [gcloud's configured project]
#   --zone / TPU_ZONE            zone                                [required]
#   --name / TPU_NAME            TPU name                            [brave-tpu]
#   --accelerator / TPU_TYPE     accelerator type, e.g. v4-32        [v4-8]
#   --version / TPU_VERSION      TPU VM software version             [tpu-ubuntu2204-base]
#   --bucket / BRAVE_BUCKET      gs:// bucket for the workdir        [required for train]
#   --config / BRAVE_CONFIG      config file[:variant]               [configs/brave_rgb_audio.py]
#   --workdir / BRAVE_WORKDIR    workdir                             [$BUCKET/brave/<config name>]
#   --topology / TPU_TOPOLOGY    topology for plan, e.g. v4:2x2x2    [from --accelerator where known]
#   --spot                       create with spot capacity
# Every worker runs the same command; jax.distributed finds the other workers by itself on a TPU slice.
set -euo pipefail

DRY_RUN=0
PROJECT="${TPU_PROJECT:-}"
ZONE="${TPU_ZONE:-}"
NAME="${TPU_NAME:-brave-tpu}"
ACCELERATOR="${TPU_TYPE:-v4-8}"
VERSION="${TPU_VERSION:-tpu-ubuntu2204-base}"
BUCKET="${BRAVE_BUCKET:-}"
CONFIG="${BRAVE_CONFIG:-configs/brave_rgb_audio.py}"
WORKDIR="${BRAVE_WORKDIR:-}"
TOPOLOGY="${TPU_TOPOLOGY:-}"
SPOT=0
JAX_VERSION="0.10.2"
REMOTE_DIR="brave_jax"

SCRIPT_NAME="tpu_vm.sh"
# shellcheck source=launch/common.sh
source "$(dirname "$0")/common.sh"

while [[ $# -gt 0 ]]; do
  if [[ "$1" == --*=* ]]; then  # --flag=value -> --flag value
    flag="${1%%=*}"; value="${1#*=}"; shift; set -- "$flag" "$value" "$@"
  fi
  case "$1" in
    --dry-run) DRY_RUN=1 ;;
    --project) PROJECT="$2"; shift ;;
    --zone) ZONE="$2"; shift ;;
    --name) NAME="$2"; shift ;;
    --accelerator) ACCELERATOR="$2"; shift ;;
    --version) VERSION="$2"; shift ;;
    --bucket) BUCKET="$2"; shift ;;
    --config) CONFIG="$2"; shift ;;
    --workdir) WORKDIR="$2"; shift ;;
    --topology) TOPOLOGY="$2"; shift ;;
    --spot) SPOT=1 ;;
    -h|--help) sed -n '2,30p' "$0"; exit 0 ;;
    --*) die "unknown flag $1 (see --help)" ;;
    *) break ;;
  esac
  shift
done

COMMAND="${1:-}"
[[ -n "$COMMAND" ]] || die "missing COMMAND: plan | create | install | train | logs | stop | delete (see --help)"
shift

topology_of() {
  # The AOT topology name of a single-host accelerator type (larger slices: pass --topology).
  case "$1" in
    v4-8) echo "v4:2x2x1" ;;
    v5litepod-4) echo "v5e:2x2" ;;
    v5litepod-8) echo "v5e:2x4" ;;
    v5p-8) echo "v5p:2x2x1" ;;
    v6e-4) echo "v6e:2x2" ;;
    v6e-8) echo "v6e:2x4" ;;
    *) return 1 ;;
  esac
}

if [[ "$COMMAND" == plan ]]; then  # Local: needs neither gcloud, a zone nor a project.
  topology="${TOPOLOGY:-$(topology_of "$ACCELERATOR" || true)}"
  [[ -n "$topology" ]] || die "no topology for --accelerator=$ACCELERATOR: pass --topology (e.g. v4:2x2x2, v5e:4x8, v5p:4x4x4)"
  run python3 -m brave_jax.plan --config="$CONFIG" --topology="$topology" "$@"
  exit 0
fi

if [[ "$DRY_RUN" == 0 ]]; then
  command -v gcloud >/dev/null || die "gcloud not found: install the Google Cloud SDK first"
fi
[[ -n "$ZONE" ]] || die "no zone: pass --zone or set TPU_ZONE (e.g. us-central2-b for v4)"
if [[ -z "$PROJECT" && "$DRY_RUN" == 0 ]]; then
  PROJECT="$(gcloud config get-value project 2>/dev/null || true)"
fi
[[ -n "$PROJECT" ]] || die "no project: pass --project or set TPU_PROJECT"

TPU=(gcloud compute tpus tpu-vm)
WHERE=(--zone="$ZONE" --project="$PROJECT")

on_all_workers() {
  run "${TPU[@]}" ssh "$NAME" "${WHERE[@]}" --worker=all --command="$1"
}

case "$COMMAND" in
  create)
    extra=()
    [[ "$SPOT" == 1 ]] && extra+=(--spot)
    run "${TPU[@]}" create "$NAME" "${WHERE[@]}" --accelerator-type="$ACCELERATOR" \
      --version="$VERSION" "${extra[@]}"
    ;;
  install)
    archive="/tmp/brave_jax_src.tar.gz"
    run git -C "$(dirname "$0")/.." archive --format=tar.gz --prefix="$REMOTE_DIR/" -o "$archive" HEAD
    run "${TPU[@]}" scp "$archive" "$NAME":/tmp/ "${WHERE[@]}" --worker=all
    on_all_workers "rm -rf ~/$REMOTE_DIR && tar xzf /tmp/brave_jax_src.tar.gz -C ~ && \
cd ~/$REMOTE_DIR && pip install -q -r requirements.txt -e . && pip install -q 'jax[tpu]==$JAX_VERSION' && \
python3 -c 'import jax; print(jax.process_index(), jax.device_count())'"
    ;;
  train)
    [[ -n "$BUCKET" ]] || die "no bucket: pass --bucket=gs://... or set BRAVE_BUCKET (the workdir must be shared by all workers)"
    [[ "$BUCKET" == gs://* ]] || die "--bucket must start with gs://, got '$BUCKET'"
    config_name="$(basename "${CONFIG%%:*}" .py)"
    workdir="${WORKDIR:-$BUCKET/brave/$config_name}"
    flags="--config=$CONFIG --workdir=$workdir"
    for f in "$@"; do flags+=" $(printf '%q' "$f")"; done
    on_all_workers "cd ~/$REMOTE_DIR && nohup python3 -m brave_jax.main $flags > ~/brave.log 2>&1 &"
    ;;
  logs)
    worker="${1:-0}"
    run "${TPU[@]}" ssh "$NAME" "${WHERE[@]}" --worker="$worker" --command="tail -n 100 -f ~/brave.log"
    ;;
  stop)
    on_all_workers "pkill -f brave_jax.main || true"
    ;;
  delete)
    run "${TPU[@]}" delete "$NAME" "${WHERE[@]}" --quiet
    ;;
  *)
    die "unknown COMMAND '$COMMAND': create | install | train | logs | stop | delete"
    ;;
esac
