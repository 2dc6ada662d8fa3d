//! The attack stage, the one ablations swap: the configured [`Attack`] on a
//! replica of the student, refreshed from the weights the student publishes.
//! With `max_weight_staleness = 0` the attack on step t waits for the weights
//! after step t-1 (the sequential algorithm exactly); with 1 it may use the
//! weights one update older, so it overlaps the student's update (with a
//! thread per stage; on the CPU's shared compute lane the two take turns).

use super::messages::{BnUpdate, TrainBatch};
use super::weights::WeightLayout;
use crate::attacks::Attack;
use crate::models::Model;
use crate::train::step::{adversarial_batch, attack_key};
use ard_actors::mailbox::Mailbox;
use ard_actors::{Emitter, Stage, StageError};
use tch::Tensor;

/// Weights published by the student: version = optimisation steps done.
pub type WeightBoard = Mailbox<Vec<Tensor>>;

pub struct AttackStage {
    attack: Box<dyn Attack>,
    label: String,
    replica: Model,
    layout: WeightLayout,
    board: WeightBoard,
    staleness: u64,
    seed: u64,
    compute: super::Compute,
    /// Version currently loaded in the replica (None: reload).
    loaded: Option<u64>,
    /// The attack targets the teacher (paper Algorithm 1): no replica refresh.
    teacher: Option<Model>,
    metrics: Option<crate::metrics::TrainMetrics>,
    /// `perf.amp`: the attack under fp16 autocast (CUDA).
    amp: bool,
}

impl AttackStage {
    #[allow(clippy::too_many_arguments)]
    pub fn new(
        attack: Box<dyn Attack>,
        replica: Model,
        board: WeightBoard,
        staleness: u64,
        seed: u64,
        compute: super::Compute,
        teacher: Option<Model>,
        metrics: Option<crate::metrics::TrainMetrics>,
    ) -> Self {
        let layout = WeightLayout::of(&replica);
        let label = attack.name();
        AttackStage {
            attack,
            label,
            replica,
            layout,
            board,
            staleness,
            seed,
            compute,
            loaded: None,
            teacher,
            metrics,
            amp: false,
        }
    }

    /// Runs the attack under fp16 autocast (`perf.amp`, CUDA).
    pub fn with_amp(mut self, amp: bool) -> Self {
        self.amp = amp;
        self
    }
}

impl Stage for AttackStage {
    type In = TrainBatch;
    type Out = TrainBatch;

    fn name(&self) -> &str {
        "attack"
    }

    fn handle(
        &mut self,
        mut batch: TrainBatch,
        out: &mut Emitter<TrainBatch>,
    ) -> Result<(), StageError> {
        self.compute.enter();
        let (key, amp) = (attack_key(self.seed, batch.step as u64), self.amp);
        let x_adv = if let Some(teacher) = self.teacher.as_mut() {
            let (attack, batch_in) = (&mut self.attack, &mut batch);
            self.compute.run(out, move || {
                adversarial_batch(
                    attack.as_ref(),
                    teacher,
                    &batch_in.x,
                    &batch_in.y,
                    batch_in.teacher.as_ref(),
                    key,
                    amp,
                )
            })??
        } else {
            let wanted = (batch.step as u64).saturating_sub(self.staleness);
            let (replica, layout, board, loaded) =
                (&self.replica, &self.layout, &self.board, &mut self.loaded);
            let version = out.idle_while(|cancel| {
                board.wait_for_version_with(
                    wanted,
                    cancel,
                    |version, weights| -> crate::Result<u64> {
                        if *loaded != Some(version) {
                            layout.load(replica, weights)?;
                        }
                        Ok(version)
                    },
                )
            });
            let version = match version {
                // The student has taken its last step (train.max_seconds ran
                // out while this batch was on its way): nothing trains on it.
                Err(ard_actors::MailboxError::Closed { .. }) => return Ok(()),
                other => other.map_err(|e| {
                    StageError::msg(format!("waiting for student weights v{wanted}: {e}"))
                })??,
            };
            self.loaded = Some(version);
            batch.weights_version = version;
            let forwards = self.attack.bn_train_forwards();
            let (attack, replica, layout, batch_in) = (
                &mut self.attack,
                &mut self.replica,
                &mut self.layout,
                &mut batch,
            );
            let (x_adv, bn) = self.compute.run(out, move || -> crate::Result<_> {
                let before = (forwards > 0).then(|| layout.bn_stats(replica));
                let x_adv = adversarial_batch(
                    attack.as_ref(),
                    replica,
                    &batch_in.x,
                    &batch_in.y,
                    batch_in.teacher.as_ref(),
                    key,
                    amp,
                )?;
                let bn = before.map(|before| BnUpdate {
                    before,
                    after: layout.bn_stats(replica),
                    forwards,
                });
                Ok((x_adv, bn))
            })??;
            if bn.is_some() {
                // The replica's statistics moved; the next batch must reload them.
                self.loaded = None;
                batch.bn = bn;
            }
            x_adv
        };
        if let Some(m) = &self.metrics {
            m.inc_gradient_steps(&self.label, self.attack.gradient_steps() as u64);
        }
        batch.x_adv = Some(x_adv);
        out.send(batch)
    }
}
