//! `trades`: k steps maximising KL(S(x') || S(x)) (TRADES), for training a robust teacher. S(x) is computed once per batch, before the steps.

use super::sign_gradient::{IterativeAttack, Objective, SignGradient};
use crate::config::RandomStart;

/// Builds the `trades` attack.
pub fn trades(
    eps: f64,
    step_size: f64,
    steps: usize,
    start: RandomStart,
    train_bn: bool,
) -> IterativeAttack {
    IterativeAttack {
        kind: "trades",
        inner: SignGradient {
            eps,
            step_size,
            steps: steps,
            objective: Objective::KlToClean,
            train_bn,
        },
        start: start,
        label_with_steps: true,
    }
}
