//! Evaluation: natural accuracy and accuracy under attacks, BatchNorm in eval
//! mode and no gradient side effects on the model.

use crate::attacks::{self, Attack, AttackInput, NoiseKey};
use crate::config::AttackConfig;
use crate::error::Result;
use crate::models::Model;
use serde::Serialize;
use std::collections::BTreeMap;
use tch::{Device, Kind, Tensor};

/// Noise stream of evaluation attacks (distinct from training's).
const EVAL_STREAM: u64 = 0xE7A1;

/// An evaluation, by its name in `eval.attacks` and on the command line.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum EvalAttack {
    /// Clean inputs.
    Natural,
    /// The configured training attack, BatchNorm in eval mode (the paper's robust number).
    TrainAttack,
    /// FGSM of eps from x.
    Fgsm,
    /// PGD-k: uniform start, step 2/255, eps of the run (`pgd20`).
    Pgd(usize),
}

impl EvalAttack {
    /// Parses `natural`, `train_attack`, `fgsm`, `pgdK`.
    pub fn parse(name: &str) -> std::result::Result<EvalAttack, String> {
        match name {
            "natural" => Ok(EvalAttack::Natural),
            "train_attack" => Ok(EvalAttack::TrainAttack),
            "fgsm" => Ok(EvalAttack::Fgsm),
            _ => name
                .strip_prefix("pgd")
                .and_then(|k| k.parse().ok())
                .filter(|&k| k >= 1)
                .map(EvalAttack::Pgd)
                .ok_or_else(|| {
                    format!("unknown evaluation {name:?} (natural, train_attack, fgsm, pgdK)")
                }),
        }
    }

    pub fn name(&self) -> String {
        match self {
            EvalAttack::Natural => "natural".into(),
            EvalAttack::TrainAttack => "train_attack".into(),
            EvalAttack::Fgsm => "fgsm".into(),
            EvalAttack::Pgd(k) => format!("pgd{k}"),
        }
    }

    /// The attack to run (None for natural), BatchNorm always in eval mode.
    pub fn build(&self, train_attack: &AttackConfig) -> Option<Box<dyn Attack>> {
        let eps = train_attack.eps.get();
        match self {
            EvalAttack::Natural => None,
            EvalAttack::TrainAttack => {
                let mut cfg = train_attack.clone();
                cfg.bn_mode = crate::config::BnMode::Eval;
                Some(cfg.build())
            }
            EvalAttack::Fgsm => Some(Box::new(attacks::fgsm(eps, eps, false))),
            EvalAttack::Pgd(k) => Some(Box::new(attacks::eval_pgd(eps, 2.0 / 255.0, *k))),
        }
    }
}

/// Accuracy per evaluation, in percent, on `n` images.
#[derive(Debug, Clone, Default, Serialize)]
pub struct EvalReport {
    pub images: usize,
    pub accuracy: BTreeMap<String, f64>,
}

/// Test images and labels, already as tensors.
pub struct EvalSet {
    pub images: Tensor,
    pub labels: Tensor,
}

/// Evaluates `model` on `set` under each of `evals`, in batches of `batch_size`.
/// `teacher_logits` is needed only by teacher-based training attacks (kl_pgd).
pub fn evaluate(
    model: &Model,
    set: &EvalSet,
    evals: &[EvalAttack],
    train_attack: &AttackConfig,
    batch_size: usize,
    seed: u64,
    teacher: Option<&Model>,
    mut progress: impl FnMut(usize, usize),
) -> Result<EvalReport> {
    let n = set.images.size()[0] as usize;
    let device: Device = model.device();
    let built: Vec<(String, Option<Box<dyn Attack>>)> = evals
        .iter()
        .map(|e| (e.name(), e.build(train_attack)))
        .collect();
    let mut correct = vec![0i64; built.len()];
    let mut start = 0;
    while start < n {
        let len = batch_size.min(n - start);
        let x = set
            .images
            .narrow(0, start as i64, len as i64)
            .to_device(device);
        let y = set
            .labels
            .narrow(0, start as i64, len as i64)
            .to_device(device);
        let t = match teacher {
            Some(t) => Some(tch::no_grad(|| t.forward_t(&x, false))),
            None => None,
        };
        for (i, (_, attack)) in built.iter().enumerate() {
            let x_eval = match attack {
                None => x.shallow_clone(),
                Some(a) => {
                    let input = AttackInput {
                        x: &x,
                        y: &y,
                        teacher_logits: t.as_ref(),
                    };
                    let key = NoiseKey {
                        seed,
                        counter: start as u64,
                        stream: EVAL_STREAM + i as u64,
                    };
                    a.perturb(model, &input, key)?
                }
            };
            let pred = tch::no_grad(|| model.forward_t(&x_eval, false)).argmax(-1, false);
            correct[i] += pred.eq_tensor(&y).sum(Kind::Int64).int64_value(&[]);
        }
        start += len;
        progress(start, n);
    }
    let accuracy = built
        .iter()
        .zip(&correct)
        .map(|((name, _), &c)| (name.clone(), 100.0 * c as f64 / n.max(1) as f64))
        .collect();
    Ok(EvalReport {
        images: n,
        accuracy,
    })
}
