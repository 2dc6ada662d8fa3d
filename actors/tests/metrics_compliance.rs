//! The shared instrumentation test: after a run, every stage has exported every
//! required metric (with the run's constant label), with nonzero batches and
//! images, and every queue its depth; the snapshot API agrees with the registry.

mod common;

use std::collections::HashMap;
use std::time::Duration;

use ard_actors::compliance::check_stage_metrics;
use ard_actors::metrics_names::*;
use ard_actors::{Emitter, PipelineBuilder, PipelineOptions, Stage, StageError};
use common::{Batch, CollectSink, CountSource, MapStage};
use prometheus::Registry;

const STAGES: [&str; 5] = ["data", "teacher", "attack", "student", "eval"];

/// Emits one `Batch` per input, splitting it in two halves (images preserved).
struct Split;

impl Stage for Split {
    type In = Batch;
    type Out = Batch;

    fn name(&self) -> &str {
        "attack"
    }

    fn handle(&mut self, msg: Batch, out: &mut Emitter<Batch>) -> Result<(), StageError> {
        let half = msg.images / 2;
        out.send(Batch {
            seq: msg.seq,
            images: half,
        })?;
        out.send(Batch {
            seq: msg.seq,
            images: msg.images - half,
        })
    }
}

fn run_pipeline(registry: &Registry) -> ard_actors::RunSummary {
    let options = PipelineOptions {
        const_labels: HashMap::from([("run".to_owned(), "compliance".to_owned())]),
        ..PipelineOptions::default()
    };
    let mut teacher = MapStage::new("teacher");
    teacher.delay = Duration::from_millis(1);
    let mut student = MapStage::new("student");
    student.delay = Duration::from_millis(2);
    PipelineBuilder::new(registry, options)
        .and_then(|builder| builder.source(CountSource::new("data", 20), 2))
        .and_then(|chain| chain.stage(teacher, 2))
        .and_then(|chain| chain.stage(Split, 1))
        .and_then(|chain| chain.stage(student, 1))
        .and_then(|chain| chain.sink(CollectSink::new("eval")))
        .and_then(|builder| builder.run())
        .and_then(|handle| handle.join())
        .expect("pipeline completes")
}

#[test]
fn every_stage_emits_every_required_metric() {
    let registry = Registry::new();
    let summary = run_pipeline(&registry);
    let queues: Vec<String> = STAGES
        .windows(2)
        .map(|pair| queue_name(pair[0], pair[1]))
        .collect();
    let queues: Vec<&str> = queues.iter().map(String::as_str).collect();
    if let Err(problems) = check_stage_metrics(&registry, &STAGES, &queues) {
        panic!("instrumentation incomplete:\n{}", problems.join("\n"));
    }

    // Independently of the checker: names, help, labels and values, from the registry.
    let families = registry.gather();
    let helps = [
        (STAGE_BATCHES_TOTAL, STAGE_BATCHES_TOTAL_HELP),
        (STAGE_IMAGES_TOTAL, STAGE_IMAGES_TOTAL_HELP),
        (STAGE_BUSY_SECONDS_TOTAL, STAGE_BUSY_SECONDS_TOTAL_HELP),
        (
            STAGE_BLOCKED_SECONDS_TOTAL,
            STAGE_BLOCKED_SECONDS_TOTAL_HELP,
        ),
        (STAGE_IDLE_SECONDS_TOTAL, STAGE_IDLE_SECONDS_TOTAL_HELP),
        (QUEUE_DEPTH, QUEUE_DEPTH_HELP),
    ];
    assert_eq!(helps.len(), REQUIRED_STAGE_METRICS.len() + 1);
    for (name, help) in helps {
        let family = families
            .iter()
            .find(|family| family.name() == name)
            .unwrap_or_else(|| panic!("{name} not exported"));
        assert_eq!(family.help(), help);
        let label = if name == QUEUE_DEPTH {
            QUEUE_LABEL
        } else {
            STAGE_LABEL
        };
        let expected: &[&str] = if name == QUEUE_DEPTH {
            &queues
        } else {
            &STAGES
        };
        let mut exported: Vec<&str> = family
            .get_metric()
            .iter()
            .map(|sample| {
                let labels = sample.get_label();
                assert!(
                    labels
                        .iter()
                        .any(|l| l.name() == "run" && l.value() == "compliance"),
                    "{name} lacks the run label"
                );
                labels
                    .iter()
                    .find(|l| l.name() == label)
                    .map(|l| l.value())
                    .unwrap_or_else(|| panic!("{name} sample without {label}"))
            })
            .collect();
        exported.sort_unstable();
        let mut expected = expected.to_vec();
        expected.sort_unstable();
        assert_eq!(exported, expected, "{name}");
    }

    // The snapshot API reads the same counters.
    let counter = |metric: &str, stage: &str| -> f64 {
        families
            .iter()
            .find(|family| family.name() == metric)
            .and_then(|family| {
                family.get_metric().iter().find(|sample| {
                    sample
                        .get_label()
                        .iter()
                        .any(|l| l.name() == STAGE_LABEL && l.value() == stage)
                })
            })
            .map_or(f64::NAN, |sample| sample.get_counter().get_value())
    };
    for stats in &summary.stages {
        let totals = [
            (STAGE_BATCHES_TOTAL, stats.batches as f64),
            (STAGE_IMAGES_TOTAL, stats.images as f64),
            (STAGE_BUSY_SECONDS_TOTAL, stats.busy_s),
        ];
        for (metric, total) in totals {
            assert_eq!(total, counter(metric, &stats.stage), "{metric}");
        }
        assert!(stats.busy_s > 0.0, "{stats:?}");
    }
    // Counting rules: the source counts what it produced, others what they consumed.
    let batches: Vec<u64> = summary.stages.iter().map(|s| s.batches).collect();
    assert_eq!(batches, [20, 20, 20, 40, 40]);
    assert!(summary.stages.iter().all(|s| s.images == 160), "{summary}");
}
