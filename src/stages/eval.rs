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
use serde::Serialize;
use std::sync::{Arc, Mutex};

/// One evaluation of one snapshot.
#[derive(Debug, Clone, Serialize)]
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
        }
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
        if self.evals.is_empty() || !(due || snapshot.last) {
            return Ok(());
        }
        self.layout.load(&self.model, &snapshot.weights)?;
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
        self.results
            .lock()
            .map_err(|_| StageError::msg("eval results poisoned"))?
            .push(record);
        Ok(())
    }
}
