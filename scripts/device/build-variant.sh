#!/usr/bin/env bash
# Builds ard-pipeline for a GPU machine whose PyTorch is not 2.13 (the one we
# expect has PyTorch 2.11.0 with CUDA 13, no Rust and no network): the same
# tree with tch pinned to the release for that PyTorch (tch 0.24 for 2.11),
# built against a PyPI torch of that version in its own venv and target dir
# under target/device-kit/ (the project's .venv and target/ are untouched).
# The binary links libtorch's CUDA half (build.rs) and is stripped:
#   target/device-kit/bin/ard-pipeline
# Then `scripts/device/pack.sh` puts it in the kit. About 15 minutes on 2
# cores and a ~4 GB download (the CUDA torch wheel and its nvidia packages).
#   KIT_TORCH_VERSION=2.11.0 KIT_TCH_VERSION=0.24.0 scripts/device/build-variant.sh
# KIT_PREPARE_ONLY=1 stops after the pinned copy of the tree (what CI tests;
# the download and the 15-minute build are not run in CI). KIT_DIR moves
# target/device-kit elsewhere.
set -euo pipefail
cd "$(dirname "$0")/../.."
repo=$(pwd)
torch_version=${KIT_TORCH_VERSION:-2.11.0}
tch_version=${KIT_TCH_VERSION:-0.24.0}
kit=${KIT_DIR:-$repo/target/device-kit}
venv=$kit/venv-torch-$torch_version
src=$kit/src
PY=${PYTHON:-python3}

command -v cargo >/dev/null || { echo "error: cargo not found; install Rust from https://rustup.rs" >&2; exit 1; }
mkdir -p "$kit"
echo "==> $src: the tracked tree with tch = \"=$tch_version\""
rm -rf "$src"
mkdir -p "$src"
git ls-files -z | grep -zv '^weights/' | tar --null -T - -cf - | tar -xf - -C "$src"
sed -i "s/^tch = \"[^\"]*\"/tch = \"=$tch_version\"/" "$src/Cargo.toml"
grep -q "^tch = \"=$tch_version\"" "$src/Cargo.toml" || { echo "error: could not pin tch in $src/Cargo.toml" >&2; exit 1; }
if [ -n "${KIT_PREPARE_ONLY:-}" ]; then echo "==> KIT_PREPARE_ONLY: stopping before the download and the build"; exit 0; fi
if [ ! -e "$venv/.ok" ]; then
  echo "==> $venv: torch==$torch_version from PyPI"
  "$PY" -m venv "$venv"
  "$venv/bin/python" -m pip install --quiet --disable-pip-version-check "torch==$torch_version"
  touch "$venv/.ok"
fi
libtorch=$("$venv/bin/python" -c 'import os, torch; print(os.path.dirname(torch.__file__))')
test -e "$libtorch/lib/libtorch_cpu.so" || { echo "error: no libtorch_cpu.so under $libtorch/lib" >&2; exit 1; }


echo "==> building against $libtorch (tch $tch_version)"
(cd "$src" && LIBTORCH="$libtorch" CARGO_TARGET_DIR="$kit/target" cargo build --release --bin ard-pipeline)
mkdir -p "$kit/bin"
strip -o "$kit/bin/ard-pipeline" "$kit/target/release/ard-pipeline"
if [ -e "$libtorch/lib/libtorch_cuda.so" ]; then
  readelf -d "$kit/bin/ard-pipeline" | grep -q 'NEEDED.*libtorch_cuda.so' \
    || { echo "error: $kit/bin/ard-pipeline does not link libtorch_cuda.so" >&2; exit 1; }
fi
echo "$torch_version" > "$kit/bin/torch-version"
echo "==> $kit/bin/ard-pipeline ($(du -h "$kit/bin/ard-pipeline" | cut -f1), torch $torch_version, tch $tch_version); next: scripts/device/pack.sh"
