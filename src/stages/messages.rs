//! What flows between the stages. Every message owns its tensors (Tensor is
//! Send, not Sync), and moves by value.

use crate::data::View;
use ard_actors::Message;
use tch::Tensor;

/// One training batch, filled in as it moves down the pipeline.
#[derive(Debug)]
pub struct TrainBatch {
    /// Epoch, from 0.
    pub epoch: usize,
    /// Global optimisation step this batch is for, from 0.
    pub step: usize,
    /// True for the last batch of an epoch.
    pub last_in_epoch: bool,
    /// True for the last batch of the run.
    pub last_in_run: bool,
    /// Clean augmented inputs [B, 3, 32, 32] in [0, 1], on the run's device.
    pub x: Tensor,
    /// Labels [B].
    pub y: Tensor,
    /// Dataset index of each image (keys the soft-label cache).
    pub indices: Vec<u64>,
    /// Augmentation view of each image (keys the soft-label cache).
    pub views: Vec<View>,
    /// Teacher logits on `x` (teacher stage).
    pub teacher: Option<Tensor>,
    /// Adversarial inputs (attack stage).
    pub x_adv: Option<Tensor>,
    /// BatchNorm statistics a train-mode attack produced (attack stage).
    pub bn: Option<BnUpdate>,
    /// Version of the student weights the attack used (attack stage).
    pub weights_version: u64,
}

impl Message for TrainBatch {
    fn images(&self) -> u64 {
        self.x.size().first().copied().unwrap_or(0) as u64
    }
}

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
