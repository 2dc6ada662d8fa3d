//! Telemetry and the control plane: the one canonical list of metric names, the
//! training metrics' Prometheus handles, the HTTP endpoint (`/metrics`,
//! `/healthz`, `/status`, on actix-web) and the SIGINT/SIGTERM handler.
//!
//! - [`names`]: every metric's name, kind, labels and help ([`names::ALL`]);
//!   the per-stage ones are the `ard-actors` runtime's, re-exported;
//! - [`registry`]: [`TrainMetrics`], registered once with the run's `run` label;
//! - [`status`]: the `/status` document ([`Status`]) and its sources;
//! - [`server`]: the HTTP endpoint on its own actix thread ([`start`]);
//! - [`signals`]: first signal cancels, second exits at once ([`install`]);
//! - [`error`]: the module's error type, [`MetricsError`].
//!
//! Wiring, in the pipeline's runner:
//!
//! ```ignore
//! let registry = prometheus::Registry::new();
//! let metrics = TrainMetrics::register(&registry, &cfg.run.name, &["pgd"], &["natural", "pgd20"])?;
//! let options = PipelineOptions { const_labels: metrics::const_labels(&cfg.run.name), ..Default::default() };
//! let builder = PipelineBuilder::new(&registry, options)?;
//! let cancel = builder.cancel_token();
//! let signals = metrics::install(move |_| cancel.cancel())?;
//! let status = Arc::new(PipelineStatus::new(metrics.clone(), registry.clone()));
//! let server = metrics::start(&cfg.metrics.listen, registry.clone(), status.clone())?;
//! let handle = builder.source(..)?.stage(..)?.sink(..)?.run()?;
//! status.attach(handle.stats_reader());
//! let outcome = handle.join();
//! status.set_phase(Phase::Finished);
//! if let Some(server) = server { server.shutdown()?; }
//! if let Some(signal) = signals.received() { std::process::exit(signal.exit_code()); }
//! ```

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
