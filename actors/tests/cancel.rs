//! Cancellation stops a pipeline promptly, without flushing, and `join` reports it
//! as `Cancelled`, distinct from a failure.

mod common;

use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use ard_actors::{PipelineBuilder, PipelineError, PipelineOptions};
use common::{builder, registry, start, CollectSink, CountSource, MapStage};

#[test]
fn cancel_from_another_thread_returns_cancelled_promptly() {
    let builder = builder();
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
    let handle = start(builder(), CountSource::new("data", u64::MAX), 1, sink);
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
    let builder = builder();
    builder.cancel_token().cancel();
    let sink = CollectSink::new("sink");
    let seen = sink.seen.clone();
    let handle = start(builder, CountSource::new("data", u64::MAX), 1, sink);
    assert!(matches!(handle.join(), Err(PipelineError::Cancelled)));
    assert!(seen.lock().expect("lock").is_empty());
}

#[test]
fn a_token_given_in_the_options_cancels_the_pipeline() {
    // The caller's token, cancelled before the pipeline exists (a signal during setup).
    let token = ard_actors::CancelToken::new();
    token.cancel();
    let options = PipelineOptions {
        cancel: Some(token.clone()),
        ..Default::default()
    };
    let builder = PipelineBuilder::new(&registry(), options).expect("builder");
    assert!(builder.cancel_token().is_cancelled());
    let sink = CollectSink::new("sink");
    let seen = sink.seen.clone();
    let handle = start(builder, CountSource::new("data", u64::MAX), 1, sink);
    assert!(matches!(handle.join(), Err(PipelineError::Cancelled)));
    assert!(seen.lock().expect("lock").is_empty());
}

#[test]
fn dropping_the_handle_cancels_the_pipeline() {
    let dropped = Arc::new(AtomicBool::new(false));
    let mut source = CountSource::new("data", u64::MAX);
    source.dropped = Some(dropped.clone());
    let handle = start(builder(), source, 1, CollectSink::new("sink"));
    std::thread::sleep(Duration::from_millis(20));
    assert!(!dropped.load(Ordering::SeqCst));
    drop(handle);
    let deadline = Instant::now() + Duration::from_secs(2);
    while !dropped.load(Ordering::SeqCst) {
        assert!(Instant::now() < deadline, "source thread still running");
        std::thread::sleep(Duration::from_millis(5));
    }
}

/// Records, from `interrupted`, how many messages it had fully handled.
struct Checkpointing {
    handled: u64,
    in_handle: Arc<AtomicBool>,
    saved: Arc<std::sync::Mutex<Vec<u64>>>,
    fail_at: Option<u64>,
}

impl ard_actors::Stage for Checkpointing {
    type In = common::Batch;
    type Out = ();

    fn name(&self) -> &str {
        "student"
    }

    fn handle(
        &mut self,
        _msg: common::Batch,
        _out: &mut ard_actors::Emitter<()>,
    ) -> Result<(), ard_actors::StageError> {
        if self.fail_at == Some(self.handled) {
            return Err(ard_actors::StageError::msg("loss is NaN"));
        }
        self.in_handle.store(true, Ordering::SeqCst);
        std::thread::sleep(Duration::from_millis(20));
        self.handled += 1;
        self.in_handle.store(false, Ordering::SeqCst);
        Ok(())
    }

    fn interrupted(&mut self) {
        assert!(!self.in_handle.load(Ordering::SeqCst), "called mid-handle");
        self.saved.lock().unwrap().push(self.handled);
    }
}

fn checkpointing(fail_at: Option<u64>) -> (Checkpointing, Arc<std::sync::Mutex<Vec<u64>>>) {
    let saved = Arc::new(std::sync::Mutex::new(Vec::new()));
    (
        Checkpointing {
            handled: 0,
            in_handle: Arc::new(AtomicBool::new(false)),
            saved: saved.clone(),
            fail_at,
        },
        saved,
    )
}

#[test]
fn interrupted_runs_once_after_the_last_complete_message_on_cancel() {
    let (stage, saved) = checkpointing(None);
    let handle = start(builder(), CountSource::new("data", u64::MAX), 2, stage);
    std::thread::sleep(Duration::from_millis(150));
    handle.cancel();
    assert!(matches!(handle.join(), Err(PipelineError::Cancelled)));
    let saved = saved.lock().unwrap().clone();
    assert_eq!(saved.len(), 1, "{saved:?}");
    assert!(saved[0] >= 1, "{saved:?}");
}

#[test]
fn interrupted_is_not_called_after_a_normal_end_or_the_stages_own_error() {
    let (stage, saved) = checkpointing(None);
    start(builder(), CountSource::new("data", 3), 2, stage)
        .join()
        .expect("runs to the end");
    assert!(saved.lock().unwrap().is_empty());

    let (stage, saved) = checkpointing(Some(2));
    let result = start(builder(), CountSource::new("data", 10), 2, stage).join();
    assert!(
        matches!(result, Err(PipelineError::StageFailed { .. })),
        "{result:?}"
    );
    assert!(
        saved.lock().unwrap().is_empty(),
        "a failed stage keeps its last good state"
    );
}
