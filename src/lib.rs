//! ard-pipeline: fast adversarial robust distillation (ARD) on CIFAR-10.
//!
//! The ML domain lives here, on tch (libtorch): configuration, the CIFAR-10 data
//! layer, the model zoo, attacks, distillation losses, optimisation, evaluation and
//! what every training run shares ([`train`]). The engines that train it are
//! [`engines`]: the sequential reference and the five-stage pipeline on the
//! generic actor runtime, the `ard-actors` crate.

#![warn(clippy::too_many_lines)]

pub mod atomic_file;
pub mod attacks;
pub mod bench;
pub mod checkpoint;
pub mod config;
pub mod data;
pub mod deploy;
pub mod device;
pub mod distill;
pub mod doctor;
pub mod engines;
pub mod error;
pub mod eval;
pub mod file_lock;
pub mod libtorch_dir;
pub mod metrics;
pub mod models;
pub mod perf;
pub mod reference;
pub mod report;
pub mod run;
pub mod soft_labels;
pub mod sweep;
pub mod train;

pub use error::{Error, Result};
