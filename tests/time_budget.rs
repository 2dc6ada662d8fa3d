//! `train.max_seconds`: both engines stop once the training-time budget is
//! spent, with the schedule annealed over the budget's time (`train.epochs`
//! only bounds it), record the seconds spent, and a resumed run continues the
//! clock instead of restarting it.

mod common;

use common::services::{self, Killed};
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

const BUDGET_S: f64 = 8.0;
/// No run here may take longer (a hang, not a slow machine).
const RUN_LIMIT: Duration = Duration::from_secs(300);

/// The tests here measure training time: run them one at a time, so that
/// none of them trains on cores another one is using.
static ONE_AT_A_TIME: std::sync::Mutex<()> = std::sync::Mutex::new(());

fn write_config(dir: &Path, name: &str, teacher: &Path, port: u16) -> PathBuf {
    let path = dir.join(format!("{name}.toml"));
    std::fs::write(
        &path,
        format!(
            "[run]\nname = \"{name}\"\ndevice = \"cpu\"\nthreads = 1\nout_dir = \"{out}\"\ncheckpoint_every_steps = 4\n\
             [data]\nroot = \"{root}\"\ndownload = false\nchecksums = \"skip\"\nbatch_size = 32\ntrain_limit = 256\n\
             [teacher]\narch = \"wrn10_1\"\nweights = \"{t}\"\n\
             [student]\narch = \"mobilenet_v2_x0.25\"\n\
             [attack]\nkind = \"pgd\"\nsteps = 1\nstep_size = \"8/255\"\n\
             [loss]\nkind = \"ard\"\n\
             [optim]\nlr = 0.1\nschedule = {{ kind = \"one_cycle\", peak_at = 0.3 }}\n\
             [train]\nepochs = 1000\nmax_seconds = {BUDGET_S}\n\
             [eval]\nevery_epochs = 2\nattacks = [\"natural\"]\ntest_limit = 64\n\
             [metrics]\nlisten = \"127.0.0.1:{port}\"\n",
            out = dir.display(),
            root = common::cifar_root().display(),
            t = teacher.display()
        ),
    )
    .unwrap();
    path
}

fn records(run: &Path) -> Vec<serde_json::Value> {
    common::jsonl(&run.join("metrics.jsonl"))
}

/// Whether the run has written a whole epoch record yet (read while it writes).
fn has_a_record(run: &Path) -> bool {
    std::fs::read_to_string(run.join("metrics.jsonl"))
        .unwrap_or_default()
        .lines()
        .any(|l| serde_json::from_str::<serde_json::Value>(l).is_ok())
}

/// Whether `spent` seconds is the budget and at most the one step begun after
/// it (steps of `step_s` seconds; a loaded machine's steps are long, so the
/// bound grows with them, but a backlog of several steps trained after the
/// budget is still caught).
fn within_a_step(spent: f64, step_s: f64) -> bool {
    (BUDGET_S..BUDGET_S + (3.0 * step_s).max(3.0)).contains(&spent)
}

/// The run spent its budget, about one step over, and ended annealed.
fn assert_spent(run: &Path) {
    let epochs = records(run);
    let last = epochs.last().expect("an epoch record");
    let spent = last["train_seconds"]
        .as_f64()
        .expect("train_seconds recorded");
    let step_s = epochs
        .iter()
        .map(|e| e["seconds"].as_f64().unwrap() / e["steps"].as_f64().unwrap().max(1.0))
        .fold(0.0, f64::max);
    assert!(
        within_a_step(spent, step_s),
        "spent {spent} s of a {BUDGET_S} s budget, steps of up to {step_s:.2} s"
    );
    assert!(epochs.len() < 1000, "the budget did not stop it");
    let lr = last["lr"].as_f64().unwrap();
    assert!(
        lr < 0.01,
        "the schedule did not anneal over the budget: lr {lr}"
    );
    let seconds: Vec<f64> = epochs
        .iter()
        .map(|e| e["train_seconds"].as_f64().unwrap())
        .collect();
    assert!(seconds.windows(2).all(|w| w[0] <= w[1]), "{seconds:?}");
    let summary: serde_json::Value =
        serde_json::from_str(&std::fs::read_to_string(run.join("summary.json")).unwrap()).unwrap();
    assert!(
        summary["final_eval"]["natural"].as_f64().is_some(),
        "{summary}"
    );
}

#[test]
fn both_engines_stop_when_the_budget_is_spent() {
    let _one = ONE_AT_A_TIME.lock().unwrap_or_else(|e| e.into_inner());
    let dir = tempfile::tempdir().unwrap();
    let teacher = common::random_checkpoint(dir.path(), "teacher", "wrn10_1", 3);
    for engine in ["pipeline", "sequential"] {
        let cfg = write_config(dir.path(), engine, &teacher, services::free_port());
        let out = common::output_within(
            Command::new(env!("CARGO_BIN_EXE_ard-pipeline")).args([
                "--config",
                cfg.to_str().unwrap(),
                "--engine",
                engine,
            ]),
            RUN_LIMIT,
        );
        assert!(
            out.status.success(),
            "{engine}: {}",
            String::from_utf8_lossy(&out.stderr)
        );
        assert_spent(&dir.path().join(engine));
    }
}

#[test]
fn a_resumed_run_continues_the_clock() {
    let _one = ONE_AT_A_TIME.lock().unwrap_or_else(|e| e.into_inner());
    let dir = tempfile::tempdir().unwrap();
    let teacher = common::random_checkpoint(dir.path(), "teacher", "wrn10_1", 3);
    let port = services::free_port();
    let cfg = write_config(dir.path(), "r", &teacher, port);
    let command = || {
        let mut c = Command::new(env!("CARGO_BIN_EXE_ard-pipeline"));
        c.args(["--config", cfg.to_str().unwrap()]);
        c
    };
    let mut child = Killed(
        command()
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .unwrap(),
    );
    // Kill it after a checkpoint past half the budget and an epoch's record
    // (on a loaded machine half the budget can pass inside the first epoch).
    let ckpt = dir.path().join("r/checkpoint.safetensors");
    let deadline = Instant::now() + Duration::from_secs(120);
    loop {
        assert!(
            Instant::now() < deadline,
            "no checkpoint past half the budget"
        );
        assert!(child.0.try_wait().unwrap().is_none(), "the run ended early");
        if let Ok(all) = tch::Tensor::read_safetensors(&ckpt) {
            let state = all.iter().find(|(n, _)| n == "__state__").unwrap();
            let state: serde_json::Value =
                serde_json::from_slice(&Vec::<u8>::try_from(&state.1).unwrap()).unwrap();
            if state["position"]["train_seconds"].as_f64().unwrap_or(0.0) > BUDGET_S / 2.0
                && has_a_record(&dir.path().join("r"))
            {
                break;
            }
        }
        std::thread::sleep(Duration::from_millis(50));
    }
    child.0.kill().unwrap();
    child.0.wait().unwrap();
    let started = Instant::now();
    let out = common::output_within(&mut command(), RUN_LIMIT);
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(
        String::from_utf8_lossy(&out.stderr).contains("resuming"),
        "did not resume"
    );
    // Records before and after the kill: the clock never went back (a
    // restarted clock would record fewer seconds after the resumption).
    assert!(records(&dir.path().join("r")).len() >= 2);
    assert_spent(&dir.path().join("r"));
    assert!(
        started.elapsed().as_secs_f64() < 3.0 * BUDGET_S + 30.0,
        "the resumed run took {:?}",
        started.elapsed()
    );
}

/// The checkpoint's recorded position and its `finished` flag, which `set_unfinished` clears.
fn checkpoint_state(run: &Path, set_unfinished: bool) -> serde_json::Value {
    let path = run.join("checkpoint.safetensors");
    let mut all = tch::Tensor::read_safetensors(&path).unwrap();
    let at = all.iter().position(|(n, _)| n == "__state__").unwrap();
    let mut state: serde_json::Value =
        serde_json::from_slice(&Vec::<u8>::try_from(&all[at].1).unwrap()).unwrap();
    if set_unfinished {
        state["finished"] = serde_json::Value::Bool(false);
        let bytes = serde_json::to_vec(&state).unwrap();
        all[at].1 = tch::Tensor::from_slice(&bytes);
        tch::Tensor::write_safetensors(&all, &path).unwrap();
    }
    state
}

#[test]
fn a_run_resumed_after_its_budget_was_spent_trains_no_more() {
    let _one = ONE_AT_A_TIME.lock().unwrap_or_else(|e| e.into_inner());
    // Stopped during the final evaluation: the checkpoint holds the budget's
    // last step. Resuming evaluates and finishes without another step.
    let dir = tempfile::tempdir().unwrap();
    let teacher = common::random_checkpoint(dir.path(), "teacher", "wrn10_1", 3);
    for engine in ["pipeline", "sequential"] {
        let cfg = write_config(dir.path(), engine, &teacher, 0);
        let run = || {
            common::output_within(
                Command::new(env!("CARGO_BIN_EXE_ard-pipeline")).args([
                    "--config",
                    cfg.to_str().unwrap(),
                    "--engine",
                    engine,
                ]),
                RUN_LIMIT,
            )
        };
        let out = run();
        assert!(
            out.status.success(),
            "{engine}: {}",
            String::from_utf8_lossy(&out.stderr)
        );
        let folder = dir.path().join(engine);
        let before = checkpoint_state(&folder, true);
        let steps = |records: &[serde_json::Value]| -> u64 {
            records.iter().map(|r| r["steps"].as_u64().unwrap()).sum()
        };
        let trained = steps(&records(&folder));
        std::fs::remove_file(folder.join("summary.json")).unwrap();
        let out = run();
        let err = String::from_utf8_lossy(&out.stderr);
        assert!(out.status.success(), "{engine}: {err}");
        assert!(
            err.contains("was spent before this resumption"),
            "{engine}: {err}"
        );
        let after = checkpoint_state(&folder, false);
        assert_eq!(
            after["position"]["step"], before["position"]["step"],
            "{engine}: trained after the budget was spent"
        );
        assert_eq!(steps(&records(&folder)), trained, "{engine}");
        assert!(folder.join("summary.json").is_file(), "{engine}");
    }
}

#[test]
fn a_budget_with_epoch_milestones_is_refused() {
    let _one = ONE_AT_A_TIME.lock().unwrap_or_else(|e| e.into_inner());
    let dir = tempfile::tempdir().unwrap();
    let teacher = common::random_checkpoint(dir.path(), "teacher", "wrn10_1", 3);
    let cfg = write_config(dir.path(), "m", &teacher, 0);
    let text = std::fs::read_to_string(&cfg).unwrap().replace(
        "schedule = { kind = \"one_cycle\", peak_at = 0.3 }",
        "schedule = { kind = \"multistep\", milestones = [2], gamma = 0.1 }",
    );
    std::fs::write(&cfg, text).unwrap();
    let out = Command::new(env!("CARGO_BIN_EXE_ard-pipeline"))
        .args(["--config", cfg.to_str().unwrap(), "validate"])
        .output()
        .unwrap();
    assert!(!out.status.success());
    let e = String::from_utf8_lossy(&out.stderr);
    assert!(
        e.contains("train.max_seconds") && e.contains("multistep"),
        "{e}"
    );
}

#[test]
fn the_sweep_report_shows_time_best_guard_and_curves() {
    let _one = ONE_AT_A_TIME.lock().unwrap_or_else(|e| e.into_inner());
    let dir = tempfile::tempdir().unwrap();
    let teacher = common::random_checkpoint(dir.path(), "teacher", "wrn10_1", 3);
    let base = write_config(dir.path(), "base", &teacher, 0);
    let text = std::fs::read_to_string(&base)
        .unwrap()
        .replace("listen = \"127.0.0.1:0\"", "listen = \"\"")
        .replace("train_limit = 256", "train_limit = 64")
        .replace(
            "every_epochs = 2",
            "every_epochs = 0\nvalidation_limit = 32",
        )
        + "[guard]\naction = \"warn\"\n";
    std::fs::write(&base, text).unwrap();
    let file = dir.path().join("budget.toml");
    std::fs::write(
        &file,
        format!(
            "base = \"{}\"\n[sweep]\nname = \"budget\"\nout_dir = \"{}\"\nparallel = 1\nretries = 0\nmetrics_base_port = 0\npoll_s = 0.1\n[[rows]]\n\"run.seed\" = 0\n[[rows]]\n\"loss.kind\" = \"pgd_at\"\n\"run.seed\" = 1\n",
            base.display(),
            dir.path().join("sweeps").display()
        ),
    )
    .unwrap();
    let out = common::output_within(
        Command::new(env!("CARGO_BIN_EXE_ard-pipeline")).args([
            "sweep",
            "--config",
            file.to_str().unwrap(),
        ]),
        2 * RUN_LIMIT,
    );
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let sweep = dir.path().join("sweeps/budget");
    let csv = std::fs::read_to_string(sweep.join("report.csv")).unwrap();
    let lines: Vec<&str> = csv.lines().collect();
    let header: Vec<&str> = lines[0].split(',').collect();
    for (i, method) in [(1, "ard pgd"), (2, "pgd_at pgd")] {
        let row: Vec<&str> = lines[i].split(',').collect();
        let at = |c: &str| row[header.iter().position(|h| *h == c).expect(c)];
        assert_eq!(at("method"), method, "{csv}");
        assert_eq!(at("seed"), (i - 1).to_string(), "{csv}");
        let spent: f64 = at("train_s").parse().unwrap();
        // 64 training images at batch 32: two steps an epoch.
        let step_s = at("s_per_epoch").parse::<f64>().unwrap() / 2.0;
        assert!(within_a_step(spent, step_s), "{csv}");
        assert!(at("best_worst_case").parse::<f64>().is_ok(), "{csv}");
        assert!(
            at("guard") == "no collapse" || at("guard").starts_with("collapse at epoch"),
            "{csv}"
        );
    }
    let png = std::fs::read(sweep.join("validation_vs_time.png")).unwrap();
    assert!(png.starts_with(b"\x89PNG") && png.len() > 5000);
}
