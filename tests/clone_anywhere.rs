//! A clone that works anywhere (issue 30): the small config runs from a folder
//! holding only what a clone has (configs, weights) and the data in `data/`,
//! with no `../shared` beside it; `ard-pipeline data fetch`, what `make test`
//! calls to fill `data/`, does nothing when the files are there and, offline,
//! fails at once with one line saying where to put them.

mod common;

use std::path::Path;
use std::process::Command;
use std::time::{Duration, Instant};

fn bin(cwd: &Path) -> Command {
    let mut c = Command::new(env!("CARGO_BIN_EXE_ard-pipeline"));
    c.current_dir(cwd).env_remove("ARD__DATA__ROOT");
    c
}

/// Links every file of the tests' CIFAR-10 copy into `dir` (created).
fn link_data(dir: &Path) {
    std::fs::create_dir_all(dir).unwrap();
    for entry in std::fs::read_dir(common::cifar_root()).unwrap() {
        let path = entry.unwrap().path();
        std::os::unix::fs::symlink(&path, dir.join(path.file_name().unwrap())).unwrap();
    }
}

/// A folder laid out as a clone: the config, the teacher it names, `data/`.
fn clone_with_data(config: &str, weights: &str) -> tempfile::TempDir {
    let clone = tempfile::tempdir().unwrap();
    let repo = common::repo();
    for file in [config, weights] {
        let to = clone.path().join(file);
        std::fs::create_dir_all(to.parent().unwrap()).unwrap();
        std::os::unix::fs::symlink(repo.join(file), to).unwrap();
    }
    link_data(&clone.path().join("data/cifar-10-batches-bin"));
    clone
}

#[test]
fn ci_smoke_trains_and_evaluates_in_a_clone_with_only_data() {
    let clone = clone_with_data(
        "configs/ci-smoke.toml",
        "weights/teacher-cpu-wrn16_2.safetensors",
    );
    assert!(
        !clone.path().join("../shared").exists(),
        "the temporary folder has a ../shared beside it"
    );
    let out = common::output_within(
        bin(clone.path()).args(["--log-level", "warn", "--config", "configs/ci-smoke.toml"]),
        Duration::from_secs(600),
    );
    let (stdout, stderr) = (
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr),
    );
    assert!(out.status.success(), "{stdout}\n{stderr}");
    let summary: serde_json::Value = serde_json::from_str(
        &std::fs::read_to_string(clone.path().join("runs/ci-smoke/summary.json")).unwrap(),
    )
    .unwrap();
    assert!(summary["steps"].as_u64().unwrap() >= 1, "{summary}");
    let evals = summary["final_eval"].as_object().unwrap();
    assert_eq!(evals.len(), 3, "natural, train_attack and pgd5: {summary}");
    assert!(
        evals
            .values()
            .all(|a| (0.0..=100.0).contains(&a.as_f64().unwrap())),
        "{summary}"
    );
    assert!(stdout.contains("1 epoch in"), "{stdout}");
    // The stage table says what its columns measure.
    assert!(
        stdout.contains(ard_pipeline::report::stage_table::LEGEND),
        "{stdout}"
    );
}

#[test]
fn data_fetch_with_the_files_there_does_nothing() {
    let dir = tempfile::tempdir().unwrap();
    let root = dir.path().join("cifar-10-batches-bin");
    link_data(&root);
    let out = bin(dir.path())
        .args(["data", "fetch", "--root", root.to_str().unwrap()])
        // Nothing is downloaded: an address that cannot answer.
        .args(["--url", "http://127.0.0.1:9/cifar-10-binary.tar.gz"])
        .output()
        .unwrap();
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(stdout.contains("CIFAR-10 is in"), "{stdout}");
}

#[test]
fn data_fetch_offline_fails_at_once_in_one_line_saying_where_to_put_the_files() {
    // A port nothing listens on: the connection is refused, as offline.
    let port = std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port();
    let dir = tempfile::tempdir().unwrap();
    let started = Instant::now();
    let out = bin(dir.path())
        .args(["--log-level", "warn", "data", "fetch"])
        .args([
            "--url",
            &format!("http://127.0.0.1:{port}/cifar-10-binary.tar.gz"),
        ])
        .output()
        .unwrap();
    assert!(started.elapsed() < Duration::from_secs(60));
    assert_eq!(out.status.code(), Some(1));
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert_eq!(stderr.trim_end().lines().count(), 1, "{stderr}");
    assert!(
        stderr.contains("put the CIFAR-10 binary files")
            && stderr.contains("data/cifar-10-batches-bin"),
        "{stderr}"
    );
    // Nothing half-written: the folder holds at most the empty data/.
    let left: Vec<_> = walk(dir.path());
    assert!(left.iter().all(|p| p.is_dir()), "{left:?}");
}

fn walk(dir: &Path) -> Vec<std::path::PathBuf> {
    let mut out = Vec::new();
    for entry in std::fs::read_dir(dir).unwrap() {
        let path = entry.unwrap().path();
        if path.is_dir() {
            out.extend(walk(&path));
        }
        out.push(path);
    }
    out
}
