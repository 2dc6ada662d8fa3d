//! [`Emitter`]: a stage's handle on its output queue, with backpressure.
//!
//! [`Emitter::send`] blocks while the bounded output queue is full (never drops),
//! and wakes up with [`StageError::cancelled`] as soon as the pipeline is cancelled.
//! Time spent blocked is recorded as the stage's blocked time and does not count
//! towards the watchdog's stall timeout. [`Emitter::idle_while`] does the same for
//! waits on side channels (for example, the attack stage waiting for the student's
//! weights), recorded as idle time.

use std::sync::Arc;
use std::time::{Duration, Instant};

use crossbeam_channel::{Select, Sender, TrySendError};
use prometheus::IntGauge;

use crate::cancel::CancelToken;
use crate::error::StageError;
use crate::lane::ComputeLane;
use crate::watchdog::BusyClock;

/// Sends a stage's output messages downstream. Given to [`Stage::handle`] and
/// [`Stage::finish`](crate::Stage::finish).
///
/// [`Stage::handle`]: crate::Stage::handle
pub struct Emitter<T> {
    /// `None` for a sink, whose output (`()`) goes nowhere.
    output: Option<Output<T>>,
    cancel: CancelToken,
    clock: Arc<BusyClock>,
    waits: Waits,
}

struct Output<T> {
    tx: Sender<T>,
    queue: String,
    depth: IntGauge,
}

/// The outcome of [`Emitter::try_send`].
#[derive(Debug)]
pub enum TrySend<T> {
    /// The message is in the queue.
    Sent,
    /// The queue is full; the message is handed back to the caller.
    Full(T),
}

/// Time an emitter spent waiting since it was last asked.
#[derive(Clone, Copy, Debug, Default)]
pub(crate) struct Waits {
    /// Blocked on a full output queue.
    pub blocked: Duration,
    /// In [`Emitter::idle_while`].
    pub idle: Duration,
}

impl<T: Send + 'static> Emitter<T> {
    pub(crate) fn new(
        tx: Sender<T>,
        queue: String,
        depth: IntGauge,
        cancel: CancelToken,
        clock: Arc<BusyClock>,
    ) -> Self {
        Self {
            output: Some(Output { tx, queue, depth }),
            cancel,
            clock,
            waits: Waits::default(),
        }
    }

    /// An emitter with no queue behind it (a sink's).
    pub(crate) fn discarding(cancel: CancelToken, clock: Arc<BusyClock>) -> Self {
        Self {
            output: None,
            cancel,
            clock,
            waits: Waits::default(),
        }
    }

    /// Sends `msg` downstream, blocking while the queue is full.
    ///
    /// Errors with [`StageError::cancelled`] if the pipeline is cancelled before the
    /// message is queued, or with a failure if the downstream stage is gone. A
    /// sink's emitter (`T = ()`) accepts and discards.
    pub fn send(&mut self, msg: T) -> Result<(), StageError> {
        // Only a queue (so an output) can be full.
        let (TrySend::Full(msg), Some(output)) = (self.try_send(msg)?, self.output.as_ref()) else {
            return Ok(());
        };
        let was_busy = self.clock.stop();
        let started = Instant::now();
        let sent = send_or_cancel(&output.tx, msg, &self.cancel);
        self.waits.blocked += started.elapsed();
        if was_busy {
            self.clock.start();
        }
        match sent {
            SendOutcome::Sent => {
                output.depth.set(queue_len(&output.tx));
                Ok(())
            }
            SendOutcome::Cancelled => Err(StageError::cancelled()),
            SendOutcome::Disconnected => Err(closed(&output.queue)),
        }
    }

    /// Sends `msg` if the queue has room, otherwise hands it back in
    /// [`TrySend::Full`]: for optional outputs (for example, weight snapshots for
    /// an evaluator that must not slow training down). Never blocks.
    pub fn try_send(&mut self, msg: T) -> Result<TrySend<T>, StageError> {
        if self.cancel.is_cancelled() {
            return Err(StageError::cancelled());
        }
        let Some(output) = self.output.as_ref() else {
            return Ok(TrySend::Sent);
        };
        match output.tx.try_send(msg) {
            Ok(()) => {
                output.depth.set(queue_len(&output.tx));
                Ok(TrySend::Sent)
            }
            Err(TrySendError::Full(msg)) => Ok(TrySend::Full(msg)),
            Err(TrySendError::Disconnected(_)) => Err(closed(&output.queue)),
        }
    }

    /// The pipeline's cancellation token, for waits on side channels.
    pub fn cancel_token(&self) -> &CancelToken {
        &self.cancel
    }

    /// Runs `wait`, recording its duration as this stage's idle time rather than
    /// busy time, and pausing the stall watchdog. Use it for blocking waits on
    /// inputs other than the stage's queue, and honour the token passed in:
    ///
    /// ```ignore
    /// let weights = out.idle_while(|cancel| board.wait_for_version(step, cancel))?;
    /// ```
    pub fn idle_while<R>(&mut self, wait: impl FnOnce(&CancelToken) -> R) -> R {
        let was_busy = self.clock.stop();
        let started = Instant::now();
        let result = wait(&self.cancel);
        self.waits.idle += started.elapsed();
        if was_busy {
            self.clock.start();
        }
        result
    }

    /// Runs `job` on a shared [`ComputeLane`] and returns its result. The time
    /// the job waits for the lane (other stages' jobs ahead of it) is recorded
    /// as idle time, and the stall watchdog is paused meanwhile; its run is
    /// busy time. A panic in the job is re-raised here.
    pub fn on_lane<R: Send>(
        &mut self,
        lane: &ComputeLane,
        job: impl FnOnce() -> R + Send,
    ) -> Result<R, StageError> {
        let was_busy = self.clock.stop();
        let clock = self.clock.clone();
        let outcome = lane.run(move || {
            clock.start();
            job()
        });
        match outcome {
            Ok((result, queued)) => {
                self.waits.idle += queued;
                if !was_busy {
                    self.clock.stop();
                }
                Ok(result)
            }
            Err(stopped) => {
                if was_busy {
                    self.clock.start();
                }
                Err(StageError::msg(stopped.to_string()))
            }
        }
    }

    /// The waits recorded since the last call, resetting them.
    pub(crate) fn take_waits(&mut self) -> Waits {
        std::mem::take(&mut self.waits)
    }
}

enum SendOutcome {
    Sent,
    Cancelled,
    Disconnected,
}

/// Blocks until `msg` is queued or the token is cancelled, whichever comes first.
fn send_or_cancel<T>(tx: &Sender<T>, msg: T, cancel: &CancelToken) -> SendOutcome {
    let mut select = Select::new();
    let send_index = select.send(tx);
    select.recv(cancel.signal());
    let operation = select.select();
    if operation.index() == send_index {
        match operation.send(tx, msg) {
            Ok(()) => SendOutcome::Sent,
            Err(_) => SendOutcome::Disconnected,
        }
    } else {
        // The signal channel only ever disconnects: this is the cancellation.
        let _ = operation.recv(cancel.signal());
        SendOutcome::Cancelled
    }
}

fn queue_len<T>(tx: &Sender<T>) -> i64 {
    i64::try_from(tx.len()).unwrap_or(i64::MAX)
}

fn closed(queue: &str) -> StageError {
    StageError::msg(format!("output queue `{queue}` closed by its consumer"))
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::time::Instant;

    fn emitter(capacity: usize) -> (Emitter<u32>, crossbeam_channel::Receiver<u32>, CancelToken) {
        let (tx, rx) = crossbeam_channel::bounded(capacity);
        let cancel = CancelToken::new();
        let clock = Arc::new(BusyClock::new(Instant::now()));
        let depth = IntGauge::new("test_depth", "test").expect("valid gauge");
        (
            Emitter::new(tx, "a_to_b".into(), depth, cancel.clone(), clock),
            rx,
            cancel,
        )
    }

    #[test]
    fn blocked_send_is_woken_by_cancel_and_timed() {
        let (mut out, _rx, cancel) = emitter(1);
        out.send(1).expect("room for one");
        let canceller = std::thread::spawn(move || {
            std::thread::sleep(Duration::from_millis(50));
            cancel.cancel();
        });
        let error = out.send(2).expect_err("queue full until cancelled");
        assert!(error.is_cancelled());
        assert!(out.take_waits().blocked >= Duration::from_millis(40));
        canceller.join().expect("canceller panicked");
    }

    #[test]
    fn try_send_hands_back_when_full() {
        let (mut out, rx, _cancel) = emitter(1);
        assert!(matches!(out.try_send(1), Ok(TrySend::Sent)));
        assert!(matches!(out.try_send(2), Ok(TrySend::Full(2))));
        assert_eq!(rx.try_recv().ok(), Some(1));
    }

    #[test]
    fn send_to_a_dropped_consumer_fails() {
        let (mut out, rx, _cancel) = emitter(1);
        drop(rx);
        let error = out.send(1).expect_err("consumer gone");
        assert!(!error.is_cancelled());
        assert!(error.to_string().contains("a_to_b"));
    }
}
