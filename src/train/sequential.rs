//! The sequential trainer: one thread, one step after the other. It is the
//! semantic reference of the actor pipeline, and the engine of
//! `ard-pipeline run --engine sequential`.

use super::budget::off_the_clock;
use super::context::{RunContext, RunParts};
use super::recorder::{Recorder, RunLog};
use super::records::{EpochTally, EvalRecord};
use super::resume::{Checkpoint, TrainPosition};
use super::run_dir::RunDir;
use super::step::{adversarial_batch, attack_key};
use crate::config::{AttackTarget, Config};
use crate::data;
use crate::error::{Error, Result};
use crate::metrics::TrainMetrics;
use crate::models::Model;
use ard_actors::CancelToken;
use std::time::Instant;

pub use super::records::EpochRecord;

/// What a finished run reports.
#[derive(Debug)]
pub struct TrainOutcome {
    pub student: Model,
    pub steps: usize,
    pub epochs: Vec<EpochRecord>,
    /// The test-set evaluations, a resumed run's earlier ones included.
    pub evals: Vec<EvalRecord>,
    pub wall_s: f64,
    /// Validation findings: the best checkpoint and the guard (None without a validation split).
    pub selection: Option<super::validation::SelectionHandle>,
}

/// Trains as configured, one step after the other; `log` receives progress lines.
pub fn train_sequential(
    cfg: &Config,
    run_dir: Option<&RunDir>,
    log: impl FnMut(&str),
) -> Result<TrainOutcome> {
    train_sequential_with(cfg, run_dir, None, None, None, log)
}

/// [`train_sequential`], continuing from `resume` when given, and stopping
/// with a checkpoint (then [`Error::Cancelled`]) after the step during which
/// `stop` became true. With a run folder it checkpoints at epoch ends and
/// every `run.checkpoint_every_steps`; with `metrics` it reports each step.
pub fn train_sequential_with(
    cfg: &Config,
    run_dir: Option<&RunDir>,
    resume: Option<&Checkpoint>,
    stop: Option<&CancelToken>,
    metrics: Option<&TrainMetrics>,
    mut log: impl FnMut(&str),
) -> Result<TrainOutcome> {
    let started = Instant::now();
    let (
        ctx,
        RunParts {
            train,
            test,
            student,
            teacher,
            mut update,
            mut soft_labels,
            mut validator,
        },
    ) = RunContext::build(cfg, run_dir, resume, metrics.cloned())?;
    let RunContext {
        device,
        perf,
        start,
        total_steps: total,
        budget,
        ..
    } = ctx;
    let attack = cfg.attack.build();
    // With perf.attack_dtype = "bf16" the attack runs on a bf16 copy of the student.
    let mut attack_shadow = perf.attack_shadow(&student)?;
    let seed = cfg.run.seed;
    let view_set = crate::soft_labels::identity::view_set(cfg)?;
    let recorder = Recorder::new(run_dir.cloned(), metrics.cloned()).training(cfg, resume);
    // The test-set evaluation of an epoch's student (and of the best checkpoint at the end).
    let evaluate_test = |m: &Model| test.evaluate(m, teacher.as_ref());
    let mut step = start.step;
    let mut out_of_time = false;
    // Resumed after the budget's last step (stopped during the final
    // evaluation): nothing is left to train.
    let spent_before = resume.is_some() && budget.as_ref().is_some_and(|b| b.exhausted());
    if spent_before {
        log(&format!(
            "train.max_seconds was spent before this resumption: step {step} was the last"
        ));
    }
    let last_epoch = if spent_before {
        start.epoch
    } else {
        cfg.train.epochs
    };
    let fresh = TrainPosition::default();
    for epoch in start.epoch..last_epoch {
        // A resumed run's unfinished epoch goes on from the checkpoint's
        // figures, after the batches it did.
        let mut tally = EpochTally::resumed(if epoch == start.epoch { &start } else { &fresh });
        let plan = data::EpochPlan::train(&cfg.data, seed, epoch as u64);
        let batches = data::batches(&train, &plan);
        let per_epoch = batches.len();
        for (indices, views) in batches.skip(tally.steps()) {
            if step >= total {
                break;
            }
            // train.max_seconds: the step begun after the budget is spent is the last.
            out_of_time = budget.as_ref().is_some_and(|b| b.exhausted());
            let views =
                view_set.training_views(seed, epoch as u64, cfg.data.augment, &indices, views);
            let batch = data::make_batch(&train, &indices, &views, device)?;
            let t = teacher
                .as_ref()
                .map(|t| soft_labels.logits(t, &batch.images, &batch.indices, &batch.views))
                .transpose()?;
            let attacked = match (cfg.attack.target, attack_shadow.as_mut()) {
                (AttackTarget::Student, Some(shadow)) => shadow.refresh(&student)?,
                (AttackTarget::Student, None) => &student,
                (AttackTarget::Teacher, _) => teacher.as_ref().ok_or_else(|| {
                    Error::Setting("attack.target = teacher needs a teacher".into())
                })?,
            };
            let x_adv = adversarial_batch(
                attack.as_ref(),
                attacked,
                &batch.images,
                &batch.labels,
                t.as_ref(),
                attack_key(seed, step as u64),
                cfg.perf.amp,
            )?;
            if let Some(shadow) = &attack_shadow {
                shadow.statistics_to(&student)?;
            }
            let (loss, lr) = update.step(
                &student,
                &batch.images,
                &x_adv,
                &batch.labels,
                t.as_ref(),
                epoch,
                step,
            )?;
            tally.add(loss, lr, indices.len());
            step += 1;
            recorder.stepped(epoch, loss, lr);
            if stop.is_some_and(|s| s.is_cancelled()) {
                soft_labels.finish()?;
                let position = tally.position(step, epoch, budget.as_deref());
                recorder.checkpoint(&student, &update.sgd, position)?;
                log(&format!("stopped after step {step}, checkpointed"));
                return Err(Error::Cancelled);
            }
            let epoch_done = step >= total || tally.steps() == per_epoch;
            if !epoch_done && recorder.periodic_checkpoint_due(step) {
                let position = tally.position(step, epoch, budget.as_deref());
                recorder.checkpoint(&student, &update.sgd, position)?;
            }
            if out_of_time {
                log(&format!(
                    "train.max_seconds spent: step {step} was the last"
                ));
                break;
            }
        }
        soft_labels.end_epoch()?;
        let record = tally.finish(epoch + 1, budget.as_deref());
        let last = epoch + 1 == cfg.train.epochs || step >= total || out_of_time;
        // An evaluation an earlier process of a resumed run recorded is not redone.
        let test_due = test.schedule().due(epoch + 1, last) && !recorder.has_eval(epoch + 1);
        // Training waits for validation and evaluation: off the budget's clock.
        let (guard_stop, report) = off_the_clock(budget.as_deref(), || -> Result<_> {
            let guard_stop = match validator.as_mut() {
                Some(v) => v.on_snapshot(&student, epoch + 1, step, test_due, teacher.as_ref())?,
                None => false,
            };
            let eval = test_due.then(|| evaluate_test(&student)).transpose()?;
            Ok((guard_stop, eval))
        })?;
        recorder.epoch_end(&record, &student)?;
        if let Some(report) = report {
            let evaluated = EvalRecord {
                epoch: record.epoch,
                step,
                report,
            };
            recorder.evaluated(evaluated, validator.as_mut())?;
        }
        let position = TrainPosition {
            step,
            epoch: epoch + 1,
            train_seconds: budget.as_ref().map_or(0.0, |b| b.spent_s()),
            ..Default::default()
        };
        recorder.checkpoint(&student, &update.sgd, position)?;
        if step >= total || guard_stop || out_of_time {
            break;
        }
    }
    soft_labels.finish()?;
    let selection = match validator.as_mut() {
        Some(v) => {
            if !test.evals.is_empty() {
                let scratch = Model::new(cfg.student.arch, device);
                v.finish(&scratch, evaluate_test)?;
            }
            // After a guard stop the final result is the best checkpoint.
            v.handle().roll_back(&student, &[])?;
            Some(v.handle())
        }
        None => None,
    };
    for path in recorder.final_weights_paths() {
        student.save(&path)?;
    }
    let RunLog { epochs, evals } = recorder.log();
    Ok(TrainOutcome {
        student,
        steps: step,
        epochs,
        evals,
        wall_s: started.elapsed().as_secs_f64(),
        selection,
    })
}
