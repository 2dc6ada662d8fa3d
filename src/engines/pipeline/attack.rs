//! The attack stage, the one ablations swap: the configured [`Attack`] on a
//! replica of the student, refreshed from the weights the student publishes.
//! With `max_weight_staleness = 0` the attack on step t waits for the weights
//! after step t-1 (the sequential algorithm exactly); with 1 it may use the
//! weights one update older, so it overlaps the student's update (with a
//! thread per stage; on the CPU's shared compute lane the two take turns).

use super::messages::{AttackedBatch, BnUpdate, TaughtBatch};
use super::weights::WeightLayout;
use crate::attacks::Attack;
use crate::models::Model;
use crate::train::{adversarial_batch, attack_key};
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
    /// The run's attack (`attack.*`), weight staleness
    /// (`pipeline.max_weight_staleness`) and seed, on `replica` refreshed from
    /// `board`, or on `teacher` when the attack targets it.
    pub fn for_run(
        cfg: &crate::config::Config,
        replica: Model,
        board: WeightBoard,
        compute: super::Compute,
        teacher: Option<Model>,
        metrics: Option<crate::metrics::TrainMetrics>,
    ) -> Self {
        let (attack, staleness, seed) = (
            cfg.attack.build(),
            cfg.pipeline.max_weight_staleness,
            cfg.run.seed,
        );
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
    type In = TaughtBatch;
    type Out = AttackedBatch;

    fn name(&self) -> &str {
        "attack"
    }

    fn handle(
        &mut self,
        mut batch: TaughtBatch,
        out: &mut Emitter<AttackedBatch>,
    ) -> Result<(), StageError> {
        self.compute.enter();
        let (key, amp) = (attack_key(self.seed, batch.at.step as u64), self.amp);
        let (x_adv, bn, weights_version) = if let Some(teacher) = self.teacher.as_mut() {
            // `&mut`: a shared reference to tensors is not Send.
            let (attack, batch_in) = (&mut self.attack, &mut batch);
            let x_adv = self.compute.run(out, move || {
                adversarial_batch(attack.as_ref(), teacher, &batch_in.clean(), key, amp)
            })??;
            (x_adv, None, 0)
        } else {
            let wanted = (batch.at.step as u64).saturating_sub(self.staleness);
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
            let forwards = self.attack.bn_train_forwards();
            let (attack, replica, layout, batch_in) = (
                &mut self.attack,
                &mut self.replica,
                &mut self.layout,
                &mut batch,
            );
            let (x_adv, bn) = self.compute.run(out, move || -> crate::Result<_> {
                let before = (forwards > 0).then(|| layout.bn_stats(replica));
                let x_adv =
                    adversarial_batch(attack.as_ref(), replica, &batch_in.clean(), key, amp)?;
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
            }
            (x_adv, bn, version)
        };
        if let Some(m) = &self.metrics {
            m.inc_gradient_steps(&self.label, self.attack.gradient_steps() as u64);
        }
        out.send(AttackedBatch {
            at: batch.at,
            x: batch.x,
            y: batch.y,
            teacher: batch.teacher,
            x_adv,
            bn,
            weights_version,
        })
    }
}
