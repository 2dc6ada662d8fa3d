//! `ard-pipeline export` (and `eval`) on files a user got wrong, and under
//! signals: integer or constant weights, a DataParallel state_dict, a run's
//! training checkpoint, an `--out` folder that holds a user's files, and
//! SIGTERM / SIGINT / SIGKILL while the Python step runs (a stub script that
//! sleeps stands in for it, so the signal always lands inside that step).
//! Every case ends in one clear line and leaves `--out` as it was.

mod common;

use std::path::{Path, PathBuf};
use std::process::{Child, Command, Output, Stdio};
use std::time::{Duration, Instant};
use tch::{Kind, Tensor};

const STUDENT: &str = "weights/quickstart-mobilenet_v2_x0.5.safetensors";
const ARCH: &str = "mobilenet_v2_x0.5";

fn command(args: &[&str]) -> Command {
    let mut cmd = Command::new(env!("CARGO_BIN_EXE_ard-pipeline"));
    cmd.current_dir(common::repo())
        .env("ARD__DATA__ROOT", common::cifar_root())
        .env("ARD__DATA__CHECKSUMS", "skip")
        .env("ARD__DATA__DOWNLOAD", "false")
        .env("ARD__RUN__THREADS", "1")
        .env_remove("ORT_DYLIB_PATH")
        .env_remove("RUST_BACKTRACE")
        .args(args);
    cmd
}

/// `export` of `weights` into `out` with few test images, no robustness, no latency.
fn export_args<'a>(weights: &'a str, out: &'a str, extra: &[&'a str]) -> Vec<&'a str> {
    let mut args = vec![
        "--log-level",
        "warn",
        "export",
        "--arch",
        ARCH,
        "--weights",
        weights,
        "--out",
        out,
        "--test-images",
        "16",
        "--square-queries",
        "0",
        "--no-latency",
    ];
    args.extend_from_slice(extra);
    args
}

fn stderr(out: &Output) -> String {
    String::from_utf8_lossy(&out.stderr).into_owned()
}

/// The single `error:` line of a failed command (panics otherwise).
fn one_error(out: &Output) -> String {
    let err = stderr(out);
    assert_eq!(out.status.code(), Some(1), "{err}");
    assert!(!err.contains("panicked"), "{err}");
    let lines: Vec<&str> = err.lines().filter(|l| l.starts_with("error:")).collect();
    assert_eq!(lines.len(), 1, "{err}");
    lines[0].to_string()
}

fn entries(dir: &Path) -> Vec<String> {
    let mut names: Vec<String> = std::fs::read_dir(dir)
        .map(|d| {
            d.flatten()
                .map(|e| e.file_name().to_string_lossy().into_owned())
                .collect()
        })
        .unwrap_or_default();
    names.sort();
    names
}

/// The student's tensors with `f` applied, written to `dir/name`.
fn rewritten(dir: &Path, name: &str, f: impl Fn(&str, &Tensor) -> (String, Tensor)) -> PathBuf {
    let path = dir.join(name);
    let tensors: Vec<(String, Tensor)> = common::read(&common::repo().join(STUDENT))
        .iter()
        .map(|(n, t)| f(n, t))
        .collect();
    Tensor::write_safetensors(&tensors, &path).unwrap();
    path
}

#[test]
fn integer_and_constant_weights_are_refused_by_name() {
    let dir = tempfile::tempdir().unwrap();
    let int = rewritten(dir.path(), "int.safetensors", |n, t| {
        (n.to_string(), t.to_kind(Kind::Int))
    });
    let int = int.to_str().unwrap();
    let out = dir.path().join("out");
    let out_s = out.to_str().unwrap();
    let e = one_error(&command(&export_args(int, out_s, &[])).output().unwrap());
    assert!(
        e.contains(int) && e.contains("is int32, not floating point"),
        "{e}"
    );
    let eval = command(&[
        "eval",
        "--arch",
        ARCH,
        "--weights",
        int,
        "--test-limit",
        "8",
    ])
    .output()
    .unwrap();
    let e = one_error(&eval);
    assert!(e.contains("is int32, not floating point"), "{e}");

    // All-zero weights: every logit is the same; export refuses before its Python step.
    let zero = rewritten(dir.path(), "zero.safetensors", |n, t| {
        (n.to_string(), t.zeros_like())
    });
    let e = one_error(
        &command(&export_args(zero.to_str().unwrap(), out_s, &[]))
            .output()
            .unwrap(),
    );
    assert!(
        e.contains("gives the same logits for each of the first 16 test images")
            && e.contains("not a trained model"),
        "{e}"
    );
    assert!(entries(&out).is_empty(), "{:?}", entries(&out));
}

#[test]
fn module_prefixes_and_run_checkpoints_say_what_to_pass() {
    let dir = tempfile::tempdir().unwrap();
    let eval = |weights: &Path| {
        command(&["eval", "--arch", ARCH, "--test-limit", "8", "--weights"])
            .arg(weights)
            .output()
            .unwrap()
    };
    let prefixed = rewritten(dir.path(), "dp.safetensors", |n, t| {
        (format!("module.{n}"), t.shallow_clone())
    });
    let e = one_error(&eval(&prefixed));
    assert!(
        e.contains("starts with `module.`") && e.contains("scripts/convert_checkpoint.py"),
        "{e}"
    );
    // The advice works: the converted file evaluates.
    let converted = dir.path().join("plain.safetensors");
    let conv = Command::new(common::repo().join(".venv/bin/python"))
        .arg(common::repo().join("scripts/convert_checkpoint.py"))
        .arg(&prefixed)
        .arg(&converted)
        .output()
        .unwrap();
    assert!(conv.status.success(), "{}", stderr(&conv));
    let ok = eval(&converted);
    assert!(ok.status.success(), "{}", stderr(&ok));

    // A run's checkpoint: the weights under `model.`, momentum under `optim.`.
    let run = rewritten(dir.path(), "checkpoint.safetensors", |n, t| {
        (format!("model.{n}"), t.shallow_clone())
    });
    let mut tensors: Vec<(String, Tensor)> = common::read(&run).into_iter().collect();
    let momentum = tensors[0].1.zeros_like();
    tensors.push((
        format!("optim.{}", &tensors[0].0["model.".len()..]),
        momentum,
    ));
    Tensor::write_safetensors(&tensors, &run).unwrap();
    let e = one_error(&eval(&run));
    assert!(
        e.contains("training checkpoint") && e.contains("final.safetensors or best.safetensors"),
        "{e}"
    );
}

#[test]
fn a_folder_with_other_files_is_refused_and_left_as_it_was() {
    let dir = tempfile::tempdir().unwrap();
    let out = dir.path().join("mine");
    std::fs::create_dir(&out).unwrap();
    std::fs::write(out.join("model.onnx"), "my own model").unwrap();
    std::fs::write(out.join("notes.txt"), "my notes").unwrap();
    let out_s = out.to_str().unwrap();
    let e = one_error(&command(&export_args(STUDENT, out_s, &[])).output().unwrap());
    assert!(
        e.contains("--out")
            && e.contains("model.onnx, notes.txt")
            && e.contains("empty or new folder"),
        "{e}"
    );
    assert_eq!(entries(&out), ["model.onnx", "notes.txt"]);
    assert_eq!(
        std::fs::read_to_string(out.join("model.onnx")).unwrap(),
        "my own model"
    );

    // The export of another checkpoint is refused too ...
    let other = dir.path().join("other");
    std::fs::create_dir(&other).unwrap();
    let card = |sha: &str| format!("{{\"source\": {{\"sha256\": \"{sha}\"}}}}");
    std::fs::write(other.join("card.json"), card(&"0".repeat(64))).unwrap();
    let e = one_error(
        &command(&export_args(STUDENT, other.to_str().unwrap(), &[]))
            .output()
            .unwrap(),
    );
    assert!(e.contains("another checkpoint"), "{e}");

    // ... while an earlier export of the same one is replaced: the export goes
    // on to its Python step (here a stub that fails at once).
    let sha = ard_pipeline::deploy::export::sha256(&common::repo().join(STUDENT)).unwrap();
    std::fs::write(other.join("card.json"), card(&sha)).unwrap();
    let stub = stub_script(
        dir.path(),
        "fail.py",
        "import sys\nsys.exit('stub step failed')\n",
    );
    let python = common::repo().join(".venv/bin/python");
    let args = export_args(
        STUDENT,
        other.to_str().unwrap(),
        &[
            "--python",
            python.to_str().unwrap(),
            "--script",
            stub.to_str().unwrap(),
        ],
    );
    let e = one_error(&command(&args).output().unwrap());
    assert!(e.contains("stub step failed"), "{e}");
    assert_eq!(entries(&other), ["card.json"]);
}

fn stub_script(dir: &Path, name: &str, text: &str) -> PathBuf {
    let path = dir.join(name);
    std::fs::write(&path, text).unwrap();
    path
}

/// A Python step that writes its process id to `started`, sleeps 20 s, then
/// writes `late` (which an ended child never does).
fn sleeping_stub(dir: &Path) -> PathBuf {
    stub_script(
        dir,
        "sleep.py",
        &format!(
            "import os, time\nopen({started:?}, 'w').write(str(os.getpid()))\n\
             time.sleep(20)\nopen({late:?}, 'w').write('late')\n",
            started = dir.join("started").display().to_string(),
            late = dir.join("late").display().to_string(),
        ),
    )
}

/// Whether process `pid` exists and is not a zombie.
fn running(pid: u32) -> bool {
    match std::fs::read_to_string(format!("/proc/{pid}/stat")) {
        Ok(stat) => stat
            .rsplit_once(')')
            .is_some_and(|(_, rest)| !rest.trim_start().starts_with('Z')),
        Err(_) => false,
    }
}

/// Kills (SIGKILL) the processes this test started, by id, when dropped.
struct Reaper(Vec<u32>);

impl Drop for Reaper {
    fn drop(&mut self) {
        for &pid in &self.0 {
            if running(pid) {
                unsafe {
                    libc::kill(pid as i32, libc::SIGKILL);
                }
            }
        }
    }
}

/// Starts an export whose Python step is the sleeping stub, and waits until
/// the stub runs; returns the export and the stub's process id.
fn start_in_python_step(dir: &Path, out: &Path, reaper: &mut Reaper) -> (Child, u32) {
    let stub = sleeping_stub(dir);
    let python = common::repo().join(".venv/bin/python");
    let args = export_args(
        STUDENT,
        out.to_str().unwrap(),
        &[
            "--python",
            python.to_str().unwrap(),
            "--script",
            stub.to_str().unwrap(),
        ],
    );
    let started = dir.join("started");
    let _ = std::fs::remove_file(&started);
    let mut child = command(&args)
        .stdout(Stdio::null())
        .stderr(std::fs::File::create(dir.join("stderr")).unwrap())
        .spawn()
        .unwrap();
    reaper.0.push(child.id());
    let deadline = Instant::now() + Duration::from_secs(120);
    let stub_pid = loop {
        if let Some(pid) = std::fs::read_to_string(&started)
            .ok()
            .and_then(|t| t.trim().parse::<u32>().ok())
        {
            break pid;
        }
        assert!(
            child.try_wait().unwrap().is_none(),
            "export ended early: {}",
            std::fs::read_to_string(dir.join("stderr")).unwrap_or_default()
        );
        assert!(Instant::now() < deadline, "the Python step never started");
        std::thread::sleep(Duration::from_millis(50));
    };
    reaper.0.push(stub_pid);
    (child, stub_pid)
}

fn wait_within(child: &mut Child, limit: Duration) -> std::process::ExitStatus {
    let deadline = Instant::now() + limit;
    loop {
        if let Some(status) = child.try_wait().unwrap() {
            return status;
        }
        assert!(
            Instant::now() < deadline,
            "export still running after {limit:?}"
        );
        std::thread::sleep(Duration::from_millis(50));
    }
}

fn gone_within(pid: u32, limit: Duration) -> bool {
    let deadline = Instant::now() + limit;
    while Instant::now() < deadline {
        if !running(pid) {
            return true;
        }
        std::thread::sleep(Duration::from_millis(50));
    }
    false
}

#[test]
fn a_signal_ends_the_python_step_and_says_what_was_kept() {
    for (signal, code, name) in [
        (libc::SIGTERM, 143, "SIGTERM"),
        (libc::SIGINT, 130, "SIGINT"),
    ] {
        let dir = tempfile::tempdir().unwrap();
        let out = dir.path().join("out");
        let mut reaper = Reaper(Vec::new());
        let (mut export, stub) = start_in_python_step(dir.path(), &out, &mut reaper);
        unsafe {
            libc::kill(export.id() as i32, signal);
        }
        let status = wait_within(&mut export, Duration::from_secs(30));
        let err = std::fs::read_to_string(dir.path().join("stderr")).unwrap();
        assert_eq!(status.code(), Some(code), "{err}");
        assert!(
            err.contains(&format!("interrupted by {name}")) && err.contains("holds nothing of it"),
            "{err}"
        );
        assert!(
            gone_within(stub, Duration::from_secs(5)),
            "the Python step outlived the export"
        );
        assert!(entries(&out).is_empty(), "{:?}", entries(&out));
        assert!(!dir.path().join("late").exists());
    }
}

#[test]
fn a_killed_export_takes_its_child_along_and_the_next_one_cleans_up() {
    let dir = tempfile::tempdir().unwrap();
    let out = dir.path().join("out");
    let mut reaper = Reaper(Vec::new());
    let (mut export, stub) = start_in_python_step(dir.path(), &out, &mut reaper);
    let staging = format!(".export-{}", export.id());
    assert_eq!(entries(&out), std::slice::from_ref(&staging));
    unsafe {
        libc::kill(export.id() as i32, libc::SIGKILL);
    }
    wait_within(&mut export, Duration::from_secs(10));
    assert!(
        gone_within(stub, Duration::from_secs(5)),
        "the Python step outlived the export"
    );
    assert_eq!(entries(&out), [staging]);

    // The next export into the folder removes the dead export's staging folder.
    let fail = stub_script(
        dir.path(),
        "fail.py",
        "import sys\nsys.exit('stub step failed')\n",
    );
    let python = common::repo().join(".venv/bin/python");
    let args = export_args(
        STUDENT,
        out.to_str().unwrap(),
        &[
            "--python",
            python.to_str().unwrap(),
            "--script",
            fail.to_str().unwrap(),
        ],
    );
    let e = one_error(&command(&args).output().unwrap());
    assert!(e.contains("stub step failed"), "{e}");
    assert!(entries(&out).is_empty(), "{:?}", entries(&out));
}

#[test]
fn report_refuses_a_folder_that_is_not_a_sweep_and_writes_nothing() {
    let dir = tempfile::tempdir().unwrap();
    let run = dir.path().join("run");
    std::fs::create_dir(&run).unwrap();
    std::fs::write(run.join("config.toml"), "").unwrap();
    std::fs::write(run.join("summary.json"), "{}").unwrap();
    let plain = dir.path().join("plain");
    std::fs::create_dir_all(plain.join("runs").join("a")).unwrap();
    for (path, why) in [
        (run.clone(), "is a run folder"),
        (dir.path().join("absent"), "no such folder"),
        (plain.clone(), "not a sweep folder"),
    ] {
        let before = entries(&path);
        let out = command(&["report"]).arg(&path).output().unwrap();
        let e = one_error(&out);
        assert_eq!(stderr(&out).lines().count(), 1, "{}", stderr(&out));
        assert!(
            e.contains(&*path.display().to_string()) && e.contains(why),
            "{e}"
        );
        assert_eq!(entries(&path), before);
    }
}
