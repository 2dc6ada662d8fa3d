#!/usr/bin/env bash
# The device kit's one prepared command, for a GPU machine with PyTorch but no
# Rust toolchain and no network:
#   KIT/run.sh OUT.json
# 1. `doctor`: the libtorch loaded, CUDA compiled in and available, devices;
# 2. CUDA vs CPU: five deterministic ARD steps on each device from the same
#    weights (weights compared within a stated tolerance), and natural,
#    PGD-20 and APGD-CE accuracy of the same checkpoint on 1,000 test images
#    on each device (within 0.5 points);
# 3. `bench` of the single-t4 settings (MobileNetV2 and ResNet-18 students,
#    WRN-34-10 teacher with random weights, batch 128, 1 and 10 steps, soft
#    labels online and cached, fp32 and perf.amp) against the PyTorch
#    reference loop run by the machine's own PyTorch, with per-stage busy
#    shares and GPU memory.
# Everything lands in OUT.json (kit_report.py). A step that fails is
# recorded with its output and the next one still runs.
# Environment: KIT_DEVICE (cuda), KIT_PYTHON (/opt/torch/.venv/bin/python,
# else python3), KIT_BATCHES (bench batches per run, 20), KIT_STUDENTS
# (mobilenet_v2,resnet18), KIT_TEACHER (wrn34_10), KIT_STEPS (1,10),
# KIT_VARIANTS (fp32,amp on CUDA; fp32 on the CPU), KIT_SIDES
# (reference,pipeline), KIT_TEST_LIMIT (1000), KIT_EVAL_ATTACKS
# (natural,pgd20,apgd_ce).
set -uo pipefail
out=${1:?usage: run.sh OUT.json}
kit=$(cd "$(dirname "$0")" && pwd)
mkdir -p "$(dirname "$out")"
out=$(cd "$(dirname "$out")" && pwd)/$(basename "$out")
device=${KIT_DEVICE:-cuda}
py=${KIT_PYTHON:-}
if [ -z "$py" ]; then
  if [ -x /opt/torch/.venv/bin/python ]; then py=/opt/torch/.venv/bin/python; else py=python3; fi
fi
if [ "$device" = cpu ]; then default_variants=fp32; else default_variants=fp32,amp; fi
batches=${KIT_BATCHES:-20}
students=${KIT_STUDENTS:-mobilenet_v2,resnet18}
teacher=${KIT_TEACHER:-wrn34_10}
steps=${KIT_STEPS:-1,10}
variants=${KIT_VARIANTS:-$default_variants}
sides=${KIT_SIDES:-reference,pipeline}
test_limit=${KIT_TEST_LIMIT:-1000}
eval_attacks=${KIT_EVAL_ATTACKS:-natural,pgd20,apgd_ce}

work=$kit/work
rm -rf "$work"
mkdir -p "$work/logs"
cd "$kit"
libtorch=$("$py" -c 'import os, torch; print(os.path.dirname(torch.__file__))') \
  || { echo "error: $py cannot import torch (set KIT_PYTHON)" >&2; exit 1; }
export LD_LIBRARY_PATH="$libtorch/lib${LD_LIBRARY_PATH:+:$LD_LIBRARY_PATH}"
bin=$kit/bin/ard-pipeline
steps_file=$work/steps.tsv
: > "$steps_file"

# step NAME CMD...: runs CMD, logs its output, records status and seconds.
step() {
  local name=$1; shift
  local t0; t0=$(date +%s%N)
  echo "==> $name" >&2
  "$@" > "$work/logs/$name.log" 2>&1
  local rc=$?
  local t1; t1=$(date +%s%N)
  printf '%s\t%s\t%s\n' "$name" "$rc" "$(( (t1 - t0) / 1000000 ))" >> "$steps_file"
  [ $rc -eq 0 ] || { echo "    $name failed (rc $rc); last lines:" >&2; tail -5 "$work/logs/$name.log" >&2; }
  return 0
}

step doctor env ARD__RUN__DEVICE="$device" "$bin" doctor --config kit-check.toml --json "$work/doctor.json"
# The CPU is the reference side of the check; on a CPU dry run both sides are
# the CPU (two runs that must agree bit for bit).
for side in cpu device; do
  if [ $side = cpu ]; then d=cpu; else d=$device; fi
  step "check-train-$side" env ARD__RUN__DEVICE="$d" ARD__RUN__NAME="kit-check-$side" ARD__RUN__OUT_DIR="$work/runs" \
    "$bin" --log-level warn --config kit-check.toml --engine sequential --fresh
  step "check-eval-$side" env ARD__RUN__DEVICE="$d" "$bin" --log-level warn --config kit-check.toml \
    eval --arch wrn16_2 --weights weights/teacher.safetensors --attacks "$eval_attacks" \
    --test-limit "$test_limit" --json "$work/eval-$side.json"
done
IFS=, read -r -a student_list <<< "$students"
for s in "${student_list[@]}"; do
  step "bench-$s" env ARD__RUN__DEVICE="$device" ARD__STUDENT__ARCH="$s" "$bin" --log-level warn \
    --config kit-bench.toml bench --teachers "$teacher=$batches" --steps "$steps" \
    --soft-labels online,cached --variants "$variants" --sides "$sides" \
    --python "$py" --reference-script scripts/bench_reference.py --json "$work/bench-$s.json"
done
command -v nvidia-smi >/dev/null && nvidia-smi > "$work/nvidia-smi.txt" 2>&1
"$py" kit_report.py --work "$work" --device "$device" --out "$out"
