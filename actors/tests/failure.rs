//! A stage that errors or panics stops the whole pipeline promptly, and `join`
//! names that stage (the first failure wins).

mod common;

use std::time::{Duration, Instant};

use ard_actors::{Emitter, PipelineError, Stage, StageError};
use common::{assert_failed, builder, start, Batch, CollectSink, CountSource, Fault, MapStage};

const PROMPT: Duration = Duration::from_secs(2);

/// Runs endless source -> upstream -> `faulty` -> downstream -> sink, and returns
/// the error and how long join took after the run started.
fn run_with(faulty: MapStage) -> (PipelineError, Duration) {
    let mut sink = CollectSink::new("sink");
    sink.delay = Duration::from_millis(1);
    let started = Instant::now();
    let handle = builder()
        .source(CountSource::new("data", u64::MAX), 2)
        .and_then(|chain| chain.stage(MapStage::new("upstream"), 2))
        .and_then(|chain| chain.stage(faulty, 2))
        .and_then(|chain| chain.stage(MapStage::new("downstream"), 2))
        .and_then(|chain| chain.sink(sink))
        .and_then(|builder| builder.run())
        .expect("pipeline starts");
    let error = handle
        .join()
        .expect_err("an endless pipeline only ends by failing");
    (error, started.elapsed())
}

#[test]
fn an_error_names_the_stage_and_stops_everything() {
    let (error, took) = run_with(MapStage::with_fault("faulty", Fault::ErrorAt(20)));
    assert_failed(&error, "faulty", "boom at 20");
    assert!(took < PROMPT, "join took {took:?}");
    assert!(error.to_string().contains("faulty"));
}

#[test]
fn a_panic_names_the_stage_and_keeps_the_payload() {
    let (error, took) = run_with(MapStage::with_fault("faulty", Fault::PanicAt(10)));
    assert_failed(&error, "faulty", "kaboom at 10");
    assert!(took < PROMPT, "join took {took:?}");
}

#[test]
fn stages_blocked_on_full_and_empty_queues_wake_up() {
    // The faulty stage first sleeps so its upstream queues fill (the source and
    // `upstream` block on send) and its downstream ones drain (`downstream` and the
    // sink block on receive), then fails.
    let faulty = MapStage::with_fault("faulty", Fault::SleepAt(0, Duration::from_millis(200)));
    let faulty = FailAfter {
        inner: faulty,
        at: 1,
    };
    let started = Instant::now();
    let handle = builder()
        .source(CountSource::new("data", u64::MAX), 1)
        .and_then(|chain| chain.stage(MapStage::new("upstream"), 1))
        .and_then(|chain| chain.stage(faulty, 1))
        .and_then(|chain| chain.stage(MapStage::new("downstream"), 1))
        .and_then(|chain| chain.sink(CollectSink::new("sink")))
        .and_then(|builder| builder.run())
        .expect("pipeline starts");
    let reader = handle.stats_reader();
    let error = handle.join().expect_err("fails");
    assert!(
        matches!(&error, PipelineError::StageFailed { stage, .. } if stage == "faulty"),
        "{error:?}"
    );
    assert!(started.elapsed() < PROMPT);
    let stats = reader.snapshot();
    let blocked = stats
        .iter()
        .find(|s| s.stage == "data")
        .map_or(0.0, |s| s.blocked_s);
    assert!(blocked >= 0.1, "source was not blocked: {blocked}");
}

/// Wraps a stage and fails at batch `at`.
struct FailAfter {
    inner: MapStage,
    at: u64,
}

impl Stage for FailAfter {
    type In = Batch;
    type Out = Batch;

    fn name(&self) -> &str {
        self.inner.name()
    }

    fn handle(&mut self, msg: Batch, out: &mut Emitter<Batch>) -> Result<(), StageError> {
        if msg.seq == self.at {
            return Err(StageError::msg("late failure"));
        }
        self.inner.handle(msg, out)
    }
}

#[test]
fn failures_caused_by_the_shutdown_are_not_reported() {
    /// Fails on every batch once the pipeline is cancelled, like a stage whose
    /// side-channel wait was interrupted.
    struct Consequence;
    impl Stage for Consequence {
        type In = Batch;
        type Out = Batch;
        fn name(&self) -> &str {
            "consequence"
        }
        fn handle(&mut self, msg: Batch, out: &mut Emitter<Batch>) -> Result<(), StageError> {
            if out.cancel_token().wait_timeout(Duration::from_millis(5)) {
                return Err(StageError::msg("woken by cancellation"));
            }
            out.send(msg)
        }
    }
    for _ in 0..5 {
        let root = CollectSink {
            fault: Fault::ErrorAt(3),
            ..CollectSink::new("root")
        };
        let handle = builder()
            .source(CountSource::new("data", u64::MAX), 4)
            .and_then(|chain| chain.stage(Consequence, 4))
            .and_then(|chain| chain.sink(root))
            .and_then(|builder| builder.run())
            .expect("pipeline starts");
        let error = handle.join().expect_err("the root cause fails it");
        assert_failed(&error, "root", "boom at 3");
    }
}

#[test]
fn a_source_error_is_reported() {
    struct Broken;
    impl ard_actors::Source for Broken {
        type Out = Batch;
        fn name(&self) -> &str {
            "reader"
        }
        fn produce(&mut self) -> Result<Option<Batch>, StageError> {
            Err(std::io::Error::new(std::io::ErrorKind::NotFound, "data_batch_1.bin").into())
        }
    }
    let handle = start(builder(), Broken, 1, CollectSink::new("sink"));
    let error = handle.join().expect_err("the source fails");
    assert_failed(&error, "reader", "data_batch_1.bin");
}

#[test]
fn an_error_in_finish_is_reported_and_downstream_does_not_flush() {
    let sink = CollectSink::new("sink");
    let finished = sink.finished.clone();
    let handle = builder()
        .source(CountSource::new("data", 10), 2)
        .and_then(|chain| chain.stage(MapStage::with_fault("flusher", Fault::ErrorInFinish), 2))
        .and_then(|chain| chain.sink(sink))
        .and_then(|builder| builder.run())
        .expect("pipeline starts");
    let error = handle.join().expect_err("the flush fails");
    assert_failed(&error, "flusher", "flush failed");
    assert!(
        !finished.load(std::sync::atomic::Ordering::SeqCst),
        "the sink flushed as if the stream had ended cleanly"
    );
}
