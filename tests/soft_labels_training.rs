//! The soft-label cache in training runs: a run on a full f32 cache with
//! `views = "all"` ends at bit-identical student weights to the same run with
//! the online teacher (pipeline and sequential engines), and never rewrites the
//! cache; hits and misses are counted; f16 storage moves the student only
//! slightly, and a warm cache gives the same run as a cold one; a cache of
//! another teacher or dataset is refused.

mod common;

use ard_pipeline::config::{self, Config};
use ard_pipeline::engines::{Pipeline, Sequential};
use ard_pipeline::metrics::TrainMetrics;
use ard_pipeline::models::Model;
use ard_pipeline::soft_labels::{self, command};
use ard_pipeline::train::{Engine, Job};
use std::path::Path;
use tch::{Device, Tensor};

fn config(dir: &Path, soft_labels: &str, views: &str, dtype: &str, train_limit: usize) -> Config {
    config_steps(dir, soft_labels, views, dtype, train_limit, 12)
}

fn config_steps(
    dir: &Path,
    soft_labels: &str,
    views: &str,
    dtype: &str,
    train_limit: usize,
    steps: usize,
) -> Config {
    let text = format!(
        r#"
[run]
name = "soft-labels"
device = "cpu"
seed = 9
threads = 1
out_dir = "{out}/runs"
[data]
root = "{root}"
download = false
checksums = "skip"
batch_size = 16
train_limit = {train_limit}
[teacher]
arch = "wrn10_1"
weights = "{out}/teacher.safetensors"
soft_labels = "{soft_labels}"
views = {views}
cache_dir = "{out}/cache"
cache_dtype = "{dtype}"
[student]
arch = "mobilenet_v2_x0.25"
init = "{out}/student.safetensors"
[attack]
kind = "pgd"
eps = "8/255"
step_size = "4/255"
steps = 2
bn_mode = "train"
[loss]
kind = "ard"
alpha = 0.9
temperature = 30.0
[optim]
lr = 0.05
schedule = {{ kind = "cosine" }}
[train]
epochs = 3
max_steps = {steps}
[eval]
attacks = []
[pipeline]
queue_capacity = 2
max_weight_staleness = 0
[metrics]
listen = ""
[perf]
# A cache holds what the plain f32 NCHW teacher computes: the online teacher
# computes so too, for bit-for-bit comparisons; and an f32 student, whose
# one-step move measures the f16 cache's rounding (a bf16 student's gradients
# round it to the last bf16 bit, 4e-3).
channels_last = false
teacher_dtype = "f32"
student_dtype = "f32"
"#,
        out = dir.display(),
        root = common::cifar_root().display()
    );
    config::load_str(&text, "soft-labels.toml", false).unwrap()
}

fn setup(dir: &Path) {
    tch::manual_seed(4);
    Model::new("mobilenet_v2_x0.25".parse().unwrap(), Device::Cpu)
        .save(&dir.join("student.safetensors"))
        .unwrap();
    Model::new("wrn10_1".parse().unwrap(), Device::Cpu)
        .save(&dir.join("teacher.safetensors"))
        .unwrap();
}

/// Final student variables of a pipeline run, and its cache (hits, misses).
fn pipeline(cfg: &Config) -> (Vec<(String, Tensor)>, (u64, u64)) {
    let registry = prometheus::Registry::new();
    let metrics = TrainMetrics::register(&registry, &cfg.run.name, &["pgd"], &[]).unwrap();
    let job = Job {
        registry: Some(&registry),
        metrics: Some(&metrics),
        ..Job::new(cfg)
    };
    let out = Pipeline.train(job).unwrap();
    assert_eq!(
        out.stages
            .as_ref()
            .unwrap()
            .stage("student")
            .map(|s| s.batches),
        cfg.train.max_steps.map(|s| s as u64)
    );
    (sorted(&out.student), metrics.cache_counts())
}

fn sequential(cfg: &Config) -> Vec<(String, Tensor)> {
    let out = Sequential.train(Job::new(cfg)).unwrap();
    assert_eq!(out.steps, 12);
    sorted(&out.student)
}

fn sorted(m: &Model) -> Vec<(String, Tensor)> {
    let mut v: Vec<_> = m.vs.variables().into_iter().collect();
    v.sort_by(|a, b| a.0.cmp(&b.0));
    v
}

/// Largest relative difference over all variables (0 when bit-identical).
fn max_rel(a: &[(String, Tensor)], b: &[(String, Tensor)]) -> f64 {
    assert_eq!(a.len(), b.len());
    a.iter()
        .zip(b)
        .map(|((na, ta), (nb, tb))| {
            assert_eq!(na, nb);
            common::rel_err(ta, tb, 1e-3)
        })
        .fold(0.0, f64::max)
}

fn assert_identical(a: &[(String, Tensor)], b: &[(String, Tensor)], what: &str) {
    for ((name, ta), (_, tb)) in a.iter().zip(b) {
        assert!(
            ta.equal(tb),
            "{what}: {name} differs (max abs {})",
            common::max_abs(ta, tb)
        );
    }
}

fn stamp(path: &Path) -> (std::time::SystemTime, String) {
    let meta = std::fs::metadata(path).unwrap();
    (
        meta.modified().unwrap(),
        soft_labels::identity::md5_file(path).unwrap(),
    )
}

#[test]
fn full_f32_cache_gives_the_online_weights_bit_for_bit() {
    common::deterministic();
    let dir = tempfile::tempdir().unwrap();
    setup(dir.path());
    let online = config(dir.path(), "online", "\"all\"", "f32", 80);
    let cached = config(dir.path(), "cached", "\"all\"", "f32", 80);

    let report = command::fill(&cached, None, || false, |_| {}).unwrap();
    assert_eq!(
        (report.computed, report.already, report.written),
        (80 * 162, 0, true)
    );
    let file = soft_labels::cache_path(&cached).unwrap();
    let before = stamp(&file);
    // Filling again finds nothing to do and does not touch the file.
    let again = command::fill(&cached, None, || false, |_| {}).unwrap();
    assert_eq!(
        (again.computed, again.already, again.written),
        (0, 80 * 162, false)
    );

    let (a, counts_online) = pipeline(&online);
    assert_eq!(counts_online, (0, 0));
    let (b, counts) = pipeline(&cached);
    assert_eq!(counts, (12 * 16, 0), "every image of every batch is a hit");
    assert_identical(&a, &b, "pipeline, cached vs online");

    let c = sequential(&online);
    let d = sequential(&cached);
    assert_identical(&c, &d, "sequential, cached vs online");

    // The full cache was only read: same bytes, same mtime, no lock left.
    assert_eq!(stamp(&file), before);
    assert!(!soft_labels::lock::lock_path(&file).exists());
}

#[test]
fn hits_and_misses_are_counted_and_warm_equals_cold() {
    common::deterministic();
    let dir = tempfile::tempdir().unwrap();
    setup(dir.path());
    let cfg = config(dir.path(), "cached", "2", "f16", 80);
    // Cold: epoch 1 misses all 80 images; epoch 2 draws each image's other
    // fixed view with probability 1/2; the last 2 batches mostly hit.
    let (cold, (hits, misses)) = pipeline(&cfg);
    assert_eq!(hits + misses, 12 * 16);
    assert!(
        (80..=160).contains(&misses) && hits >= 16,
        "hits {hits}, misses {misses}"
    );
    let file = soft_labels::cache_path(&cfg).unwrap();
    let cache = soft_labels::SoftLabelCache::open_any(&file).unwrap();
    assert_eq!(cache.filled(), misses, "every miss was stored once");
    assert_eq!(cache.capacity(), 160);
    drop(cache);
    let before = stamp(&file);
    // Warm: every batch hits; nothing new, so nothing is written.
    let (warm, counts) = pipeline(&cfg);
    assert_eq!(counts, (12 * 16, 0));
    assert_identical(&cold, &warm, "warm vs cold f16 cache");
    assert_eq!(stamp(&file), before);

    // f16 storage against the online teacher on the same views (views = 2
    // changes the augmentation, not the soft labels). One step moves the
    // student by ~1e-5 relative; later steps amplify any difference through
    // the attack's sign(gradient), as any last-bit change would (see
    // tests/parity_trainer.rs), so after 12 steps the trajectories differ like
    // two runs with different float rounding.
    let online = config(dir.path(), "online", "2", "f16", 80);
    let (reference, _) = pipeline(&online);
    let after_12 = max_rel(&warm, &reference);
    let one = |soft: &str| pipeline(&config_steps(dir.path(), soft, "2", "f16", 80, 1)).0;
    let after_1 = max_rel(&one("cached"), &one("online"));
    println!("f16 cache vs online teacher, max relative weight difference: {after_1:.2e} after 1 step, {after_12:.2e} after 12");
    assert!(
        after_1 > 0.0 && after_1 < 1e-3,
        "f16 moved the student by {after_1} in one step"
    );
    let mut threads2 = online.clone();
    threads2.run.threads = Some(2);
    let (t2, _) = pipeline(&threads2);
    println!(
        "for scale, the online teacher at 2 threads vs 1 thread (last-bit differences only): {:.2e} after 12 steps",
        max_rel(&t2, &reference)
    );

    // views = "all" with a cold cache: epoch 2's views are new (a repeat has
    // probability 1/162 per image), so it still mostly misses.
    let all = config(dir.path(), "cached", "\"all\"", "f16", 80);
    let (_, (hits, misses)) = pipeline(&all);
    assert_eq!(hits + misses, 12 * 16);
    assert!(misses >= 12 * 16 - 8, "hits {hits}, misses {misses}");
}

#[test]
fn a_cache_of_another_teacher_or_dataset_is_refused() {
    common::deterministic();
    let dir = tempfile::tempdir().unwrap();
    setup(dir.path());
    let cfg = config(dir.path(), "cached", "1", "f32", 80);
    command::fill(&cfg, None, || false, |_| {}).unwrap();
    let file = soft_labels::cache_path(&cfg).unwrap();
    let before = stamp(&file);

    // Other teacher weights, same architecture and path.
    let teacher = dir.path().join("teacher.safetensors");
    let original = std::fs::read(&teacher).unwrap();
    tch::manual_seed(77);
    Model::new("wrn10_1".parse().unwrap(), Device::Cpu)
        .save(&dir.path().join("teacher.safetensors"))
        .unwrap();
    let registry = prometheus::Registry::new();
    let e = Pipeline
        .train(Job {
            registry: Some(&registry),
            ..Job::new(&cfg)
        })
        .unwrap_err()
        .to_string();
    assert!(
        e.contains(&file.display().to_string()) && e.contains("teacher_weights_md5"),
        "{e}"
    );
    let e = Sequential.train(Job::new(&cfg)).unwrap_err().to_string();
    assert!(e.contains("teacher_weights_md5"), "{e}");

    // Other data: a different train_limit.
    std::fs::write(&teacher, original).unwrap();
    let fewer = config(dir.path(), "cached", "1", "f32", 64);
    let e = Sequential.train(Job::new(&fewer)).unwrap_err().to_string();
    assert!(
        e.contains(&file.display().to_string()) && e.contains("dataset_images"),
        "{e}"
    );
    assert_eq!(stamp(&file), before, "a refused cache is left as it was");
}
