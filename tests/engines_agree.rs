//! Both engines keep the same books: the same short run through
//! `--engine pipeline` and `--engine sequential` leaves the same run-folder
//! files, the same record keys line by line, and the same summary keys.

mod common;

use serde_json::Value;
use std::collections::BTreeSet;
use std::path::{Path, PathBuf};
use std::process::Command;

fn config(dir: &Path, engine: &str) -> PathBuf {
    let path = dir.join(format!("{engine}.toml"));
    std::fs::write(
        &path,
        format!(
            "base = \"{base}\"\n[run]\nname = \"{engine}\"\nout_dir = \"{out}\"\nthreads = 1\n\
             checkpoint_every_steps = 1\n\
             [data]\nroot = \"{root}\"\nchecksums = \"skip\"\ntrain_limit = 64\nbatch_size = 32\n\
             [train]\nepochs = 2\n\
             [eval]\nevery_epochs = 1\nattacks = [\"natural\", \"pgd2\"]\ntest_limit = 32\n\
             validation_limit = 32\nvalidation_attack = \"pgd2\"\n[metrics]\nlisten = \"\"\n",
            base = common::repo().join("configs/ci-smoke.toml").display(),
            out = dir.display(),
            root = common::cifar_root().display(),
        ),
    )
    .unwrap();
    path
}

fn files(run: &Path) -> BTreeSet<String> {
    std::fs::read_dir(run)
        .unwrap()
        .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
        .collect()
}

fn keys(v: &Value) -> BTreeSet<String> {
    v.as_object()
        .unwrap_or_else(|| panic!("not an object: {v}"))
        .keys()
        .cloned()
        .collect()
}

/// The key set of each line of a `.jsonl` file.
fn line_keys(path: &Path) -> Vec<BTreeSet<String>> {
    common::jsonl(path).iter().map(keys).collect()
}

#[test]
fn both_engines_write_the_same_run_folder() {
    let dir = tempfile::tempdir().unwrap();
    let mut runs = Vec::new();
    for engine in ["pipeline", "sequential"] {
        let cfg = config(dir.path(), engine);
        let out = Command::new(env!("CARGO_BIN_EXE_ard-pipeline"))
            .args(["--config", cfg.to_str().unwrap(), "--engine", engine])
            .current_dir(common::repo())
            .output()
            .unwrap();
        assert!(
            out.status.success(),
            "{engine}: {}",
            String::from_utf8_lossy(&out.stderr)
        );
        runs.push(dir.path().join(engine));
    }
    let (pipeline, sequential) = (&runs[0], &runs[1]);
    let expected: BTreeSet<String> = [
        "config.toml",
        "checkpoint.safetensors",
        "metrics.jsonl",
        "eval.jsonl",
        "validation.jsonl",
        "best.json",
        "best.safetensors",
        "last.safetensors",
        "final.safetensors",
        "training.png",
        "stages.png",
        "summary.json",
    ]
    .map(String::from)
    .into();
    assert_eq!(files(pipeline), expected, "pipeline");
    assert_eq!(files(sequential), expected, "sequential");
    for log in ["metrics.jsonl", "eval.jsonl", "validation.jsonl"] {
        let (p, s) = (
            line_keys(&pipeline.join(log)),
            line_keys(&sequential.join(log)),
        );
        assert_eq!(p.len(), 2, "{log}: one line per epoch");
        assert_eq!(p, s, "{log}: pipeline vs sequential");
    }
    let evals = common::jsonl(&sequential.join("eval.jsonl"));
    assert_eq!(
        evals
            .iter()
            .map(|e| e["epoch"].as_u64().unwrap())
            .collect::<Vec<_>>(),
        [1, 2]
    );
    let summary = |run: &Path| -> Value {
        serde_json::from_str(&std::fs::read_to_string(run.join("summary.json")).unwrap()).unwrap()
    };
    let (p, s) = (summary(pipeline), summary(sequential));
    assert_eq!(keys(&p), keys(&s));
    assert_eq!(keys(&p["final_eval"]), keys(&s["final_eval"]));
    assert_eq!(s["final_eval"], evals[1]["report"]["accuracy"]);
    // last.safetensors is the last epoch's student: the final weights (no guard, no roll-back).
    let (last, fin) = (
        common::read(&sequential.join("last.safetensors")),
        common::read(&sequential.join("final.safetensors")),
    );
    assert!(last
        .iter()
        .all(|(name, t)| common::max_abs(t, &fin[name]) == 0.0));
}
