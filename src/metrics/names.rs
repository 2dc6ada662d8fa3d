//! The one canonical list of the pipeline's metric names, kinds, labels and help.
//!
//! Two sources register them: the `ard-actors` runtime registers the per-stage
//! and per-queue metrics (re-exported here from [`ard_actors::metrics_names`]),
//! and [`TrainMetrics`](super::TrainMetrics) registers the training ones defined
//! here. [`ALL`] lists both; a test checks that a pipeline plus `TrainMetrics`
//! export every entry with the [`RUN_LABEL`] constant label, and the Grafana
//! dashboards and Prometheus rules under `deploy/` use these names only.
//!
//! Naming follows Prometheus conventions: `ard_` prefix, base units (seconds,
//! percent is spelled out in the help), counters end in `_total`. Labels stay
//! low-cardinality: `stage`, `queue`, `attack`, and the constant `run`.

pub use ard_actors::metrics_names::{
    queue_name, QUEUE_DEPTH, QUEUE_DEPTH_HELP, QUEUE_LABEL, REQUIRED_STAGE_METRICS,
    STAGE_BATCHES_TOTAL, STAGE_BATCHES_TOTAL_HELP, STAGE_BLOCKED_SECONDS_TOTAL,
    STAGE_BLOCKED_SECONDS_TOTAL_HELP, STAGE_BUSY_SECONDS_TOTAL, STAGE_BUSY_SECONDS_TOTAL_HELP,
    STAGE_IDLE_SECONDS_TOTAL, STAGE_IDLE_SECONDS_TOTAL_HELP, STAGE_IMAGES_TOTAL,
    STAGE_IMAGES_TOTAL_HELP, STAGE_LABEL,
};

/// Constant label on every metric: the run's name (`run.name` in the config), so
/// one Prometheus can scrape every run of a sweep.
pub const RUN_LABEL: &str = "run";
/// Label naming an attack: the training attack of [`ATTACK_GRADIENT_STEPS_TOTAL`]
/// (`pgd`, `fgsm_rs`, ...) or the evaluation of [`EVAL_ACCURACY`] (`natural`,
/// `pgd20`, `cw`, ...).
pub const ATTACK_LABEL: &str = "attack";

/// Counter: gradient steps (one forward and backward pass through the student
/// replica per batch) taken by an attack.
pub const ATTACK_GRADIENT_STEPS_TOTAL: &str = "ard_attack_gradient_steps_total";
pub const ATTACK_GRADIENT_STEPS_TOTAL_HELP: &str =
    "Gradient steps (forward and backward through the student replica, per batch) taken by an attack.";

/// Counter: images whose teacher soft labels came from the soft-label cache.
pub const SOFT_LABEL_CACHE_HITS_TOTAL: &str = "ard_soft_label_cache_hits_total";
pub const SOFT_LABEL_CACHE_HITS_TOTAL_HELP: &str =
    "Images whose teacher soft labels were read from the soft-label cache.";

/// Counter: images whose teacher soft labels needed a teacher forward.
pub const SOFT_LABEL_CACHE_MISSES_TOTAL: &str = "ard_soft_label_cache_misses_total";
pub const SOFT_LABEL_CACHE_MISSES_TOTAL_HELP: &str =
    "Images whose teacher soft labels were not in the cache and needed a teacher forward.";

/// Counter: optimiser steps the student took (a resumed run starts at the
/// checkpoint's step).
pub const TRAIN_STEPS_TOTAL: &str = "ard_train_steps_total";
pub const TRAIN_STEPS_TOTAL_HELP: &str =
    "Optimiser steps taken by the student (a resumed run starts at the checkpoint's step).";

/// Gauge: the training loss of the student's last step (NaN before the first).
pub const TRAIN_LOSS: &str = "ard_train_loss";
pub const TRAIN_LOSS_HELP: &str =
    "Training loss of the student's last step (NaN before the first).";

/// Gauge: test accuracy in percent of the last evaluated weight snapshot, per
/// evaluation attack (NaN until evaluated).
pub const EVAL_ACCURACY: &str = "ard_eval_accuracy";
pub const EVAL_ACCURACY_HELP: &str =
    "Test accuracy in percent of the last evaluated student snapshot under an attack (natural = clean; NaN until evaluated).";

/// Gauge: the learning rate of the student's last step.
pub const LEARNING_RATE: &str = "ard_learning_rate";
pub const LEARNING_RATE_HELP: &str = "Learning rate of the student's last optimiser step.";

/// Gauge: the epoch in progress, counting from 1 (0 before training starts).
pub const EPOCH: &str = "ard_epoch";
pub const EPOCH_HELP: &str =
    "Training epoch in progress, counting from 1 (0 before training starts).";

/// Gauge: how many weight versions the attack replica lagged behind the student
/// on its last batch (bounded by `pipeline.max_weight_staleness`).
pub const WEIGHT_STALENESS: &str = "ard_weight_staleness";
pub const WEIGHT_STALENESS_HELP: &str =
    "Weight versions the attack's student replica lagged behind the student on its last batch.";

/// Whether a metric is a counter or a gauge (the pipeline exports no others).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum MetricKind {
    /// Monotonic; its name ends in `_total`.
    Counter,
    /// Goes up and down.
    Gauge,
}

impl MetricKind {
    /// The type as written in the exposition format's `# TYPE` line.
    pub fn as_str(self) -> &'static str {
        match self {
            MetricKind::Counter => "counter",
            MetricKind::Gauge => "gauge",
        }
    }
}

/// Who registers a metric.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Registrar {
    /// The `ard-actors` runtime (`PipelineBuilder::new`), once per pipeline.
    Runtime,
    /// [`TrainMetrics::register`](super::TrainMetrics::register).
    Train,
}

/// One entry of the canonical list.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct MetricDef {
    /// The metric (family) name.
    pub name: &'static str,
    /// Its `# HELP` text.
    pub help: &'static str,
    /// Counter or gauge.
    pub kind: MetricKind,
    /// Variable labels, besides the constant [`RUN_LABEL`].
    pub labels: &'static [&'static str],
    /// Who registers it.
    pub registrar: Registrar,
}

const fn def(
    name: &'static str,
    help: &'static str,
    kind: MetricKind,
    labels: &'static [&'static str],
    registrar: Registrar,
) -> MetricDef {
    MetricDef {
        name,
        help,
        kind,
        labels,
        registrar,
    }
}

use MetricKind::{Counter, Gauge};
use Registrar::{Runtime, Train};

/// Every metric the pipeline exports, runtime ones first.
pub const ALL: &[MetricDef] = &[
    def(
        STAGE_BATCHES_TOTAL,
        STAGE_BATCHES_TOTAL_HELP,
        Counter,
        &[STAGE_LABEL],
        Runtime,
    ),
    def(
        STAGE_IMAGES_TOTAL,
        STAGE_IMAGES_TOTAL_HELP,
        Counter,
        &[STAGE_LABEL],
        Runtime,
    ),
    def(
        STAGE_BUSY_SECONDS_TOTAL,
        STAGE_BUSY_SECONDS_TOTAL_HELP,
        Counter,
        &[STAGE_LABEL],
        Runtime,
    ),
    def(
        STAGE_BLOCKED_SECONDS_TOTAL,
        STAGE_BLOCKED_SECONDS_TOTAL_HELP,
        Counter,
        &[STAGE_LABEL],
        Runtime,
    ),
    def(
        STAGE_IDLE_SECONDS_TOTAL,
        STAGE_IDLE_SECONDS_TOTAL_HELP,
        Counter,
        &[STAGE_LABEL],
        Runtime,
    ),
    def(
        QUEUE_DEPTH,
        QUEUE_DEPTH_HELP,
        Gauge,
        &[QUEUE_LABEL],
        Runtime,
    ),
    def(
        ATTACK_GRADIENT_STEPS_TOTAL,
        ATTACK_GRADIENT_STEPS_TOTAL_HELP,
        Counter,
        &[ATTACK_LABEL],
        Train,
    ),
    def(
        SOFT_LABEL_CACHE_HITS_TOTAL,
        SOFT_LABEL_CACHE_HITS_TOTAL_HELP,
        Counter,
        &[],
        Train,
    ),
    def(
        SOFT_LABEL_CACHE_MISSES_TOTAL,
        SOFT_LABEL_CACHE_MISSES_TOTAL_HELP,
        Counter,
        &[],
        Train,
    ),
    def(
        TRAIN_STEPS_TOTAL,
        TRAIN_STEPS_TOTAL_HELP,
        Counter,
        &[],
        Train,
    ),
    def(TRAIN_LOSS, TRAIN_LOSS_HELP, Gauge, &[], Train),
    def(
        EVAL_ACCURACY,
        EVAL_ACCURACY_HELP,
        Gauge,
        &[ATTACK_LABEL],
        Train,
    ),
    def(LEARNING_RATE, LEARNING_RATE_HELP, Gauge, &[], Train),
    def(EPOCH, EPOCH_HELP, Gauge, &[], Train),
    def(WEIGHT_STALENESS, WEIGHT_STALENESS_HELP, Gauge, &[], Train),
];

/// The entry named `name`, if it is in [`ALL`].
pub fn lookup(name: &str) -> Option<&'static MetricDef> {
    ALL.iter().find(|metric| metric.name == name)
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::collections::HashSet;

    #[test]
    fn names_are_unique_prefixed_and_suffixed_by_kind() {
        let mut seen = HashSet::new();
        for metric in ALL {
            assert!(seen.insert(metric.name), "{} listed twice", metric.name);
            assert!(metric.name.starts_with("ard_"), "{}", metric.name);
            assert!(
                metric
                    .name
                    .bytes()
                    .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'_'),
                "{}",
                metric.name
            );
            assert_eq!(
                metric.kind == Counter,
                metric.name.ends_with("_total"),
                "{}: counters and only counters end in _total",
                metric.name
            );
            assert!(!metric.help.is_empty(), "{} has no help", metric.name);
            assert!(!metric.labels.contains(&RUN_LABEL), "{}", metric.name);
        }
    }

    #[test]
    fn lists_every_required_stage_metric() {
        for name in REQUIRED_STAGE_METRICS.iter().chain([&QUEUE_DEPTH]) {
            let metric = lookup(name).unwrap_or_else(|| panic!("{name} is not in ALL"));
            assert_eq!(metric.registrar, Runtime);
        }
        assert!(lookup("ard_nope").is_none());
    }
}
