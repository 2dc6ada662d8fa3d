//! The sequential trainer: one thread, one step after the other. It is the
//! semantic reference of the actor pipeline, and the engine of
//! `ard-pipeline run --engine sequential`.

use super::budget::off_the_clock;
use super::context::{RunContext, RunParts};
use super::recorder::Recorder;
use super::records::{recorded_evals, EvalRecord};
use super::resume::{self, Checkpoint, TrainPosition, TrainState};
use super::run_dir::RunDir;
use super::step::{adversarial_batch, attack_key, StudentUpdate};
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
    let spent = || budget.as_ref().map_or(0.0, |b| b.spent_s());
    let checkpoint_path = run_dir.map(|d| d.file(resume::CHECKPOINT_FILE));
    let save = |student: &Model,
                update: &StudentUpdate,
                position: TrainPosition,
                epochs: &[EpochRecord]|
     -> Result<()> {
        let Some(path) = &checkpoint_path else {
            return Ok(());
        };
        let stats = epochs.iter().map(EpochRecord::stats).collect();
        resume::write(
            path,
            student,
            &update.sgd,
            &TrainState::new(cfg, position, stats),
        )
    };
    let seed = cfg.run.seed;
    let view_set = crate::soft_labels::identity::view_set(cfg)?;
    let recorder = Recorder::new(run_dir.cloned(), metrics.cloned());
    let mut eval_records: Vec<EvalRecord> = match (resume, run_dir) {
        (Some(_), Some(dir)) => recorded_evals(dir),
        _ => Vec::new(),
    };
    // The test-set evaluation of an epoch's student (and of the best checkpoint at the end).
    let evaluate_test = |m: &Model| test.evaluate(m, teacher.as_ref());
    let mut step = start.step;
    let mut out_of_time = false;
    let mut epochs: Vec<EpochRecord> = resume
        .map(|c| c.state.epochs.iter().map(EpochRecord::restored).collect())
        .unwrap_or_default();
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
    for epoch in start.epoch..last_epoch {
        let resumed = epoch == start.epoch;
        let epoch_start = Instant::now();
        let before = if resumed { start.epoch_seconds } else { 0.0 };
        let (mut loss_sum, mut steps_in_epoch, mut images, mut lr) = if resumed {
            (
                start.epoch_loss_sum,
                start.batch_in_epoch,
                start.epoch_images,
                0.0,
            )
        } else {
            (0.0, 0usize, 0usize, 0.0)
        };
        let plan = data::EpochPlan::train(&cfg.data, seed, epoch as u64);
        let skip = if resumed { start.batch_in_epoch } else { 0 };
        let batches = data::batches(&train, &plan);
        let per_epoch = batches.len();
        for (indices, views) in batches.skip(skip) {
            if step >= total {
                break;
            }
            // train.max_seconds: the step begun after the budget is spent is the last.
            out_of_time = budget.as_ref().is_some_and(|b| b.exhausted());
            let views =
                view_set.training_views(seed, epoch as u64, cfg.data.augment, &indices, views);
            let batch = data::make_batch(&train, &indices, &views, device)?;
            let t = match &teacher {
                Some(t) => {
                    Some(soft_labels.logits(t, &batch.images, &batch.indices, &batch.views)?)
                }
                None => None,
            };
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
            let (loss, step_lr) = update.step(
                &student,
                &batch.images,
                &x_adv,
                &batch.labels,
                t.as_ref(),
                epoch,
                step,
            )?;
            loss_sum += loss;
            lr = step_lr;
            steps_in_epoch += 1;
            images += indices.len();
            step += 1;
            if let Some(m) = metrics {
                m.set_loss(loss);
                m.set_lr(step_lr);
                m.set_epoch(epoch as u64 + 1);
                m.inc_train_steps(1);
            }
            let position = || TrainPosition {
                step,
                epoch,
                batch_in_epoch: steps_in_epoch,
                epoch_loss_sum: loss_sum,
                epoch_images: images,
                epoch_seconds: before + epoch_start.elapsed().as_secs_f64(),
                train_seconds: spent(),
            };
            if stop.is_some_and(|s| s.is_cancelled()) {
                soft_labels.finish()?;
                save(&student, &update, position(), &epochs)?;
                log(&format!("stopped after step {step}, checkpointed"));
                return Err(Error::Cancelled);
            }
            let epoch_done = step >= total || steps_in_epoch == per_epoch;
            if !epoch_done
                && cfg
                    .run
                    .checkpoint_every_steps
                    .is_some_and(|n| step % n == 0)
            {
                save(&student, &update, position(), &epochs)?;
            }
            if out_of_time {
                log(&format!(
                    "train.max_seconds spent: step {step} was the last"
                ));
                break;
            }
        }
        soft_labels.end_epoch()?;
        let seconds = before + epoch_start.elapsed().as_secs_f64();
        let last = epoch + 1 == cfg.train.epochs || step >= total || out_of_time;
        let test_due = test.schedule().due(epoch + 1, last);
        // Training waits for validation and evaluation: off the budget's clock.
        let (guard_stop, report) = off_the_clock(budget.as_deref(), || -> Result<_> {
            let guard_stop = match validator.as_mut() {
                Some(v) => v.on_snapshot(&student, epoch + 1, step, test_due, teacher.as_ref())?,
                None => false,
            };
            let eval = if test_due {
                Some(evaluate_test(&student)?)
            } else {
                None
            };
            Ok((guard_stop, eval))
        })?;
        let record = EpochRecord {
            epoch: epoch + 1,
            steps: steps_in_epoch,
            mean_loss: loss_sum / steps_in_epoch.max(1) as f64,
            lr,
            seconds,
            images_per_s: images as f64 / seconds.max(1e-9),
            train_seconds: budget.as_ref().map(|b| b.spent_s()),
        };
        recorder.epoch_end(&record, &student)?;
        if let Some(report) = report {
            let evaluated = EvalRecord {
                epoch: record.epoch,
                step,
                report,
            };
            recorder.evaluated(&evaluated)?;
            if let Some(v) = validator.as_mut() {
                v.record_test(evaluated.epoch, &evaluated.report)?;
            }
            eval_records.push(evaluated);
        }
        epochs.push(record);
        save(
            &student,
            &update,
            TrainPosition {
                step,
                epoch: epoch + 1,
                train_seconds: spent(),
                ..Default::default()
            },
            &epochs,
        )?;
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
    if let Some(dir) = run_dir {
        student.save(&dir.file("final.safetensors"))?;
    }
    if let Some(path) = &cfg.run.save_final {
        student.save(path)?;
    }
    Ok(TrainOutcome {
        student,
        steps: step,
        epochs,
        evals: eval_records,
        wall_s: started.elapsed().as_secs_f64(),
        selection,
    })
}
