//! The robust fixture of the evaluation parity tests: a WRN-10-1
//! adversarially trained here for 150 FGSM-RS steps on 10,000 training images
//! (about a minute on one core; cached under `CARGO_TARGET_TMPDIR`), with
//! points that every attack fools and points it fails on. Included by path
//! from the test files that use it (beside `mod common;`).

use ard_pipeline::attacks::{self, Attack, AttackInput, NoiseKey};
use ard_pipeline::config::DataChecksums;
use ard_pipeline::config::RandomStart;
use ard_pipeline::data::{self, SplitKind};
use ard_pipeline::models::{Arch, Model};
use std::path::{Path, PathBuf};
use std::sync::OnceLock;
use std::time::Instant;
use tch::{nn, nn::OptimizerConfig, Device};

pub const ARCH: &str = "wrn10_1";
pub const EPS: f64 = 8.0 / 255.0;

/// Trains the fixture: FGSM-RS adversarial training (Wong et al. 2020), eps
/// 8/255, step 10/255, SGD with Nesterov momentum, batch 128, crop and flip.
fn train(path: &Path) {
    let arch: Arch = ARCH.parse().unwrap();
    tch::manual_seed(11);
    let model = Model::new(arch, Device::Cpu);
    let split = data::load_split(
        &super::common::cifar_root(),
        SplitKind::Train,
        DataChecksums::Skip,
    )
    .unwrap()
    .prefix(10_000);
    let attack = attacks::fgsm_rs(EPS, 1.25 * EPS, RandomStart::UniformClamped, true);
    let mut opt = nn::Sgd {
        momentum: 0.9,
        dampening: 0.0,
        wd: 5e-4,
        nesterov: true,
    }
    .build(&model.vs, 0.1)
    .unwrap();
    let (steps, batch) = (150usize, 128usize);
    let per_epoch = split.len() / batch;
    let began = Instant::now();
    let mut order = Vec::new();
    for step in 0..steps {
        let (epoch, b) = ((step / per_epoch) as u64, step % per_epoch);
        if b == 0 {
            order = data::epoch_order(1, epoch, split.len(), true);
        }
        let idx = &order[b * batch..(b + 1) * batch];
        let views: Vec<_> = idx
            .iter()
            .map(|&i| data::view_for(1, epoch, i as u64))
            .collect();
        let xb = data::make_batch(&split, idx, &views, Device::Cpu).unwrap();
        let input = AttackInput {
            x: &xb.images,
            y: &xb.labels,
            teacher_logits: None,
        };
        let key = NoiseKey {
            seed: 1,
            counter: step as u64,
            stream: 9,
        };
        let x_adv = attack.perturb(&model, &input, key).unwrap();
        opt.set_lr(0.1 * (2.0 * (1.0 - step as f64 / steps as f64)).min(1.0));
        let loss = model
            .forward_t(&x_adv, true)
            .cross_entropy_for_logits(&xb.labels);
        opt.backward_step(&loss);
    }
    eprintln!(
        "trained the {ARCH} fixture in {:.0} s",
        began.elapsed().as_secs_f64()
    );
    model.save(path).unwrap();
}

/// The fixture's weights, trained once per target folder (shared by the
/// tests that use this module: same file name).
pub fn weights() -> PathBuf {
    static PATH: OnceLock<PathBuf> = OnceLock::new();
    PATH.get_or_init(|| {
        super::common::deterministic();
        let path = PathBuf::from(env!("CARGO_TARGET_TMPDIR"))
            .join(format!("parity_eval-{ARCH}-fgsm_rs150-v1.safetensors"));
        if !path.exists() {
            train(&path);
        }
        path
    })
    .clone()
}
