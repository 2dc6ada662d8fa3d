//! The run's records, shared by both engines: one line of `metrics.jsonl`
//! per epoch ([`EpochRecord`]), one line of `eval.jsonl` per test evaluation
//! ([`EvalRecord`]), the per-epoch figures a checkpoint keeps
//! ([`EpochTrainStats`]), the running figures of the epoch in progress
//! ([`EpochTally`]), and the per-stage figures of the summary
//! ([`StageReport`]).

use super::budget::TimeBudget;
use super::resume::TrainPosition;
use crate::eval::EvalReport;
use serde::{Deserialize, Serialize};
use std::time::Instant;

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

/// The running figures of the epoch in progress: what a checkpoint keeps of
/// it ([`TrainPosition`]) and, once it ends, its [`EpochRecord`].
#[derive(Debug, Clone)]
pub struct EpochTally {
    steps: usize,
    loss_sum: f64,
    images: usize,
    /// The learning rate of the epoch's last step.
    lr: f64,
    started: Instant,
    /// Seconds of the epoch spent before a resumption.
    seconds_before: f64,
}

impl EpochTally {
    /// The epoch `position` is in (a resumption's unfinished one; with
    /// `TrainPosition::default()` a new one), its clock started now.
    pub fn resumed(position: &TrainPosition) -> Self {
        EpochTally {
            steps: position.batch_in_epoch,
            loss_sum: position.epoch_loss_sum,
            images: position.epoch_images,
            lr: 0.0,
            started: Instant::now(),
            seconds_before: position.epoch_seconds,
        }
    }

    /// A step on `images` images ended with `loss` at learning rate `lr`.
    pub fn add(&mut self, loss: f64, lr: f64, images: usize) {
        self.loss_sum += loss;
        self.lr = lr;
        self.steps += 1;
        self.images += images;
    }

    /// Steps (batches) of the epoch done.
    pub fn steps(&self) -> usize {
        self.steps
    }

    /// Seconds of the epoch so far, those before a resumption included.
    pub fn seconds(&self) -> f64 {
        self.seconds_before + self.started.elapsed().as_secs_f64()
    }

    /// Where training stands after `step` steps with `epoch` the next step's
    /// epoch (what a checkpoint keeps), with the seconds spent of `budget`.
    pub fn position(
        &self,
        step: usize,
        epoch: usize,
        budget: Option<&TimeBudget>,
    ) -> TrainPosition {
        TrainPosition {
            step,
            epoch,
            batch_in_epoch: self.steps,
            epoch_loss_sum: self.loss_sum,
            epoch_images: self.images,
            epoch_seconds: self.seconds(),
            train_seconds: budget.map_or(0.0, TimeBudget::spent_s),
        }
    }

    /// The record of the epoch that just ended, `epoch` from 1; the tally
    /// starts the next epoch (empty, its clock started now).
    pub fn finish(&mut self, epoch: usize, budget: Option<&TimeBudget>) -> EpochRecord {
        let seconds = self.seconds();
        let record = EpochRecord {
            epoch,
            steps: self.steps,
            mean_loss: self.loss_sum / self.steps.max(1) as f64,
            lr: self.lr,
            seconds,
            images_per_s: self.images as f64 / seconds.max(1e-9),
            train_seconds: budget.map(TimeBudget::spent_s),
        };
        *self = EpochTally::resumed(&TrainPosition::default());
        record
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
