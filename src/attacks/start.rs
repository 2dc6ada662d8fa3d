//! Random starts: `uniform` (ARD: no clamp before the first forward),
//! `uniform_clamped`, `normal_small` (x + 0.001 N(0,1), RSLAD/TRADES), `none`.

use super::noise::{self, NoiseKey};
use crate::config::RandomStart;
use tch::Tensor;

/// The start point of an attack of radius `eps` from `x`.
pub fn random_start(x: &Tensor, kind: RandomStart, eps: f64, key: NoiseKey) -> Tensor {
    let x = x.detach();
    match kind {
        RandomStart::None => x.copy(),
        RandomStart::Uniform => &x + noise::uniform(&x, eps, key),
        RandomStart::UniformClamped => (&x + noise::uniform(&x, eps, key)).clamp(0.0, 1.0),
        RandomStart::NormalSmall => &x + noise::normal(&x, 0.001, key),
    }
}
