"""The device kit's report: reads what run.sh left in its work folder and
writes one JSON file with the verdicts.

- check.weights: the five ARD steps on the CPU and on the device end at
  weights W_cpu and W_dev from the same start W0. The tolerance is on the
  update: ||(W_dev - W0) - (W_cpu - W0)|| / ||W_cpu - W0|| <= 0.05 over every
  floating-point tensor (BatchNorm statistics included), also given as the
  max abs difference. Why 5% of the update and not bit equality: cuDNN
  convolutions run in TF32 by default (10-bit mantissa) and sum in another
  order, and a PGD step takes the sign of the input gradient, so pixels whose
  gradient is near zero can flip; both are legitimate, and both stay far
  below the update itself. On a CPU dry run both sides are the CPU and the
  difference must be exactly 0.
- check.eval: each evaluation's accuracy on the same checkpoint and the same
  test images, CPU vs device, within 0.5 points.
- bench: the `ard-pipeline bench` reports per student, as written.
"""
import argparse
import json
import math
import os
import sys

HERE = os.path.dirname(os.path.abspath(__file__))
sys.path.insert(0, os.path.join(HERE, "scripts"))
from bench_reference import load_safetensors  # noqa: E402

UPDATE_TOLERANCE = 0.05
EVAL_TOLERANCE_POINTS = 0.5


def read_json(path):
    try:
        with open(path) as f:
            return json.load(f)
    except (OSError, ValueError) as e:
        return {"error": f"{path}: {e}"}


def weights_check(work, kit):
    start = os.path.join(kit, "weights", "teacher.safetensors")
    paths = {side: os.path.join(work, "runs", f"kit-check-{side}", "final.safetensors") for side in ("cpu", "device")}
    missing = [p for p in [start, *paths.values()] if not os.path.isfile(p)]
    if missing:
        return {"ok": False, "error": "missing " + ", ".join(missing)}
    w0 = load_safetensors(start)
    cpu = load_safetensors(paths["cpu"])
    dev = load_safetensors(paths["device"])
    diff_sq = upd_sq = 0.0
    max_abs = 0.0
    worst = None
    for name, a in cpu.items():
        if not a.is_floating_point():
            continue
        b = dev[name].double()
        a = a.double()
        d = (b - a).abs().max().item() if a.numel() else 0.0
        if d > max_abs:
            max_abs, worst = d, name
        diff_sq += float(((b - a) ** 2).sum())
        if name in w0:
            upd_sq += float(((a - w0[name].double()) ** 2).sum())
    relative = math.sqrt(diff_sq) / max(math.sqrt(upd_sq), 1e-30)
    return {
        "tensors": len(cpu),
        "update_norm": math.sqrt(upd_sq),
        "difference_norm": math.sqrt(diff_sq),
        "relative_to_update": relative,
        "max_abs_difference": max_abs,
        "max_abs_difference_tensor": worst,
        "tolerance_relative_to_update": UPDATE_TOLERANCE,
        "ok": relative <= UPDATE_TOLERANCE and upd_sq > 0,
    }


def eval_check(work):
    cpu = read_json(os.path.join(work, "eval-cpu.json"))
    dev = read_json(os.path.join(work, "eval-device.json"))
    if "error" in cpu or "error" in dev:
        return {"ok": False, "cpu": cpu, "device": dev}
    rows = {}
    for name, a in cpu["accuracy"].items():
        b = dev["accuracy"].get(name)
        rows[name] = {"cpu": a, "device": b, "difference": None if b is None else b - a}
    rows["worst_case"] = {"cpu": cpu["worst_case"], "device": dev["worst_case"],
                          "difference": dev["worst_case"] - cpu["worst_case"]}
    ok = all(r["difference"] is not None and abs(r["difference"]) <= EVAL_TOLERANCE_POINTS for r in rows.values())
    return {"images": cpu["images"], "accuracy": rows, "seconds": {"cpu": cpu.get("seconds"), "device": dev.get("seconds")},
            "tolerance_points": EVAL_TOLERANCE_POINTS, "ok": ok and cpu["images"] == dev["images"]}


def main():
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--work", required=True)
    p.add_argument("--device", required=True)
    p.add_argument("--out", required=True)
    a = p.parse_args()
    kit = HERE
    steps = []
    with open(os.path.join(a.work, "steps.tsv")) as f:
        for line in f:
            name, rc, ms = line.rstrip("\n").split("\t")
            entry = {"step": name, "rc": int(rc), "seconds": int(ms) / 1000.0}
            if int(rc) != 0:
                with open(os.path.join(a.work, "logs", f"{name}.log"), errors="replace") as log:
                    entry["output_tail"] = log.read()[-4000:]
            steps.append(entry)
    benches = {}
    for name in sorted(os.listdir(a.work)):
        if name.startswith("bench-") and name.endswith(".json"):
            benches[name[len("bench-"):-len(".json")]] = read_json(os.path.join(a.work, name))
    smi = os.path.join(a.work, "nvidia-smi.txt")
    report = {
        "device": a.device,
        "steps": steps,
        "doctor": read_json(os.path.join(a.work, "doctor.json")),
        "check": {"weights": weights_check(a.work, kit), "eval": eval_check(a.work)},
        "bench": benches,
        "nvidia_smi": open(smi).read() if os.path.isfile(smi) else None,
    }
    report["ok"] = (all(s["rc"] == 0 for s in steps) and report["check"]["weights"]["ok"]
                    and report["check"]["eval"]["ok"])
    if a.device == "cpu":
        # Both sides ran on the CPU: the runs must agree bit for bit.
        w = report["check"]["weights"]
        report["ok"] = report["ok"] and w.get("difference_norm") == 0.0
    tmp = a.out + ".tmp"
    with open(tmp, "w") as f:
        json.dump(report, f, indent=2)
        f.write("\n")
    os.replace(tmp, a.out)
    w, e = report["check"]["weights"], report["check"]["eval"]
    print(f"kit report {a.out}: ok={report['ok']}; steps failed: "
          f"{[s['step'] for s in steps if s['rc'] != 0] or 'none'}; weights relative to update "
          f"{w.get('relative_to_update')} (max abs {w.get('max_abs_difference')}); eval ok={e['ok']}")
    return 0 if report["ok"] else 1


if __name__ == "__main__":
    sys.exit(main())
