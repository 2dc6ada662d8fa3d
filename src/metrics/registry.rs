//! [`TrainMetrics`] holds the training metrics of [`names`], registered
//! once on a `prometheus::Registry` when the stages are built, with the run's name
//! as the constant `run` label, and typed handles to record them once per batch.
//!
//! The runtime's per-stage metrics are registered by `ard_actors::PipelineBuilder`
//! on the same registry; give it [`const_labels`] of the same run so that every
//! series carries the same `run` label.
//!
//! `TrainMetrics` is cheap to clone (Prometheus handles are `Arc`s) and `Send +
//! Sync`: each stage thread keeps its own clone. Recording never fails and never
//! panics.

use std::collections::{BTreeMap, HashMap};
use std::sync::{Arc, Mutex, PoisonError};

use prometheus::core::Collector;
use prometheus::{Gauge, GaugeVec, IntCounter, IntCounterVec, IntGauge, Opts, Registry};
use serde::{Deserialize, Serialize};

use super::error::MetricsError;
use super::names;

/// The constant labels of run `run` (`{run="<run>"}`), for
/// `ard_actors::PipelineOptions::const_labels` and every metric of `TrainMetrics`.
pub fn const_labels(run: &str) -> HashMap<String, String> {
    HashMap::from([(names::RUN_LABEL.to_owned(), run.to_owned())])
}

/// The result of one evaluation of a student snapshot, as last recorded.
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
pub struct EvalRecord {
    /// Epoch of the evaluated snapshot (counting from 1).
    pub epoch: u64,
    /// Optimiser step of the evaluated snapshot.
    pub step: u64,
    /// Accuracy in percent per evaluation attack (`natural` = clean).
    pub accuracy_pct: BTreeMap<String, f64>,
}

/// Handles on the training metrics of one run. See the module docs.
#[derive(Clone)]
pub struct TrainMetrics {
    run: Arc<str>,
    gradient_steps: IntCounterVec,
    cache_hits: IntCounter,
    cache_misses: IntCounter,
    train_steps: IntCounter,
    loss: Gauge,
    eval_accuracy: GaugeVec,
    learning_rate: Gauge,
    epoch: IntGauge,
    weight_staleness: IntGauge,
    last_eval: Arc<Mutex<Option<EvalRecord>>>,
}

impl std::fmt::Debug for TrainMetrics {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("TrainMetrics")
            .field("run", &self.run)
            .field("epoch", &self.epoch())
            .field("steps", &self.train_steps())
            .finish_non_exhaustive()
    }
}

/// A family's name, a box to register, and one to unregister it with on a rollback.
type Built = (&'static str, Box<dyn Collector>, Box<dyn Collector>);

/// Metric families built with the constant labels, registered all at once
/// (after their starting values are set) or not at all.
struct Families {
    labels: HashMap<String, String>,
    built: Vec<Built>,
}

impl Families {
    /// Builds the family `name`, with its help text from [`names::ALL`].
    fn add<T: Collector + Clone + 'static>(
        &mut self,
        name: &'static str,
        build: impl FnOnce(Opts) -> prometheus::Result<T>,
    ) -> Result<T, MetricsError> {
        let help = names::lookup(name).map_or("", |metric| metric.help);
        let family = build(Opts::new(name, help).const_labels(self.labels.clone()))
            .map_err(|cause| MetricsError::Register { name, cause })?;
        let (a, b) = (Box::new(family.clone()), Box::new(family.clone()));
        self.built.push((name, a, b));
        Ok(family)
    }

    /// Registers every family in order; on a failure, unregisters those already
    /// registered, leaving `registry` as it was.
    fn register(self, registry: &Registry) -> Result<(), MetricsError> {
        let mut done = Vec::new();
        for (name, family, copy) in self.built {
            if let Err(cause) = registry.register(family) {
                for family in done {
                    let _ = registry.unregister(family);
                }
                return Err(MetricsError::Register { name, cause });
            }
            done.push(copy);
        }
        Ok(())
    }
}

/// Saturating conversion for the integer gauges.
fn as_i64(value: u64) -> i64 {
    i64::try_from(value).unwrap_or(i64::MAX)
}

impl TrainMetrics {
    /// Registers the training metrics of run `run` in `registry`, each with the
    /// constant label `run="<run>"`.
    ///
    /// `attacks` (the training attack, e.g. `["pgd"]`) and `eval_attacks` (e.g.
    /// `["natural", "pgd20"]`) create their labelled series up front, so that
    /// they are exported (at 0, and at NaN for accuracies) before the first
    /// batch; other label values are created when first recorded.
    ///
    /// Fails, leaving nothing registered, if a metric of the same name and `run`
    /// label is already in `registry`.
    pub fn register(
        registry: &Registry,
        run: &str,
        attacks: &[&str],
        eval_attacks: &[&str],
    ) -> Result<Self, MetricsError> {
        let mut families = Families {
            labels: const_labels(run),
            built: Vec::new(),
        };
        use names as n;
        let metrics = Self {
            run: Arc::from(run),
            gradient_steps: families.add(n::ATTACK_GRADIENT_STEPS_TOTAL, |opts| {
                IntCounterVec::new(opts, &[n::ATTACK_LABEL])
            })?,
            cache_hits: families.add(n::SOFT_LABEL_CACHE_HITS_TOTAL, IntCounter::with_opts)?,
            cache_misses: families.add(n::SOFT_LABEL_CACHE_MISSES_TOTAL, IntCounter::with_opts)?,
            train_steps: families.add(n::TRAIN_STEPS_TOTAL, IntCounter::with_opts)?,
            loss: families.add(n::TRAIN_LOSS, Gauge::with_opts)?,
            eval_accuracy: families.add(n::EVAL_ACCURACY, |opts| {
                GaugeVec::new(opts, &[n::ATTACK_LABEL])
            })?,
            learning_rate: families.add(n::LEARNING_RATE, Gauge::with_opts)?,
            epoch: families.add(n::EPOCH, IntGauge::with_opts)?,
            weight_staleness: families.add(n::WEIGHT_STALENESS, IntGauge::with_opts)?,
            last_eval: Arc::new(Mutex::new(None)),
        };
        metrics.loss.set(f64::NAN);
        for attack in attacks {
            metrics.inc_gradient_steps(attack, 0);
        }
        for attack in eval_attacks {
            if let Ok(gauge) = metrics
                .eval_accuracy
                .get_metric_with_label_values(&[attack])
            {
                gauge.set(f64::NAN);
            }
        }
        families.register(registry)?;
        Ok(metrics)
    }

    /// The run's name (the `run` label).
    pub fn run(&self) -> &str {
        &self.run
    }

    /// Sets the loss of the student's last step.
    pub fn set_loss(&self, loss: f64) {
        self.loss.set(loss);
    }

    /// Sets the learning rate of the student's last step.
    pub fn set_lr(&self, lr: f64) {
        self.learning_rate.set(lr);
    }

    /// Sets the epoch in progress (counting from 1).
    pub fn set_epoch(&self, epoch: u64) {
        self.epoch.set(as_i64(epoch));
    }

    /// Counts `n` optimiser steps of the student (a resumed run first counts the
    /// checkpoint's step).
    pub fn inc_train_steps(&self, n: u64) {
        self.train_steps.inc_by(n);
    }

    /// Counts `n` gradient steps of attack `attack` (e.g. steps × 1 per batch).
    pub fn inc_gradient_steps(&self, attack: &str, n: u64) {
        match self.gradient_steps.get_metric_with_label_values(&[attack]) {
            Ok(counter) => counter.inc_by(n),
            Err(error) => log::warn!("{}: {error}", names::ATTACK_GRADIENT_STEPS_TOTAL),
        }
    }

    /// Records one evaluation of the snapshot of `epoch` / `step`: sets each
    /// attack's accuracy gauge and replaces the last evaluation record.
    pub fn record_eval(&self, epoch: u64, step: u64, results: &[(&str, f64)]) {
        for (attack, pct) in results {
            self.set_accuracy_gauge(attack, *pct);
        }
        let record = EvalRecord {
            epoch,
            step,
            accuracy_pct: results
                .iter()
                .map(|(attack, pct)| ((*attack).to_owned(), *pct))
                .collect(),
        };
        *self
            .last_eval
            .lock()
            .unwrap_or_else(PoisonError::into_inner) = Some(record);
    }

    fn set_accuracy_gauge(&self, attack: &str, pct: f64) {
        match self.eval_accuracy.get_metric_with_label_values(&[attack]) {
            Ok(gauge) => gauge.set(pct),
            Err(error) => log::warn!("{}: {error}", names::EVAL_ACCURACY),
        }
    }

    /// Sets how many weight versions the attack replica lagged on its last batch.
    pub fn set_weight_staleness(&self, versions: u64) {
        self.weight_staleness.set(as_i64(versions));
    }

    /// Counts `images` soft-label cache hits.
    pub fn cache_hit(&self, images: u64) {
        self.cache_hits.inc_by(images);
    }

    /// Counts `images` soft-label cache misses.
    pub fn cache_miss(&self, images: u64) {
        self.cache_misses.inc_by(images);
    }

    /// The epoch in progress (0 before training).
    pub fn epoch(&self) -> u64 {
        u64::try_from(self.epoch.get()).unwrap_or(0)
    }

    /// Optimiser steps counted so far.
    pub fn train_steps(&self) -> u64 {
        self.train_steps.get()
    }

    /// The last loss; `None` before the first step (or if the last loss was NaN).
    pub fn loss(&self) -> Option<f64> {
        Some(self.loss.get()).filter(|loss| !loss.is_nan())
    }

    /// The last learning rate (0 before the first step).
    pub fn lr(&self) -> f64 {
        self.learning_rate.get()
    }

    /// The last weight staleness.
    pub fn weight_staleness(&self) -> u64 {
        u64::try_from(self.weight_staleness.get()).unwrap_or(0)
    }

    /// Soft-label cache hits and misses so far.
    pub fn cache_counts(&self) -> (u64, u64) {
        (self.cache_hits.get(), self.cache_misses.get())
    }

    /// Gradient steps of attack `attack` so far (0 if never recorded).
    pub fn gradient_steps(&self, attack: &str) -> u64 {
        self.gradient_steps
            .get_metric_with_label_values(&[attack])
            .map(|counter| counter.get())
            .unwrap_or(0)
    }

    /// The last evaluation, if any.
    pub fn last_eval(&self) -> Option<EvalRecord> {
        self.last_eval
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .clone()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use prometheus::proto::MetricType;

    fn has_run_label(family: &prometheus::proto::MetricFamily, run: &str) -> bool {
        family.get_metric().iter().all(|sample| {
            sample
                .get_label()
                .iter()
                .any(|pair| pair.name() == names::RUN_LABEL && pair.value() == run)
        })
    }

    #[test]
    fn registers_every_train_metric_with_the_run_label() {
        let registry = Registry::new();
        TrainMetrics::register(&registry, "r1", &["pgd"], &["natural", "pgd20"]).expect("register");
        let families = registry.gather();
        for metric in names::ALL
            .iter()
            .filter(|m| m.registrar == names::Registrar::Train)
        {
            let family = families
                .iter()
                .find(|f| f.name() == metric.name)
                .unwrap_or_else(|| panic!("{} not exported", metric.name));
            assert!(has_run_label(family, "r1"), "{}", metric.name);
            let kind = match metric.kind {
                names::MetricKind::Counter => MetricType::COUNTER,
                names::MetricKind::Gauge => MetricType::GAUGE,
            };
            assert_eq!(family.get_field_type(), kind, "{}", metric.name);
            assert_eq!(family.help(), metric.help);
        }
    }

    #[test]
    fn records_through_handles_and_clones() {
        let registry = Registry::new();
        let metrics = TrainMetrics::register(&registry, "r", &[], &[]).expect("register");
        assert_eq!(metrics.loss(), None);
        let clone = metrics.clone();
        std::thread::spawn(move || {
            clone.set_loss(1.5);
            clone.set_lr(0.1);
            clone.set_epoch(3);
            clone.inc_train_steps(7);
            clone.inc_gradient_steps("pgd", 10);
            clone.cache_hit(128);
            clone.cache_miss(64);
            clone.set_weight_staleness(1);
        })
        .join()
        .expect("thread");
        assert_eq!(metrics.loss(), Some(1.5));
        assert_eq!(metrics.lr(), 0.1);
        assert_eq!((metrics.epoch(), metrics.train_steps()), (3, 7));
        assert_eq!(metrics.gradient_steps("pgd"), 10);
        assert_eq!(metrics.gradient_steps("fgsm"), 0);
        assert_eq!(metrics.cache_counts(), (128, 64));
        assert_eq!(metrics.weight_staleness(), 1);

        assert_eq!(metrics.last_eval(), None);
        metrics.record_eval(2, 5, &[("natural", 81.0), ("pgd20", 50.5)]);
        let eval = metrics.last_eval().expect("recorded");
        assert_eq!((eval.epoch, eval.step, eval.accuracy_pct.len()), (2, 5, 2));
        assert_eq!(eval.accuracy_pct["pgd20"], 50.5);
        metrics.set_epoch(u64::MAX);
        assert_eq!(metrics.epoch(), i64::MAX as u64);
    }

    #[test]
    fn same_run_twice_fails_and_rolls_back() {
        let registry = Registry::new();
        TrainMetrics::register(&registry, "a", &[], &[]).expect("a");
        TrainMetrics::register(&registry, "b", &[], &[]).expect("another run shares the registry");
        let error = TrainMetrics::register(&registry, "a", &[], &[]).expect_err("duplicate");
        assert!(
            error
                .to_string()
                .contains(names::ATTACK_GRADIENT_STEPS_TOTAL),
            "{error}"
        );

        // Occupy the last family: the failed attempt must leave nothing behind.
        let registry = Registry::new();
        let blocker = IntGauge::with_opts(
            Opts::new(names::WEIGHT_STALENESS, names::WEIGHT_STALENESS_HELP)
                .const_labels(const_labels("c")),
        )
        .expect("gauge");
        registry
            .register(Box::new(blocker.clone()))
            .expect("blocker");
        let error = TrainMetrics::register(&registry, "c", &[], &[]).expect_err("blocked");
        assert!(
            error.to_string().contains(names::WEIGHT_STALENESS),
            "{error}"
        );
        registry.unregister(Box::new(blocker)).expect("unblock");
        TrainMetrics::register(&registry, "c", &[], &[]).expect("rolled back");
    }
}
