//! What flows between the stages, one type per edge (clean -> taught ->
//! attacked batch, then snapshots), so a stage cannot receive a batch that
//! lacks what it needs. Every message owns its tensors (Tensor is Send, not
//! Sync), and moves by value.

use crate::attacks::AttackInput;
use crate::data::View;
use ard_actors::Message;
use tch::Tensor;

/// Where a training batch sits in the run.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct BatchPosition {
    /// Epoch, from 0.
    pub epoch: usize,
    /// Global optimisation step this batch is for, from 0.
    pub step: usize,
    /// True for the last batch of an epoch.
    pub last_in_epoch: bool,
    /// True for the last batch of the run.
    pub last_in_run: bool,
}

/// data -> teacher: one augmented training batch.
#[derive(Debug)]
pub struct CleanBatch {
    pub at: BatchPosition,
    /// Clean augmented inputs [B, 3, 32, 32] in [0, 1], on the run's device.
    pub x: Tensor,
    /// Labels [B].
    pub y: Tensor,
    /// Dataset index of each image (keys the soft-label cache).
    pub indices: Vec<u64>,
    /// Augmentation view of each image (keys the soft-label cache).
    pub views: Vec<View>,
}

/// teacher -> attack: the batch with the teacher's logits (none in a
/// teacher-free run).
#[derive(Debug)]
pub struct TaughtBatch {
    pub at: BatchPosition,
    pub x: Tensor,
    pub y: Tensor,
    /// Teacher logits on `x`.
    pub teacher: Option<Tensor>,
}

/// attack -> student: everything one optimisation step needs.
#[derive(Debug)]
pub struct AttackedBatch {
    pub at: BatchPosition,
    pub x: Tensor,
    pub y: Tensor,
    pub teacher: Option<Tensor>,
    /// Adversarial inputs.
    pub x_adv: Tensor,
    /// BatchNorm statistics a train-mode attack produced.
    pub bn: Option<BnUpdate>,
    /// Version of the student weights the attack used (steps done).
    pub weights_version: u64,
}

impl TaughtBatch {
    /// The clean batch, as the attack and the loss take it.
    pub fn clean(&self) -> AttackInput<'_> {
        AttackInput {
            x: &self.x,
            y: &self.y,
            teacher_logits: self.teacher.as_ref(),
        }
    }
}

impl AttackedBatch {
    /// The clean batch, as the loss takes it.
    pub fn clean(&self) -> AttackInput<'_> {
        AttackInput {
            x: &self.x,
            y: &self.y,
            teacher_logits: self.teacher.as_ref(),
        }
    }
}

macro_rules! batch_message {
    ($($t:ty),*) => {$(
        impl Message for $t {
            fn images(&self) -> u64 {
                self.x.size().first().copied().unwrap_or(0) as u64
            }
        }
    )*};
}
batch_message!(CleanBatch, TaughtBatch, AttackedBatch);

/// BatchNorm running statistics after the attack's train-mode forwards, in the
/// order of [`super::weights::WeightLayout::bn`].
#[derive(Debug)]
pub struct BnUpdate {
    /// Running statistics on the replica before the attack.
    pub before: Vec<Tensor>,
    /// Running statistics on the replica after the attack.
    pub after: Vec<Tensor>,
    /// How many running-statistics updates the attack made.
    pub forwards: usize,
}

/// Student weights handed to the eval stage.
#[derive(Debug)]
pub struct Snapshot {
    /// Epochs completed (1-based).
    pub epoch: usize,
    /// Optimisation steps completed.
    pub step: usize,
    /// The last snapshot of the run.
    pub last: bool,
    /// All student variables, in layout order, deep copies.
    pub weights: Vec<Tensor>,
    /// Test images the eval stage will evaluate this snapshot on (0: not due).
    pub eval_images: u64,
}

impl Message for Snapshot {
    fn images(&self) -> u64 {
        self.eval_images
    }
}
