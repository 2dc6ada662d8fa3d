//! AutoAttack parity with the authors' code (`pyautoattack` 0.2.0, through
//! `tests/parity/autoattack_ref.py`) on the robust fixture
//! (`common/robust_fixture.rs`), same weights in a PyTorch definition, same
//! test images, eps 8/255; our model as `eval` runs it (channels-last,
//! BatchNorm folded into the convolutions), theirs as PyTorch users load it:
//!
//! - FAB-T (deterministic: no random start): the same robust / non-robust
//!   verdict on >= 99% of 150 images and robust accuracy within 1 point.
//! - APGD-CE and APGD-T (first target class), one run of 100 iterations from
//!   the same start points: the same fooled / not fooled verdict on >= 99% of
//!   100 images (the authors' step-size rules, see `src/attacks/apgd.rs`).
//! - `autoattack` against `run_standard_evaluation` (random starts differ:
//!   each side draws its own): robust accuracy within 1.5 points and per-image
//!   verdicts agreeing on >= 99% of 100 images (Square's 5,000 queries on
//!   the survivors make this the slow part: 100 images keep it to minutes).
//! - `ard-pipeline eval --attacks autoattack` prints AutoAttack's table (the
//!   accuracy after each part) and refuses `autoattack` beside its own parts.

mod common;
#[path = "common/robust_fixture.rs"]
mod robust_fixture;

use ard_pipeline::attacks::{self, Attack, AttackInput, NoiseKey};
use ard_pipeline::config::{AttackConfig, DataChecksums, PerfConfig, Real};
use ard_pipeline::data::{self, SplitKind};
use ard_pipeline::eval::{EvalAttack, EvalSet, Evaluation};
use ard_pipeline::models::Model;
use robust_fixture::{ARCH, EPS};
use serde_json::Value;
use std::path::Path;
use std::time::Instant;
use tch::{Device, Kind, Tensor};

/// Test images `0..n`.
fn test_set(n: usize) -> EvalSet {
    let split = data::load_split(&common::cifar_root(), SplitKind::Test, DataChecksums::Skip)
        .unwrap()
        .prefix(n);
    EvalSet::from_split(&split).unwrap()
}

/// The fixture's model as `eval` runs it: channels-last, BatchNorm folded in.
fn model() -> Model {
    let mut model = Model::load(
        ARCH.parse().unwrap(),
        Device::Cpu,
        &robust_fixture::weights(),
    )
    .unwrap();
    let perf = PerfConfig::default().build(Device::Cpu).unwrap();
    perf.prepare_for_evaluation(&mut model);
    model
}

fn percent(mask: &Tensor) -> f64 {
    100.0
        * mask
            .to_kind(Kind::Double)
            .mean(Kind::Double)
            .double_value(&[])
}

/// Images on which two [N] bool masks differ.
fn disagreements(a: &Tensor, b: &Tensor) -> i64 {
    a.ne_tensor(b).sum(Kind::Int64).int64_value(&[])
}

/// Runs the reference in `mode` on `io` (x, y and maybe start); its masks and JSON line.
fn reference(mode: &str, io: &[(&str, &Tensor)], extra: &[&str]) -> (Vec<(String, Tensor)>, Value) {
    let dir = tempfile::tempdir().unwrap();
    let io_path = dir.path().join("io.safetensors");
    let out_path = dir.path().join("out.safetensors");
    Tensor::write_safetensors(io, &io_path).unwrap();
    let weights = robust_fixture::weights();
    let mut args = vec![
        "--mode",
        mode,
        "--arch",
        ARCH,
        "--weights",
        weights.to_str().unwrap(),
        "--io",
        io_path.to_str().unwrap(),
        "--out",
        out_path.to_str().unwrap(),
    ];
    let eps = EPS.to_string();
    args.extend(["--eps", eps.as_str()]);
    args.extend(extra);
    let text = common::python("autoattack_ref.py", &args);
    let info = serde_json::from_str(text.lines().last().unwrap()).unwrap();
    (Tensor::read_safetensors(&out_path).unwrap(), info)
}

fn mask(out: &[(String, Tensor)], name: &str) -> Tensor {
    let found = out.iter().find(|(n, _)| n == name);
    found
        .unwrap_or_else(|| panic!("no {name}"))
        .1
        .to_kind(Kind::Bool)
}

fn robust_under(model: &Model, attack: &dyn Attack, x: &Tensor, y: &Tensor) -> Tensor {
    let input = AttackInput {
        x,
        y,
        teacher_logits: None,
    };
    let key = NoiseKey {
        seed: 0,
        counter: 0,
        stream: 1,
    };
    let x_adv = attack.perturb(model, &input, key).unwrap();
    assert!((&x_adv - x).abs().max().double_value(&[]) <= EPS + 1e-6);
    tch::no_grad(|| model.forward_t(&x_adv, false))
        .argmax(-1, false)
        .eq_tensor(y)
}

#[test]
fn fab_t_verdicts_match_the_authors_code() {
    common::deterministic();
    let set = test_set(150);
    let (x, y) = (&set.images.to_kind(Kind::Float), &set.labels);
    let model = model();
    let began = Instant::now();
    let ours = robust_under(&model, &attacks::fab_t(EPS, 100), x, y);
    let rust_s = began.elapsed().as_secs_f64();
    let (out, info) = reference("fab", &[("x", x), ("y", y)], &[]);
    let theirs = mask(&out, "robust");
    let (a, b) = (percent(&ours), percent(&theirs));
    let differ = disagreements(&ours, &theirs);
    eprintln!(
        "fab_t on 150 images: {a:.2}% robust ({rust_s:.1} s) vs the authors' {b:.2}% ({:.1} s); \
         {differ} verdicts differ",
        info["seconds"].as_f64().unwrap()
    );
    let natural = percent(
        &tch::no_grad(|| model.forward_t(x, false))
            .argmax(-1, false)
            .eq_tensor(y),
    );
    assert!(
        a < natural,
        "FAB-T fooled nothing ({a}% vs natural {natural}%)"
    );
    assert!(differ <= 1, "{differ} of 150 verdicts differ");
    assert!((a - b).abs() <= 1.0, "FAB-T {a}% vs the authors' {b}%");
}

#[test]
fn apgd_single_runs_match_the_authors_code() {
    common::deterministic();
    let set = test_set(100);
    let (x, y) = (&set.images.to_kind(Kind::Float), &set.labels);
    let model = model();
    let key = NoiseKey {
        seed: 3,
        counter: 0,
        stream: 5,
    };
    let ce = attacks::apgd_ce(EPS, 100, 1);
    let start = ce.start(x, key);
    let (_, ce_fooled) = ce.run_once(&model, x, y, None, &start).unwrap();
    let clean = tch::no_grad(|| model.forward_t(x, false));
    let target = clean.argsort(-1, true).select(1, 1);
    let t = attacks::apgd_t(EPS, 100, 1, 9);
    let (_, t_fooled) = t.run_once(&model, x, y, Some(&target), &start).unwrap();
    let (out, _) = reference("apgd", &[("x", x), ("y", y), ("start", &start)], &[]);
    for (name, ours) in [("ce", ce_fooled), ("t", t_fooled)] {
        let theirs = mask(&out, &format!("{name}.fooled"));
        let differ = disagreements(&ours, &theirs);
        eprintln!(
            "apgd {name}: {:.0}% fooled vs the authors' {:.0}%, {differ} of 100 differ",
            percent(&ours),
            percent(&theirs)
        );
        assert!(differ <= 1, "apgd {name}: {differ} of 100 verdicts differ");
    }
}

#[test]
fn autoattack_matches_the_authors_code() {
    common::deterministic();
    let set = test_set(100);
    let model = model();
    let evals = [EvalAttack::AutoAttack];
    let train_attack = AttackConfig {
        eps: Real(EPS),
        ..AttackConfig::default()
    };
    let job = Evaluation {
        model: &model,
        set: &set,
        evals: &evals,
        train_attack: &train_attack,
        batch_size: 250,
        seed: 0,
        teacher: None,
    };
    let began = Instant::now();
    let masks = job.masks(|_, _, _| {}).unwrap();
    let rust_s = began.elapsed().as_secs_f64();
    let ours = masks.correct[0].shallow_clone();
    let report = masks.report();
    let x = set.images.to_kind(Kind::Float);
    let (out, info) = reference(
        "autoattack",
        &[("x", &x), ("y", &set.labels)],
        &["--batch-size", "250"],
    );
    let theirs = mask(&out, "robust");
    let (a, b) = (percent(&ours), percent(&theirs));
    let differ = disagreements(&ours, &theirs);
    eprintln!(
        "autoattack on 100 images: {a:.2}% ({rust_s:.1} s; {:?}) vs the authors' {b:.2}% \
         ({:.1} s; {}); {differ} verdicts differ",
        report.parts["autoattack"],
        info["seconds"].as_f64().unwrap(),
        info["steps"]
    );
    // The parts' tally is AutoAttack's table: clean first, never rising, ending at the result.
    let parts = &report.parts["autoattack"];
    let names: Vec<&str> = parts.iter().map(|p| p.name.as_str()).collect();
    assert_eq!(names, ["clean", "apgd_ce", "apgd_t", "fab_t", "square"]);
    assert!(parts.windows(2).all(|w| w[1].robust <= w[0].robust));
    assert_eq!(parts[4].accuracy, report.accuracy["autoattack"]);
    assert_eq!(report.accuracy["autoattack"], report.worst_case);
    assert!(report.flags.is_empty(), "{:?}", report.flags);
    assert!(differ <= 1, "{differ} of 100 verdicts differ");
    assert!((a - b).abs() <= 1.5, "autoattack {a}% vs the authors' {b}%");
}

fn write_config(dir: &Path) -> std::path::PathBuf {
    let config = dir.join("eval.toml");
    std::fs::write(
        &config,
        format!(
            "[run]\nthreads = 1\ndevice = \"cpu\"\n[data]\nroot = {:?}\ndownload = false\n\
             checksums = \"skip\"\n[loss]\nkind = \"pgd_at\"\n",
            common::cifar_root().display().to_string()
        ),
    )
    .unwrap();
    config
}

#[test]
fn eval_prints_autoattacks_table_and_refuses_its_parts_beside_it() {
    let weights = robust_fixture::weights();
    let dir = tempfile::tempdir().unwrap();
    let config = write_config(dir.path());
    let json_path = dir.path().join("report.json");
    let bin = env!("CARGO_BIN_EXE_ard-pipeline");
    let eval = |attacks: &str| {
        std::process::Command::new(bin)
            .args(["--config", config.to_str().unwrap(), "eval", "--arch", ARCH])
            .args(["--weights", weights.to_str().unwrap(), "--attacks", attacks])
            .args(["--test-limit", "40", "--json", json_path.to_str().unwrap()])
            .output()
            .unwrap()
    };
    let out = eval("natural,autoattack");
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(
        out.status.success(),
        "{stdout}\n{}",
        String::from_utf8_lossy(&out.stderr)
    );
    eprintln!("{stdout}");
    for needle in [
        "autoattack",
        "clean",
        "after apgd_ce",
        "after apgd_t",
        "after fab_t",
        "after square",
    ] {
        assert!(stdout.contains(needle), "{needle} missing from\n{stdout}");
    }
    let report: Value =
        serde_json::from_str(&std::fs::read_to_string(&json_path).unwrap()).unwrap();
    let parts = report["parts"]["autoattack"].as_array().unwrap();
    assert_eq!(parts.len(), 5);
    assert_eq!(parts[4]["accuracy"], report["accuracy"]["autoattack"]);
    assert_eq!(parts[0]["accuracy"], report["accuracy"]["natural"]);

    let refused = eval("autoattack,apgd_ce");
    let err = String::from_utf8_lossy(&refused.stderr);
    assert_eq!(refused.status.code(), Some(1), "{err}");
    assert!(
        err.contains("\"apgd_ce\" is part of autoattack") && !err.contains("panicked"),
        "{err}"
    );
    assert_eq!(err.matches("error:").count(), 1, "{err}");
}
