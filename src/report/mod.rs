//! What a run shows a person: a progress bar while it trains, PNG plots
//! of loss, accuracy and per-stage throughput in the run folder, the per-stage
//! table printed at its end, and counted nouns for messages.

pub mod plots;
pub mod plural;
pub mod progress;
pub mod stage_table;
