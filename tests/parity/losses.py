"""Loss parity: values and gradients with respect to every logits input."""
import argparse
import json

import torch
from safetensors.torch import load_file, save_file

import ref_ard

ap = argparse.ArgumentParser()
ap.add_argument("--io", required=True)
ap.add_argument("--spec", required=True, help="JSON list of {name, kind, ...loss config}")
ap.add_argument("--out", required=True)
a = ap.parse_args()
torch.set_num_threads(1)
io = load_file(a.io)
out = {}
for spec in json.loads(a.spec):
    s_adv = io["s_adv"].clone().double().requires_grad_(True)
    s_clean = io["s_clean"].clone().double().requires_grad_(True)
    t = io["t"].double()
    value = ref_ard.loss(spec["kind"], s_adv, s_clean if spec.get("clean", True) else None, t, io["y"], spec)
    g_adv, g_clean = torch.autograd.grad(value, [s_adv, s_clean], allow_unused=True)
    name = spec["name"]
    out[f"{name}.value"] = value.detach().reshape(1)
    out[f"{name}.grad_adv"] = g_adv
    out[f"{name}.grad_clean"] = g_clean if g_clean is not None else torch.zeros_like(s_clean)
save_file(out, a.out)
