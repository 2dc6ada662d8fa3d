//! The teacher stage: teacher logits for the clean augmented batch, eval mode,
//! no gradient (its own guard on its own thread).

use super::messages::TrainBatch;
use crate::models::Model;
use crate::train::step::teacher_logits;
use ard_actors::{Emitter, Stage, StageError};

/// Adds teacher logits to each batch (passes batches through when the loss
/// needs no teacher).
pub struct TeacherStage {
    teacher: Option<Model>,
    threads: usize,
    started: bool,
}

impl TeacherStage {
    pub fn new(teacher: Option<Model>, threads: usize) -> Self {
        TeacherStage { teacher, threads, started: false }
    }
}

impl Stage for TeacherStage {
    type In = TrainBatch;
    type Out = TrainBatch;

    fn name(&self) -> &str {
        "teacher"
    }

    fn handle(&mut self, mut batch: TrainBatch, out: &mut Emitter<TrainBatch>) -> Result<(), StageError> {
        if !self.started {
            tch::set_num_threads(self.threads as i32);
            self.started = true;
        }
        if let Some(teacher) = &self.teacher {
            batch.teacher = Some(teacher_logits(teacher, &batch.x));
        }
        out.send(batch)
    }
}
