//! The student stage: loss, optimiser step, publishes the new weights
//! (versioned) for the attack replica, hands snapshots to the eval stage at
//! epoch ends, and checkpoints.

use super::attack::WeightBoard;
use super::messages::{Snapshot, TrainBatch};
use super::weights::WeightLayout;
use crate::models::Model;
use crate::train::step::StudentUpdate;
use crate::train::RunDir;
use ard_actors::{emitter::TrySend, Emitter, Stage, StageError};
use std::path::PathBuf;
use std::sync::{Arc, Mutex};

/// Per-epoch training figures the student stage reports.
#[derive(Debug, Clone, Default, serde::Serialize)]
pub struct EpochTrainStats {
    pub epoch: usize,
    pub steps: usize,
    pub mean_loss: f64,
    pub lr: f64,
}

pub struct StudentStage {
    student: Model,
    update: StudentUpdate,
    layout: WeightLayout,
    board: WeightBoard,
    threads: super::ThreadBudget,
    run_dir: Option<RunDir>,
    save_final: Option<PathBuf>,
    metrics: Option<crate::metrics::TrainMetrics>,
    /// The student's final weights, for the caller once the pipeline ends.
    final_weights: Arc<Mutex<Option<Vec<tch::Tensor>>>>,
    epochs: Arc<Mutex<Vec<EpochTrainStats>>>,
    /// (every_epochs, test images per evaluation) of the eval stage.
    eval_plan: (usize, u64),
    loss_sum: f64,
    steps_in_epoch: usize,
    epoch_started: std::time::Instant,
    epoch_images: usize,
    steps_done: usize,
}

impl StudentStage {
    #[allow(clippy::too_many_arguments)]
    pub fn new(
        student: Model,
        update: StudentUpdate,
        board: WeightBoard,
        threads: usize,
        run_dir: Option<RunDir>,
        save_final: Option<PathBuf>,
        metrics: Option<crate::metrics::TrainMetrics>,
        final_weights: Arc<Mutex<Option<Vec<tch::Tensor>>>>,
        epochs: Arc<Mutex<Vec<EpochTrainStats>>>,
        eval_plan: (usize, u64),
    ) -> crate::Result<Self> {
        let layout = WeightLayout::of(&student);
        // Version 0: the initial weights.
        board
            .publish(0, layout.snapshot(&student))
            .map_err(|e| crate::Error::Other(format!("publishing initial weights: {e}")))?;
        Ok(StudentStage {
            student,
            update,
            layout,
            board,
            threads: super::ThreadBudget::new(threads),
            run_dir,
            save_final,
            metrics,
            final_weights,
            epochs,
            eval_plan,
            loss_sum: 0.0,
            steps_in_epoch: 0,
            epoch_started: std::time::Instant::now(),
            epoch_images: 0,
            steps_done: 0,
        })
    }
}

impl Stage for StudentStage {
    type In = TrainBatch;
    type Out = Snapshot;

    fn name(&self) -> &str {
        "student"
    }

    fn handle(&mut self, batch: TrainBatch, out: &mut Emitter<Snapshot>) -> Result<(), StageError> {
        self.threads.apply_once();
        if batch.step != self.steps_done {
            return Err(StageError::msg(format!(
                "batch for step {} arrived at step {}",
                batch.step, self.steps_done
            )));
        }
        let x_adv = batch
            .x_adv
            .as_ref()
            .ok_or_else(|| StageError::msg("batch without adversarial inputs"))?;
        if let Some(bn) = &batch.bn {
            let exact = batch.weights_version == batch.step as u64;
            self.layout
                .apply_bn(&self.student, &bn.after, &bn.before, bn.forwards, exact)?;
        }
        let (loss, lr) = self
            .update
            .step(
                &self.student,
                &batch.x,
                x_adv,
                &batch.y,
                batch.teacher.as_ref(),
                batch.epoch,
                batch.step,
            )
            .map_err(|e| StageError::msg(format!("{e}")))?;
        self.steps_done += 1;
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
        if batch.last_in_epoch {
            let stats = EpochTrainStats {
                epoch: batch.epoch + 1,
                steps: self.steps_in_epoch,
                mean_loss: self.loss_sum / self.steps_in_epoch.max(1) as f64,
                lr,
            };
            log::info!(
                "epoch {}: {} steps, mean loss {:.5}, lr {:.4}",
                stats.epoch,
                stats.steps,
                stats.mean_loss,
                stats.lr
            );
            self.epochs
                .lock()
                .map_err(|_| StageError::msg("epoch log poisoned"))?
                .push(stats.clone());
            self.loss_sum = 0.0;
            self.steps_in_epoch = 0;
            if let Some(dir) = &self.run_dir {
                self.student.save(&dir.file("last.safetensors"))?;
                crate::checkpoint::write_atomic(
                    &dir.file("last.optim.safetensors"),
                    &self.update.sgd.state_tensors(),
                )?;
                dir.append_jsonl("metrics.jsonl", &serde_json::json!({
                    "epoch": stats.epoch,
                    "steps": stats.steps,
                    "mean_loss": stats.mean_loss,
                    "lr": stats.lr,
                    "seconds": self.epoch_started.elapsed().as_secs_f64(),
                    "images_per_s": self.epoch_images as f64 / self.epoch_started.elapsed().as_secs_f64().max(1e-9),
                }))?;
            }
            self.epoch_started = std::time::Instant::now();
            self.epoch_images = 0;
            let snapshot = Snapshot {
                epoch: batch.epoch + 1,
                step: self.steps_done,
                last: batch.last_in_run,
                weights: self.layout.snapshot(&self.student),
                eval_images: {
                    let (every, images) = self.eval_plan;
                    let due = every > 0 && (batch.epoch + 1) % every == 0;
                    if due || batch.last_in_run {
                        images
                    } else {
                        0
                    }
                },
            };
            if batch.last_in_run {
                out.send(snapshot)?;
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

    fn finish(&mut self, _out: &mut Emitter<Snapshot>) -> Result<(), StageError> {
        self.board.close();
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
