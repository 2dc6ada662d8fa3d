//! The data stage (a source): CIFAR-10 in memory as bytes, a seeded order and
//! augmentation view per (seed, epoch, index), batches built on the host and
//! moved to the device once. With `teacher.views = K` each image's view is one
//! of its K fixed views ([`ViewSet::training_views`]).

use super::messages::{BatchPosition, CleanBatch};
use crate::config::DataConfig;
use crate::data::{self, EpochPlan, Split};
use crate::soft_labels::ViewSet;
use ard_actors::{Source, StageError};
use tch::Device;

/// Produces the run's training batches in order, `total_steps` in all.
pub struct DataStage {
    train: Split,
    cfg: DataConfig,
    seed: u64,
    device: Device,
    epochs: usize,
    total_steps: usize,
    threads: super::Compute,
    views: ViewSet,
    // Position.
    epoch: usize,
    batch_in_epoch: usize,
    step: usize,
    plan: Option<data::Batches>,
    /// Raised by the overfitting guard: produce nothing more.
    stop: Option<crate::train::StopFlag>,
    /// `train.max_seconds`: once spent, the next batch is the run's last.
    budget: Option<std::sync::Arc<crate::train::TimeBudget>>,
    /// Whether this process has produced a batch yet.
    produced: bool,
}

impl DataStage {
    pub fn new(
        train: Split,
        cfg: DataConfig,
        seed: u64,
        device: Device,
        epochs: usize,
        total_steps: usize,
    ) -> Self {
        DataStage {
            train,
            cfg,
            seed,
            device,
            epochs,
            total_steps,
            threads: super::Compute::new(1, None),
            views: ViewSet::All,
            epoch: 0,
            batch_in_epoch: 0,
            step: 0,
            plan: None,
            stop: None,
            budget: None,
            produced: false,
        }
    }

    /// Ends the run when `budget` is spent: the batch produced then is the
    /// last (as in the sequential trainer: the step begun after the budget is
    /// spent is the run's last).
    /// Decodes and augments on `n` threads (1 by default).
    pub fn with_threads(mut self, n: usize) -> Self {
        self.threads = super::Compute::new(n, None);
        self
    }

    pub fn within(mut self, budget: Option<std::sync::Arc<crate::train::TimeBudget>>) -> Self {
        self.budget = budget;
        self
    }

    /// Ends the run early once `stop` is raised (the pipeline then drains).
    pub fn stopping_on(mut self, stop: Option<crate::train::StopFlag>) -> Self {
        self.stop = stop;
        self
    }

    /// Starts at `position` (a resumption): the batches before it are skipped
    /// without being built.
    pub fn starting_at(mut self, position: &crate::train::TrainPosition) -> Self {
        self.epoch = position.epoch;
        self.batch_in_epoch = position.batch_in_epoch;
        self.step = position.step;
        self
    }

    /// Draws each image's view from `views` (default: all 162, the paper's augmentation).
    pub fn with_view_set(mut self, views: ViewSet) -> Self {
        self.views = views;
        self
    }
}

impl Source for DataStage {
    type Out = CleanBatch;

    fn name(&self) -> &str {
        "data"
    }

    fn produce(&mut self) -> Result<Option<CleanBatch>, StageError> {
        self.threads.enter();
        if self.step >= self.total_steps || self.epoch >= self.epochs {
            return Ok(None);
        }
        if self.stop.as_ref().is_some_and(|s| s.is_raised()) {
            log::warn!("guard: no more training batches after step {}", self.step);
            return Ok(None);
        }
        if self.budget.as_ref().is_some_and(|b| b.exhausted()) {
            if !self.produced && self.step > 0 {
                // Resumed after the budget's last step (stopped during the final
                // evaluation): nothing is left to train.
                log::info!(
                    "train.max_seconds was spent before this resumption: step {} was the last",
                    self.step
                );
                return Ok(None);
            }
            // The student stage logs the last step (it may come before this one).
            log::debug!(
                "train.max_seconds spent: no batch after step {}",
                self.step + 1
            );
            self.total_steps = self.step + 1;
        }
        let skip = self.batch_in_epoch;
        let plan = self.plan.get_or_insert_with(|| {
            let mut plan =
                EpochPlan::train(&self.cfg, self.seed, self.epoch as u64).batches(self.train.len());
            // Mid-epoch start: the batches already trained on are passed over.
            for _ in 0..skip {
                plan.next();
            }
            plan
        });
        let per_epoch = plan.len() + self.batch_in_epoch;
        let Some((indices, views)) = plan.next() else {
            return Err(StageError::msg(format!(
                "epoch {} has no batches (empty training set?)",
                self.epoch + 1
            )));
        };
        let views = self.views.training_views(
            self.seed,
            self.epoch as u64,
            self.cfg.augment,
            &indices,
            views,
        );
        let batch = data::make_batch(&self.train, &indices, &views, self.device)?;
        let last_in_run = self.step + 1 == self.total_steps;
        let last_in_epoch = self.batch_in_epoch + 1 == per_epoch || last_in_run;
        let msg = CleanBatch {
            at: BatchPosition {
                epoch: self.epoch,
                step: self.step,
                last_in_epoch,
                last_in_run,
            },
            x: batch.images,
            y: batch.labels,
            indices: batch.indices,
            views: batch.views,
        };
        self.step += 1;
        self.batch_in_epoch += 1;
        self.produced = true;
        if last_in_epoch {
            self.epoch += 1;
            self.batch_in_epoch = 0;
            self.plan = None;
        }
        Ok(Some(msg))
    }
}
