//! What every run shares, whichever engine trains it (the engines live in
//! [`crate::engines`], and this module never imports them).
//!
//! A run, from `run.rs`: [`resume`] opens its [`folder`] (the one owner of
//! the run folder's files) and finds the checkpoint; an [`Engine`] is given a
//! [`Job`]; [`context`] sets the run up (data, models, restored checkpoint,
//! budget, test plan, validator); each step is [`step`] (the attack, the
//! student's loss and SGD step); epoch ends and evaluations go to the
//! [`recorder`], which writes the [`records`]; [`budget`] is the
//! training-time limit, [`validation`] / [`selection`] / [`overfit_guard`]
//! the best checkpoint and the collapse watch.

pub mod budget;
pub mod context;
pub mod engine;
pub mod folder;
pub mod overfit_guard;
pub mod recorder;
pub mod records;
pub mod resume;
pub mod selection;
pub mod step;
pub mod validation;

// What the engines use, named here so that they never reach into a module.
pub use budget::{off_the_clock, TimeBudget};
pub use context::{Context, EvalSchedule, Parts, Setup, TestPlan};
pub use engine::{Engine, Job, Trained};
pub use folder::{RunFile, RunFolder};
pub use overfit_guard::StopFlag;
pub use recorder::{Recorder, Records};
pub use records::{EpochRecord, EpochTally, EvalRecord, StageReport, Summary};
pub use resume::{Checkpoint, TrainPosition};
pub use step::{adversarial_batch, attack_key, StudentUpdate, TRAIN_NOISE_STREAM};
pub use validation::{SelectionHandle, Validator};
