#!/usr/bin/env bash
# Sets up a fresh machine: finds Python >= 3.12, makes .venv, installs the package with its test
# and training extras, and installs Debian's Fashion-MNIST package when it is missing and we are root.
#   bash scripts/bootstrap.sh            # idempotent; re-running only checks
set -euo pipefail
cd "$(dirname "$0")/.."

find_python() {
  local candidates=(python3.13 python3.12 python3 python)
  if command -v pyenv >/dev/null 2>&1; then
    for v in $(pyenv versions --bare 2>/dev/null | grep -E '^3\.(1[2-9]|[2-9][0-9])' | sort -Vr); do
      candidates+=("$(pyenv prefix "$v")/bin/python3")
    done
  fi
  for p in "${candidates[@]}"; do
    if command -v "$p" >/dev/null 2>&1 &&
       "$p" -c 'import sys, venv; sys.exit(sys.version_info < (3, 12))' 2>/dev/null; then
      command -v "$p"
      return 0
    fi
  done
  return 1
}

if [ ! -x .venv/bin/python ] || ! .venv/bin/python -c 'import sys; sys.exit(sys.version_info < (3, 12))'; then
  PY=$(find_python) || { echo "error: sparse_flops needs Python >= 3.12 (jax and flax do not install on older ones); install one (e.g. pyenv install 3.12) and re-run" >&2; exit 1; }
  echo "bootstrap: creating .venv with $PY ($("$PY" --version))"
  rm -rf .venv
  "$PY" -m venv .venv
fi
.venv/bin/python -m pip install -q --upgrade pip
.venv/bin/python -m pip install -q -e ".[train,test]"

FMNIST=/usr/share/datasets/fashion-mnist
if [ ! -f "$FMNIST/train-images-idx3-ubyte.gz" ]; then
  if [ "$(id -u)" = 0 ] && command -v apt-get >/dev/null 2>&1; then
    echo "bootstrap: installing Debian's dataset-fashion-mnist"
    apt-get update -qq
    DEBIAN_FRONTEND=noninteractive apt-get install -y -qq dataset-fashion-mnist
  else
    echo "bootstrap: warning: Fashion-MNIST is not in $FMNIST; run 'apt-get install dataset-fashion-mnist' as root or pass --config.data.dir" >&2
  fi
fi
echo "bootstrap: ready ($(.venv/bin/python --version))"
