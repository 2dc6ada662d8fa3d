//! A real Prometheus (Debian `prometheus`, on 127.0.0.1) scrapes a real
//! pipeline run and its query API returns per-stage image rates for all five
//! stages, the training series, and the attack label.

mod common;

use common::services::{self, Killed, Prometheus};
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

#[test]
fn prometheus_scrapes_every_stage_of_a_run() {
    let Some(prometheus) = services::program("prometheus") else {
        return;
    };
    let dir = tempfile::tempdir().unwrap();
    let teacher = common::random_checkpoint(dir.path(), "teacher", "wrn10_1", 0);
    let port = services::free_port();
    let cfg = dir.path().join("scrape.toml");
    std::fs::write(
        &cfg,
        format!(
            r#"
[run]
name = "scrape-test"
device = "cpu"
out_dir = "{out}"
[data]
root = "{root}"
download = false
checksums = "any"
batch_size = 32
train_limit = 384
[teacher]
arch = "wrn10_1"
weights = "{teacher}"
[student]
arch = "mobilenet_v2_x0.25"
[attack]
kind = "fgsm_rs"
eps = "8/255"
step_size = "10/255"
steps = 1
random_start = "uniform_clamped"
[loss]
kind = "ard"
[optim]
lr = 0.05
[train]
epochs = 4
[eval]
every_epochs = 1
attacks = ["natural", "pgd3"]
test_limit = 64
[metrics]
listen = "127.0.0.1:{port}"
"#,
            out = dir.path().display(),
            root = common::cifar_root().display(),
            teacher = teacher.display()
        ),
    )
    .unwrap();
    let prom = Prometheus::start(&prometheus, &[format!("127.0.0.1:{port}")], &[]);
    let mut run = Killed(
        Command::new(env!("CARGO_BIN_EXE_ard-pipeline"))
            .args(["--config", cfg.to_str().unwrap()])
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .unwrap(),
    );

    let rates = "sum by (stage) (rate(ard_stage_images_total{run=\"scrape-test\"}[20s]))";
    let deadline = Instant::now() + Duration::from_secs(240);
    let mut seen = std::collections::BTreeSet::new();
    let mut extra_ok = false;
    while Instant::now() < deadline && (seen.len() < 5 || !extra_ok) {
        for r in prom.query(rates) {
            let value: f64 = r["value"][1].as_str().unwrap_or("0").parse().unwrap_or(0.0);
            if value > 0.0 {
                seen.insert(
                    r["metric"]["stage"]
                        .as_str()
                        .unwrap_or_default()
                        .to_string(),
                );
            }
        }
        extra_ok = !prom
            .query("ard_attack_gradient_steps_total{attack=\"fgsm_rs\",run=\"scrape-test\"} > 0")
            .is_empty()
            && !prom
                .query("ard_train_loss{run=\"scrape-test\"} > 0")
                .is_empty()
            && !prom
                .query("ard_queue_depth{run=\"scrape-test\"}")
                .is_empty();
        if run.0.try_wait().unwrap().is_some() && (seen.len() < 5 || !extra_ok) {
            break;
        }
        std::thread::sleep(Duration::from_millis(500));
    }
    assert_eq!(
        seen.iter().map(String::as_str).collect::<Vec<_>>(),
        vec!["attack", "data", "eval", "student", "teacher"],
        "stages with a positive image rate"
    );
    assert!(extra_ok, "training series missing");
    let status = run.0.wait().unwrap();
    assert!(status.success(), "the run failed: {status}");
}
