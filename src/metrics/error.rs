//! [`MetricsError`] is what registering metrics, serving them and installing the
//! signal handlers can fail with. Each message names what it concerns (the
//! address and the config key `metrics.listen`, the metric, the signal) and says
//! what to do. The underlying cause is part of the message (not a separate
//! `source()`), so `main`'s cause-chain printing shows it once.

use std::io;

/// The config key of the HTTP endpoint's address.
pub const LISTEN_KEY: &str = "metrics.listen";

/// Everything the metrics module can fail with.
#[derive(Debug, thiserror::Error)]
pub enum MetricsError {
    /// `metrics.listen` is not a socket address.
    #[error(
        "{LISTEN_KEY} = {value:?} is not a socket address like \"127.0.0.1:9187\" \
         (use \"\" to disable the metrics endpoint)"
    )]
    InvalidAddress {
        /// The configured value.
        value: String,
    },

    /// The endpoint's address could not be bound (in use, not local, no permission).
    #[error(
        "metrics endpoint cannot listen on {addr} ({LISTEN_KEY}): {cause}; set {LISTEN_KEY} \
         to a free address (port 0 picks one), or to \"\" to disable the endpoint"
    )]
    Bind {
        /// The address as configured.
        addr: String,
        /// Why binding failed (`cause.kind()` is `AddrInUse` for a taken port).
        cause: io::Error,
    },

    /// The HTTP server could not start or stop.
    #[error("metrics endpoint on {addr}: {message}")]
    Server {
        /// The bound address.
        addr: String,
        /// What went wrong.
        message: String,
    },

    /// A metric could not be registered (usually: registered twice with the same
    /// `run` label in one registry).
    #[error("cannot register metric {name}: {cause}")]
    Register {
        /// The metric's name.
        name: &'static str,
        /// Prometheus's reason.
        cause: prometheus::Error,
    },

    /// The signal handlers are already installed by a live [`SignalGuard`].
    ///
    /// [`SignalGuard`]: super::SignalGuard
    #[error("signal handlers are already installed (drop the first SignalGuard before installing again)")]
    SignalsAlreadyInstalled,

    /// The operating system refused to install a signal handler.
    #[error("cannot install the {signal} handler: {cause}")]
    SignalInstall {
        /// The signal's name.
        signal: &'static str,
        /// The OS error.
        cause: io::Error,
    },
}

impl From<MetricsError> for crate::Error {
    fn from(error: MetricsError) -> Self {
        crate::Error::Component(Box::new(error))
    }
}
