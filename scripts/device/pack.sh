#!/usr/bin/env bash
# Assembles the device kit, target/device-kit/kit/ (at most 60 MB, one
# transfer): the binary, a CIFAR-10 subset in the official binary layout
# (the first 10,000 training images in data_batch_1.bin, data_batch_2..5.bin
# empty, the first 1,000 test images), the teacher weights the CUDA-vs-CPU
# check evaluates, the kit's configs, the PyTorch reference loop with its
# models, and run.sh, the one prepared command for the GPU machine.
#   scripts/device/pack.sh [BINARY] [WEIGHTS]
# BINARY: default target/device-kit/bin/ard-pipeline (scripts/device/build-variant.sh);
# WEIGHTS: default weights/teacher-wrn16_2-nfgsm.safetensors (a WRN-16-2, the
# checkpoint the check evaluates and fine-tunes).
# KIT_DATA: the CIFAR-10 folder to take the subset from (default
# data/cifar-10-batches-bin, else ../shared/data/cifar-10-batches-bin).
# KIT_OUT: where to put the kit (default target/device-kit/kit).
set -euo pipefail
cd "$(dirname "$0")/../.."
repo=$(pwd)
binary=${1:-target/device-kit/bin/ard-pipeline}
weights=${2:-weights/teacher-wrn16_2-nfgsm.safetensors}
out=${KIT_OUT:-target/device-kit/kit}
data=${KIT_DATA:-}
if [ -z "$data" ]; then
  for d in data/cifar-10-batches-bin ../shared/data/cifar-10-batches-bin; do
    if [ -f "$d/data_batch_1.bin" ]; then data=$d; break; fi
  done
fi
fail() { echo "error: $*" >&2; exit 1; }
[ -x "$binary" ] || fail "no binary at $binary (build it with scripts/device/build-variant.sh, or name one)"
[ -f "$weights" ] || fail "no weights at $weights"
[ -n "$data" ] && [ -f "$data/data_batch_1.bin" ] && [ -f "$data/test_batch.bin" ] \
  || fail "no CIFAR-10 binary files in ${data:-data/cifar-10-batches-bin} (set KIT_DATA)"
record=3073
[ "$(stat -c %s "$data/data_batch_1.bin")" -eq $((10000 * record)) ] || fail "$data/data_batch_1.bin is not 10,000 records"
[ "$(stat -c %s "$data/test_batch.bin")" -eq $((10000 * record)) ] || fail "$data/test_batch.bin is not 10,000 records"

# Build in a staging folder and rename at the end: never a half-made kit.
staging="$out.tmp-$$"
trap 'rm -rf "$staging"' EXIT
rm -rf "$staging"
mkdir -p "$staging"/{bin,data/cifar-10-batches-bin,weights,scripts,tests/parity}
cp "$binary" "$staging/bin/ard-pipeline"
[ -f "$(dirname "$binary")/torch-version" ] && cp "$(dirname "$binary")/torch-version" "$staging/bin/"
d=$staging/data/cifar-10-batches-bin
cp "$data/data_batch_1.bin" "$d/"
for i in 2 3 4 5; do : > "$d/data_batch_$i.bin"; done
head -c $((1000 * record)) "$data/test_batch.bin" > "$d/test_batch.bin"
[ -f "$data/batches.meta.txt" ] && cp "$data/batches.meta.txt" "$d/"
cp "$weights" "$staging/weights/teacher.safetensors"
cp configs/single-t4.toml scripts/device/kit-bench.toml scripts/device/kit-check.toml "$staging/"
cp scripts/bench_reference.py "$staging/scripts/"
cp tests/parity/ref_models.py tests/parity/ref_ard.py "$staging/tests/parity/"
cp scripts/device/run.sh scripts/device/kit_report.py "$staging/"
(cd "$staging" && find . -type f ! -name SHA256SUMS -print0 | sort -z | xargs -0 sha256sum > SHA256SUMS)

size=$(du -sb "$staging" | cut -f1)
limit=$((60 * 1000 * 1000))
[ "$size" -le "$limit" ] || fail "the kit is $size bytes, over the 60 MB of one transfer"
rm -rf "$out"
mv "$staging" "$out"
trap - EXIT
echo "==> $out: $((size / 1000000)) MB ($(du -h "$out/bin/ard-pipeline" | cut -f1) binary, 10,000 + 1,000 images)"
echo "    on the GPU machine, from the repository root: $out/run.sh OUT.json"
