//! The library's typed errors. `main` prints them with their cause chain.

use std::path::PathBuf;

/// Result with the library's [`Error`].
pub type Result<T, E = Error> = std::result::Result<T, E>;

/// Everything that can go wrong in the library, each naming the thing at fault.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    /// A configuration file or override could not be read or is invalid.
    #[error("config {file}: {message}")]
    Config { file: String, message: String },

    /// A dataset file is missing, truncated or corrupt.
    #[error("dataset file {}: {message}", path.display())]
    Dataset { path: PathBuf, message: String },

    /// Downloading or extracting the dataset failed.
    #[error("download of {url}: {message}")]
    Download { url: String, message: String },

    /// A checkpoint does not fit the model, or cannot be read or written.
    #[error("checkpoint {}: {message}", path.display())]
    Checkpoint { path: PathBuf, message: String },

    /// A run folder that cannot be used as asked (in use, or holding a finished run).
    #[error("run folder {}: {message}", path.display())]
    RunFolder { path: PathBuf, message: String },

    /// An architecture name that is not in the model zoo.
    #[error("unknown architecture {name:?}: {message}")]
    Arch { name: String, message: String },

    /// A device string that is not usable here.
    #[error("device {name:?}: {message}")]
    Device { name: String, message: String },

    /// A libtorch operation failed (bad shapes, out of memory, ...).
    #[error("libtorch: {0}")]
    Torch(#[from] tch::TchError),

    /// File-system I/O with the path it concerned.
    #[error("{}: {source}", path.display())]
    Io {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },

    /// The run was cancelled (a signal, or the caller).
    #[error("cancelled")]
    Cancelled,

    /// The actor pipeline could not be built, or a stage failed (its error
    /// and causes are in the message) or stalled.
    #[error("pipeline: {0}")]
    Pipeline(ard_actors::PipelineError),

    /// Shared state that a panicking thread left behind.
    #[error("{what} poisoned")]
    Poisoned { what: &'static str },

    /// A record that could not be written as JSON.
    #[error("{what} as JSON: {source}")]
    Json {
        what: &'static str,
        #[source]
        source: serde_json::Error,
    },

    /// Training diverged: the loss is not finite.
    #[error("loss is {value} at step {step} (epoch {epoch}); weights left at the last good step")]
    Diverged {
        value: f64,
        step: usize,
        epoch: usize,
    },

    /// Anything else, with its context.
    #[error("{0}")]
    Other(String),
}

impl Error {
    /// A JSON encoding error of `what`.
    pub fn json(what: &'static str) -> impl FnOnce(serde_json::Error) -> Error {
        move |source| Error::Json { what, source }
    }

    /// Wraps an I/O error with the path it concerned.
    pub fn io(path: impl Into<PathBuf>, source: std::io::Error) -> Self {
        Error::Io {
            path: path.into(),
            source,
        }
    }
}
