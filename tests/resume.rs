//! Never lose a run: a run killed (SIGKILL, SIGTERM) at an arbitrary step and
//! resumed ends at the same weights as the uninterrupted run; resuming checks
//! the config; a NaN keeps the last good checkpoint.

mod common;

use common::services::{self, Killed};
use std::path::{Path, PathBuf};
use std::process::{Command, Output, Stdio};
use std::time::{Duration, Instant};

extern "C" {
    #[link_name = "kill"]
    fn libc_kill(pid: i32, sig: i32) -> i32;
}

const SIGKILL: i32 = 9;
const SIGTERM: i32 = 15;

/// A small deterministic run: 8 steps per epoch, 3 epochs, a checkpoint every 3 steps.
fn write_config(dir: &Path, name: &str, teacher: &Path, port: u16, extra: &str) -> PathBuf {
    let path = dir.join(format!("{name}.toml"));
    std::fs::write(
        &path,
        format!(
            "[run]\nname = \"{name}\"\ndevice = \"cpu\"\nthreads = 1\nout_dir = \"{out}\"\ncheckpoint_every_steps = 3\n\
             [data]\nroot = \"{root}\"\ndownload = false\nchecksums = \"skip\"\nbatch_size = 32\ntrain_limit = 256\n\
             [teacher]\narch = \"wrn10_1\"\nweights = \"{t}\"\n\
             [student]\narch = \"mobilenet_v2_x0.25\"\n\
             [attack]\nkind = \"pgd\"\nsteps = 1\nstep_size = \"8/255\"\n\
             [loss]\nkind = \"ard\"\n\
             [optim]\nlr = 0.05\nschedule = {{ kind = \"one_cycle\", peak_at = 0.3 }}\n\
             [train]\nepochs = 3\n\
             [eval]\nattacks = [\"natural\"]\ntest_limit = 32\n\
             [metrics]\nlisten = \"127.0.0.1:{port}\"\n{extra}",
            out = dir.display(),
            root = common::cifar_root().display(),
            t = teacher.display()
        ),
    )
    .unwrap();
    path
}

fn command(cfg: &Path, args: &[&str]) -> Command {
    let mut cmd = Command::new(env!("CARGO_BIN_EXE_ard-pipeline"));
    cmd.args(["--config", cfg.to_str().unwrap()]).args(args);
    cmd
}

fn run(cfg: &Path, args: &[&str]) -> Output {
    command(cfg, args).output().expect("ard-pipeline runs")
}

fn text(out: &Output) -> String {
    format!(
        "{}\n{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    )
}

/// Starts the run and sends `signal` once /status reports `step` steps done;
/// returns the exit status and stderr.
fn interrupt_at(
    cfg: &Path,
    args: &[&str],
    port: u16,
    step: u64,
    signal: i32,
) -> (Option<i32>, String) {
    let mut child = Killed(
        command(cfg, args)
            .stdout(Stdio::null())
            .stderr(Stdio::piped())
            .spawn()
            .unwrap(),
    );
    let deadline = Instant::now() + Duration::from_secs(300);
    loop {
        assert!(
            Instant::now() < deadline,
            "the run never reached step {step}"
        );
        if let Ok(resp) = ureq::get(&format!("http://127.0.0.1:{port}/status")).call() {
            let status: serde_json::Value =
                serde_json::from_str(&resp.into_string().unwrap()).unwrap();
            if status["step"].as_u64().unwrap_or(0) >= step {
                break;
            }
        }
        assert!(
            child.0.try_wait().unwrap().is_none(),
            "the run ended before step {step}"
        );
        std::thread::sleep(Duration::from_millis(20));
    }
    // SAFETY: sending a signal to our own child process by PID.
    assert_eq!(unsafe { libc_kill(child.0.id() as i32, signal) }, 0);
    let started = Instant::now();
    let status = loop {
        if let Some(status) = child.0.try_wait().unwrap() {
            break status;
        }
        assert!(
            started.elapsed() < Duration::from_secs(120),
            "no exit after the signal"
        );
        std::thread::sleep(Duration::from_millis(50));
    };
    let mut stderr = String::new();
    std::io::Read::read_to_string(child.0.stderr.as_mut().unwrap(), &mut stderr).unwrap();
    (status.code(), stderr)
}

fn assert_same_weights(a: &Path, b: &Path) {
    let (a, b) = (common::read(a), common::read(b));
    assert_eq!(a.keys().collect::<Vec<_>>(), b.keys().collect::<Vec<_>>());
    let mut worst = (0.0f64, String::new());
    for (name, ta) in &a {
        if ta.kind() != tch::Kind::Float {
            continue;
        }
        let e = common::rel_err(ta, &b[name], 1e-12);
        if e > worst.0 {
            worst = (e, name.clone());
        }
    }
    assert!(
        worst.0 <= 1e-6,
        "resumed run differs: {} rel {:e}",
        worst.1,
        worst.0
    );
}

fn checkpoint_state(dir: &Path) -> serde_json::Value {
    let all = common::read(&dir.join("checkpoint.safetensors"));
    let bytes = Vec::<u8>::try_from(&all["__state__"]).unwrap();
    serde_json::from_slice(&bytes).unwrap()
}

fn kill_and_resume(engine: &str, signal: i32, kill_at: u64) {
    let dir = tempfile::tempdir().unwrap();
    let teacher = common::random_checkpoint(dir.path(), "teacher", "wrn10_1", 3);
    let engine_args = ["--engine", engine];

    let port = services::free_port();
    let whole = write_config(dir.path(), "whole", &teacher, port, "");
    let out = run(&whole, &engine_args);
    assert!(out.status.success(), "{}", text(&out));

    let port = services::free_port();
    let cut = write_config(dir.path(), "cut", &teacher, port, "");
    let (code, stderr) = interrupt_at(&cut, &engine_args, port, kill_at, signal);
    let state = checkpoint_state(&dir.path().join("cut"));
    assert_eq!(state["finished"], false);
    let saved_at = state["position"]["step"].as_u64().unwrap();
    if signal == SIGKILL {
        assert_eq!(code, None, "{stderr}");
        // The newest periodic or epoch-end checkpoint before the kill.
        assert!(
            saved_at >= 3 && saved_at <= kill_at + 3,
            "checkpoint at {saved_at}, killed at {kill_at}"
        );
    } else {
        assert_eq!(code, Some(128 + signal), "{stderr}");
        assert!(stderr.contains("--resume"), "{stderr}");
        // The step in flight is finished and checkpointed.
        assert!(
            saved_at >= kill_at,
            "checkpoint at {saved_at}, signalled at {kill_at}"
        );
    }
    // No temp files left behind, whatever the kill interrupted.
    let names: Vec<String> = std::fs::read_dir(dir.path().join("cut"))
        .unwrap()
        .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
        .collect();
    if signal != SIGKILL {
        assert!(!names.iter().any(|n| n.contains(".tmp")), "{names:?}");
    }

    let out = run(&cut, &[&engine_args[..], &["--resume"]].concat());
    assert!(out.status.success(), "{}", text(&out));
    assert!(text(&out).contains("resuming"), "{}", text(&out));
    assert_same_weights(
        &dir.path().join("cut/final.safetensors"),
        &dir.path().join("whole/final.safetensors"),
    );
    // Every epoch is recorded once.
    let epochs: Vec<u64> = std::fs::read_to_string(dir.path().join("cut/metrics.jsonl"))
        .unwrap()
        .lines()
        .map(|l| {
            serde_json::from_str::<serde_json::Value>(l).unwrap()["epoch"]
                .as_u64()
                .unwrap()
        })
        .collect();
    assert_eq!(epochs, vec![1, 2, 3]);
    assert_eq!(checkpoint_state(&dir.path().join("cut"))["finished"], true);
}

#[test]
fn pipeline_killed_with_sigkill_resumes_to_the_same_weights() {
    kill_and_resume("pipeline", SIGKILL, 11);
}

#[test]
fn pipeline_stopped_with_sigterm_resumes_to_the_same_weights() {
    kill_and_resume("pipeline", SIGTERM, 5);
}

#[test]
fn sequential_killed_with_sigkill_resumes_to_the_same_weights() {
    kill_and_resume("sequential", SIGKILL, 16);
}

#[test]
fn resuming_checks_the_config_and_the_checkpoint() {
    let dir = tempfile::tempdir().unwrap();
    let teacher = common::random_checkpoint(dir.path(), "teacher", "wrn10_1", 3);
    let port = services::free_port();
    let cfg = write_config(dir.path(), "r", &teacher, port, "");

    // --resume without a checkpoint.
    let out = run(&cfg, &["--resume"]);
    assert!(!out.status.success());
    assert!(text(&out).contains("nothing to resume"), "{}", text(&out));

    // An unfinished checkpoint, then a changed training setting: refused, naming it.
    let (code, stderr) = interrupt_at(&cfg, &[], port, 4, SIGKILL);
    assert_eq!(code, None, "{stderr}");
    let changed = write_config(dir.path(), "r", &teacher, port, "");
    let toml = std::fs::read_to_string(&changed)
        .unwrap()
        .replace("lr = 0.05", "lr = 0.07");
    std::fs::write(&changed, toml).unwrap();
    let out = run(&changed, &[]);
    assert!(!out.status.success());
    let msg = text(&out);
    assert!(msg.contains("optim.lr") && msg.contains("--fresh"), "{msg}");
    assert!(!msg.contains("panicked"), "{msg}");

    // --fresh starts again; the finished run's checkpoint makes the next plain run start afresh too.
    let out = run(&changed, &["--fresh"]);
    assert!(out.status.success(), "{}", text(&out));
    assert_eq!(checkpoint_state(&dir.path().join("r"))["finished"], true);
    let out = run(&changed, &["--resume"]);
    assert!(!out.status.success());
    assert!(text(&out).contains("nothing to resume"), "{}", text(&out));

    // A corrupt checkpoint is named, not resumed from and not overwritten.
    let ckpt = dir.path().join("r/checkpoint.safetensors");
    let bytes = std::fs::read(&ckpt).unwrap();
    std::fs::write(&ckpt, &bytes[..bytes.len() / 2]).unwrap();
    let out = run(&changed, &[]);
    assert!(!out.status.success());
    let msg = text(&out);
    assert!(
        msg.contains("checkpoint.safetensors") && msg.contains("--fresh"),
        "{msg}"
    );
    assert_eq!(std::fs::read(&ckpt).unwrap().len(), bytes.len() / 2);
}

#[test]
fn a_nan_stops_the_run_naming_the_step_and_keeps_the_last_good_checkpoint() {
    let dir = tempfile::tempdir().unwrap();
    let teacher = common::random_checkpoint(dir.path(), "teacher", "wrn10_1", 3);
    let port = services::free_port();
    let cfg = write_config(dir.path(), "n", &teacher, port, "");
    let (code, stderr) = interrupt_at(&cfg, &[], port, 4, SIGKILL);
    assert_eq!(code, None, "{stderr}");
    let ckpt = dir.path().join("n/checkpoint.safetensors");
    let good = std::fs::read(&ckpt).unwrap();
    let step = checkpoint_state(&dir.path().join("n"))["position"]["step"]
        .as_u64()
        .unwrap();

    // The teacher file now holds NaN weights: its soft labels make the loss NaN.
    let poisoned: Vec<(String, tch::Tensor)> = common::read(&teacher)
        .into_iter()
        .map(|(k, t)| {
            let t = if t.kind() == tch::Kind::Float {
                t.fill(f64::NAN)
            } else {
                t
            };
            (k, t)
        })
        .collect();
    tch::Tensor::write_safetensors(&poisoned, &teacher).unwrap();
    let out = run(&cfg, &["--resume"]);
    assert!(!out.status.success());
    let msg = text(&out);
    assert!(
        msg.contains("student") && msg.contains(&format!("step {step}")),
        "{msg}"
    );
    assert!(!msg.contains("panicked"), "{msg}");
    assert_eq!(
        std::fs::read(&ckpt).unwrap(),
        good,
        "the last good checkpoint was touched"
    );
}
