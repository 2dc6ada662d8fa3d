//! Swapping `[attack] kind` in the config changes the attack stage and the
//! `attack` label of the metrics, nothing else: same stages, same queues, same
//! metric names.

mod common;

use ard_pipeline::config;
use ard_pipeline::engines::Pipeline;
use ard_pipeline::metrics::TrainMetrics;
use ard_pipeline::models::Model;
use ard_pipeline::train::{Engine, Job};
use std::collections::BTreeSet;
use tch::Device;

fn run(dir: &std::path::Path, attack: &str) -> (Vec<String>, BTreeSet<String>, Vec<(String, f64)>) {
    let text = format!(
        r#"
[run]
name = "swap"
device = "cpu"
threads = 1
[data]
root = "{root}"
download = false
checksums = "skip"
batch_size = 16
train_limit = 32
[teacher]
arch = "wrn10_1"
weights = "{dir}/teacher.safetensors"
[student]
arch = "mobilenet_v2_x0.25"
[attack]
{attack}
[loss]
kind = "ard"
[eval]
attacks = []
[metrics]
listen = ""
"#,
        root = common::cifar_root().display(),
        dir = dir.display()
    );
    let cfg = config::load_str(&text, "swap.toml", false).unwrap();
    let registry = prometheus::Registry::new();
    let label = cfg.attack.build().name();
    let metrics = TrainMetrics::register(&registry, "swap", &[label.as_str()], &[]).unwrap();
    let job = Job {
        registry: Some(&registry),
        metrics: Some(&metrics),
        ..Job::new(&cfg)
    };
    let out = Pipeline.train(job).unwrap();
    let stage_names = out
        .stages
        .unwrap()
        .stages
        .iter()
        .map(|s| s.stage.clone())
        .collect();
    let families = registry.gather();
    let names = families.iter().map(|f| f.name().to_string()).collect();
    let steps = families
        .iter()
        .filter(|f| f.name() == "ard_attack_gradient_steps_total")
        .flat_map(|f| f.get_metric().iter())
        .map(|m| {
            let label = m
                .get_label()
                .iter()
                .find(|l| l.name() == "attack")
                .map(|l| l.value().to_string())
                .unwrap_or_default();
            (label, m.get_counter().get_value())
        })
        .collect();
    (stage_names, names, steps)
}

#[test]
fn the_attack_kind_changes_only_the_attack_stage_and_its_label() {
    common::deterministic();
    let dir = tempfile::tempdir().unwrap();
    Model::new("wrn10_1".parse().unwrap(), Device::Cpu)
        .save(&dir.path().join("teacher.safetensors"))
        .unwrap();
    let (stages_a, names_a, steps_a) = run(
        dir.path(),
        "kind = \"pgd\"\nsteps = 3\nstep_size = \"2/255\"",
    );
    let (stages_b, names_b, steps_b) = run(
        dir.path(),
        "kind = \"fgsm_rs\"\nsteps = 1\nstep_size = \"10/255\"\nrandom_start = \"uniform_clamped\"",
    );
    assert_eq!(
        stages_a,
        vec!["data", "teacher", "attack", "student", "eval"]
    );
    assert_eq!(stages_a, stages_b);
    assert_eq!(names_a, names_b, "the same metric names");
    // 2 batches: 3 gradient steps each for pgd3, 1 for fgsm_rs.
    assert_eq!(steps_a, vec![("pgd3".to_string(), 6.0)]);
    assert_eq!(steps_b, vec![("fgsm_rs".to_string(), 2.0)]);
}
