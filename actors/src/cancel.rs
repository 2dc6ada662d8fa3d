//! Cooperative cancellation shared by every stage of a pipeline.
//!
//! A [`CancelToken`] is a cheap, cloneable flag. Cancelling it is permanent and wakes
//! every thread of the runtime that is blocked on a queue (they `select` on the
//! token's signal channel, which disconnects on cancel), so a pipeline stops within
//! milliseconds even when all its stages are blocked. Code outside the runtime (a
//! signal handler, an HTTP control endpoint, a stage waiting on a side channel) can
//! poll [`CancelToken::is_cancelled`] or sleep with [`CancelToken::wait_timeout`].

use std::fmt;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex, PoisonError};
use std::time::Duration;

use crossbeam_channel::{Receiver, RecvTimeoutError, Sender};

/// A cloneable, permanent "stop now" flag; all clones share one state.
#[derive(Clone)]
pub struct CancelToken {
    inner: Arc<Inner>,
}

struct Inner {
    cancelled: AtomicBool,
    /// Never sent on; dropped on cancel so that `signal` disconnects.
    trigger: Mutex<Option<Sender<()>>>,
    signal: Receiver<()>,
}

impl CancelToken {
    /// A fresh token, not cancelled.
    pub fn new() -> Self {
        let (trigger, signal) = crossbeam_channel::bounded(1);
        Self {
            inner: Arc::new(Inner {
                cancelled: AtomicBool::new(false),
                trigger: Mutex::new(Some(trigger)),
                signal,
            }),
        }
    }

    /// Cancels the token and wakes everything blocked on it. Idempotent.
    pub fn cancel(&self) {
        self.inner.cancelled.store(true, Ordering::SeqCst);
        let trigger = self
            .inner
            .trigger
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .take();
        drop(trigger);
    }

    /// Whether [`cancel`](Self::cancel) was called on any clone.
    pub fn is_cancelled(&self) -> bool {
        self.inner.cancelled.load(Ordering::SeqCst)
    }

    /// Sleeps up to `timeout`, returning early when cancelled; returns whether the
    /// token is cancelled.
    pub fn wait_timeout(&self, timeout: Duration) -> bool {
        if self.is_cancelled() {
            return true;
        }
        match self.inner.signal.recv_timeout(timeout) {
            Err(RecvTimeoutError::Disconnected) => true,
            Ok(()) | Err(RecvTimeoutError::Timeout) => self.is_cancelled(),
        }
    }

    /// A channel that never carries a message and disconnects when the token is
    /// cancelled: add it to a `Select` to wake up on cancellation.
    pub(crate) fn signal(&self) -> &Receiver<()> {
        &self.inner.signal
    }
}

impl Default for CancelToken {
    fn default() -> Self {
        Self::new()
    }
}

impl fmt::Debug for CancelToken {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("CancelToken")
            .field("cancelled", &self.is_cancelled())
            .finish()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::time::Instant;

    #[test]
    fn clones_share_state() {
        let token = CancelToken::new();
        let clone = token.clone();
        assert!(!clone.is_cancelled());
        token.cancel();
        assert!(clone.is_cancelled());
        token.cancel();
        assert!(clone.is_cancelled());
    }

    #[test]
    fn wait_timeout_times_out_when_not_cancelled() {
        let token = CancelToken::new();
        let started = Instant::now();
        assert!(!token.wait_timeout(Duration::from_millis(30)));
        assert!(started.elapsed() >= Duration::from_millis(30));
    }

    #[test]
    fn cancel_wakes_a_waiting_thread() {
        let token = CancelToken::new();
        let waiter = {
            let token = token.clone();
            std::thread::spawn(move || {
                let started = Instant::now();
                let cancelled = token.wait_timeout(Duration::from_secs(10));
                (cancelled, started.elapsed())
            })
        };
        std::thread::sleep(Duration::from_millis(20));
        token.cancel();
        let (cancelled, waited) = waiter.join().expect("waiter thread panicked");
        assert!(cancelled);
        assert!(waited < Duration::from_secs(2), "waited {waited:?}");
    }
}
