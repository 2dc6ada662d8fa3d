//! The shared fate of a pipeline's threads: the cancellation token, the first
//! failure, and which stages the watchdog gave up on.
//!
//! A failure is recorded only if nothing stopped the pipeline before it, and the
//! pipeline is cancelled right after, so errors that stages see *because* of the
//! cancellation are never reported as its cause. Stage threads record their
//! failure before dropping their queues, so a downstream stage never mistakes a
//! failed upstream for a clean end of stream.

use std::any::Any;
use std::collections::HashSet;
use std::sync::{Mutex, PoisonError};

use crate::cancel::CancelToken;
use crate::error::{PipelineError, StageError};

pub(crate) struct Supervisor {
    cancel: CancelToken,
    failure: Mutex<Option<PipelineError>>,
    stalled: Mutex<HashSet<usize>>,
}

impl Supervisor {
    #[cfg(test)]
    pub(crate) fn new() -> Self {
        Self::with_token(CancelToken::new())
    }

    /// A supervisor that cancels (and is cancelled) through `cancel`.
    pub(crate) fn with_token(cancel: CancelToken) -> Self {
        Self {
            cancel,
            failure: Mutex::new(None),
            stalled: Mutex::new(HashSet::new()),
        }
    }

    pub(crate) fn cancel_token(&self) -> &CancelToken {
        &self.cancel
    }

    /// Records `error` as the cause unless the pipeline was already stopped, then
    /// cancels the pipeline.
    pub(crate) fn fail(&self, error: PipelineError) {
        {
            let mut failure = self.failure.lock().unwrap_or_else(PoisonError::into_inner);
            if failure.is_none() && !self.cancel.is_cancelled() {
                log::error!("{error}");
                *failure = Some(error);
            } else {
                log::debug!("after the pipeline stopped: {error}");
            }
        }
        self.cancel.cancel();
    }

    /// Records how the stage `stage` ended: `outcome` is its result, or the panic
    /// payload if it panicked.
    pub(crate) fn report(&self, stage: &str, outcome: std::thread::Result<Result<(), StageError>>) {
        match outcome {
            Ok(Ok(())) => log::debug!("stage `{stage}` finished"),
            Ok(Err(error)) if error.is_cancelled() => {
                log::debug!("stage `{stage}` stopped: cancelled");
                self.cancel.cancel();
            }
            Ok(Err(error)) => self.fail(PipelineError::StageFailed {
                stage: stage.to_owned(),
                message: error.to_string(),
                cause: error.into_source(),
            }),
            Err(payload) => self.fail(PipelineError::StageFailed {
                stage: stage.to_owned(),
                message: format!("panicked: {}", panic_message(payload.as_ref())),
                cause: None,
            }),
        }
    }

    pub(crate) fn mark_stalled(&self, index: usize) {
        self.stalled
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .insert(index);
    }

    pub(crate) fn is_stalled(&self, index: usize) -> bool {
        self.stalled
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .contains(&index)
    }

    /// The recorded failure, if any.
    pub(crate) fn take_failure(&self) -> Option<PipelineError> {
        self.failure
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .take()
    }
}

/// The text of a panic payload (`panic!` with a literal or a formatted message).
pub(crate) fn panic_message(payload: &(dyn Any + Send)) -> String {
    if let Some(text) = payload.downcast_ref::<&str>() {
        (*text).to_owned()
    } else if let Some(text) = payload.downcast_ref::<String>() {
        text.clone()
    } else {
        "non-text panic payload".to_owned()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn failed(stage: &str) -> PipelineError {
        PipelineError::StageFailed {
            stage: stage.to_owned(),
            message: "boom".to_owned(),
            cause: None,
        }
    }

    #[test]
    fn first_failure_wins_and_cancels() {
        let supervisor = Supervisor::new();
        supervisor.fail(failed("a"));
        supervisor.fail(failed("b"));
        assert!(supervisor.cancel_token().is_cancelled());
        assert!(
            matches!(supervisor.take_failure(), Some(PipelineError::StageFailed { stage, .. }) if stage == "a")
        );
    }

    #[test]
    fn errors_after_a_user_cancel_are_not_failures() {
        let supervisor = Supervisor::new();
        supervisor.cancel_token().cancel();
        supervisor.report("a", Ok(Err(StageError::msg("consequence"))));
        assert!(supervisor.take_failure().is_none());
    }

    #[test]
    fn panic_payload_text_is_kept() {
        let payload = std::panic::catch_unwind(|| panic!("bad {}", 42)).expect_err("panics");
        assert_eq!(panic_message(payload.as_ref()), "bad 42");
        let supervisor = Supervisor::new();
        supervisor.report("model", Err(payload));
        match supervisor.take_failure() {
            Some(PipelineError::StageFailed { stage, message, .. }) => {
                assert_eq!(stage, "model");
                assert!(message.contains("bad 42"), "{message}");
            }
            other => panic!("unexpected {other:?}"),
        }
    }
}
