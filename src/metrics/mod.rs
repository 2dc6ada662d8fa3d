//! Telemetry and the control plane: the one canonical list of metric names
//! ([`names`]), the training metrics' Prometheus handles ([`TrainMetrics`]), the
//! HTTP endpoint (`/metrics`, `/healthz`, `/status`, on actix-web; [`start`]) and
//! the SIGINT/SIGTERM handler ([`install`]).
//!
//! Wiring, in the pipeline's runner: register [`TrainMetrics`] and give the
//! `PipelineBuilder` the [`const_labels`] of the same run on the same registry;
//! [`install`] a handler that cancels the pipeline; [`start`] the server with a
//! [`PipelineStatus`] and [`attach`](PipelineStatus::attach) the running
//! pipeline's stats reader; at the end set [`Phase::Finished`], shut the server
//! down and exit with the received signal's [`exit_code`](Signal::exit_code).

pub mod error;
pub mod names;
pub mod registry;
pub mod server;
pub mod signals;
pub mod status;

pub use error::{MetricsError, LISTEN_KEY};
pub use registry::{const_labels, EvalRecord, TrainMetrics};
pub use server::{start, start_at, ServerHandle};
pub use signals::{install, Signal, SignalGuard};
pub use status::{Phase, PipelineStatus, QueueStatus, StageStatus, Status, StatusSource};
