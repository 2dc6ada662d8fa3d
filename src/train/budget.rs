//! A training-time budget (`train.max_seconds`): training stops once the time
//! spent training reaches it, and the learning-rate schedule runs over the
//! budget's time instead of over steps, so that a run of any speed anneals
//! within its budget (`train.epochs` becomes an upper bound). Time spent
//! evaluating and validating while training waits for it is not counted; a
//! resumed run continues from the seconds its checkpoint recorded.

use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Instant;

/// The clock of one run's training time, shared by its stages.
#[derive(Debug)]
pub struct TimeBudget {
    limit_s: f64,
    start: Instant,
    /// Seconds spent before this process (a resumed run).
    before_s: f64,
    /// Nanoseconds during which training waited (evaluation, validation).
    paused_ns: AtomicU64,
}

impl TimeBudget {
    /// A budget of `limit_s` seconds, `before_s` of them spent already.
    pub fn new(limit_s: f64, before_s: f64) -> TimeBudget {
        TimeBudget {
            limit_s,
            start: Instant::now(),
            before_s,
            paused_ns: AtomicU64::new(0),
        }
    }

    /// Training seconds spent so far.
    pub fn spent_s(&self) -> f64 {
        let paused = self.paused_ns.load(Ordering::Relaxed) as f64 * 1e-9;
        (self.before_s + self.start.elapsed().as_secs_f64() - paused).max(0.0)
    }

    /// The fraction of the budget spent, in [0, 1]: the schedule's position.
    pub fn progress(&self) -> f64 {
        (self.spent_s() / self.limit_s).clamp(0.0, 1.0)
    }

    /// Whether the budget is spent.
    pub fn exhausted(&self) -> bool {
        self.spent_s() >= self.limit_s
    }

    /// Runs `work` (an evaluation training waits for) off the clock.
    pub fn paused<T>(&self, work: impl FnOnce() -> T) -> T {
        let started = Instant::now();
        let out = work();
        self.paused_ns
            .fetch_add(started.elapsed().as_nanos() as u64, Ordering::Relaxed);
        out
    }
}

/// Runs `work` off the clock of `budget` when there is one.
pub fn off_the_clock<T>(budget: Option<&TimeBudget>, work: impl FnOnce() -> T) -> T {
    match budget {
        Some(b) => b.paused(work),
        None => work(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::time::Duration;

    #[test]
    fn paused_time_is_not_spent_and_resumed_time_is() {
        let b = TimeBudget::new(10.0, 4.0);
        assert!(b.spent_s() >= 4.0 && b.spent_s() < 4.5);
        b.paused(|| std::thread::sleep(Duration::from_millis(300)));
        assert!(b.spent_s() < 4.2, "{}", b.spent_s());
        assert!((b.progress() - 0.4).abs() < 0.03, "{}", b.progress());
        assert!(!b.exhausted());
        assert!(TimeBudget::new(1.0, 1.0).exhausted());
        assert_eq!(TimeBudget::new(1.0, 5.0).progress(), 1.0);
    }
}
