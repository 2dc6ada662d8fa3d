//! The eval stage (the sink): evaluates student snapshots on the test set with
//! the configured attacks and reports natural and robust accuracy to the run
//! folder and the metrics. With a thread per stage (GPU) it runs off the
//! critical path; on the shared compute lane (CPU) an evaluation is one job
//! that training waits for, as in the sequential trainer.

use super::messages::Snapshot;
use super::weights::WeightLayout;
use crate::models::Model;
use crate::train::{EvalRecord, Recorder, TestPlan};
use ard_actors::{Emitter, Stage, StageError};
use std::sync::Arc;

pub struct EvalStage {
    model: Model,
    layout: WeightLayout,
    teacher: Option<Model>,
    plan: TestPlan,
    compute: super::Compute,
    /// Writes `eval.jsonl` and the evaluation metrics, keeps the results.
    recorder: Recorder,
    /// Validation split, best checkpoint and overfitting guard.
    validator: Option<crate::train::Validator>,
    /// `train.max_seconds`, paused while this stage holds the shared lane.
    budget: Option<Arc<crate::train::TimeBudget>>,
}

impl EvalStage {
    pub fn new(
        model: Model,
        teacher: Option<Model>,
        plan: TestPlan,
        compute: super::Compute,
        recorder: Recorder,
    ) -> Self {
        let layout = WeightLayout::of(&model);
        EvalStage {
            model,
            layout,
            teacher,
            plan,
            compute,
            recorder,
            validator: None,
            budget: None,
        }
    }

    /// Also validates snapshots: best checkpoint and overfitting guard
    /// ([`crate::train::validation`]).
    pub fn with_validator(mut self, validator: Option<crate::train::Validator>) -> Self {
        self.validator = validator;
        self
    }

    /// Keeps evaluations off `budget`'s clock where training waits for them
    /// (the shared compute lane); where they run beside training they cost
    /// it nothing and the clock runs on.
    pub fn off_the_clock_of(mut self, budget: Option<Arc<crate::train::TimeBudget>>) -> Self {
        self.budget = budget.filter(|_| self.compute.shares_the_lane());
        self
    }
}

impl Stage for EvalStage {
    type In = Snapshot;
    type Out = ();

    fn name(&self) -> &str {
        "eval"
    }

    fn handle(&mut self, snapshot: Snapshot, out: &mut Emitter<()>) -> Result<(), StageError> {
        self.compute.enter();
        // A resumed run may owe a snapshot whose records an earlier process
        // wrote already: nothing is computed or recorded twice.
        let test_due = self.plan.schedule().due(snapshot.epoch, snapshot.last)
            && !self.recorder.has_eval(snapshot.epoch);
        let validate = self
            .validator
            .as_ref()
            .is_some_and(|v| v.wants(test_due) && !v.has_validated(snapshot.epoch));
        if !test_due && !validate {
            return Ok(());
        }
        self.layout.load(&self.model, &snapshot.weights)?;
        // On the shared compute lane (CPU) the evaluation is one job: training
        // waits for it, as in the sequential trainer, instead of both
        // oversubscribing the cores.
        let (model, plan, teacher, validator) = (
            &mut self.model,
            &mut self.plan,
            &mut self.teacher,
            &mut self.validator,
        );
        let budget = self.budget.clone();
        let report = self.compute.run(out, move || -> crate::Result<_> {
            crate::train::off_the_clock(budget.as_deref(), || {
                // Validation first, so that a guard stop reaches training early.
                if let Some(v) = validator.as_mut() {
                    v.on_snapshot(
                        model,
                        snapshot.epoch,
                        snapshot.step,
                        test_due,
                        teacher.as_ref(),
                    )?;
                }
                if !test_due {
                    return Ok(None);
                }
                plan.evaluate(model, teacher.as_ref()).map(Some)
            })
        })??;
        if let Some(report) = report {
            let record = EvalRecord {
                epoch: snapshot.epoch,
                step: snapshot.step,
                report,
            };
            self.recorder.evaluated(record, self.validator.as_mut())?;
        }
        Ok(())
    }

    /// Evaluates the best-by-validation checkpoint on the test set when its
    /// epoch was not.
    fn finish(&mut self, out: &mut Emitter<()>) -> Result<(), StageError> {
        if let (Some(v), false) = (self.validator.as_mut(), self.plan.evals.is_empty()) {
            let (model, plan, teacher) = (&mut self.model, &mut self.plan, &mut self.teacher);
            self.compute.run(out, move || {
                v.finish(model, |m| plan.evaluate(m, teacher.as_ref()))
            })??;
        }
        Ok(())
    }
}
