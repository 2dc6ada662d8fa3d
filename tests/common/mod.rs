//! Shared helpers of the integration tests: the project venv's Python for the
//! PyTorch parity references, the CIFAR-10 copy they read, tolerances.
#![allow(dead_code)]

pub mod services;

use std::path::{Path, PathBuf};
use std::process::Command;
use tch::Tensor;

pub fn repo() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR"))
}

/// The variable naming the CIFAR-10 folder the tests read, when set.
pub const TEST_DATA_VAR: &str = "ARD_TEST_DATA";

/// The CIFAR-10 folder the tests read, first found of: `$ARD_TEST_DATA` (a
/// `cifar-10-batches-bin` folder), the offline copy in `../shared` beside the
/// clone when present, else the clone's own `data/` (which `make test` fills
/// with `ard-pipeline data fetch`).
pub fn cifar_root() -> PathBuf {
    if let Some(dir) = std::env::var_os(TEST_DATA_VAR).filter(|v| !v.is_empty()) {
        return PathBuf::from(dir);
    }
    let offline = repo().join("../shared/data/cifar-10-batches-bin");
    if offline.is_dir() {
        return offline;
    }
    repo().join("data/cifar-10-batches-bin")
}

/// The checksum set the files in [`cifar_root`] match: the official one when
/// the project's downloader fetched them (its stamp is there), else the
/// offline copy's.
pub fn cifar_checksums() -> ard_pipeline::config::DataChecksums {
    use ard_pipeline::config::DataChecksums;
    if cifar_root().join(ard_pipeline::data::STAMP_FILE).is_file() {
        DataChecksums::Official
    } else {
        DataChecksums::OfflineCopy
    }
}

/// Runs `tests/parity/SCRIPT` with the venv's Python; panics with its stderr on failure.
pub fn python(script: &str, args: &[&str]) -> String {
    let py = repo().join(".venv/bin/python");
    assert!(
        py.exists(),
        "no {} — run scripts/bootstrap.sh (make test does)",
        py.display()
    );
    let out = Command::new(&py)
        .arg(repo().join("tests/parity").join(script))
        .args(args)
        .current_dir(repo().join("tests/parity"))
        .output()
        .expect("python runs");
    assert!(
        out.status.success(),
        "{script} {args:?} failed:\n{}\n{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8_lossy(&out.stdout).into_owned()
}

/// Named tensors of a safetensors file.
pub fn read(path: &Path) -> std::collections::BTreeMap<String, Tensor> {
    Tensor::read_safetensors(path)
        .expect("readable safetensors")
        .into_iter()
        .collect()
}

/// max |a - b| / max(max |b|, floor): the relative error used by the parity tests.
pub fn rel_err(a: &Tensor, b: &Tensor, floor: f64) -> f64 {
    assert_eq!(a.size(), b.size(), "shapes differ");
    let a = a.to_kind(tch::Kind::Double);
    let b = b.to_kind(tch::Kind::Double);
    let diff = (&a - &b).abs().max().double_value(&[]);
    let scale = b.abs().max().double_value(&[]).max(floor);
    diff / scale
}

pub fn max_abs(a: &Tensor, b: &Tensor) -> f64 {
    assert_eq!(a.size(), b.size(), "shapes differ");
    (a.to_kind(tch::Kind::Double) - b.to_kind(tch::Kind::Double))
        .abs()
        .max()
        .double_value(&[])
}

/// Deterministic CPU settings for parity: one thread.
pub fn deterministic() {
    ard_pipeline::device::set_this_threads_intra_op(1);
}

/// Writes a seeded, randomly initialised `arch` checkpoint to `dir/NAME.safetensors`
/// (e.g. a stand-in teacher) and returns its path.
pub fn random_checkpoint(dir: &Path, name: &str, arch: &str, seed: i64) -> PathBuf {
    tch::manual_seed(seed);
    let path = dir.join(format!("{name}.safetensors"));
    ard_pipeline::models::Model::new(arch.parse().unwrap(), tch::Device::Cpu)
        .save(&path)
        .unwrap();
    path
}

/// The records of a `.jsonl` file (none when it is absent).
pub fn jsonl(path: &Path) -> Vec<serde_json::Value> {
    std::fs::read_to_string(path)
        .unwrap_or_default()
        .lines()
        .map(|l| serde_json::from_str(l).expect("a JSON line"))
        .collect()
}

/// The `epoch` field of each record of a `.jsonl` file.
pub fn jsonl_epochs(path: &Path) -> Vec<u64> {
    jsonl(path)
        .iter()
        .map(|r| r["epoch"].as_u64().expect("an epoch"))
        .collect()
}

/// Polls the run's `/status` on 127.0.0.1:`port` until it reports `step`
/// steps done; panics if `child` exits first or five minutes pass.
pub fn wait_for_step(port: u16, step: u64, child: &mut std::process::Child) {
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(300);
    loop {
        assert!(
            std::time::Instant::now() < deadline,
            "the run never reached step {step}"
        );
        if let Ok(resp) = ureq::get(&format!("http://127.0.0.1:{port}/status")).call() {
            let status: serde_json::Value =
                serde_json::from_str(&resp.into_string().unwrap()).unwrap();
            if status["step"].as_u64().unwrap_or(0) >= step {
                return;
            }
        }
        assert!(
            child.try_wait().unwrap().is_none(),
            "the run ended before step {step}"
        );
        std::thread::sleep(std::time::Duration::from_millis(20));
    }
}

/// Runs `cmd` to its end like `Command::output`, but kills it and panics
/// after `limit` (a hung run fails its test instead of stalling the suite).
pub fn output_within(cmd: &mut Command, limit: std::time::Duration) -> std::process::Output {
    let dir = tempfile::tempdir().unwrap();
    let (out, err) = (dir.path().join("stdout"), dir.path().join("stderr"));
    let mut child = cmd
        .stdout(std::fs::File::create(&out).unwrap())
        .stderr(std::fs::File::create(&err).unwrap())
        .spawn()
        .unwrap();
    let deadline = std::time::Instant::now() + limit;
    let status = loop {
        if let Some(status) = child.try_wait().unwrap() {
            break status;
        }
        if std::time::Instant::now() >= deadline {
            child.kill().ok();
            child.wait().ok();
            panic!(
                "{cmd:?} still running after {limit:?}; its stderr:\n{}",
                std::fs::read_to_string(&err).unwrap_or_default()
            );
        }
        std::thread::sleep(std::time::Duration::from_millis(50));
    };
    std::process::Output {
        status,
        stdout: std::fs::read(&out).unwrap(),
        stderr: std::fs::read(&err).unwrap(),
    }
}
