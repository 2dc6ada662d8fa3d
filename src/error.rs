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

    /// The actor pipeline could not be built, or a stage stalled, panicked or
    /// failed with an error of another type (its causes are in the message).
    #[error("pipeline: {0}")]
    Pipeline(ard_actors::PipelineError),

    /// A pipeline stage failed with one of the library's errors, kept whole.
    #[error("pipeline stage `{stage}` failed")]
    Stage {
        stage: String,
        #[source]
        source: Box<Error>,
    },

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

    /// A component's own typed error, whole (a soft-label cache file's
    /// `CacheError`, the metrics endpoint's `MetricsError`): its message names
    /// the file or key and includes its cause; `downcast_ref` gives it back.
    #[error("{0}")]
    Component(Box<dyn std::error::Error + Send + Sync>),

    /// A command-line request that cannot be served; the message names the flag.
    #[error("{0}")]
    Usage(String),

    /// A rule of the run's configuration that only shows once the run is set up
    /// (the device, the CPU, the teacher); the message names the key.
    #[error("{0}")]
    Setting(String),

    /// A child process (the Python side of a benchmark or an export, a latency
    /// probe, a sweep's run) that could not start or failed.
    /// The message names the process and what it said last.
    #[error("{0}")]
    Process(String),

    /// ONNX Runtime, or an ONNX file that does not do what it should.
    #[error("{0}")]
    Onnx(String),

    /// A Ray cluster's job API that refused or answered nonsense.
    #[error("{url}: {message}")]
    Ray { url: String, message: String },

    /// A plot that could not be drawn or written.
    #[error("plot {}: {message}", path.display())]
    Plot { path: PathBuf, message: String },

    /// An attack asked for something it cannot do (bad parameters, inputs of
    /// the wrong shape, a missing start point or teacher); the message says what.
    #[error("{attack}: {message}")]
    Attack { attack: String, message: String },

    /// An evaluation that failed, with what failed inside it as its cause.
    #[error("evaluation {name}")]
    Evaluation {
        name: String,
        #[source]
        source: Box<Error>,
    },

    /// A value that breaks a function's contract (a shape, a count, an index,
    /// a state that does not belong to the model): a bug in the caller.
    #[error("{what}: {message}")]
    Invalid { what: &'static str, message: String },
}

impl Error {
    /// A JSON encoding error of `what`.
    pub fn json(what: &'static str) -> impl FnOnce(serde_json::Error) -> Error {
        move |source| Error::Json { what, source }
    }

    /// The library's error for a pipeline that did not run to completion: a
    /// stage's own [`Error`] comes back as [`Error::Stage`] with it as the cause.
    pub fn from_pipeline(e: ard_actors::PipelineError) -> Self {
        match e {
            ard_actors::PipelineError::Cancelled => Error::Cancelled,
            ard_actors::PipelineError::StageFailed {
                stage,
                message,
                cause,
            } => match cause.map(|c| c.downcast::<Error>()) {
                Some(Ok(source)) => Error::Stage { stage, source },
                other => Error::Pipeline(ard_actors::PipelineError::StageFailed {
                    stage,
                    message,
                    cause: other.and_then(Result::err),
                }),
            },
            other => Error::Pipeline(other),
        }
    }

    /// A problem with the config file or override `file` (see [`Error::Config`]).
    pub fn config(file: impl Into<String>, message: impl Into<String>) -> Self {
        Error::Config {
            file: file.into(),
            message: message.into(),
        }
    }

    /// A missing, truncated or corrupt dataset file (see [`Error::Dataset`]).
    pub fn dataset(path: impl Into<PathBuf>, message: impl Into<String>) -> Self {
        Error::Dataset {
            path: path.into(),
            message: message.into(),
        }
    }

    /// A broken contract of `what` (see [`Error::Invalid`]).
    pub fn invalid(what: &'static str, message: impl Into<String>) -> Self {
        Error::Invalid {
            what,
            message: message.into(),
        }
    }

    /// An attack's complaint (see [`Error::Attack`]).
    pub fn attack(attack: impl Into<String>, message: impl Into<String>) -> Self {
        Error::Attack {
            attack: attack.into(),
            message: message.into(),
        }
    }

    /// Wraps an I/O error with the path it concerned.
    pub fn io(path: impl Into<PathBuf>, source: std::io::Error) -> Self {
        Error::Io {
            path: path.into(),
            source,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use ard_actors::{PipelineError, StageError};

    fn failed(error: StageError) -> PipelineError {
        PipelineError::StageFailed {
            stage: "student".into(),
            message: error.to_string(),
            cause: error.into_source(),
        }
    }

    #[test]
    fn a_stage_s_own_error_comes_back_whole_with_its_chain() {
        let diverged = Error::Diverged {
            value: f64::NAN,
            step: 7,
            epoch: 1,
        };
        let e = Error::from_pipeline(failed(StageError::from(diverged)));
        let Error::Stage { stage, source } = &e else {
            panic!("expected Error::Stage, got {e:?}");
        };
        assert_eq!(stage, "student");
        assert!(matches!(**source, Error::Diverged { step: 7, .. }));
        let chain = anyhow::Error::from(e)
            .chain()
            .map(|c| c.to_string())
            .collect::<Vec<_>>();
        assert_eq!(chain[0], "pipeline stage `student` failed");
        assert!(chain[1].starts_with("loss is NaN at step 7"), "{chain:?}");
        // Another error type, a plain message, a cancellation: as before.
        let io = Error::from_pipeline(failed(StageError::from(std::io::Error::other("disk"))));
        assert!(matches!(
            io,
            Error::Pipeline(PipelineError::StageFailed { cause: Some(_), .. })
        ));
        let msg = Error::from_pipeline(failed(StageError::msg("boom")));
        assert_eq!(msg.to_string(), "pipeline: stage `student` failed: boom");
        assert!(matches!(
            Error::from_pipeline(PipelineError::Cancelled),
            Error::Cancelled
        ));
    }
}
