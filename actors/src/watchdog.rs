//! Stall detection: each stage's [`BusyClock`] says since when it has been busy in
//! its current call, and the [`Watchdog`] thread fails the pipeline with
//! [`PipelineError::Stalled`] when one has been busy longer than the stall timeout.
//!
//! Waits on queues and side channels pause the clock, so only time actually spent
//! inside stage code counts. The stalled thread cannot be interrupted; the pipeline
//! is cancelled and that thread is detached rather than joined.

use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

use crossbeam_channel::{select, Sender};

use crate::error::PipelineError;
use crate::supervisor::Supervisor;

/// Since when a stage has been busy in its current call, if it is.
pub(crate) struct BusyClock {
    epoch: Instant,
    /// Nanoseconds since `epoch` plus one when busy started; 0 when not busy.
    since: AtomicU64,
}

impl BusyClock {
    pub(crate) fn new(epoch: Instant) -> Self {
        Self {
            epoch,
            since: AtomicU64::new(0),
        }
    }

    /// Marks the stage busy from now.
    pub(crate) fn start(&self) {
        let nanos = u64::try_from(self.epoch.elapsed().as_nanos()).unwrap_or(u64::MAX - 1);
        self.since.store(nanos.saturating_add(1), Ordering::SeqCst);
    }

    /// Marks the stage not busy; returns whether it was.
    pub(crate) fn stop(&self) -> bool {
        self.since.swap(0, Ordering::SeqCst) != 0
    }

    /// How long the stage has been busy, as of `now`.
    pub(crate) fn busy_for(&self, now: Instant) -> Option<Duration> {
        match self.since.load(Ordering::SeqCst) {
            0 => None,
            since => {
                let started = self.epoch + Duration::from_nanos(since - 1);
                Some(now.saturating_duration_since(started))
            }
        }
    }
}

/// A stage the watchdog watches.
pub(crate) struct Watched {
    pub index: usize,
    pub stage: String,
    pub clock: Arc<BusyClock>,
}

/// The watchdog thread; stops when dropped or stopped, or when the pipeline is
/// cancelled.
pub(crate) struct Watchdog {
    stop: Option<Sender<()>>,
    thread: Option<JoinHandle<()>>,
}

impl Watchdog {
    pub(crate) fn spawn(
        timeout: Duration,
        watched: Vec<Watched>,
        supervisor: Arc<Supervisor>,
    ) -> std::io::Result<Self> {
        let (stop, stopped) = crossbeam_channel::bounded::<()>(1);
        let poll = (timeout / 4).clamp(Duration::from_millis(1), Duration::from_millis(100));
        let thread = std::thread::Builder::new()
            .name("ard-watchdog".into())
            .spawn(move || {
                let cancel = supervisor.cancel_token().clone();
                loop {
                    select! {
                        recv(stopped) -> _ => return,
                        recv(cancel.signal()) -> _ => return,
                        default(poll) => {}
                    }
                    let now = Instant::now();
                    for stage in &watched {
                        if stage.clock.busy_for(now).is_some_and(|busy| busy > timeout) {
                            log::error!(
                                "stage `{}` busy in one call for more than {timeout:?}; stopping the pipeline",
                                stage.stage
                            );
                            supervisor.mark_stalled(stage.index);
                            supervisor.fail(PipelineError::Stalled {
                                stage: stage.stage.clone(),
                                timeout,
                            });
                            return;
                        }
                    }
                }
            })?;
        Ok(Self {
            stop: Some(stop),
            thread: Some(thread),
        })
    }

    /// Stops the thread and waits for it (it wakes within one poll interval).
    pub(crate) fn stop(mut self) {
        self.shutdown();
    }

    fn shutdown(&mut self) {
        drop(self.stop.take());
        if let Some(thread) = self.thread.take() {
            let _ = thread.join();
        }
    }
}

impl Drop for Watchdog {
    fn drop(&mut self) {
        self.shutdown();
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn clock_measures_busy_time_until_stopped() {
        let clock = BusyClock::new(Instant::now());
        assert_eq!(clock.busy_for(Instant::now()), None);
        clock.start();
        std::thread::sleep(Duration::from_millis(20));
        let busy = clock.busy_for(Instant::now()).expect("busy");
        assert!(busy >= Duration::from_millis(20), "{busy:?}");
        assert!(clock.stop());
        assert!(!clock.stop());
        assert_eq!(clock.busy_for(Instant::now()), None);
    }
}
