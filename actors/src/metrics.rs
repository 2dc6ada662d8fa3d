//! Registration of the runtime's Prometheus metrics, and the per-stage handles
//! through which each stage thread records them once per batch.
//!
//! All metric families are registered once per pipeline, when the builder is made;
//! each stage's children are created when the stage is added, so every stage
//! exports every metric from the start (at zero). Names come from
//! [`metrics_names`](crate::metrics_names).

use std::collections::HashMap;
use std::time::Duration;

use prometheus::core::Collector;
use prometheus::{
    Counter, CounterVec, IntCounter, IntCounterVec, IntGauge, IntGaugeVec, Opts, Registry,
};

use crate::metrics_names as names;
use crate::stats::StageStats;

/// The metric families of one pipeline.
pub(crate) struct PipelineMetrics {
    batches: IntCounterVec,
    images: IntCounterVec,
    busy: CounterVec,
    blocked: CounterVec,
    idle: CounterVec,
    queue_depth: IntGaugeVec,
}

impl PipelineMetrics {
    /// Creates the families with `const_labels` on each, and registers them in
    /// `registry`. On error nothing stays registered.
    pub(crate) fn register(
        registry: &Registry,
        const_labels: &HashMap<String, String>,
    ) -> Result<Self, prometheus::Error> {
        use names::*;
        let opts =
            |name: &str, help: &str| Opts::new(name, help).const_labels(const_labels.clone());
        let int_counter =
            |name: &str, help: &str| IntCounterVec::new(opts(name, help), &[STAGE_LABEL]);
        let counter = |name: &str, help: &str| CounterVec::new(opts(name, help), &[STAGE_LABEL]);
        let metrics = Self {
            batches: int_counter(STAGE_BATCHES_TOTAL, STAGE_BATCHES_TOTAL_HELP)?,
            images: int_counter(STAGE_IMAGES_TOTAL, STAGE_IMAGES_TOTAL_HELP)?,
            busy: counter(STAGE_BUSY_SECONDS_TOTAL, STAGE_BUSY_SECONDS_TOTAL_HELP)?,
            blocked: counter(
                STAGE_BLOCKED_SECONDS_TOTAL,
                STAGE_BLOCKED_SECONDS_TOTAL_HELP,
            )?,
            idle: counter(STAGE_IDLE_SECONDS_TOTAL, STAGE_IDLE_SECONDS_TOTAL_HELP)?,
            queue_depth: IntGaugeVec::new(opts(QUEUE_DEPTH, QUEUE_DEPTH_HELP), &[QUEUE_LABEL])?,
        };
        for (registered, collector) in metrics.collectors().into_iter().enumerate() {
            if let Err(error) = registry.register(collector) {
                for done in metrics.collectors().into_iter().take(registered) {
                    let _ = registry.unregister(done);
                }
                return Err(error);
            }
        }
        Ok(metrics)
    }

    /// Handles on every family, for (un)registration.
    fn collectors(&self) -> [Box<dyn Collector>; 6] {
        [
            Box::new(self.batches.clone()),
            Box::new(self.images.clone()),
            Box::new(self.busy.clone()),
            Box::new(self.blocked.clone()),
            Box::new(self.idle.clone()),
            Box::new(self.queue_depth.clone()),
        ]
    }

    /// The handles of stage `stage`; its series appear (at zero) from now on.
    pub(crate) fn stage(&self, stage: &str) -> Result<StageMetrics, prometheus::Error> {
        let labels = &[stage];
        Ok(StageMetrics {
            batches: self.batches.get_metric_with_label_values(labels)?,
            images: self.images.get_metric_with_label_values(labels)?,
            busy: self.busy.get_metric_with_label_values(labels)?,
            blocked: self.blocked.get_metric_with_label_values(labels)?,
            idle: self.idle.get_metric_with_label_values(labels)?,
        })
    }

    /// The depth gauge of queue `queue`.
    pub(crate) fn queue(&self, queue: &str) -> Result<IntGauge, prometheus::Error> {
        self.queue_depth.get_metric_with_label_values(&[queue])
    }
}

/// Time a stage spent in each state during one batch (or its final flush).
#[derive(Clone, Copy, Debug, Default)]
pub(crate) struct StageTimes {
    pub busy: Duration,
    pub blocked: Duration,
    pub idle: Duration,
}

/// One stage's metric handles (cheap to clone; clones share values).
#[derive(Clone)]
pub(crate) struct StageMetrics {
    batches: IntCounter,
    images: IntCounter,
    busy: Counter,
    blocked: Counter,
    idle: Counter,
}

impl StageMetrics {
    /// Records one batch of `images` images if it was `handled` (sent, for a
    /// source), and in any case its times.
    pub(crate) fn record_batch(&self, handled: bool, images: u64, times: StageTimes) {
        if handled {
            self.batches.inc();
            self.images.inc_by(images);
        }
        self.record_times(times);
    }

    /// Records time not tied to a batch (the final flush).
    pub(crate) fn record_times(&self, times: StageTimes) {
        self.busy.inc_by(times.busy.as_secs_f64());
        self.blocked.inc_by(times.blocked.as_secs_f64());
        self.idle.inc_by(times.idle.as_secs_f64());
    }

    /// The current totals.
    pub(crate) fn snapshot(&self, stage: &str) -> StageStats {
        StageStats {
            stage: stage.to_owned(),
            batches: self.batches.get(),
            images: self.images.get(),
            busy_s: self.busy.get(),
            blocked_s: self.blocked.get(),
            idle_s: self.idle.get(),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn pipelines_share_a_registry_only_with_distinct_run_labels() {
        let registry = Registry::new();
        let run = |name: &str| HashMap::from([("run".to_owned(), name.to_owned())]);
        PipelineMetrics::register(&registry, &run("a")).expect("run a");
        PipelineMetrics::register(&registry, &run("b")).expect("run b");
        assert!(PipelineMetrics::register(&registry, &run("a")).is_err());
    }

    #[test]
    fn rollback_leaves_nothing_registered() {
        let registry = Registry::new();
        // Occupy the last family registered with an identical one.
        let blocker = IntGaugeVec::new(
            Opts::new(names::QUEUE_DEPTH, names::QUEUE_DEPTH_HELP),
            &[names::QUEUE_LABEL],
        )
        .expect("vec");
        registry
            .register(Box::new(blocker.clone()))
            .expect("register blocker");
        assert!(PipelineMetrics::register(&registry, &HashMap::new()).is_err());
        // Once the blocker is gone, registering again succeeds only if the first
        // attempt rolled back the five families it had registered.
        registry
            .unregister(Box::new(blocker))
            .expect("unregister blocker");
        PipelineMetrics::register(&registry, &HashMap::new()).expect("rolled back");
    }

    #[test]
    fn records_and_snapshots() {
        let registry = Registry::new();
        let metrics = PipelineMetrics::register(&registry, &HashMap::new()).expect("register");
        let stage = metrics.stage("teacher").expect("stage");
        stage.record_batch(
            true,
            128,
            StageTimes {
                busy: Duration::from_millis(500),
                blocked: Duration::from_millis(250),
                idle: Duration::ZERO,
            },
        );
        let stats = stage.snapshot("teacher");
        assert_eq!((stats.batches, stats.images), (1, 128));
        assert!((stats.busy_s - 0.5).abs() < 1e-9);
        assert!((stats.blocked_s - 0.25).abs() < 1e-9);
    }
}
