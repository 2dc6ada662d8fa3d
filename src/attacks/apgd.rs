//! Auto-PGD (APGD, Croce & Hein, "Reliable evaluation of adversarial
//! robustness with an ensemble of diverse parameter-free attacks", ICML 2020),
//! L-inf, written from the paper. The loss is chosen by the three builders:
//! `apgd_ce` (cross-entropy), `apgd_dlr` (DLR) and `apgd_t` (targeted DLR).
//!
//! One run of N iterations, per sample (P: projection to the eps-ball around x
//! and to [0, 1]; f: the loss; every quantity below is per sample):
//!
//! ```text
//! x0 = start; eta = 2 eps; x_best = x0; f_best = f(x0)
//! for k in 0..N:
//!     z      = P(x_k + eta * sign(grad f(x_k)))
//!     x_k+1  = z                                                  (k = 0)
//!            = P(x_k + a (z - x_k) + (1 - a)(x_k - x_k-1))         (k > 0, a = 0.75)
//!     count f(x_k+1) > f(x_k); keep x_best = argmax f over the iterates
//!     if k+1 is a checkpoint w_j:
//!         halve eta, and continue from x_best (x_k+1 = x_best), where
//!           (1) increases since w_j-1  <=  rho (w_j - w_j-1),   rho = 0.75, or
//!           (2) eta was not halved at w_j-1 and f_best has not risen since w_j-1
//! ```
//!
//! Checkpoints: `w_j = ceil(p_j N)` with `p_0 = 0, p_1 = 0.22,
//! p_j+1 = p_j + max(p_j - p_j-1 - 0.03, 0.06)` while `p_j <= 1`
//! (N = 100: 22, 41, 57, 70, 80, 87, 93, 99). N iterations take N + 1 gradients.
//!
//! The result of a run is, per sample, the first iterate the model
//! misclassifies (f is evaluated on every iterate, x0 included), else x_best.
//! As in AutoAttack, samples the model already misclassifies on clean inputs
//! are not attacked (x itself is returned), and each further run (restart, or
//! target class for `apgd_t`) attacks only the samples no run has fooled yet.
//! Starts are `clamp(x + eps u / max|u|, 0, 1)` with u ~ U(-1, 1) per pixel
//! (AutoAttack's), drawn from seeded host noise: run r under
//! `restart_key(key, r)`. BatchNorm runs in eval mode; only input gradients
//! are taken.
//!
//! Where the paper leaves a choice open or the authors' code (`pyautoattack`
//! 0.2.0, `autopgd_base.py`) differs from it, this follows the code: a
//! "successful" step is a strict increase of f over the previous iterate,
//! counted over the steps since the last checkpoint, each against the iterate
//! before it (also across a halving), the run's first step against 0 (the
//! code's loss history starts at zero); condition (1) halves at a count <=
//! rho h (the paper: <); condition (2) never fires at the first checkpoint;
//! after a halving the momentum term is `x_best - x_k` (the step before the
//! jump), not zero; the denominators of DLR carry `+ 1e-12`. A sample leaves
//! the run once it is fooled (its result is fixed and every quantity is per
//! sample, so this changes no result; the authors' code iterates on it to the
//! end), so a run costs what is still robust.

use super::margin::{dlr, dlr_targeted};
use super::restarts::{restart_key, where_true, SubInput};
use super::{noise, Attack, AttackInput, NoiseKey};
use crate::error::{Error, Result};
use crate::models::Model;
use tch::{Kind, Reduction, Tensor};

/// What APGD maximises.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ApgdLoss {
    /// Cross-entropy on the true labels (`apgd_ce`).
    CrossEntropy,
    /// Difference of logits ratio `-(z_y - max_{i != y} z_i) / (z_pi1 - z_pi3)`
    /// (`apgd_dlr`): invariant to shifts and rescaling of the logits, so not
    /// fooled by logit scaling that flattens the cross-entropy.
    Dlr,
    /// Targeted DLR `-(z_y - z_t) / (z_pi1 - (z_pi3 + z_pi4) / 2)` towards each
    /// of the `targets` classes with the highest clean logits after the top
    /// one, one run per target, on the samples no earlier target has fooled;
    /// success is any misclassification (`apgd_t`, AutoAttack's `apgd-t`).
    TargetedDlr { targets: usize },
}

/// Momentum of APGD's update (alpha in the paper).
pub const APGD_MOMENTUM: f64 = 0.75;
/// Fraction of successful steps below which the step size halves (rho).
pub const APGD_RHO: f64 = 0.75;

/// The APGD attack: see the module docs.
#[derive(Debug, Clone, Copy)]
pub struct Apgd {
    pub eps: f64,
    /// Iterations N per run.
    pub iterations: usize,
    pub loss: ApgdLoss,
    /// Runs per loss (per target class for the targeted loss), at least 1.
    pub restarts: usize,
}

/// The checkpoints `w_j` (j >= 1) of a run of `n` iterations, increasing.
pub fn checkpoints(n: usize) -> Vec<usize> {
    let (mut prev, mut p) = (0.0f64, 0.22f64);
    let mut out: Vec<usize> = Vec::new();
    while p <= 1.0 {
        // The tolerance keeps 0.41 * 100 = 41.000000000000004 at 41.
        let w = (p * n as f64 - 1e-6).ceil().max(0.0) as usize;
        if w > 0 && out.last().is_none_or(|&last| w > last) {
            out.push(w);
        }
        let next = p + (p - prev - 0.03).max(0.06);
        prev = p;
        p = next;
    }
    out
}

/// Per-sample value and input gradient of the loss at one point.
struct Point {
    loss: Tensor,
    grad: Tensor,
    wrong: Tensor,
}

impl Apgd {
    fn with_loss(eps: f64, iterations: usize, restarts: usize, loss: ApgdLoss) -> Apgd {
        Apgd {
            eps,
            iterations,
            loss,
            restarts,
        }
    }

    fn loss_name(&self) -> &'static str {
        match self.loss {
            ApgdLoss::CrossEntropy => "apgd_ce",
            ApgdLoss::Dlr => "apgd_dlr",
            ApgdLoss::TargetedDlr { .. } => "apgd_t",
        }
    }

    /// Runs in all: restarts, times target classes for the targeted loss.
    pub fn runs(&self) -> usize {
        let per = self.restarts.max(1);
        match self.loss {
            ApgdLoss::TargetedDlr { targets } => per * targets,
            _ => per,
        }
    }

    fn check(&self, x: &Tensor) -> Result<()> {
        let bad = |m: String| Err(Error::attack(self.loss_name(), m));
        if self.eps.is_nan() || self.eps <= 0.0 {
            return bad(format!("eps must be positive, got {}", self.eps));
        }
        if self.iterations == 0 {
            return bad("needs at least 1 iteration".into());
        }
        if let ApgdLoss::TargetedDlr { targets } = self.loss {
            if targets == 0 {
                return bad("needs at least 1 target class".into());
            }
        }
        if x.dim() != 4 {
            return bad(format!("expects images [B, C, H, W], got {:?}", x.size()));
        }
        Ok(())
    }

    fn evaluate(
        &self,
        model: &Model,
        x: &Tensor,
        y: &Tensor,
        target: Option<&Tensor>,
    ) -> Result<Point> {
        let x_var = x.detach().set_requires_grad(true);
        let logits = model.forward_t(&x_var, false);
        let loss = match (self.loss, target) {
            (ApgdLoss::CrossEntropy, _) => {
                logits.f_cross_entropy_loss::<Tensor>(y, None, Reduction::None, -100, 0.0)?
            }
            (ApgdLoss::Dlr, _) => dlr(&logits, y)?,
            (ApgdLoss::TargetedDlr { .. }, Some(t)) => dlr_targeted(&logits, y, t)?,
            (ApgdLoss::TargetedDlr { .. }, None) => {
                return Err(Error::attack("apgd_t", "a run without a target class"))
            }
        };
        let grad = Tensor::run_backward(&[&loss.sum(Kind::Float)], &[&x_var], false, false)
            .pop()
            .ok_or_else(|| Error::attack(self.loss_name(), "no input gradient"))?;
        let wrong = logits.detach().argmax(-1, false).f_ne_tensor(y)?;
        Ok(Point {
            loss: loss.detach(),
            grad,
            wrong,
        })
    }

    /// One APGD run from `x_start` on (x, y), towards `target` for the
    /// targeted loss. Returns x_adv [B, ...] and whether it fooled the model [B].
    pub fn run_once(
        &self,
        model: &Model,
        x: &Tensor,
        y: &Tensor,
        target: Option<&Tensor>,
        x_start: &Tensor,
    ) -> Result<(Tensor, Tensor)> {
        self.check(x)?;
        let (start, shape) = (x_start.size(), x.size());
        if start != shape {
            let message = format!("start {start:?} and input {shape:?} differ in shape");
            return Err(Error::attack(self.loss_name(), message));
        }
        tch::with_grad(|| -> Result<(Tensor, Tensor)> {
            let x_start = x_start.detach();
            let p0 = self.evaluate(model, &x_start, y, target)?;
            // Fooled samples keep the iterate that fooled them (x0 here).
            let mut x_out = x_start.copy();
            let mut fooled = p0.wrong.zeros_like();
            let mut s = RunState::new(x, y, target, x_start, p0, self.eps);
            s.retire_fooled(&mut fooled)?;
            let checks = checkpoints(self.iterations);
            let mut last_check = 0usize;
            for k in 0..self.iterations {
                if s.rows.numel() == 0 {
                    break;
                }
                s.advance(k);
                let p = self.evaluate(model, &s.x_cur, &s.y, s.target.as_ref())?;
                let hit = where_true(&p.wrong);
                let (rows, iterates) =
                    (s.rows.index_select(0, &hit), s.x_cur.index_select(0, &hit));
                x_out = x_out.f_index_copy(0, &rows, &iterates)?;
                s.record(p);
                if checks.contains(&(k + 1)) {
                    s.checkpoint((k + 1 - last_check) as f64);
                    last_check = k + 1;
                }
                s.retire_fooled(&mut fooled)?;
            }
            x_out = x_out.f_index_copy(0, &s.rows, &s.x_best)?;
            Ok((x_out.detach(), fooled))
        })
    }
}

/// One APGD run's per-sample state, for the samples it has not fooled yet.
/// A fooled sample leaves the batch (its result is fixed, and every quantity
/// is per sample, so the others' iterates do not change): each iteration
/// costs only what is still robust.
struct RunState {
    /// The samples' rows in the run's batch.
    rows: Tensor,
    /// The newest evaluation's misclassified flags, until retired.
    wrong: Tensor,
    y: Tensor,
    target: Option<Tensor>,
    lower: Tensor,
    upper: Tensor,
    x_cur: Tensor,
    x_prev: Tensor,
    grad: Tensor,
    x_best: Tensor,
    grad_best: Tensor,
    loss_best: Tensor,
    /// The loss the next step is counted against (the authors' history starts at 0).
    loss_cur: Tensor,
    step: Tensor,
    successes: Tensor,
    loss_best_at_check: Tensor,
    halved_at_check: Tensor,
}

impl RunState {
    fn new(
        x: &Tensor,
        y: &Tensor,
        target: Option<&Tensor>,
        x0: Tensor,
        p0: Point,
        eps: f64,
    ) -> RunState {
        let x = x.detach();
        let n = x.size()[0];
        let device = x.device();
        RunState {
            rows: Tensor::arange(n, (Kind::Int64, device)),
            wrong: p0.wrong,
            y: y.shallow_clone(),
            target: target.map(Tensor::shallow_clone),
            lower: &x - eps,
            upper: &x + eps,
            x_prev: x0.copy(),
            x_best: x0.copy(),
            x_cur: x0,
            grad_best: p0.grad.copy(),
            grad: p0.grad,
            loss_best_at_check: p0.loss.copy(),
            loss_cur: p0.loss.zeros_like(),
            loss_best: p0.loss,
            step: Tensor::full([n, 1, 1, 1], 2.0 * eps, (x.kind(), device)),
            successes: Tensor::zeros([n], (Kind::Float, device)),
            halved_at_check: Tensor::ones([n], (Kind::Bool, device)),
        }
    }

    fn project(&self, v: Tensor) -> Tensor {
        v.minimum(&self.upper).maximum(&self.lower).clamp(0.0, 1.0)
    }

    /// x_k+1 from x_k: the signed step, with momentum after the first.
    fn advance(&mut self, k: usize) {
        let z = self.project(&self.x_cur + &self.step * self.grad.sign());
        let a = APGD_MOMENTUM;
        let x_next = if k == 0 {
            z
        } else {
            let moved =
                &self.x_cur + (&z - &self.x_cur) * a + (&self.x_cur - &self.x_prev) * (1.0 - a);
            self.project(moved)
        };
        self.x_prev = std::mem::replace(&mut self.x_cur, x_next);
    }

    /// Counts a successful step and keeps the best iterate so far.
    fn record(&mut self, p: Point) {
        self.successes += p.loss.gt_tensor(&self.loss_cur).to_kind(Kind::Float);
        self.loss_cur = p.loss;
        self.grad = p.grad;
        self.wrong = p.wrong;
        let improved = self.loss_cur.gt_tensor(&self.loss_best);
        let improved_img = per_image(&improved);
        self.x_best = self.x_cur.where_self(&improved_img, &self.x_best);
        self.grad_best = self.grad.where_self(&improved_img, &self.grad_best);
        self.loss_best = self.loss_cur.where_self(&improved, &self.loss_best);
    }

    /// At a checkpoint `since` iterations after the last: halves the step,
    /// and continues from x_best, where conditions (1) or (2) hold.
    fn checkpoint(&mut self, since: f64) {
        let few_successes = self.successes.le(APGD_RHO * since);
        let stalled = (self.halved_at_check.logical_not())
            .logical_and(&self.loss_best.le_tensor(&self.loss_best_at_check));
        let halve = few_successes.logical_or(&stalled);
        let halve_img = per_image(&halve);
        self.step = (&self.step * 0.5).where_self(&halve_img, &self.step);
        // x_prev stays x_k: the next momentum term is x_best - x_k.
        self.x_cur = self.x_best.where_self(&halve_img, &self.x_cur);
        self.grad = self.grad_best.where_self(&halve_img, &self.grad);
        self.halved_at_check = halve;
        self.loss_best_at_check = self.loss_best.copy();
        self.successes = self.successes.zeros_like();
    }

    /// Marks the samples the newest evaluation misclassified in `fooled`
    /// (over the whole batch) and drops them from the state.
    fn retire_fooled(&mut self, fooled: &mut Tensor) -> Result<()> {
        if self.wrong.any().int64_value(&[]) == 0 {
            return Ok(());
        }
        let gone = self.rows.masked_select(&self.wrong);
        *fooled = fooled.f_index_fill(0, &gone, 1)?;
        let keep = where_true(&self.wrong.logical_not());
        let per_sample = [
            &mut self.rows,
            &mut self.y,
            &mut self.lower,
            &mut self.upper,
            &mut self.x_cur,
            &mut self.x_prev,
            &mut self.grad,
            &mut self.x_best,
            &mut self.grad_best,
            &mut self.loss_best,
            &mut self.loss_cur,
            &mut self.step,
            &mut self.successes,
            &mut self.loss_best_at_check,
            &mut self.halved_at_check,
        ];
        for t in per_sample {
            *t = t.f_index_select(0, &keep)?;
        }
        if let Some(t) = &mut self.target {
            *t = t.f_index_select(0, &keep)?;
        }
        self.wrong = self.wrong.zeros_like().f_index_select(0, &keep)?;
        Ok(())
    }
}

/// A per-sample [B] mask broadcast over images [B, C, H, W].
fn per_image(mask: &Tensor) -> Tensor {
    mask.view([-1, 1, 1, 1])
}

impl Attack for Apgd {
    fn name(&self) -> String {
        let mut name = self.loss_name().to_string();
        if self.iterations != 100 {
            name += &self.iterations.to_string();
        }
        if self.restarts > 1 {
            name += &format!("_r{}", self.restarts);
        }
        name
    }
    fn gradient_steps(&self) -> usize {
        (self.iterations + 1) * self.runs()
    }
    /// AutoAttack's start: `clamp(x + eps u / max|u|, 0, 1)`, u ~ U(-1, 1).
    fn start(&self, x: &Tensor, key: NoiseKey) -> Tensor {
        let x = x.detach();
        let u = noise::uniform(&x, 1.0, key);
        let scale = u.abs().amax([1, 2, 3], true) + 1e-12;
        (&x + u / scale * self.eps).clamp(0.0, 1.0)
    }
    /// One run from `x_start` on every sample the model gets right
    /// (towards the first target class for `apgd_t`).
    fn run_from(&self, model: &Model, input: &AttackInput, x_start: &Tensor) -> Result<Tensor> {
        self.run_from_starts(model, input, std::slice::from_ref(x_start))
    }
    fn starts(&self, x: &Tensor, key: NoiseKey) -> Vec<Tensor> {
        (0..self.runs())
            .map(|r| self.start(x, restart_key(key, r)))
            .collect()
    }
    fn run_from_starts(
        &self,
        model: &Model,
        input: &AttackInput,
        starts: &[Tensor],
    ) -> Result<Tensor> {
        self.check(input.x)?;
        if starts.is_empty() {
            return Err(Error::attack(self.name(), "no start points given"));
        }
        let x = input.x.detach();
        let clean = tch::no_grad(|| model.forward_t(&x, false));
        let mut robust = clean.argmax(-1, false).f_eq_tensor(input.y)?;
        // Target classes: the clean logits' ranks 2, 3, ... (rank 1 is the label
        // on every attacked sample, since those are classified correctly).
        let ranked = clean.argsort(-1, true);
        let mut x_adv = x.copy();
        let per_target = self.restarts.max(1);
        for (r, start) in starts.iter().enumerate() {
            let idx = where_true(&robust);
            if idx.numel() == 0 {
                break;
            }
            let sub = SubInput::new(input, &idx)?;
            let target = match self.loss {
                ApgdLoss::TargetedDlr { targets } => {
                    let rank = 1 + r / per_target;
                    if rank > targets || rank as i64 >= clean.size()[1] {
                        break;
                    }
                    Some(ranked.select(1, rank as i64).f_index_select(0, &idx)?)
                }
                _ => None,
            };
            let (adv, fooled) = self.run_once(
                model,
                &sub.x,
                &sub.y,
                target.as_ref(),
                &start.f_index_select(0, &idx)?,
            )?;
            x_adv = x_adv.f_index_copy(0, &idx, &adv)?;
            robust = robust.f_index_copy(0, &idx, &fooled.logical_not())?;
        }
        Ok(x_adv)
    }
}

/// Builds APGD-CE: `iterations` per run, `restarts` runs (AutoAttack's first attack).
pub fn apgd_ce(eps: f64, iterations: usize, restarts: usize) -> Apgd {
    Apgd::with_loss(eps, iterations, restarts, ApgdLoss::CrossEntropy)
}

/// Builds APGD-DLR: `iterations` per run, `restarts` runs.
pub fn apgd_dlr(eps: f64, iterations: usize, restarts: usize) -> Apgd {
    Apgd::with_loss(eps, iterations, restarts, ApgdLoss::Dlr)
}

/// AutoAttack's number of target classes.
pub const APGD_T_TARGETS: usize = 9;

/// Builds APGD-T: `iterations` per run, `restarts` runs per target class.
pub fn apgd_t(eps: f64, iterations: usize, restarts: usize, targets: usize) -> Apgd {
    Apgd::with_loss(eps, iterations, restarts, ApgdLoss::TargetedDlr { targets })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn checkpoints_follow_the_paper() {
        assert_eq!(checkpoints(100), vec![22, 41, 57, 70, 80, 87, 93, 99]);
        assert_eq!(checkpoints(10), vec![3, 5, 6, 7, 8, 9, 10]);
        assert_eq!(checkpoints(1), vec![1]);
        assert!(checkpoints(0).is_empty());
    }
}
