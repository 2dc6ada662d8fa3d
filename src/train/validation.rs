//! Per-epoch validation of a training run, one [`Validator`] for both engines
//! (the pipeline's eval stage, off the critical path, and the sequential
//! trainer): model selection on the validation split (`best.safetensors`) and
//! the catastrophic-overfitting guard.
//!
//! A snapshot is validated when its test evaluation is due (and, with the
//! guard on, after every epoch) on natural accuracy and
//! `eval.validation_attack`, plus the training attack for the guard, over the
//! first `eval.validation_limit` (default `eval.test_limit`) images of the
//! validation split ([`crate::data::validation`]), never the test set. Each
//! validated epoch is a line of `validation.jsonl`; the best so far
//! ([`ValidationScore::beats`]) is `best.safetensors` + `best.json` and a CPU
//! copy in memory, evaluated on the test set at the end when its epoch was
//! not ([`Validator::finish`]).
//!
//! With `guard.action = "stop"` a collapse raises the [`StopFlag`] (the data
//! stage stops producing batches; the sequential trainer stops after that
//! epoch) and [`SelectionHandle::roll_back`] makes the best-by-validation
//! checkpoint the final result.

use super::folder::{RunFile, RunFolder};
use super::overfit_guard::{Collapse, GuardPoint, OverfitGuard, StopFlag};
use super::selection::{BestRecord, GuardSummary, SelectionSummary, ValidationScore};
use crate::config::{AttackConfig, Config, GuardAction};
use crate::data::Split;
use crate::error::{Error, Result};
use crate::eval::{self, EvalAttack, EvalReport, EvalSet};
use crate::models::Model;
use serde::{Deserialize, Serialize};
use std::collections::BTreeMap;
use std::sync::{Arc, Mutex, MutexGuard};
use tch::{Device, Tensor};

/// One line of `validation.jsonl`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct ValidationLine {
    pub epoch: usize,
    pub step: usize,
    pub images: usize,
    /// `eval.validation_attack`.
    pub attack: String,
    pub natural: f64,
    pub robust: f64,
    /// Accuracy under the training attack (only when the guard is on).
    pub train_attack: Option<f64>,
    /// This snapshot became `best.safetensors`.
    pub best: bool,
    /// The guard saw a collapse at this epoch.
    pub collapse: bool,
}

/// What validation found so far; shared between the [`Validator`] (inside a
/// stage) and the caller, who reads it once training ends.
#[derive(Debug, Default)]
pub struct SelectionState {
    pub best: Option<BestRecord>,
    /// The best snapshot's variables, on the CPU, by name.
    pub best_weights: Option<BTreeMap<String, Tensor>>,
    /// The best snapshot's test report, once known.
    pub best_test: Option<EvalReport>,
    /// What the guard saw (`None` when it is off).
    pub guard: Option<GuardSummary>,
}

/// The caller's view of a [`Validator`]'s findings.
#[derive(Debug, Clone, Default)]
pub struct SelectionHandle(Arc<Mutex<SelectionState>>);

impl SelectionHandle {
    pub fn lock(&self) -> Result<MutexGuard<'_, SelectionState>> {
        self.0.lock().map_err(|_| Error::Poisoned {
            what: "validation state",
        })
    }

    /// When the guard stopped training: loads the best-by-validation weights
    /// into `model` (which the run then saves as its final weights). Returns
    /// the epoch rolled back to; `None` when there was no stop (or nothing to
    /// roll back to, which is logged).
    pub fn roll_back(&self, model: &Model) -> Result<Option<usize>> {
        let mut lock = self.lock()?;
        let state = &mut *lock;
        let Some(guard) = state.guard.as_mut() else {
            return Ok(None);
        };
        let Some(stopped) = guard.stopped_after_epoch else {
            return Ok(None);
        };
        let (Some(best), Some(weights)) = (&state.best, &state.best_weights) else {
            log::warn!(
                "guard: training stopped after epoch {stopped}, but no validated checkpoint \
                 exists to roll back to; the final result is the last weights"
            );
            return Ok(None);
        };
        load_named(model, weights)?;
        let epoch = best.epoch;
        log::warn!(
            "guard: final result rolled back to the best-by-validation checkpoint of epoch {epoch}"
        );
        guard.rolled_back_to_epoch = Some(epoch);
        Ok(Some(epoch))
    }

    /// The final accuracies (`final_eval`) and the selection part of the
    /// summary, given the test report of the last evaluated snapshot. After a
    /// roll-back the final checkpoint is the best one, and so are its numbers.
    pub fn summarize(
        handle: Option<&SelectionHandle>,
        last_test: Option<&EvalReport>,
    ) -> (indexmap::IndexMap<String, f64>, SelectionSummary) {
        let lock = handle.and_then(|h| h.lock().ok());
        let state = lock.as_deref();
        let guard = state.and_then(|s| s.guard.clone());
        let final_test = match &guard {
            Some(g) if g.rolled_back_to_epoch.is_some() => state.and_then(|s| s.best_test.as_ref()),
            _ => last_test,
        };
        let best = state.and_then(|s| s.best.as_ref().map(|b| (b, s.best_test.as_ref())));
        (
            final_test.map(|r| r.accuracy.clone()).unwrap_or_default(),
            SelectionSummary::new(final_test, best, guard),
        )
    }
}

/// Copies `weights` (by name) into `model`'s variables.
fn load_named(model: &Model, weights: &BTreeMap<String, Tensor>) -> Result<()> {
    tch::no_grad(|| -> Result<()> {
        for (name, var) in model.vs.variables() {
            let w = weights
                .get(&name)
                .ok_or_else(|| Error::invalid("best checkpoint", format!("no variable {name}")))?;
            var.shallow_clone()
                .f_copy_(&w.f_to_device(var.device())?.f_to_kind(var.kind())?)?;
        }
        Ok(())
    })
}

/// Deep CPU copies of `model`'s variables.
fn cpu_copy(model: &Model) -> BTreeMap<String, Tensor> {
    tch::no_grad(|| {
        model
            .vs
            .variables()
            .into_iter()
            .map(|(n, t)| (n, t.detach().to_device(Device::Cpu).copy()))
            .collect()
    })
}

/// Validates snapshots: see the module docs.
pub struct Validator {
    set: EvalSet,
    images: usize,
    attack: EvalAttack,
    train_attack: AttackConfig,
    batch_size: usize,
    seed: u64,
    guard: Option<OverfitGuard>,
    stop: StopFlag,
    dir: Option<RunFolder>,
    state: SelectionHandle,
    /// Epochs whose line `validation.jsonl` holds (a resumed run's included):
    /// never validated twice.
    validated: std::collections::BTreeSet<usize>,
}

impl Validator {
    /// The validator of a run of `cfg` on `validation` (the held-out images),
    /// or `None` when there are none (`data.validation_images = 0`). A fresh
    /// run (`resumed_epochs = None`) removes a previous run's validation
    /// files from `dir`; a resumed one keeps those of its first
    /// `resumed_epochs` epochs and carries the best checkpoint and the guard's
    /// memory over.
    pub fn for_run(
        cfg: &Config,
        validation: &Split,
        dir: Option<&RunFolder>,
        resumed_epochs: Option<usize>,
    ) -> Result<Option<Validator>> {
        if validation.is_empty() {
            return Ok(None);
        }
        let attack = EvalAttack::parse(&cfg.eval.validation_attack)
            .map_err(|e| Error::Setting(format!("eval.validation_attack: {e}")))?;
        let limit = cfg.eval.validation_limit.or(cfg.eval.test_limit);
        let split = match limit {
            Some(n) => validation.clone().prefix(n),
            None => validation.clone(),
        };
        let guard_on = cfg.guard.action != GuardAction::Off;
        let state = SelectionState {
            guard: guard_on.then(|| GuardSummary {
                action: cfg.guard.action,
                ..GuardSummary::default()
            }),
            ..SelectionState::default()
        };
        let mut v = Validator {
            set: EvalSet::from_split(&split)?,
            images: split.len(),
            attack,
            train_attack: cfg.attack.clone(),
            batch_size: cfg.data.batch_size,
            seed: cfg.run.seed,
            guard: guard_on.then(|| OverfitGuard::new(cfg.guard.max_drop.get())),
            stop: StopFlag::new(),
            dir: dir.cloned(),
            state: SelectionHandle(Arc::new(Mutex::new(state))),
            validated: Default::default(),
        };
        match (dir, resumed_epochs) {
            (Some(dir), None) => {
                for name in [
                    RunFile::ValidationLog,
                    RunFile::BestRecord,
                    RunFile::BestWeights,
                ] {
                    let file = dir.file(name);
                    if file.exists() {
                        std::fs::remove_file(&file).map_err(|e| Error::io(&file, e))?;
                    }
                }
            }
            (Some(dir), Some(epochs)) => v.restore(dir, epochs)?,
            (None, _) => {}
        }
        Ok(Some(v))
    }

    /// The flag the guard raises to stop training.
    pub fn stop_flag(&self) -> StopFlag {
        self.stop.clone()
    }

    /// Where the findings are read after training.
    pub fn handle(&self) -> SelectionHandle {
        self.state.clone()
    }

    /// Whether validating needs the teacher's logits (a kl_pgd training attack).
    pub fn needs_teacher(&self) -> bool {
        self.evals()
            .iter()
            .any(|e| e.needs_teacher(&self.train_attack))
    }

    /// Whether a snapshot is validated, given whether its test evaluation is due.
    pub fn wants(&self, test_due: bool) -> bool {
        test_due || self.guard.is_some()
    }

    /// Whether the snapshot after `epoch` epochs was validated already (by
    /// this process, or by an earlier one of a resumed run).
    pub fn has_validated(&self, epoch: usize) -> bool {
        self.validated.contains(&epoch)
    }

    fn evals(&self) -> Vec<EvalAttack> {
        let mut evals = vec![EvalAttack::Natural, self.attack];
        if self.guard.is_some() {
            evals.push(EvalAttack::TrainAttack);
        }
        // Only `self.attack` can repeat another, and then its neighbour.
        evals.dedup();
        evals
    }

    /// Validates `model` (the snapshot after `epoch` epochs and `step` steps)
    /// if [`Validator::wants`] it: keeps it when it is the best so far, and
    /// runs the guard. Returns whether training is to stop. Snapshots after a
    /// stop, and epochs validated already, are ignored.
    pub fn on_snapshot(
        &mut self,
        model: &Model,
        epoch: usize,
        step: usize,
        test_due: bool,
        teacher: Option<&Model>,
    ) -> Result<bool> {
        if self.stop.is_raised() {
            return Ok(true);
        }
        if !self.wants(test_due) || self.has_validated(epoch) {
            return Ok(false);
        }
        let report = eval::Evaluation {
            model,
            set: &self.set,
            evals: &self.evals(),
            train_attack: &self.train_attack,
            batch_size: self.batch_size,
            seed: self.seed,
            teacher,
        }
        .report()?;
        let acc = |name: &str| report.accuracy.get(name).copied().unwrap_or(f64::NAN);
        let attack = self.attack.name();
        let score = ValidationScore {
            natural: acc("natural"),
            robust: acc(&attack),
        };
        let train_attack = self.guard.is_some().then(|| acc("train_attack"));
        let is_best = self.keep_if_best(
            model,
            BestRecord {
                epoch,
                step,
                attack: attack.clone(),
                images: self.images,
                validation: score,
            },
        )?;
        log::info!(
            "validation after epoch {epoch} ({} images): natural {:.2}%, {attack} {:.2}%{}{}",
            self.images,
            score.natural,
            score.robust,
            train_attack
                .map(|t| format!(", train_attack {t:.2}%"))
                .unwrap_or_default(),
            if is_best { " (best so far)" } else { "" }
        );
        let collapse = self.watch(epoch, score.robust, train_attack)?;
        self.validated.insert(epoch);
        if let Some(dir) = &self.dir {
            dir.append_jsonl(
                RunFile::ValidationLog,
                &ValidationLine {
                    epoch,
                    step,
                    images: self.images,
                    attack,
                    natural: score.natural,
                    robust: score.robust,
                    train_attack,
                    best: is_best,
                    collapse: collapse.is_some(),
                },
            )?;
        }
        Ok(self.stop.is_raised())
    }

    /// Keeps `model` as the best snapshot (its weights and `record` also in
    /// the run folder) when its score beats the best so far; returns whether it did.
    fn keep_if_best(&self, model: &Model, record: BestRecord) -> Result<bool> {
        let mut state = self.state.lock()?;
        let beaten = |b: &BestRecord| !record.validation.beats(&b.validation);
        if state.best.as_ref().is_some_and(beaten) {
            return Ok(false);
        }
        if let Some(dir) = &self.dir {
            dir.save_model(RunFile::BestWeights, model)?;
            let json = serde_json::to_string_pretty(&record)
                .map_err(Error::json("best checkpoint record"))?;
            dir.write_text(RunFile::BestRecord, &(json + "\n"))?;
        }
        state.best = Some(record);
        state.best_weights = Some(cpu_copy(model));
        state.best_test = None;
        Ok(true)
    }

    /// The guard's look at the snapshot after `epoch` epochs: a collapse is
    /// recorded and, with `guard.action = "stop"`, raises the stop flag.
    fn watch(
        &mut self,
        epoch: usize,
        robust: f64,
        train_attack: Option<f64>,
    ) -> Result<Option<Collapse>> {
        let collapse = match (&mut self.guard, train_attack) {
            (Some(guard), Some(train_attack)) => guard.observe(GuardPoint {
                epoch,
                robust,
                train_attack,
            }),
            _ => None,
        };
        let mut state = self.state.lock()?;
        if let (Some(c), Some(guard)) = (collapse, state.guard.as_mut()) {
            guard.collapses.push(c);
            if guard.action == GuardAction::Stop {
                log::warn!("guard: {c}; stopping training (guard.action = \"stop\")");
                guard.stopped_after_epoch = Some(epoch);
                self.stop.raise();
            } else {
                log::warn!("guard: {c} (guard.action = \"warn\")");
            }
        }
        Ok(collapse)
    }

    /// The test report of the snapshot of `epoch` (evaluated by the caller):
    /// kept when that snapshot is the best.
    pub fn record_test(&mut self, epoch: usize, report: &EvalReport) -> Result<()> {
        let mut state = self.state.lock()?;
        if state.best.as_ref().is_some_and(|b| b.epoch == epoch) {
            state.best_test = Some(report.clone());
        }
        Ok(())
    }

    /// At the end of training: evaluates the best checkpoint on the test set
    /// with `evaluate` (on `scratch`, a model of the student's architecture
    /// whose weights it overwrites) when its epoch was not test-evaluated.
    pub fn finish(
        &mut self,
        scratch: &Model,
        evaluate: impl FnOnce(&Model) -> Result<EvalReport>,
    ) -> Result<()> {
        let mut state = self.state.lock()?;
        if state.best_test.is_some() {
            return Ok(());
        }
        let (Some(best), Some(weights)) = (&state.best, &state.best_weights) else {
            return Ok(());
        };
        log::info!(
            "evaluating the best-by-validation checkpoint (epoch {}) on the test set",
            best.epoch
        );
        load_named(scratch, weights)?;
        let report = evaluate(scratch)?;
        state.best_test = Some(report);
        Ok(())
    }

    /// Carries a resumed run's findings over: the validation lines of its
    /// first `epochs` epochs (later ones are dropped), the guard's memory, and
    /// the best checkpoint when it is among them.
    fn restore(&mut self, dir: &RunFolder, epochs: usize) -> Result<()> {
        dir.retain_records(RunFile::ValidationLog, |l: &ValidationLine| {
            l.epoch <= epochs
        })?;
        let lines: Vec<ValidationLine> = dir.read_records(RunFile::ValidationLog)?;
        self.validated = lines.iter().map(|l| l.epoch).collect();
        let mut state = self.state.lock()?;
        if let (Some(guard), Some(summary)) = (&mut self.guard, state.guard.as_mut()) {
            for l in &lines {
                if let Some(train_attack) = l.train_attack {
                    summary.collapses.extend(guard.observe(GuardPoint {
                        epoch: l.epoch,
                        robust: l.robust,
                        train_attack,
                    }));
                }
            }
        }
        let record: Option<BestRecord> = dir.read_json(RunFile::BestRecord)?;
        match record {
            Some(best) if best.epoch <= epochs => {
                let weights = crate::checkpoint::read(&dir.file(RunFile::BestWeights))?;
                state.best = Some(best);
                state.best_weights = Some(weights);
            }
            Some(best) => log::warn!(
                "the best checkpoint (epoch {}) is newer than the resumed position (epoch {epochs}); \
                 selection starts afresh",
                best.epoch
            ),
            None => {}
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn model(fill: f64) -> Model {
        let m = Model::new("mobilenet_v2_x0.25".parse().unwrap(), Device::Cpu);
        tch::no_grad(|| {
            for (_, mut v) in m.vs.variables() {
                let _ = v.fill_(fill);
            }
        });
        m
    }

    fn first_value(m: &Model) -> f64 {
        let vars = m.vs.variables();
        let name = vars.keys().min().unwrap().clone();
        vars[&name].flatten(0, -1).double_value(&[0])
    }

    #[test]
    fn roll_back_loads_the_best_weights_only_after_a_stop() {
        let handle = SelectionHandle::default();
        let m = model(1.0);
        {
            let mut s = handle.lock().unwrap();
            s.best = Some(BestRecord {
                epoch: 2,
                step: 20,
                attack: "pgd10".into(),
                images: 10,
                validation: ValidationScore {
                    natural: 50.0,
                    robust: 30.0,
                },
            });
            s.best_weights = Some(cpu_copy(&model(0.25)));
        }
        assert_eq!(handle.roll_back(&m).unwrap(), None);
        assert_eq!(first_value(&m), 1.0);
        handle.lock().unwrap().guard = Some(GuardSummary {
            action: GuardAction::Stop,
            stopped_after_epoch: Some(4),
            ..GuardSummary::default()
        });
        assert_eq!(handle.roll_back(&m).unwrap(), Some(2));
        assert_eq!(first_value(&m), 0.25);
        // After the roll-back the final numbers are the best checkpoint's.
        let best_test = EvalReport {
            images: 10,
            accuracy: [("natural".to_string(), 40.0)].into(),
            worst_case: 40.0,
            ..EvalReport::default()
        };
        handle.lock().unwrap().best_test = Some(best_test);
        let last = EvalReport {
            images: 10,
            accuracy: [("natural".to_string(), 70.0)].into(),
            worst_case: 70.0,
            ..EvalReport::default()
        };
        let (final_eval, summary) = SelectionHandle::summarize(Some(&handle), Some(&last));
        assert_eq!(final_eval["natural"], 40.0);
        assert_eq!(summary.best_epoch, Some(2));
        let (final_eval, _) = SelectionHandle::summarize(None, Some(&last));
        assert_eq!(final_eval["natural"], 70.0);
    }
}
