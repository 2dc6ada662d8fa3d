//! Distillation and adversarial-training objectives, the SGD optimiser and
//! learning-rate schedules.

pub mod grad_scaler;
pub mod losses;
pub mod schedule;
pub mod sgd;

pub use grad_scaler::GradScaler;
pub use losses::{LossInputs, Objective};
pub use schedule::Schedule;
pub use sgd::Sgd;
