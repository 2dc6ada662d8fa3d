"""PyTorch reference of the ARD pieces, written for the parity tests from the
papers' descriptions: the sign-gradient attacks (ARD/Madry PGD, RSLAD's KL
attack, TRADES), the losses (ARD, RSLAD, PGD-AT, TRADES, the paper's
Algorithm 1) and one ARD training step with torch.optim.SGD."""
import torch
import torch.nn.functional as F


def attack(model, x, y, x_start, eps, step, steps, objective, train_bn, teacher_logits=None):
    """k steps of x' <- clamp(proj(x' + step*sign(grad)), 0, 1) from x_start."""
    model.train(train_bn)
    x = x.detach()
    target = None
    if objective == "kl_teacher":
        target = F.softmax(teacher_logits.detach(), dim=1)
    elif objective == "kl_clean":
        with torch.no_grad():
            target = F.softmax(model(x), dim=1)
    x_adv = x_start.detach().clone()
    for _ in range(steps):
        x_adv.requires_grad_(True)
        with torch.enable_grad():
            logits = model(x_adv)
            if objective == "ce":
                loss = F.cross_entropy(logits, y, reduction="sum")
            else:
                loss = F.kl_div(F.log_softmax(logits, dim=1), target, reduction="sum")
        grad, = torch.autograd.grad(loss, [x_adv])
        x_adv = x_adv.detach() + step * torch.sign(grad.detach())
        x_adv = torch.min(torch.max(x_adv, x - eps), x + eps).clamp(0.0, 1.0)
    return x_adv.detach()


def kl(log_q, p, reduction):
    if reduction == "mean":
        return F.kl_div(log_q, p, reduction="mean")
    return F.kl_div(log_q, p, reduction="sum") / log_q.shape[0]


def loss(kind, s_adv, s_clean, t, y, cfg):
    red = cfg.get("kl_reduction", "mean")
    if kind == "ard":
        T, a = cfg["temperature"], cfg["alpha"]
        out = a * T * T * kl(F.log_softmax(s_adv / T, dim=1), F.softmax(t / T, dim=1), red)
        if s_clean is not None:
            out = out + (1.0 - a) * F.cross_entropy(s_clean, y)
        return out
    if kind == "rslad":
        p = F.softmax(t, dim=1)
        return cfg["rslad_adv_weight"] * kl(F.log_softmax(s_adv, dim=1), p, red) + \
            cfg["rslad_nat_weight"] * kl(F.log_softmax(s_clean, dim=1), p, red)
    if kind == "pgd_at":
        return F.cross_entropy(s_adv, y)
    if kind == "trades":
        return F.cross_entropy(s_clean, y) + cfg["beta"] * kl(F.log_softmax(s_adv, dim=1), F.softmax(s_clean, dim=1), red)
    if kind == "paper_alg1":
        p = F.softmax(t, dim=1)
        soft_ce = -(p * F.log_softmax(s_clean, dim=1)).sum(dim=1).mean()
        return soft_ce + cfg["lambda"] * F.cross_entropy(s_adv, y)
    raise ValueError(kind)


class MirroredSGD:
    """torch.optim.SGD's update (dampening 0) written with separate multiply
    and add, the operation order of the Rust optimiser. torch.optim.SGD fuses
    `a + alpha*b` (one rounding with FMA in its vector loop); over several
    steps the sign-gradient attack turns that last-bit difference into large
    ones (measured: 0.55 relative after 10 one-step ARD steps), so multi-step
    parity needs the same arithmetic; one step is checked against torch.optim.SGD
    itself."""

    def __init__(self, params, lr, momentum, weight_decay, nesterov=False):
        self.params = list(params)
        self.momentum, self.weight_decay, self.nesterov = momentum, weight_decay, nesterov
        self.bufs = [None] * len(self.params)
        self.param_groups = [{"lr": lr}]

    def zero_grad(self):
        for p in self.params:
            p.grad = None

    @torch.no_grad()
    def step(self):
        lr = self.param_groups[0]["lr"]
        for i, p in enumerate(self.params):
            if p.grad is None:
                continue
            d_p = p.grad + p * self.weight_decay if self.weight_decay else p.grad
            if self.momentum:
                if self.bufs[i] is None:
                    self.bufs[i] = d_p.clone()
                else:
                    self.bufs[i].mul_(self.momentum).add_(d_p)
                d_p = d_p + self.bufs[i] * self.momentum if self.nesterov else self.bufs[i]
            p.sub_(d_p * lr)


def ard_step(student, teacher, opt, x, y, noise, cfg, lr):
    """One step of ARD's loop as the paper's notebooks run it: attack on the
    student in train mode from x + noise, teacher on clean x, loss on S(x_adv)
    (and S(x) when used or for BN), SGD step."""
    teacher.eval()
    with torch.no_grad():
        t = teacher(x)
    a = cfg["attack"]
    x_adv = attack(student, x, y, x + noise, a["eps"], a["step_size"], a["steps"], a.get("objective", "ce"),
                   a.get("train_bn", True), t)
    student.train()
    s_adv = student(x_adv)
    s_clean = student(x) if cfg.get("clean_forward", True) else None
    value = loss(cfg["loss"], s_adv, s_clean, t, y, cfg)
    for g in opt.param_groups:
        g["lr"] = lr
    opt.zero_grad()
    value.backward()
    opt.step()
    return value.item()
