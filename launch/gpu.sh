#!/usr/bin/env bash
# Single-host GPU training for brave_jax: install the CUDA build of jaxlib, then train on every local GPU.
#
# Usage: launch/gpu.sh [--dry-run] [--skip-install] [--config=FILE[:VARIANT]] [--workdir=DIR]
#                      [--cuda=12|13] [-- MAIN FLAGS...]
# Settings (flags override environment variables; defaults in brackets):
#   --config / BRAVE_CONFIG     config file[:variant]       [configs/brave_rgb_audio.py]
#   --workdir / BRAVE_WORKDIR   workdir (local or gs://)     [workdirs/<config name>]
#   --cuda / BRAVE_CUDA         CUDA major version of the jax[cudaNN] wheel  [12]
# Everything after `--` goes to `python -m brave_jax.main` (e.g. --config.training.batch_size=256).
set -euo pipefail

DRY_RUN=0
INSTALL=1
CONFIG="${BRAVE_CONFIG:-configs/brave_rgb_audio.py}"
WORKDIR="${BRAVE_WORKDIR:-}"
CUDA="${BRAVE_CUDA:-12}"
JAX_VERSION="0.10.2"

SCRIPT_NAME="gpu.sh"
# shellcheck source=launch/common.sh
source "$(dirname "$0")/common.sh"

while [[ $# -gt 0 ]]; do
  if [[ "$1" == --*=* ]]; then  # --flag=value -> --flag value
    flag="${1%%=*}"; value="${1#*=}"; shift; set -- "$flag" "$value" "$@"
  fi
  case "$1" in
    --dry-run) DRY_RUN=1 ;;
    --skip-install) INSTALL=0 ;;
    --config) CONFIG="$2"; shift ;;
    --workdir) WORKDIR="$2"; shift ;;
    --cuda) CUDA="$2"; shift ;;
    --) shift; break ;;
    -h|--help) sed -n '2,11p' "$0"; exit 0 ;;
    *) die "unknown argument $1 (see --help; main flags go after --)" ;;
  esac
  shift
done

[[ "$CUDA" =~ ^(12|13)$ ]] || die "--cuda must be 12 or 13, got '$CUDA'"
cd "$(dirname "$0")/.."
[[ -f "${CONFIG%%:*}" ]] || die "config file '${CONFIG%%:*}' not found"
if [[ "$DRY_RUN" == 0 ]]; then
  command -v nvidia-smi >/dev/null || die "nvidia-smi not found: this script needs an NVIDIA GPU and driver"
fi
workdir="${WORKDIR:-workdirs/$(basename "${CONFIG%%:*}" .py)}"

if [[ "$INSTALL" == 1 ]]; then
  run pip install -q -r requirements.txt -e .
  run pip install -q "jax[cuda${CUDA}]==${JAX_VERSION}"
fi
run python -c "import jax; assert jax.default_backend() == 'gpu', jax.devices(); print(jax.devices())"
run python -m brave_jax.main --config="$CONFIG" --workdir="$workdir" "$@"
