//! `cw`: CW-inf, the L-inf attack with the Carlini–Wagner margin loss
//! (`-max(z_y - max_{i != y} z_i + kappa, 0)`, kappa = 50) optimised by PGD:
//! uniform start, sign-gradient steps, projection and [0, 1] clamp after each.
//! The usual robust-distillation evaluation (RSLAD and followers) runs 30 steps;
//! the step size here is PGD-20's 2/255.

use super::sign_gradient::{IterativeAttack, Objective, SignGradient};
use crate::config::RandomStart;

/// The confidence kappa of the CW margin: the loss stops rising once another
/// class leads the label by this much.
pub const CW_KAPPA: f64 = 50.0;

/// Builds CW-inf of `steps` steps of `step_size` (BatchNorm in eval mode).
pub fn cw(eps: f64, step_size: f64, steps: usize) -> IterativeAttack {
    IterativeAttack {
        kind: "cw",
        inner: SignGradient {
            eps,
            step_size,
            steps,
            objective: Objective::CwMargin,
            train_bn: false,
        },
        start: RandomStart::Uniform,
        label_with_steps: true,
    }
}
