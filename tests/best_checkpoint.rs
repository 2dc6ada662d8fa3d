//! End to end through the binary, on the CI smoke config: a run keeps the
//! best-by-validation checkpoint (`best.safetensors`, `best.json`), chosen
//! from the validation numbers of `validation.jsonl` and not from the test
//! numbers, and its summary reports the test numbers of both the final and
//! the best checkpoint, their worst cases and the robustness gap.

mod common;

use ard_pipeline::train::selection::{select_best, ValidationScore};
use serde_json::Value;
use std::path::Path;
use std::process::Command;

fn jsonl(path: &Path) -> Vec<Value> {
    std::fs::read_to_string(path)
        .unwrap_or_else(|e| panic!("{}: {e}", path.display()))
        .lines()
        .map(|l| serde_json::from_str(l).unwrap())
        .collect()
}

fn pct(v: &Value) -> f64 {
    v.as_f64().unwrap_or_else(|| panic!("not a number: {v}"))
}

#[test]
fn a_run_keeps_and_reports_the_best_checkpoint_by_validation() {
    let dir = tempfile::tempdir().unwrap();
    let cfg = dir.path().join("best.toml");
    std::fs::write(
        &cfg,
        format!(
            "base = \"{base}\"\n[run]\nname = \"best\"\nout_dir = \"{out}\"\nthreads = 1\n\
             [data]\nroot = \"{root}\"\nchecksums = \"skip\"\n[optim]\nlr = 0.2\n[train]\nepochs = 3\n\
             [eval]\nattacks = [\"natural\", \"train_attack\", \"pgd3\"]\ntest_limit = 64\n\
             validation_limit = 64\nvalidation_attack = \"pgd5\"\n",
            base = common::repo().join("configs/ci-smoke.toml").display(),
            out = dir.path().display(),
            root = common::cifar_root().display(),
        ),
    )
    .unwrap();
    let out = Command::new(env!("CARGO_BIN_EXE_ard-pipeline"))
        .args(["--config", cfg.to_str().unwrap()])
        .current_dir(common::repo())
        .output()
        .unwrap();
    let stdout = String::from_utf8_lossy(&out.stdout);
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(out.status.success(), "{stdout}\n{stderr}");
    let run = dir.path().join("best");

    // Every validated epoch is a line; the best is the argmax of the
    // validation numbers (robust, then natural), whatever the test says.
    let lines = jsonl(&run.join("validation.jsonl"));
    assert!(!lines.is_empty());
    assert!(lines
        .iter()
        .all(|l| l["attack"] == "pgd5" && l["images"] == 64));
    let scores: Vec<ValidationScore> = lines
        .iter()
        .map(|l| ValidationScore {
            natural: pct(&l["natural"]),
            robust: pct(&l["robust"]),
        })
        .collect();
    let expected = &lines[select_best(&scores).unwrap()];
    let best_epoch = expected["epoch"].as_u64().unwrap();
    let flagged: Vec<u64> = lines
        .iter()
        .filter(|l| l["best"] == true)
        .map(|l| l["epoch"].as_u64().unwrap())
        .collect();
    assert_eq!(flagged.last(), Some(&best_epoch), "{lines:?}");

    let record: Value =
        serde_json::from_str(&std::fs::read_to_string(run.join("best.json")).unwrap()).unwrap();
    assert_eq!(record["epoch"].as_u64(), Some(best_epoch));
    assert_eq!(record["step"], expected["step"]);
    assert_eq!(record["validation"]["robust"], expected["robust"]);

    // The summary: final and best test numbers, worst cases, the gap.
    let s: Value =
        serde_json::from_str(&std::fs::read_to_string(run.join("summary.json")).unwrap()).unwrap();
    assert_eq!(s["best_epoch"].as_u64(), Some(best_epoch), "{s}");
    let evals = jsonl(&run.join("eval.jsonl"));
    let last = evals.last().unwrap();
    assert_eq!(s["final_eval"], last["report"]["accuracy"]);
    assert_eq!(s["final_worst_case"], last["report"]["worst_case"]);
    if let Some(best_test) = evals
        .iter()
        .find(|e| e["epoch"].as_u64() == Some(best_epoch))
    {
        assert_eq!(s["best_eval"], best_test["report"]["accuracy"]);
        assert_eq!(s["best_worst_case"], best_test["report"]["worst_case"]);
    }
    for which in ["final", "best"] {
        let (acc, worst) = if which == "final" {
            (&s["final_eval"], &s["final_worst_case"])
        } else {
            (&s["best_eval"], &s["best_worst_case"])
        };
        for name in ["natural", "train_attack", "pgd3"] {
            assert!(
                pct(&acc[name]) >= pct(worst),
                "{which}: {name} < worst case: {s}"
            );
        }
        let gap = pct(&s["robustness_gap"][which]);
        assert!(
            (gap - (pct(&acc["train_attack"]) - pct(worst))).abs() < 1e-9,
            "{s}"
        );
    }
    assert!(s["guard"].is_null(), "{s}");

    // best.safetensors is a loadable student; it is the final weights exactly
    // when the best epoch is the last one.
    let arch = "mobilenet_v2_x0.25".parse().unwrap();
    let best =
        ard_pipeline::models::Model::load(arch, tch::Device::Cpu, &run.join("best.safetensors"))
            .unwrap();
    let fin = common::read(&run.join("final.safetensors"));
    let same = best
        .vs
        .variables()
        .iter()
        .all(|(name, t)| common::max_abs(t, &fin[name]) == 0.0);
    assert_eq!(same, best_epoch == 3, "best epoch {best_epoch}");

    // The printed table shows both.
    assert!(stdout.contains("best by validation: epoch"), "{stdout}");
    assert!(stdout.contains("worst_case"), "{stdout}");
    assert!(stdout.contains("robustness gap"), "{stdout}");
}
