"""Attack parity: runs the reference attacks on the same weights, inputs and
start points as the Rust side, and saves x_adv plus the BatchNorm running
statistics each attack leaves behind (each attack starts from fresh weights)."""
import argparse
import json

import torch
from safetensors.torch import load_file, save_file

import ref_ard
import ref_models

ap = argparse.ArgumentParser()
ap.add_argument("--arch", required=True)
ap.add_argument("--weights", required=True)
ap.add_argument("--io", required=True)
ap.add_argument("--spec", required=True, help="JSON list of {name, eps, step_size, steps, objective, train_bn}")
ap.add_argument("--out", required=True)
a = ap.parse_args()
torch.set_num_threads(1)
io = load_file(a.io)
out = {}
for spec in json.loads(a.spec):
    model = ref_models.build(a.arch)
    model.load_state_dict(load_file(a.weights), strict=True)
    name = spec["name"]
    x_adv = ref_ard.attack(model, io["x"], io["y"], io[f"{name}.x_start"], spec["eps"], spec["step_size"],
                           spec["steps"], spec["objective"], spec["train_bn"], io.get("teacher_logits"))
    out[f"{name}.x_adv"] = x_adv
    for k, v in model.state_dict().items():
        if k.endswith("running_mean") or k.endswith("running_var"):
            out[f"{name}.state.{k}"] = v.clone()
save_file(out, a.out)
