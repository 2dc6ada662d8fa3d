//! What `ard-pipeline bench` reports: every run, a summary row per case and
//! variant (medians over repetitions, and the ratios), the machine, and the
//! process's peak resident memory.

use super::{BenchPlan, Side};
use crate::config::SoftLabels;
use serde::{Deserialize, Serialize};
use std::collections::BTreeMap;

/// The machine the numbers come from.
#[derive(Debug, Clone, Serialize)]
pub struct Machine {
    pub cpu: String,
    /// Cores this process may use.
    pub cores: usize,
    /// Native bf16 (AVX512-BF16).
    pub native_bf16: bool,
    /// 1-, 5- and 15-minute load averages before and after the bench.
    pub load_before: Vec<f64>,
    pub load_after: Vec<f64>,
}

impl Machine {
    pub fn probe() -> Machine {
        let cpu = std::fs::read_to_string("/proc/cpuinfo")
            .ok()
            .and_then(|t| {
                t.lines()
                    .find(|l| l.starts_with("model name"))
                    .and_then(|l| l.split_once(':'))
                    .map(|(_, v)| v.trim().to_string())
            })
            .unwrap_or_else(|| std::env::consts::ARCH.to_string());
        Machine {
            cpu,
            cores: std::thread::available_parallelism()
                .map(|n| n.get())
                .unwrap_or(1),
            native_bf16: crate::perf::cpu_has_native_bf16(),
            load_before: Self::load_average(),
            load_after: Vec::new(),
        }
    }

    pub fn load_average() -> Vec<f64> {
        std::fs::read_to_string("/proc/loadavg")
            .unwrap_or_default()
            .split_whitespace()
            .take(3)
            .filter_map(|v| v.parse().ok())
            .collect()
    }
}

/// A pipeline stage's share of one run.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct StageShare {
    pub stage: String,
    pub batches: u64,
    pub images: u64,
    pub busy_s: f64,
    pub blocked_s: f64,
    pub idle_s: f64,
    /// busy_s over the run's wall time.
    pub busy_share: f64,
}

/// One timed run. A run's own process prints the fields from `images` on;
/// the bench fills in the case.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct RunRecord {
    #[serde(default)]
    pub teacher: String,
    #[serde(default)]
    pub steps: usize,
    #[serde(default = "online")]
    pub soft_labels: SoftLabels,
    #[serde(default)]
    pub batches: usize,
    #[serde(default = "reference")]
    pub side: Side,
    #[serde(default)]
    pub variant: String,
    #[serde(default)]
    pub rep: usize,
    pub images: u64,
    /// First batch to last, the first included.
    pub seconds: f64,
    pub images_per_s: f64,
    /// Mean training loss of the run's batches (the sides train the same
    /// weights on the same images, so these should be alike).
    pub mean_loss: Option<f64>,
    /// Pipeline: every stage's busy, blocked and idle time.
    pub stages: Option<Vec<StageShare>>,
    /// Reference: seconds in data, teacher, attack and student.
    pub parts: Option<BTreeMap<String, f64>>,
    /// Tuned reference: what the loop applied (malloc tunables, channels-last,
    /// bf16 autocast, graph-free clean forward, fused SGD, compile).
    #[serde(default)]
    pub tuned: Option<BTreeMap<String, serde_json::Value>>,
    /// Pipeline: soft-label cache hits and misses.
    #[serde(default)]
    pub cache_hits: Option<u64>,
    #[serde(default)]
    pub cache_misses: Option<u64>,
    /// Peak resident memory of the run's process (VmHWM / ru_maxrss), MiB.
    #[serde(default)]
    pub peak_rss_mib: Option<f64>,
    /// CPU seconds (all threads, user + system) of the run: from after
    /// start-up (imports) to the last batch, data loading and model building
    /// included, the reference's untimed soft-label pass excluded. Less
    /// sensitive than `seconds` to other processes on the machine.
    #[serde(default)]
    pub cpu_s: Option<f64>,
    /// CUDA runs: GPU memory the run's process held at its end, as
    /// `nvidia-smi` reports it (PyTorch's caching allocator keeps its peak
    /// reservation, so this is the peak plus the CUDA context), MiB.
    #[serde(default)]
    pub gpu_mib: Option<f64>,
}

fn online() -> SoftLabels {
    SoftLabels::Online
}

fn reference() -> Side {
    Side::Reference
}

impl RunRecord {
    /// A Rust run's record of `images` in `seconds`, the rest empty.
    pub(super) fn timed(images: u64, seconds: f64, mean_loss: Option<f64>) -> RunRecord {
        RunRecord {
            teacher: String::new(),
            steps: 0,
            soft_labels: SoftLabels::Online,
            batches: 0,
            side: Side::Reference,
            variant: String::new(),
            rep: 0,
            images,
            seconds,
            images_per_s: images as f64 / seconds.max(1e-9),
            mean_loss,
            stages: None,
            parts: None,
            tuned: None,
            cache_hits: None,
            cache_misses: None,
            peak_rss_mib: None,
            cpu_s: None,
            gpu_mib: None,
        }
    }
}

/// Medians over repetitions for one case and variant, and their ratios.
#[derive(Debug, Clone, Serialize)]
pub struct SummaryRow {
    pub teacher: String,
    pub steps: usize,
    pub soft_labels: SoftLabels,
    pub variant: String,
    /// Median busy share per pipeline stage.
    pub pipeline_busy_share: BTreeMap<String, f64>,
    /// Medians per side, `{side}_{figure}` (`images_per_s`, `images_per_cpu_s`,
    /// `peak_rss_mib`, `gpu_mib`), and the [`RATIOS`]; null where missing.
    #[serde(flatten)]
    pub figures: BTreeMap<String, Option<f64>>,
}

impl SummaryRow {
    /// A median or ratio by its key, e.g. `pipeline_images_per_s`.
    pub fn figure(&self, key: &str) -> Option<f64> {
        self.figures.get(key).copied().flatten()
    }
}

/// The sides of a summary row, with their key prefixes.
const SIDES: [(Side, &str); 4] = [
    (Side::Reference, "reference"),
    (Side::TunedReference, "tuned_reference"),
    (Side::Pipeline, "pipeline"),
    (Side::Sequential, "sequential"),
];

/// The ratios of a summary row: key, and the sides whose images/s it divides.
/// `speedup` over the reference's (> 1: faster); over the tuned PyTorch loop's
/// is the ratio to believe. Pipeline epoch time over the sequential trainer's
/// (target <= 1.05): same images on both, so the inverse speed ratio.
const RATIOS: [(&str, &str, &str); 5] = [
    ("pipeline_speedup_vs_reference", "pipeline", "reference"),
    ("sequential_speedup_vs_reference", "sequential", "reference"),
    ("pipeline_speedup_vs_tuned", "pipeline", "tuned_reference"),
    (
        "sequential_speedup_vs_tuned",
        "sequential",
        "tuned_reference",
    ),
    ("pipeline_time_over_sequential", "sequential", "pipeline"),
];

/// A column of the printed tables: header, [`SummaryRow::figure`] key,
/// width and decimals.
type Column = (&'static str, &'static str, usize, usize);

/// The throughput table: images/s per side | their ratios.
const SPEED_COLUMNS: [&[Column]; 2] = [
    &[
        ("ref im/s", "reference_images_per_s", 9, 2),
        ("tuned im/s", "tuned_reference_images_per_s", 10, 2),
        ("pipe im/s", "pipeline_images_per_s", 9, 2),
        ("seq im/s", "sequential_images_per_s", 9, 2),
    ],
    &[
        ("pipe/ref", "pipeline_speedup_vs_reference", 8, 2),
        ("pipe/tuned", "pipeline_speedup_vs_tuned", 10, 2),
        ("seq/ref", "sequential_speedup_vs_reference", 8, 2),
        ("tpipe/tseq", "pipeline_time_over_sequential", 9, 3),
    ],
];

/// The resources table: images per CPU-second | peak RSS, per side.
const RESOURCE_COLUMNS: [&[Column]; 2] = [
    &[
        ("ref", "reference_images_per_cpu_s", 9, 2),
        ("tuned", "tuned_reference_images_per_cpu_s", 9, 2),
        ("pipe", "pipeline_images_per_cpu_s", 9, 2),
        ("seq", "sequential_images_per_cpu_s", 9, 2),
    ],
    &[
        ("ref MiB", "reference_peak_rss_mib", 9, 0),
        ("tuned MiB", "tuned_reference_peak_rss_mib", 9, 0),
        ("pipe MiB", "pipeline_peak_rss_mib", 9, 0),
        ("seq MiB", "sequential_peak_rss_mib", 9, 0),
    ],
];

/// The GPU memory table.
const GPU_COLUMNS: [&[Column]; 1] = [&[
    ("ref", "reference_gpu_mib", 9, 0),
    ("pipe", "pipeline_gpu_mib", 9, 0),
]];

/// The whole report (`--json`).
#[derive(Debug, Clone, Serialize)]
pub struct BenchReport {
    pub machine: Machine,
    /// Where every side trained (`cpu`, `cuda:N`).
    #[serde(default)]
    pub device: String,
    pub student: String,
    pub batch_size: usize,
    /// Seconds each soft-label cache took to fill, by `teacher/batches`
    /// (untimed in the runs).
    pub cache_fill_s: BTreeMap<String, f64>,
    pub runs: Vec<RunRecord>,
    pub summary: Vec<SummaryRow>,
    /// Peak resident memory of the bench process itself (VmHWM), MiB.
    pub peak_rss_mib: Option<f64>,
    pub wall_s: f64,
}

/// A printed figure: `prec` decimals, `-` when absent.
fn cell(v: Option<f64>, prec: usize) -> String {
    v.map(|v| format!("{v:.prec$}"))
        .unwrap_or_else(|| "-".into())
}

/// The median, None of nothing.
fn median(mut v: Vec<f64>) -> Option<f64> {
    if v.is_empty() {
        return None;
    }
    v.sort_by(|a, b| a.total_cmp(b));
    let n = v.len();
    Some(if n % 2 == 1 {
        v[n / 2]
    } else {
        (v[n / 2 - 1] + v[n / 2]) / 2.0
    })
}

/// CPU seconds (user + system, every thread) this process has used so far
/// (Linux: /proc/self/stat, in USER_HZ = 100 ticks per second).
pub fn cpu_seconds() -> Option<f64> {
    let stat = std::fs::read_to_string("/proc/self/stat").ok()?;
    // Fields after the command name (which may hold spaces) start at state (field 3).
    let rest = &stat[stat.rfind(')')? + 2..];
    let fields: Vec<&str> = rest.split_whitespace().collect();
    let utime: f64 = fields.get(11)?.parse().ok()?;
    let stime: f64 = fields.get(12)?.parse().ok()?;
    Some((utime + stime) / 100.0)
}

/// GPU memory this process holds now, MiB, from `nvidia-smi` (None without
/// one, or when it does not list this process).
pub fn gpu_memory_mib() -> Option<f64> {
    let out = std::process::Command::new("nvidia-smi")
        .args([
            "--query-compute-apps=pid,used_memory",
            "--format=csv,noheader,nounits",
        ])
        .output()
        .ok()?;
    let me = std::process::id().to_string();
    String::from_utf8_lossy(&out.stdout).lines().find_map(|l| {
        let (pid, mib) = l.split_once(',')?;
        (pid.trim() == me)
            .then(|| mib.trim().parse().ok())
            .flatten()
    })
}

/// VmHWM of this process, MiB (Linux).
pub fn peak_rss_mib() -> Option<f64> {
    let status = std::fs::read_to_string("/proc/self/status").ok()?;
    let line = status.lines().find(|l| l.starts_with("VmHWM:"))?;
    let kib: f64 = line.split_whitespace().nth(1)?.parse().ok()?;
    Some(kib / 1024.0)
}

impl BenchReport {
    pub(super) fn new(
        machine: Machine,
        plan: &BenchPlan,
        runs: Vec<RunRecord>,
        cache_fill_s: BTreeMap<String, f64>,
        wall_s: f64,
    ) -> BenchReport {
        let mut summary = Vec::new();
        let mut seen = Vec::new();
        for r in &runs {
            let key = (r.teacher.clone(), r.steps, r.soft_labels);
            if !seen.contains(&key) {
                seen.push(key);
            }
        }
        for (teacher, steps, soft_labels) in seen {
            for variant in &plan.variants {
                let runs_of = |side: Side| -> Vec<&RunRecord> {
                    let variant = match side {
                        // The reference under autocast faces the AMP variants, fp32 the others.
                        Side::Reference if !variant.amp() => Some("fp32"),
                        // The tuned loop is fp32 in its update; it faces every variant.
                        Side::TunedReference => None,
                        _ => Some(variant.name.as_str()),
                    };
                    runs.iter()
                        .filter(|r| {
                            r.teacher == teacher
                                && r.steps == steps
                                && r.soft_labels == soft_labels
                                && r.side == side
                                && variant.is_none_or(|v| r.variant == v)
                        })
                        .collect()
                };
                let mut figures = BTreeMap::new();
                for (side, prefix) in SIDES {
                    let side_runs = runs_of(side);
                    let median_of = |of_run: fn(&RunRecord) -> Option<f64>| {
                        median(side_runs.iter().filter_map(|r| of_run(r)).collect())
                    };
                    let mut put = |figure: &str, v| figures.insert(format!("{prefix}_{figure}"), v);
                    put("images_per_s", median_of(|r| Some(r.images_per_s)));
                    // Images per CPU-second (all threads).
                    put(
                        "images_per_cpu_s",
                        median_of(|r| r.cpu_s.map(|c| r.images as f64 / c.max(1e-9))),
                    );
                    // Peak resident memory of the side's processes, MiB.
                    put("peak_rss_mib", median_of(|r| r.peak_rss_mib));
                    // CUDA runs: GPU memory held at the end (see [`RunRecord::gpu_mib`]).
                    if matches!(side, Side::Reference | Side::Pipeline) {
                        put("gpu_mib", median_of(|r| r.gpu_mib));
                    }
                }
                for (key, over, under) in RATIOS {
                    let speed = |side: &str| figures[&format!("{side}_images_per_s")];
                    let ratio = speed(over).zip(speed(under)).map(|(a, b)| a / b);
                    figures.insert(key.to_string(), ratio);
                }
                let mut busy: BTreeMap<String, Vec<f64>> = BTreeMap::new();
                for r in runs_of(Side::Pipeline) {
                    for s in r.stages.iter().flatten() {
                        busy.entry(s.stage.clone()).or_default().push(s.busy_share);
                    }
                }
                summary.push(SummaryRow {
                    teacher: teacher.clone(),
                    steps,
                    soft_labels,
                    variant: variant.name.clone(),
                    pipeline_busy_share: busy
                        .into_iter()
                        .filter_map(|(k, v)| median(v).map(|m| (k, m)))
                        .collect(),
                    figures,
                });
            }
        }
        BenchReport {
            machine,
            device: plan.device.clone(),
            student: plan.base.student.arch.to_string(),
            batch_size: plan.base.data.batch_size,
            cache_fill_s,
            runs,
            summary,
            peak_rss_mib: peak_rss_mib(),
            wall_s,
        }
    }

    /// The first columns of every table's header.
    fn case_header() -> String {
        format!(
            "{:<9} {:>5} {:<7} {:<20} |",
            "teacher", "steps", "labels", "variant"
        )
    }

    /// The first columns of every table: which case a row is.
    fn case_columns(r: &SummaryRow) -> String {
        format!(
            "{:<9} {:>5} {:<7} {:<20} |",
            r.teacher,
            r.steps,
            format!("{:?}", r.soft_labels).to_lowercase(),
            r.variant
        )
    }

    /// One table of summary figures: `title`, a header line, a line per row;
    /// `groups` of columns are set apart by `|`.
    fn figure_table(&self, title: &str, groups: &[&[Column]]) -> String {
        let line = |first: String, text: &dyn Fn(&Column) -> String| {
            let groups: Vec<String> = groups
                .iter()
                .map(|g| {
                    g.iter()
                        .map(|c| format!(" {:>w$}", text(c), w = c.2))
                        .collect()
                })
                .collect();
            format!("{first}{}\n", groups.join(" |"))
        };
        let mut s = format!("{title}{}", line(Self::case_header(), &|c| c.0.into()));
        for r in &self.summary {
            s.push_str(&line(Self::case_columns(r), &|c| cell(r.figure(c.1), c.3)));
        }
        s
    }

    /// The human-readable tables.
    pub fn table(&self) -> String {
        let mut s = format!(
            "ARD training throughput on {}: student {}, batch {}, CPU {} ({} cores, native bf16: {}), load {:?} -> {:?}\n\n",
            self.device,
            self.student,
            self.batch_size,
            self.machine.cpu,
            self.machine.cores,
            self.machine.native_bf16,
            self.machine.load_before,
            self.machine.load_after
        );
        s.push_str(&self.figure_table("", &SPEED_COLUMNS));
        s.push_str("(medians over repetitions; pipe/ref, seq/ref: speed-ups over the plain PyTorch loop, pipe/tuned: over the tuned one, the ratio to believe; tpipe/tseq: pipeline time over sequential time)\n");
        let stages = ["data", "teacher", "attack", "student", "eval"];
        let busy = self
            .summary
            .iter()
            .filter(|r| !r.pipeline_busy_share.is_empty());
        if busy.clone().next().is_some() {
            let head = stages.map(|st| format!(" {st:>8}")).concat();
            s.push_str(&format!(
                "\npipeline busy share of wall time\n{}{head}\n",
                Self::case_header()
            ));
            for r in busy {
                let share = |st| 100.0 * r.pipeline_busy_share.get(st).copied().unwrap_or(0.0);
                let cells = stages.map(|st| format!(" {:>7.1}%", share(st))).concat();
                s.push_str(&format!("{}{cells}\n", Self::case_columns(r)));
            }
        }
        s.push_str(&self.figure_table(
            "\nimages per CPU-second, and peak resident memory per run process (MiB)\n",
            &RESOURCE_COLUMNS,
        ));
        if self
            .summary
            .iter()
            .any(|r| GPU_COLUMNS[0].iter().any(|c| r.figure(c.1).is_some()))
        {
            s.push_str(&self.figure_table(
                "\nGPU memory held at the end of a run (nvidia-smi, MiB; the caching allocator's peak plus the CUDA context)\n",
                &GPU_COLUMNS,
            ));
        }
        let parts: Vec<&RunRecord> = self.runs.iter().filter(|r| r.parts.is_some()).collect();
        if !parts.is_empty() {
            s.push_str("\nPyTorch loops' time by part (seconds)\n");
            for r in parts {
                let p = r.parts.as_ref().expect("filtered");
                s.push_str(&format!(
                    "{:<9} {:>5} {:<7} {:<5} rep {}: {}\n",
                    r.teacher,
                    r.steps,
                    format!("{:?}", r.soft_labels).to_lowercase(),
                    r.variant,
                    r.rep,
                    p.iter()
                        .map(|(k, v)| format!("{k} {v:.2}"))
                        .collect::<Vec<_>>()
                        .join(", ")
                ));
            }
        }
        if !self.cache_fill_s.is_empty() {
            s.push_str(&format!(
                "\nsoft-label cache fill (untimed): {}\n",
                self.cache_fill_s
                    .iter()
                    .map(|(k, v)| format!("{k} {v:.1}s"))
                    .collect::<Vec<_>>()
                    .join(", ")
            ));
        }
        s.push_str(&format!(
            "peak RSS of the bench process itself: {} MiB; {:.0}s in all\n",
            cell(self.peak_rss_mib, 0),
            self.wall_s
        ));
        s
    }
}
