//! `ard-pipeline eval --shards N --json OUT` on the local backend: the shards
//! run as child processes and join into the unsplit evaluation's JSON and
//! table; the same command again starts only the shards without a part; a
//! part of another evaluation or shard count is refused naming the file; and
//! flags a split evaluation cannot honour are refused with one line. On the
//! committed WRN-16-2 teacher, the first 100 test images, natural and PGD-2.

mod common;

use serde_json::Value;
use std::path::{Path, PathBuf};
use std::process::{Command, Output};
use std::time::Duration;

fn weights() -> PathBuf {
    common::repo().join("weights/teacher-cpu-wrn16_2.safetensors")
}

/// `eval` on the first 100 test images in batches of 32 (4 batches), one
/// libtorch thread in every process so that split and unsplit runs compute
/// alike.
fn eval(args: &[&str]) -> Output {
    let mut cmd = Command::new(env!("CARGO_BIN_EXE_ard-pipeline"));
    cmd.args(["--config", "configs/quickstart.toml", "eval"])
        .args([
            "--arch",
            "wrn16_2",
            "--weights",
            weights().to_str().unwrap(),
        ])
        .args(["--data-root", common::cifar_root().to_str().unwrap()])
        .args([
            "--device",
            "cpu",
            "--test-limit",
            "100",
            "--batch-size",
            "32",
        ])
        .args(args)
        .env("ARD__RUN__THREADS", "1")
        .current_dir(common::repo());
    common::output_within(&mut cmd, Duration::from_secs(300))
}

fn ok(out: &Output) -> (String, String) {
    let (stdout, stderr) = (
        String::from_utf8_lossy(&out.stdout).into_owned(),
        String::from_utf8_lossy(&out.stderr).into_owned(),
    );
    assert!(out.status.success(), "{stdout}\n{stderr}");
    (stdout, stderr)
}

/// The error of a refused command, which must be one line.
fn refused(out: &Output) -> String {
    assert!(!out.status.success(), "succeeded");
    let err = String::from_utf8_lossy(&out.stderr).trim().to_string();
    assert_eq!(err.lines().count(), 1, "not one line:\n{err}");
    err
}

/// The JSON file without its timings (which differ from run to run).
fn result(path: &Path) -> Value {
    let mut v: Value = serde_json::from_str(&std::fs::read_to_string(path).unwrap()).unwrap();
    v.as_object_mut().unwrap().remove("seconds");
    v
}

/// The table's rows without the seconds column.
fn rows(table: &str) -> Vec<String> {
    table
        .lines()
        .filter(|l| l.contains("% ("))
        .map(|l| l.split_whitespace().take(4).collect::<Vec<_>>().join(" "))
        .collect()
}

fn attempts(log: &Path) -> usize {
    std::fs::read_to_string(log)
        .unwrap()
        .matches("=== attempt")
        .count()
}

#[test]
fn shards_on_the_local_backend_join_into_the_unsplit_result_and_resume() {
    let dir = tempfile::tempdir().unwrap();
    let path = |name: &str| dir.path().join(name);
    let s = |p: &Path| p.to_str().unwrap().to_string();
    let attacks = ["--attacks", "natural,pgd2"];
    let (whole_table, _) = ok(&eval(
        &[&attacks[..], &["--json", &s(&path("whole.json"))]].concat(),
    ));
    let out = s(&path("split.json"));
    let split = [
        &attacks[..],
        &["--shards", "2", "--backend", "local", "--json", &out],
    ]
    .concat();
    let (table, stderr) = ok(&eval(&split));
    assert!(stderr.contains("start shard-0-of-2") && stderr.contains("start shard-1-of-2"));
    assert_eq!(result(&path("whole.json")), result(&path("split.json")));
    assert_eq!(rows(&whole_table), rows(&table), "{whole_table}\n{table}");
    assert!(table.contains("on the first 100 test images"), "{table}");
    let parts = path("split.json.parts");
    for i in 0..2 {
        assert!(parts.join(format!("part-{i}-of-2.json")).is_file());
        assert_eq!(attempts(&parts.join(format!("part-{i}-of-2.log"))), 1);
    }

    // A lost part: only its shard runs again, and the result is the same.
    std::fs::remove_file(parts.join("part-1-of-2.json")).unwrap();
    std::fs::remove_file(path("split.json")).unwrap();
    let (again, stderr) = ok(&eval(&split));
    assert!(
        stderr.contains("skip shard-0-of-2 (part-0-of-2.json exists)"),
        "{stderr}"
    );
    assert!(!stderr.contains("start shard-0-of-2"), "{stderr}");
    assert!(stderr.contains("start shard-1-of-2"), "{stderr}");
    assert_eq!(attempts(&parts.join("part-0-of-2.log")), 1);
    assert_eq!(attempts(&parts.join("part-1-of-2.log")), 2);
    assert_eq!(result(&path("whole.json")), result(&path("split.json")));
    assert_eq!(rows(&table), rows(&again));

    // Every part there: nothing runs, the join is written again.
    let (_, stderr) = ok(&eval(&split));
    assert!(!stderr.contains("start shard"), "{stderr}");

    // Parts this command would not write are refused, naming the file, before any shard runs.
    let other = [
        &["--attacks", "natural,pgd3"][..],
        &["--shards", "2", "--json", &out],
    ]
    .concat();
    let err = refused(&eval(&other));
    assert!(
        err.contains("part-0-of-2.json is a part of another evaluation (different attacks")
            && err.contains("remove it"),
        "{err}"
    );
    let part0 = parts.join("part-0-of-2.json");
    let kept = std::fs::read_to_string(&part0).unwrap();
    let mut stale: Value = serde_json::from_str(&kept).unwrap();
    stale["weights_sha256"] = Value::from("0".repeat(64));
    std::fs::write(&part0, stale.to_string()).unwrap();
    let err = refused(&eval(&split));
    assert!(
        err.contains(&format!(
            "{} is a part of another evaluation (different weights sha256",
            part0.display()
        )),
        "{err}"
    );
    std::fs::write(&part0, kept).unwrap();
    let three = [&attacks[..], &["--shards", "3", "--json", &out]].concat();
    let err = refused(&eval(&three));
    assert!(
        err.contains("part-0-of-2.json is a part of an evaluation in 2 shards")
            && err.contains(&format!("remove the folder {}", parts.display())),
        "{err}"
    );
    assert!(!parts.join("part-0-of-3.json").exists());
}

#[test]
fn flags_a_split_evaluation_cannot_honour_are_refused_with_one_line() {
    let dir = tempfile::tempdir().unwrap();
    let out = dir.path().join("e.json");
    let out = out.to_str().unwrap();
    let logits = dir.path().join("l.safetensors");
    let cases: [(&[&str], &str); 8] = [
        (&["--shards", "2"], "needs --json"),
        (
            &["--shards", "2", "--shard", "0/2", "--json", out],
            "not with --shard",
        ),
        (
            &[
                "--shards",
                "2",
                "--json",
                out,
                "--save-logits",
                logits.to_str().unwrap(),
            ],
            "not with --latency or --save-logits",
        ),
        (
            &["--shards", "2", "--json", out, "--latency"],
            "not with --latency",
        ),
        (
            &["--shards", "2", "--json", out, "--cascade"],
            "not with --cascade",
        ),
        (
            &["--shards", "5", "--json", out],
            "100 test images make 4 batches of 32; give at most 4 shards",
        ),
        (
            &["--shards", "2", "--json", out, "--backend", "k8s"],
            "deploy/k8s/eval-shards-job.yaml",
        ),
        (
            &["--parallel", "2", "--json", out],
            "eval --parallel: only with --shards",
        ),
    ];
    for (args, want) in cases {
        let err = refused(&eval(&[&["--attacks", "natural"][..], args].concat()));
        assert!(err.contains(want), "{args:?}: {err}");
    }
    assert!(!Path::new(out).exists());
    assert!(!dir.path().join("e.json.parts").exists());
}
