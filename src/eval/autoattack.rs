//! `autoattack`: AutoAttack's standard version for L-inf (Croce & Hein,
//! ICML 2020; the authors' `AutoAttack(norm='Linf', version='standard')`) as
//! one evaluation. Its parts run as a cascade on each batch: APGD-CE, then
//! APGD-T, FAB-T and Square, each only on the images still robust (right on
//! the clean input and under every earlier part); an image is robust only if
//! all four fail. The parts' tallies ([`PartTally`]) give the table
//! AutoAttack prints: robust accuracy after each part, and its seconds.
//!
//! The parameters are the authors' (`pyautoattack` 0.2.0, `_set_version
//! ('standard')` for Linf), checked part by part:
//!
//! | part      | here                                                    |
//! |-----------|---------------------------------------------------------|
//! | `apgd_ce` | [`attacks::apgd_ce`]: 100 iterations, 1 run, rho 0.75, step 2 eps, checkpoints 22, 41, ..., 99 |
//! | `apgd_t`  | [`attacks::apgd_t`]: targeted DLR, 9 target classes, 100 iterations and 1 run each |
//! | `fab_t`   | [`attacks::fab_t`]: 9 target classes, 100 iterations, 1 run from the clean point, alpha_max 0.1, eta 1.05, beta 0.9 |
//! | `square`  | [`attacks::square_autoattack`]: 5,000 queries, p_init 0.8, the schedule not rescaled, margin loss |
//!
//! The differences found in APGD and Square and aligned with the authors'
//! code are listed in those modules' docs. Random starts: each part draws
//! from its own stream of the evaluation's key, so a run is reproducible.

use crate::attacks::{
    self, predict, Attack, AttackInput, NoiseKey, PartTally, APGD_T_TARGETS, SQUARE_QUERIES,
};
use crate::config::eval_attack::{APGD_ITERATIONS, AUTOATTACK_PARTS, FAB_ITERATIONS};
use crate::error::{Error, Result};
use crate::models::Model;
use std::sync::Mutex;
use std::time::Instant;
use tch::{Kind, Tensor};

/// The name of the tally of the clean inputs, first in [`Attack::parts`].
pub const CLEAN: &str = "clean";

/// AutoAttack (standard, L-inf) at radius eps: see the module docs.
pub struct AutoAttack {
    parts: Vec<(&'static str, Box<dyn Attack>)>,
    tally: Mutex<Vec<PartTally>>,
}

/// A noise stream per part, stable across runs (FNV-1a of the part's name).
fn part_stream(name: &str) -> u64 {
    let hash = format!("autoattack/{name}")
        .bytes()
        .fold(0xcbf2_9ce4_8422_2325u64, |h, b| {
            (h ^ u64::from(b)).wrapping_mul(0x0100_0000_01b3)
        });
    hash ^ 0xA0A0
}

impl AutoAttack {
    /// The standard version at radius `eps`.
    pub fn standard(eps: f64) -> AutoAttack {
        let parts: [Box<dyn Attack>; 4] = [
            Box::new(attacks::apgd_ce(eps, APGD_ITERATIONS, 1)),
            Box::new(attacks::apgd_t(eps, APGD_ITERATIONS, 1, APGD_T_TARGETS)),
            Box::new(attacks::fab_t(eps, FAB_ITERATIONS)),
            Box::new(attacks::square_autoattack(eps, SQUARE_QUERIES)),
        ];
        let names = std::iter::once(CLEAN).chain(AUTOATTACK_PARTS);
        AutoAttack {
            parts: AUTOATTACK_PARTS.into_iter().zip(parts).collect(),
            tally: Mutex::new(
                names
                    .map(|name| PartTally {
                        name: name.into(),
                        ..PartTally::default()
                    })
                    .collect(),
            ),
        }
    }

    fn add(&self, i: usize, robust: &Tensor, seconds: f64) {
        let count = robust.sum(Kind::Int64).int64_value(&[]).max(0) as usize;
        if let Ok(mut tally) = self.tally.lock() {
            tally[i].robust += count;
            tally[i].seconds += seconds;
        }
    }

    /// The cascade on one batch: x_adv, each image the first part's
    /// adversarial image that fooled the model (x where none did).
    fn cascade(&self, model: &Model, input: &AttackInput, key: NoiseKey) -> Result<Tensor> {
        let began = Instant::now();
        let x = input.x.detach();
        let mut robust = predict(model, &x).f_eq_tensor(input.y)?;
        self.add(0, &robust, began.elapsed().as_secs_f64());
        let mut x_adv = x.copy();
        for (i, (name, attack)) in self.parts.iter().enumerate() {
            let began = Instant::now();
            let idx = robust.f_nonzero()?.f_view([-1])?;
            if idx.numel() > 0 {
                let sub = AttackInput {
                    x: &x.f_index_select(0, &idx)?,
                    y: &input.y.f_index_select(0, &idx)?,
                    teacher_logits: None,
                };
                let part_key = NoiseKey {
                    stream: key.stream ^ part_stream(name),
                    ..key
                };
                let adv = attack
                    .perturb(model, &sub, part_key)
                    .map_err(|e| Error::Evaluation {
                        name: format!("autoattack/{name}"),
                        source: Box::new(e),
                    })?;
                let fooled = predict(model, &adv).f_ne_tensor(sub.y)?;
                let hit = fooled.f_nonzero()?.f_view([-1])?;
                let hit_rows = idx.f_index_select(0, &hit)?;
                x_adv = x_adv.f_index_copy(0, &hit_rows, &adv.f_index_select(0, &hit)?)?;
                robust = robust.f_index_copy(0, &idx, &fooled.f_logical_not()?)?;
            }
            self.add(i + 1, &robust, began.elapsed().as_secs_f64());
        }
        Ok(x_adv)
    }
}

/// The key `run_from` uses when not given one through `perturb`.
const FIXED_KEY: NoiseKey = NoiseKey {
    seed: 0,
    counter: 0,
    stream: 0xA0A0,
};

impl Attack for AutoAttack {
    fn name(&self) -> String {
        "autoattack".into()
    }

    fn gradient_steps(&self) -> usize {
        self.parts.iter().map(|(_, a)| a.gradient_steps()).sum()
    }

    /// Each part draws its own starts; this is x.
    fn start(&self, x: &Tensor, _key: NoiseKey) -> Tensor {
        x.shallow_clone()
    }

    /// The cascade from the clean inputs, with a fixed key (`perturb` uses the batch's).
    fn run_from(&self, model: &Model, input: &AttackInput, _x_start: &Tensor) -> Result<Tensor> {
        self.cascade(model, input, FIXED_KEY)
    }

    fn perturb(&self, model: &Model, input: &AttackInput, key: NoiseKey) -> Result<Tensor> {
        self.cascade(model, input, key)
    }

    fn parts(&self) -> Vec<PartTally> {
        self.tally.lock().map(|t| t.clone()).unwrap_or_default()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_standard_parts_in_order() {
        let aa = AutoAttack::standard(8.0 / 255.0);
        let names: Vec<String> = aa.parts.iter().map(|(_, a)| a.name()).collect();
        assert_eq!(
            names,
            ["apgd_ce", "apgd_t", "fab_t", "square5000_autoattack"]
        );
        let tally: Vec<String> = aa.parts().into_iter().map(|p| p.name).collect();
        assert_eq!(tally, ["clean", "apgd_ce", "apgd_t", "fab_t", "square"]);
        // 101 gradients per APGD run (9 for APGD-T), 100 per FAB-T target.
        assert_eq!(aa.gradient_steps(), 101 + 9 * 101 + 9 * 100);
    }
}
