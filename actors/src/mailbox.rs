//! [`Mailbox`]: a versioned "latest value" side channel between stages.
//!
//! One stage publishes `(version, value)` pairs with strictly increasing versions
//! (the student publishes its weights after each step); others read the latest,
//! either right away ([`Mailbox::try_latest`]) or blocking until a minimum version
//! is there ([`Mailbox::wait_for_version`]), which the pipeline's
//! [`CancelToken`] interrupts. Only the latest value is kept: older ones are
//! replaced, which is the point (a reader wants the newest weights, not a backlog).
//!
//! Built on `Mutex` + `Condvar`; `T` need only be `Send` (tensors are not `Sync`).
//! Readers either clone the value (`T: Clone`) or read it in place under the lock
//! through a closure (`*_with`), for example to copy weights into their own replica.

use std::fmt;
use std::sync::{Arc, Condvar, Mutex, MutexGuard};
use std::time::Duration;

use crate::cancel::CancelToken;

/// How often a waiting reader checks its cancellation token.
const CANCEL_POLL: Duration = Duration::from_millis(5);

/// A value and the version it was published under.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Versioned<T> {
    pub version: u64,
    pub value: T,
}

/// Why a mailbox operation did not succeed.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
pub enum MailboxError {
    /// The token was cancelled while waiting.
    #[error("cancelled while waiting for version {wanted}")]
    Cancelled { wanted: u64 },
    /// The mailbox was closed and will never reach the wanted version, or a publish
    /// came after close.
    #[error("mailbox closed (latest version {latest:?})")]
    Closed { latest: Option<u64> },
    /// Versions must strictly increase.
    #[error("version {version} is not newer than the published version {latest}")]
    NotNewer { version: u64, latest: u64 },
    /// A thread panicked while holding the mailbox; its value may be torn.
    #[error("mailbox poisoned: a thread panicked while holding it")]
    Poisoned,
}

/// A versioned latest-value mailbox. Clones are handles on the same mailbox.
pub struct Mailbox<T> {
    shared: Arc<Shared<T>>,
}

struct Shared<T> {
    state: Mutex<State<T>>,
    changed: Condvar,
}

struct State<T> {
    latest: Option<Versioned<T>>,
    closed: bool,
}

impl<T: Send> Mailbox<T> {
    /// An empty, open mailbox.
    pub fn new() -> Self {
        Self {
            shared: Arc::new(Shared {
                state: Mutex::new(State {
                    latest: None,
                    closed: false,
                }),
                changed: Condvar::new(),
            }),
        }
    }

    /// Replaces the value with `value` at `version`, waking waiting readers.
    /// `version` must be greater than the current one.
    pub fn publish(&self, version: u64, value: T) -> Result<(), MailboxError> {
        let mut state = self.lock()?;
        if state.closed {
            return Err(MailboxError::Closed {
                latest: state.version(),
            });
        }
        if let Some(latest) = state.version().filter(|&latest| version <= latest) {
            return Err(MailboxError::NotNewer { version, latest });
        }
        state.latest = Some(Versioned { version, value });
        drop(state);
        self.shared.changed.notify_all();
        Ok(())
    }

    /// Closes the mailbox: no more publishes; readers waiting for a version that
    /// was not reached get [`MailboxError::Closed`]. The last value stays readable.
    pub fn close(&self) {
        let mut state = self
            .shared
            .state
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner);
        state.closed = true;
        drop(state);
        self.shared.changed.notify_all();
    }

    /// Reads the latest value in place, if any: `read(version, &value)`.
    pub fn read_latest_with<R>(
        &self,
        read: impl FnOnce(u64, &T) -> R,
    ) -> Result<Option<R>, MailboxError> {
        let state = self.lock()?;
        Ok(state
            .latest
            .as_ref()
            .map(|latest| read(latest.version, &latest.value)))
    }

    /// Blocks until a version `>= min_version` is published, then reads it in place:
    /// `read(version, &value)`. Returns early with [`MailboxError::Cancelled`] when
    /// `cancel` fires (within a few milliseconds) and with [`MailboxError::Closed`]
    /// when the mailbox is closed first.
    pub fn wait_for_version_with<R>(
        &self,
        min_version: u64,
        cancel: &CancelToken,
        read: impl FnOnce(u64, &T) -> R,
    ) -> Result<R, MailboxError> {
        let mut state = self.lock()?;
        loop {
            if let Some(latest) = state.latest.as_ref().filter(|l| l.version >= min_version) {
                return Ok(read(latest.version, &latest.value));
            }
            if state.closed {
                return Err(MailboxError::Closed {
                    latest: state.version(),
                });
            }
            if cancel.is_cancelled() {
                return Err(MailboxError::Cancelled {
                    wanted: min_version,
                });
            }
            state = self
                .shared
                .changed
                .wait_timeout(state, CANCEL_POLL)
                .map_err(|_| MailboxError::Poisoned)?
                .0;
        }
    }

    fn lock(&self) -> Result<MutexGuard<'_, State<T>>, MailboxError> {
        self.shared.state.lock().map_err(|_| MailboxError::Poisoned)
    }
}

impl<T: Send + Clone> Mailbox<T> {
    /// A clone of the latest value, if any.
    pub fn try_latest(&self) -> Result<Option<Versioned<T>>, MailboxError> {
        Ok(self.lock()?.latest.clone())
    }

    /// Blocks until a version `>= min_version` is published and returns a clone;
    /// see [`wait_for_version_with`](Self::wait_for_version_with).
    pub fn wait_for_version(
        &self,
        min_version: u64,
        cancel: &CancelToken,
    ) -> Result<Versioned<T>, MailboxError> {
        self.wait_for_version_with(min_version, cancel, |version, value| Versioned {
            version,
            value: value.clone(),
        })
    }
}

impl<T> State<T> {
    fn version(&self) -> Option<u64> {
        self.latest.as_ref().map(|latest| latest.version)
    }
}

impl<T: Send> Default for Mailbox<T> {
    fn default() -> Self {
        Self::new()
    }
}

impl<T> Clone for Mailbox<T> {
    fn clone(&self) -> Self {
        Self {
            shared: Arc::clone(&self.shared),
        }
    }
}

impl<T> fmt::Debug for Mailbox<T> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let mut debug = f.debug_struct("Mailbox");
        match self.shared.state.try_lock() {
            Ok(state) => debug
                .field("version", &state.version())
                .field("closed", &state.closed),
            Err(_) => debug.field("state", &"<locked>"),
        };
        debug.finish()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::cell::Cell;
    use std::thread;
    use std::time::Instant;

    /// Send but not Sync, like a tensor.
    struct NotSync(Cell<u32>);

    #[test]
    fn publish_and_read_latest() {
        let mailbox = Mailbox::new();
        assert_eq!(mailbox.try_latest(), Ok(None));
        mailbox.publish(1, "a").expect("publish 1");
        mailbox.publish(3, "b").expect("publish 3");
        assert_eq!(
            mailbox.try_latest(),
            Ok(Some(Versioned {
                version: 3,
                value: "b"
            }))
        );
        assert_eq!(
            mailbox.publish(3, "c"),
            Err(MailboxError::NotNewer {
                version: 3,
                latest: 3
            })
        );
    }

    #[test]
    fn waiter_gets_the_version_it_waited_for() {
        let mailbox = Mailbox::<u64>::new();
        let cancel = CancelToken::new();
        mailbox.publish(1, 10).expect("publish");
        let waiter = {
            let (mailbox, cancel) = (mailbox.clone(), cancel.clone());
            thread::spawn(move || mailbox.wait_for_version(2, &cancel))
        };
        thread::sleep(Duration::from_millis(30));
        assert!(
            !waiter.is_finished(),
            "version 1 must not satisfy a wait for 2"
        );
        mailbox.publish(2, 20).expect("publish");
        let got = waiter.join().expect("waiter panicked");
        assert_eq!(
            got,
            Ok(Versioned {
                version: 2,
                value: 20
            })
        );
        // Already there: returns at once, and a newer version satisfies an older wait.
        mailbox.publish(5, 50).expect("publish");
        assert_eq!(
            mailbox.wait_for_version(2, &cancel).map(|v| v.version),
            Ok(5)
        );
    }

    #[test]
    fn cancellation_wakes_waiters() {
        let mailbox = Mailbox::<u64>::new();
        let cancel = CancelToken::new();
        let waiters: Vec<_> = (0..3)
            .map(|_| {
                let (mailbox, cancel) = (mailbox.clone(), cancel.clone());
                thread::spawn(move || {
                    let started = Instant::now();
                    (mailbox.wait_for_version(1, &cancel), started.elapsed())
                })
            })
            .collect();
        thread::sleep(Duration::from_millis(30));
        cancel.cancel();
        for waiter in waiters {
            let (result, waited) = waiter.join().expect("waiter panicked");
            assert_eq!(result, Err(MailboxError::Cancelled { wanted: 1 }));
            assert!(waited < Duration::from_secs(1), "{waited:?}");
        }
    }

    #[test]
    fn close_wakes_waiters_and_rejects_publishes() {
        let mailbox = Mailbox::<u64>::new();
        let cancel = CancelToken::new();
        mailbox.publish(1, 1).expect("publish");
        let waiter = {
            let (mailbox, cancel) = (mailbox.clone(), cancel.clone());
            thread::spawn(move || mailbox.wait_for_version(2, &cancel))
        };
        thread::sleep(Duration::from_millis(20));
        mailbox.close();
        assert_eq!(
            waiter.join().expect("waiter panicked"),
            Err(MailboxError::Closed { latest: Some(1) })
        );
        assert_eq!(
            mailbox.publish(2, 2),
            Err(MailboxError::Closed { latest: Some(1) })
        );
        assert_eq!(mailbox.wait_for_version(1, &cancel).map(|v| v.value), Ok(1));
    }

    #[test]
    fn works_with_send_but_not_sync_values() {
        let mailbox = Mailbox::new();
        let cancel = CancelToken::new();
        let publisher = {
            let mailbox = mailbox.clone();
            thread::spawn(move || mailbox.publish(7, NotSync(Cell::new(42))))
        };
        let read =
            mailbox.wait_for_version_with(7, &cancel, |version, value| (version, value.0.get()));
        assert_eq!(read, Ok((7, 42)));
        assert_eq!(publisher.join().expect("publisher panicked"), Ok(()));
    }

    #[test]
    fn a_panic_while_reading_poisons_the_mailbox() {
        let mailbox = Mailbox::new();
        mailbox.publish(1, 1u32).expect("publish");
        let reader = mailbox.clone();
        let panicked = thread::spawn(move || {
            let _ = reader.read_latest_with(|_, _| panic!("reader bug"));
        })
        .join();
        assert!(panicked.is_err());
        assert_eq!(mailbox.try_latest(), Err(MailboxError::Poisoned));
    }
}
