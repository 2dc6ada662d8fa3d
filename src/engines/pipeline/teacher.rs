//! The teacher stage: teacher logits for the clean augmented batch, eval mode,
//! no gradient (a scoped guard, wherever it computes), from the soft-label cache
//! when the run has one ([`SoftLabelSource`]): hits skip the teacher forward,
//! misses are computed and stored, and new entries are written back at epoch
//! ends and when the stage finishes.

use super::messages::{CleanBatch, TaughtBatch};
use crate::models::Model;
use crate::soft_labels::SoftLabelSource;
use ard_actors::{Emitter, Stage, StageError};

/// Adds teacher logits to each batch (passes batches through when the loss
/// needs no teacher).
pub struct TeacherStage {
    teacher: Option<Model>,
    source: SoftLabelSource,
    compute: super::Compute,
}

impl TeacherStage {
    pub fn new(teacher: Option<Model>, source: SoftLabelSource, compute: super::Compute) -> Self {
        TeacherStage {
            teacher,
            source,
            compute,
        }
    }
}

impl Stage for TeacherStage {
    type In = CleanBatch;
    type Out = TaughtBatch;

    fn name(&self) -> &str {
        "teacher"
    }

    fn handle(
        &mut self,
        mut batch: CleanBatch,
        out: &mut Emitter<TaughtBatch>,
    ) -> Result<(), StageError> {
        self.compute.enter();
        let teacher = match self.teacher.as_mut() {
            Some(teacher) => {
                let (source, batch_in) = (&mut self.source, &mut batch);
                Some(self.compute.run(out, move || {
                    source.logits(teacher, &batch_in.x, &batch_in.indices, &batch_in.views)
                })??)
            }
            None => None,
        };
        let epoch_end = batch.at.last_in_epoch;
        out.send(TaughtBatch {
            at: batch.at,
            x: batch.x,
            y: batch.y,
            teacher,
        })?;
        if epoch_end {
            self.source.end_epoch()?;
        }
        Ok(())
    }

    fn finish(&mut self, _out: &mut Emitter<TaughtBatch>) -> Result<(), StageError> {
        Ok(self.source.finish()?)
    }

    fn interrupted(&mut self) {
        // Keep the soft labels computed so far: a resumed run reads them back.
        if let Err(e) = self.source.finish() {
            log::error!("soft labels: could not write the cache on cancellation: {e}");
        }
    }
}
