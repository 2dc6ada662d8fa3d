//! The per-stage table printed at the end of a pipeline run: each stage's
//! throughput and how its wall time divides. The four share columns add up to
//! 100% of the run's wall time (the last one is what the stage's own clocks
//! did not count), and a legend line says what each measures.

/// One stage's figures: images per wall second and shares (0 to 1) of the
/// run's wall time.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct StageRow<'a> {
    pub stage: &'a str,
    pub images_per_s: f64,
    pub busy: f64,
    pub blocked: f64,
    pub idle: f64,
}

/// What the share columns measure, printed under the table.
pub const LEGEND: &str = "shares of the run's wall time: busy = computing, blocked = waiting on \
     a full output queue, idle = waiting for input, other = before the stage's first batch or \
     after its last";

/// The table with its legend; empty for no stages (the sequential engine).
pub fn stage_table<'a>(rows: impl IntoIterator<Item = StageRow<'a>>) -> String {
    let mut body = String::new();
    for row in rows {
        // Shares in tenths of a percent, rounded each; `other` is what is
        // left of 1000, so the printed columns add up to 100.0%.
        let tenths = |share: f64| (share.clamp(0.0, 1.0) * 1000.0).round() as i64;
        let (busy, blocked, idle) = (tenths(row.busy), tenths(row.blocked), tenths(row.idle));
        // A stage's clock can run a little past the pipeline's: cap the sum.
        let blocked = blocked.min(1000 - busy);
        let idle = idle.min(1000 - busy - blocked);
        let other = 1000 - busy - blocked - idle;
        let pct = |t: i64| format!("{:.1}%", t as f64 / 10.0);
        body.push_str(&format!(
            "{:<10} {:>10.1} {:>7} {:>8} {:>7} {:>7}\n",
            row.stage,
            row.images_per_s,
            pct(busy),
            pct(blocked),
            pct(idle),
            pct(other)
        ));
    }
    if body.is_empty() {
        return body;
    }
    format!(
        "{:<10} {:>10} {:>7} {:>8} {:>7} {:>7}\n{body}({LEGEND})\n",
        "stage", "images/s", "busy", "blocked", "idle", "other"
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    fn row(busy: f64, blocked: f64, idle: f64) -> StageRow<'static> {
        StageRow {
            stage: "data",
            images_per_s: 116.0,
            busy,
            blocked,
            idle,
        }
    }

    /// The four printed percentages of each stage line.
    fn shares(table: &str) -> Vec<Vec<f64>> {
        table
            .lines()
            .filter(|l| l.starts_with("data"))
            .map(|l| {
                l.split_whitespace()
                    .skip(2)
                    .map(|c| c.trim_end_matches('%').parse().unwrap())
                    .collect()
            })
            .collect()
    }

    #[test]
    fn the_columns_add_up_to_the_wall_time() {
        // The case: a source blocked 75.8% of the run and done early.
        let rows = [
            row(0.0004, 0.758, 0.0),
            row(0.3333, 0.3333, 0.3333),
            row(0.5, 0.6, 0.0),
        ];
        let table = stage_table(rows);
        let lines = shares(&table);
        assert_eq!(lines.len(), 3, "{table}");
        assert_eq!(lines[0], vec![0.0, 75.8, 0.0, 24.2], "{table}");
        for l in &lines {
            let sum: f64 = l.iter().sum();
            assert!(
                (sum - 100.0).abs() < 1e-9,
                "{l:?} adds up to {sum}\n{table}"
            );
        }
        assert!(table.contains("other") && table.contains(LEGEND), "{table}");
    }

    #[test]
    fn no_stages_no_table() {
        assert_eq!(stage_table([]), "");
    }
}
