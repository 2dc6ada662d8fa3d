//! What a run shows a person: a progress bar while it trains, and PNG plots
//! of loss, accuracy and per-stage throughput in the run folder.

pub mod plots;
pub mod progress;
