//! The command line as a user meets it: help, validate, clear errors and exit
//! codes, and `eval` on a converted PyTorch checkpoint giving PyTorch's numbers.

mod common;

use std::process::Command;

fn bin() -> Command {
    let mut c = Command::new(env!("CARGO_BIN_EXE_ard-pipeline"));
    c.current_dir(common::repo());
    c
}

fn run(args: &[&str]) -> (i32, String, String) {
    let out = bin().args(args).output().unwrap();
    (
        out.status.code().unwrap_or(-1),
        String::from_utf8_lossy(&out.stdout).into(),
        String::from_utf8_lossy(&out.stderr).into(),
    )
}

#[test]
fn help_lists_the_commands() {
    let (code, out, _) = run(&["--help"]);
    assert_eq!(code, 0);
    for word in ["validate", "eval", "--config", "--engine"] {
        assert!(out.contains(word), "{word} missing from --help:\n{out}");
    }
}

#[test]
fn validate_finds_configs_by_name_and_rejects_bad_ones() {
    let (code, out, err) = run(&["validate", "--config", "single-t4.toml"]);
    assert_eq!(code, 0, "{err}");
    assert!(out.contains("ok"), "{out}");
    let dir = tempfile::tempdir().unwrap();
    let bad = dir.path().join("bad.toml");
    std::fs::write(&bad, "[attack]\nsteps = \"many\"\n").unwrap();
    let (code, _, err) = run(&["validate", "--config", bad.to_str().unwrap()]);
    assert_eq!(code, 1);
    assert!(
        err.contains("bad.toml") && err.contains("attack.steps"),
        "{err}"
    );
    assert!(
        !err.contains("panicked") && !err.contains("RUST_BACKTRACE"),
        "{err}"
    );
    let (code, _, err) = run(&["--config", "no-such.toml"]);
    assert_eq!(code, 1);
    assert!(err.contains("no-such.toml"), "{err}");
}

#[test]
fn eval_of_a_converted_checkpoint_matches_pytorch() {
    let dir = tempfile::tempdir().unwrap();
    let pt = dir.path().join("model.pt");
    let st = dir.path().join("model.safetensors");
    let arch = "mobilenet_v2_x0.5";
    common::python(
        "eval_cli.py",
        &["--arch", arch, "--make", pt.to_str().unwrap()],
    );
    let py = common::repo().join(".venv/bin/python");
    let conv = Command::new(py)
        .arg(common::repo().join("scripts/convert_checkpoint.py"))
        .args([pt.to_str().unwrap(), st.to_str().unwrap()])
        .output()
        .unwrap();
    assert!(
        conv.status.success(),
        "{}",
        String::from_utf8_lossy(&conv.stderr)
    );

    let json = dir.path().join("eval.json");
    let logits = dir.path().join("logits.safetensors");
    let root = common::cifar_root();
    let cfg = dir.path().join("eval.toml");
    std::fs::write(&cfg, format!("[run]\ndevice = \"cpu\"\n[data]\nroot = \"{}\"\nchecksums = \"offline_copy\"\ndownload = false\n[loss]\nkind = \"pgd_at\"\n", root.display())).unwrap();
    let (code, out, err) = run(&[
        "eval",
        "--config",
        cfg.to_str().unwrap(),
        "--arch",
        arch,
        "--weights",
        st.to_str().unwrap(),
        "--test-limit",
        "500",
        "--json",
        json.to_str().unwrap(),
        "--save-logits",
        logits.to_str().unwrap(),
    ]);
    assert_eq!(code, 0, "{out}\n{err}");
    let report: serde_json::Value =
        serde_json::from_str(&std::fs::read_to_string(&json).unwrap()).unwrap();
    let ours = report["accuracy"]["natural"].as_f64().unwrap();

    let reference: serde_json::Value = serde_json::from_str(&common::python(
        "eval_cli.py",
        &[
            "--arch",
            arch,
            "--weights",
            st.to_str().unwrap(),
            "--data",
            root.to_str().unwrap(),
            "--n",
            "500",
        ],
    ))
    .unwrap();
    assert!(
        (ours - reference["accuracy"].as_f64().unwrap()).abs() < 1e-4, // float32 mean on the Python side
        "accuracy {ours} vs PyTorch {}",
        reference["accuracy"]
    );
    let saved = common::read(&logits);
    let theirs: Vec<Vec<f64>> = serde_json::from_value(reference["logits"].clone()).unwrap();
    let theirs = tch::Tensor::from_slice(&theirs.concat()).view([500, 10]);
    let e = common::rel_err(&saved["logits"], &theirs, 1.0);
    assert!(e < 1e-4, "logits differ from PyTorch: rel {e}");
}

#[test]
fn eval_of_a_wrong_architecture_names_the_mismatch() {
    let dir = tempfile::tempdir().unwrap();
    let st = dir.path().join("r18.safetensors");
    ard_pipeline::models::Model::new(ard_pipeline::models::Arch::ResNet18, tch::Device::Cpu)
        .save(&st)
        .unwrap();
    let root = common::cifar_root();
    let (code, _, err) = run(&[
        "eval",
        "--arch",
        "mobilenet_v2",
        "--weights",
        st.to_str().unwrap(),
        "--data-root",
        root.to_str().unwrap(),
        "--test-limit",
        "10",
    ]);
    assert_eq!(code, 1);
    assert!(
        err.contains("does not fit architecture mobilenet_v2"),
        "{err}"
    );
}
