//! One ARD optimisation step, split where the pipeline splits it: the attack
//! on the student (or a replica of it), and the student's loss and SGD step
//! (the teacher's logits come from `soft_labels`).

use crate::attacks::{Attack, AttackInput, NoiseKey};
use crate::distill::{GradScaler, LossInputs, Objective, Schedule, Sgd};
use crate::error::{Error, Result};
use crate::models::Model;
use crate::perf::ComputeCopy;
use tch::Tensor;

/// Noise stream of the training attack's random starts.
pub const TRAIN_NOISE_STREAM: u64 = 0x7A11;

/// The noise key of the training attack at global step `step`.
pub fn attack_key(seed: u64, step: u64) -> NoiseKey {
    NoiseKey {
        seed,
        counter: step,
        stream: TRAIN_NOISE_STREAM,
    }
}

/// Runs the training attack (under fp16 autocast when `amp`, CUDA only:
/// the attack needs only the sign of its input gradient).
pub fn adversarial_batch(
    attack: &dyn Attack,
    model: &Model,
    clean: &AttackInput,
    key: NoiseKey,
    amp: bool,
) -> Result<Tensor> {
    tch::autocast(amp, || attack.perturb(model, clean, key))
}

/// The student's side of a step: the loss and the optimiser.
#[derive(Debug)]
pub struct StudentUpdate {
    pub objective: Objective,
    pub sgd: Sgd,
    pub schedule: Schedule,
    /// Run a clean forward that only moves BatchNorm statistics without
    /// recording a graph (`perf.clean_forward_no_grad`): the same update bit
    /// for bit (its gradient is 0), one backward pass and its activations less.
    pub clean_forward_no_grad: bool,
    /// `perf.amp` (CUDA): forwards and loss under fp16 autocast, the
    /// backward pass on the scaled loss, the step skipped on overflow.
    pub scaler: Option<GradScaler>,
    /// `train.max_seconds`: the schedule runs over the budget's time.
    pub budget: Option<std::sync::Arc<super::budget::TimeBudget>>,
    /// `perf.student_dtype = "bf16"`: the forwards and the backward pass run
    /// on this bf16 copy of the student; its gradients, cast to f32, step the
    /// f32 weights, and its BatchNorm statistics are copied back.
    pub compute_copy: Option<ComputeCopy>,
}

impl StudentUpdate {
    /// Forward on x_adv (and the clean batch's x when needed) in train mode,
    /// loss, backward, SGD step at the scheduled rate; returns (loss, lr). A
    /// non-finite loss is an error and the weights are left untouched.
    pub fn step(
        &mut self,
        student: &Model,
        clean: &AttackInput,
        x_adv: &Tensor,
        epoch: usize,
        global_step: usize,
    ) -> Result<(f64, f64)> {
        let (x, y, teacher) = (clean.x, clean.y, clean.teacher_logits);
        let amp = self.scaler.is_some();
        let model = match &mut self.compute_copy {
            Some(copy) => copy.refresh(student)?,
            None => student,
        };
        let loss = tch::autocast(amp, || {
            let s_adv = model.forward_t(x_adv, true);
            let s_clean = self.objective.needs_clean_forward().then(|| {
                if self.clean_forward_no_grad && self.objective.clean_forward_only_for_bn() {
                    tch::no_grad(|| model.forward_t(x, true))
                } else {
                    model.forward_t(x, true)
                }
            });
            self.objective.loss(&LossInputs {
                student_adv: &s_adv,
                student_clean: s_clean.as_ref(),
                teacher,
                labels: y,
            })
        })?;
        let value = loss.double_value(&[]);
        if let Some(copy) = &self.compute_copy {
            copy.statistics_to(student)?;
        }
        if !value.is_finite() {
            return Err(Error::Diverged {
                value,
                step: global_step,
                epoch: epoch + 1,
            });
        }
        self.sgd.zero_grad();
        let lr = match &self.budget {
            Some(budget) => self.schedule.lr_at(epoch, budget.progress()),
            None => self.schedule.lr(epoch, global_step),
        };
        match (&mut self.scaler, &self.compute_copy) {
            (None, None) => {
                loss.backward();
                self.sgd.step(lr)?;
            }
            (None, Some(copy)) => {
                loss.backward();
                let grads = copy.take_gradients(self.sgd.names())?;
                self.sgd.step_with(lr, &grads)?;
            }
            (Some(scaler), _) => {
                scaler.scaled(&loss).backward();
                let finite = scaler.unscale(self.sgd.params())?;
                if finite {
                    self.sgd.step(lr)?;
                } else {
                    log::warn!(
                        "amp: gradients overflowed at step {global_step} (loss scale {}); step skipped",
                        scaler.scale()
                    );
                }
                scaler.update(finite);
            }
        }
        Ok((value, lr))
    }
}
