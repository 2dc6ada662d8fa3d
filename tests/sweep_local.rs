//! A tiny sweep through the `local` backend, via the binary: runs with
//! distinct names, summaries, the Table 2 report and plots; a second
//! invocation skips finished runs; a row that fails at build time is
//! reported, retried `retries` times, and makes the sweep exit non-zero.

mod common;

use std::path::{Path, PathBuf};
use std::process::Command;

/// A base run config in `dir` with a random wrn10_1 teacher (written there).
fn base_config(dir: &Path) -> PathBuf {
    tch::manual_seed(0);
    let teacher = dir.join("teacher.safetensors");
    ard_pipeline::models::Model::new("wrn10_1".parse().unwrap(), tch::Device::Cpu)
        .save(&teacher)
        .unwrap();
    let cfg = dir.join("base.toml");
    std::fs::write(
        &cfg,
        format!(
            "[run]\nname = \"tiny\"\ndevice = \"cpu\"\n[data]\nroot = \"{root}\"\ndownload = false\nchecksums = \"skip\"\nbatch_size = 32\ntrain_limit = 64\n[teacher]\narch = \"wrn10_1\"\nweights = \"{t}\"\n[student]\narch = \"mobilenet_v2_x0.25\"\n[attack]\nkind = \"pgd\"\nsteps = 1\nstep_size = \"8/255\"\n[loss]\nkind = \"ard\"\n[optim]\nlr = 0.05\n[train]\nepochs = 1\n[eval]\nevery_epochs = 1\nattacks = [\"natural\", \"train_attack\", \"pgd2\"]\ntest_limit = 32\n[metrics]\nlisten = \"\"\n",
            root = common::cifar_root().display(),
            t = teacher.display()
        ),
    )
    .unwrap();
    cfg
}

fn sweep(file: &Path) -> (i32, String, String) {
    let out = Command::new(env!("CARGO_BIN_EXE_ard-pipeline"))
        .args(["sweep", "--config", file.to_str().unwrap()])
        .current_dir(common::repo())
        .output()
        .unwrap();
    (
        out.status.code().unwrap_or(-1),
        String::from_utf8_lossy(&out.stdout).into(),
        String::from_utf8_lossy(&out.stderr).into(),
    )
}

#[test]
fn local_sweep_runs_reports_and_resumes() {
    let dir = tempfile::tempdir().unwrap();
    let base = base_config(dir.path());
    let file = dir.path().join("tiny.toml");
    let out = dir.path().join("sweeps");
    std::fs::write(
        &file,
        format!(
            "base = \"{}\"\n[sweep]\nname = \"tiny\"\nout_dir = \"{}\"\nbackend = \"local\"\nparallel = 2\nretries = 0\nmetrics_base_port = 0\npoll_s = 0.1\n[[rows]]\n\"attack.steps\" = 1\n[[rows]]\n\"attack.steps\" = 2\n\"attack.step_size\" = \"4/255\"\n",
            base.display(),
            out.display()
        ),
    )
    .unwrap();
    let started = std::time::Instant::now();
    let (code, stdout, stderr) = sweep(&file);
    assert_eq!(code, 0, "{stdout}\n{stderr}");
    eprintln!("first sweep: {:.1}s", started.elapsed().as_secs_f64());
    let sweep_dir = out.join("tiny");
    let names = ["tiny-00-as1", "tiny-01-as2-ss4_255"];
    for name in names {
        let summary = sweep_dir.join("runs").join(name).join("summary.json");
        let s: serde_json::Value =
            serde_json::from_str(&std::fs::read_to_string(&summary).unwrap()).unwrap();
        assert_eq!(s["run"], name);
        assert!(s["final_eval"]["train_attack"].is_number(), "{s}");
        assert!(sweep_dir
            .join("configs")
            .join(format!("{name}.toml"))
            .is_file());
        assert!(sweep_dir.join("logs").join(format!("{name}.log")).is_file());
    }
    // Each run trained with its own attack.
    let cfg1 =
        std::fs::read_to_string(sweep_dir.join("runs/tiny-01-as2-ss4_255/config.toml")).unwrap();
    assert!(cfg1.contains("steps = 2"), "{cfg1}");
    // The report, in the layout of Table 2.
    let csv = std::fs::read_to_string(sweep_dir.join("report.csv")).unwrap();
    let lines: Vec<&str> = csv.lines().collect();
    assert_eq!(lines.len(), 3, "{csv}");
    let header: Vec<&str> = lines[0].split(',').collect();
    for col in [
        "Epo",
        "AS",
        "StepSize",
        "LR",
        "MTL",
        "Nat@1",
        "R@1",
        "Nat",
        "R",
        "pgd2",
        "worst_case",
        "wall_s",
        "s_per_epoch",
        "attack_busy_%",
    ] {
        assert!(header.contains(&col), "{col} missing: {header:?}");
    }
    let row: Vec<&str> = lines[2].split(',').collect();
    let at = |c: &str| row[header.iter().position(|h| *h == c).unwrap()];
    assert_eq!(at("AS"), "2");
    assert_eq!(at("StepSize"), "4/255");
    assert_eq!(at("Epo"), "1");
    assert_eq!(at("status"), "ok");
    for c in [
        "MTL",
        "Nat",
        "R",
        "pgd2",
        "s_per_epoch",
        "attack_busy_%",
        "Nat@1",
    ] {
        assert!(at(c).parse::<f64>().is_ok(), "{c} = {:?} in {csv}", at(c));
    }
    let md = std::fs::read_to_string(sweep_dir.join("report.md")).unwrap();
    assert!(
        md.contains("| tiny-00-as1 |") && md.contains("| StepSize |"),
        "{md}"
    );
    for png in ["robust_vs_natural.png", "epoch_time_vs_steps.png"] {
        let bytes = std::fs::read(sweep_dir.join(png)).unwrap();
        assert!(bytes.starts_with(b"\x89PNG") && bytes.len() > 2000, "{png}");
    }

    // Resumable: a second invocation skips both runs.
    let started = std::time::Instant::now();
    let (code, stdout, stderr) = sweep(&file);
    assert_eq!(code, 0, "{stdout}\n{stderr}");
    for name in names {
        assert!(stderr.contains(&format!("skip {name}")), "{stderr}");
    }
    assert!(stdout.contains("2 skipped"), "{stdout}");
    assert!(started.elapsed().as_secs() < 20, "skipping should be quick");

    // `report` on its own rewrites the same table.
    std::fs::remove_file(sweep_dir.join("report.csv")).unwrap();
    let out = Command::new(env!("CARGO_BIN_EXE_ard-pipeline"))
        .args(["report", sweep_dir.to_str().unwrap()])
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert_eq!(
        std::fs::read_to_string(sweep_dir.join("report.csv")).unwrap(),
        csv
    );
}

#[test]
fn a_failing_row_is_retried_then_fails_the_sweep() {
    let dir = tempfile::tempdir().unwrap();
    let base = base_config(dir.path());
    let file = dir.path().join("failing.toml");
    let out = dir.path().join("sweeps");
    let missing = dir.path().join("no-such-teacher.safetensors");
    std::fs::write(
        &file,
        format!(
            "base = \"{}\"\n[sweep]\nname = \"failing\"\nout_dir = \"{}\"\nparallel = 2\nretries = 2\nmetrics_base_port = 0\npoll_s = 0.1\n[[rows]]\n\"attack.steps\" = 1\n[[rows]]\n\"teacher.weights\" = \"{}\"\n",
            base.display(),
            out.display(),
            missing.display()
        ),
    )
    .unwrap();
    let (code, stdout, stderr) = sweep(&file);
    assert_eq!(code, 1, "{stdout}\n{stderr}");
    let bad = "failing-01-weightsno-such-teacher";
    // Reported with its exit code and the tail of its log, three times (1 + 2 retries).
    let failures: Vec<&str> = stderr
        .lines()
        .filter(|l| l.contains("FAILED failing-01"))
        .collect();
    assert_eq!(failures.len(), 3, "{stderr}");
    assert!(
        failures[2].contains("attempt 3 of 3") && failures[2].contains("exit code 1"),
        "{stderr}"
    );
    assert!(
        stderr.contains("no-such-teacher"),
        "the log tail names the missing file:\n{stderr}"
    );
    assert!(
        stdout.contains("1 failed") && stdout.contains("failed: failing-01"),
        "{stdout}"
    );
    // The good row finished anyway.
    assert!(out
        .join("failing/runs/failing-00-as1/summary.json")
        .is_file());
    let logs: Vec<PathBuf> = std::fs::read_dir(out.join("failing/logs"))
        .unwrap()
        .map(|e| e.unwrap().path())
        .filter(|p| p.file_name().unwrap().to_string_lossy().starts_with(bad))
        .collect();
    assert_eq!(logs.len(), 1, "{logs:?}");
    let log = std::fs::read_to_string(&logs[0]).unwrap();
    assert_eq!(log.matches("=== attempt").count(), 3, "{log}");
    // The report marks it.
    let csv = std::fs::read_to_string(out.join("failing/report.csv")).unwrap();
    assert_eq!(csv.lines().count(), 3, "{csv}");
    assert!(
        csv.lines().nth(2).unwrap().ends_with(",failed")
            || csv.lines().nth(2).unwrap().ends_with(",missing"),
        "{csv}"
    );
}
