//! `ard-pipeline export --format robustbench`: for a ResNet-18 (non-trivial
//! BatchNorm statistics), the committed WRN-16-2 teacher and the committed
//! MobileNetV2 student, `model.pt` loads with strict=True into RobustBench's
//! own class (the installed `robustbench` 1.1.1 package; MobileNetV2 through
//! the definition file written beside it) and gives the project's logits
//! (max |difference| <= 1e-4 of the logit scale); `model_info.json` carries
//! the RobustBench fields, the checkpoint's sha256, and the accuracies of an
//! `eval --json` file (null, with a note, without one).

mod common;

use serde_json::Value;
use std::path::{Path, PathBuf};
use std::process::{Command, Output};
use tch::{Device, Kind, Tensor};

fn export(args: &[&str]) -> Output {
    Command::new(env!("CARGO_BIN_EXE_ard-pipeline"))
        .current_dir(common::repo())
        .env("ARD__DATA__ROOT", common::cifar_root())
        .env("ARD__DATA__CHECKSUMS", "skip")
        .env("ARD__DATA__DOWNLOAD", "false")
        .env("ARD__RUN__THREADS", "1")
        .env_remove("RUST_BACKTRACE")
        .args(["--log-level", "warn", "export", "--format", "robustbench"])
        .args(args)
        .output()
        .unwrap()
}

fn text(out: &Output) -> String {
    format!(
        "{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    )
}

/// A seeded ResNet-18 whose BatchNorm statistics are not the identity.
fn resnet18(dir: &Path) -> PathBuf {
    let path = common::random_checkpoint(dir, "r18", "resnet18", 5);
    let tensors: Vec<(String, Tensor)> = common::read(&path)
        .into_iter()
        .map(|(n, t)| {
            let t = if n.ends_with("running_mean") {
                t.randn_like() * 0.1
            } else if n.ends_with("running_var") {
                t.rand_like() + 0.5
            } else {
                t
            };
            (n, t)
        })
        .collect();
    Tensor::write_safetensors(&tensors, &path).unwrap();
    path
}

/// The project's logits and those of the entry loaded by RobustBench's class.
fn both_logits(dir: &Path, arch: &str, weights: &Path, out: &Path) -> (Tensor, Tensor) {
    tch::manual_seed(11);
    let images = Tensor::rand([24, 3, 32, 32], (Kind::Float, Device::Cpu));
    let images_path = dir.join("images.safetensors");
    Tensor::write_safetensors(&[("images", &images)], &images_path).unwrap();
    let logits_path = dir.join("theirs.safetensors");
    let mut args = vec![
        "--arch".to_string(),
        arch.into(),
        "--pt".into(),
        out.join("model.pt").display().to_string(),
        "--images".into(),
        images_path.display().to_string(),
        "--out".into(),
        logits_path.display().to_string(),
    ];
    if arch.starts_with("mobilenet") {
        args.extend([
            "--definition".into(),
            out.join("mobilenet_v2.py").display().to_string(),
        ]);
    }
    let args: Vec<&str> = args.iter().map(String::as_str).collect();
    common::python("robustbench_load.py", &args);
    let model =
        ard_pipeline::models::Model::load(arch.parse().unwrap(), Device::Cpu, weights).unwrap();
    let ours = tch::no_grad(|| model.forward_t(&images, false));
    (ours, common::read(&logits_path)["logits"].shallow_clone())
}

#[test]
fn the_state_dict_loads_into_robustbench_classes_with_the_same_logits() {
    common::deterministic();
    let dir = tempfile::tempdir().unwrap();
    let r18 = resnet18(dir.path());
    let repo = common::repo();
    let cases = [
        (
            "resnet18",
            r18.clone(),
            "ResNet-18",
            "robustbench.model_zoo.architectures.resnet",
        ),
        (
            "wrn16_2",
            repo.join("weights/teacher-wrn16_2-nfgsm.safetensors"),
            "WideResNet-16-2",
            "robustbench.model_zoo.architectures.wide_resnet",
        ),
        (
            "mobilenet_v2_x0.5",
            repo.join("weights/quickstart-mobilenet_v2_x0.5.safetensors"),
            "MobileNetV2 (width 0.5)",
            "mobilenet_v2.py",
        ),
    ];
    for (arch, weights, architecture, module) in cases {
        let out = dir.path().join(format!("entry-{arch}"));
        let run = export(&[
            "--arch",
            arch,
            "--weights",
            weights.to_str().unwrap(),
            "--out",
            out.to_str().unwrap(),
            "--test-images",
            "32",
        ]);
        assert!(run.status.success(), "{arch}: {}", text(&run));
        let info: Value =
            serde_json::from_str(&std::fs::read_to_string(out.join("model_info.json")).unwrap())
                .unwrap();
        assert_eq!(info["architecture"], architecture);
        assert_eq!(info["state_dict"]["module"], module);
        assert_eq!(info["threat_model"], "Linf");
        assert_eq!(info["eps"], "8/255");
        assert_eq!(info["additional_data"], false);
        assert_eq!(info["number_forward_passes"], 1);
        assert_eq!(
            info["checkpoint"]["sha256"],
            ard_pipeline::deploy::export::sha256(&weights).unwrap()
        );
        assert!(info["clean_acc"].is_null() && info["autoattack_acc"].is_null());
        assert!(
            info["notes"][0]
                .as_str()
                .unwrap()
                .contains("no --eval-json"),
            "{info}"
        );
        let (ours, theirs) = both_logits(dir.path(), arch, &weights, &out);
        let e = common::rel_err(&theirs, &ours, 1.0);
        assert!(
            e <= 1e-4,
            "{arch}: logits differ from RobustBench's class: rel {e}"
        );
        assert!(
            ours.abs().max().double_value(&[]) > 0.1,
            "{arch}: degenerate test model"
        );
    }
}

#[test]
fn accuracies_come_from_the_eval_json_of_the_same_checkpoint() {
    let dir = tempfile::tempdir().unwrap();
    let r18 = resnet18(dir.path());
    let sha = ard_pipeline::deploy::export::sha256(&r18).unwrap();
    let eval = dir.path().join("eval.json");
    std::fs::write(
        &eval,
        format!(
            r#"{{"images": 1000, "weights_sha256": "{sha}", "eps": {},
                "accuracy": {{"natural": 81.25, "autoattack": 43.5}}}}"#,
            8.0 / 255.0
        ),
    )
    .unwrap();
    let out = dir.path().join("entry");
    let run = export(&[
        "--arch",
        "resnet18",
        "--weights",
        r18.to_str().unwrap(),
        "--out",
        out.to_str().unwrap(),
        "--test-images",
        "8",
        "--eval-json",
        eval.to_str().unwrap(),
    ]);
    assert!(run.status.success(), "{}", text(&run));
    let info: Value =
        serde_json::from_str(&std::fs::read_to_string(out.join("model_info.json")).unwrap())
            .unwrap();
    assert_eq!(info["clean_acc"], "81.25");
    assert_eq!(info["autoattack_acc"], "43.50");
    assert_eq!(info["autoattack_n"], 1000);
    assert!(
        info["notes"][0]
            .as_str()
            .unwrap()
            .contains("first 1000 test images"),
        "{info}"
    );
    assert!(
        text(&run).contains("AutoAttack 43.50% (n=1000)"),
        "{}",
        text(&run)
    );

    // Another checkpoint's evaluation is refused before anything is written.
    let other = common::random_checkpoint(dir.path(), "other", "resnet18", 6);
    let out2 = dir.path().join("entry2");
    let run = export(&[
        "--arch",
        "resnet18",
        "--weights",
        other.to_str().unwrap(),
        "--out",
        out2.to_str().unwrap(),
        "--eval-json",
        eval.to_str().unwrap(),
    ]);
    assert_eq!(run.status.code(), Some(1), "{}", text(&run));
    assert!(
        text(&run).contains("evaluates another checkpoint"),
        "{}",
        text(&run)
    );
    assert!(!out2.exists());
    // An ONNX export does not take --eval-json.
    let run = Command::new(env!("CARGO_BIN_EXE_ard-pipeline"))
        .current_dir(common::repo())
        .args(["export", "--arch", "resnet18", "--weights"])
        .arg(&r18)
        .arg("--out")
        .arg(dir.path().join("x"))
        .arg("--eval-json")
        .arg(&eval)
        .output()
        .unwrap();
    assert_eq!(run.status.code(), Some(1));
    assert!(
        text(&run).contains("only --format robustbench uses it"),
        "{}",
        text(&run)
    );
}
