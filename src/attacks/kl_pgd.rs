//! `kl_pgd`: k steps maximising KL(S(x') || T(x)) towards the teacher's clean soft labels (RSLAD).

use super::sign_gradient::{IterativeAttack, Objective, SignGradient};
use crate::config::RandomStart;

/// Builds the `kl_pgd` attack.
pub fn kl_pgd(
    eps: f64,
    step_size: f64,
    steps: usize,
    start: RandomStart,
    train_bn: bool,
) -> IterativeAttack {
    IterativeAttack {
        kind: "kl_pgd",
        inner: SignGradient {
            eps,
            step_size,
            steps: steps,
            objective: Objective::KlToTeacher,
            train_bn,
        },
        start: start,
        label_with_steps: true,
    }
}
