//! The catastrophic-overfitting guard end to end, on a config that forces a
//! collapse: the student starts as the committed robust WRN-16-2 (first epoch
//! at a tiny learning rate, so epoch 1 keeps its robustness), then trains
//! with *no* attack (`attack.kind = "none"`, plain cross-entropy) at a normal
//! rate. That is what catastrophic overfitting degenerates to: the training
//! attack's accuracy (here the natural accuracy) holds or rises while PGD
//! accuracy on the validation split falls — with these seeds by 4 points at
//! epoch 2 (20% -> 16% under PGD-5 on 100 validation images while natural
//! goes 26% -> 28%); `guard.max_drop = 2` flags it. With
//! `guard.action = "stop"` training stops and the final result is rolled back
//! to the best-by-validation checkpoint (epoch 1).
//!
//! The sequential engine stops right after the collapsed epoch. The pipeline
//! validates off the critical path, so it stops when the eval stage gets to
//! a collapsed snapshot (possibly a few epochs later on a busy CPU); what it
//! must do then is the same.

mod common;

use ard_actors::Source;
use ard_pipeline::data::{Split, IMAGE_BYTES};
use ard_pipeline::train::overfit_guard::StopFlag;
use serde_json::Value;
use std::path::Path;
use std::process::Command;

/// The heavy runs take turns on the machine's cores.
static RUNS: std::sync::Mutex<()> = std::sync::Mutex::new(());

fn forced_collapse_config(dir: &Path, epochs: usize) -> std::path::PathBuf {
    let path = dir.join("collapse.toml");
    std::fs::write(
        &path,
        format!(
            r#"base = "{base}"
[run]
name = "collapse"
out_dir = "{out}"
threads = 1
[data]
root = "{root}"
checksums = "skip"
train_limit = 1024
batch_size = 128
[student]
arch = "wrn16_2"
init = "{init}"
[attack]
kind = "none"
[loss]
kind = "pgd_at"
clean_forward_for_bn = false
[optim]
lr = 0.0005
schedule = {{ kind = "multistep", milestones = [1], gamma = 100.0 }}
[train]
epochs = {epochs}
[eval]
every_epochs = 0
attacks = ["natural", "train_attack", "pgd5"]
test_limit = 64
validation_limit = 100
validation_attack = "pgd5"
[guard]
action = "stop"
max_drop = 2.0
"#,
            base = common::repo().join("configs/ci-smoke.toml").display(),
            out = dir.display(),
            root = common::cifar_root().display(),
            init = common::repo()
                .join("weights/teacher-cpu-wrn16_2.safetensors")
                .display(),
        ),
    )
    .unwrap();
    path
}

fn run(cfg: &Path, engine: &str) -> (String, String, Value) {
    let out = Command::new(env!("CARGO_BIN_EXE_ard-pipeline"))
        .args(["--config", cfg.to_str().unwrap(), "--engine", engine])
        .current_dir(common::repo())
        .output()
        .unwrap();
    let stdout = String::from_utf8_lossy(&out.stdout).into_owned();
    let stderr = String::from_utf8_lossy(&out.stderr).into_owned();
    assert!(out.status.success(), "{stdout}\n{stderr}");
    assert!(
        stderr.contains("catastrophic overfitting at epoch"),
        "no guard warning:\n{stderr}"
    );
    let summary = cfg.parent().unwrap().join("collapse/summary.json");
    let s = serde_json::from_str(&std::fs::read_to_string(summary).unwrap()).unwrap();
    (stdout, stderr, s)
}

/// What a guard stop must leave behind, whichever engine ran.
fn check_stopped_and_rolled_back(dir: &Path, s: &Value, stdout: &str) -> u64 {
    let guard = &s["guard"];
    assert_eq!(guard["action"], "stop", "{s}");
    let first = &guard["collapses"][0];
    let stopped = guard["stopped_after_epoch"].as_u64().expect("stopped");
    assert_eq!(first["at"]["epoch"].as_u64(), Some(stopped), "{s}");
    // The collapse is what the guard claims: a drop of at least max_drop
    // while the training-attack accuracy held or rose.
    assert!(first["drop"].as_f64().unwrap() >= 2.0, "{s}");
    assert!(
        first["at"]["train_attack"].as_f64() >= first["best"]["train_attack"].as_f64(),
        "{s}"
    );
    // Rolled back to the best-by-validation checkpoint, which predates the collapse.
    let best = s["best_epoch"].as_u64().unwrap();
    assert!(best < stopped, "{s}");
    assert_eq!(guard["rolled_back_to_epoch"].as_u64(), Some(best), "{s}");
    let run = dir.join("collapse");
    let fin = common::read(&run.join("final.safetensors"));
    let kept = common::read(&run.join("best.safetensors"));
    for (name, t) in &kept {
        assert_eq!(common::max_abs(t, &fin[name]), 0.0, "{name}");
    }
    // The final numbers are the best checkpoint's, measured on the test set.
    assert_eq!(s["final_eval"], s["best_eval"], "{s}");
    assert!(s["final_eval"]["pgd5"].is_number(), "{s}");
    assert!(stdout.contains("guard: stopped after epoch"), "{stdout}");
    stopped
}

#[test]
fn sequential_training_stops_at_a_forced_collapse_and_rolls_back() {
    let _turn = RUNS.lock().unwrap_or_else(|e| e.into_inner());
    let dir = tempfile::tempdir().unwrap();
    let cfg = forced_collapse_config(dir.path(), 6);
    let (stdout, _, s) = run(&cfg, "sequential");
    let stopped = check_stopped_and_rolled_back(dir.path(), &s, &stdout);
    // Stopped right after the collapsed epoch, long before the sixth.
    assert!(stopped < 6, "{s}");
    assert_eq!(s["epochs"].as_u64(), Some(stopped), "{s}");
    assert_eq!(s["steps"].as_u64(), Some(stopped * 8), "{s}");
    let lines = std::fs::read_to_string(dir.path().join("collapse/validation.jsonl")).unwrap();
    assert_eq!(lines.lines().count() as u64, stopped);
}

#[test]
fn the_pipeline_stops_through_the_data_stage_and_rolls_back() {
    let _turn = RUNS.lock().unwrap_or_else(|e| e.into_inner());
    let dir = tempfile::tempdir().unwrap();
    let cfg = forced_collapse_config(dir.path(), 6);
    let (stdout, stderr, s) = run(&cfg, "pipeline");
    let stopped = check_stopped_and_rolled_back(dir.path(), &s, &stdout);
    // Validating 100 images costs less than training an epoch, so the stop
    // (after the collapse at epoch 2, found during epoch 3) ends training
    // well before the sixth epoch.
    assert!(stopped < 6, "{s}");
    assert!(s["epochs"].as_u64().unwrap() < 6, "{s}");
    assert!(s["steps"].as_u64().unwrap() < 6 * 8, "{s}");
    assert!(
        stderr.contains("guard: no more training batches"),
        "the data stage did not stop:\n{stderr}"
    );
}

#[test]
fn the_data_stage_produces_nothing_once_the_flag_is_raised() {
    let n = 10;
    let split = Split::new(vec![7; n * IMAGE_BYTES], vec![3; n]).unwrap();
    let cfg = ard_pipeline::config::DataConfig {
        batch_size: 4,
        ..Default::default()
    };
    let stop = StopFlag::new();
    let mut stage = ard_pipeline::engines::pipeline::data::DataStage::new(
        split,
        cfg,
        0,
        tch::Device::Cpu,
        5,
        15,
    )
    .stopping_on(Some(stop.clone()));
    assert!(stage.produce().unwrap().is_some());
    assert!(stage.produce().unwrap().is_some());
    stop.raise();
    assert!(stage.produce().unwrap().is_none());
    // Without a flag the same stage runs all its steps.
    let split = Split::new(vec![7; n * IMAGE_BYTES], vec![3; n]).unwrap();
    let mut stage = ard_pipeline::engines::pipeline::data::DataStage::new(
        split,
        ard_pipeline::config::DataConfig {
            batch_size: 4,
            ..Default::default()
        },
        0,
        tch::Device::Cpu,
        5,
        15,
    );
    let mut produced = 0;
    while stage.produce().unwrap().is_some() {
        produced += 1;
    }
    assert_eq!(produced, 15);
}
