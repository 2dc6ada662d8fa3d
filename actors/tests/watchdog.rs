//! The watchdog fails a pipeline whose stage is stuck in one call, and `join`
//! returns without waiting for the stuck thread. Waits on queues and side channels
//! do not count as being stuck.

mod common;

use std::time::{Duration, Instant};

use ard_actors::{Emitter, PipelineBuilder, PipelineError, PipelineOptions, Stage, StageError};
use common::{registry, Batch, CollectSink, CountSource, Fault, MapStage};

fn options(stall_timeout: Duration) -> PipelineOptions {
    PipelineOptions {
        stall_timeout: Some(stall_timeout),
        ..PipelineOptions::default()
    }
}

#[test]
fn a_stuck_stage_is_reported_and_detached() {
    let stuck = MapStage::with_fault("stuck", Fault::SleepAt(3, Duration::from_secs(30)));
    let started = Instant::now();
    let handle = PipelineBuilder::new(&registry(), options(Duration::from_millis(200)))
        .and_then(|builder| builder.source(CountSource::new("data", u64::MAX), 2))
        .and_then(|chain| chain.stage(stuck, 2))
        .and_then(|chain| chain.sink(CollectSink::new("sink")))
        .and_then(|builder| builder.run())
        .expect("pipeline starts");
    let result = handle.join();
    let took = started.elapsed();
    match result {
        Err(PipelineError::Stalled { stage, timeout }) => {
            assert_eq!(stage, "stuck");
            assert_eq!(timeout, Duration::from_millis(200));
        }
        other => panic!("expected Stalled, got {other:?}"),
    }
    assert!(took >= Duration::from_millis(200), "fired early: {took:?}");
    assert!(
        took < Duration::from_secs(2),
        "join waited for the stuck thread: {took:?}"
    );
}

/// Waits `wait` per message in `idle_while` (a side-channel wait), not busy.
struct Waiter {
    wait: Duration,
}

impl Stage for Waiter {
    type In = Batch;
    type Out = ();

    fn name(&self) -> &str {
        "waiter"
    }

    fn handle(&mut self, _msg: Batch, out: &mut Emitter<()>) -> Result<(), StageError> {
        let wait = self.wait;
        out.idle_while(|cancel| cancel.wait_timeout(wait));
        Ok(())
    }
}

#[test]
fn long_waits_on_queues_and_side_channels_are_not_stalls() {
    let waiter = Waiter {
        wait: Duration::from_millis(250),
    };
    let handle = PipelineBuilder::new(&registry(), options(Duration::from_millis(100)))
        .and_then(|builder| builder.source(CountSource::new("data", 4), 1))
        // Blocks inside `handle`, in `send`, for longer than the stall timeout.
        .and_then(|chain| chain.stage(MapStage::new("relay"), 1))
        .and_then(|chain| chain.sink(waiter))
        .and_then(|builder| builder.run())
        .expect("pipeline starts");
    let summary = handle.join().expect("waiting is not stalling");
    let waiter = summary.stage("waiter").expect("waiter stats");
    let relay = summary.stage("relay").expect("relay stats");
    assert!(
        waiter.idle_s >= 0.9,
        "side-channel wait not idle: {waiter:?}"
    );
    assert!(
        waiter.busy_s < 0.1,
        "side-channel wait counted as busy: {waiter:?}"
    );
    // The relay sat blocked in `send` for longer than the stall timeout.
    assert!(relay.blocked_s >= 0.3, "{relay:?}");
    assert!(
        relay.busy_s < 0.1,
        "blocked time counted as busy: {relay:?}"
    );
}
