"""AutoAttack reference: the authors' code (PyPI `pyautoattack` 0.2.0, module
`pyautoattack`) on the same weights and images as the Rust side, the model a
PyTorch definition loading the same safetensors, BatchNorm in eval mode.

Modes (each writes `--out`, a safetensors file, and prints one JSON line):
- `fab`: FAB-T as AutoAttack's standard version runs it (9 target classes,
  1 restart from the clean point, alpha_max 0.1, eta 1.05, beta 0.9):
  `robust` [N] bool, the model right on the attack's output within eps.
- `apgd`: single APGD runs (`attack_single_run`) from given start points
  `start` ([N, 3, 32, 32]): APGD-CE and APGD-T towards the 2nd-ranked clean
  class, 100 iterations; `ce.fooled` and `t.fooled` [N] bool.
- `autoattack`: `AutoAttack(norm='Linf', version='standard')
  .run_standard_evaluation`: `robust` [N] bool, and the robust accuracy after
  each attack and the seconds in the JSON line.
"""
import argparse
import json
import logging
import time

import torch
from safetensors.torch import load_file, save_file

from pyautoattack import AutoAttack
from pyautoattack.autopgd_base import APGDAttack, APGDAttack_targeted
from pyautoattack.fab_pt import FABAttack_PT

import ref_models


def robust_mask(model, x_adv, x, y, eps):
    with torch.no_grad():
        right = model(x_adv).argmax(1) == y
    far = (x_adv - x).abs().flatten(1).amax(1) > eps + 1e-6
    return right | far


def run_fab(model, x, y, eps, iterations):
    fab = FABAttack_PT(model, norm="Linf", n_restarts=1, n_iter=iterations, eps=eps,
                       seed=0, targeted=True, n_target_classes=9, device="cpu")
    began = time.time()
    adv = fab.perturb(x, y)
    seconds = time.time() - began
    robust = robust_mask(model, adv, x, y, eps)
    return {"robust": robust}, {"seconds": seconds, "robust": 100.0 * robust.double().mean().item()}


def run_apgd(model, x, y, eps, start):
    out = {}
    ce = APGDAttack(model, n_iter=100, norm="Linf", n_restarts=1, eps=eps, loss="ce",
                    rho=0.75, device="cpu")
    ce.init_hyperparam(x)
    _, acc, _, _ = ce.attack_single_run(x, y, x_init=start)
    out["ce.fooled"] = ~acc
    t = APGDAttack_targeted(model, n_iter=100, norm="Linf", n_restarts=1, eps=eps,
                            rho=0.75, n_target_classes=9, device="cpu")
    t.init_hyperparam(x)
    with torch.no_grad():
        t.y_target = model(x).sort(dim=1)[1][:, -2]
    _, acc, _, _ = t.attack_single_run(x, y, x_init=start)
    out["t.fooled"] = ~acc
    return out, {}


class Lines(logging.Handler):
    def __init__(self):
        super().__init__(logging.DEBUG)
        self.lines = []

    def emit(self, record):
        self.lines.append(record.getMessage())


def run_autoattack(model, x, y, eps, batch_size):
    lines = Lines()
    logger = logging.getLogger("auto-attack")
    logger.setLevel(logging.DEBUG)
    logger.addHandler(lines)
    aa = AutoAttack(model, norm="Linf", eps=eps, version="standard", seed=0, device="cpu")
    began = time.time()
    adv, _ = aa.run_standard_evaluation(x, y, batch_size=batch_size)
    seconds = time.time() - began
    robust = robust_mask(model, adv, x, y, eps)
    steps = [l for l in lines.lines if l.startswith(("initial accuracy", "robust accuracy after"))]
    return {"robust": robust}, {"seconds": seconds, "steps": steps,
                                "robust": 100.0 * robust.double().mean().item()}


def main():
    p = argparse.ArgumentParser()
    p.add_argument("--mode", choices=["fab", "apgd", "autoattack"], required=True)
    p.add_argument("--arch", required=True)
    p.add_argument("--weights", required=True)
    p.add_argument("--io", required=True, help="safetensors with x, y (and start)")
    p.add_argument("--out", required=True)
    p.add_argument("--eps", type=float, required=True)
    p.add_argument("--iterations", type=int, default=100)
    p.add_argument("--batch-size", type=int, default=250)
    p.add_argument("--threads", type=int, default=1)
    a = p.parse_args()
    torch.set_num_threads(a.threads)
    model = ref_models.build(a.arch)
    model.load_state_dict(load_file(a.weights), strict=True)
    model.eval()
    io = load_file(a.io)
    x, y = io["x"].float(), io["y"].long()
    if a.mode == "fab":
        out, info = run_fab(model, x, y, a.eps, a.iterations)
    elif a.mode == "apgd":
        out, info = run_apgd(model, x, y, a.eps, io["start"].float())
    else:
        out, info = run_autoattack(model, x, y, a.eps, a.batch_size)
    save_file({k: v.contiguous() for k, v in out.items()}, a.out)
    print(json.dumps(info))


if __name__ == "__main__":
    main()
