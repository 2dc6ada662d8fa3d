//! Attack parity with PyTorch: same weights, inputs and start points →
//! adversarial examples within 1e-5 (max abs), and the same BatchNorm running
//! statistics after a train-mode attack. Parameter gradients stay untouched.

mod common;

use ard_pipeline::attacks::{self, Attack, AttackInput, NoiseKey};
use ard_pipeline::config::RandomStart;
use ard_pipeline::models::{Arch, Model};
use serde_json::json;
use tch::{Device, Kind, Tensor};

const ARCH: &str = "mobilenet_v2_x0.5";

struct Case {
    name: &'static str,
    attack: Box<dyn Attack>,
    objective: &'static str,
    train_bn: bool,
    eps: f64,
    step: f64,
    steps: usize,
}

fn cases() -> Vec<Case> {
    let eps = 8.0 / 255.0;
    let case = |name, attack: Box<dyn Attack>, objective, train_bn, step, steps| Case {
        name,
        attack,
        objective,
        train_bn,
        eps,
        step,
        steps,
    };
    vec![
        case(
            "fgsm",
            Box::new(attacks::fgsm(eps, eps, true)),
            "ce",
            true,
            eps,
            1,
        ),
        case(
            "fgsm_rs",
            Box::new(attacks::fgsm_rs(
                eps,
                1.25 * eps,
                RandomStart::UniformClamped,
                true,
            )),
            "ce",
            true,
            1.25 * eps,
            1,
        ),
        // N-FGSM: start radius 2 eps, one step of eps, projection radius 3 eps (never binds).
        Case {
            eps: 3.0 * eps,
            ..case(
                "n_fgsm",
                Box::new(attacks::n_fgsm(eps, eps, RandomStart::Uniform, true)),
                "ce",
                true,
                eps,
                1,
            )
        },
        case(
            "pgd_train_bn",
            Box::new(attacks::pgd(
                eps,
                2.0 / 255.0,
                5,
                RandomStart::Uniform,
                true,
            )),
            "ce",
            true,
            2.0 / 255.0,
            5,
        ),
        case(
            "pgd_eval_bn",
            Box::new(attacks::pgd(
                eps,
                2.0 / 255.0,
                5,
                RandomStart::Uniform,
                false,
            )),
            "ce",
            false,
            2.0 / 255.0,
            5,
        ),
        case(
            "kl_pgd",
            Box::new(attacks::kl_pgd(
                eps,
                2.0 / 255.0,
                4,
                RandomStart::NormalSmall,
                false,
            )),
            "kl_teacher",
            false,
            2.0 / 255.0,
            4,
        ),
        case(
            "trades",
            Box::new(attacks::trades(
                eps,
                2.0 / 255.0,
                3,
                RandomStart::NormalSmall,
                true,
            )),
            "kl_clean",
            true,
            2.0 / 255.0,
            3,
        ),
    ]
}

#[test]
fn attacks_match_pytorch() {
    common::deterministic();
    tch::manual_seed(3);
    let dir = tempfile::tempdir().unwrap();
    let arch: Arch = ARCH.parse().unwrap();
    let weights = dir.path().join("w.safetensors");
    Model::new(arch, Device::Cpu).save(&weights).unwrap();

    // Real images: the attack's behaviour near the [0,1] box matters.
    let split = ard_pipeline::data::load_split(
        &common::cifar_root(),
        ard_pipeline::data::SplitKind::Test,
        ard_pipeline::config::DataChecksums::Skip,
    )
    .unwrap();
    let idx: Vec<usize> = (0..8).collect();
    let views = vec![ard_pipeline::data::View::IDENTITY; 8];
    let batch = ard_pipeline::data::make_batch(&split, &idx, &views, Device::Cpu).unwrap();
    let (x, y) = (batch.images, batch.labels);
    let teacher_logits = Tensor::randn([8, 10], (Kind::Float, Device::Cpu)) * 3.0;

    let mut io = vec![
        ("x".to_string(), x.shallow_clone()),
        ("y".to_string(), y.shallow_clone()),
        ("teacher_logits".to_string(), teacher_logits.shallow_clone()),
    ];
    let mut rust_out = Vec::new();
    for (i, c) in cases().iter().enumerate() {
        let model = Model::load(arch, Device::Cpu, &weights).unwrap();
        let x0 = c.attack.start(
            &x,
            NoiseKey {
                seed: 7,
                counter: i as u64,
                stream: 1,
            },
        );
        let input = AttackInput {
            x: &x,
            y: &y,
            teacher_logits: Some(&teacher_logits),
        };
        let x_adv = c.attack.run_from(&model, &input, &x0).unwrap();
        // Inputs only: no parameter has a gradient after an attack.
        assert!(
            model
                .vs
                .trainable_variables()
                .iter()
                .all(|p| !p.grad().defined()),
            "{}: parameter grads touched",
            c.name
        );
        // In the ball and the box.
        assert!(
            (&x_adv - &x).abs().max().double_value(&[]) <= c.eps + 1e-6,
            "{} leaves the eps-ball",
            c.name
        );
        assert!(x_adv.min().double_value(&[]) >= 0.0 && x_adv.max().double_value(&[]) <= 1.0);
        assert!(
            (&x_adv - &x).abs().max().double_value(&[]) > 0.5 * c.eps,
            "{} did not move",
            c.name
        );
        io.push((format!("{}.x_start", c.name), x0));
        rust_out.push((c.name, x_adv, model.vs.variables()));
    }
    let io_path = dir.path().join("io.safetensors");
    Tensor::write_safetensors(&io, &io_path).unwrap();
    let spec: Vec<_> = cases()
        .iter()
        .map(|c| json!({"name": c.name, "eps": c.eps, "step_size": c.step, "steps": c.steps, "objective": c.objective, "train_bn": c.train_bn}))
        .collect();
    let out_path = dir.path().join("out.safetensors");
    common::python(
        "attacks.py",
        &[
            "--arch",
            ARCH,
            "--weights",
            weights.to_str().unwrap(),
            "--io",
            io_path.to_str().unwrap(),
            "--spec",
            &serde_json::to_string(&spec).unwrap(),
            "--out",
            out_path.to_str().unwrap(),
        ],
    );
    let reference = common::read(&out_path);
    for (name, x_adv, vars) in &rust_out {
        let d = common::max_abs(x_adv, &reference[&format!("{name}.x_adv")]);
        assert!(d <= 1e-5, "{name}: x_adv differs from PyTorch by {d}");
        let mut checked = 0;
        for (key, expected) in reference
            .iter()
            .filter_map(|(k, v)| k.strip_prefix(&format!("{name}.state.")).map(|k| (k, v)))
        {
            let e = common::rel_err(&vars[key], expected, 1.0);
            assert!(e < 1e-5, "{name}: BN statistic {key} differs: rel {e}");
            checked += 1;
        }
        assert!(checked > 0);
    }
}
