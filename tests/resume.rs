//! Never lose a run: a run killed (SIGKILL, SIGTERM) at an arbitrary step and
//! resumed ends at the same weights as the uninterrupted run; resuming checks
//! the config; no file ever holds a non-finite weight; a finished run's folder
//! is left as it is unless `--fresh` moves it aside; one process per folder.

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
    common::wait_for_step(port, step, &mut child.0);
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
    let epochs = common::jsonl_epochs(&dir.path().join("cut/metrics.jsonl"));
    assert_eq!(epochs, vec![1, 2, 3]);
    // summary.json marks the run finished; the checkpoint is left as written.
    assert!(dir.path().join("cut/summary.json").is_file());
    assert_eq!(checkpoint_state(&dir.path().join("cut"))["finished"], false);
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
    assert!(dir.path().join("r/summary.json").is_file());
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
fn non_finite_weights_are_never_written_nor_loaded() {
    let dir = tempfile::tempdir().unwrap();
    let teacher = common::random_checkpoint(dir.path(), "teacher", "wrn10_1", 3);
    let port = services::free_port();
    let cfg = write_config(dir.path(), "n", &teacher, port, "");
    let (code, stderr) = interrupt_at(&cfg, &[], port, 4, SIGKILL);
    assert_eq!(code, None, "{stderr}");
    let ckpt = dir.path().join("n/checkpoint.safetensors");
    let good = std::fs::read(&ckpt).unwrap();
    let poison = |file: &Path, only: &str| {
        let poisoned: Vec<(String, tch::Tensor)> = common::read(file)
            .into_iter()
            .map(|(k, t)| {
                let t = if t.kind() == tch::Kind::Float && k.contains(only) {
                    t.fill(f64::NAN)
                } else {
                    t
                };
                (k, t)
            })
            .collect();
        tch::Tensor::write_safetensors(&poisoned, file).unwrap();
    };

    // The writer refuses a NaN tensor and keeps the previous file.
    let nan = vec![(
        "w".to_string(),
        tch::Tensor::from_slice(&[1.0f32, f32::NAN]),
    )];
    let e = ard_pipeline::checkpoint::write_atomic(&ckpt, &nan)
        .unwrap_err()
        .to_string();
    assert!(
        e.contains("tensor w") && e.contains("previous file is kept"),
        "{e}"
    );
    assert_eq!(std::fs::read(&ckpt).unwrap(), good);
    let fresh = dir.path().join("never.safetensors");
    assert!(ard_pipeline::checkpoint::write_atomic(&fresh, &nan).is_err());
    assert!(!fresh.exists(), "a file with a NaN weight was written");

    // A teacher file with NaN weights is refused by name, in a dry run too.
    let sick = dir.path().join("sick-teacher.safetensors");
    std::fs::copy(&teacher, &sick).unwrap();
    poison(&sick, "");
    let sick_cfg = write_config(dir.path(), "sick", &sick, port, "");
    let out = run(&sick_cfg, &["--dry-run"]);
    assert!(!out.status.success());
    let msg = text(&out);
    assert!(
        msg.contains("sick-teacher.safetensors") && msg.contains("NaN"),
        "{msg}"
    );
    // The run's own teacher turns NaN between a kill and the resumption.
    let healthy = std::fs::read(&teacher).unwrap();
    poison(&teacher, "");
    let out = run(&cfg, &["--resume"]);
    assert!(!out.status.success());
    let msg = text(&out);
    assert!(
        msg.contains("teacher.safetensors") && msg.contains("NaN"),
        "{msg}"
    );
    assert!(!msg.contains("panicked"), "{msg}");
    assert_eq!(
        std::fs::read(&ckpt).unwrap(),
        good,
        "the checkpoint was touched"
    );
    std::fs::write(&teacher, healthy).unwrap();

    // A checkpoint holding a NaN is not resumed from, and not overwritten.
    poison(&ckpt, "model.");
    let poisoned = std::fs::read(&ckpt).unwrap();
    let out = run(&cfg, &["--resume"]);
    assert!(!out.status.success());
    let msg = text(&out);
    assert!(
        msg.contains("checkpoint.safetensors") && msg.contains("model.") && msg.contains("NaN"),
        "{msg}"
    );
    assert_eq!(std::fs::read(&ckpt).unwrap(), poisoned);
}

/// Every file under `dir` with its bytes.
fn snapshot(dir: &Path) -> std::collections::BTreeMap<String, Vec<u8>> {
    std::fs::read_dir(dir)
        .unwrap()
        .map(|e| e.unwrap().path())
        .filter(|p| p.is_file())
        .map(|p| {
            (
                p.file_name().unwrap().to_string_lossy().into_owned(),
                std::fs::read(&p).unwrap(),
            )
        })
        .collect()
}

#[test]
fn a_finished_run_is_left_alone_until_fresh_moves_it_aside() {
    let dir = tempfile::tempdir().unwrap();
    let teacher = common::random_checkpoint(dir.path(), "teacher", "wrn10_1", 3);
    let port = services::free_port();
    let cfg = write_config(dir.path(), "f", &teacher, port, "");
    let folder = dir.path().join("f");
    let one_epoch = |args: &[&str]| {
        command(&cfg, args)
            .env("ARD__TRAIN__EPOCHS", "1")
            .output()
            .unwrap()
    };
    let out = one_epoch(&[]);
    assert!(out.status.success(), "{}", text(&out));
    let first = snapshot(&folder);
    assert!(first.contains_key("summary.json") && first.contains_key("final.safetensors"));

    // The same command again: refused, nothing touched.
    let out = one_epoch(&[]);
    assert!(!out.status.success());
    let msg = text(&out);
    assert!(
        msg.contains("holds a finished run")
            && msg.contains("--fresh")
            && msg.contains("run folder"),
        "{msg}"
    );
    assert_eq!(
        snapshot(&folder),
        first,
        "a finished run's folder was modified"
    );

    // --fresh moves it aside whole, and the new run starts in an empty folder.
    let out = one_epoch(&["--fresh"]);
    assert!(out.status.success(), "{}", text(&out));
    assert_eq!(snapshot(&dir.path().join("f.previous-1")), first);
    let second = snapshot(&folder);
    let metrics = String::from_utf8(second["metrics.jsonl"].clone()).unwrap();
    assert_eq!(metrics.lines().count(), 1, "{metrics}");

    // An interrupted --fresh rerun never mixes two runs' files.
    let (code, stderr) = interrupt_at(&cfg, &["--fresh"], port, 2, SIGKILL);
    assert_eq!(code, None, "{stderr}");
    assert_eq!(snapshot(&dir.path().join("f.previous-2")), second);
    let third = snapshot(&folder);
    for name in [
        "summary.json",
        "final.safetensors",
        "eval.jsonl",
        "metrics.jsonl",
    ] {
        assert!(
            !third.contains_key(name),
            "{name} of an earlier run in {third:?}",
            third = third.keys().collect::<Vec<_>>()
        );
    }
}

#[test]
fn one_process_per_run_folder_and_stale_leftovers_are_taken_over() {
    let dir = tempfile::tempdir().unwrap();
    let teacher = common::random_checkpoint(dir.path(), "teacher", "wrn10_1", 3);
    let port = services::free_port();
    let cfg = write_config(dir.path(), "l", &teacher, port, "");

    // A second process on a live folder is refused at once, naming the holder.
    let mut first = Killed(
        command(&cfg, &[])
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .unwrap(),
    );
    let deadline = Instant::now() + Duration::from_secs(120);
    while !ureq::get(&format!("http://127.0.0.1:{port}/status"))
        .call()
        .is_ok_and(|r| r.into_string().unwrap().contains("\"step\""))
    {
        assert!(
            Instant::now() < deadline,
            "the first run never served /status"
        );
        std::thread::sleep(Duration::from_millis(20));
    }
    let started = Instant::now();
    let out = run(&cfg, &[]);
    assert!(!out.status.success());
    assert!(
        started.elapsed() < Duration::from_secs(20),
        "not refused at once"
    );
    let msg = text(&out);
    assert!(
        msg.contains("in use by") && msg.contains(&format!("pid {}", first.0.id())),
        "{msg}"
    );
    let status = first.0.wait().unwrap();
    assert!(status.success(), "the first run failed");
    let epochs = common::jsonl_epochs(&dir.path().join("l/metrics.jsonl"));
    assert_eq!(epochs, [1, 2, 3]);
    assert!(
        !dir.path().join("l.lock").exists(),
        "lock left after a clean exit"
    );

    // A killed run leaves its lock and maybe a temp file: both are taken over,
    // and a renamed folder resumes (the name is where a run lives, not what it trains).
    let cfg = write_config(dir.path(), "k", &teacher, port, "");
    let (code, stderr) = interrupt_at(&cfg, &[], port, 4, SIGKILL);
    assert_eq!(code, None, "{stderr}");
    assert!(dir.path().join("k.lock").exists());
    std::fs::rename(dir.path().join("k"), dir.path().join("k2")).unwrap();
    std::fs::rename(dir.path().join("k.lock"), dir.path().join("k2.lock")).unwrap();
    let stale_tmp = dir.path().join("k2/.checkpoint.safetensors.tmp-4194999");
    std::fs::write(&stale_tmp, b"half a checkpoint").unwrap();
    let renamed = write_config(dir.path(), "k2", &teacher, port, "");
    let out = run(&renamed, &[]);
    assert!(out.status.success(), "{}", text(&out));
    let msg = text(&out);
    assert!(
        msg.contains("resuming") && msg.contains("stale lock"),
        "{msg}"
    );
    assert!(!stale_tmp.exists(), "a stale temp file was kept");
    assert!(!dir.path().join("k2.lock").exists());
}

/// Starts the run and sends `signal` as soon as a line of its log contains
/// `line`; returns the exit status and the whole log.
fn interrupt_on_line(cfg: &Path, args: &[&str], line: &str, signal: i32) -> (Option<i32>, String) {
    use std::io::BufRead;
    let mut child = Killed(
        command(cfg, args)
            .stdout(Stdio::null())
            .stderr(Stdio::piped())
            .spawn()
            .unwrap(),
    );
    let stderr = std::io::BufReader::new(child.0.stderr.take().unwrap());
    let mut log = String::new();
    let mut sent = false;
    for l in stderr.lines() {
        let l = l.unwrap();
        if !sent && l.contains(line) {
            // SAFETY: sending a signal to our own child process by PID.
            assert_eq!(unsafe { libc_kill(child.0.id() as i32, signal) }, 0);
            sent = true;
        }
        log.push_str(&l);
        log.push('\n');
    }
    assert!(sent, "no line {line:?} in:\n{log}");
    (child.0.wait().unwrap().code(), log)
}

/// SIGTERM right after an epoch's validation, then the same command: every
/// epoch is in each record file once, and `wall_s` counts both processes.
fn records_once_after_a_resume(engine: &str, epoch: usize) {
    let dir = tempfile::tempdir().unwrap();
    let teacher = common::random_checkpoint(dir.path(), "teacher", "wrn10_1", 3);
    let cfg = write_config(dir.path(), "v", &teacher, services::free_port(), "");
    let args = ["--engine", engine];
    let line = format!("validation after epoch {epoch}");
    let (code, log) = interrupt_on_line(&cfg, &args, &line, SIGTERM);
    assert_eq!(code, Some(128 + SIGTERM), "{log}");
    let folder = dir.path().join("v");
    let first_wall = checkpoint_state(&folder)["wall_s"].as_f64().unwrap();
    assert!(first_wall > 0.0);
    let out = run(&cfg, &args);
    assert!(out.status.success(), "{}", text(&out));
    for file in ["metrics.jsonl", "eval.jsonl", "validation.jsonl"] {
        let epochs = common::jsonl_epochs(&folder.join(file));
        assert_eq!(epochs, [1, 2, 3], "{engine}: {file}\n{log}\n{}", text(&out));
    }
    let summary: serde_json::Value =
        serde_json::from_str(&std::fs::read_to_string(folder.join("summary.json")).unwrap())
            .unwrap();
    let wall = summary["wall_s"].as_f64().unwrap();
    assert!(
        wall > first_wall,
        "{engine}: wall_s {wall} is not the run's (the first process alone took {first_wall})"
    );
}

#[test]
fn pipeline_resumed_after_validation_records_each_epoch_once() {
    records_once_after_a_resume("pipeline", 1);
    records_once_after_a_resume("pipeline", 3);
}

#[test]
fn sequential_resumed_after_validation_records_each_epoch_once() {
    // (After the last epoch's validation the sequential trainer has no step
    // left to stop after: it finishes the run, so there is nothing to resume.)
    records_once_after_a_resume("sequential", 1);
    records_once_after_a_resume("sequential", 2);
}
