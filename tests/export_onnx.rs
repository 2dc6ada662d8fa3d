//! `ard-pipeline export` end to end on the committed quickstart student
//! (MobileNetV2 x0.5): the fp32 ONNX file computes what the tch model computes
//! (max |logit difference| <= 1e-4 of the logit scale, same class on every
//! image), the int8 file agrees with it (>= 95% same class, natural accuracy
//! within 1.5 points) on 64 test images, the card says so with a robustness
//! table that is consistent (50 Square queries: the mechanics, not the
//! numbers), the latency child reports its memory, and bad input
//! gives one clear line, no panic, and no model file in `--out`.

mod common;

use serde_json::Value;
use std::path::{Path, PathBuf};
use std::process::{Command, Output};

const STUDENT: &str = "weights/quickstart-mobilenet_v2_x0.5.safetensors";
const TEACHER: &str = "weights/teacher-wrn16_2-nfgsm.safetensors";

fn export(args: &[&str], out: &Path) -> Output {
    Command::new(env!("CARGO_BIN_EXE_ard-pipeline"))
        .current_dir(common::repo())
        .env("ARD__DATA__ROOT", common::cifar_root())
        .env("ARD__DATA__CHECKSUMS", "skip")
        .env("ARD__DATA__DOWNLOAD", "false")
        .env("ARD__RUN__THREADS", "1")
        .env_remove("ORT_DYLIB_PATH")
        .args(["export", "--out"])
        .arg(out)
        .args(args)
        .output()
        .unwrap()
}

fn stderr(out: &Output) -> String {
    String::from_utf8_lossy(&out.stderr).into_owned()
}

/// Files `export` would write, present in `dir`.
fn model_files(dir: &Path) -> Vec<PathBuf> {
    std::fs::read_dir(dir)
        .map(|d| d.flatten().map(|e| e.path()).collect())
        .unwrap_or_default()
}

#[test]
fn fp32_parity_and_int8_agreement_hold_on_the_quickstart_student() {
    let dir = tempfile::tempdir().unwrap();
    let out_dir = dir.path().join("deploy");
    let out = export(
        &[
            "--arch",
            "mobilenet_v2_x0.5",
            "--weights",
            STUDENT,
            "--int8",
            "--calibration",
            "256",
            "--test-images",
            "64",
            "--square-queries",
            "50",
            "--no-latency",
        ],
        &out_dir,
    );
    assert!(out.status.success(), "export failed:\n{}", stderr(&out));
    let mut names: Vec<String> = model_files(&out_dir)
        .iter()
        .map(|p| p.file_name().unwrap().to_string_lossy().into_owned())
        .collect();
    names.sort();
    assert_eq!(
        names,
        ["card.json", "card.md", "model.int8.onnx", "model.onnx"]
    );
    let card: Value =
        serde_json::from_str(&std::fs::read_to_string(out_dir.join("card.json")).unwrap()).unwrap();
    let v = &card["verification"];
    eprintln!("{}", serde_json::to_string_pretty(v).unwrap());
    assert_eq!(v["test_images"], 64);
    assert!(v["fp32"]["relative"].as_f64().unwrap() <= 1e-4);
    assert_eq!(v["fp32"]["top1_agreement"].as_f64().unwrap(), 100.0);
    assert_eq!(v["fp32"]["pass"], true);
    assert!(v["int8"]["top1_agreement"].as_f64().unwrap() >= 95.0);
    // At most one of the 64 images lost: on an x86 CPU without VNNI the int8
    // model has 7-bit weights (reduce_range), and one image is 1.56 points.
    assert!(v["int8"]["drop"].as_f64().unwrap() <= 100.0 / 64.0 + 1e-9);
    // Every BatchNorm of MobileNetV2 follows a convolution: all are folded.
    assert_eq!(
        card["export"]["batchnorms"],
        card["export"]["batchnorms_folded"]
    );
    assert_eq!(card["export"]["int8"]["calibration_images"], 256);
    let int8_bytes = card["files"][1]["bytes"].as_u64().unwrap();
    let fp32_bytes = card["files"][0]["bytes"].as_u64().unwrap();
    assert!(
        int8_bytes * 2 < fp32_bytes,
        "int8 file {int8_bytes} B vs fp32 {fp32_bytes} B"
    );
    let md = std::fs::read_to_string(out_dir.join("card.md")).unwrap();
    assert!(md.contains("**pass**") && md.contains("Which number to trust"));

    // Robustness: the tch model and the fp32 file compute the same function,
    // so every column agrees; the worst case is below every column.
    let rows = card["robustness"]["rows"].as_array().unwrap();
    assert_eq!(rows.len(), 3);
    let columns = ["natural", "transfer_pgd20", "transfer_apgd_ce", "square"];
    for c in columns {
        assert_eq!(rows[0][c], rows[1][c], "{c}: tch vs fp32 file");
    }
    for row in rows {
        let worst = row["worst_case"].as_f64().unwrap();
        for c in columns {
            assert!(worst <= row[c].as_f64().unwrap(), "{row}");
        }
        assert!(row["natural"].as_f64().unwrap() > row["transfer_pgd20"].as_f64().unwrap());
    }
    assert_eq!(rows[2]["natural"], v["int8"]["natural_int8"]);

    // Latency and memory of a file in a process of its own.
    let child = Command::new(env!("CARGO_BIN_EXE_ard-pipeline"))
        .current_dir(common::repo())
        .args([
            "latency-child",
            "--threads",
            "1",
            "--batches",
            "1,4",
            "--runs",
            "3",
            "--model",
        ])
        .arg(out_dir.join("model.int8.onnx"))
        .output()
        .unwrap();
    assert!(child.status.success(), "{}", stderr(&child));
    let report: Value = serde_json::from_slice(&child.stdout).unwrap();
    assert_eq!(report["latency"].as_array().unwrap().len(), 2);
    assert!(report["latency"][1]["median_ms"].as_f64().unwrap() > 0.0);
    let (base, peak) = (
        report["baseline_rss_mb"].as_f64().unwrap(),
        report["peak_rss_mb"].as_f64().unwrap(),
    );
    assert!(peak > base && base > 0.0, "{report}");
}

#[test]
fn bad_input_gives_one_clear_line_and_no_model_file() {
    let dir = tempfile::tempdir().unwrap();
    let a_file = dir.path().join("a-file");
    std::fs::write(&a_file, "not a folder").unwrap();
    let not_a_library = dir.path().join("libonnxruntime.so");
    std::fs::write(&not_a_library, "not a library").unwrap();
    let student = ["--arch", "mobilenet_v2_x0.5", "--weights", STUDENT];
    let cases: Vec<(Vec<&str>, PathBuf, &str)> = vec![
        (
            vec!["--arch", "mobilenet_v2_x0.5", "--weights", TEACHER],
            dir.path().join("wrong-arch"),
            TEACHER,
        ),
        (student.to_vec(), a_file.join("sub"), "--out"),
        (
            [&student[..], &["--int8", "--calibration", "0"]].concat(),
            dir.path().join("cal0"),
            "'0' for '--calibration",
        ),
        (
            [&student[..], &["--int8", "--calibration", "50001"]].concat(),
            dir.path().join("cal-big"),
            "'50001' for '--calibration",
        ),
        (
            [
                &student[..],
                &["--onnxruntime", "/nonexistent/libonnxruntime.so"],
            ]
            .concat(),
            dir.path().join("no-runtime"),
            "/nonexistent/libonnxruntime.so",
        ),
        (
            [
                &student[..],
                &["--onnxruntime", not_a_library.to_str().unwrap()],
            ]
            .concat(),
            dir.path().join("bad-runtime"),
            "cannot be loaded",
        ),
        (
            [&student[..], &["--python", "/nonexistent/python"]].concat(),
            dir.path().join("no-python"),
            "/nonexistent/python",
        ),
    ];
    for (args, out_dir, names) in cases {
        let out = export(&args, &out_dir);
        let err = stderr(&out);
        // Out-of-range counts are refused by the argument parser (exit 2, as
        // for every usage error); the rest by the export itself (exit 1).
        let usage = names.contains("for '--");
        let code = if usage { 2 } else { 1 };
        assert_eq!(out.status.code(), Some(code), "{args:?}: {err}");
        assert!(!err.contains("panicked"), "{args:?}: {err}");
        let errors: Vec<&str> = err.lines().filter(|l| l.starts_with("error:")).collect();
        assert_eq!(errors.len(), 1, "{args:?}: {err}");
        assert!(errors[0].contains(names), "{args:?}: {err}");
        let left: Vec<PathBuf> = model_files(&out_dir);
        assert!(left.is_empty(), "{args:?} left {left:?}");
    }
}
