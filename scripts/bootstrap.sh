#!/usr/bin/env bash
# Creates the project venv (.venv) with PyTorch 2.13.0 — the libtorch that tch
# 0.26 links against, and the reference for the parity tests — and links
# .venv/libtorch to it for .cargo/config.toml. Idempotent; needs no environment
# variables. Set ARD_TORCH_INDEX_URL to pick a wheel index (e.g. the CPU-only one).
set -euo pipefail
cd "$(dirname "$0")/.."

TORCH_VERSION=2.13.0
PY=${PYTHON:-python3}
stamp=.venv/.bootstrap-ok
# The stamp records what was installed; changing the requirements redoes the install.
TORCHATTACKS_VERSION=3.5.1
# RobustBench's model classes, for `export --format robustbench` and its test.
ROBUSTBENCH_VERSION=1.1.1
want="torch==$TORCH_VERSION torchattacks==$TORCHATTACKS_VERSION robustbench==$ROBUSTBENCH_VERSION $(cksum < scripts/requirements.txt)"

if [ -f "$stamp" ] && [ "$(cat "$stamp")" = "$want" ] && [ -e .venv/libtorch/lib/libtorch.so ]; then
  exit 0
fi

if ! command -v cargo >/dev/null 2>&1; then
  echo "error: cargo not found; install Rust from https://rustup.rs" >&2
  exit 1
fi

if [ ! -x .venv/bin/python ]; then
  echo "==> creating .venv with $($PY --version)"
  "$PY" -m venv .venv
fi

echo "==> installing torch==$TORCH_VERSION and test dependencies into .venv (about a minute)"
extra=()
if [ -n "${ARD_TORCH_INDEX_URL:-}" ]; then extra+=(--index-url "$ARD_TORCH_INDEX_URL"); fi
.venv/bin/python -m pip install --quiet --disable-pip-version-check "${extra[@]}" "torch==$TORCH_VERSION"
.venv/bin/python -m pip install --quiet --disable-pip-version-check -r scripts/requirements.txt
# The Square reference; its own requirements pin an old requests and pull torchvision.
.venv/bin/python -m pip install --quiet --disable-pip-version-check --no-deps "torchattacks==$TORCHATTACKS_VERSION"
# Only its architecture files are used (they import torch alone); its own
# requirements would pull torchvision, timm, gdown, pandas and more.
.venv/bin/python -m pip install --quiet --disable-pip-version-check --no-deps "robustbench==$ROBUSTBENCH_VERSION"

torch_dir=$(.venv/bin/python -c 'import os, torch; print(os.path.dirname(torch.__file__))')
ln -sfn "$torch_dir" .venv/libtorch
test -e .venv/libtorch/lib/libtorch.so || { echo "error: no libtorch.so under $torch_dir/lib" >&2; exit 1; }
echo "$want" > "$stamp"
echo "==> libtorch: $torch_dir"
