//! A full queue blocks its producer: nothing is dropped, the number of messages
//! in flight stays bounded, and the producer's blocked time grows.

mod common;

use std::sync::Arc;
use std::time::Duration;

use common::{builder, start, CollectSink, CountSource, MapStage, Outstanding};

const CAPACITY: usize = 2;
const MESSAGES: u64 = 15;
const SINK_DELAY: Duration = Duration::from_millis(20);

#[test]
fn slow_sink_blocks_the_source_and_bounds_messages_in_flight() {
    let outstanding = Arc::new(Outstanding::default());
    let mut source = CountSource::new("data", MESSAGES);
    source.outstanding = Some(outstanding.clone());
    let mut sink = CollectSink::new("sink");
    sink.delay = SINK_DELAY;
    sink.outstanding = Some(outstanding.clone());
    let seen = sink.seen.clone();

    let handle = start(builder(), source, CAPACITY, sink);
    let summary = handle.join().expect("pipeline completes");

    // Nothing dropped.
    assert_eq!(seen.lock().expect("lock").len(), MESSAGES as usize);
    // In flight: the queue, plus one in the sink's hands and one the source holds
    // while blocked on send.
    let max = outstanding.max();
    assert!(max <= CAPACITY + 2, "max outstanding {max}");
    assert!(max > CAPACITY, "the queue never filled up (max {max})");
    let data = summary.stage("data").expect("data stats");
    let sink = summary.stage("sink").expect("sink stats");
    // The sink needs ~300 ms; the source, free otherwise, waits most of that.
    assert!(
        data.blocked_s >= 0.15,
        "source blocked only {} s",
        data.blocked_s
    );
    assert!(
        data.busy_s < 0.05,
        "blocked time counted as busy: {} s",
        data.busy_s
    );
    assert!(sink.busy_s >= 0.25, "sink busy {} s", sink.busy_s);
    assert!(sink.blocked_s == 0.0, "a sink has no output to block on");
}

#[test]
fn backpressure_propagates_through_a_middle_stage() {
    let outstanding = Arc::new(Outstanding::default());
    let mut source = CountSource::new("data", MESSAGES);
    source.outstanding = Some(outstanding.clone());
    let mut sink = CollectSink::new("sink");
    sink.delay = SINK_DELAY;
    sink.outstanding = Some(outstanding.clone());

    let handle = builder()
        .source(source, 1)
        .and_then(|chain| chain.stage(MapStage::new("middle"), 1))
        .and_then(|chain| chain.sink(sink))
        .and_then(|builder| builder.run())
        .expect("pipeline starts");
    let summary = handle.join().expect("pipeline completes");

    // Two queues of one, plus one held by each of the three stages.
    let max = outstanding.max();
    assert!(max <= 1 + 1 + 3, "max outstanding {max}");
    for stage in ["data", "middle"] {
        let blocked = summary.stage(stage).map_or(0.0, |s| s.blocked_s);
        assert!(blocked >= 0.1, "{stage} blocked only {blocked} s");
    }
}
