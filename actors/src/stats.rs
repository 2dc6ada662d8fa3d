//! Snapshots of per-stage statistics: [`StageStats`], readable while a pipeline
//! runs through a [`StatsReader`] (for a /status endpoint), and the [`RunSummary`]
//! returned when it completes (printable as a table).

use std::fmt;
use std::sync::Arc;
use std::time::Duration;

use crate::metrics::StageMetrics;

/// Totals of one stage since the pipeline was built (the same values its
/// Prometheus counters export).
#[derive(Clone, Debug, PartialEq)]
pub struct StageStats {
    /// The stage's name.
    pub stage: String,
    /// Batches processed (produced, for the source).
    pub batches: u64,
    /// Images in those batches.
    pub images: u64,
    /// Seconds working.
    pub busy_s: f64,
    /// Seconds blocked on a full output queue.
    pub blocked_s: f64,
    /// Seconds waiting on an empty input queue or a side channel.
    pub idle_s: f64,
}

/// A stage's throughput and time shares over a wall time: what a status
/// page, a plot and a benchmark show.
#[derive(Clone, Copy, Debug, Default, PartialEq)]
pub struct StageShares {
    /// Images per wall second.
    pub images_per_s: f64,
    /// Fractions of the wall time working, blocked and idle (0 for no wall time;
    /// a stage's own clock can run a little past the pipeline's).
    pub busy: f64,
    pub blocked: f64,
    pub idle: f64,
}

impl StageStats {
    /// Throughput and time shares over `wall_s` seconds.
    pub fn shares(&self, wall_s: f64) -> StageShares {
        let per_s = |value: f64| if wall_s > 0.0 { value / wall_s } else { 0.0 };
        StageShares {
            images_per_s: per_s(self.images as f64),
            busy: per_s(self.busy_s),
            blocked: per_s(self.blocked_s),
            idle: per_s(self.idle_s),
        }
    }
}

/// A cloneable, thread-safe reader of every stage's [`StageStats`], in pipeline
/// order. Obtained from [`PipelineHandle::stats_reader`](crate::PipelineHandle::stats_reader).
#[derive(Clone)]
pub struct StatsReader {
    stages: Arc<Vec<(String, StageMetrics)>>,
}

impl StatsReader {
    pub(crate) fn new(stages: Vec<(String, StageMetrics)>) -> Self {
        Self {
            stages: Arc::new(stages),
        }
    }

    /// The current totals of every stage, in pipeline order.
    pub fn snapshot(&self) -> Vec<StageStats> {
        self.stages
            .iter()
            .map(|(name, metrics)| metrics.snapshot(name))
            .collect()
    }
}

impl fmt::Debug for StatsReader {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_list().entries(self.snapshot()).finish()
    }
}

/// What a pipeline that ran to completion did: per-stage totals and wall time.
#[derive(Clone, Debug, PartialEq)]
pub struct RunSummary {
    /// From `run()` to the end of `join()`.
    pub wall: Duration,
    /// Every stage, in pipeline order.
    pub stages: Vec<StageStats>,
}

impl RunSummary {
    /// The stats of the stage named `stage`.
    pub fn stage(&self, stage: &str) -> Option<&StageStats> {
        self.stages.iter().find(|stats| stats.stage == stage)
    }
}

impl fmt::Display for RunSummary {
    /// A table: one row per stage with batches, images, images/s over the wall
    /// time, seconds busy, blocked and idle, and the busy share of the wall time.
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let wall = self.wall.as_secs_f64();
        let width = self
            .stages
            .iter()
            .map(|stats| stats.stage.len())
            .chain([5])
            .max()
            .unwrap_or(5);
        writeln!(
            f,
            "{:<width$} {:>9} {:>10} {:>10} {:>9} {:>9} {:>9} {:>6}",
            "stage", "batches", "images", "images/s", "busy_s", "blocked_s", "idle_s", "busy%"
        )?;
        for stats in &self.stages {
            let shares = stats.shares(wall);
            writeln!(
                f,
                "{:<width$} {:>9} {:>10} {:>10.1} {:>9.2} {:>9.2} {:>9.2} {:>5.1}%",
                stats.stage,
                stats.batches,
                stats.images,
                shares.images_per_s,
                stats.busy_s,
                stats.blocked_s,
                stats.idle_s,
                100.0 * shares.busy
            )?;
        }
        write!(f, "wall time {wall:.2} s")
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn summary_table_lists_every_stage() {
        let stats = |stage: &str, images| StageStats {
            stage: stage.to_owned(),
            batches: 2,
            images,
            busy_s: 1.0,
            blocked_s: 0.5,
            idle_s: 0.25,
        };
        let summary = RunSummary {
            wall: Duration::from_secs(2),
            stages: vec![stats("data", 256), stats("a_very_long_stage_name", 256)],
        };
        let table = summary.to_string();
        assert_eq!(table.lines().count(), 4, "{table}");
        assert!(table.contains("a_very_long_stage_name"));
        assert!(table.contains("128.0"), "images/s: {table}");
        assert!(table.contains("50.0%"), "busy share: {table}");
        assert_eq!(summary.stage("data").map(|s| s.images), Some(256));
        assert!(summary.stage("missing").is_none());
    }
}
