//! The sign-gradient attack kinds: each a random start and k steps of one
//! [`Objective`] in the L-inf ball ([`SignGradient`]).
//!
//! - `fgsm`: one step of cross-entropy from x itself (Goodfellow et al.);
//! - `fgsm_rs`: a random start, then one step, typically of 1.25 eps ("Fast is
//!   better than free", Wong et al. 2020);
//! - `pgd`: k steps of cross-entropy on the true labels: the paper's and ARD's
//!   training attack, and PGD-k in evaluation;
//! - `kl_pgd`: k steps maximising KL(S(x') || T(x)) towards the teacher's clean
//!   soft labels (RSLAD);
//! - `trades`: k steps maximising KL(S(x') || S(x)) (TRADES, for training a
//!   robust teacher); S(x) is computed once per batch, before the steps;
//! - `cw`: CW-inf, PGD on the Carlini–Wagner margin
//!   `-max(z_y - max_{i != y} z_i + kappa, 0)` (kappa = 50), uniform start,
//!   BatchNorm in eval mode. The usual robust-distillation evaluation (RSLAD and
//!   followers) runs 30 steps; the step size here is PGD-20's 2/255.

use super::sign_gradient::Objective::{CrossEntropy, CwMargin, KlToClean, KlToTeacher};
use super::sign_gradient::{IterativeAttack, Objective, SignGradient};
use crate::config::RandomStart;

/// The confidence kappa of the CW margin: the loss stops rising once another
/// class leads the label by this much.
pub const CW_KAPPA: f64 = 50.0;

/// `steps` steps of `objective` from `start`, labelled with its step count and
/// named after the objective (cross-entropy is `pgd`).
fn counted(
    objective: Objective,
    eps: f64,
    step_size: f64,
    steps: usize,
    start: RandomStart,
    train_bn: bool,
) -> IterativeAttack {
    let kind = match objective {
        CrossEntropy => "pgd",
        KlToTeacher => "kl_pgd",
        KlToClean => "trades",
        CwMargin => "cw",
    };
    IterativeAttack {
        kind,
        inner: SignGradient {
            eps,
            step_size,
            steps,
            objective,
            train_bn,
        },
        start,
        label_with_steps: true,
    }
}

/// `kind`: one step of cross-entropy from `start`, labelled without a count.
fn single(
    kind: &'static str,
    eps: f64,
    step: f64,
    start: RandomStart,
    bn: bool,
) -> IterativeAttack {
    IterativeAttack {
        kind,
        label_with_steps: false,
        ..counted(CrossEntropy, eps, step, 1, start, bn)
    }
}

/// Builds the `fgsm` attack.
pub fn fgsm(eps: f64, step_size: f64, train_bn: bool) -> IterativeAttack {
    single("fgsm", eps, step_size, RandomStart::None, train_bn)
}

/// Builds the `fgsm_rs` attack.
pub fn fgsm_rs(eps: f64, step_size: f64, start: RandomStart, train_bn: bool) -> IterativeAttack {
    single("fgsm_rs", eps, step_size, start, train_bn)
}

/// Builds the `pgd` attack.
pub fn pgd(eps: f64, step: f64, steps: usize, start: RandomStart, bn: bool) -> IterativeAttack {
    counted(CrossEntropy, eps, step, steps, start, bn)
}

/// Builds the `kl_pgd` attack.
pub fn kl_pgd(eps: f64, step: f64, steps: usize, start: RandomStart, bn: bool) -> IterativeAttack {
    counted(KlToTeacher, eps, step, steps, start, bn)
}

/// Builds the `trades` attack.
pub fn trades(eps: f64, step: f64, steps: usize, start: RandomStart, bn: bool) -> IterativeAttack {
    counted(KlToClean, eps, step, steps, start, bn)
}

/// Builds CW-inf of `steps` steps of `step` (uniform start, BatchNorm in eval mode).
pub fn cw(eps: f64, step: f64, steps: usize) -> IterativeAttack {
    counted(CwMargin, eps, step, steps, RandomStart::Uniform, false)
}
