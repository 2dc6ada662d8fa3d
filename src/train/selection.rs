//! Model selection without the test set, and the honest end-of-run numbers.
//!
//! A run keeps, besides its final weights, the snapshot that scored best on
//! the *validation* split (`data.validation_images`, held out of training):
//! highest accuracy under `eval.validation_attack` (PGD-10 by default), ties
//! broken by natural accuracy, a full tie keeping the earlier snapshot. The
//! test set only *reports* on the chosen snapshot; it never chooses. The
//! winner is `best.safetensors` in the run folder, with `best.json`
//! ([`BestRecord`]) saying which epoch and step it came from.
//!
//! [`SelectionSummary`] is what `summary.json` and the printed table add for
//! it: the test numbers of the best checkpoint beside the final one's, each
//! with `worst_case`, and the robustness gap — accuracy under the training
//! attack (the paper's number) minus the worst case over every evaluation run,
//! in percentage points: how much the paper's number flatters the model.

use super::folder::RunFile;
use super::overfit_guard::Collapse;
use crate::config::GuardAction;
use crate::eval::EvalReport;
use indexmap::IndexMap;
use serde::{Deserialize, Serialize};

/// Validation accuracies of one snapshot, in percent.
#[derive(Debug, Clone, Copy, PartialEq, Serialize, Deserialize)]
pub struct ValidationScore {
    pub natural: f64,
    /// Under `eval.validation_attack`.
    pub robust: f64,
}

impl ValidationScore {
    /// Whether `self` is strictly better than `other`: higher robust accuracy,
    /// then higher natural accuracy. Equal scores are not better (the earlier
    /// snapshot stays).
    pub fn beats(&self, other: &ValidationScore) -> bool {
        self.robust > other.robust || (self.robust == other.robust && self.natural > other.natural)
    }
}

/// The index of the best score of a sequence by [`ValidationScore::beats`]
/// (the first of equals); `None` for an empty sequence.
pub fn select_best(scores: &[ValidationScore]) -> Option<usize> {
    (0..scores.len()).reduce(|b, i| if scores[i].beats(&scores[b]) { i } else { b })
}

/// Where `best.safetensors` came from (`best.json`).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct BestRecord {
    /// Epochs completed when the snapshot was taken (1-based).
    pub epoch: usize,
    /// Optimisation steps completed.
    pub step: usize,
    /// The attack of `robust` (`eval.validation_attack`).
    pub attack: String,
    /// Validation images it was scored on.
    pub images: usize,
    pub validation: ValidationScore,
}

/// Robust accuracy under the training attack minus the worst case, in
/// percentage points; `None` when `train_attack` was not evaluated.
pub fn robustness_gap(report: &EvalReport) -> Option<f64> {
    report
        .accuracy
        .get("train_attack")
        .map(|t| t - report.worst_case)
}

/// The gap for the final and the best checkpoint.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct RobustnessGap {
    #[serde(rename = "final")]
    pub final_: Option<f64>,
    pub best: Option<f64>,
}

/// What the catastrophic-overfitting guard saw in a run.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct GuardSummary {
    /// `warn` or `stop`.
    pub action: GuardAction,
    /// Every collapsed epoch, in order.
    pub collapses: Vec<Collapse>,
    /// The epoch after which training was stopped (`stop` only).
    pub stopped_after_epoch: Option<usize>,
    /// The epoch of the checkpoint the final result was rolled back to (`stop` only).
    pub rolled_back_to_epoch: Option<usize>,
}

/// The model-selection part of `summary.json` (flattened into it).
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct SelectionSummary {
    /// Test `worst_case` of the final checkpoint (beside `final_eval`).
    pub final_worst_case: Option<f64>,
    /// Test accuracies of the best-by-validation checkpoint, same evaluations as `final_eval`.
    pub best_eval: Option<IndexMap<String, f64>>,
    /// Test `worst_case` of the best-by-validation checkpoint.
    pub best_worst_case: Option<f64>,
    /// Epoch of the best-by-validation checkpoint.
    pub best_epoch: Option<usize>,
    /// Where it came from and its validation numbers (`best.json`).
    pub best_validation: Option<BestRecord>,
    /// train_attack minus worst_case on the test set, percentage points.
    pub robustness_gap: RobustnessGap,
    /// The overfitting guard's findings, when it ran.
    pub guard: Option<GuardSummary>,
    /// The final checkpoint's whole test report: image count, intervals, order.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub final_test: Option<EvalReport>,
    /// The best-by-validation checkpoint's whole test report.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub best_test: Option<EvalReport>,
}

/// The heading of a checkpoint's test numbers in the end-of-run block.
fn heading(checkpoint: &str, file: RunFile, report: &EvalReport) -> String {
    format!(
        "{checkpoint} checkpoint ({file}) on the test split, first {} images{}:\n",
        crate::eval::interval::thousands(report.images as u64),
        if report.cascade { ", as a cascade" } else { "" }
    )
}

impl SelectionSummary {
    /// From the final checkpoint's test report and the best checkpoint's
    /// record and test report.
    pub fn new(
        final_test: Option<&EvalReport>,
        best: Option<(&BestRecord, Option<&EvalReport>)>,
        guard: Option<GuardSummary>,
    ) -> SelectionSummary {
        let best_test = best.and_then(|(_, t)| t);
        SelectionSummary {
            final_worst_case: final_test.map(|r| r.worst_case),
            best_eval: best_test.map(|r| r.accuracy.clone()),
            best_worst_case: best_test.map(|r| r.worst_case),
            best_epoch: best.map(|(b, _)| b.epoch),
            best_validation: best.map(|(b, _)| b.clone()),
            robustness_gap: RobustnessGap {
                final_: final_test.and_then(robustness_gap),
                best: best_test.and_then(robustness_gap),
            },
            guard,
            final_test: final_test.map(|r| r.clone().with_intervals()),
            best_test: best_test.map(|r| r.clone().with_intervals()),
        }
    }

    /// Lines for the end-of-run table: the final checkpoint's test numbers,
    /// the best one's, each under a heading naming the checkpoint, the split
    /// and the image count, evaluations in the configured order, worst case
    /// last.
    pub fn table(&self) -> String {
        let mut s = String::new();
        if let Some(r) = &self.final_test {
            s += &heading("final", RunFile::FinalWeights, r);
            s += &r.lines(14);
        }
        if let Some(b) = &self.best_validation {
            s += &format!(
                "best by validation: epoch {} (step {}; validation natural {}, {} {})\n",
                b.epoch,
                b.step,
                crate::eval::interval::accuracy_text(b.validation.natural, b.images, 2),
                b.attack,
                crate::eval::interval::accuracy_text(b.validation.robust, b.images, 2),
            );
            if let Some(r) = &self.best_test {
                s += &heading("best", RunFile::BestWeights, r);
                s += &r.lines(14);
            }
        }
        let gap = |g: Option<f64>| g.map_or("-".to_string(), |g| format!("{g:.2}"));
        if self.robustness_gap.final_.is_some() || self.robustness_gap.best.is_some() {
            s += &format!(
                "robustness gap (train_attack - worst_case, points): final {}, best {}\n",
                gap(self.robustness_gap.final_),
                gap(self.robustness_gap.best)
            );
        }
        if let Some(g) = &self.guard {
            for c in &g.collapses {
                s += &format!("guard: {c}\n");
            }
            if let Some(e) = g.stopped_after_epoch {
                s += &format!(
                    "guard: stopped after epoch {e}; final result rolled back to epoch {}\n",
                    g.rolled_back_to_epoch
                        .map_or("- (nothing to roll back to)".into(), |r| r.to_string())
                );
            }
        }
        s
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn s(natural: f64, robust: f64) -> ValidationScore {
        ValidationScore { natural, robust }
    }

    #[test]
    fn selection_is_by_robust_then_natural_accuracy() {
        assert_eq!(select_best(&[]), None);
        assert_eq!(select_best(&[s(50.0, 20.0)]), Some(0));
        assert_eq!(
            select_best(&[s(50.0, 20.0), s(40.0, 25.0), s(60.0, 24.0)]),
            Some(1)
        );
        // Ties in robust accuracy go to natural accuracy.
        assert_eq!(
            select_best(&[s(50.0, 25.0), s(55.0, 25.0), s(52.0, 25.0)]),
            Some(1)
        );
        // A full tie keeps the earlier snapshot.
        assert_eq!(select_best(&[s(50.0, 25.0), s(50.0, 25.0)]), Some(0));
        assert!(!s(50.0, 25.0).beats(&s(50.0, 25.0)));
        assert!(s(10.0, 25.1).beats(&s(90.0, 25.0)));
    }

    fn report(acc: &[(&str, f64)], worst: f64) -> EvalReport {
        EvalReport {
            images: 100,
            accuracy: acc.iter().map(|(k, v)| (k.to_string(), *v)).collect(),
            worst_case: worst,
            ..EvalReport::default()
        }
    }

    #[test]
    fn summary_reports_both_checkpoints_and_the_gap() {
        let fin = report(
            &[("natural", 60.0), ("train_attack", 40.0), ("pgd20", 30.0)],
            28.0,
        );
        let best_test = report(
            &[("natural", 58.0), ("train_attack", 39.0), ("pgd20", 33.0)],
            32.5,
        );
        let rec = BestRecord {
            epoch: 3,
            step: 30,
            attack: "pgd10".into(),
            images: 1000,
            validation: s(57.0, 34.0),
        };
        let sum = SelectionSummary::new(Some(&fin), Some((&rec, Some(&best_test))), None);
        assert_eq!(sum.best_epoch, Some(3));
        assert_eq!(sum.final_worst_case, Some(28.0));
        assert_eq!(sum.best_worst_case, Some(32.5));
        assert_eq!(sum.best_eval.as_ref().unwrap()["pgd20"], 33.0);
        assert_eq!(sum.robustness_gap.final_, Some(12.0));
        assert_eq!(sum.robustness_gap.best, Some(6.5));
        let json = serde_json::to_value(&sum).unwrap();
        assert_eq!(json["robustness_gap"]["final"], 12.0);
        assert_eq!(json["best_validation"]["validation"]["robust"], 34.0);
        let table = sum.table();
        assert!(table.contains("best by validation: epoch 3"), "{table}");
        assert!(table.contains("final 12.00, best 6.50"), "{table}");
        // Without train_attack there is no gap to report.
        let no_train = report(&[("natural", 60.0)], 60.0);
        assert_eq!(robustness_gap(&no_train), None);
        assert_eq!(SelectionSummary::new(None, None, None).table(), "");
    }
}
