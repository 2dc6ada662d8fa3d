//! The pipeline owns SIGINT/SIGTERM: the first signal finishes the step in
//! flight, saves the newest weights, shuts the endpoint and exits 130 (SIGINT)
//! or 143 (SIGTERM).

mod common;

use common::services::{self, Killed};
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

fn interrupted_run(signal: i32, expected_code: i32) {
    let dir = tempfile::tempdir().unwrap();
    let teacher = common::random_checkpoint(dir.path(), "teacher", "wrn10_1", 0);
    let port = services::free_port();
    let cfg = dir.path().join("long.toml");
    std::fs::write(
        &cfg,
        format!(
            "[run]\nname = \"sig\"\ndevice = \"cpu\"\nout_dir = \"{out}\"\n[data]\nroot = \"{root}\"\ndownload = false\nchecksums = \"skip\"\nbatch_size = 16\ntrain_limit = 4000\n[teacher]\narch = \"wrn10_1\"\nweights = \"{t}\"\n[student]\narch = \"mobilenet_v2_x0.25\"\n[attack]\nkind = \"pgd\"\nsteps = 1\nstep_size = \"8/255\"\n[loss]\nkind = \"ard\"\n[train]\nepochs = 5\n[eval]\nattacks = [\"natural\"]\ntest_limit = 32\n[metrics]\nlisten = \"127.0.0.1:{port}\"\n",
            out = dir.path().display(),
            root = common::cifar_root().display(),
            t = teacher.display()
        ),
    )
    .unwrap();
    let mut child = Killed(
        Command::new(env!("CARGO_BIN_EXE_ard-pipeline"))
            .args(["--config", cfg.to_str().unwrap()])
            .stdout(Stdio::null())
            .stderr(Stdio::piped())
            .spawn()
            .unwrap(),
    );
    // Wait until a few steps are done, as /status reports them.
    common::wait_for_step(port, 3, &mut child.0);
    let pid = child.0.id() as i32;
    // SAFETY: sending a signal to our own child process by PID.
    assert_eq!(unsafe { libc_kill(pid, signal) }, 0);
    let started = Instant::now();
    let status = loop {
        if let Some(status) = child.0.try_wait().unwrap() {
            break status;
        }
        assert!(
            started.elapsed() < Duration::from_secs(60),
            "did not exit after the signal"
        );
        std::thread::sleep(Duration::from_millis(100));
    };
    let mut stderr = String::new();
    std::io::Read::read_to_string(child.0.stderr.as_mut().unwrap(), &mut stderr).unwrap();
    assert_eq!(status.code(), Some(expected_code), "{stderr}");
    assert!(stderr.contains("interrupted by"), "{stderr}");
    // The newest weights were kept, and load.
    let last = dir.path().join("sig/last.safetensors");
    ard_pipeline::models::Model::load(
        "mobilenet_v2_x0.25".parse().unwrap(),
        tch::Device::Cpu,
        &last,
    )
    .unwrap();
    // And the training checkpoint to resume from.
    assert!(dir.path().join("sig/checkpoint.safetensors").is_file());
    // No temp files left behind.
    let leftovers: Vec<_> = std::fs::read_dir(dir.path().join("sig"))
        .unwrap()
        .filter_map(|e| e.ok())
        .filter(|e| e.file_name().to_string_lossy().contains(".tmp"))
        .collect();
    assert!(leftovers.is_empty(), "{leftovers:?}");
    // The endpoint is closed.
    assert!(ureq::get(&format!("http://127.0.0.1:{port}/healthz"))
        .call()
        .is_err());
}

extern "C" {
    #[link_name = "kill"]
    fn libc_kill(pid: i32, sig: i32) -> i32;
}

#[test]
fn sigint_checkpoints_and_exits_130() {
    interrupted_run(2, 130);
}

#[test]
fn sigterm_checkpoints_and_exits_143() {
    interrupted_run(15, 143);
}

/// Two signals in a row exit at once, possibly while the eval stage works on
/// an epoch's snapshot; the resumed run evaluates that epoch (from
/// `last.safetensors`) before going on, so `eval.jsonl` has every epoch.
#[test]
fn an_evaluation_cut_short_by_a_second_signal_is_redone_on_resume() {
    let dir = tempfile::tempdir().unwrap();
    let teacher = common::random_checkpoint(dir.path(), "teacher", "wrn10_1", 0);
    let port = services::free_port();
    let cfg = dir.path().join("twice.toml");
    std::fs::write(
        &cfg,
        format!(
            "[run]\nname = \"twice\"\ndevice = \"cpu\"\nthreads = 1\nout_dir = \"{out}\"\n[data]\nroot = \"{root}\"\ndownload = false\nchecksums = \"skip\"\nbatch_size = 32\ntrain_limit = 256\n[teacher]\narch = \"wrn10_1\"\nweights = \"{t}\"\n[student]\narch = \"mobilenet_v2_x0.25\"\n[attack]\nkind = \"pgd\"\nsteps = 1\nstep_size = \"8/255\"\n[loss]\nkind = \"ard\"\n[train]\nepochs = 3\n[eval]\nevery_epochs = 1\nattacks = [\"natural\", \"pgd20\"]\ntest_limit = 128\n[metrics]\nlisten = \"127.0.0.1:{port}\"\n",
            out = dir.path().display(),
            root = common::cifar_root().display(),
            t = teacher.display()
        ),
    )
    .unwrap();
    let run = |args: &[&str]| {
        let mut cmd = Command::new(env!("CARGO_BIN_EXE_ard-pipeline"));
        cmd.args(["--config", cfg.to_str().unwrap()]).args(args);
        cmd
    };
    let mut child = Killed(
        run(&[])
            .stdout(Stdio::null())
            .stderr(Stdio::piped())
            .spawn()
            .unwrap(),
    );
    // Epoch 1 ends at step 8; its evaluation (PGD-20 on 128 images) then takes
    // seconds. The signals go in once epoch 1's checkpoint is on disk (a loaded
    // machine can take longer than the 100 ms between them to write it).
    common::wait_for_step(port, 8, &mut child.0);
    let checkpoint = dir.path().join("twice/checkpoint.safetensors");
    let deadline = Instant::now() + Duration::from_secs(120);
    while !checkpoint.is_file() {
        assert!(Instant::now() < deadline, "no checkpoint after epoch 1");
        assert!(child.0.try_wait().unwrap().is_none(), "the run ended early");
        std::thread::sleep(Duration::from_millis(10));
    }
    let pid = child.0.id() as i32;
    // SAFETY: sending signals to our own child process by PID.
    assert_eq!(unsafe { libc_kill(pid, 15) }, 0);
    std::thread::sleep(Duration::from_millis(100));
    unsafe { libc_kill(pid, 15) };
    let status = child.0.wait().unwrap();
    assert!(!status.success());
    let evals = || common::jsonl_epochs(&dir.path().join("twice/eval.jsonl"));
    assert!(
        !evals().contains(&1),
        "epoch 1's evaluation finished before the signals: the test did not test"
    );
    let out = run(&["--resume"]).output().unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert_eq!(evals(), [1, 2, 3]);
}
