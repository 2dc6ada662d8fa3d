//! `n_fgsm`: single-step adversarial training without catastrophic
//! overfitting (de Jorge et al. 2022, "Make some noise"): a uniform start of
//! radius `NOISE_SCALE * eps` (twice the budget), one signed-gradient step of
//! `step_size` (typically eps), and no projection back to the eps-ball: the
//! training perturbation may reach (NOISE_SCALE * eps + step) in L-inf. Inputs
//! stay in [0, 1]. Robustness is still measured at eps.

use super::sign_gradient::{Objective, SignGradient};
use super::{random_start, Attack, AttackInput, NoiseKey};
use crate::config::RandomStart;
use crate::error::Result;
use crate::models::Model;
use tch::Tensor;

/// Radius of the start noise in units of eps (the paper's k = 2).
pub const NOISE_SCALE: f64 = 2.0;

#[derive(Debug, Clone, Copy)]
pub struct NFgsm {
    start: RandomStart,
    noise: f64,
    /// One step; its projection radius (noise + step) never binds.
    step: SignGradient,
}

/// Builds the `n_fgsm` attack.
pub fn n_fgsm(eps: f64, step_size: f64, start: RandomStart, train_bn: bool) -> NFgsm {
    let noise = NOISE_SCALE * eps;
    NFgsm {
        start,
        noise,
        step: SignGradient {
            eps: noise + step_size,
            step_size,
            steps: 1,
            objective: Objective::CrossEntropy,
            train_bn,
        },
    }
}

impl NFgsm {
    /// The same attack kept inside the eps-ball (the step is projected back),
    /// for evaluation: robustness is measured at eps, whatever training used.
    pub fn within(mut self, eps: f64) -> NFgsm {
        self.step.eps = eps;
        self
    }
}

impl Attack for NFgsm {
    fn name(&self) -> String {
        "n_fgsm".into()
    }
    fn gradient_steps(&self) -> usize {
        1
    }
    fn bn_train_forwards(&self) -> usize {
        usize::from(self.step.train_bn)
    }
    fn start(&self, x: &Tensor, key: NoiseKey) -> Tensor {
        random_start(x, self.start, self.noise, key)
    }
    fn run_from(&self, model: &Model, input: &AttackInput, x_start: &Tensor) -> Result<Tensor> {
        self.step.run(model, input, x_start)
    }
}
