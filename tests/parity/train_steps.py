"""Trainer parity: the paper's ARD loop in PyTorch over the batches, noise and
learning rates the Rust trainer used; saves the final student weights."""
import argparse
import json

import torch
from safetensors.torch import load_file, save_file

import ref_ard
import ref_models

ap = argparse.ArgumentParser()
ap.add_argument("--student-arch", required=True)
ap.add_argument("--teacher-arch", required=True)
ap.add_argument("--student", required=True)
ap.add_argument("--teacher", required=True)
ap.add_argument("--batches", required=True, help="safetensors with step{i}.x, .y, .noise, .lr")
ap.add_argument("--cfg", required=True)
ap.add_argument("--out", required=True)
a = ap.parse_args()
torch.set_num_threads(1)
cfg = json.loads(a.cfg)
student = ref_models.build(a.student_arch)
student.load_state_dict(load_file(a.student), strict=True)
teacher = ref_models.build(a.teacher_arch)
teacher.load_state_dict(load_file(a.teacher), strict=True)
make_opt = torch.optim.SGD if cfg.get("optimizer", "torch") == "torch" else ref_ard.MirroredSGD
opt = make_opt(student.parameters(), lr=cfg["lr"], momentum=cfg["momentum"],
                      weight_decay=cfg["weight_decay"], nesterov=cfg.get("nesterov", False))
b = load_file(a.batches)
losses = []
for i in range(cfg["steps"]):
    losses.append(ref_ard.ard_step(student, teacher, opt, b[f"step{i}.x"], b[f"step{i}.y"], b[f"step{i}.noise"],
                                   cfg, float(b[f"step{i}.lr"].item())))
save_file({k: v.contiguous() for k, v in student.state_dict().items()}, a.out)
print(json.dumps({"losses": losses}))
