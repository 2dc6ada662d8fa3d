//! Epoch time of 1-step ARD with the online teacher against a warm soft-label
//! cache, side by side in one run on this machine.
//!
//! `cargo bench --bench soft_labels` (about 6 minutes on 2 idle CPU cores).
//!
//! Setting: MobileNetV2 student (full width), PGD with 1 step of 8/255, ARD loss
//! (alpha 1, T 30, clean forward for BatchNorm), batch 128, random weights
//! (timing does not depend on them), CPU, the pipeline engine with its default
//! thread plan. Teachers: WRN-16-4 and WRN-34-10. An "epoch" is the first N
//! batches of the training set (`train_limit = N x 128`): 3 for WRN-16-4 and 2
//! for WRN-34-10 by default.
//!
//! Per teacher: the cache is filled ahead (`soft-labels`, untimed), then the
//! same epoch runs with the warm cache (every image a hit; the cache is
//! complete, so the teacher stage's core goes to the attack and the student),
//! then with the online teacher. The warm run goes first and pays the one-time
//! kernel set-up of the student, so the speed-up shown errs low. The cache uses
//! `views = 1` (one fixed view per image) so that the fill is N x 128 teacher
//! forwards instead of 162 times that; the online run uses the same views, so
//! both train on the same batches. Per-batch work does not depend on the view
//! policy.
//!
//! Environment: `ARD_BENCH_SMALL_BATCHES`, `ARD_BENCH_BIG_BATCHES` (batches per
//! epoch), `ARD_BENCH_TEACHERS=wrn16_4` (a subset), `ARD_BENCH_ENGINES=pipeline,sequential`
//! (also time the sequential engine: there the teacher's share of a batch shows
//! directly, as online - warm).

use ard_pipeline::config::{self, Config};
use ard_pipeline::engines::{Pipeline, Sequential};
use ard_pipeline::metrics::TrainMetrics;
use ard_pipeline::models::Model;
use ard_pipeline::soft_labels;
use ard_pipeline::train::{Engine, Job};
use std::path::Path;
use std::time::Instant;
use tch::Device;

fn cifar_root() -> std::path::PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("../shared/data/cifar-10-batches-bin")
}

fn config(dir: &Path, teacher: &str, batches: usize, soft_labels: &str) -> Config {
    let text = format!(
        r#"
[run]
name = "bench-soft-labels"
device = "cpu"
seed = 0
out_dir = "{out}/runs"
[data]
root = "{root}"
download = false
checksums = "any"
batch_size = 128
train_limit = {limit}
[teacher]
arch = "{teacher}"
weights = "{out}/{teacher}.safetensors"
soft_labels = "{soft_labels}"
views = 1
cache_dir = "{out}/cache"
cache_dtype = "f16"
[student]
arch = "mobilenet_v2"
init = "{out}/student.safetensors"
[attack]
kind = "pgd"
eps = "8/255"
step_size = "8/255"
steps = 1
random_start = "uniform"
bn_mode = "train"
[loss]
kind = "ard"
alpha = 1.0
temperature = 30.0
clean_forward_for_bn = true
[optim]
lr = 0.05
[train]
epochs = 1
[eval]
attacks = []
[metrics]
listen = ""
"#,
        out = dir.display(),
        root = cifar_root().display(),
        limit = batches * 128,
    );
    config::load_str(&text, "bench.toml", false).expect("bench config")
}

/// One timed run: epoch seconds, teacher busy share (pipeline), hits, misses.
struct Timing {
    seconds: f64,
    teacher_busy: Option<f64>,
    hits: u64,
    misses: u64,
}

fn pipeline(cfg: &Config) -> Timing {
    let registry = prometheus::Registry::new();
    let metrics = TrainMetrics::register(&registry, &cfg.run.name, &["pgd"], &[]).expect("metrics");
    let job = Job {
        registry: Some(&registry),
        metrics: Some(&metrics),
        ..Job::new(cfg)
    };
    let out = Pipeline.fit(job).expect("pipeline run");
    let summary = out.stages.as_ref().expect("the pipeline has stages");
    let wall = summary.wall.as_secs_f64();
    let (hits, misses) = metrics.cache_counts();
    Timing {
        seconds: wall,
        teacher_busy: summary.stage("teacher").map(|s| s.busy_s / wall.max(1e-9)),
        hits,
        misses,
    }
}

fn sequential(cfg: &Config) -> Timing {
    let out = Sequential.fit(Job::new(cfg)).expect("sequential run");
    Timing {
        seconds: out.epochs.iter().map(|e| e.seconds).sum(),
        teacher_busy: None,
        hits: 0,
        misses: 0,
    }
}

fn env_usize(name: &str, default: usize) -> usize {
    std::env::var(name)
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(default)
}

fn main() {
    if !cifar_root().join("data_batch_1.bin").exists() {
        eprintln!(
            "soft_labels bench: no CIFAR-10 at {}; skipped",
            cifar_root().display()
        );
        return;
    }
    env_logger::Builder::new().parse_filters("warn").init();
    let dir = tempfile::tempdir().expect("temp dir");
    tch::manual_seed(0);
    Model::new("mobilenet_v2".parse().unwrap(), Device::Cpu)
        .save(&dir.path().join("student.safetensors"))
        .expect("student weights");
    let wanted = std::env::var("ARD_BENCH_TEACHERS").unwrap_or_else(|_| "wrn16_4,wrn34_10".into());
    let cases = [
        ("wrn16_4", env_usize("ARD_BENCH_SMALL_BATCHES", 3)),
        ("wrn34_10", env_usize("ARD_BENCH_BIG_BATCHES", 2)),
    ];
    let cores = std::thread::available_parallelism()
        .map(|n| n.get())
        .unwrap_or(1);
    let load = std::fs::read_to_string("/proc/loadavg").unwrap_or_default();
    println!(
        "soft-label cache benchmark: MobileNetV2 student, PGD 1 step, batch 128, CPU, {cores} cores (load average before: {})",
        load.split_whitespace().take(3).collect::<Vec<_>>().join(" ")
    );
    for arch in ["mobilenet_v2", "wrn16_4", "wrn34_10"] {
        let macs = ard_pipeline::eval::edge::macs_per_image(arch.parse().unwrap());
        println!(
            "  {arch}: {:.3} GMAC per image per forward",
            macs as f64 / 1e9
        );
    }
    let engines = std::env::var("ARD_BENCH_ENGINES").unwrap_or_else(|_| "pipeline".into());
    let engines: Vec<&str> = engines
        .split(',')
        .map(str::trim)
        .filter(|e| ["pipeline", "sequential"].contains(e))
        .collect();
    let mut rows = Vec::new();
    for (teacher, batches) in cases
        .iter()
        .filter(|(t, _)| wanted.split(',').any(|w| w.trim() == *t))
    {
        let started = Instant::now();
        Model::new(teacher.parse().unwrap(), Device::Cpu)
            .save(&dir.path().join(format!("{teacher}.safetensors")))
            .expect("teacher weights");
        let online_cfg = config(dir.path(), teacher, *batches, "online");
        let cached_cfg = config(dir.path(), teacher, *batches, "cached");
        let fill = soft_labels::command::fill(&cached_cfg, None, || false, |_| {}).expect("fill");
        for &engine in &engines {
            let run = |cfg: &Config| {
                if engine == "pipeline" {
                    pipeline(cfg)
                } else {
                    sequential(cfg)
                }
            };
            let warm = run(&cached_cfg);
            let online = run(&online_cfg);
            if engine == "pipeline" {
                let images = (*batches * 128) as u64;
                assert_eq!(
                    (warm.hits, warm.misses),
                    (images, 0),
                    "warm cache: all hits"
                );
            }
            rows.push((*teacher, *batches, engine, online, warm));
        }
        println!(
            "{teacher}: {batches} batches; fill {:.1}s ({:.1} teacher forwards/s); {:.0}s in all",
            fill.seconds,
            fill.computed as f64 / fill.seconds.max(1e-9),
            started.elapsed().as_secs_f64()
        );
    }
    println!();
    println!(
        "{:<9} {:>7} {:<10} | {:>24} {:>24} | {:>8}",
        "teacher", "batches", "engine", "online teacher", "warm cache", "speed-up"
    );
    let share = |t: &Timing| {
        t.teacher_busy
            .map(|b| format!(" (teacher {:>3.0}%)", 100.0 * b))
            .unwrap_or_default()
    };
    for (teacher, batches, engine, online, warm) in &rows {
        println!(
            "{:<9} {:>7} {:<10} | {:>8.1}s{:<15} {:>8.1}s{:<15} | {:>7.2}x",
            teacher,
            batches,
            engine,
            online.seconds,
            share(online),
            warm.seconds,
            share(warm),
            online.seconds / warm.seconds,
        );
    }
    println!("(seconds per epoch of the given batches; teacher = busy share of the teacher stage)");
}
