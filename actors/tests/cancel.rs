//! Cancellation stops a pipeline promptly, without flushing, and `join` reports it
//! as `Cancelled`, distinct from a failure.

mod common;

use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use ard_actors::{PipelineBuilder, PipelineError, PipelineOptions};
use common::{registry, CollectSink, CountSource, MapStage};

#[test]
fn cancel_from_another_thread_returns_cancelled_promptly() {
    let builder = PipelineBuilder::new(&registry(), PipelineOptions::default()).expect("builder");
    // Obtained before the run, as a signal handler would.
    let token = builder.cancel_token();
    let mut slow = MapStage::new("slow");
    slow.delay = Duration::from_millis(5);
    let sink = CollectSink::new("sink");
    let finished = sink.finished.clone();
    let handle = builder
        .source(CountSource::new("data", u64::MAX), 2)
        .and_then(|chain| chain.stage(slow, 2))
        .and_then(|chain| chain.sink(sink))
        .and_then(|builder| builder.run())
        .expect("pipeline starts");
    let canceller = std::thread::spawn(move || {
        std::thread::sleep(Duration::from_millis(100));
        token.cancel();
        Instant::now()
    });
    let result = handle.join();
    let joined = Instant::now();
    let cancelled_at = canceller.join().expect("canceller panicked");
    assert!(
        matches!(result, Err(PipelineError::Cancelled)),
        "{result:?}"
    );
    let took = joined.duration_since(cancelled_at);
    assert!(
        took < Duration::from_millis(500),
        "join returned {took:?} after cancel"
    );
    assert!(!finished.load(Ordering::SeqCst), "cancel must not flush");
}

#[test]
fn handle_cancel_wakes_stages_blocked_on_queues() {
    let mut sink = CollectSink::new("sink");
    sink.delay = Duration::from_millis(300);
    let handle = PipelineBuilder::new(&registry(), PipelineOptions::default())
        .and_then(|builder| builder.source(CountSource::new("data", u64::MAX), 1))
        .and_then(|chain| chain.sink(sink))
        .and_then(|builder| builder.run())
        .expect("pipeline starts");
    std::thread::sleep(Duration::from_millis(50));
    let started = Instant::now();
    handle.cancel();
    assert!(matches!(handle.join(), Err(PipelineError::Cancelled)));
    // The sink finishes its current 300 ms message; the source, blocked on a full
    // queue, wakes at once. Everything is joined within one message.
    assert!(started.elapsed() < Duration::from_millis(800));
}

#[test]
fn cancel_before_run_stops_at_once() {
    let builder = PipelineBuilder::new(&registry(), PipelineOptions::default()).expect("builder");
    builder.cancel_token().cancel();
    let sink = CollectSink::new("sink");
    let seen = sink.seen.clone();
    let handle = builder
        .source(CountSource::new("data", u64::MAX), 1)
        .and_then(|chain| chain.sink(sink))
        .and_then(|builder| builder.run())
        .expect("pipeline starts");
    assert!(matches!(handle.join(), Err(PipelineError::Cancelled)));
    assert!(seen.lock().expect("lock").is_empty());
}

#[test]
fn dropping_the_handle_cancels_the_pipeline() {
    let dropped = Arc::new(AtomicBool::new(false));
    let mut source = CountSource::new("data", u64::MAX);
    source.dropped = Some(dropped.clone());
    let handle = PipelineBuilder::new(&registry(), PipelineOptions::default())
        .and_then(|builder| builder.source(source, 1))
        .and_then(|chain| chain.sink(CollectSink::new("sink")))
        .and_then(|builder| builder.run())
        .expect("pipeline starts");
    std::thread::sleep(Duration::from_millis(20));
    assert!(!dropped.load(Ordering::SeqCst));
    drop(handle);
    let deadline = Instant::now() + Duration::from_secs(2);
    while !dropped.load(Ordering::SeqCst) {
        assert!(Instant::now() < deadline, "source thread still running");
        std::thread::sleep(Duration::from_millis(5));
    }
}
