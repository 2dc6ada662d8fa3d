//! `ard-pipeline bench`: ARD training throughput on this machine of the
//! PyTorch reference loop (`scripts/bench_reference.py`), plain and tuned, the
//! actor pipeline and the sequential trainer (see docs/src/performance.md).
//!
//! A plan is teachers x attack steps x soft-label source (the cases) x
//! repetitions x sides, the Rust sides once per [`Variant`]. Every run is a
//! fresh process (the hidden `bench-run` command, or Python), so that none
//! inherits another's allocator state and each reports its own peak memory.
//! The order of the sides flips on every repetition, so that load drift
//! biases none of them. All sides train the same random weights on the same
//! CIFAR-10 prefix (`batches x batch_size` images). Every clock runs from the
//! first batch (included) to the last; a soft-label cache is filled before it
//! starts, with one fixed view per image (`teacher.views = 1`, the online runs
//! too). The rest of each run's config comes from `configs/bench.toml`.

mod report;

pub use report::{BenchReport, Machine, RunRecord, StageShare, SummaryRow};

use crate::config::{ComputeDtype, ComputePlacement, Config, SoftLabels, Views};
use crate::engines::{Pipeline, Sequential};
use crate::error::{Error, Result};
use crate::metrics::TrainMetrics;
use crate::models::{Arch, Model};
use crate::soft_labels;
use crate::train::{Engine, Job};
use serde::Serialize;
use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::process::Command;
use std::str::FromStr;
use std::time::Instant;
use tch::Device;

/// Who trains.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, serde::Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Side {
    /// The PyTorch reference loop (always fp32, PyTorch's default threads).
    Reference,
    /// The same loop tuned (`bench_reference.py --tuned`): malloc tunables,
    /// channels-last, bf16 autocast where the CPU has it, a graph-free clean
    /// forward, the fused SGD step.
    TunedReference,
    /// The five-stage actor pipeline.
    Pipeline,
    /// The sequential trainer.
    Sequential,
}

impl Side {
    /// The sides that run in Python.
    fn is_pytorch(self) -> bool {
        matches!(self, Side::Reference | Side::TunedReference)
    }
}

impl FromStr for Side {
    type Err = String;
    fn from_str(s: &str) -> std::result::Result<Self, String> {
        match s {
            "reference" => Ok(Side::Reference),
            "tuned_reference" => Ok(Side::TunedReference),
            "pipeline" => Ok(Side::Pipeline),
            "sequential" => Ok(Side::Sequential),
            other => Err(format!(
                "unknown side {other:?} (reference, tuned_reference, pipeline, sequential)"
            )),
        }
    }
}

/// How the Rust sides run: `defaults` (the config's `[perf]`, `[pipeline]`
/// and threads as they are: what a user gets), or `+`-joined changes: `fp32`
/// (every rounding fast path pinned off: f32 attack and student, no
/// channels-last), `channels_last`, `bf16` (the attack in bf16),
/// `bf16_student` (the student's passes in bf16), `bf16_teacher` (the
/// online teacher in bf16), `no_grad_clean` /
/// `graph_clean` (`perf.clean_forward_no_grad` true / false),
/// `malloc_reuse` / `no_malloc_reuse` (`perf.malloc_reuse`), `shared` /
/// `per_stage` (`pipeline.compute`), `amp` (`perf.amp`, CUDA), `threads=N`
/// (`run.threads`).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Variant {
    /// The `+`-joined parts, each known (checked by `parse`).
    pub name: String,
}

impl FromStr for Variant {
    type Err = String;
    fn from_str(s: &str) -> std::result::Result<Self, String> {
        let v = Variant {
            name: s.to_string(),
        };
        v.apply(&mut Config::default())?;
        Ok(v)
    }
}

impl Variant {
    /// `cfg` with this variant's changes; an unknown part is an error.
    fn apply(&self, cfg: &mut Config) -> std::result::Result<(), String> {
        let mut parts: Vec<&str> = self.name.split('+').collect();
        // `fp32` pins the rounding paths off before the other parts, wherever it is.
        parts.sort_by_key(|&p| p != "fp32");
        let perf = &mut cfg.perf;
        for part in parts {
            match part {
                "defaults" => {}
                "fp32" => {
                    perf.channels_last = Some(false);
                    perf.attack_dtype = ComputeDtype::F32;
                    perf.student_dtype = ComputeDtype::F32;
                    perf.teacher_dtype = ComputeDtype::F32;
                }
                "channels_last" => perf.channels_last = Some(true),
                "bf16" => perf.attack_dtype = ComputeDtype::Bf16,
                "bf16_student" => perf.student_dtype = ComputeDtype::Bf16,
                "bf16_teacher" => perf.teacher_dtype = ComputeDtype::Bf16,
                "no_grad_clean" => perf.clean_forward_no_grad = Some(true),
                "graph_clean" => perf.clean_forward_no_grad = Some(false),
                "malloc_reuse" => perf.malloc_reuse = true,
                "no_malloc_reuse" => perf.malloc_reuse = false,
                "shared" => cfg.pipeline.compute = ComputePlacement::Shared,
                "per_stage" => cfg.pipeline.compute = ComputePlacement::PerStage,
                "amp" => perf.amp = true,
                _ => match part.strip_prefix("threads=").map(str::parse::<usize>) {
                    Some(Ok(n)) if n >= 1 => cfg.run.threads = Some(n),
                    _ => {
                        return Err(format!(
                            "unknown variant part {part:?} (defaults, fp32, channels_last, bf16, bf16_student, bf16_teacher, no_grad_clean, graph_clean, malloc_reuse, no_malloc_reuse, shared, per_stage, amp, threads=N, joined with +)"
                        ))
                    }
                },
            }
        }
        Ok(())
    }

    /// `perf.amp` (CUDA only); the reference then runs under autocast too.
    fn amp(&self) -> bool {
        self.name.split('+').any(|p| p == "amp")
    }
}

/// One teacher of the plan and the batches each of its runs trains.
#[derive(Debug, Clone, PartialEq)]
pub struct TeacherSpec {
    pub arch: Arch,
    pub batches: usize,
}

impl TeacherSpec {
    /// `wrn16_4` (with `default_batches`) or `wrn16_4=3`.
    pub fn parse(text: &str, default_batches: usize) -> std::result::Result<Self, String> {
        let (name, batches) = match text.split_once('=') {
            Some((n, b)) => (
                n,
                b.parse::<usize>()
                    .ok()
                    .filter(|&b| b >= 1)
                    .ok_or_else(|| format!("{text:?}: batches must be a number >= 1"))?,
            ),
            None => (text, default_batches),
        };
        Ok(TeacherSpec {
            arch: name.parse()?,
            batches,
        })
    }
}

/// What to measure.
#[derive(Debug, Clone)]
pub struct BenchPlan {
    /// The ARD settings every run starts from.
    pub base: Config,
    pub teachers: Vec<TeacherSpec>,
    pub steps: Vec<usize>,
    pub soft_labels: Vec<SoftLabels>,
    pub sides: Vec<Side>,
    pub variants: Vec<Variant>,
    pub reps: usize,
    /// The `ard-pipeline` binary that runs each Rust run (`bench-run`).
    pub exe: PathBuf,
    /// The venv's Python and the reference script (for the PyTorch sides).
    pub python: PathBuf,
    pub reference_script: PathBuf,
    /// Where weights, caches and run folders go (default: a temporary folder).
    pub work_dir: Option<PathBuf>,
    /// Where every side trains: `cpu` or `cuda:N`, resolved on this machine
    /// (the base config's `run.device`).
    pub device: String,
}

/// One timed case.
#[derive(Debug, Clone)]
struct Case {
    teacher: Arch,
    batches: usize,
    steps: usize,
    soft_labels: SoftLabels,
}

impl BenchPlan {
    /// Structural checks: non-empty lists, a base config that validates, and
    /// each run's config valid (no data or device touched).
    pub fn check(&self) -> Result<()> {
        let empty = |what: &str| Error::Usage(format!("bench: no {what} given"));
        if self.teachers.is_empty() {
            return Err(empty("teachers"));
        }
        if self.steps.is_empty() || self.steps.contains(&0) {
            return Err(Error::Usage(
                "bench: attack steps must be given and be >= 1".into(),
            ));
        }
        if self.soft_labels.is_empty() {
            return Err(empty("soft-label sources"));
        }
        if self.sides.is_empty() {
            return Err(empty("sides"));
        }
        if self.variants.is_empty() {
            return Err(empty("variants"));
        }
        if self.reps == 0 {
            return Err(Error::Usage("bench: reps must be >= 1".into()));
        }
        for case in self.cases() {
            for variant in &self.variants {
                self.config(&case, variant, Path::new("/nonexistent"), "check")?;
            }
        }
        Ok(())
    }

    fn cases(&self) -> Vec<Case> {
        let mut cases = Vec::new();
        for t in &self.teachers {
            for &soft_labels in &self.soft_labels {
                for &steps in &self.steps {
                    cases.push(Case {
                        teacher: t.arch,
                        batches: t.batches,
                        steps,
                        soft_labels,
                    });
                }
            }
        }
        cases
    }

    /// The run config of one case and variant, validated.
    fn config(&self, case: &Case, variant: &Variant, work: &Path, name: &str) -> Result<Config> {
        let mut cfg = self.base.clone();
        cfg.run.name = name.to_string();
        cfg.run.device = self.device.clone();
        cfg.run.out_dir = work.join("runs");
        cfg.run.save_final = None;
        cfg.data.train_limit = Some(case.batches * cfg.data.batch_size);
        cfg.teacher.arch = case.teacher;
        cfg.teacher.weights = Some(teacher_weights(work, case.teacher));
        cfg.teacher.soft_labels = case.soft_labels;
        cfg.teacher.views = Views::Fixed(1);
        // A cache belongs to one training prefix (its identity hashes the images).
        cfg.teacher.cache_dir = work.join(format!(
            "cache-{}-{}",
            case.teacher,
            cfg.data.train_limit.unwrap_or(0)
        ));
        cfg.student.init = Some(work.join("student.safetensors"));
        cfg.attack.steps = case.steps;
        // The paper's 1 step of eps; ARD's 2/255 for more steps.
        cfg.attack.step_size = if case.steps == 1 {
            cfg.attack.eps
        } else {
            crate::config::Real(2.0 / 255.0)
        };
        cfg.train.epochs = 1;
        cfg.train.max_steps = None;
        cfg.eval.attacks = Vec::new();
        cfg.metrics.listen = String::new();
        variant.apply(&mut cfg).map_err(Error::Usage)?;
        cfg.validate().map_err(|problems| Error::Config {
            file: format!("bench run {name}"),
            message: problems
                .iter()
                .map(|p| p.to_string())
                .collect::<Vec<_>>()
                .join("; "),
        })?;
        Ok(cfg)
    }
}

/// The soft-label cache of a case: its teacher and its images.
fn fill_key(case: &Case) -> String {
    format!("{}/{}b", case.teacher, case.batches)
}

fn teacher_weights(work: &Path, arch: Arch) -> PathBuf {
    work.join(format!("teacher-{arch}.safetensors"))
}

/// Runs the plan; `progress` receives a line per run.
pub fn run(plan: &BenchPlan, mut progress: impl FnMut(&str)) -> Result<BenchReport> {
    plan.check()?;
    let started = Instant::now();
    check_reference_tools(plan)?;
    let (work, _cleanup) = work_dir(plan)?;
    let mut machine = Machine::probe();
    write_random_weights(plan, &work)?;
    let mut runs = Vec::new();
    let mut fills = BTreeMap::new();
    for case in plan.cases() {
        let label = format!(
            "{} {}-step {:?} ({} x {})",
            case.teacher, case.steps, case.soft_labels, case.batches, plan.base.data.batch_size
        )
        .to_lowercase();
        let rust_sides: Vec<Side> = plan
            .sides
            .iter()
            .copied()
            .filter(|s| !s.is_pytorch())
            .collect();
        if case.soft_labels == SoftLabels::Cached
            && !rust_sides.is_empty()
            && !fills.contains_key(&fill_key(&case))
        {
            let cfg = plan.config(&case, &plan.variants[0], &work, "bench-fill")?;
            let fill = soft_labels::command::fill(&cfg, None, || false, |_| {})?;
            progress(&format!(
                "{}: soft-label cache filled in {:.1}s (untimed)",
                case.teacher, fill.seconds
            ));
            fills.insert(fill_key(&case), fill.seconds);
        }
        for rep in 0..plan.reps {
            for (side, variant) in run_order(plan, &rust_sides, rep) {
                let record = run_side(plan, &case, &work, side, variant, rep)?;
                progress(&format!(
                    "{label} rep {rep}: {:?} {}: {:.2} images/s ({:.1}s)",
                    side, record.variant, record.images_per_s, record.seconds
                ));
                runs.push(record);
            }
        }
    }
    machine.load_after = Machine::load_average();
    Ok(BenchReport::new(
        machine,
        plan,
        runs,
        fills,
        started.elapsed().as_secs_f64(),
    ))
}

/// The PyTorch sides need the venv's python and the reference script.
fn check_reference_tools(plan: &BenchPlan) -> Result<()> {
    if plan.sides.iter().any(|s| s.is_pytorch()) {
        for (what, path) in [
            ("python", &plan.python),
            ("reference script", &plan.reference_script),
        ] {
            if !path.is_file() {
                return Err(Error::Usage(format!(
                    "bench: no {what} at {} (run scripts/bootstrap.sh, or leave `reference` and `tuned_reference` out of --sides)",
                    path.display()
                )));
            }
        }
    }
    Ok(())
}

/// The bench's working folder: `plan.work_dir`, kept, or a temporary one
/// removed when the guard drops.
fn work_dir(plan: &BenchPlan) -> Result<(PathBuf, RemoveOnDrop)> {
    Ok(match &plan.work_dir {
        Some(dir) => {
            std::fs::create_dir_all(dir).map_err(|e| Error::io(dir, e))?;
            (dir.clone(), RemoveOnDrop(None))
        }
        None => {
            let dir = temp_dir()?;
            (dir.clone(), RemoveOnDrop(Some(dir)))
        }
    })
}

/// Random weights (timing does not depend on them), the same for every side.
fn write_random_weights(plan: &BenchPlan, work: &Path) -> Result<()> {
    tch::manual_seed(plan.base.run.seed as i64);
    Model::new(plan.base.student.arch, Device::Cpu).save(&work.join("student.safetensors"))?;
    for t in &plan.teachers {
        let path = teacher_weights(work, t.arch);
        if !path.is_file() {
            Model::new(t.arch, Device::Cpu).save(&path)?;
        }
    }
    Ok(())
}

/// The sides of one repetition in the order they run: PyTorch first, then each
/// variant's Rust sides; every odd repetition reversed, so drift over time
/// favours no side.
fn run_order<'p>(
    plan: &'p BenchPlan,
    rust_sides: &[Side],
    rep: usize,
) -> Vec<(Side, Option<&'p Variant>)> {
    let mut order: Vec<(Side, Option<&Variant>)> = Vec::new();
    if plan.sides.contains(&Side::Reference) {
        order.push((Side::Reference, None));
        // Under autocast too when the Rust sides run with AMP.
        if let Some(amp) = plan.variants.iter().find(|v| v.amp()) {
            order.push((Side::Reference, Some(amp)));
        }
    }
    if plan.sides.contains(&Side::TunedReference) {
        order.push((Side::TunedReference, None));
    }
    for variant in &plan.variants {
        for &side in rust_sides {
            order.push((side, Some(variant)));
        }
    }
    if rep % 2 == 1 {
        order.reverse();
    }
    order
}

/// One timed run of `side` (with `variant`) on `case`, labelled for the report.
fn run_side(
    plan: &BenchPlan,
    case: &Case,
    work: &Path,
    side: Side,
    variant: Option<&Variant>,
    rep: usize,
) -> Result<RunRecord> {
    let record = match (side, variant) {
        (Side::Reference, variant) => {
            reference(plan, case, work, variant.is_some_and(|v| v.amp()), false)?
        }
        (Side::TunedReference, _) => reference(plan, case, work, false, true)?,
        (side, Some(variant)) => {
            let name = format!("bench-{side:?}-{}", variant.name)
                .to_lowercase()
                .replace(|c: char| !c.is_alphanumeric() && c != '-', "_");
            let cfg = plan.config(case, variant, work, &name)?;
            rust_process(plan, side, &cfg, work)?
        }
        (_, None) => unreachable!("Rust sides always carry a variant"),
    };
    Ok(RunRecord {
        teacher: case.teacher.to_string(),
        steps: case.steps,
        soft_labels: case.soft_labels,
        batches: case.batches,
        side,
        variant: match (side, variant) {
            (Side::TunedReference, _) => "tuned".to_string(),
            (_, Some(v)) => v.name.clone(),
            (_, None) => "fp32".to_string(),
        },
        rep,
        ..record
    })
}

/// A fresh folder under the system's temp dir.
fn temp_dir() -> Result<PathBuf> {
    let dir = std::env::temp_dir().join(format!("ard-bench-{}", std::process::id()));
    std::fs::create_dir_all(&dir).map_err(|e| Error::io(&dir, e))?;
    Ok(dir)
}

/// Removes the bench's temporary folder (weights, caches, run folders) when the bench ends.
struct RemoveOnDrop(Option<PathBuf>);

impl Drop for RemoveOnDrop {
    fn drop(&mut self) {
        if let Some(dir) = &self.0 {
            let _ = std::fs::remove_dir_all(dir);
        }
    }
}

/// One Rust run in its own process: `exe bench-run --side S CONFIG`.
fn rust_process(plan: &BenchPlan, side: Side, cfg: &Config, work: &Path) -> Result<RunRecord> {
    let path = work.join(format!("{}-{side:?}.toml", cfg.run.name).to_lowercase());
    std::fs::write(&path, cfg.to_toml()).map_err(|e| Error::io(&path, e))?;
    let side_name = crate::config::spelled(&side);
    let out = Command::new(&plan.exe)
        .args(["--log-level", "warn", "bench-run", "--side", &side_name])
        .arg(&path)
        .output()
        .map_err(|e| Error::Process(format!("bench: cannot run {}: {e}", plan.exe.display())))?;
    parse_child(&out, "run")
}

/// The JSON record a child process printed last on stdout.
fn parse_child(out: &std::process::Output, what: &str) -> Result<RunRecord> {
    if !out.status.success() {
        return Err(Error::Process(format!(
            "bench: the {what} failed ({}):\n{}",
            out.status,
            String::from_utf8_lossy(&out.stderr)
        )));
    }
    let text = String::from_utf8_lossy(&out.stdout);
    let line = text.lines().last().unwrap_or_default();
    serde_json::from_str(line).map_err(|e| {
        Error::Process(format!(
            "bench: {what} output {line:?} is not its JSON: {e}"
        ))
    })
}

/// The hidden `bench-run` command: one run of the pipeline or the sequential
/// trainer from a resolved config file (no environment overrides: the
/// parent has applied them), as one JSON line of [`RunRecord`].
pub fn run_child(side: Side, config_path: &Path) -> Result<String> {
    let text = std::fs::read_to_string(config_path).map_err(|e| Error::io(config_path, e))?;
    let cfg = crate::config::load_str(&text, &config_path.display().to_string(), false)?;
    let record = run_one(side, &cfg)?;
    serde_json::to_string(&record).map_err(Error::json("the bench record"))
}

/// One run of the pipeline or the sequential trainer, in this process.
fn run_one(side: Side, cfg: &Config) -> Result<RunRecord> {
    let images = cfg.data.train_limit.unwrap_or(0) as u64;
    let cpu_before = report::cpu_seconds();
    let record = match side {
        Side::Pipeline => {
            let registry = prometheus::Registry::new();
            let metrics = TrainMetrics::register(&registry, &cfg.run.name, &["pgd"], &[])?;
            let job = Job {
                registry: Some(&registry),
                metrics: Some(&metrics),
                ..Job::new(cfg)
            };
            let out = Pipeline.fit(job)?;
            let summary = out.stages.as_ref().expect("the pipeline has stages");
            let wall = summary.wall.as_secs_f64();
            let (hits, misses) = metrics.cache_counts();
            let stages = summary
                .stages
                .iter()
                .map(|s| StageShare {
                    stage: s.stage.clone(),
                    batches: s.batches,
                    images: s.images,
                    busy_s: s.busy_s,
                    blocked_s: s.blocked_s,
                    idle_s: s.idle_s,
                    busy_share: s.shares(wall).busy,
                })
                .collect();
            RunRecord {
                stages: Some(stages),
                cache_hits: Some(hits),
                cache_misses: Some(misses),
                ..RunRecord::timed(images, wall, out.epochs.first().map(|e| e.mean_loss))
            }
        }
        Side::Sequential => {
            let out = Sequential.fit(Job::new(cfg))?;
            let seconds = out.epochs.iter().map(|e| e.seconds).sum();
            RunRecord::timed(images, seconds, out.epochs.first().map(|e| e.mean_loss))
        }
        Side::Reference | Side::TunedReference => unreachable!("the reference runs in Python"),
    };
    let cuda = cfg.run.device.starts_with("cuda");
    Ok(RunRecord {
        peak_rss_mib: report::peak_rss_mib(),
        gpu_mib: cuda.then(report::gpu_memory_mib).flatten(),
        cpu_s: report::cpu_seconds()
            .zip(cpu_before)
            .map(|(after, before)| after - before),
        ..record
    })
}

/// One run of the PyTorch reference loop, plain or `tuned`.
fn reference(
    plan: &BenchPlan,
    case: &Case,
    work: &Path,
    amp: bool,
    tuned: bool,
) -> Result<RunRecord> {
    let b = &plan.base;
    let step = if case.steps == 1 {
        b.attack.eps.get()
    } else {
        2.0 / 255.0
    };
    let mut cmd = Command::new(&plan.python);
    cmd.arg(&plan.reference_script)
        .arg("--student")
        .arg(b.student.arch.to_string())
        .arg("--student-weights")
        .arg(work.join("student.safetensors"))
        .arg("--teacher")
        .arg(case.teacher.to_string())
        .arg("--teacher-weights")
        .arg(teacher_weights(work, case.teacher))
        .arg("--data")
        .arg(&b.data.root)
        .args(["--batches", &case.batches.to_string()])
        .args(["--batch-size", &b.data.batch_size.to_string()])
        .args(["--steps", &case.steps.to_string()])
        .args(["--eps", &b.attack.eps.get().to_string()])
        .args(["--step-size", &step.to_string()])
        .args(["--alpha", &b.loss.alpha.get().to_string()])
        .args(["--temperature", &b.loss.temperature.get().to_string()])
        .args(["--lr", &b.optim.lr.get().to_string()])
        .args(["--momentum", &b.optim.momentum.get().to_string()])
        .args(["--weight-decay", &b.optim.weight_decay.get().to_string()])
        .args(["--soft-labels", &crate::config::spelled(&case.soft_labels)])
        .args(["--threads", &b.run.threads.unwrap_or(0).to_string()])
        .args(["--device", &plan.device])
        .args(["--seed", &b.run.seed.to_string()]);
    if amp {
        cmd.arg("--amp");
    }
    if tuned {
        cmd.arg("--tuned");
    }
    let out = cmd
        .output()
        .map_err(|e| Error::Process(format!("bench: cannot run {}: {e}", plan.python.display())))?;
    parse_child(&out, "reference loop")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn variants_parse() {
        let applied = |name: &str| {
            let mut cfg = Config::default();
            name.parse::<Variant>().unwrap().apply(&mut cfg).unwrap();
            cfg
        };
        let (default, bf16) = (Config::default(), ComputeDtype::Bf16);
        let cfg = applied("channels_last+bf16");
        assert_eq!(cfg.perf.channels_last, Some(true));
        assert_eq!(cfg.perf.attack_dtype, bf16);
        assert_eq!(cfg.perf.student_dtype, default.perf.student_dtype);
        assert_eq!(cfg.run.threads, default.run.threads);
        let cfg = applied("bf16+bf16_student");
        assert_eq!(
            (cfg.perf.attack_dtype, cfg.perf.student_dtype),
            (bf16, bf16)
        );
        // Neither channels_last nor fp32 (which pins it off).
        assert_eq!(cfg.perf.channels_last, default.perf.channels_last);
        // fp32 pins the rounding paths off; another part turns one back on.
        for name in ["fp32+channels_last", "channels_last+fp32"] {
            let cfg = applied(name);
            assert_eq!(cfg.perf.channels_last, Some(true));
            assert_eq!(cfg.perf.attack_dtype, ComputeDtype::F32);
        }
        // defaults: the config as it is.
        let cfg = applied("defaults");
        assert_eq!(cfg.perf.attack_dtype, ComputeDtype::Auto);
        assert_eq!(cfg.perf.channels_last, None);
        assert_eq!(applied("threads=1").run.threads, Some(1));
        assert!("bf16+amp".parse::<Variant>().unwrap().amp());
        assert!("fp16".parse::<Variant>().is_err());
        assert!("threads=0".parse::<Variant>().is_err());
    }

    #[test]
    fn teachers_parse_with_their_batches() {
        let t = TeacherSpec::parse("wrn34_10=2", 5).unwrap();
        assert_eq!((t.arch.to_string().as_str(), t.batches), ("wrn34_10", 2));
        assert_eq!(TeacherSpec::parse("wrn16_4", 5).unwrap().batches, 5);
        assert!(TeacherSpec::parse("wrn16_4=0", 5).is_err());
        assert!(TeacherSpec::parse("vgg", 5).is_err());
    }
}
