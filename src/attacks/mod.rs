//! Attacks: the `Attack` trait and the kinds. The training attacks
//! (`none`, `fgsm`, `fgsm_rs`, `n_fgsm`, `pgd`, `kl_pgd`, `trades`) are chosen by
//! `[attack] kind`; the evaluation attacks (`cw`, `apgd_ce`, `apgd_dlr`,
//! `apgd_t`, `fab_t`, `square`, and `restarts` around any attack) are built by
//! `crate::eval`.
//!
//! Every attack works on the inputs only: input gradients come from
//! `Tensor::run_backward` on the input (Square, score-based, uses logits
//! only), so parameter gradients are never touched. Each step projects to the eps-ball around x and clamps to [0, 1].
//! Random starts come from seeded host noise ([`NoiseKey`]); an attack of
//! several runs (restarts, target classes) lists all its starts in
//! [`Attack::starts`], so a reference implementation can be given the same ones.

pub mod apgd;
pub mod fab;
mod kinds;
pub mod margin;
mod n_fgsm;
pub mod noise;
mod none;
mod restarts;
mod sign_gradient;
pub mod square;

pub use apgd::{apgd_ce, apgd_dlr, apgd_t, Apgd, ApgdLoss, APGD_T_TARGETS};
pub use fab::{fab_t, FabT, FAB_ALPHA_MAX, FAB_BETA, FAB_ETA, FAB_T_TARGETS};
pub use kinds::{cw, fgsm, fgsm_rs, kl_pgd, pgd, trades, CW_KAPPA};
pub use n_fgsm::{n_fgsm, NFgsm};
pub use noise::{random_start, NoiseKey};
pub use none::NoAttack;
pub use restarts::{restart_key, Restarts};
pub use sign_gradient::{IterativeAttack, Objective, SignGradient};
pub use square::{square, square_autoattack, square_linf, Square, SquareFlavour, SQUARE_QUERIES};

use crate::config::{AttackConfig, AttackKind, BnMode};
use crate::error::Result;
use crate::models::Model;
use tch::Tensor;

/// What an attack may look at for one batch.
pub struct AttackInput<'a> {
    /// Clean inputs [B, 3, 32, 32] in [0, 1].
    pub x: &'a Tensor,
    /// True labels [B] (i64).
    pub y: &'a Tensor,
    /// Teacher logits on the clean inputs [B, classes], for attacks that need them.
    pub teacher_logits: Option<&'a Tensor>,
}

/// One part of an attack made of parts run one after another (AutoAttack):
/// over every batch the attack has run on so far, how many images were still
/// robust after the part, and the wall seconds it took.
#[derive(Debug, Clone, Default, PartialEq, serde::Serialize, serde::Deserialize)]
pub struct PartTally {
    pub name: String,
    pub robust: usize,
    pub seconds: f64,
}

/// An adversarial attack on a model's inputs.
pub trait Attack: Send {
    /// Short name, used as the `attack` metric label.
    fn name(&self) -> String;

    /// Gradient computations per batch (for the metrics).
    fn gradient_steps(&self) -> usize;

    /// How many train-mode BatchNorm forwards (running-statistics updates) one
    /// batch makes; the pipeline needs it to carry BN statistics across replicas.
    fn bn_train_forwards(&self) -> usize {
        0
    }

    /// The starting point: x itself or x plus seeded noise.
    fn start(&self, x: &Tensor, key: NoiseKey) -> Tensor;

    /// Runs the attack from `x_start`; returns x_adv, detached.
    fn run_from(&self, model: &Model, input: &AttackInput, x_start: &Tensor) -> Result<Tensor>;

    /// Every start point the whole attack uses, one per run (restarts,
    /// target classes); one for single-run attacks.
    fn starts(&self, x: &Tensor, key: NoiseKey) -> Vec<Tensor> {
        vec![self.start(x, key)]
    }

    /// The whole attack from the points [`Attack::starts`] gives; for a
    /// single-run attack, `run_from(starts[0])`.
    fn run_from_starts(
        &self,
        model: &Model,
        input: &AttackInput,
        starts: &[Tensor],
    ) -> Result<Tensor> {
        let x0 = starts
            .first()
            .ok_or_else(|| crate::Error::attack(self.name(), "no start points given"))?;
        self.run_from(model, input, x0)
    }

    /// The whole attack: `run_from_starts(starts(x))`, which is
    /// `run_from(start(x))` for a single-run attack.
    fn perturb(&self, model: &Model, input: &AttackInput, key: NoiseKey) -> Result<Tensor> {
        let starts = self.starts(input.x, key);
        self.run_from_starts(model, input, &starts)
    }

    /// For an attack made of parts: each part's tally so far, in order
    /// (the first counts the images right on clean inputs); empty otherwise.
    fn parts(&self) -> Vec<PartTally> {
        Vec::new()
    }
}

impl AttackConfig {
    /// Builds the configured attack.
    pub fn build(&self) -> Box<dyn Attack> {
        let (eps, step, steps) = (self.eps.get(), self.step_size.get(), self.steps);
        let (start, train_bn) = (self.random_start, self.bn_mode == BnMode::Train);
        match self.kind {
            AttackKind::None => Box::new(NoAttack),
            AttackKind::Fgsm => Box::new(fgsm(eps, step, train_bn)),
            AttackKind::FgsmRs => Box::new(fgsm_rs(eps, step, start, train_bn)),
            AttackKind::NFgsm => Box::new(n_fgsm(eps, step, start, train_bn)),
            AttackKind::Pgd => Box::new(pgd(eps, step, steps, start, train_bn)),
            AttackKind::KlPgd => Box::new(kl_pgd(eps, step, steps, start, train_bn)),
            AttackKind::Trades => Box::new(trades(eps, step, steps, start, train_bn)),
        }
    }
}

/// Predicted classes [B] (BatchNorm in eval mode, no graph).
pub(crate) fn predict(model: &Model, x: &Tensor) -> Tensor {
    tch::no_grad(|| model.forward_t(x, false)).argmax(-1, false)
}
