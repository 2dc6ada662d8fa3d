//! `fgsm_rs`: uniform random start, then one signed-gradient step, typically of 1.25 eps ("Fast is better than free", Wong et al. 2020).

use super::sign_gradient::{IterativeAttack, Objective, SignGradient};
use crate::config::RandomStart;

/// Builds the `fgsm_rs` attack.
pub fn fgsm_rs(eps: f64, step_size: f64, start: RandomStart, train_bn: bool) -> IterativeAttack {
    IterativeAttack {
        kind: "fgsm_rs",
        inner: SignGradient {
            eps,
            step_size,
            steps: 1,
            objective: Objective::CrossEntropy,
            train_bn,
        },
        start: start,
        label_with_steps: false,
    }
}
