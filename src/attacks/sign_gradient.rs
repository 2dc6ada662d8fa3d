//! The loop shared by every iterative attack: k steps of
//! `x' <- clamp(proj_eps(x' + step * sign(grad_x' objective)), 0, 1)`.

use super::{random_start, Attack, AttackInput, NoiseKey};
use crate::config::RandomStart;
use crate::error::Result;
use crate::models::Model;
use tch::{Kind, Reduction, Tensor};

/// What the attack maximises.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Objective {
    /// Cross-entropy of the model on the true labels (summed).
    CrossEntropy,
    /// KL(model(x') || softmax(teacher logits)), summed (RSLAD).
    KlToTeacher,
    /// KL(model(x') || model(x)), summed (TRADES).
    KlToClean,
    /// The Carlini–Wagner margin on the true labels, summed (CW-inf, see `cw`).
    CwMargin,
}

/// An iterative sign-gradient attack in the L-inf ball.
#[derive(Debug, Clone, Copy)]
pub struct SignGradient {
    pub eps: f64,
    pub step_size: f64,
    pub steps: usize,
    pub objective: Objective,
    /// BatchNorm with batch statistics during the attack (updates running stats).
    pub train_bn: bool,
}

impl SignGradient {
    /// Runs the steps from `x_start`; returns x_adv, detached.
    pub fn run(&self, model: &Model, input: &AttackInput, x_start: &Tensor) -> Result<Tensor> {
        tch::with_grad(|| {
            let x = input.x.detach();
            let target = match self.objective {
                Objective::CrossEntropy | Objective::CwMargin => None,
                Objective::KlToTeacher => {
                    let t = input.teacher_logits.ok_or_else(|| {
                        crate::Error::attack("kl_pgd", "needs the teacher's logits")
                    })?;
                    Some(t.detach().softmax(-1, Kind::Float))
                }
                Objective::KlToClean => Some(
                    tch::no_grad(|| model.forward_t(&x, self.train_bn))
                        .detach()
                        .softmax(-1, Kind::Float),
                ),
            };
            let lower = &x - self.eps;
            let upper = &x + self.eps;
            let mut x_adv = x_start.detach();
            for _ in 0..self.steps {
                let x_var = x_adv.detach().set_requires_grad(true);
                let logits = model.forward_t(&x_var, self.train_bn);
                let loss = match &target {
                    None if self.objective == Objective::CwMargin => {
                        super::margin::cw_margin(&logits, input.y, super::CW_KAPPA)?
                            .sum(Kind::Float)
                    }
                    None => logits.f_cross_entropy_loss::<Tensor>(
                        input.y,
                        None,
                        Reduction::Sum,
                        -100,
                        0.0,
                    )?,
                    Some(p) => {
                        logits
                            .log_softmax(-1, Kind::Float)
                            .f_kl_div(p, Reduction::Sum, false)?
                    }
                };
                let grad = Tensor::run_backward(&[&loss], &[&x_var], false, false);
                let step = grad[0].sign() * self.step_size;
                x_adv = (x_var.detach() + step)
                    .minimum(&upper)
                    .maximum(&lower)
                    .clamp(0.0, 1.0);
            }
            Ok(x_adv.detach())
        })
    }
}

/// An attack made of a random start and a [`SignGradient`] loop; every
/// gradient attack kind but `n_fgsm` is one of these (built in `kinds`).
#[derive(Debug, Clone, Copy)]
pub struct IterativeAttack {
    /// The kind's name (`pgd`, `fgsm`, ...).
    pub kind: &'static str,
    pub inner: SignGradient,
    pub start: RandomStart,
    /// Whether the metric label carries the step count (`pgd10`).
    pub label_with_steps: bool,
}

impl Attack for IterativeAttack {
    fn name(&self) -> String {
        if self.label_with_steps {
            format!("{}{}", self.kind, self.inner.steps)
        } else {
            self.kind.to_string()
        }
    }
    fn gradient_steps(&self) -> usize {
        self.inner.steps
    }
    fn bn_train_forwards(&self) -> usize {
        match (self.inner.train_bn, self.inner.objective) {
            (false, _) => 0,
            (true, Objective::KlToClean) => self.inner.steps + 1,
            (true, _) => self.inner.steps,
        }
    }
    fn start(&self, x: &Tensor, key: NoiseKey) -> Tensor {
        random_start(x, self.start, self.inner.eps, key)
    }
    fn run_from(&self, model: &Model, input: &AttackInput, x_start: &Tensor) -> Result<Tensor> {
        self.inner.run(model, input, x_start)
    }
}
