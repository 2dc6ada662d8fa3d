//! Loss parity with PyTorch: values and gradients with respect to the logits
//! within 1e-5 relative (in double precision, so the comparison is of the
//! formulas, not of rounding).

mod common;

use ard_pipeline::config::{KlReduction, LossKind};
use ard_pipeline::distill::{LossInputs, Objective};
use serde_json::json;
use tch::{Device, Kind, Tensor};

fn objective(kind: LossKind, reduction: KlReduction, alpha: f64) -> Objective {
    Objective {
        kind,
        alpha,
        temperature: 30.0,
        kl_reduction: reduction,
        clean_forward_for_bn: false,
        rslad_adv_weight: 5.0 / 6.0,
        rslad_nat_weight: 1.0 / 6.0,
        beta: 6.0,
        lambda: 0.7,
    }
}

#[test]
fn losses_match_pytorch() {
    tch::manual_seed(11);
    let b = 16;
    let s_adv = Tensor::randn([b, 10], (Kind::Double, Device::Cpu)) * 2.0;
    let s_clean = Tensor::randn([b, 10], (Kind::Double, Device::Cpu)) * 2.0;
    let t = Tensor::randn([b, 10], (Kind::Double, Device::Cpu)) * 4.0;
    let y = Tensor::randint(10, [b], (Kind::Int64, Device::Cpu));
    let cases = vec![
        (
            "ard_mean",
            objective(LossKind::Ard, KlReduction::Mean, 1.0),
            false,
        ),
        (
            "ard_mixed",
            objective(LossKind::Ard, KlReduction::Mean, 0.9),
            true,
        ),
        (
            "ard_batchmean",
            objective(LossKind::Ard, KlReduction::Batchmean, 1.0),
            false,
        ),
        (
            "rslad",
            objective(LossKind::Rslad, KlReduction::Batchmean, 1.0),
            true,
        ),
        (
            "pgd_at",
            objective(LossKind::PgdAt, KlReduction::Mean, 1.0),
            false,
        ),
        (
            "trades",
            objective(LossKind::Trades, KlReduction::Batchmean, 1.0),
            true,
        ),
        (
            "paper_alg1",
            objective(LossKind::PaperAlg1, KlReduction::Mean, 1.0),
            true,
        ),
    ];
    let dir = tempfile::tempdir().unwrap();
    let io_path = dir.path().join("io.safetensors");
    Tensor::write_safetensors(
        &[
            ("s_adv", &s_adv),
            ("s_clean", &s_clean),
            ("t", &t),
            ("y", &y),
        ],
        &io_path,
    )
    .unwrap();
    let spec: Vec<_> = cases
        .iter()
        .map(|(name, o, clean)| json!({
            "name": name, "kind": serde_json::to_value(o.kind).unwrap(), "alpha": o.alpha,
            "temperature": o.temperature, "kl_reduction": serde_json::to_value(o.kl_reduction).unwrap(),
            "rslad_adv_weight": o.rslad_adv_weight, "rslad_nat_weight": o.rslad_nat_weight,
            "beta": o.beta, "lambda": o.lambda, "clean": clean}))
        .collect();
    let out_path = dir.path().join("out.safetensors");
    common::python(
        "losses.py",
        &[
            "--io",
            io_path.to_str().unwrap(),
            "--spec",
            &serde_json::to_string(&spec).unwrap(),
            "--out",
            out_path.to_str().unwrap(),
        ],
    );
    let reference = common::read(&out_path);
    for (name, o, clean) in &cases {
        let adv = s_adv.detach().set_requires_grad(true);
        let cln = s_clean.detach().set_requires_grad(true);
        let value = o
            .loss(&LossInputs {
                student_adv: &adv,
                student_clean: clean.then_some(&cln),
                teacher: Some(&t),
                labels: &y,
            })
            .unwrap();
        let grads = Tensor::run_backward(&[&value], &[&adv, &cln], false, true);
        let e = common::rel_err(
            &value.reshape([1]),
            &reference[&format!("{name}.value")],
            1e-12,
        );
        assert!(e < 1e-5, "{name}: value differs: rel {e}");
        let e = common::rel_err(&grads[0], &reference[&format!("{name}.grad_adv")], 1e-12);
        assert!(e < 1e-5, "{name}: gradient wrt S(x_adv) differs: rel {e}");
        let g_clean = if grads[1].defined() {
            grads[1].shallow_clone()
        } else {
            s_clean.zeros_like()
        };
        let e = common::rel_err(&g_clean, &reference[&format!("{name}.grad_clean")], 1e-12);
        assert!(e < 1e-5, "{name}: gradient wrt S(x) differs: rel {e}");
    }
}

#[test]
fn ard_skips_the_clean_forward_only_when_it_may() {
    let mut o = objective(LossKind::Ard, KlReduction::Mean, 1.0);
    assert!(!o.needs_clean_forward());
    o.clean_forward_for_bn = true;
    assert!(o.needs_clean_forward());
    o = objective(LossKind::Ard, KlReduction::Mean, 0.9);
    assert!(o.needs_clean_forward());
}
