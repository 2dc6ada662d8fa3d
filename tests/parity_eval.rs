//! Evaluation parity with PyTorch and the evaluation's guarantees.
//!
//! The model is a WRN-10-1 adversarially trained here for 150 FGSM-RS steps on
//! 10,000 training images (about a minute on one core; cached under
//! `CARGO_TARGET_TMPDIR`): at eps 8/255 on the first 500 test images, 30.0%
//! natural, 24.2% PGD-20, 23.2% APGD-CE and 19.6% CW / APGD-DLR / APGD-T, so
//! every attack has points to fool and points it fails on. Such a tiny model is
//! nearly linear in the eps-ball: FGSM, the 1-step training attack and PGD-20
//! fool almost the same points (within one image), while the margin losses
//! find clearly more.
//!
//! - PGD (with restarts), CW-inf and FGSM: x_adv within 1e-5 (max abs) of
//!   `tests/parity/eval_attacks.py`, same start points, same correctness masks.
//! - APGD-CE, APGD-DLR and APGD-T at their default 100 iterations on 24
//!   images: x_adv within 1e-5 and the same masks; on 500 images with fewer
//!   iterations: robust accuracy within 0.5 points.
//! - On the robust model: natural >= train_attack (1 step) >= PGD-20 >=
//!   worst case, natural >= FGSM >= PGD-20, and the evaluation leaves the
//!   parameters and BatchNorm statistics bit-identical, with no gradients.
//! - MACs and parameters of each layer match PyTorch forward hooks.
//! - `ard-pipeline eval` prints the table and writes the JSON report.

mod common;
#[path = "common/robust_fixture.rs"]
mod robust_fixture;

use ard_pipeline::attacks::{self, Attack, AttackInput, NoiseKey};
use ard_pipeline::config::{AttackConfig, AttackKind, BnMode, DataChecksums, RandomStart, Real};
use ard_pipeline::data::{self, SplitKind};
use ard_pipeline::eval::{self, edge, EvalAttack, EvalSet};
use ard_pipeline::models::{Arch, Model};
use serde_json::{json, Value};
use std::collections::BTreeMap;
use std::path::PathBuf;
use std::time::Instant;
use tch::{Device, Kind, Tensor};

use robust_fixture::{ARCH, EPS};

/// The robust fixture's weights, trained once per target folder.
fn fixture() -> PathBuf {
    robust_fixture::weights()
}

/// Test images `0..n` (exact pixels for n <= 1000).
fn test_images(n: usize) -> (Tensor, Tensor) {
    let split = data::load_split(&common::cifar_root(), SplitKind::Test, DataChecksums::Skip)
        .unwrap()
        .prefix(n);
    let set = EvalSet::from_split(&split).unwrap();
    (set.images, set.labels)
}

fn train_attack_1step() -> AttackConfig {
    AttackConfig {
        kind: AttackKind::Pgd,
        eps: Real(EPS),
        step_size: Real(EPS),
        steps: 1,
        random_start: RandomStart::Uniform,
        bn_mode: BnMode::Train,
        ..AttackConfig::default()
    }
}

/// The reference's description of an evaluation attack.
fn spec_of(e: EvalAttack) -> Value {
    let step = eval::EVAL_STEP;
    match e {
        EvalAttack::Fgsm => json!({"kind": "pgd", "eps": EPS, "step": EPS, "steps": 1}),
        EvalAttack::Pgd { steps, .. } => {
            json!({"kind": "pgd", "eps": EPS, "step": step, "steps": steps})
        }
        EvalAttack::Cw { steps, .. } => {
            json!({"kind": "cw", "eps": EPS, "step": step, "steps": steps, "kappa": attacks::CW_KAPPA})
        }
        EvalAttack::ApgdCe {
            iterations,
            restarts,
        } => {
            json!({"kind": "apgd", "eps": EPS, "loss": "ce", "steps": iterations, "restarts": restarts})
        }
        EvalAttack::ApgdDlr {
            iterations,
            restarts,
        } => {
            json!({"kind": "apgd", "eps": EPS, "loss": "dlr", "steps": iterations, "restarts": restarts})
        }
        EvalAttack::ApgdT {
            iterations,
            restarts,
        } => json!({"kind": "apgd", "eps": EPS, "loss": "dlr_t",
            "steps": iterations, "restarts": restarts, "targets": attacks::APGD_T_TARGETS}),
        other => panic!("no reference for {other:?}"),
    }
}

struct Case {
    name: String,
    attack: Box<dyn Attack>,
    spec: Value,
}

fn case(name: &str) -> Case {
    let e = EvalAttack::parse(name).unwrap();
    let cfg = AttackConfig {
        eps: Real(EPS),
        ..AttackConfig::default()
    };
    Case {
        name: name.to_string(),
        attack: e.build(&cfg).unwrap(),
        spec: spec_of(e),
    }
}

struct Outcome {
    name: String,
    rust_adv: Tensor,
    rust_correct: Tensor,
    py_adv: Tensor,
    py_correct: Tensor,
}

fn predict(model: &Model, x: &Tensor) -> Tensor {
    tch::no_grad(|| model.forward_t(x, false)).argmax(-1, false)
}

/// Runs every case in Rust and in the reference on (x, y), from the same starts.
fn run_cases(x: &Tensor, y: &Tensor, cases: Vec<Case>) -> Vec<Outcome> {
    common::deterministic();
    let weights = fixture();
    let model = Model::load(ARCH.parse().unwrap(), Device::Cpu, &weights).unwrap();
    let dir = tempfile::tempdir().unwrap();
    let mut io = vec![
        ("x".to_string(), x.shallow_clone()),
        ("y".to_string(), y.shallow_clone()),
    ];
    let mut specs = Vec::new();
    let mut rust = Vec::new();
    for (i, c) in cases.iter().enumerate() {
        let key = NoiseKey {
            seed: 5,
            counter: i as u64,
            stream: 3,
        };
        let starts = c.attack.starts(x, key);
        let input = AttackInput {
            x,
            y,
            teacher_logits: None,
        };
        let began = Instant::now();
        let adv = c.attack.run_from_starts(&model, &input, &starts).unwrap();
        eprintln!(
            "{}: {} runs, {:.1} s in Rust",
            c.name,
            starts.len(),
            began.elapsed().as_secs_f64()
        );
        assert!(
            (&adv - x).abs().max().double_value(&[]) <= EPS + 1e-6,
            "{} leaves the eps-ball",
            c.name
        );
        assert!(adv.min().double_value(&[]) >= 0.0 && adv.max().double_value(&[]) <= 1.0);
        let correct = predict(&model, &adv).eq_tensor(y);
        for (r, s) in starts.iter().enumerate() {
            io.push((format!("{}.start.{r}", c.name), s.shallow_clone()));
        }
        let mut spec = c.spec.clone();
        spec["name"] = json!(c.name);
        spec["runs"] = json!(starts.len());
        specs.push(spec);
        rust.push((adv, correct));
    }
    let io_path = dir.path().join("io.safetensors");
    Tensor::write_safetensors(&io, &io_path).unwrap();
    let spec_path = dir.path().join("spec.json");
    std::fs::write(&spec_path, serde_json::to_string(&specs).unwrap()).unwrap();
    let out_path = dir.path().join("out.safetensors");
    let began = Instant::now();
    common::python(
        "eval_attacks.py",
        &[
            "--arch",
            ARCH,
            "--weights",
            weights.to_str().unwrap(),
            "--io",
            io_path.to_str().unwrap(),
            "--spec",
            spec_path.to_str().unwrap(),
            "--out",
            out_path.to_str().unwrap(),
        ],
    );
    eprintln!("reference: {:.1} s", began.elapsed().as_secs_f64());
    let reference = common::read(&out_path);
    cases
        .iter()
        .zip(rust)
        .map(|(c, (rust_adv, rust_correct))| Outcome {
            name: c.name.clone(),
            rust_adv,
            rust_correct,
            py_adv: reference[&format!("{}.x_adv", c.name)].shallow_clone(),
            py_correct: reference[&format!("{}.correct", c.name)].shallow_clone(),
        })
        .collect()
}

fn accuracy(mask: &Tensor) -> f64 {
    100.0
        * mask
            .to_kind(Kind::Double)
            .mean(Kind::Double)
            .double_value(&[])
}

fn assert_exact(outcomes: &[Outcome]) {
    for o in outcomes {
        let d = common::max_abs(&o.rust_adv, &o.py_adv);
        eprintln!(
            "{}: accuracy {:.2}% (reference {:.2}%), max |x_adv diff| {d:.2e}",
            o.name,
            accuracy(&o.rust_correct),
            accuracy(&o.py_correct)
        );
        assert!(d <= 1e-5, "{}: x_adv differs from PyTorch by {d}", o.name);
        assert!(
            o.rust_correct.equal(&o.py_correct),
            "{}: robustness masks differ",
            o.name
        );
    }
}

#[test]
fn sign_gradient_eval_attacks_match_pytorch() {
    let (x, y) = test_images(64);
    let cases = ["fgsm", "pgd20", "pgd5_r3", "cw", "cw10_r3"]
        .into_iter()
        .map(case)
        .collect();
    let outcomes = run_cases(&x, &y, cases);
    assert_exact(&outcomes);
    // Every attack fools some points the model gets right clean, and not all.
    let model = Model::load(ARCH.parse().unwrap(), Device::Cpu, &fixture()).unwrap();
    let natural = accuracy(&predict(&model, &x).eq_tensor(&y));
    for o in &outcomes {
        let a = accuracy(&o.rust_correct);
        assert!(
            a < natural && a > 0.0,
            "{}: {a}% (natural {natural}%)",
            o.name
        );
    }
}

#[test]
fn apgd_default_configs_match_pytorch() {
    let (x, y) = test_images(24);
    let cases = ["apgd_ce", "apgd_dlr", "apgd_t", "apgd_ce10_r3"]
        .into_iter()
        .map(case)
        .collect();
    assert_exact(&run_cases(&x, &y, cases));
}

#[test]
fn apgd_robust_accuracy_matches_pytorch_on_500_images() {
    let (x, y) = test_images(500);
    let mut cases: Vec<Case> = ["apgd_ce20", "apgd_dlr20"].into_iter().map(case).collect();
    cases.push(Case {
        name: "apgd_t10_3targets".into(),
        attack: Box::new(attacks::apgd_t(EPS, 10, 1, 3)),
        spec: json!({"kind": "apgd", "eps": EPS, "loss": "dlr_t", "steps": 10, "restarts": 1, "targets": 3}),
    });
    let outcomes = run_cases(&x, &y, cases);
    for o in &outcomes {
        let (a, b) = (accuracy(&o.rust_correct), accuracy(&o.py_correct));
        let moved = (&o.rust_adv - &o.py_adv)
            .abs()
            .flatten(1, -1)
            .amax([1], false)
            .gt(1e-5)
            .sum(Kind::Int64)
            .int64_value(&[]);
        eprintln!(
            "{}: {a:.2}% vs PyTorch {b:.2}% ({moved} of 500 x_adv differ)",
            o.name
        );
        assert!(
            (a - b).abs() <= 0.5,
            "{}: robust accuracy {a} vs {b}",
            o.name
        );
        assert!(
            a > 5.0 && a < 60.0,
            "{}: accuracy {a} is not informative",
            o.name
        );
    }
}

/// Square is random search, so two implementations agree in distribution,
/// not image by image: on the fixture's first 500 test images at 1,000
/// queries, our Square and torchattacks' (independent, after the authors'
/// code; it samples one window per iteration for the whole batch, ours one
/// per image) must give robust accuracies within 2 points (10 images), below
/// the natural accuracy and informative (measured: both 20.2%, with 29.8%
/// natural, 24.0% PGD-20; Square's margin loss lands it beside the margin
/// attacks, 19.6%, not beside cross-entropy PGD).
#[test]
fn square_robust_accuracy_matches_torchattacks_on_500_images() {
    let (x, y) = test_images(500);
    common::deterministic();
    let weights = fixture();
    let model = Model::load(ARCH.parse().unwrap(), Device::Cpu, &weights).unwrap();
    let queries = 1000;
    let began = Instant::now();
    let logits = |x: &Tensor| Ok(tch::no_grad(|| model.forward_t(x, false)));
    let key = NoiseKey {
        seed: 5,
        counter: 0,
        stream: 7,
    };
    let out = attacks::square_linf(logits, &x, &y, EPS, queries, key).unwrap();
    let rust_s = began.elapsed().as_secs_f64();
    assert!((&out.x_adv - &x).abs().max().double_value(&[]) <= EPS + 1e-6);
    let rust = accuracy(&predict(&model, &out.x_adv).eq_tensor(&y));
    let natural = accuracy(&predict(&model, &x).eq_tensor(&y));
    let pgd = case("pgd20");
    let input = AttackInput {
        x: &x,
        y: &y,
        teacher_logits: None,
    };
    let x_pgd = pgd.attack.perturb(&model, &input, key).unwrap();
    let pgd_acc = accuracy(&predict(&model, &x_pgd).eq_tensor(&y));

    let dir = tempfile::tempdir().unwrap();
    let io_path = dir.path().join("io.safetensors");
    Tensor::write_safetensors(&[("x", &x), ("y", &y)], &io_path).unwrap();
    let began = Instant::now();
    let text = common::python(
        "square_ref.py",
        &[
            "--arch",
            ARCH,
            "--weights",
            weights.to_str().unwrap(),
            "--io",
            io_path.to_str().unwrap(),
            "--eps",
            &EPS.to_string(),
            "--queries",
            &queries.to_string(),
        ],
    );
    let reference: Value = serde_json::from_str(text.lines().last().unwrap()).unwrap();
    let py = reference["accuracy"].as_f64().unwrap();
    eprintln!(
        "square{queries}: {rust:.2}% ({rust_s:.0} s, mean {:.0} queries) vs torchattacks {py:.2}% \
         ({:.0} s); natural {natural:.2}%, PGD-20 {pgd_acc:.2}%",
        out.queries
            .to_kind(Kind::Double)
            .mean(Kind::Double)
            .double_value(&[]),
        began.elapsed().as_secs_f64()
    );
    assert!((reference["natural"].as_f64().unwrap() - natural).abs() < 1e-9);
    assert!(
        (rust - py).abs() <= 2.0,
        "Square {rust}% vs torchattacks {py}%"
    );
    for acc in [rust, py] {
        assert!(
            acc < natural && acc > 10.0,
            "Square {acc}% is not informative (natural {natural}%)"
        );
    }
}

#[test]
fn ordering_holds_and_eval_has_no_side_effects() {
    common::deterministic();
    let model = Model::load(ARCH.parse().unwrap(), Device::Cpu, &fixture()).unwrap();
    let before: BTreeMap<String, Tensor> = model
        .vs
        .variables()
        .into_iter()
        .map(|(k, v)| (k, v.copy()))
        .collect();
    let (images, labels) = test_images(200);
    let set = EvalSet { images, labels };
    let evals =
        EvalAttack::parse_list("natural,train_attack,fgsm,pgd20,cw,apgd_ce,apgd_dlr").unwrap();
    let mut calls = Vec::new();
    let began = Instant::now();
    let masks = eval::Evaluation {
        model: &model,
        set: &set,
        evals: &evals,
        train_attack: &train_attack_1step(),
        batch_size: 64,
        seed: 0,
        teacher: None,
    }
    .masks(|_, done, n| calls.push((done, n)))
    .unwrap();
    let report = masks.report();
    eprintln!(
        "{:?}, worst case {:.1}% in {:.1} s",
        report.accuracy,
        report.worst_case,
        began.elapsed().as_secs_f64()
    );
    assert_eq!(
        calls,
        vec![(0, 200), (64, 200), (128, 200), (192, 200), (200, 200)]
    );
    assert_eq!(report.images, 200);
    let acc = |k: &str| report.accuracy[k];
    assert!(acc("natural") >= acc("train_attack"), "{report:?}");
    assert!(acc("train_attack") >= acc("pgd20"), "{report:?}");
    // FGSM is not always weaker than PGD-20 (step 2/255 from a random start):
    // on the fixture trained on an AVX2-only CPU it was 28.0% against 29.0%.
    assert!(acc("natural") >= acc("fgsm"), "{report:?}");
    assert!(acc("pgd20") >= report.worst_case, "{report:?}");
    // Robust but not trivially so: the gaps are real.
    assert!(
        acc("natural") > acc("pgd20") && acc("pgd20") > report.worst_case,
        "{report:?}"
    );
    for (name, a) in &report.accuracy {
        assert!(*a >= report.worst_case, "{name}");
    }
    // The worst case is the per-point conjunction.
    let manual = masks
        .correct
        .iter()
        .fold(masks.natural.shallow_clone(), |a, c| a.logical_and(c));
    assert!(manual.equal(&masks.worst_case()));
    // No side effects: parameters and BatchNorm statistics bit-identical, no gradients.
    for (name, value) in model.vs.variables() {
        assert!(
            value.equal(&before[&name]),
            "{name} changed during evaluation"
        );
    }
    assert!(model
        .vs
        .trainable_variables()
        .iter()
        .all(|p| !p.grad().defined()));
    // The same through `evaluate`, whose report is JSON-serialisable.
    let text = serde_json::to_value(&report).unwrap();
    assert!(text["worst_case"].is_number() && text["accuracy"]["pgd20"].is_number());
}

#[test]
fn cascade_finds_the_same_worst_case_attacking_only_the_survivors() {
    common::deterministic();
    let model = Model::load(ARCH.parse().unwrap(), Device::Cpu, &fixture()).unwrap();
    let (images, labels) = test_images(200);
    let set = EvalSet { images, labels };
    let evals = EvalAttack::parse_list("natural,fgsm,pgd20,apgd_ce").unwrap();
    let train_attack = train_attack_1step();
    let job = eval::Evaluation {
        model: &model,
        set: &set,
        evals: &evals,
        train_attack: &train_attack,
        batch_size: 64,
        seed: 0,
        teacher: None,
    };
    let full = job.masks(|_, _, _| {}).unwrap();
    let mut calls = Vec::new();
    let cascade = job.cascade(|_, done, n| calls.push((done, n))).unwrap();
    let (f, c) = (full.report(), cascade.report());
    eprintln!("every image: {f:?}\ncascade: {c:?}");
    assert!(c.cascade && !f.cascade);
    let count = |m: &Tensor| m.sum(Kind::Int64).int64_value(&[]);
    // Each evaluation attacks exactly the images right under the earlier ones,
    // and its mask is nested in theirs.
    let mut alive = cascade.natural.shallow_clone();
    for (i, mask) in cascade.correct.iter().enumerate() {
        assert!(
            mask.logical_and(&alive.logical_not())
                .sum(Kind::Int64)
                .int64_value(&[])
                == 0,
            "{}: right on an image an earlier evaluation broke",
            cascade.names[i]
        );
        if i > 0 {
            let m = count(&alive) as usize;
            let runs: Vec<_> = calls.iter().filter(|(_, n)| *n == m).collect();
            assert!(
                runs.last().is_some_and(|(d, _)| *d == m),
                "{}: {calls:?}",
                cascade.names[i]
            );
        }
        alive = mask.shallow_clone();
    }
    // FGSM has no random start: per image it is the same attack either way.
    assert!(cascade.correct[1].equal(&full.correct[1].logical_and(&full.natural)));
    assert!(cascade.correct[0].equal(&full.natural));
    assert!(cascade.worst_case().equal(cascade.correct.last().unwrap()));
    // PGD's and APGD's random starts follow batch positions, which differ:
    // the worst case agrees up to those draws (3 of 200 images).
    assert!(
        (c.worst_case - f.worst_case).abs() <= 1.5,
        "cascade {} vs every image {}",
        c.worst_case,
        f.worst_case
    );
    assert!(
        c.worst_case < c.accuracy["natural"] && c.worst_case > 5.0,
        "{c:?}"
    );
}

#[test]
fn macs_and_parameters_match_pytorch_hooks() {
    let archs = [
        "wrn34_10",
        "wrn10_1",
        "resnet18",
        "mobilenet_v2",
        "mobilenet_v2_x0.5",
    ];
    let mut args = vec!["--arch"];
    args.extend(archs);
    let out = common::python("edge_counts.py", &args);
    let counted: Value = serde_json::from_str(out.trim()).unwrap();
    for name in archs {
        let arch: Arch = name.parse().unwrap();
        let reference = counted[name].as_object().unwrap();
        let ours = edge::layers(arch);
        assert_eq!(ours.len(), reference.len(), "{name}: layer count");
        for l in &ours {
            let r = &reference[&l.name];
            assert_eq!(
                (l.macs, l.params),
                (r[0].as_u64().unwrap(), r[1].as_u64().unwrap()),
                "{name}: {}",
                l.name
            );
        }
        eprintln!(
            "{name}: {} MACs, {} parameters in forward",
            edge::macs_per_image(arch),
            edge::parameters_in_forward(arch)
        );
    }
}

#[test]
fn eval_command_prints_a_table_and_writes_json() {
    let weights = fixture();
    let dir = tempfile::tempdir().unwrap();
    let config = dir.path().join("eval.toml");
    std::fs::write(
        &config,
        format!(
            "[run]\nthreads = 1\ndevice = \"cpu\"\n[data]\nroot = {:?}\ndownload = false\n\
             checksums = \"skip\"\n[loss]\nkind = \"pgd_at\"\n",
            common::cifar_root().display().to_string()
        ),
    )
    .unwrap();
    let json_path = dir.path().join("report.json");
    let logits_path = dir.path().join("logits.safetensors");
    let bin = env!("CARGO_BIN_EXE_ard-pipeline");
    let out = std::process::Command::new(bin)
        .args(["--config", config.to_str().unwrap(), "eval", "--arch", ARCH])
        .args(["--weights", weights.to_str().unwrap()])
        .args([
            "--attacks",
            "natural,pgd3,cw5,apgd_ce5",
            "--test-limit",
            "40",
        ])
        .args(["--batch-size", "16", "--json", json_path.to_str().unwrap()])
        .args(["--save-logits", logits_path.to_str().unwrap()])
        .args([
            "--latency",
            "--latency-batches",
            "1,8",
            "--latency-runs",
            "3",
        ])
        .output()
        .unwrap();
    let stdout = String::from_utf8_lossy(&out.stdout);
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(out.status.success(), "{stdout}\n{stderr}");
    eprintln!("{stdout}");
    for needle in [
        "natural",
        "pgd3",
        "cw5",
        "apgd_ce5",
        "worst_case",
        "MMAC",
        "batch   8",
    ] {
        assert!(stdout.contains(needle), "{needle} missing from\n{stdout}");
    }
    assert!(
        stderr.contains(" 40/40 images (100%)") && stderr.contains("eval: "),
        "{stderr}"
    );
    let report: Value =
        serde_json::from_str(&std::fs::read_to_string(&json_path).unwrap()).unwrap();
    assert_eq!(report["images"], 40);
    let acc = report["accuracy"].as_object().unwrap();
    assert_eq!(acc.len(), 4);
    let worst = report["worst_case"].as_f64().unwrap();
    assert!(acc.values().all(|a| a.as_f64().unwrap() >= worst));
    assert_eq!(report["edge"]["macs_per_image"], 12_501_632);
    assert_eq!(report["edge"]["parameters"], 82_522);
    assert_eq!(report["edge"]["latency"].as_array().unwrap().len(), 2);
    let logits = common::read(&logits_path);
    assert_eq!(logits["logits"].size(), [40, 10]);

    // Bad input: errors that name the culprit, no panic.
    let bad = std::process::Command::new(bin)
        .args(["--config", config.to_str().unwrap(), "eval", "--arch", ARCH])
        .args([
            "--weights",
            weights.to_str().unwrap(),
            "--attacks",
            "natural,pgd0",
        ])
        .output()
        .unwrap();
    let err = String::from_utf8_lossy(&bad.stderr);
    assert_eq!(bad.status.code(), Some(1), "{err}");
    assert!(
        err.contains("\"pgd0\"") && !err.contains("panicked"),
        "{err}"
    );
    let missing = std::process::Command::new(bin)
        .args(["--config", config.to_str().unwrap(), "eval", "--arch", ARCH])
        .args(["--weights", "/nonexistent/w.safetensors"])
        .output()
        .unwrap();
    let err = String::from_utf8_lossy(&missing.stderr);
    assert_eq!(missing.status.code(), Some(1), "{err}");
    assert!(err.contains("/nonexistent/w.safetensors"), "{err}");
}
