//! Training: the pieces of one ARD step (teacher logits, attack, student
//! update), the run folder, the training checkpoint, and the sequential trainer — the semantic
//! reference that the actor pipeline reproduces.

pub mod budget;
pub mod context;
pub mod overfit_guard;
pub mod recorder;
pub mod records;
pub mod resume;
pub mod run_dir;
pub mod selection;
pub mod sequential;
pub mod step;
pub mod validation;

pub use run_dir::RunDir;
pub use sequential::{train_sequential, TrainOutcome};
pub use step::{StudentUpdate, TRAIN_NOISE_STREAM};
