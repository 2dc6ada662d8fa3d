//! The student stage: loss, optimiser step, publishes the new weights
//! (versioned) for the attack replica, hands snapshots to the eval stage at
//! epoch ends, and checkpoints.

use super::attack::WeightBoard;
use super::messages::{AttackedBatch, Snapshot};
use super::weights::WeightLayout;
use crate::models::Model;
use crate::train::{Context, EpochTally, EvalSchedule, Recorder, StudentUpdate};
use ard_actors::{emitter::TrySend, Emitter, Stage, StageError};

pub struct StudentStage {
    student: Model,
    update: StudentUpdate,
    layout: WeightLayout,
    board: WeightBoard,
    compute: super::Compute,
    /// Writes the epoch records and the last weights at epoch ends and the
    /// checkpoints, keeps the epochs.
    recorder: Recorder,
    /// When the eval stage evaluates a snapshot.
    eval_plan: EvalSchedule,
    tally: EpochTally,
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

/// Where the student stage's results go: each step's weights on `board`,
/// epoch records and checkpoints through `recorder`, and the snapshots
/// `eval_plan` asks for to the eval stage.
pub struct StudentOutputs {
    pub board: WeightBoard,
    pub recorder: Recorder,
    pub eval_plan: EvalSchedule,
}

impl StudentStage {
    /// The student stage of the run `ctx`: it trains from `ctx.start`, writes
    /// the checkpoint (`run.checkpoint_every_steps`, epoch ends), publishes
    /// each step's weights on `board` and sends the snapshots `eval_plan`
    /// asks for.
    pub fn for_run(
        ctx: &Context,
        student: Model,
        update: StudentUpdate,
        compute: super::Compute,
        outputs: StudentOutputs,
    ) -> crate::Result<Self> {
        let StudentOutputs {
            board,
            recorder,
            eval_plan,
        } = outputs;
        let start = &ctx.start;
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
            recorder,
            eval_plan,
            tally: EpochTally::resumed(start),
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

    /// Writes the training checkpoint of the current state (after a complete step).
    fn checkpoint(&self) -> crate::Result<()> {
        let budget = self.update.budget.as_deref();
        let position = self
            .tally
            .position(self.steps_done, self.next_epoch, budget);
        self.recorder
            .checkpoint(&self.student, &self.update.sgd, position)
    }

    /// The current weights for the eval stage, after `epoch` epochs.
    fn snapshot(&self, epoch: usize, last: bool, eval_images: u64) -> Snapshot {
        Snapshot {
            epoch,
            step: self.steps_done,
            last,
            weights: self.layout.snapshot(&self.student),
            eval_images,
        }
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
            let at = batch_in.at;
            (update.step(
                student,
                &batch_in.clean(),
                &batch_in.x_adv,
                at.epoch,
                at.step,
            ))
            .map_err(StageError::from)
        })??;
        self.steps_done += 1;
        self.next_epoch = batch.at.epoch + usize::from(batch.at.last_in_epoch);
        self.tally.add(loss, lr, batch.y.size()[0] as usize);
        self.board
            .publish(self.steps_done as u64, self.layout.snapshot(&self.student))
            .map_err(|e| StageError::msg(format!("publishing weights: {e}")))?;
        self.recorder.stepped(batch.at.epoch, loss, lr);
        if let Some(m) = self.recorder.metrics() {
            m.set_weight_staleness((batch.at.step as u64).saturating_sub(batch.weights_version));
        }
        if self.recorder.periodic_checkpoint_due(self.steps_done) && !batch.at.last_in_epoch {
            self.checkpoint()?;
        }
        if batch.at.last_in_epoch {
            let budget = self.update.budget.as_deref();
            let record = self.tally.finish(batch.at.epoch + 1, budget);
            self.recorder.epoch_end(&record, &self.student)?;
            self.checkpoint()?;
            let (epoch, last) = (batch.at.epoch + 1, batch.at.last_in_run);
            let snapshot = self.snapshot(epoch, last, self.eval_plan.images_after(epoch, last));
            if last {
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
        if self.recorder.checkpoints() {
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
            let epochs = self.recorder.epochs().len();
            out.send(self.snapshot(epochs, true, self.eval_plan.images))?;
        }
        Ok(())
    }
}
