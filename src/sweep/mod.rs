//! Sweeps: one sweep file (a base run config plus a grid or explicit rows)
//! expands into many runs, each an ordinary `ard-pipeline` run with its own
//! config, run folder and metrics port, executed by a backend:
//!
//! - `local`: concurrent child processes of this binary (the default);
//! - `ray`: one Ray job per run through the Ray Jobs REST API;
//! - `k8s`: an Indexed Job (rendered, not applied) whose pods run
//!   `ard-pipeline sweep-run` on the row `JOB_COMPLETION_INDEX`.
//!
//! `ard-pipeline report SWEEP_DIR` turns the finished runs into the paper's
//! Table 2 layout (`report.md`, `report.csv`) and two plots.
//!
//! The local and Ray backends also run the shards of a split evaluation
//! (`ard-pipeline eval --shards N`, [`eval_shards`]): the scheduler runs
//! tasks, processes of this binary, whether a sweep's runs or those shards.

pub mod command;
pub mod eval_shards;
pub mod expand;
pub mod k8s;
pub mod local;
pub mod manifest;
pub mod ray;
pub mod report;
pub mod schedule;
pub mod spec;
pub mod stale;

pub use command::{run_sweep, run_sweep_with, sweep_run, SweepOptions, SweepOutcome};
pub use expand::{expand, PlannedRun, RunPlacement};
pub use spec::{Backend, SweepFile, SweepSettings};
