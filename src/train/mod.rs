//! Training, engine-agnostic: what both engines share, and the sequential
//! engine built on it (`stages/` is the other; this module never imports it).
//!
//! A run, from `run.rs`: [`context`] sets it up (data, models, restored
//! checkpoint, budget, test plan, validator); each step is [`step`] (the
//! attack, the student's loss and SGD step); epoch ends, evaluations and the
//! end of the run go to the [`recorder`], which writes the [`records`] of the
//! run folder ([`run_dir`]); [`resume`] is the checkpoint, [`budget`] the
//! training-time limit, [`validation`] / [`selection`] / [`overfit_guard`]
//! the best checkpoint and the collapse watch. [`sequential`] runs these one
//! step after the other: the semantic reference the pipeline reproduces.

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
