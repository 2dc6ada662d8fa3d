//! The `[perf]` fast paths: `clean_forward_no_grad` is the same update bit for
//! bit; with `channels_last` or a bf16 attack the pipeline (staleness 0) still
//! ends at the sequential trainer's weights; and the section is validated.
//! (Whether they pay off, and that accuracy does not move, is measured by
//! `ard-pipeline bench` and stated in docs/src/performance.md.)

mod common;

use ard_pipeline::config::{self, Config};
use ard_pipeline::engines::{Pipeline, Sequential};
use ard_pipeline::train::{Engine, Job};
use std::path::Path;

fn config(dir: &Path, perf: &str) -> Config {
    let text = format!(
        r#"
[run]
name = "perf"
device = "cpu"
seed = 5
threads = 1
out_dir = "{out}/runs"
[data]
root = "{root}"
download = false
checksums = "skip"
batch_size = 16
train_limit = 64
[teacher]
arch = "wrn10_1"
weights = "{teacher}"
[student]
arch = "mobilenet_v2_x0.25"
init = "{student}"
[attack]
kind = "pgd"
eps = "8/255"
step_size = "4/255"
steps = 2
bn_mode = "train"
[loss]
kind = "ard"
alpha = 1.0
temperature = 30.0
clean_forward_for_bn = true
[optim]
lr = 0.05
[train]
epochs = 2
max_steps = 6
[eval]
attacks = []
[metrics]
listen = ""
[perf]
{perf}
"#,
        out = dir.display(),
        root = common::cifar_root().display(),
        teacher = dir.join("teacher.safetensors").display(),
        student = dir.join("student.safetensors").display(),
    );
    config::load_str(&text, "perf.toml", false).unwrap()
}

fn setup(dir: &Path) {
    common::random_checkpoint(dir, "student", "mobilenet_v2_x0.25", 11);
    common::random_checkpoint(dir, "teacher", "wrn10_1", 12);
}

#[test]
fn no_grad_clean_forward_is_the_same_update_bit_for_bit() {
    common::deterministic();
    let dir = tempfile::tempdir().unwrap();
    setup(dir.path());
    let plain = Sequential
        .train(Job::new(&config(
            dir.path(),
            "clean_forward_no_grad = false",
        )))
        .unwrap();
    let fast = Sequential
        .train(Job::new(&config(
            dir.path(),
            "clean_forward_no_grad = true",
        )))
        .unwrap();
    let (a, b) = (plain.student.vs.variables(), fast.student.vs.variables());
    for (name, t) in &a {
        assert_eq!(common::max_abs(&b[name], t), 0.0, "{name} differs");
    }
    assert_eq!(plain.epochs[1].mean_loss, fast.epochs[1].mean_loss);
}

fn engines_agree(perf: &str) {
    common::deterministic();
    let dir = tempfile::tempdir().unwrap();
    setup(dir.path());
    let cfg = config(dir.path(), perf);
    let sequential = Sequential.train(Job::new(&cfg)).unwrap();
    let registry = prometheus::Registry::new();
    let piped = Pipeline
        .train(Job {
            registry: Some(&registry),
            ..Job::new(&cfg)
        })
        .unwrap();
    let start = common::read(&dir.path().join("student.safetensors"));
    let (a, b) = (
        sequential.student.vs.variables(),
        piped.student.vs.variables(),
    );
    let mut moved = 0;
    for (name, t) in &a {
        let e = common::rel_err(&b[name], t, 1e-3);
        assert!(e <= 1e-5, "{perf}: {name}: pipeline differs: rel {e}");
        moved += usize::from(common::max_abs(t, &start[name]) > 1e-6);
    }
    assert!(moved > a.len() / 2, "{perf}: training moved the weights");
}

#[test]
fn channels_last_pipeline_matches_sequential() {
    engines_agree("channels_last = true");
}

#[test]
fn bf16_attack_pipeline_matches_sequential() {
    if !ard_pipeline::perf::cpu_has_native_bf16() {
        eprintln!("no native bf16 on this CPU: the bf16 attack is refused here; skipped");
        return;
    }
    engines_agree("attack_dtype = \"bf16\"\nchannels_last = true");
}

#[test]
fn bf16_student_and_teacher_pipeline_matches_sequential() {
    if !ard_pipeline::perf::cpu_has_native_bf16() {
        eprintln!("no native bf16 on this CPU: the bf16 student is refused here; skipped");
        return;
    }
    engines_agree(
        "student_dtype = \"bf16\"\nteacher_dtype = \"bf16\"\nattack_dtype = \"bf16\"\nchannels_last = true",
    );
}

fn refused(perf: &str, loss: &str) -> String {
    let text = format!(
        "[teacher]\nweights = \"t.safetensors\"\n[loss]\n{loss}\n[perf]\n{perf}\n[metrics]\nlisten = \"\"\n"
    );
    config::load_str(&text, "perf.toml", false)
        .expect_err("refused")
        .to_string()
}

#[test]
fn the_perf_section_is_validated() {
    let e = refused("channel_last = true", "kind = \"ard\"");
    assert!(e.contains("channel_last"), "{e}");
    let e = refused("attack_dtype = \"fp16\"", "kind = \"ard\"");
    assert!(e.contains("attack_dtype") || e.contains("fp16"), "{e}");
    let e = refused("student_dtype = \"half\"", "kind = \"ard\"");
    assert!(e.contains("student_dtype") || e.contains("half"), "{e}");
    let e = refused(
        "clean_forward_no_grad = true",
        "kind = \"ard\"\nalpha = 0.9",
    );
    assert!(e.contains("perf.clean_forward_no_grad"), "{e}");
    let ok = "[teacher]\nweights = \"t.safetensors\"\n[loss]\nclean_forward_for_bn = true\n[perf]\nchannels_last = true\nattack_dtype = \"bf16\"\nclean_forward_no_grad = true\n";
    config::load_str(ok, "perf.toml", false).unwrap();
}
