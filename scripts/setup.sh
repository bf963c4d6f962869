#!/usr/bin/env bash
# Installs what a fresh machine lacks, then builds rlp (release). Safe to re-run: each step is
# skipped when its result is already there.
#   - .venv with torch==2.11.0 (libtorch for tch, plus the CUDA runtime libraries it links) and
#     transformers (the reference the parity tests compare against)
#   - .venv/libtorch -> the wheel's torch/ folder (.cargo/config.toml points LIBTORCH there)
#   - Debian's libgloo-dev (headers for the c10d Gloo shim of the distributed layer)
# With --nccl (GPU machines): also the header-only nvidia-cuda-crt/-cccl wheels under
# .venv/cuda-headers, and a build with ProcessGroupNCCL (cargo feature `nccl`).
set -euo pipefail
cd "$(dirname "$0")/.."

TORCH_VERSION=2.11.0
TRANSFORMERS_VERSION=5.23.0
PYTHON=${PYTHON:-python3}
NCCL=0
[ "${1:-}" = "--nccl" ] && NCCL=1

log() { printf '[setup] %s\n' "$*" >&2; }

if [ ! -x .venv/bin/python ]; then
  log "creating .venv with $($PYTHON --version 2>&1)"
  "$PYTHON" -m venv .venv
fi
if ! .venv/bin/python - <<PY 2>/dev/null
import sys, torch, transformers, safetensors
ok = torch.__version__.split("+")[0] == "$TORCH_VERSION" and transformers.__version__ == "$TRANSFORMERS_VERSION"
sys.exit(0 if ok else 1)
PY
then
  log "installing torch==$TORCH_VERSION transformers==$TRANSFORMERS_VERSION into .venv (about 5 GB)"
  .venv/bin/pip install --quiet --disable-pip-version-check \
    "torch==$TORCH_VERSION" "transformers==$TRANSFORMERS_VERSION" safetensors numpy
fi
torch_dir=$(.venv/bin/python -c 'import os, torch; print(os.path.dirname(torch.__file__))')
ln -sfn "$torch_dir" .venv/libtorch

if [ ! -f /usr/include/gloo/algorithm.h ]; then
  log "installing Debian libgloo-dev"
  sudo_cmd=""; [ "$(id -u)" -eq 0 ] || sudo_cmd="sudo"
  export DEBIAN_FRONTEND=noninteractive
  $sudo_cmd apt-get install -y -q libgloo-dev >/dev/null 2>&1 \
    || { $sudo_cmd apt-get update -q >/dev/null && $sudo_cmd apt-get install -y -q libgloo-dev >/dev/null; }
fi

if ! command -v cargo >/dev/null; then
  log "cargo not found: install Rust from https://rustup.rs"; exit 1
fi
features=()
if [ "$NCCL" = 1 ]; then
  if [ ! -f .venv/cuda-headers/nvidia/cu13/include/crt/host_config.h ]; then
    log "installing CUDA headers for the NCCL shim into .venv/cuda-headers"
    .venv/bin/pip install --quiet --disable-pip-version-check --no-deps --target .venv/cuda-headers \
      nvidia-cuda-crt==13.0.88 nvidia-cuda-cccl==13.0.85
  fi
  features=(--features nccl)
fi
log "building rlp and rlp-launch (release)"
cargo build --release --quiet --workspace --bins "${features[@]}"
log "ready: target/release/rlp, target/release/rlp-launch"
