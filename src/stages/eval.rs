//! The eval stage (the sink): evaluates student snapshots on the test set with
//! the configured attacks, off the critical path, and reports natural and
//! robust accuracy to the run folder and the metrics.

use super::messages::Snapshot;
use super::weights::WeightLayout;
use crate::config::AttackConfig;
use crate::eval::{self, EvalAttack, EvalReport, EvalSet};
use crate::models::Model;
use crate::train::RunDir;
use ard_actors::{Emitter, Stage, StageError};
use serde::{Deserialize, Serialize};
use std::sync::{Arc, Mutex};

/// One evaluation of one snapshot.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct EvalRecord {
    pub epoch: usize,
    pub step: usize,
    pub report: EvalReport,
}

pub struct EvalStage {
    model: Model,
    layout: WeightLayout,
    teacher: Option<Model>,
    set: EvalSet,
    evals: Vec<EvalAttack>,
    train_attack: AttackConfig,
    batch_size: usize,
    seed: u64,
    every_epochs: usize,
    threads: super::ThreadBudget,
    run_dir: Option<RunDir>,
    metrics: Option<crate::metrics::TrainMetrics>,
    results: Arc<Mutex<Vec<EvalRecord>>>,
    /// Validation split, best checkpoint and overfitting guard (issue 6).
    validator: Option<crate::train::validation::Validator>,
}

impl EvalStage {
    #[allow(clippy::too_many_arguments)]
    pub fn new(
        model: Model,
        teacher: Option<Model>,
        set: EvalSet,
        evals: Vec<EvalAttack>,
        train_attack: AttackConfig,
        batch_size: usize,
        seed: u64,
        every_epochs: usize,
        threads: usize,
        run_dir: Option<RunDir>,
        metrics: Option<crate::metrics::TrainMetrics>,
        results: Arc<Mutex<Vec<EvalRecord>>>,
    ) -> Self {
        let layout = WeightLayout::of(&model);
        EvalStage {
            model,
            layout,
            teacher,
            set,
            evals,
            train_attack,
            batch_size,
            seed,
            every_epochs,
            threads: super::ThreadBudget::new(threads),
            run_dir,
            metrics,
            results,
            validator: None,
        }
    }

    /// Also validates snapshots: best checkpoint and overfitting guard
    /// ([`crate::train::validation`]).
    pub fn with_validator(
        mut self,
        validator: Option<crate::train::validation::Validator>,
    ) -> Self {
        self.validator = validator;
        self
    }
}

impl Stage for EvalStage {
    type In = Snapshot;
    type Out = ();

    fn name(&self) -> &str {
        "eval"
    }

    fn handle(&mut self, snapshot: Snapshot, _out: &mut Emitter<()>) -> Result<(), StageError> {
        self.threads.apply_once();
        let due = self.every_epochs > 0 && snapshot.epoch % self.every_epochs == 0;
        let test_due = !self.evals.is_empty() && (due || snapshot.last);
        let validate = self.validator.as_ref().is_some_and(|v| v.wants(test_due));
        if !test_due && !validate {
            return Ok(());
        }
        self.layout.load(&self.model, &snapshot.weights)?;
        // Validation first, so that a guard stop reaches training early.
        if let Some(v) = self.validator.as_mut() {
            v.on_snapshot(
                &self.model,
                snapshot.epoch,
                snapshot.step,
                test_due,
                self.teacher.as_ref(),
            )?;
        }
        if !test_due {
            return Ok(());
        }
        let report = eval::evaluate(
            &self.model,
            &self.set,
            &self.evals,
            &self.train_attack,
            self.batch_size,
            self.seed,
            self.teacher.as_ref(),
            |_, _| {},
        )?;
        log::info!("eval after epoch {}: {:?}", snapshot.epoch, report.accuracy);
        if let Some(m) = &self.metrics {
            let results: Vec<(&str, f64)> = report
                .accuracy
                .iter()
                .map(|(a, v)| (a.as_str(), *v))
                .collect();
            m.record_eval(snapshot.epoch as u64, snapshot.step as u64, &results);
        }
        let record = EvalRecord {
            epoch: snapshot.epoch,
            step: snapshot.step,
            report,
        };
        if let Some(dir) = &self.run_dir {
            dir.append_jsonl("eval.jsonl", &record)?;
        }
        if let Some(v) = self.validator.as_mut() {
            v.record_test(record.epoch, &record.report)?;
        }
        self.results
            .lock()
            .map_err(|_| StageError::msg("eval results poisoned"))?
            .push(record);
        Ok(())
    }

    /// Evaluates the best-by-validation checkpoint on the test set when its
    /// epoch was not (issue 6).
    fn finish(&mut self, _out: &mut Emitter<()>) -> Result<(), StageError> {
        if let (Some(v), false) = (self.validator.as_mut(), self.evals.is_empty()) {
            v.finish(&self.model, |m| {
                eval::evaluate(
                    m,
                    &self.set,
                    &self.evals,
                    &self.train_attack,
                    self.batch_size,
                    self.seed,
                    self.teacher.as_ref(),
                    |_, _| {},
                )
            })?;
        }
        Ok(())
    }
}
