//! The shared instrumentation check: every stage exports every metric in
//! [`REQUIRED_STAGE_METRICS`], with at least one batch and one image counted, and
//! every queue exports [`QUEUE_DEPTH`]. Used by this crate's tests and meant for
//! the tests of crates that implement real stages.
//!
//! [`REQUIRED_STAGE_METRICS`]: crate::metrics_names::REQUIRED_STAGE_METRICS
//! [`QUEUE_DEPTH`]: crate::metrics_names::QUEUE_DEPTH

use prometheus::proto::{Metric, MetricFamily, MetricType};
use prometheus::Registry;

use crate::metrics_names as names;

/// Checks, after a run, that each of `stages` exported each required stage metric
/// with nonzero batches and images, and that each of `queues` exported its depth.
/// Returns every problem found, one line each.
pub fn check_stage_metrics(
    registry: &Registry,
    stages: &[&str],
    queues: &[&str],
) -> Result<(), Vec<String>> {
    let families = registry.gather();
    let mut problems = Vec::new();
    for &metric in &names::REQUIRED_STAGE_METRICS {
        for &stage in stages {
            match sample(&families, metric, names::STAGE_LABEL, stage) {
                None => problems.push(format!("{metric}{{stage=\"{stage}\"}} is missing")),
                Some(value) => {
                    let counted =
                        metric == names::STAGE_BATCHES_TOTAL || metric == names::STAGE_IMAGES_TOTAL;
                    if counted && value <= 0.0 {
                        problems.push(format!("{metric}{{stage=\"{stage}\"}} is {value}"));
                    }
                }
            }
        }
    }
    for &queue in queues {
        if sample(&families, names::QUEUE_DEPTH, names::QUEUE_LABEL, queue).is_none() {
            problems.push(format!(
                "{}{{queue=\"{queue}\"}} is missing",
                names::QUEUE_DEPTH
            ));
        }
    }
    if problems.is_empty() {
        Ok(())
    } else {
        Err(problems)
    }
}

/// The value of the sample of `metric` whose `label` is `value`, if exported.
fn sample(families: &[MetricFamily], metric: &str, label: &str, value: &str) -> Option<f64> {
    families
        .iter()
        .filter(|family| family.name() == metric)
        .find_map(|family| {
            let sample = family
                .get_metric()
                .iter()
                .find(|sample| has_label(sample, label, value))?;
            Some(match family.get_field_type() {
                MetricType::COUNTER => sample.get_counter().get_value(),
                MetricType::GAUGE => sample.get_gauge().get_value(),
                _ => f64::NAN,
            })
        })
}

fn has_label(sample: &Metric, label: &str, value: &str) -> bool {
    sample
        .get_label()
        .iter()
        .any(|pair| pair.name() == label && pair.value() == value)
}

#[cfg(test)]
mod tests {
    use super::*;
    use prometheus::{IntCounterVec, Opts};

    #[test]
    fn reports_missing_metrics_and_zero_counts() {
        let registry = Registry::new();
        let batches = IntCounterVec::new(
            Opts::new(names::STAGE_BATCHES_TOTAL, names::STAGE_BATCHES_TOTAL_HELP),
            &[names::STAGE_LABEL],
        )
        .expect("vec");
        registry
            .register(Box::new(batches.clone()))
            .expect("register");
        batches.with_label_values(&["a"]).inc();
        batches.with_label_values(&["b"]);
        let problems = check_stage_metrics(&registry, &["a", "b"], &["a_to_b"])
            .expect_err("most metrics are missing");
        assert!(problems.contains(&"ard_stage_batches_total{stage=\"b\"} is 0".to_owned()));
        assert!(!problems
            .iter()
            .any(|p| p.starts_with("ard_stage_batches_total{stage=\"a\"")));
        assert!(problems.contains(&"ard_stage_images_total{stage=\"a\"} is missing".to_owned()));
        assert!(problems.contains(&"ard_queue_depth{queue=\"a_to_b\"} is missing".to_owned()));
    }
}
