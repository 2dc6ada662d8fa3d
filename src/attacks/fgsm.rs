//! `fgsm`: one signed-gradient step of cross-entropy from x itself (Goodfellow et al.).

use super::sign_gradient::{IterativeAttack, Objective, SignGradient};

/// Builds the `fgsm` attack.
pub fn fgsm(eps: f64, step_size: f64, train_bn: bool) -> IterativeAttack {
    IterativeAttack {
        kind: "fgsm",
        inner: SignGradient {
            eps,
            step_size,
            steps: 1,
            objective: Objective::CrossEntropy,
            train_bn,
        },
        start: crate::config::RandomStart::None,
        label_with_steps: false,
    }
}
