"""Evaluation-attack parity: PyTorch implementations written for this test
from the papers, run on the same weights, inputs and start points as the Rust
side (BatchNorm in eval mode throughout).

- PGD-k with restarts (Madry et al.): sign-gradient steps on the summed
  cross-entropy, projection to the eps-ball and [0, 1]; restart r > 0 attacks
  only the points that the current x_adv does not fool, and replaces x_adv
  where it fools the model.
- CW-inf: the same loop on the Carlini-Wagner margin
  -max(z_y - max_{i != y} z_i + kappa, 0).
- APGD (Croce & Hein 2020, Algorithm 1) with the CE, DLR and targeted DLR
  losses, the checkpoints p_0 = 0, p_1 = 0.22, p_{j+1} = p_j + max(p_j - p_{j-1}
  - 0.03, 0.06), step 2 eps halved at a checkpoint when (1) at most
  rho = 0.75 of the steps since the last one increased the loss over the
  iterate before (the first step of a run over 0) or (2) the step was not
  halved last time (nor is it the first checkpoint) and the best loss has not
  risen since; a halving restarts from the best point, the momentum term then
  best - x_k; momentum 0.75 (none on the first step). These follow the
  authors' code where it differs from the paper (see src/attacks/apgd.rs).
  Points misclassified clean are not attacked; each further run (restart or
  target class, ranks 2.. of the clean logits) attacks the unfooled points.

Writes `{name}.x_adv` and `{name}.correct` (the model is right on x_adv).
"""
import argparse
import json
import math

import torch
import torch.nn.functional as F
from safetensors.torch import load_file, save_file

import ref_models


def clip(v, lo, hi):
    return torch.min(torch.max(v, lo), hi).clamp(0.0, 1.0)


def label_logit(z, y):
    return z.gather(1, y.unsqueeze(1)).squeeze(1)


def best_other_logit(z, y):
    mask = F.one_hot(y, z.shape[1]).bool()
    return z.masked_fill(mask, float("-inf")).amax(1)


def cw_margin(z, y, kappa):
    return -(label_logit(z, y) - best_other_logit(z, y) + kappa).clamp(min=0.0)


def dlr(z, y):
    s = z.sort(dim=1, descending=True).values
    return -(label_logit(z, y) - best_other_logit(z, y)) / (s[:, 0] - s[:, 2] + 1e-12)


def dlr_targeted(z, y, t):
    s = z.sort(dim=1, descending=True).values
    return -(label_logit(z, y) - label_logit(z, t)) / (s[:, 0] - (s[:, 2] + s[:, 3]) * 0.5 + 1e-12)


def predict(model, x):
    with torch.no_grad():
        return model(x).argmax(1)


# ---- PGD / CW-inf ---------------------------------------------------------

def sign_steps(model, x, y, x0, eps, step, steps, objective, kappa):
    lo, hi = x - eps, x + eps
    xa = x0.detach().clone()
    for _ in range(steps):
        xa.requires_grad_(True)
        with torch.enable_grad():
            z = model(xa)
            if objective == "ce":
                loss = F.cross_entropy(z, y, reduction="sum")
            else:
                loss = cw_margin(z, y, kappa).sum()
        g, = torch.autograd.grad(loss, [xa])
        xa = clip(xa.detach() + step * torch.sign(g), lo, hi)
    return xa.detach()


def with_restarts(model, x, y, starts, run):
    xa = run(x, y, starts[0])
    for s in starts[1:]:
        todo = (predict(model, xa) == y).nonzero().squeeze(1)
        if todo.numel() == 0:
            break
        adv = run(x[todo], y[todo], s[todo])
        hit = predict(model, adv) != y[todo]
        xa[todo[hit]] = adv[hit]
    return xa


# ---- APGD -----------------------------------------------------------------

def apgd_checkpoints(n):
    out, p_prev, p = [], 0.0, 0.22
    while p <= 1.0:
        w = max(0, math.ceil(p * n - 1e-6))
        if w > 0 and (not out or w > out[-1]):
            out.append(w)
        p_prev, p = p, p + max(p - p_prev - 0.03, 0.06)
    return out


def apgd_single(model, x, y, t, x0, eps, n_iter, loss_name, alpha=0.75, rho=0.75):
    """One run of Algorithm 1; returns (x_adv, fooled)."""
    def f(z):
        if loss_name == "ce":
            return F.cross_entropy(z, y, reduction="none")
        if loss_name == "dlr":
            return dlr(z, y)
        return dlr_targeted(z, y, t)

    def value_and_grad(p):
        p = p.clone().requires_grad_(True)
        with torch.enable_grad():
            z = model(p)
            v = f(z)
        g, = torch.autograd.grad(v.sum(), [p])
        return v.detach(), g.detach(), z.detach().argmax(1) != y

    img = lambda m: m[:, None, None, None]
    lo, hi = x - eps, x + eps
    b = x.shape[0]
    xk = x0.detach().clone()
    f0, gk, wrong = value_and_grad(xk)
    fk = torch.zeros_like(f0)
    fooled = wrong.clone()
    found = xk.clone()
    x_max, f_max, g_max = xk.clone(), f0.clone(), gk.clone()
    x_before = xk.clone()
    eta = torch.full((b, 1, 1, 1), 2 * eps, dtype=x.dtype)
    ups = torch.zeros(b)
    f_max_prev_check = f_max.clone()
    halved_prev_check = torch.ones(b, dtype=torch.bool)
    W = set(apgd_checkpoints(n_iter))
    w_prev = 0
    for k in range(n_iter):
        if bool(fooled.all()):
            break
        z = clip(xk + eta * torch.sign(gk), lo, hi)
        if k == 0:
            x_new = z
        else:
            x_new = clip(xk + (z - xk) * alpha + (xk - x_before) * (1 - alpha), lo, hi)
        x_before, xk = xk, x_new
        f_new, g_new, wrong = value_and_grad(xk)
        first = wrong & ~fooled
        found = torch.where(img(first), xk, found)
        fooled = fooled | wrong
        ups += (f_new > fk).float()
        fk, gk = f_new, g_new
        better = fk > f_max
        x_max = torch.where(img(better), xk, x_max)
        g_max = torch.where(img(better), gk, g_max)
        f_max = torch.where(better, fk, f_max)
        if k + 1 in W:
            cond1 = ups <= rho * (k + 1 - w_prev)
            cond2 = ~halved_prev_check & (f_max <= f_max_prev_check)
            halve = cond1 | cond2
            eta = torch.where(img(halve), eta * 0.5, eta)
            xk = torch.where(img(halve), x_max, xk)
            gk = torch.where(img(halve), g_max, gk)
            halved_prev_check = halve
            f_max_prev_check = f_max.clone()
            ups = torch.zeros(b)
            w_prev = k + 1
    return torch.where(img(fooled), found, x_max), fooled


def apgd(model, x, y, starts, eps, n_iter, loss_name, restarts, targets):
    with torch.no_grad():
        clean = model(x)
    alive = clean.argmax(1) == y
    order = clean.argsort(dim=1, descending=True)
    xa = x.clone()
    for r, s in enumerate(starts):
        idx = alive.nonzero().squeeze(1)
        if idx.numel() == 0:
            break
        t = None
        if loss_name == "dlr_t":
            rank = 1 + r // restarts
            if rank > targets or rank >= clean.shape[1]:
                break
            t = order[idx, rank]
        adv, fooled = apgd_single(model, x[idx], y[idx], t, s[idx], eps, n_iter, loss_name)
        xa[idx] = adv
        alive[idx] = ~fooled
    return xa


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--arch", required=True)
    ap.add_argument("--weights", required=True)
    ap.add_argument("--io", required=True)
    ap.add_argument("--spec", required=True)
    ap.add_argument("--out", required=True)
    ap.add_argument("--checkpoints", type=int, nargs="*", default=[])
    a = ap.parse_args()
    torch.set_num_threads(1)
    model = ref_models.build(a.arch)
    model.load_state_dict(load_file(a.weights), strict=True)
    model.eval()
    io = load_file(a.io)
    out = {}
    for spec in json.load(open(a.spec)):
        name = spec["name"]
        prefix = spec.get("input", "")
        x, y = io[prefix + "x"], io[prefix + "y"]
        starts = [io[f"{name}.start.{i}"] for i in range(spec["runs"])]
        eps = spec["eps"]
        if spec["kind"] in ("pgd", "cw"):
            objective = "ce" if spec["kind"] == "pgd" else "cw"
            run = lambda xs, ys, s0: sign_steps(model, xs, ys, s0, eps, spec["step"], spec["steps"], objective,
                                                spec.get("kappa", 50.0))
            xa = with_restarts(model, x, y, starts, run)
        else:
            xa = apgd(model, x, y, starts, eps, spec["steps"], spec["loss"], spec["restarts"], spec.get("targets", 0))
        out[f"{name}.x_adv"] = xa.contiguous()
        out[f"{name}.correct"] = predict(model, xa) == y
    for n in a.checkpoints:
        print(json.dumps({"n": n, "checkpoints": apgd_checkpoints(n)}))
    save_file(out, a.out)


if __name__ == "__main__":
    main()
