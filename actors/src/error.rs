//! Error types: [`StageError`], what a stage returns, and [`PipelineError`], what
//! building or joining a pipeline returns.
//!
//! `StageError` converts from any `std::error::Error + Send + Sync`, so stage code
//! can use `?` on its own typed errors (for example a `TchError`). Like
//! `anyhow::Error`, it deliberately does not implement `std::error::Error` itself
//! (that would conflict with the blanket conversion); the runtime turns it into
//! text, with the whole cause chain, inside [`PipelineError::StageFailed`].

use std::error::Error as StdError;
use std::fmt;
use std::time::Duration;

/// Why a stage stopped early.
pub struct StageError {
    kind: StageErrorKind,
}

enum StageErrorKind {
    Cancelled,
    Message(String),
    Source(Box<dyn StdError + Send + Sync + 'static>),
}

impl StageError {
    /// The pipeline was cancelled (returned by [`Emitter::send`](crate::Emitter::send)
    /// and the input side once the [`CancelToken`](crate::CancelToken) fires). Not
    /// reported as the cause of a failure.
    pub fn cancelled() -> Self {
        Self {
            kind: StageErrorKind::Cancelled,
        }
    }

    /// A failure described by a message.
    pub fn msg(message: impl fmt::Display) -> Self {
        Self {
            kind: StageErrorKind::Message(message.to_string()),
        }
    }

    /// The typed error this was converted from, if any (not for [`msg`](Self::msg)
    /// or the cancellation marker): callers downcast it to their own error type.
    pub fn into_source(self) -> Option<Box<dyn StdError + Send + Sync + 'static>> {
        match self.kind {
            StageErrorKind::Source(error) => Some(error),
            StageErrorKind::Cancelled | StageErrorKind::Message(_) => None,
        }
    }

    /// Whether this is the cancellation marker rather than a failure.
    pub fn is_cancelled(&self) -> bool {
        matches!(self.kind, StageErrorKind::Cancelled)
    }
}

impl<E: StdError + Send + Sync + 'static> From<E> for StageError {
    fn from(error: E) -> Self {
        Self {
            kind: StageErrorKind::Source(Box::new(error)),
        }
    }
}

impl fmt::Display for StageError {
    /// The message, followed by each cause in the source chain (`a: b: c`).
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match &self.kind {
            StageErrorKind::Cancelled => f.write_str("cancelled"),
            StageErrorKind::Message(message) => f.write_str(message),
            StageErrorKind::Source(error) => {
                write!(f, "{error}")?;
                let mut cause = error.source();
                while let Some(inner) = cause {
                    write!(f, ": {inner}")?;
                    cause = inner.source();
                }
                Ok(())
            }
        }
    }
}

impl fmt::Debug for StageError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "StageError({self})")
    }
}

/// Why a pipeline could not be built, or why it did not run to completion.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum PipelineError {
    /// A stage's `handle`, `produce` or `finish` returned an error or panicked. The
    /// first failure wins; stages stopped by the resulting cancellation are not
    /// reported. `message` holds the error with its whole cause chain; `cause` is
    /// the typed error the stage returned (none for a panic or a plain message),
    /// for callers that want their own error back (`downcast`).
    #[error("stage `{stage}` failed: {message}")]
    StageFailed {
        stage: String,
        message: String,
        cause: Option<Box<dyn StdError + Send + Sync + 'static>>,
    },

    /// The watchdog saw a stage busy in one call for longer than the stall timeout.
    /// Its thread was detached, not joined.
    #[error("stage `{stage}` stalled: busy in one call for more than {timeout:?}")]
    Stalled { stage: String, timeout: Duration },

    /// The pipeline was cancelled through its [`CancelToken`](crate::CancelToken).
    #[error("pipeline cancelled")]
    Cancelled,

    /// An output queue capacity of 0 (queues must hold at least one message).
    #[error("stage `{stage}`: output queue capacity must be at least 1, got 0")]
    InvalidCapacity { stage: String },

    /// Two stages with one name (names label metrics and threads, so must be unique).
    #[error("duplicate stage name `{stage}`")]
    DuplicateStage { stage: String },

    /// An empty stage name, or one containing a NUL byte.
    #[error("invalid stage name {stage:?}: must be non-empty and contain no NUL byte")]
    InvalidStageName { stage: String },

    /// `run()` on a builder to which no source was added.
    #[error("the pipeline has no stages")]
    Empty,

    /// Registering the runtime's metrics failed (for example, a name collision in
    /// the registry or an invalid constant label).
    #[error("failed to register pipeline metrics")]
    Metrics(#[from] prometheus::Error),

    /// The OS refused to start a thread.
    #[error("failed to spawn the thread of `{stage}`")]
    Spawn {
        stage: String,
        #[source]
        source: std::io::Error,
    },
}

#[cfg(test)]
mod tests {
    use super::*;

    #[derive(Debug, thiserror::Error)]
    #[error("outer")]
    struct Outer(#[source] std::io::Error);

    #[test]
    fn display_includes_the_cause_chain() {
        let error: StageError = Outer(std::io::Error::other("inner")).into();
        assert_eq!(error.to_string(), "outer: inner");
        assert!(!error.is_cancelled());
        let source = error.into_source().expect("a typed error keeps its source");
        assert!(source.downcast_ref::<Outer>().is_some());
        assert!(StageError::msg("boom").into_source().is_none());
    }

    #[test]
    fn question_mark_converts_typed_errors() {
        fn parse(text: &str) -> Result<u32, StageError> {
            Ok(text.parse::<u32>()?)
        }
        assert_eq!(parse("7").ok(), Some(7));
        assert!(parse("x").is_err());
    }

    #[test]
    fn cancelled_is_recognised() {
        assert!(StageError::cancelled().is_cancelled());
        assert!(!StageError::msg("boom").is_cancelled());
        assert_eq!(StageError::msg("boom").to_string(), "boom");
    }
}
