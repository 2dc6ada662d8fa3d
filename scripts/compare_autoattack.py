"""Compares `ard-pipeline eval --attacks autoattack` with the authors' AutoAttack
(PyPI `pyautoattack`, `run_standard_evaluation`, version standard, L-inf) on
the same checkpoint and the first N CIFAR-10 test images, on this machine:
robust accuracy of each, the images whose verdicts differ, and the seconds of
each attack. The authors' side runs twice, as users run it and with the glibc
malloc tunables the project's own process sets (`perf.malloc_reuse`), each on
every core (`torch.set_num_threads(os.cpu_count())`), the model a PyTorch
definition (tests/parity/ref_models.py) loading the same safetensors.

    .venv/bin/python scripts/compare_autoattack.py --arch mobilenet_v2_x0.5 \\
        --weights weights/student-ard1-mobilenet_v2_x0.5.safetensors --n 1000 \\
        --out runs/aa-compare/student-ard1

Each side writes its result into --out when it ends, and a side whose result
is there is not run again: after a stop, the same command continues. The
report goes to OUT/report.md and OUT/report.json (and stdout).
"""
import argparse
import json
import os
import re
import subprocess
import sys
import time

import numpy as np
import torch
from safetensors.torch import load_file, save_file

HERE = os.path.dirname(os.path.abspath(__file__))
ROOT = os.path.dirname(HERE)
REFERENCE = os.path.join(ROOT, "tests", "parity", "autoattack_ref.py")
MALLOC_TUNABLES = "glibc.malloc.arena_max=1:glibc.malloc.mmap_max=0:glibc.malloc.trim_threshold=2147483647"
# The authors' names of the four attacks, in order, and ours.
PARTS = [("apgd-ce", "apgd_ce"), ("apgd-t", "apgd_t"), ("fab-t", "fab_t"), ("square", "square")]


def write_images(data, n, path):
    raw = np.fromfile(os.path.join(data, "test_batch.bin"), dtype=np.uint8).reshape(-1, 3073)[:n]
    x = torch.from_numpy(raw[:, 1:].reshape(-1, 3, 32, 32).astype(np.float32) / 255.0)
    y = torch.from_numpy(raw[:, 0].astype(np.int64))
    save_file({"x": x.contiguous(), "y": y}, path)


def timed(cmd, env, log):
    began = time.time()
    with open(log, "w") as f:
        code = subprocess.call(cmd, env=env, stdout=f, stderr=subprocess.STDOUT, cwd=ROOT)
    if code != 0:
        sys.exit(f"compare_autoattack: {' '.join(cmd)} failed (exit {code}); see {log}")
    return time.time() - began


def run_ours(a, io, out):
    json_path, masks = os.path.join(out, "ours.json"), os.path.join(out, "ours.safetensors")
    cmd = [a.binary, "eval", "--arch", a.arch, "--weights", a.weights, "--attacks", "autoattack",
           "--eps", "8/255", "--test-limit", str(a.n), "--batch-size", str(a.batch_size),
           "--data-root", a.data, "--json", json_path + ".part", "--save-logits", masks + ".part"]
    wall = timed(cmd, dict(os.environ), os.path.join(out, "ours.log"))
    report = json.load(open(json_path + ".part"))
    robust = load_file(masks + ".part")["correct.autoattack"].bool()
    parts = {p["name"]: p["seconds"] for p in report["parts"]["autoattack"] if p["name"] != "clean"}
    result = {"wall_s": wall, "parts_s": parts, "robust": 100.0 * robust.double().mean().item()}
    save_file({"robust": robust}, masks)
    json.dump(result, open(json_path, "w"), indent=1)
    os.remove(json_path + ".part")
    os.remove(masks + ".part")


def run_theirs(a, io, out, name, tuned):
    env = dict(os.environ)
    env.pop("GLIBC_TUNABLES", None)
    if tuned:
        env["GLIBC_TUNABLES"] = MALLOC_TUNABLES
    masks = os.path.join(out, f"{name}.safetensors")
    cmd = [sys.executable, REFERENCE, "--mode", "autoattack", "--arch", a.arch, "--weights", a.weights,
           "--io", io, "--out", masks + ".part", "--eps", str(8 / 255),
           "--batch-size", str(a.batch_size), "--threads", str(os.cpu_count())]
    log = os.path.join(out, f"{name}.log")
    wall = timed(cmd, env, log)
    info = json.loads(open(log).read().strip().splitlines()[-1])
    # "robust accuracy after APGD-CE: 30.50% (total time 123.4 s)": cumulative seconds.
    parts, before = {}, 0.0
    for line in info["steps"]:
        m = re.match(r"robust accuracy after (\S+): .* \(total time ([0-9.]+) s\)", line)
        if m:
            ours = dict(PARTS)[m.group(1).lower()]
            parts[ours], before = float(m.group(2)) - before, float(m.group(2))
    result = {"wall_s": wall, "parts_s": parts, "robust": info["robust"]}
    os.replace(masks + ".part", masks)
    json.dump(result, open(os.path.join(out, f"{name}.json"), "w"), indent=1)


def report(a, out):
    sides = {name: json.load(open(os.path.join(out, f"{name}.json")))
             for name in ("ours", "theirs-plain", "theirs-tuned")}
    masks = {name: load_file(os.path.join(out, f"{name}.safetensors"))["robust"].bool()
             for name in sides}
    differ = {name: int((masks["ours"] != masks[name]).sum()) for name in ("theirs-plain", "theirs-tuned")}
    lines = [f"AutoAttack (standard, L-inf, eps 8/255), {a.arch}, {os.path.basename(a.weights)}, "
             f"first {a.n} test images, batch {a.batch_size}, {os.cpu_count()} threads",
             "", "| | robust accuracy | verdicts differing from ours | "
             + " | ".join(f"{p} s" for _, p in PARTS) + " | total s | ours faster by |",
             "|---|---|---|" + "---|" * len(PARTS) + "---|---|"]
    for name, side in sides.items():
        speed = "" if name == "ours" else f"{side['wall_s'] / sides['ours']['wall_s']:.2f}x"
        lines.append(f"| {name} | {side['robust']:.2f}% | {differ.get(name, '')} | "
                     + " | ".join(f"{side['parts_s'].get(p, 0.0):.0f}" for _, p in PARTS)
                     + f" | {side['wall_s']:.0f} | {speed} |")
    text = "\n".join(lines) + "\n"
    open(os.path.join(out, "report.md"), "w").write(text)
    json.dump({"n": a.n, "arch": a.arch, "weights": a.weights, "sides": sides, "differ": differ},
              open(os.path.join(out, "report.json"), "w"), indent=1)
    print(text)


def main():
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--arch", required=True)
    p.add_argument("--weights", required=True)
    p.add_argument("--n", type=int, default=1000)
    p.add_argument("--batch-size", type=int, default=250)
    p.add_argument("--out", required=True)
    p.add_argument("--data", default=os.path.join(ROOT, "data", "cifar-10-batches-bin"))
    p.add_argument("--binary", default=os.path.join(ROOT, "target", "release", "ard-pipeline"))
    a = p.parse_args()
    a.weights = os.path.abspath(a.weights)
    os.makedirs(a.out, exist_ok=True)
    io = os.path.join(a.out, "images.safetensors")
    if not os.path.exists(io):
        write_images(a.data, a.n, io)
    steps = [("ours", lambda: run_ours(a, io, a.out)),
             ("theirs-plain", lambda: run_theirs(a, io, a.out, "theirs-plain", tuned=False)),
             ("theirs-tuned", lambda: run_theirs(a, io, a.out, "theirs-tuned", tuned=True))]
    for name, step in steps:
        if os.path.exists(os.path.join(a.out, f"{name}.json")):
            print(f"skip {name} ({name}.json exists)", flush=True)
            continue
        print(f"{time.strftime('%H:%M:%S')} {name} ...", flush=True)
        step()
    report(a, a.out)


if __name__ == "__main__":
    main()
