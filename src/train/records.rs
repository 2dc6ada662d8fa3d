//! The run's records, shared by both engines: one line of `metrics.jsonl`
//! per epoch ([`EpochRecord`]), one line of `eval.jsonl` per test evaluation
//! ([`EvalRecord`]), the running figures of the epoch in progress
//! ([`EpochTally`]), and `summary.json` ([`Summary`], with the per-stage
//! figures, [`StageReport`]). Each is written and read back as its type
//! (through [`super::folder::RunFolder`]).

use super::budget::TimeBudget;
use super::engine::Trained;
use super::resume::TrainPosition;
use super::selection::SelectionSummary;
use super::validation::SelectionHandle;
use crate::config::Config;
use crate::eval::EvalReport;
use indexmap::IndexMap;
use serde::{Deserialize, Serialize};
use std::time::Instant;

/// One evaluation of one snapshot: a line of `eval.jsonl`.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct EvalRecord {
    pub epoch: usize,
    pub step: usize,
    pub report: EvalReport,
}

/// One line of `metrics.jsonl`, and what a checkpoint keeps of each
/// finished epoch.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct EpochRecord {
    pub epoch: usize,
    pub steps: usize,
    pub mean_loss: f64,
    pub lr: f64,
    /// Timing (absent from the epochs of checkpoints that kept only the figures above).
    #[serde(default)]
    pub seconds: f64,
    #[serde(default)]
    pub images_per_s: f64,
    /// Training seconds spent at the epoch's end against `train.max_seconds`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub train_seconds: Option<f64>,
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
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct StageReport {
    pub stage: String,
    pub images_per_s: f64,
    pub busy_share: f64,
    pub blocked_share: f64,
    pub idle_share: f64,
}

/// What `summary.json` holds; its presence marks a finished run.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct Summary {
    pub run: String,
    pub engine: String,
    pub steps: usize,
    pub epochs: usize,
    /// Wall-clock seconds of the whole run: with resumptions, every earlier
    /// process's time up to its last checkpoint plus this process's.
    pub wall_s: f64,
    pub final_loss: Option<f64>,
    pub stages: Vec<StageReport>,
    /// Accuracy (%) per evaluation of the last evaluated snapshot, in the
    /// configured order (`final_test` has the image count and intervals).
    pub final_eval: IndexMap<String, f64>,
    /// Worst cases, the best-by-validation checkpoint's test numbers
    /// (`best_eval`, `best_epoch`, ...), `robustness_gap`, the guard.
    #[serde(flatten)]
    pub selection: Box<SelectionSummary>,
}

impl Summary {
    /// The summary of `trained`, a run of `cfg` on the engine `engine` that
    /// took `wall_s` seconds in all.
    pub fn of(cfg: &Config, engine: &str, trained: &Trained, wall_s: f64) -> Summary {
        let (final_eval, selection) = SelectionHandle::summarize(
            trained.selection.as_ref(),
            trained.evals.last().map(|e| &e.report),
        );
        Summary {
            run: cfg.run.name.clone(),
            engine: engine.into(),
            steps: trained.steps,
            epochs: trained.epochs.len(),
            wall_s,
            final_loss: trained.epochs.last().map(|e| e.mean_loss),
            stages: trained.stage_reports(),
            final_eval,
            selection: Box::new(selection),
        }
    }

    /// The human-readable table printed at the end of a run: the stages,
    /// then each checkpoint's test numbers under a heading
    /// ([`SelectionSummary::table`]).
    pub fn table(&self) -> String {
        use crate::report::{plural::count, stage_table};
        let mut s = format!(
            "run {} ({}): {}, {} in {:.1}s\n",
            self.run,
            self.engine,
            count(self.steps as u64, "step"),
            count(self.epochs as u64, "epoch"),
            self.wall_s
        );
        s.push_str(&stage_table::stage_table(self.stages.iter().map(|st| {
            stage_table::StageRow {
                stage: &st.stage,
                images_per_s: st.images_per_s,
                busy: st.busy_share,
                blocked: st.blocked_share,
                idle: st.idle_share,
            }
        })));
        s.push_str(&self.selection.table());
        s
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::eval::EvalReport;
    use crate::train::selection::{BestRecord, ValidationScore};

    fn report(acc: &[(&str, f64)], worst: f64) -> EvalReport {
        EvalReport {
            images: 1000,
            accuracy: acc.iter().map(|(k, v)| (k.to_string(), *v)).collect(),
            worst_case: worst,
            ..EvalReport::default()
        }
    }

    #[test]
    fn the_end_of_run_block_names_checkpoint_split_and_images_in_configured_order() {
        // Configured order, not alphabetical: natural, train_attack, pgd20, apgd_ce.
        let order = [
            ("natural", 45.3),
            ("train_attack", 30.7),
            ("pgd20", 25.1),
            ("apgd_ce", 24.0),
        ];
        let fin = report(&order, 23.5);
        let best = report(&order.map(|(k, v)| (k, v - 1.0)), 22.5);
        let rec = BestRecord {
            epoch: 2,
            step: 20,
            attack: "pgd10".into(),
            images: 500,
            validation: ValidationScore {
                natural: 44.0,
                robust: 26.0,
            },
        };
        let summary = SelectionSummary::new(Some(&fin), Some((&rec, Some(&best))), None);
        let run = Summary {
            run: "r".into(),
            engine: "pipeline".into(),
            steps: 20,
            epochs: 2,
            wall_s: 1.0,
            final_loss: None,
            stages: Vec::new(),
            final_eval: fin.accuracy.clone(),
            selection: Box::new(summary),
        };
        let table = run.table();
        let at = |needle: &str| {
            table
                .find(needle)
                .unwrap_or_else(|| panic!("{needle:?} not in\n{table}"))
        };
        let heading =
            at("final checkpoint (final.safetensors) on the test split, first 1,000 images:");
        let rows: Vec<usize> = [
            "natural:",
            "train_attack:",
            "pgd20:",
            "apgd_ce:",
            "worst_case:",
        ]
        .iter()
        .map(|n| at(n))
        .collect();
        assert!(heading < rows[0], "{table}");
        assert!(
            rows.windows(2).all(|w| w[0] < w[1]),
            "not in order:\n{table}"
        );
        assert!(
            table.contains("natural: 45.30% (42.2-48.4, n=1,000)"),
            "{table}"
        );
        assert!(
            table.contains("worst_case: 23.50% (21.0-26.2, n=1,000) (right clean and under every one of natural, train_attack, pgd20, apgd_ce)"),
            "{table}"
        );
        let best_heading =
            at("best checkpoint (best.safetensors) on the test split, first 1,000 images:");
        assert!(best_heading > rows[4], "{table}");
        assert!(
            table.contains("validation natural 44.00% (39.7-48.4, n=500)"),
            "{table}"
        );
        // summary.json keeps the order and carries the count and intervals.
        let json = serde_json::to_string(&run).unwrap();
        let pos = |k: &str| json.find(&format!("\"{k}\":")).unwrap();
        assert!(
            pos("natural") < pos("train_attack") && pos("pgd20") < pos("apgd_ce"),
            "{json}"
        );
        let v: serde_json::Value = serde_json::from_str(&json).unwrap();
        assert_eq!(v["final_test"]["images"], 1000);
        let lo = v["final_test"]["intervals"]["pgd20"]["lo"]
            .as_f64()
            .unwrap();
        assert!((lo - 22.5).abs() < 0.1, "{v}");
        assert!(
            v["final_test"]["worst_case_interval"]["hi"].is_number(),
            "{v}"
        );
    }
}
