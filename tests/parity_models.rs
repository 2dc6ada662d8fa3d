//! Model parity with PyTorch: random PyTorch weights → safetensors → Rust;
//! logits in eval and train mode (and BN running statistics after a train-mode
//! forward) within 1e-4 relative; a Rust-saved checkpoint loads in PyTorch with
//! strict=True and gives the same logits.

mod common;

use ard_pipeline::models::{Arch, Model};
use tch::Device;

fn check(arch_name: &str) {
    common::deterministic();
    let dir = tempfile::tempdir().unwrap();
    let out = dir.path().to_str().unwrap();
    let meta = common::python("models.py", &["--out", out, "--arch", arch_name]);
    let arch: Arch = arch_name.parse().unwrap();
    let weights = dir.path().join(format!("{arch_name}.weights.safetensors"));
    let io_path = dir.path().join(format!("{arch_name}.io.safetensors"));
    let io = common::read(&io_path);
    let model = Model::load(arch, Device::Cpu, &weights).unwrap();

    let params: serde_json::Value = serde_json::from_str(&meta).unwrap();
    assert_eq!(
        model.num_parameters(),
        params[0]["parameters"].as_i64().unwrap(),
        "{arch_name} parameter count"
    );

    let eval = tch::no_grad(|| model.forward_t(&io["x"], false));
    let e = common::rel_err(&eval, &io["eval_logits"], 1.0);
    assert!(e < 1e-4, "{arch_name} eval-mode logits differ: rel {e}");

    // Save before the train-mode forward moves the running statistics.
    let saved = dir.path().join("rust_saved.safetensors");
    model.save(&saved).unwrap();

    let train = tch::no_grad(|| model.forward_t(&io["x"], true));
    let e = common::rel_err(&train, &io["train_logits"], 1.0);
    assert!(e < 1e-4, "{arch_name} train-mode logits differ: rel {e}");
    let vars = model.vs.variables();
    for (key, expected) in io
        .iter()
        .filter_map(|(k, v)| k.strip_prefix("after_train.").map(|k| (k, v)))
    {
        let e = common::rel_err(&vars[key], expected, 1.0);
        assert!(
            e < 1e-5,
            "{arch_name} {key} after a train-mode forward: rel {e}"
        );
    }

    common::python(
        "models.py",
        &[
            "--arch",
            arch_name,
            "--check-load",
            saved.to_str().unwrap(),
            "--io",
            io_path.to_str().unwrap(),
        ],
    );
}

#[test]
fn mobilenet_v2_matches_pytorch() {
    check("mobilenet_v2");
}

#[test]
fn mobilenet_v2_half_width_matches_pytorch() {
    check("mobilenet_v2_x0.5");
}

#[test]
fn resnet18_matches_pytorch() {
    check("resnet18");
}

#[test]
fn wide_resnet_matches_pytorch() {
    check("wrn16_4");
    check("wrn10_2");
}

#[test]
fn parameter_counts_match_the_architecture_notes() {
    let count = |name: &str| Model::new(name.parse().unwrap(), Device::Cpu).num_parameters();
    assert_eq!(count("mobilenet_v2"), 2_296_922);
    assert_eq!(count("resnet18"), 11_173_962);
    // 46.2M used in forward plus the unused sub_block1.
    assert_eq!(count("wrn34_10"), 48_262_586);
}

#[test]
fn wrong_architecture_checkpoint_is_refused_with_names() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("r18.safetensors");
    Model::new(Arch::ResNet18, Device::Cpu).save(&path).unwrap();
    let err = Model::load(Arch::MobileNetV2 { width: 1.0 }, Device::Cpu, &path)
        .unwrap_err()
        .to_string();
    assert!(
        err.contains("does not fit architecture mobilenet_v2"),
        "{err}"
    );
    assert!(err.contains("r18.safetensors"), "{err}");
    assert!(
        err.contains("bn1.weight: file has [64], mobilenet_v2 needs [32]"),
        "{err}"
    );
    assert!(err.contains("missing bn2.bias [1280]"), "{err}");
    assert!(err.contains("more"), "the list is cut, with a count: {err}");
}
