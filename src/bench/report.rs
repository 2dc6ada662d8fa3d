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
    pub(super) fn timed(
        images: u64,
        seconds: f64,
        mean_loss: Option<f64>,
        stages: Option<Vec<StageShare>>,
        parts: Option<BTreeMap<String, f64>>,
        cache: Option<(u64, u64)>,
    ) -> RunRecord {
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
            stages,
            parts,
            tuned: None,
            cache_hits: cache.map(|c| c.0),
            cache_misses: cache.map(|c| c.1),
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
    pub reference_images_per_s: Option<f64>,
    /// The tuned PyTorch loop ([`Side::TunedReference`]).
    #[serde(default)]
    pub tuned_reference_images_per_s: Option<f64>,
    pub pipeline_images_per_s: Option<f64>,
    pub sequential_images_per_s: Option<f64>,
    /// Pipeline images/s over the reference's (> 1: the pipeline is faster).
    pub pipeline_speedup_vs_reference: Option<f64>,
    pub sequential_speedup_vs_reference: Option<f64>,
    /// The same over the tuned PyTorch loop's: the ratio to believe.
    #[serde(default)]
    pub pipeline_speedup_vs_tuned: Option<f64>,
    #[serde(default)]
    pub sequential_speedup_vs_tuned: Option<f64>,
    /// Pipeline epoch time over the sequential trainer's (target <= 1.05).
    pub pipeline_time_over_sequential: Option<f64>,
    /// Median busy share per pipeline stage.
    pub pipeline_busy_share: BTreeMap<String, f64>,
    /// Median images per CPU-second (all threads) of each side.
    pub reference_images_per_cpu_s: Option<f64>,
    #[serde(default)]
    pub tuned_reference_images_per_cpu_s: Option<f64>,
    pub pipeline_images_per_cpu_s: Option<f64>,
    pub sequential_images_per_cpu_s: Option<f64>,
    /// Median peak resident memory of each side's processes, MiB.
    pub reference_peak_rss_mib: Option<f64>,
    #[serde(default)]
    pub tuned_reference_peak_rss_mib: Option<f64>,
    pub pipeline_peak_rss_mib: Option<f64>,
    pub sequential_peak_rss_mib: Option<f64>,
    /// CUDA runs: GPU memory held at the end of the run (see [`RunRecord::gpu_mib`]).
    #[serde(default)]
    pub reference_gpu_mib: Option<f64>,
    #[serde(default)]
    pub pipeline_gpu_mib: Option<f64>,
}

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

/// VmHWM of this process, MiB (Linux).
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
            let of_case = |side: Side, variant: Option<&str>| -> Vec<&RunRecord> {
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
            let speed = |rs: &[&RunRecord]| median(rs.iter().map(|r| r.images_per_s).collect());
            let rss =
                |rs: &[&RunRecord]| median(rs.iter().filter_map(|r| r.peak_rss_mib).collect());
            let per_cpu = |rs: &[&RunRecord]| {
                median(
                    rs.iter()
                        .filter_map(|r| r.cpu_s.map(|c| r.images as f64 / c.max(1e-9)))
                        .collect(),
                )
            };
            let gpu = |rs: &[&RunRecord]| median(rs.iter().filter_map(|r| r.gpu_mib).collect());
            for variant in &plan.variants {
                // The reference under autocast faces the AMP variants, fp32 the others.
                let reference_runs = of_case(
                    Side::Reference,
                    Some(if variant.amp { &variant.name } else { "fp32" }),
                );
                let reference = speed(&reference_runs);
                // The tuned loop is fp32 in its update; it faces every variant.
                let tuned_runs = of_case(Side::TunedReference, None);
                let tuned = speed(&tuned_runs);
                let pipeline_runs = of_case(Side::Pipeline, Some(&variant.name));
                let pipeline = speed(&pipeline_runs);
                let sequential_runs = of_case(Side::Sequential, Some(&variant.name));
                let sequential = speed(&sequential_runs);
                let ratio = |a: Option<f64>, b: Option<f64>| a.zip(b).map(|(a, b)| a / b);
                let mut busy: BTreeMap<String, Vec<f64>> = BTreeMap::new();
                for r in &pipeline_runs {
                    for s in r.stages.iter().flatten() {
                        busy.entry(s.stage.clone()).or_default().push(s.busy_share);
                    }
                }
                summary.push(SummaryRow {
                    teacher: teacher.clone(),
                    steps,
                    soft_labels,
                    variant: variant.name.clone(),
                    reference_images_per_s: reference,
                    tuned_reference_images_per_s: tuned,
                    pipeline_images_per_s: pipeline,
                    sequential_images_per_s: sequential,
                    pipeline_speedup_vs_reference: ratio(pipeline, reference),
                    sequential_speedup_vs_reference: ratio(sequential, reference),
                    pipeline_speedup_vs_tuned: ratio(pipeline, tuned),
                    sequential_speedup_vs_tuned: ratio(sequential, tuned),
                    // Same images on both: time ratio = inverse speed ratio.
                    pipeline_time_over_sequential: ratio(sequential, pipeline),
                    pipeline_busy_share: busy
                        .into_iter()
                        .filter_map(|(k, v)| median(v).map(|m| (k, m)))
                        .collect(),
                    reference_images_per_cpu_s: per_cpu(&reference_runs),
                    tuned_reference_images_per_cpu_s: per_cpu(&tuned_runs),
                    pipeline_images_per_cpu_s: per_cpu(&pipeline_runs),
                    sequential_images_per_cpu_s: per_cpu(&sequential_runs),
                    reference_peak_rss_mib: rss(&reference_runs),
                    tuned_reference_peak_rss_mib: rss(&tuned_runs),
                    pipeline_peak_rss_mib: rss(&pipeline_runs),
                    sequential_peak_rss_mib: rss(&sequential_runs),
                    reference_gpu_mib: gpu(&reference_runs),
                    pipeline_gpu_mib: gpu(&pipeline_runs),
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

    /// The human-readable tables.
    /// The first columns of every table: which case a row is.
    fn case_header() -> String {
        format!(
            "{:<9} {:>5} {:<7} {:<20} |",
            "teacher", "steps", "labels", "variant"
        )
    }

    fn case_columns(r: &SummaryRow) -> String {
        format!(
            "{:<9} {:>5} {:<7} {:<20} |",
            r.teacher,
            r.steps,
            format!("{:?}", r.soft_labels).to_lowercase(),
            r.variant
        )
    }

    pub fn table(&self) -> String {
        let f = |v: Option<f64>, prec: usize| {
            v.map(|v| format!("{v:.prec$}"))
                .unwrap_or_else(|| "-".into())
        };
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
        s.push_str(&format!(
            "{} {:>9} {:>9} {:>9} {:>9} | {:>8} {:>10} {:>8} {:>9}\n",
            Self::case_header(),
            "ref im/s",
            "tuned im/s",
            "pipe im/s",
            "seq im/s",
            "pipe/ref",
            "pipe/tuned",
            "seq/ref",
            "tpipe/tseq"
        ));
        for r in &self.summary {
            s.push_str(&format!(
                "{} {:>9} {:>10} {:>9} {:>9} | {:>8} {:>10} {:>8} {:>9}\n",
                Self::case_columns(r),
                f(r.reference_images_per_s, 2),
                f(r.tuned_reference_images_per_s, 2),
                f(r.pipeline_images_per_s, 2),
                f(r.sequential_images_per_s, 2),
                f(r.pipeline_speedup_vs_reference, 2),
                f(r.pipeline_speedup_vs_tuned, 2),
                f(r.sequential_speedup_vs_reference, 2),
                f(r.pipeline_time_over_sequential, 3),
            ));
        }
        s.push_str("(medians over repetitions; pipe/ref, seq/ref: speed-ups over the plain PyTorch loop, pipe/tuned: over the tuned one, the ratio to believe; tpipe/tseq: pipeline time over sequential time)\n");
        let stages = ["data", "teacher", "attack", "student", "eval"];
        if self
            .summary
            .iter()
            .any(|r| !r.pipeline_busy_share.is_empty())
        {
            s.push_str("\npipeline busy share of wall time\n");
            s.push_str(&Self::case_header());
            for st in stages {
                s.push_str(&format!(" {st:>8}"));
            }
            s.push('\n');
            for r in self
                .summary
                .iter()
                .filter(|r| !r.pipeline_busy_share.is_empty())
            {
                s.push_str(&Self::case_columns(r));
                for st in stages {
                    s.push_str(&format!(
                        " {:>7.1}%",
                        100.0 * r.pipeline_busy_share.get(st).copied().unwrap_or(0.0)
                    ));
                }
                s.push('\n');
            }
        }
        s.push_str(&format!(
            "\nimages per CPU-second, and peak resident memory per run process (MiB)\n{} {:>9} {:>9} {:>9} {:>9} | {:>9} {:>9} {:>9} {:>9}\n",
            Self::case_header(), "ref", "tuned", "pipe", "seq", "ref MiB", "tuned MiB", "pipe MiB", "seq MiB"
        ));
        for r in &self.summary {
            s.push_str(&format!(
                "{} {:>9} {:>9} {:>9} {:>9} | {:>9} {:>9} {:>9} {:>9}\n",
                Self::case_columns(r),
                f(r.reference_images_per_cpu_s, 2),
                f(r.tuned_reference_images_per_cpu_s, 2),
                f(r.pipeline_images_per_cpu_s, 2),
                f(r.sequential_images_per_cpu_s, 2),
                f(r.reference_peak_rss_mib, 0),
                f(r.tuned_reference_peak_rss_mib, 0),
                f(r.pipeline_peak_rss_mib, 0),
                f(r.sequential_peak_rss_mib, 0),
            ));
        }
        if self
            .summary
            .iter()
            .any(|r| r.pipeline_gpu_mib.is_some() || r.reference_gpu_mib.is_some())
        {
            s.push_str(&format!(
                "\nGPU memory held at the end of a run (nvidia-smi, MiB; the caching allocator's peak plus the CUDA context)\n{} {:>9} {:>9}\n",
                Self::case_header(), "ref", "pipe"
            ));
            for r in &self.summary {
                s.push_str(&format!(
                    "{} {:>9} {:>9}\n",
                    Self::case_columns(r),
                    f(r.reference_gpu_mib, 0),
                    f(r.pipeline_gpu_mib, 0),
                ));
            }
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
            f(self.peak_rss_mib, 0),
            self.wall_s
        ));
        s
    }
}
