#!/usr/bin/env bash
# One entry point for the README's two commands:
#   bash setup.sh quickstart   set up (if needed) and run the end-to-end quickstart
#   bash setup.sh test         set up (if needed) and run the default test suite
# Setup makes ./.venv (or uses $SCIFORMER_VENV), installs a torch that fits the machine, then sciformer.
# torch: kept if already importable; CUDA build from PyPI when `nvidia-smi` sees a GPU; otherwise the CPU
# build (pinned torch==2.13.0: a local CPU wheel where the machine has one, else PyTorch's CPU index).
# A CPU-only machine never pulls CUDA packages.
set -euo pipefail
cd "$(dirname "$0")"
what="${1:-}"; shift || true
venv="${SCIFORMER_VENV:-.venv}"
py="${PYTHON:-python3}"

# A CPU torch wheel in pip's find-links (this project's CI machines ship one).
local_cpu_wheel() {
  local dirs
  dirs="$(pip config get global.find-links 2>/dev/null || true) ${PIP_FIND_LINKS:-}"
  for d in $dirs; do
    d="${d#file://}"
    ls "$d"/torch-2.13.0+cpu-*.whl >/dev/null 2>&1 && return 0
  done
  return 1
}

setup() {
  if [ ! -x "$venv/bin/python" ]; then
    echo "[setup] creating $venv"
    "$py" -m venv "$venv"
  fi
  # shellcheck disable=SC1091
  . "$venv/bin/activate"
  if ! python -c "import torch" 2>/dev/null; then
    if command -v nvidia-smi >/dev/null 2>&1 && nvidia-smi -L >/dev/null 2>&1; then
      echo "[setup] GPU found: installing the CUDA build of torch from PyPI"
      pip install "torch>=2.4"
    elif local_cpu_wheel; then
      echo "[setup] no GPU: installing the machine's local CPU wheel torch==2.13.0"
      pip install "torch==2.13.0"
    else
      echo "[setup] no GPU: installing the CPU build of torch from PyTorch's CPU index"
      pip install torch --index-url https://download.pytorch.org/whl/cpu
    fi
  fi
  local extras="${SCIFORMER_EXTRAS:-dev,mol,fno,onnx}"
  if ! python -c "import sciformer" 2>/dev/null || [ "${SCIFORMER_REINSTALL:-0}" = 1 ] \
     || [ pyproject.toml -nt "$venv/.sciformer-installed" ]; then
    echo "[setup] installing sciformer[$extras] (editable)"
    pip install -e ".[$extras]"
    touch "$venv/.sciformer-installed"
  fi
  # The Well's own reader, the reference of our Well reader's tests (dev only). Without its dependencies: it pins
  # fsspec==2024.10.0, which would break zarr's fsspec URLs; its other needs (h5py, einops, yaml) are installed.
  if [[ ",$extras," == *",dev,"* ]] && ! python -c "import the_well" 2>/dev/null; then
    pip install --no-deps "the-well>=1.1"
  fi
}

case "$what" in
  quickstart)
    setup
    exec sciformer quickstart "$@"
    ;;
  test)
    setup
    exec python -m pytest "$@"
    ;;
  install)
    setup
    ;;
  *)
    echo "usage: bash setup.sh quickstart|test|install [args...]" >&2
    exit 2
    ;;
esac
