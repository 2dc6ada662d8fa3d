//! `pgd`: k steps of cross-entropy on the true labels against the attacked model: the paper's and ARD's training attack, and PGD-k in evaluation.

use super::sign_gradient::{IterativeAttack, Objective, SignGradient};
use crate::config::RandomStart;

/// Builds the `pgd` attack.
pub fn pgd(
    eps: f64,
    step_size: f64,
    steps: usize,
    start: RandomStart,
    train_bn: bool,
) -> IterativeAttack {
    IterativeAttack {
        kind: "pgd",
        inner: SignGradient {
            eps,
            step_size,
            steps: steps,
            objective: Objective::CrossEntropy,
            train_bn,
        },
        start: start,
        label_with_steps: true,
    }
}
