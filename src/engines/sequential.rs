//! The sequential trainer: one thread, one step after the other. It is the
//! semantic reference of the actor pipeline, and the engine of
//! `ard-pipeline run --engine sequential`.

use crate::attacks::{Attack, AttackInput};
use crate::config::{AttackTarget, Config};
use crate::data;
use crate::error::{Error, Result};
use crate::models::Model;
use crate::perf::ComputeCopy;
use crate::soft_labels::{SoftLabelSource, ViewSet};
use crate::train::{
    adversarial_batch, attack_key, off_the_clock, Context, Engine, EpochTally, EvalRecord, Job,
    Parts, Recorder, Records, StudentUpdate, TestPlan, TimeBudget, TrainPosition, Trained,
    Validator,
};
use ard_actors::CancelToken;

/// The sequential engine.
#[derive(Debug, Clone, Copy, Default)]
pub struct Sequential;

impl Engine for Sequential {
    fn name(&self) -> &'static str {
        "sequential"
    }

    /// Trains one step after the other, continuing from `job.resume` when
    /// given, and stopping with a checkpoint (then [`Error::Cancelled`])
    /// after the step during which `job.cancel` was cancelled. With a run
    /// folder it checkpoints at epoch ends and every
    /// `run.checkpoint_every_steps`.
    fn fit(&self, mut job: Job<'_>) -> Result<Trained> {
        let (ctx, parts) = Context::build(&job)?;
        let recorder = Recorder::new(job.folder.cloned(), job.metrics.cloned())
            .training(job.cfg, job.resume)?;
        job.started(None);
        let mut run = Trainer::new(job.cfg, ctx, parts, recorder, job.cancel)?;
        let start = run.start.clone();
        // Resumed after the budget's last step (stopped during the final
        // evaluation): nothing is left to train.
        let spent_before = job.resume.is_some() && run.out_of_budget();
        if spent_before {
            log::info!(
                "train.max_seconds was spent before this resumption: step {} was the last",
                run.step
            );
        }
        let last_epoch = if spent_before {
            start.epoch
        } else {
            job.cfg.train.epochs
        };
        let fresh = TrainPosition::default();
        for epoch in start.epoch..last_epoch {
            // A resumed run's unfinished epoch goes on from the checkpoint's
            // figures, after the batches it did.
            let mut tally = EpochTally::resumed(if epoch == start.epoch { &start } else { &fresh });
            run.epoch(epoch, &mut tally)?;
            if run.end_epoch(epoch, tally)? {
                break;
            }
        }
        run.finish()
    }
}

/// One sequential run in progress.
struct Trainer<'a> {
    cfg: &'a Config,
    ctx: Context,
    start: TrainPosition,
    train: data::Split,
    test: TestPlan,
    student: Model,
    teacher: Option<Model>,
    update: StudentUpdate,
    soft_labels: SoftLabelSource,
    validator: Option<Validator>,
    recorder: Recorder,
    stop: Option<&'a CancelToken>,
    attack: Box<dyn Attack>,
    /// With perf.attack_dtype = "bf16" the attack runs on a bf16 copy of the student.
    attack_shadow: Option<ComputeCopy>,
    view_set: ViewSet,
    /// Steps done.
    step: usize,
    /// train.max_seconds was spent when the last step began.
    out_of_time: bool,
}

impl<'a> Trainer<'a> {
    fn new(
        cfg: &'a Config,
        ctx: Context,
        parts: Parts,
        recorder: Recorder,
        stop: Option<&'a CancelToken>,
    ) -> Result<Trainer<'a>> {
        let attack = cfg.attack.build();
        let attack_shadow = ctx.perf.attack_shadow(&parts.student)?;
        let view_set = crate::soft_labels::identity::view_set(cfg)?;
        Ok(Trainer {
            cfg,
            start: ctx.start.clone(),
            step: ctx.start.step,
            ctx,
            train: parts.train,
            test: parts.test,
            student: parts.student,
            teacher: parts.teacher,
            update: parts.update,
            soft_labels: parts.soft_labels,
            validator: parts.validator,
            recorder,
            stop,
            attack,
            attack_shadow,
            view_set,
            out_of_time: false,
        })
    }

    fn budget(&self) -> Option<&TimeBudget> {
        self.ctx.budget.as_deref()
    }

    fn out_of_budget(&self) -> bool {
        self.budget().is_some_and(TimeBudget::exhausted)
    }

    /// Trains the batches of `epoch` that `tally` has not done, up to the
    /// run's last step; a cancelled run checkpoints and stops here.
    fn epoch(&mut self, epoch: usize, tally: &mut EpochTally) -> Result<()> {
        let (seed, total) = (self.cfg.run.seed, self.ctx.total_steps);
        let plan = data::EpochPlan::train(&self.cfg.data, seed, epoch as u64);
        let batches = data::batches(&self.train, &plan);
        let per_epoch = batches.len();
        for (indices, views) in batches.skip(tally.steps()) {
            if self.step >= total {
                break;
            }
            // train.max_seconds: the step begun after the budget is spent is the last.
            self.out_of_time = self.out_of_budget();
            let views = (self.view_set).training_views(
                seed,
                epoch as u64,
                self.cfg.data.augment,
                &indices,
                views,
            );
            let (loss, lr) = self.train_step(epoch, &indices, &views)?;
            tally.add(loss, lr, indices.len());
            self.step += 1;
            self.recorder.stepped(epoch, loss, lr);
            let step = self.step;
            if self.stop.is_some_and(|s| s.is_cancelled()) {
                self.soft_labels.finish()?;
                self.checkpoint(tally.position(step, epoch, self.budget()))?;
                log::info!("stopped after step {step}, checkpointed");
                return Err(Error::Cancelled);
            }
            let epoch_done = step >= total || tally.steps() == per_epoch;
            if !epoch_done && self.recorder.periodic_checkpoint_due(step) {
                self.checkpoint(tally.position(step, epoch, self.budget()))?;
            }
            if self.out_of_time {
                log::info!("train.max_seconds spent: step {step} was the last");
                break;
            }
        }
        Ok(())
    }

    /// One step on the batch `indices` (augmented by `views`): teacher
    /// logits, the attack, the student's update. Returns the loss and the
    /// learning rate.
    fn train_step(
        &mut self,
        epoch: usize,
        indices: &[usize],
        views: &[data::View],
    ) -> Result<(f64, f64)> {
        let batch = data::make_batch(&self.train, indices, views, self.ctx.device)?;
        let t = (self.teacher.as_ref())
            .map(|t| (self.soft_labels).logits(t, &batch.images, &batch.indices, &batch.views))
            .transpose()?;
        let attacked = match (self.cfg.attack.target, self.attack_shadow.as_mut()) {
            (AttackTarget::Student, Some(shadow)) => shadow.refresh(&self.student)?,
            (AttackTarget::Student, None) => &self.student,
            (AttackTarget::Teacher, _) => self
                .teacher
                .as_ref()
                .ok_or_else(|| Error::Setting("attack.target = teacher needs a teacher".into()))?,
        };
        let clean = AttackInput {
            x: &batch.images,
            y: &batch.labels,
            teacher_logits: t.as_ref(),
        };
        let key = attack_key(self.cfg.run.seed, self.step as u64);
        let amp = self.cfg.perf.amp;
        let x_adv = adversarial_batch(self.attack.as_ref(), attacked, &clean, key, amp)?;
        if let Some(shadow) = &self.attack_shadow {
            shadow.statistics_to(&self.student)?;
        }
        (self.update).step(&self.student, &clean, &x_adv, epoch, self.step)
    }

    fn checkpoint(&self, position: TrainPosition) -> Result<()> {
        (self.recorder).checkpoint(&self.student, &self.update.sgd, position)
    }

    /// The end of `epoch`: its record, validation and the test evaluation
    /// when due, the checkpoint. Returns whether training ends here.
    fn end_epoch(&mut self, epoch: usize, mut tally: EpochTally) -> Result<bool> {
        self.soft_labels.end_epoch()?;
        let (step, total) = (self.step, self.ctx.total_steps);
        let record = tally.finish(epoch + 1, self.budget());
        let last = epoch + 1 == self.cfg.train.epochs || step >= total || self.out_of_time;
        // An evaluation an earlier process of a resumed run recorded is not redone.
        let test_due =
            self.test.schedule().due(epoch + 1, last) && !self.recorder.has_eval(epoch + 1);
        // Training waits for validation and evaluation: off the budget's clock.
        let budget = self.ctx.budget.clone();
        let (guard_stop, report) = off_the_clock(budget.as_deref(), || -> Result<_> {
            let teacher = self.teacher.as_ref();
            let guard_stop = match self.validator.as_mut() {
                Some(v) => v.on_snapshot(&self.student, epoch + 1, step, test_due, teacher)?,
                None => false,
            };
            let eval = test_due
                .then(|| self.test.evaluate(&self.student, teacher))
                .transpose()?;
            Ok((guard_stop, eval))
        })?;
        self.recorder.epoch_end(&record, &self.student)?;
        if let Some(report) = report {
            let evaluated = EvalRecord {
                epoch: record.epoch,
                step,
                report,
            };
            self.recorder
                .evaluated(evaluated, self.validator.as_mut())?;
        }
        self.checkpoint(TrainPosition {
            step,
            epoch: epoch + 1,
            train_seconds: self.budget().map_or(0.0, TimeBudget::spent_s),
            ..Default::default()
        })?;
        Ok(step >= total || guard_stop || self.out_of_time)
    }

    /// The end of training: the best checkpoint's test evaluation, and what was trained.
    fn finish(mut self) -> Result<Trained> {
        self.soft_labels.finish()?;
        let (test, teacher) = (&self.test, self.teacher.as_ref());
        let selection = match self.validator.as_mut() {
            Some(v) => {
                if !test.evals.is_empty() {
                    let scratch = Model::new(self.cfg.student.arch, self.ctx.device);
                    v.finish(&scratch, |m: &Model| test.evaluate(m, teacher))?;
                }
                Some(v.handle())
            }
            None => None,
        };
        let Records { epochs, evals } = self.recorder.log();
        Ok(Trained {
            student: self.student,
            steps: self.step,
            epochs,
            evals,
            selection,
            stages: None,
        })
    }
}
