//! The training losses, as functions of logits (all [B, classes]) and labels [B].
//!
//! - `ard`: alpha T² KL(log_softmax(S(x_adv)/T) ‖ softmax(T(x)/T)) + (1−alpha) CE(S(x), y)
//! - `rslad`: w_adv KL(S(x_adv) ‖ T(x)) + w_nat KL(S(x) ‖ T(x))
//! - `pgd_at`: CE(S(x_adv), y)
//! - `trades`: CE(S(x), y) + beta KL(S(x_adv) ‖ S(x))
//! - `paper_alg1`: CE(S(x), softmax(T(x))) + lambda CE(S(x_adv), y), the paper's
//!   Algorithm 1 as printed (its published numbers came from the `ard` loop).

use crate::config::{KlReduction, LossConfig, LossKind};
use crate::error::Result;
use tch::{Kind, Reduction, Tensor};

/// What a loss is computed from.
pub struct LossInputs<'a> {
    /// Student logits on the adversarial inputs.
    pub student_adv: &'a Tensor,
    /// Student logits on the clean inputs, when the loss (or BN fidelity) needs them.
    pub student_clean: Option<&'a Tensor>,
    /// Teacher logits on the clean inputs.
    pub teacher: Option<&'a Tensor>,
    /// True labels.
    pub labels: &'a Tensor,
}

/// A configured training objective.
#[derive(Debug, Clone)]
pub struct Objective {
    pub kind: LossKind,
    pub alpha: f64,
    pub temperature: f64,
    pub kl_reduction: KlReduction,
    pub clean_forward_for_bn: bool,
    pub rslad_adv_weight: f64,
    pub rslad_nat_weight: f64,
    pub beta: f64,
    pub lambda: f64,
}

impl LossConfig {
    pub fn build(&self) -> Objective {
        Objective {
            kind: self.kind,
            alpha: self.alpha.get(),
            temperature: self.temperature.get(),
            kl_reduction: self.kl_reduction,
            clean_forward_for_bn: self.clean_forward_for_bn,
            rslad_adv_weight: self.rslad_adv_weight.get(),
            rslad_nat_weight: self.rslad_nat_weight.get(),
            beta: self.beta.get(),
            lambda: self.lambda.get(),
        }
    }
}

/// KL(target ‖ input) for `log_input` = log q and `target` = p, reduced as configured.
pub fn kl(log_input: &Tensor, target: &Tensor, reduction: KlReduction) -> Result<Tensor> {
    Ok(match reduction {
        KlReduction::Mean => log_input.f_kl_div(target, Reduction::Mean, false)?,
        KlReduction::Batchmean => {
            log_input.f_kl_div(target, Reduction::Sum, false)? / log_input.size()[0] as f64
        }
    })
}

/// Mean cross-entropy against hard labels.
pub fn cross_entropy(logits: &Tensor, labels: &Tensor) -> Result<Tensor> {
    Ok(logits.f_cross_entropy_loss::<Tensor>(labels, None, Reduction::Mean, -100, 0.0)?)
}

/// Mean cross-entropy against a probability vector per row.
pub fn soft_cross_entropy(logits: &Tensor, probs: &Tensor) -> Result<Tensor> {
    let per_row =
        -(probs * logits.log_softmax(-1, Kind::Float)).sum_dim_intlist(-1, false, Kind::Float);
    Ok(per_row.mean(Kind::Float))
}

impl Objective {
    /// Whether the loss reads the teacher's logits.
    pub fn needs_teacher(&self) -> bool {
        matches!(
            self.kind,
            LossKind::Ard | LossKind::Rslad | LossKind::PaperAlg1
        )
    }

    /// Whether the student's clean forward runs only for its BatchNorm side
    /// effect (ARD at alpha = 1 with `clean_forward_for_bn`): its loss term has
    /// weight 0, so its gradient is exactly zero.
    pub fn clean_forward_only_for_bn(&self) -> bool {
        self.kind == LossKind::Ard && self.alpha == 1.0 && self.clean_forward_for_bn
    }

    /// Whether the student's clean forward must run (for the loss, or for the
    /// BatchNorm side effect ARD's loop has even at alpha = 1).
    pub fn needs_clean_forward(&self) -> bool {
        match self.kind {
            LossKind::Ard => self.alpha < 1.0 || self.clean_forward_for_bn,
            LossKind::PgdAt => false,
            LossKind::Rslad | LossKind::Trades | LossKind::PaperAlg1 => true,
        }
    }

    /// KL(target ‖ softmax(logits)), reduced as configured.
    fn kl_to(&self, logits: &Tensor, target: &Tensor) -> Result<Tensor> {
        kl(
            &logits.log_softmax(-1, Kind::Float),
            target,
            self.kl_reduction,
        )
    }

    /// The scalar loss.
    pub fn loss(&self, inputs: &LossInputs) -> Result<Tensor> {
        let missing = |what: &str| {
            crate::Error::Setting(format!(
                "the {} loss needs {what}",
                crate::config::spelled(&self.kind)
            ))
        };
        let teacher = || inputs.teacher.ok_or_else(|| missing("teacher logits"));
        let clean = || {
            inputs
                .student_clean
                .ok_or_else(|| missing("the clean student forward"))
        };
        match self.kind {
            LossKind::Ard => {
                let t = self.temperature;
                let log_q = (inputs.student_adv / t).log_softmax(-1, Kind::Float);
                let p = (teacher()?.detach() / t).softmax(-1, Kind::Float);
                let loss = kl(&log_q, &p, self.kl_reduction)? * (self.alpha * t * t);
                Ok(match inputs.student_clean {
                    // Weight 0 at alpha = 1: kept in the graph as ARD's loop does.
                    Some(s_clean) => {
                        loss + cross_entropy(s_clean, inputs.labels)? * (1.0 - self.alpha)
                    }
                    None => loss,
                })
            }
            LossKind::Rslad => {
                let p = teacher()?.detach().softmax(-1, Kind::Float);
                let adv = self.kl_to(inputs.student_adv, &p)?;
                let nat = self.kl_to(clean()?, &p)?;
                Ok(adv * self.rslad_adv_weight + nat * self.rslad_nat_weight)
            }
            LossKind::PgdAt => cross_entropy(inputs.student_adv, inputs.labels),
            LossKind::Trades => {
                let s_clean = clean()?;
                let robust = self.kl_to(inputs.student_adv, &s_clean.softmax(-1, Kind::Float))?;
                Ok(cross_entropy(s_clean, inputs.labels)? + robust * self.beta)
            }
            LossKind::PaperAlg1 => {
                let p = teacher()?.detach().softmax(-1, Kind::Float);
                Ok(soft_cross_entropy(clean()?, &p)?
                    + cross_entropy(inputs.student_adv, inputs.labels)? * self.lambda)
            }
        }
    }
}
