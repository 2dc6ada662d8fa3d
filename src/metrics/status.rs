//! What `/status` reports: the [`Status`] JSON document, the [`StatusSource`]
//! trait the HTTP server asks for it, and [`PipelineStatus`], the source the
//! pipeline uses (built from [`TrainMetrics`], the registry's queue gauges and an
//! `ard_actors::StatsReader` attached once the pipeline runs).
//!
//! Rates and shares are averages since the pipeline started (like the run
//! summary table); Grafana shows recent rates from `/metrics`. The document holds
//! no file paths: the run name is the only identifying string.

use std::sync::{Mutex, PoisonError};
use std::time::Instant;

use ard_actors::{StageStats, StatsReader};
use prometheus::proto::MetricType;
use prometheus::Registry;
use serde::{Deserialize, Serialize};

use super::names;
use super::registry::{EvalRecord, TrainMetrics};

/// Where a run is in its life.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Phase {
    /// Building stages, loading data, filling caches.
    #[default]
    Starting,
    /// The pipeline runs.
    Running,
    /// Cancelled (a signal, a failure): draining and flushing.
    Stopping,
    /// Done; the endpoint is about to close.
    Finished,
}

/// One stage's throughput and time shares since the pipeline started.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct StageStatus {
    /// The stage's name.
    pub stage: String,
    /// Batches processed.
    pub batches: u64,
    /// Images in those batches.
    pub images: u64,
    /// Images per second of wall time.
    pub images_per_s: f64,
    /// Share of wall time spent working, 0 to 1 (where the attack steps cost time).
    pub busy_share: f64,
    /// Share of wall time blocked on a full output queue, 0 to 1.
    pub blocked_share: f64,
    /// Share of wall time waiting on an empty input queue, 0 to 1.
    pub idle_share: f64,
}

impl StageStatus {
    /// The status of `stats` after `elapsed_s` seconds of wall time.
    pub fn from_stats(stats: &StageStats, elapsed_s: f64) -> Self {
        let shares = stats.shares(elapsed_s);
        Self {
            stage: stats.stage.clone(),
            batches: stats.batches,
            images: stats.images,
            images_per_s: shares.images_per_s,
            busy_share: shares.busy.clamp(0.0, 1.0),
            blocked_share: shares.blocked.clamp(0.0, 1.0),
            idle_share: shares.idle.clamp(0.0, 1.0),
        }
    }
}

/// One queue's depth.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct QueueStatus {
    /// The queue's name (`<producer>_to_<consumer>`).
    pub queue: String,
    /// Messages waiting in it.
    pub depth: i64,
}

/// The `/status` document.
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
pub struct Status {
    /// The run's name.
    pub run: String,
    /// Where the run is in its life.
    pub phase: Phase,
    /// Seconds since the pipeline started (0 before).
    pub elapsed_s: f64,
    /// The epoch in progress (counting from 1; 0 before training).
    pub epoch: u64,
    /// Optimiser steps taken.
    pub step: u64,
    /// Loss of the last step, if any.
    pub loss: Option<f64>,
    /// Learning rate of the last step.
    pub learning_rate: f64,
    /// Weight versions the attack replica lagged on its last batch.
    pub weight_staleness: u64,
    /// Soft-label cache hits so far (images).
    pub cache_hits: u64,
    /// Soft-label cache misses so far (images).
    pub cache_misses: u64,
    /// Every stage, in pipeline order (empty before the pipeline runs).
    pub stages: Vec<StageStatus>,
    /// Every queue's depth, in pipeline order once the pipeline runs.
    pub queues: Vec<QueueStatus>,
    /// The last evaluation, if any.
    pub last_eval: Option<EvalRecord>,
}

/// What the HTTP server asks for `/status`. Implemented by [`PipelineStatus`]
/// and by any `Fn() -> Status + Send + Sync` closure.
pub trait StatusSource: Send + Sync + 'static {
    /// The current status; called on a server thread, so keep it quick.
    fn status(&self) -> Status;
}

impl<F> StatusSource for F
where
    F: Fn() -> Status + Send + Sync + 'static,
{
    fn status(&self) -> Status {
        self()
    }
}

/// The pipeline's [`StatusSource`]: share it (in an `Arc`) between the server
/// and the code that runs the pipeline, which calls [`attach`](Self::attach)
/// once the pipeline runs and [`set_phase`](Self::set_phase) as it stops.
pub struct PipelineStatus {
    metrics: TrainMetrics,
    registry: Registry,
    state: Mutex<State>,
}

struct State {
    phase: Phase,
    stats: Option<(StatsReader, Instant)>,
}

impl PipelineStatus {
    /// A source for the run of `metrics`, reading queue depths from `registry`
    /// (the registry the pipeline's metrics are in). Phase: starting.
    pub fn new(metrics: TrainMetrics, registry: Registry) -> Self {
        Self {
            metrics,
            registry,
            state: Mutex::new(State {
                phase: Phase::Starting,
                stats: None,
            }),
        }
    }

    /// Attaches the running pipeline's stats (from
    /// `PipelineHandle::stats_reader`); rates count from now. Phase: running.
    pub fn attach(&self, stats: StatsReader) {
        let mut state = self.state.lock().unwrap_or_else(PoisonError::into_inner);
        state.stats = Some((stats, Instant::now()));
        state.phase = Phase::Running;
    }

    /// Sets the phase (stopping when cancelled, finished at the end).
    pub fn set_phase(&self, phase: Phase) {
        self.state
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .phase = phase;
    }
}

impl StatusSource for PipelineStatus {
    fn status(&self) -> Status {
        let (phase, stats) = {
            let state = self.state.lock().unwrap_or_else(PoisonError::into_inner);
            (state.phase, state.stats.clone())
        };
        let (stages, elapsed_s) = match stats {
            Some((reader, started)) => {
                let elapsed_s = started.elapsed().as_secs_f64();
                let stages = reader
                    .snapshot()
                    .iter()
                    .map(|stats| StageStatus::from_stats(stats, elapsed_s))
                    .collect();
                (stages, elapsed_s)
            }
            None => (Vec::new(), 0.0),
        };
        let mut queues = queue_depths(&self.registry, self.metrics.run());
        // Pipeline order: by the position of each queue's producer.
        queues.sort_by_key(|queue| {
            stages
                .iter()
                .position(|stage: &StageStatus| {
                    queue
                        .queue
                        .strip_prefix(stage.stage.as_str())
                        .is_some_and(|rest| rest.starts_with("_to_"))
                })
                .unwrap_or(usize::MAX)
        });
        let (cache_hits, cache_misses) = self.metrics.cache_counts();
        Status {
            run: self.metrics.run().to_owned(),
            phase,
            elapsed_s,
            epoch: self.metrics.epoch(),
            step: self.metrics.train_steps(),
            loss: self.metrics.loss(),
            learning_rate: self.metrics.lr(),
            weight_staleness: self.metrics.weight_staleness(),
            cache_hits,
            cache_misses,
            stages,
            queues,
            last_eval: self.metrics.last_eval(),
        }
    }
}

/// The depth of every queue of run `run` in `registry` (series without a `run`
/// label count as this run's).
pub fn queue_depths(registry: &Registry, run: &str) -> Vec<QueueStatus> {
    let label = |sample: &prometheus::proto::Metric, name: &str| {
        sample
            .get_label()
            .iter()
            .find(|pair| pair.name() == name)
            .map(|pair| pair.value().to_owned())
    };
    registry
        .gather()
        .iter()
        .filter(|family| {
            family.name() == names::QUEUE_DEPTH && family.get_field_type() == MetricType::GAUGE
        })
        .flat_map(|family| family.get_metric().iter())
        .filter(|sample| label(sample, names::RUN_LABEL).is_none_or(|value| value == run))
        .filter_map(|sample| {
            Some(QueueStatus {
                queue: label(sample, names::QUEUE_LABEL)?,
                depth: sample.get_gauge().get_value() as i64,
            })
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;
    use prometheus::{IntGaugeVec, Opts};

    #[test]
    fn stage_status_divides_by_wall_time() {
        let stats = StageStats {
            stage: "attack".into(),
            batches: 4,
            images: 512,
            busy_s: 1.5,
            blocked_s: 0.25,
            idle_s: 3.0,
        };
        let status = StageStatus::from_stats(&stats, 2.0);
        assert_eq!(status.images_per_s, 256.0);
        assert_eq!(status.busy_share, 0.75);
        assert_eq!(status.blocked_share, 0.125);
        assert_eq!(status.idle_share, 1.0, "clamped");
        let status = StageStatus::from_stats(&stats, 0.0);
        assert_eq!((status.images_per_s, status.busy_share), (0.0, 0.0));
    }

    #[test]
    fn status_of_a_run_before_the_pipeline_starts() {
        let registry = Registry::new();
        let metrics =
            TrainMetrics::register(&registry, "run-a", &["pgd"], &["natural"]).expect("register");
        let depth = IntGaugeVec::new(
            Opts::new(names::QUEUE_DEPTH, names::QUEUE_DEPTH_HELP)
                .const_labels(super::super::registry::const_labels("run-a")),
            &[names::QUEUE_LABEL],
        )
        .expect("gauge");
        registry
            .register(Box::new(depth.clone()))
            .expect("register");
        depth.with_label_values(&["data_to_teacher"]).set(3);
        metrics.set_epoch(2);
        metrics.inc_train_steps(10);
        metrics.set_loss(0.5);
        let source = PipelineStatus::new(metrics, registry);
        let status = source.status();
        assert_eq!(status.run, "run-a");
        assert_eq!(status.phase, Phase::Starting);
        assert_eq!((status.epoch, status.step, status.loss), (2, 10, Some(0.5)));
        assert!(status.stages.is_empty());
        assert_eq!(
            status.queues,
            vec![QueueStatus {
                queue: "data_to_teacher".into(),
                depth: 3
            }]
        );
        source.set_phase(Phase::Stopping);
        let json = serde_json::to_value(source.status()).expect("json");
        assert_eq!(json["phase"], "stopping");
        assert_eq!(json["last_eval"], serde_json::Value::Null);
    }

    #[test]
    fn closures_are_sources() {
        let source: Box<dyn StatusSource> = Box::new(|| Status {
            run: "x".into(),
            ..Status::default()
        });
        assert_eq!(source.status().run, "x");
    }
}
