//! The device kit (scripts/device/), as far as a CPU can test it: the pinned
//! copy of the tree that build-variant.sh builds, the packing (size, subset
//! layout, refusal of a missing binary without a half-made kit), and run.sh,
//! the prepared command, end to end with `KIT_DEVICE=cpu` on the packed
//! subset: doctor, the two-sided check (two CPU runs that must agree bit for
//! bit, the same accuracies), and a bench against the PyTorch reference, all
//! in one JSON report.

mod common;

use std::path::Path;
use std::process::Command;

fn run(cmd: &mut Command) -> (bool, String) {
    let out = cmd.current_dir(common::repo()).output().unwrap();
    (
        out.status.success(),
        format!(
            "{}{}",
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr)
        ),
    )
}

#[test]
fn the_variant_build_pins_tch_in_a_copy_of_the_tree() {
    let dir = tempfile::tempdir().unwrap();
    let (ok, text) = run(Command::new("bash")
        .arg("scripts/device/build-variant.sh")
        .env("KIT_PREPARE_ONLY", "1")
        .env("KIT_DIR", dir.path())
        .env("KIT_TCH_VERSION", "0.24.0"));
    assert!(ok, "{text}");
    let manifest = std::fs::read_to_string(dir.path().join("src/Cargo.toml")).unwrap();
    assert!(manifest.contains("\ntch = \"=0.24.0\""), "{manifest}");
    assert!(dir.path().join("src/build.rs").is_file());
    assert!(dir.path().join("src/src/main.rs").is_file());
    // The project's own manifest is untouched.
    let own = std::fs::read_to_string(common::repo().join("Cargo.toml")).unwrap();
    assert!(!own.contains("=0.24.0"));
}

fn pack(binary: &Path, out: &Path) -> (bool, String) {
    run(Command::new("bash")
        .arg("scripts/device/pack.sh")
        .arg(binary)
        .env("KIT_OUT", out)
        .env("KIT_DATA", common::cifar_root()))
}

#[test]
fn packing_refuses_a_missing_binary_and_leaves_nothing() {
    let dir = tempfile::tempdir().unwrap();
    let kit = dir.path().join("kit");
    let (ok, text) = pack(&dir.path().join("absent"), &kit);
    assert!(!ok && text.contains("no binary at"), "{text}");
    assert!(!kit.exists());
    assert_eq!(std::fs::read_dir(dir.path()).unwrap().count(), 0);
}

#[test]
fn the_kit_runs_end_to_end_on_the_cpu() {
    let dir = tempfile::tempdir().unwrap();
    // The kit carries a stripped binary (one transfer of at most 60 MB).
    let binary = dir.path().join("ard-pipeline");
    let (ok, text) = run(Command::new("strip")
        .arg("-o")
        .arg(&binary)
        .arg(env!("CARGO_BIN_EXE_ard-pipeline")));
    assert!(ok, "{text}");
    let kit = dir.path().join("kit");
    let (ok, text) = pack(&binary, &kit);
    assert!(ok, "{text}");
    let data = kit.join("data/cifar-10-batches-bin");
    assert_eq!(
        std::fs::metadata(data.join("data_batch_1.bin"))
            .unwrap()
            .len(),
        10_000 * 3073
    );
    assert_eq!(
        std::fs::metadata(data.join("data_batch_2.bin"))
            .unwrap()
            .len(),
        0
    );
    assert_eq!(
        std::fs::metadata(data.join("test_batch.bin"))
            .unwrap()
            .len(),
        1_000 * 3073
    );

    let report = dir.path().join("out/kit.json");
    let (ok, text) = run(Command::new(kit.join("run.sh"))
        .arg(&report)
        .env("KIT_DEVICE", "cpu")
        .env("KIT_PYTHON", common::repo().join(".venv/bin/python"))
        .env("KIT_TEACHER", "wrn16_2")
        .env("KIT_BATCHES", "1")
        .env("KIT_STEPS", "1")
        .env("KIT_STUDENTS", "mobilenet_v2")
        .env("KIT_TEST_LIMIT", "50")
        .env("KIT_EVAL_ATTACKS", "natural,pgd5,apgd_ce5"));
    assert!(ok, "{text}");
    let r: serde_json::Value = serde_json::from_slice(&std::fs::read(&report).unwrap()).unwrap();
    assert_eq!(r["ok"], true, "{text}");
    let steps: Vec<&str> = r["steps"]
        .as_array()
        .unwrap()
        .iter()
        .map(|s| s["step"].as_str().unwrap())
        .collect();
    assert_eq!(
        steps,
        [
            "doctor",
            "check-train-cpu",
            "check-eval-cpu",
            "check-train-device",
            "check-eval-device",
            "bench-mobilenet_v2"
        ]
    );
    assert!(
        r["steps"].as_array().unwrap().iter().all(|s| s["rc"] == 0),
        "{r}"
    );
    assert_eq!(r["doctor"]["ok"], true);
    let w = &r["check"]["weights"];
    assert_eq!(w["difference_norm"], 0.0, "{w}");
    assert!(w["update_norm"].as_f64().unwrap() > 0.0, "{w}");
    let e = &r["check"]["eval"];
    assert_eq!(e["images"], 50);
    for name in ["natural", "pgd5", "apgd_ce5", "worst_case"] {
        assert_eq!(e["accuracy"][name]["difference"], 0.0, "{e}");
    }
    let bench = &r["bench"]["mobilenet_v2"];
    assert_eq!(bench["device"], "cpu");
    let row = &bench["summary"][0];
    assert!(
        row["reference_images_per_s"].as_f64().unwrap() > 0.0,
        "{row}"
    );
    assert!(
        row["pipeline_images_per_s"].as_f64().unwrap() > 0.0,
        "{row}"
    );
    assert!(
        row["pipeline_busy_share"]["attack"].as_f64().unwrap() > 0.0,
        "{row}"
    );
}
