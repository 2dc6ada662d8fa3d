//! The student stage: loss, optimiser step, publishes the new weights
//! (versioned) for the attack replica, hands snapshots to the eval stage at
//! epoch ends, and checkpoints.

use super::attack::WeightBoard;
use super::messages::{Snapshot, TrainBatch};
use super::weights::WeightLayout;
use crate::models::Model;
use crate::train::context::EvalSchedule;
use crate::train::recorder::Recorder;
use crate::train::records::{EpochRecord, EpochTrainStats};
use crate::train::resume::{self, TrainPosition, TrainState};
use crate::train::step::StudentUpdate;
use crate::train::RunDir;
use ard_actors::{emitter::TrySend, Emitter, Stage, StageError};
use std::path::PathBuf;
use std::sync::{Arc, Mutex};

pub struct StudentStage {
    student: Model,
    update: StudentUpdate,
    layout: WeightLayout,
    board: WeightBoard,
    compute: super::Compute,
    /// Writes `metrics.jsonl` and `last.safetensors` at epoch ends.
    recorder: Recorder,
    run_dir: Option<RunDir>,
    save_final: Option<PathBuf>,
    metrics: Option<crate::metrics::TrainMetrics>,
    /// The student's final weights, for the caller once the pipeline ends.
    final_weights: Arc<Mutex<Option<Vec<tch::Tensor>>>>,
    epochs: Arc<Mutex<Vec<EpochTrainStats>>>,
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
pub struct Checkpointing {
    pub path: PathBuf,
    /// Also every N steps (always at epoch ends and on cancellation).
    pub every_steps: Option<usize>,
    pub config: crate::config::Config,
}

impl StudentStage {
    #[allow(clippy::too_many_arguments)]
    pub fn new(
        student: Model,
        update: StudentUpdate,
        board: WeightBoard,
        compute: super::Compute,
        run_dir: Option<RunDir>,
        save_final: Option<PathBuf>,
        metrics: Option<crate::metrics::TrainMetrics>,
        final_weights: Arc<Mutex<Option<Vec<tch::Tensor>>>>,
        epochs: Arc<Mutex<Vec<EpochTrainStats>>>,
        eval_plan: EvalSchedule,
        checkpoints: Option<Checkpointing>,
        start: &TrainPosition,
    ) -> crate::Result<Self> {
        let layout = WeightLayout::of(&student);
        // Version = steps done: 0 for the initial weights, the checkpoint's step on a resumption.
        board
            .publish(start.step as u64, layout.snapshot(&student))
            .map_err(|e| crate::Error::Other(format!("publishing initial weights: {e}")))?;
        Ok(StudentStage {
            student,
            update,
            layout,
            board,
            compute,
            recorder: Recorder::new(run_dir.clone(), metrics.clone()),
            run_dir,
            save_final,
            metrics,
            final_weights,
            epochs,
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
        let epochs = self
            .epochs
            .lock()
            .map_err(|_| crate::Error::Poisoned { what: "epoch log" })?
            .clone();
        let state = TrainState::new(&plan.config, position, epochs);
        resume::write(&plan.path, &self.student, &self.update.sgd, &state)
    }
}

impl Stage for StudentStage {
    type In = TrainBatch;
    type Out = Snapshot;

    fn name(&self) -> &str {
        "student"
    }

    fn handle(
        &mut self,
        mut batch: TrainBatch,
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
                batch.step + 1
            );
            batch.last_in_run = true;
            batch.last_in_epoch = true;
        }
        if batch.step != self.steps_done {
            return Err(StageError::msg(format!(
                "batch for step {} arrived at step {}",
                batch.step, self.steps_done
            )));
        }
        let (student, layout, update, batch_in) = (
            &mut self.student,
            &mut self.layout,
            &mut self.update,
            &mut batch,
        );
        let (loss, lr) = self.compute.run(out, move || -> Result<_, StageError> {
            let x_adv = batch_in
                .x_adv
                .as_ref()
                .ok_or_else(|| StageError::msg("batch without adversarial inputs"))?;
            if let Some(bn) = &batch_in.bn {
                let exact = batch_in.weights_version == batch_in.step as u64;
                layout.apply_bn(student, &bn.after, &bn.before, bn.forwards, exact)?;
            }
            update
                .step(
                    student,
                    &batch_in.x,
                    x_adv,
                    &batch_in.y,
                    batch_in.teacher.as_ref(),
                    batch_in.epoch,
                    batch_in.step,
                )
                .map_err(StageError::from)
        })??;
        self.steps_done += 1;
        self.next_epoch = batch.epoch + usize::from(batch.last_in_epoch);
        self.loss_sum += loss;
        self.steps_in_epoch += 1;
        self.epoch_images += batch.y.size()[0] as usize;
        self.board
            .publish(self.steps_done as u64, self.layout.snapshot(&self.student))
            .map_err(|e| StageError::msg(format!("publishing weights: {e}")))?;
        if let Some(m) = &self.metrics {
            m.set_loss(loss);
            m.set_lr(lr);
            m.set_epoch(batch.epoch as u64 + 1);
            m.inc_train_steps(1);
            m.set_weight_staleness((batch.step as u64).saturating_sub(batch.weights_version));
        }
        let periodic = self
            .checkpoints
            .as_ref()
            .and_then(|c| c.every_steps)
            .is_some_and(|n| self.steps_done % n == 0);
        if periodic && !batch.last_in_epoch {
            self.checkpoint()?;
        }
        if batch.last_in_epoch {
            let seconds = self.epoch_seconds();
            let record = EpochRecord {
                epoch: batch.epoch + 1,
                steps: self.steps_in_epoch,
                mean_loss: self.loss_sum / self.steps_in_epoch.max(1) as f64,
                lr,
                seconds,
                images_per_s: self.epoch_images as f64 / seconds.max(1e-9),
                train_seconds: self.update.budget.as_ref().map(|b| b.spent_s()),
            };
            self.epochs
                .lock()
                .map_err(|_| StageError::msg("epoch log poisoned"))?
                .push(record.stats());
            self.loss_sum = 0.0;
            self.steps_in_epoch = 0;
            self.epoch_started = std::time::Instant::now();
            self.epoch_seconds_before = 0.0;
            self.epoch_images = 0;
            self.recorder.epoch_end(&record, &self.student)?;
            self.checkpoint()?;
            let snapshot = Snapshot {
                epoch: batch.epoch + 1,
                step: self.steps_done,
                last: batch.last_in_run,
                weights: self.layout.snapshot(&self.student),
                eval_images: self
                    .eval_plan
                    .images_after(batch.epoch + 1, batch.last_in_run),
            };
            if batch.last_in_run {
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
                epoch: self.epochs.lock().map(|e| e.len()).unwrap_or(0),
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
        *self
            .final_weights
            .lock()
            .map_err(|_| StageError::msg("final weights poisoned"))? =
            Some(self.layout.snapshot(&self.student));
        Ok(())
    }
}
