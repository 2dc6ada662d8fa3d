//! At `max_weight_staleness = 0`, with deterministic settings, the five-stage
//! pipeline ends at the weights of the sequential trainer after the same steps
//! (within 1e-5 relative), for `pgd` with BatchNorm in train mode (BN
//! statistics carried from the attack replica to the student) and `kl_pgd`
//! with BatchNorm in eval mode. At staleness 1 it still trains (and differs).

mod common;

use ard_pipeline::config::{self, Config};
use ard_pipeline::engines::{Pipeline, Sequential};
use ard_pipeline::models::Model;
use ard_pipeline::train::{Engine, Job};
use tch::Device;

fn config(dir: &std::path::Path, attack: &str, loss: &str, staleness: u64) -> Config {
    let text = format!(
        r#"
[run]
name = "equivalence"
device = "cpu"
seed = 9
threads = 1
out_dir = "{out}/runs"
[data]
root = "{root}"
download = false
checksums = "skip"
batch_size = 16
train_limit = 80
[teacher]
arch = "wrn10_1"
weights = "{out}/teacher.safetensors"
[student]
arch = "mobilenet_v2_x0.25"
init = "{out}/student.safetensors"
{attack}
[loss]
{loss}
[optim]
lr = 0.05
schedule = {{ kind = "cosine" }}
[train]
epochs = 3
max_steps = 12
[eval]
attacks = []
[pipeline]
queue_capacity = 2
max_weight_staleness = {staleness}
[metrics]
listen = ""
"#,
        out = dir.display(),
        root = common::cifar_root().display()
    );
    config::load_str(&text, "equivalence.toml", false).unwrap()
}

fn setup(dir: &std::path::Path) {
    tch::manual_seed(4);
    Model::new("mobilenet_v2_x0.25".parse().unwrap(), Device::Cpu)
        .save(&dir.join("student.safetensors"))
        .unwrap();
    Model::new("wrn10_1".parse().unwrap(), Device::Cpu)
        .save(&dir.join("teacher.safetensors"))
        .unwrap();
}

fn compare(attack: &str, loss: &str) {
    common::deterministic();
    let dir = tempfile::tempdir().unwrap();
    setup(dir.path());
    let cfg = config(dir.path(), attack, loss, 0);
    let sequential = Sequential.train(Job::new(&cfg)).unwrap();
    let registry = prometheus::Registry::new();
    let piped = Pipeline
        .train(Job {
            registry: Some(&registry),
            ..Job::new(&cfg)
        })
        .unwrap();
    assert_eq!(piped.epochs.iter().map(|e| e.steps).sum::<usize>(), 12);
    let a = sequential.student.vs.variables();
    let b = piped.student.vs.variables();
    assert_eq!(a.len(), b.len());
    let start = common::read(&dir.path().join("student.safetensors"));
    let mut moved = 0;
    for (name, t) in &a {
        let e = common::rel_err(&b[name], t, 1e-3);
        assert!(
            e <= 1e-5,
            "{name}: pipeline differs from sequential: rel {e}"
        );
        moved += usize::from(common::max_abs(t, &start[name]) > 1e-6);
    }
    assert!(moved > a.len() / 2);
    // Every stage saw every batch.
    for stage in ["data", "teacher", "attack", "student"] {
        assert_eq!(
            piped
                .stages
                .as_ref()
                .unwrap()
                .stage(stage)
                .map(|s| s.batches),
            Some(12),
            "{stage}"
        );
    }
}

#[test]
fn pgd_with_train_mode_bn_matches_sequential() {
    compare(
        "[attack]\nkind = \"pgd\"\neps = \"8/255\"\nstep_size = \"4/255\"\nsteps = 2\nbn_mode = \"train\"",
        "kind = \"ard\"\nalpha = 1.0\ntemperature = 30.0\nclean_forward_for_bn = true",
    );
}

#[test]
fn kl_pgd_with_eval_mode_bn_matches_sequential() {
    compare(
        "[attack]\nkind = \"kl_pgd\"\neps = \"8/255\"\nstep_size = \"2/255\"\nsteps = 2\nrandom_start = \"normal_small\"\nbn_mode = \"eval\"",
        "kind = \"rslad\"\nkl_reduction = \"batchmean\"",
    );
}

#[test]
fn staleness_one_trains_and_overlaps() {
    common::deterministic();
    let dir = tempfile::tempdir().unwrap();
    setup(dir.path());
    let cfg = config(
        dir.path(),
        "[attack]\nkind = \"pgd\"\neps = \"8/255\"\nstep_size = \"8/255\"\nsteps = 1",
        "kind = \"ard\"\nalpha = 1.0\ntemperature = 30.0",
        1,
    );
    let registry = prometheus::Registry::new();
    let piped = Pipeline
        .train(Job {
            registry: Some(&registry),
            ..Job::new(&cfg)
        })
        .unwrap();
    assert_eq!(
        piped
            .stages
            .as_ref()
            .unwrap()
            .stage("student")
            .map(|s| s.batches),
        Some(12)
    );
    assert!(piped.epochs.iter().all(|e| e.mean_loss.is_finite()));
}
