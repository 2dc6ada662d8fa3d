//! The student stage: loss, optimiser step, publishes the new weights
//! (versioned) for the attack replica, hands snapshots to the eval stage at
//! epoch ends, and checkpoints.

use super::attack::WeightBoard;
use super::messages::{AttackedBatch, Snapshot};
use super::weights::WeightLayout;
use crate::models::Model;
use crate::train::context::EvalSchedule;
use crate::train::context::RunContext;
use crate::train::recorder::Recorder;
use crate::train::records::EpochRecord;
use crate::train::resume::{self, TrainPosition, TrainState};
use crate::train::step::StudentUpdate;
use crate::train::RunDir;
use ard_actors::{emitter::TrySend, Emitter, Stage, StageError};
use std::path::PathBuf;

pub struct StudentStage {
    student: Model,
    update: StudentUpdate,
    layout: WeightLayout,
    board: WeightBoard,
    compute: super::Compute,
    /// Writes `metrics.jsonl` and `last.safetensors` at epoch ends, keeps the epochs.
    recorder: Recorder,
    run_dir: Option<RunDir>,
    save_final: Option<PathBuf>,
    metrics: Option<crate::metrics::TrainMetrics>,
    /// When the eval stage evaluates a snapshot.
    eval_plan: EvalSchedule,
    checkpoints: Option<Checkpointing>,
    loss_sum: f64,
    steps_in_epoch: usize,
    epoch_started: std::time::Instant,
    /// Seconds of the current epoch spent before a resumption.
    epoch_seconds_before: f64,
    epoch_images: usize,
    steps_done: usize,
    /// Epoch of the next step (0-based).
    next_epoch: usize,
    /// The run's last snapshot went to the eval stage.
    sent_last: bool,
    /// A resumed run's owed evaluation, sent before the first step.
    catch_up: Option<Snapshot>,
    /// The run's last step is done: batches still arriving (prepared before
    /// the budget ran out) are dropped.
    ended: bool,
}

/// Where and how often the student stage writes the training checkpoint.
#[derive(Debug, Clone)]
struct Checkpointing {
    path: PathBuf,
    /// Also every N steps (always at epoch ends and on cancellation).
    every_steps: Option<usize>,
    config: crate::config::Config,
}

impl StudentStage {
    /// The student stage of the run `ctx`: it trains from `ctx.start`, writes
    /// the checkpoint (`run.checkpoint_every_steps`, epoch ends) and the final
    /// weights into the run folder and `run.save_final`, publishes each step's
    /// weights on `board` and sends the snapshots `eval_plan` asks for.
    pub fn for_run(
        ctx: &RunContext,
        student: Model,
        update: StudentUpdate,
        board: WeightBoard,
        compute: super::Compute,
        recorder: Recorder,
        eval_plan: EvalSchedule,
    ) -> crate::Result<Self> {
        let start = &ctx.start;
        let checkpoints = ctx.run_dir.map(|dir| Checkpointing {
            path: dir.file(resume::CHECKPOINT_FILE),
            every_steps: ctx.cfg.run.checkpoint_every_steps,
            config: ctx.cfg.clone(),
        });
        let layout = WeightLayout::of(&student);
        // Version = steps done: 0 for the initial weights, the checkpoint's step on a resumption.
        board
            .publish(start.step as u64, layout.snapshot(&student))
            .map_err(|e| crate::Error::invalid("publishing initial weights", e.to_string()))?;
        Ok(StudentStage {
            student,
            update,
            layout,
            board,
            compute,
            metrics: recorder.metrics().cloned(),
            recorder,
            run_dir: ctx.run_dir.cloned(),
            save_final: ctx.cfg.run.save_final.clone(),
            eval_plan,
            checkpoints,
            loss_sum: start.epoch_loss_sum,
            steps_in_epoch: start.batch_in_epoch,
            epoch_started: std::time::Instant::now(),
            epoch_seconds_before: start.epoch_seconds,
            epoch_images: start.epoch_images,
            steps_done: start.step,
            next_epoch: start.epoch,
            sent_last: false,
            catch_up: None,
            ended: false,
        })
    }

    /// Sends `snapshot` to the eval stage before the first step (an
    /// evaluation a resumed run owes, see `stages::missed_evaluation`).
    pub fn with_catch_up(mut self, snapshot: Option<Snapshot>) -> Self {
        self.catch_up = snapshot;
        self
    }

    fn epoch_seconds(&self) -> f64 {
        self.epoch_seconds_before + self.epoch_started.elapsed().as_secs_f64()
    }

    /// Writes the training checkpoint of the current state (after a complete step).
    fn checkpoint(&self) -> crate::Result<()> {
        let Some(plan) = &self.checkpoints else {
            return Ok(());
        };
        let position = TrainPosition {
            step: self.steps_done,
            epoch: self.next_epoch,
            batch_in_epoch: self.steps_in_epoch,
            epoch_loss_sum: self.loss_sum,
            epoch_images: self.epoch_images,
            epoch_seconds: self.epoch_seconds(),
            train_seconds: self.update.budget.as_ref().map_or(0.0, |b| b.spent_s()),
        };
        let state = TrainState::new(&plan.config, position, self.recorder.epochs());
        resume::write(&plan.path, &self.student, &self.update.sgd, &state)
    }
}

impl Stage for StudentStage {
    type In = AttackedBatch;
    type Out = Snapshot;

    fn name(&self) -> &str {
        "student"
    }

    fn handle(
        &mut self,
        mut batch: AttackedBatch,
        out: &mut Emitter<Snapshot>,
    ) -> Result<(), StageError> {
        self.compute.enter();
        if let Some(owed) = self.catch_up.take() {
            out.send(owed)?;
        }
        if self.ended {
            return Ok(());
        }
        if self.update.budget.as_ref().is_some_and(|b| b.exhausted()) {
            // train.max_seconds: as in the sequential engine, the step begun
            // after the budget is spent is the last, whatever the upstream
            // stages have prepared beyond it (up to a queue's worth per stage).
            log::info!(
                "train.max_seconds spent: step {} is the last; batches prepared after it are dropped",
                batch.at.step + 1
            );
            batch.at.last_in_run = true;
            batch.at.last_in_epoch = true;
        }
        if batch.at.step != self.steps_done {
            return Err(StageError::msg(format!(
                "batch for step {} arrived at step {}",
                batch.at.step, self.steps_done
            )));
        }
        let (student, layout, update, batch_in) = (
            &mut self.student,
            &mut self.layout,
            &mut self.update,
            &mut batch,
        );
        let (loss, lr) = self.compute.run(out, move || -> Result<_, StageError> {
            if let Some(bn) = &batch_in.bn {
                let exact = batch_in.weights_version == batch_in.at.step as u64;
                layout.apply_bn(student, &bn.after, &bn.before, bn.forwards, exact)?;
            }
            update
                .step(
                    student,
                    &batch_in.x,
                    &batch_in.x_adv,
                    &batch_in.y,
                    batch_in.teacher.as_ref(),
                    batch_in.at.epoch,
                    batch_in.at.step,
                )
                .map_err(StageError::from)
        })??;
        self.steps_done += 1;
        self.next_epoch = batch.at.epoch + usize::from(batch.at.last_in_epoch);
        self.loss_sum += loss;
        self.steps_in_epoch += 1;
        self.epoch_images += batch.y.size()[0] as usize;
        self.board
            .publish(self.steps_done as u64, self.layout.snapshot(&self.student))
            .map_err(|e| StageError::msg(format!("publishing weights: {e}")))?;
        if let Some(m) = &self.metrics {
            m.set_loss(loss);
            m.set_lr(lr);
            m.set_epoch(batch.at.epoch as u64 + 1);
            m.inc_train_steps(1);
            m.set_weight_staleness((batch.at.step as u64).saturating_sub(batch.weights_version));
        }
        let periodic = self
            .checkpoints
            .as_ref()
            .and_then(|c| c.every_steps)
            .is_some_and(|n| self.steps_done % n == 0);
        if periodic && !batch.at.last_in_epoch {
            self.checkpoint()?;
        }
        if batch.at.last_in_epoch {
            let seconds = self.epoch_seconds();
            let record = EpochRecord {
                epoch: batch.at.epoch + 1,
                steps: self.steps_in_epoch,
                mean_loss: self.loss_sum / self.steps_in_epoch.max(1) as f64,
                lr,
                seconds,
                images_per_s: self.epoch_images as f64 / seconds.max(1e-9),
                train_seconds: self.update.budget.as_ref().map(|b| b.spent_s()),
            };
            self.loss_sum = 0.0;
            self.steps_in_epoch = 0;
            self.epoch_started = std::time::Instant::now();
            self.epoch_seconds_before = 0.0;
            self.epoch_images = 0;
            self.recorder.epoch_end(&record, &self.student)?;
            self.checkpoint()?;
            let snapshot = Snapshot {
                epoch: batch.at.epoch + 1,
                step: self.steps_done,
                last: batch.at.last_in_run,
                weights: self.layout.snapshot(&self.student),
                eval_images: self
                    .eval_plan
                    .images_after(batch.at.epoch + 1, batch.at.last_in_run),
            };
            if batch.at.last_in_run {
                out.send(snapshot)?;
                self.sent_last = true;
                // The attack stage's waits for newer weights end: no step follows.
                self.ended = true;
                self.board.close();
            } else if let TrySend::Full(s) = out.try_send(snapshot)? {
                // Evaluation never stalls training: a snapshot the eval stage has no room for is skipped, loudly.
                log::warn!(
                    "eval stage still busy: epoch {} snapshot not evaluated",
                    s.epoch
                );
            }
        }
        Ok(())
    }

    fn interrupted(&mut self) {
        // Cancelled (a signal, or another stage failed) after a complete step: keep it.
        if self.checkpoints.is_some() {
            match self.checkpoint() {
                Ok(()) => log::warn!(
                    "checkpointed after step {} (epoch {}); resume with --resume",
                    self.steps_done,
                    self.next_epoch + 1
                ),
                Err(e) => log::error!("could not checkpoint after step {}: {e}", self.steps_done),
            }
        }
    }

    fn finish(&mut self, out: &mut Emitter<Snapshot>) -> Result<(), StageError> {
        self.board.close();
        if !self.sent_last && self.steps_done > 0 {
            // Resumed after the last step (killed during the final evaluation): evaluate it now.
            out.send(Snapshot {
                epoch: self.recorder.epochs().len(),
                step: self.steps_done,
                last: true,
                weights: self.layout.snapshot(&self.student),
                eval_images: self.eval_plan.images,
            })?;
        }
        if let Some(dir) = &self.run_dir {
            self.student.save(&dir.file("final.safetensors"))?;
        }
        if let Some(path) = &self.save_final {
            self.student.save(path)?;
        }
        Ok(())
    }
}
