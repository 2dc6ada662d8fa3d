//! The JSON file of `ard-pipeline eval --json`: the report ([`EvalReport`]:
//! images, accuracies in the order run, intervals, worst case) with what a
//! reader needs to trust it: the threat model, the model and the weights'
//! sha256, each evaluation's parameters in the order run, cascade or not, the
//! seed, the project version. The report's fields stay at the top level, so
//! readers of the older file (`images`, `accuracy`, `worst_case`) still work.

use super::{EvalAttack, EvalReport, EVAL_STEP};
use crate::attacks::{APGD_T_TARGETS, CW_KAPPA, FAB_ALPHA_MAX, FAB_BETA, FAB_ETA, FAB_T_TARGETS};
use crate::config::eval_attack::{APGD_ITERATIONS, FAB_ITERATIONS, SQUARE_QUERIES};
use crate::config::AttackConfig;
use serde::{Deserialize, Serialize};

/// How one evaluation ran (fields that do not apply are absent).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct AttackRecord {
    /// Its name on the command line (`pgd20`).
    pub name: String,
    /// What it is: `clean`, `pgd`, `cw`, `apgd_ce`, ..., or the training attack's kind.
    pub kind: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub eps: Option<f64>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub step_size: Option<f64>,
    /// Gradient steps (PGD, CW) or iterations (APGD).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub steps: Option<usize>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub restarts: Option<usize>,
    /// Target classes (APGD-T).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub targets: Option<usize>,
    /// Queries per image (Square).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub queries: Option<usize>,
    /// The CW margin's kappa.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub kappa: Option<f64>,
    /// FAB's step bound, extrapolation and bias (alpha_max, eta, beta).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub fab: Option<[f64; 3]>,
    /// The parts of an evaluation made of parts (`autoattack`), in the order run
    /// as a cascade.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub parts: Vec<AttackRecord>,
}

impl AttackRecord {
    /// The parameters `eval` runs `eval` with; `train` is the training attack
    /// that `train_attack` replays and whose eps every attack uses.
    pub fn of(eval: &EvalAttack, train: &AttackConfig) -> AttackRecord {
        let eps = train.eps.get();
        let mut r = AttackRecord {
            name: eval.name(),
            kind: String::new(),
            eps: Some(eps),
            step_size: None,
            steps: None,
            restarts: None,
            targets: None,
            queries: None,
            kappa: None,
            fab: None,
            parts: Vec::new(),
        };
        let (kind, steps, restarts) = match *eval {
            EvalAttack::Natural => ("clean", None, None),
            EvalAttack::TrainAttack => {
                r.step_size = Some(train.step_size.get());
                let kind = crate::config::spelled(&train.kind);
                r.kind = format!("train_attack ({kind})");
                r.steps = Some(train.steps);
                return r;
            }
            EvalAttack::Fgsm => {
                r.step_size = Some(eps);
                ("fgsm", Some(1), None)
            }
            EvalAttack::Pgd { steps, restarts } => {
                r.step_size = Some(EVAL_STEP);
                ("pgd", Some(steps), Some(restarts))
            }
            EvalAttack::Cw { steps, restarts } => {
                r.step_size = Some(EVAL_STEP);
                r.kappa = Some(CW_KAPPA);
                ("cw", Some(steps), Some(restarts))
            }
            EvalAttack::ApgdCe {
                iterations,
                restarts,
            } => ("apgd_ce", Some(iterations), Some(restarts)),
            EvalAttack::ApgdDlr {
                iterations,
                restarts,
            } => ("apgd_dlr", Some(iterations), Some(restarts)),
            EvalAttack::ApgdT {
                iterations,
                restarts,
            } => {
                r.targets = Some(APGD_T_TARGETS);
                ("apgd_t", Some(iterations), Some(restarts))
            }
            EvalAttack::Square { queries } => {
                r.queries = Some(queries);
                ("square", None, None)
            }
            EvalAttack::FabT { iterations } => {
                r.targets = Some(FAB_T_TARGETS);
                r.fab = Some([FAB_ALPHA_MAX, FAB_ETA, FAB_BETA]);
                ("fab_t", Some(iterations), Some(1))
            }
            EvalAttack::AutoAttack => {
                let (iterations, restarts) = (APGD_ITERATIONS, 1);
                r.parts = [
                    EvalAttack::ApgdCe {
                        iterations,
                        restarts,
                    },
                    EvalAttack::ApgdT {
                        iterations,
                        restarts,
                    },
                    EvalAttack::FabT {
                        iterations: FAB_ITERATIONS,
                    },
                    EvalAttack::Square {
                        queries: SQUARE_QUERIES,
                    },
                ]
                .iter()
                .map(|part| AttackRecord::of(part, train))
                .collect();
                ("autoattack (standard, cascade)", None, None)
            }
        };
        if *eval == EvalAttack::Natural {
            r.eps = None;
        }
        r.kind = kind.into();
        r.steps = steps;
        r.restarts = restarts;
        r
    }
}

/// The whole `--json` file.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct EvalFile {
    #[serde(flatten)]
    pub report: EvalReport,
    /// What `intervals` are ([`super::interval::INTERVAL_KIND`]).
    pub interval_kind: String,
    /// The threat model: L-inf ball of radius `eps`.
    pub norm: String,
    pub eps: f64,
    /// `eps` as the command line takes it (`8/255`).
    pub eps_text: String,
    pub arch: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub weights: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub weights_sha256: Option<String>,
    /// Each evaluation as run, in order.
    pub attacks: Vec<AttackRecord>,
    /// Seed of the random starts (`run.seed`).
    pub seed: u64,
    pub batch_size: usize,
    /// The ard-pipeline version that wrote the file.
    pub version: String,
    /// A partial result (`eval --shard`): the images it covers.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub shard: Option<super::shards::ShardPart>,
}
