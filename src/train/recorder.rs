//! A run's bookkeeping, the same for both engines: the engine tells the
//! [`Recorder`] that a step or an epoch ended or that a snapshot was
//! evaluated, and the recorder writes the run folder's records (the epoch
//! and eval logs, the last weights, the checkpoint) through its
//! [`RunFolder`], updates the metrics and logs one line each. Neither engine
//! writes a record itself. Clones share one [`Records`], the epochs and
//! evaluations recorded so far, which the run's result is read from.

use super::folder::{RunFile, RunFolder};
use super::records::{EpochRecord, EvalRecord};
use super::resume::{self, Checkpoint, TrainPosition, TrainState};
use super::validation::Validator;
use crate::config::Config;
use crate::distill::Sgd;
use crate::error::Result;
use crate::metrics::TrainMetrics;
use crate::models::Model;
use std::sync::{Arc, Mutex, MutexGuard};

/// What a run has recorded: a resumed run's earlier epochs and evaluations,
/// then this process's.
#[derive(Debug, Clone, Default)]
pub struct Records {
    /// A resumed run's earlier epochs come from its checkpoint.
    pub epochs: Vec<EpochRecord>,
    pub evals: Vec<EvalRecord>,
}

/// Writes one run's records (no files without a run folder, no metrics
/// without them) and keeps its [`Records`].
#[derive(Clone, Default)]
pub struct Recorder {
    dir: Option<RunFolder>,
    metrics: Option<TrainMetrics>,
    log: Arc<Mutex<Records>>,
    /// The config of the training run recorded ([`Recorder::training`]).
    config: Option<Arc<Config>>,
    /// Wall-clock seconds of a resumed run's earlier processes.
    wall_before: f64,
}

impl Recorder {
    pub fn new(dir: Option<RunFolder>, metrics: Option<TrainMetrics>) -> Recorder {
        Recorder {
            dir,
            metrics,
            ..Recorder::default()
        }
    }

    /// Records the training of `cfg`: also its checkpoints and final weights.
    /// A resumption continues the log of the process that wrote `resume`:
    /// its finished epochs, the evaluations in the run folder (which are
    /// not recorded again) and its wall-clock time.
    pub fn training(mut self, cfg: &Config, resume: Option<&Checkpoint>) -> Result<Recorder> {
        self.config = Some(Arc::new(cfg.clone()));
        if let Some(c) = resume {
            self.wall_before = c.state.wall_s;
            let evals = match &self.dir {
                Some(d) => d.read_records(RunFile::EvalLog)?,
                None => Vec::new(),
            };
            *self.lock() = Records {
                epochs: c.state.epochs.clone(),
                evals,
            };
        }
        Ok(self)
    }

    /// The run's metrics, when it exports them.
    pub fn metrics(&self) -> Option<&TrainMetrics> {
        self.metrics.as_ref()
    }

    /// The epochs and evaluations recorded so far.
    pub fn log(&self) -> Records {
        self.lock().clone()
    }

    /// The epochs recorded so far (what a checkpoint keeps).
    pub fn epochs(&self) -> Vec<EpochRecord> {
        self.lock().epochs.clone()
    }

    /// Whether the test evaluation after `epoch` epochs is recorded already
    /// (by this process, or by an earlier one of a resumed run).
    pub fn has_eval(&self, epoch: usize) -> bool {
        self.lock().evals.iter().any(|e| e.epoch == epoch)
    }

    /// Whether training checkpoints are written (a training run with a folder).
    pub fn checkpoints(&self) -> bool {
        self.dir.is_some() && self.config.is_some()
    }

    /// Whether the periodic checkpoint (`run.checkpoint_every_steps`) is due
    /// after `step` steps.
    pub fn periodic_checkpoint_due(&self, step: usize) -> bool {
        let every = self
            .config
            .as_ref()
            .and_then(|c| c.run.checkpoint_every_steps);
        every.is_some_and(|n| step.is_multiple_of(n))
    }

    /// Writes the training checkpoint of `student` and `sgd` at `position`,
    /// with the epochs recorded so far (see [`resume::write`]).
    pub fn checkpoint(&self, student: &Model, sgd: &Sgd, position: TrainPosition) -> Result<()> {
        let (Some(dir), Some(cfg)) = (&self.dir, &self.config) else {
            return Ok(());
        };
        let wall_s = self.wall_before + dir.seconds_open();
        let state = TrainState::new(cfg, position, self.epochs(), wall_s);
        resume::write(&dir.file(RunFile::Checkpoint), student, sgd, &state)
    }

    fn lock(&self) -> MutexGuard<'_, Records> {
        // A panic elsewhere cannot leave a half-pushed Vec: keep the log.
        self.log
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
    }

    /// An epoch ended with `student`'s weights: its epoch record, the last
    /// weights, and the log line.
    pub fn epoch_end(&self, record: &EpochRecord, student: &Model) -> Result<()> {
        log::info!(
            "epoch {}: {}, mean loss {:.5}, lr {:.4}, {:.1} images/s",
            record.epoch,
            crate::report::plural::count(record.steps as u64, "step"),
            record.mean_loss,
            record.lr,
            record.images_per_s
        );
        self.lock().epochs.push(record.clone());
        if let Some(dir) = &self.dir {
            dir.save_model(RunFile::LastWeights, student)?;
            dir.append_jsonl(RunFile::EpochLog, record)?;
        }
        Ok(())
    }

    /// A training step ended: the step metrics (`/status`, Prometheus).
    pub fn stepped(&self, epoch: usize, loss: f64, lr: f64) {
        if let Some(m) = &self.metrics {
            m.set_loss(loss);
            m.set_lr(lr);
            m.set_epoch(epoch as u64 + 1);
            m.inc_train_steps(1);
        }
    }

    /// A snapshot was evaluated on the test set: its eval record,
    /// the evaluation metrics (`/status`, Prometheus), the log line, and the
    /// result for `validator`'s best checkpoint.
    /// An epoch already recorded (a resumed run's evaluation owed twice) is
    /// not recorded again.
    pub fn evaluated(&self, record: EvalRecord, validator: Option<&mut Validator>) -> Result<()> {
        if self.has_eval(record.epoch) {
            log::debug!(
                "eval after epoch {} is in {} already: not recorded again",
                record.epoch,
                RunFile::EvalLog
            );
            if let Some(v) = validator {
                v.record_test(record.epoch, &record.report)?;
            }
            return Ok(());
        }
        let r = &record.report;
        let each: Vec<String> = r
            .accuracy
            .keys()
            .map(|name| format!("{name} {}", r.accuracy_text(name)))
            .collect();
        log::info!(
            "eval after epoch {}: {}; worst case {}",
            record.epoch,
            each.join(", "),
            r.worst_case_text()
        );
        if let Some(m) = &self.metrics {
            let results: Vec<(&str, f64)> = record
                .report
                .accuracy
                .iter()
                .map(|(a, v)| (a.as_str(), *v))
                .collect();
            m.record_eval(record.epoch as u64, record.step as u64, &results);
        }
        if let Some(dir) = &self.dir {
            dir.append_jsonl(RunFile::EvalLog, &record)?;
        }
        if let Some(v) = validator {
            v.record_test(record.epoch, &record.report)?;
        }
        self.lock().evals.push(record);
        Ok(())
    }
}
