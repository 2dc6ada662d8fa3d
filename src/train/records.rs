//! The run's records, shared by both engines: one line of `metrics.jsonl`
//! per epoch ([`EpochRecord`]), one line of `eval.jsonl` per test evaluation
//! ([`EvalRecord`]), and the per-epoch figures a checkpoint keeps
//! ([`EpochTrainStats`]), and the per-stage figures of the summary
//! ([`StageReport`]).

use super::run_dir::RunDir;
use crate::eval::EvalReport;
use serde::{Deserialize, Serialize};

/// Per-epoch training figures a checkpoint keeps.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct EpochTrainStats {
    pub epoch: usize,
    pub steps: usize,
    pub mean_loss: f64,
    pub lr: f64,
}

/// One evaluation of one snapshot: a line of `eval.jsonl`.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct EvalRecord {
    pub epoch: usize,
    pub step: usize,
    pub report: EvalReport,
}

/// One line of `metrics.jsonl`.
#[derive(Debug, Clone, Serialize)]
pub struct EpochRecord {
    pub epoch: usize,
    pub steps: usize,
    pub mean_loss: f64,
    pub lr: f64,
    pub seconds: f64,
    pub images_per_s: f64,
    /// Training seconds spent at the epoch's end against `train.max_seconds`.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub train_seconds: Option<f64>,
}

impl EpochRecord {
    /// The figures a checkpoint keeps.
    pub fn stats(&self) -> EpochTrainStats {
        EpochTrainStats {
            epoch: self.epoch,
            steps: self.steps,
            mean_loss: self.mean_loss,
            lr: self.lr,
        }
    }

    /// An epoch finished before a resumption (its timing and evaluation are in the run folder's records).
    pub fn restored(stats: &EpochTrainStats) -> EpochRecord {
        EpochRecord {
            epoch: stats.epoch,
            steps: stats.steps,
            mean_loss: stats.mean_loss,
            lr: stats.lr,
            seconds: 0.0,
            images_per_s: 0.0,
            train_seconds: None,
        }
    }
}

/// Per-stage figures of the final report (`summary.json`, `stages.png`).
#[derive(Debug, Clone, Serialize)]
pub struct StageReport {
    pub stage: String,
    pub images_per_s: f64,
    pub busy_share: f64,
    pub blocked_share: f64,
    pub idle_share: f64,
}

/// The evaluations recorded in the run folder (to carry across a resumption).
pub fn recorded_evals(dir: &RunDir) -> Vec<EvalRecord> {
    std::fs::read_to_string(dir.file(super::recorder::EVAL_LOG))
        .unwrap_or_default()
        .lines()
        .filter_map(|l| serde_json::from_str(l).ok())
        .collect()
}
