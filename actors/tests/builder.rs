//! Structural errors are caught when the pipeline is built.

mod common;

use ard_actors::{PipelineBuilder, PipelineError, PipelineOptions};
use common::{builder, registry, CollectSink, CountSource, MapStage};

#[test]
fn capacity_zero_is_rejected_for_sources_and_stages() {
    match builder().source(CountSource::new("data", 1), 0) {
        Err(PipelineError::InvalidCapacity { stage }) => assert_eq!(stage, "data"),
        Err(other) => panic!("expected InvalidCapacity, got {other:?}"),
        Ok(_) => panic!("capacity 0 accepted for the source"),
    }
    let chain = builder()
        .source(CountSource::new("data", 1), 1)
        .expect("source");
    match chain.stage(MapStage::new("teacher"), 0) {
        Err(PipelineError::InvalidCapacity { stage }) => assert_eq!(stage, "teacher"),
        Err(other) => panic!("expected InvalidCapacity, got {other:?}"),
        Ok(_) => panic!("capacity 0 accepted for a stage"),
    }
}

#[test]
fn duplicate_and_invalid_names_are_rejected() {
    let chain = builder()
        .source(CountSource::new("data", 1), 1)
        .expect("source");
    match chain.sink(CollectSink::new("data")) {
        Err(PipelineError::DuplicateStage { stage }) => assert_eq!(stage, "data"),
        Err(other) => panic!("expected DuplicateStage, got {other:?}"),
        Ok(_) => panic!("duplicate name accepted"),
    }
    assert!(matches!(
        builder().source(CountSource::new("", 1), 1),
        Err(PipelineError::InvalidStageName { .. })
    ));
}

#[test]
fn an_empty_pipeline_does_not_run() {
    assert!(matches!(builder().run(), Err(PipelineError::Empty)));
}

#[test]
fn metric_collisions_in_the_registry_are_errors() {
    let registry = registry();
    let _first = PipelineBuilder::new(&registry, PipelineOptions::default()).expect("first");
    assert!(matches!(
        PipelineBuilder::new(&registry, PipelineOptions::default()),
        Err(PipelineError::Metrics(_))
    ));
}

#[test]
fn two_chains_run_in_one_pipeline() {
    let (first, second) = (CollectSink::new("sink_a"), CollectSink::new("sink_b"));
    let (seen_a, seen_b) = (first.seen.clone(), second.seen.clone());
    let summary = builder()
        .source(CountSource::new("data_a", 5), 1)
        .and_then(|chain| chain.sink(first))
        .and_then(|builder| builder.source(CountSource::new("data_b", 7), 1))
        .and_then(|chain| chain.sink(second))
        .and_then(|builder| builder.run())
        .and_then(|handle| handle.join())
        .expect("both chains complete");
    assert_eq!(seen_a.lock().expect("lock").len(), 5);
    assert_eq!(seen_b.lock().expect("lock").len(), 7);
    assert_eq!(summary.stages.len(), 4);
}

#[test]
fn handles_can_cross_threads() {
    fn send<T: Send>() {}
    fn send_sync<T: Send + Sync>() {}
    send::<PipelineBuilder>();
    send::<ard_actors::Chain<common::Batch>>();
    send::<ard_actors::PipelineHandle>();
    send_sync::<ard_actors::StatsReader>();
    send_sync::<ard_actors::CancelToken>();
    // A mailbox of Send-but-not-Sync values is shareable across threads.
    send_sync::<ard_actors::Mailbox<std::cell::Cell<u64>>>();
}
