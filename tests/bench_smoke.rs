//! `ard-pipeline bench` in a tiny setting (batches of 4 images, a WRN-10-1
//! teacher, a width-0.5 student, one thread): every side runs (each in its own
//! process; the tuned PyTorch loop with what it says it applied), and the JSON
//! report is well formed. No timing is asserted.

mod common;

use serde_json::Value;
use std::process::Command;

fn num(v: &Value, key: &str) -> f64 {
    v[key]
        .as_f64()
        .unwrap_or_else(|| panic!("{key} is not a number in {v}"))
}

#[test]
fn bench_runs_every_side_and_writes_its_json() {
    let dir = tempfile::tempdir().unwrap();
    let json = dir.path().join("bench.json");
    let mut variants = vec!["fp32", "channels_last"];
    if ard_pipeline::perf::cpu_has_native_bf16() {
        variants.push("bf16");
    }
    let out = Command::new(env!("CARGO_BIN_EXE_ard-pipeline"))
        .current_dir(common::repo())
        .env("ARD__DATA__ROOT", common::cifar_root())
        .env("ARD__DATA__BATCH_SIZE", "4")
        .env("ARD__STUDENT__ARCH", "mobilenet_v2_x0.5")
        .env("ARD__RUN__THREADS", "1")
        .args([
            "--log-level",
            "warn",
            "bench",
            "--config",
            "configs/bench.toml",
        ])
        .args(["--teachers", "wrn10_1", "--batches", "1", "--steps", "1"])
        .args(["--soft-labels", "online,cached"])
        .args(["--sides", "reference,tuned_reference,pipeline,sequential"])
        .args(["--variants", &variants.join(",")])
        .arg("--work-dir")
        .arg(dir.path().join("work"))
        .arg("--json")
        .arg(&json)
        .output()
        .expect("the binary runs");
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(
        out.status.success(),
        "bench failed:\n{stdout}\n{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(stdout.contains("pipeline busy share"), "{stdout}");

    let report: Value = serde_json::from_str(&std::fs::read_to_string(&json).unwrap()).unwrap();
    assert_eq!(report["student"], "mobilenet_v2_x0.5");
    assert_eq!(report["batch_size"], 4);
    assert!(num(&report["machine"], "cores") >= 1.0);
    assert!(report["machine"]["native_bf16"].is_boolean());
    assert!(num(&report, "peak_rss_mib") > 0.0);
    assert!(report["cache_fill_s"]["wrn10_1/1b"].is_number());

    let runs = report["runs"].as_array().unwrap();
    // 2 cases x (2 PyTorch loops + 2 Rust sides per variant).
    assert_eq!(runs.len(), 2 * (2 + 2 * variants.len()), "{runs:#?}");
    for run in runs {
        assert_eq!(run["teacher"], "wrn10_1");
        assert_eq!(run["images"], 4);
        let speed = num(run, "images_per_s");
        assert!(speed.is_finite() && speed > 0.0, "{run}");
        let loss = num(run, "mean_loss");
        assert!(loss.is_finite() && loss >= 0.0, "{run}");
        // Every run is its own process and reports its peak memory.
        assert!(num(run, "peak_rss_mib") > 10.0, "{run}");
        assert!(num(run, "cpu_s") > 0.0, "{run}");
        match run["side"].as_str().unwrap() {
            "reference" => {
                assert_eq!(run["variant"], "fp32");
                let parts = run["parts"].as_object().unwrap();
                for part in ["data", "teacher", "attack", "student"] {
                    assert!(parts[part].is_number(), "{run}");
                }
            }
            "tuned_reference" => {
                assert_eq!(run["variant"], "tuned");
                assert!(run["parts"]["attack"].is_number(), "{run}");
                let tuned = &run["tuned"];
                assert_eq!(tuned["channels_last"], true, "{run}");
                assert_eq!(tuned["no_grad_clean"], true, "alpha = 1: {run}");
                assert_eq!(
                    tuned["bf16_autocast"],
                    ard_pipeline::perf::cpu_has_native_bf16(),
                    "{run}"
                );
                assert!(
                    tuned["malloc_tunables"]
                        .as_str()
                        .is_some_and(|t| t.contains("glibc.malloc.mmap_max=0")),
                    "{run}"
                );
            }
            "pipeline" => {
                let stages = run["stages"].as_array().unwrap();
                let names: Vec<&str> = stages
                    .iter()
                    .map(|s| s["stage"].as_str().unwrap())
                    .collect();
                assert_eq!(names, ["data", "teacher", "attack", "student", "eval"]);
                for s in stages {
                    let share = num(s, "busy_share");
                    assert!((0.0..=1.5).contains(&share), "{s}");
                }
                if run["soft_labels"] == "cached" {
                    assert_eq!(run["cache_misses"], 0, "warm cache: {run}");
                    assert_eq!(run["cache_hits"], 4, "{run}");
                }
            }
            "sequential" => assert!(run["stages"].is_null()),
            other => panic!("unknown side {other}"),
        }
    }
    let summary = report["summary"].as_array().unwrap();
    assert_eq!(summary.len(), 2 * variants.len());
    for row in summary {
        for key in [
            "reference_images_per_s",
            "tuned_reference_images_per_s",
            "pipeline_images_per_s",
            "sequential_images_per_s",
            "pipeline_speedup_vs_reference",
            "pipeline_speedup_vs_tuned",
            "pipeline_time_over_sequential",
        ] {
            assert!(num(row, key) > 0.0, "{key} in {row}");
        }
        assert!(row["pipeline_busy_share"]["attack"].is_number());
        assert!(num(row, "pipeline_peak_rss_mib") > 0.0, "{row}");
    }
}

#[test]
fn bench_refuses_an_unknown_variant() {
    let out = Command::new(env!("CARGO_BIN_EXE_ard-pipeline"))
        .current_dir(common::repo())
        .args(["bench", "--variants", "fp16", "--sides", "pipeline"])
        .output()
        .expect("the binary runs");
    assert!(!out.status.success());
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(stderr.contains("fp16"), "{stderr}");
}
