//! A run's bookkeeping, the same for both engines: the engine tells the
//! [`Recorder`] that an epoch ended, that a snapshot was evaluated, that the
//! run finished, and the recorder writes the run folder's records
//! (`metrics.jsonl`, `eval.jsonl`, `last.safetensors`, `training.png`,
//! `stages.png`), updates the evaluation metrics and logs one line each.
//! Neither engine writes a record itself. Clones share one [`RunLog`], the
//! epochs and evaluations recorded so far, which the run's result is read from.

use super::records::{EpochRecord, EpochTrainStats, EvalRecord, StageReport};
use super::run_dir::RunDir;
use crate::error::Result;
use crate::metrics::TrainMetrics;
use crate::models::Model;
use std::collections::BTreeMap;
use std::sync::{Arc, Mutex, MutexGuard};

/// The run folder's record files.
pub const METRICS_LOG: &str = "metrics.jsonl";
pub const EVAL_LOG: &str = "eval.jsonl";
pub const LAST_WEIGHTS: &str = "last.safetensors";
pub const TRAINING_PLOT: &str = "training.png";
pub const STAGES_PLOT: &str = "stages.png";

/// What a run has recorded: a resumed run's earlier epochs and evaluations,
/// then this process's.
#[derive(Debug, Clone, Default)]
pub struct RunLog {
    pub epochs: Vec<EpochTrainStats>,
    pub evals: Vec<EvalRecord>,
}

/// Writes one run's records (no files without a run folder, no metrics
/// without them) and keeps its [`RunLog`].
#[derive(Clone, Default)]
pub struct Recorder {
    dir: Option<RunDir>,
    metrics: Option<TrainMetrics>,
    log: Arc<Mutex<RunLog>>,
}

impl Recorder {
    pub fn new(dir: Option<RunDir>, metrics: Option<TrainMetrics>) -> Recorder {
        Recorder {
            dir,
            metrics,
            log: Arc::default(),
        }
    }

    /// Continues the log of an earlier process of the same run (a resumption).
    pub fn continuing(self, prior: RunLog) -> Recorder {
        *self.lock() = prior;
        self
    }

    /// The run's metrics, when it exports them.
    pub fn metrics(&self) -> Option<&TrainMetrics> {
        self.metrics.as_ref()
    }

    /// The epochs and evaluations recorded so far.
    pub fn log(&self) -> RunLog {
        self.lock().clone()
    }

    /// The epochs recorded so far (what a checkpoint keeps).
    pub fn epochs(&self) -> Vec<EpochTrainStats> {
        self.lock().epochs.clone()
    }

    fn lock(&self) -> MutexGuard<'_, RunLog> {
        // A panic elsewhere cannot leave a half-pushed Vec: keep the log.
        self.log
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
    }

    /// An epoch ended with `student`'s weights: its line of `metrics.jsonl`,
    /// `last.safetensors`, and the log line.
    pub fn epoch_end(&self, record: &EpochRecord, student: &Model) -> Result<()> {
        log::info!(
            "epoch {}: {} steps, mean loss {:.5}, lr {:.4}, {:.1} images/s",
            record.epoch,
            record.steps,
            record.mean_loss,
            record.lr,
            record.images_per_s
        );
        self.lock().epochs.push(record.stats());
        if let Some(dir) = &self.dir {
            student.save(&dir.file(LAST_WEIGHTS))?;
            dir.append_jsonl(METRICS_LOG, record)?;
        }
        Ok(())
    }

    /// A snapshot was evaluated on the test set: its line of `eval.jsonl`,
    /// the evaluation metrics (`/status`, Prometheus), and the log line.
    pub fn evaluated(&self, record: &EvalRecord) -> Result<()> {
        log::info!(
            "eval after epoch {}: {:?}, worst case {:.2}%",
            record.epoch,
            record.report.accuracy,
            record.report.worst_case
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
        self.lock().evals.push(record.clone());
        if let Some(dir) = &self.dir {
            dir.append_jsonl(EVAL_LOG, record)?;
        }
        Ok(())
    }

    /// The run finished: `training.png` (loss and accuracy per epoch, from
    /// the records of the whole run, resumptions included) and `stages.png`
    /// (per-stage throughput; no bars for the sequential engine, which has no
    /// stages). A plot that cannot be drawn is a warning, not a failure.
    pub fn finished(&self, stages: &[StageReport]) {
        let Some(dir) = &self.dir else {
            return;
        };
        let loss: Vec<(usize, f64)> = std::fs::read_to_string(dir.file(METRICS_LOG))
            .unwrap_or_default()
            .lines()
            .filter_map(|l| serde_json::from_str::<serde_json::Value>(l).ok())
            .filter_map(|r| Some((r["epoch"].as_u64()? as usize, r["mean_loss"].as_f64()?)))
            .collect();
        let acc: Vec<(usize, BTreeMap<String, f64>)> = super::records::recorded_evals(dir)
            .into_iter()
            .map(|e| (e.epoch, e.report.accuracy))
            .collect();
        if let Err(e) = crate::report::plots::training_curves(&dir.file(TRAINING_PLOT), &loss, &acc)
        {
            log::warn!("{e}");
        }
        let bars: Vec<_> = stages
            .iter()
            .map(|s| {
                (
                    s.stage.clone(),
                    s.images_per_s,
                    s.busy_share,
                    s.blocked_share,
                    s.idle_share,
                )
            })
            .collect();
        if let Err(e) = crate::report::plots::stage_throughput(&dir.file(STAGES_PLOT), &bars) {
            log::warn!("{e}");
        }
    }
}
