//! Seeded noise for random starts, drawn on the host from a counter-keyed
//! generator: the same (seed, key) gives the same tensor on any thread, in the
//! sequential trainer and in the pipeline alike (libtorch's global generator is
//! shared by all threads, so it cannot give that).

use crate::config::RandomStart;
use rand::{Rng, SeedableRng};
use rand_chacha::ChaCha8Rng;
use tch::{Device, Tensor};

/// Where the noise for one use comes from.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct NoiseKey {
    pub seed: u64,
    /// E.g. the global step, or the eval batch index.
    pub counter: u64,
    /// Separates independent uses of the same counter (training attack, eval attack, ...).
    pub stream: u64,
}

impl NoiseKey {
    /// The generator of this key (for attacks that draw more than one tensor).
    pub fn rng(self) -> ChaCha8Rng {
        let mut rng =
            ChaCha8Rng::seed_from_u64(self.seed ^ self.stream.wrapping_mul(0x9E37_79B9_7F4A_7C15));
        rng.set_stream(self.counter);
        rng
    }
}

/// U(-eps, eps) noise shaped like `like`.
pub fn uniform(like: &Tensor, eps: f64, key: NoiseKey) -> Tensor {
    let mut rng = key.rng();
    let n = like.numel();
    let values: Vec<f32> = (0..n)
        .map(|_| rng.gen_range(-1.0f32..1.0f32) * eps as f32)
        .collect();
    to_tensor(&values, like)
}

/// N(0, sigma^2) noise shaped like `like` (Box–Muller).
pub fn normal(like: &Tensor, sigma: f64, key: NoiseKey) -> Tensor {
    let mut rng = key.rng();
    let n = like.numel();
    let mut values = Vec::with_capacity(n + 1);
    while values.len() < n {
        let u1: f32 = rng.gen_range(f32::EPSILON..1.0);
        let u2: f32 = rng.gen::<f32>();
        let r = (-2.0 * u1.ln()).sqrt();
        let theta = std::f32::consts::TAU * u2;
        values.push(r * theta.cos() * sigma as f32);
        values.push(r * theta.sin() * sigma as f32);
    }
    values.truncate(n);
    to_tensor(&values, like)
}

fn to_tensor(values: &[f32], like: &Tensor) -> Tensor {
    let device: Device = like.device();
    Tensor::from_slice(values)
        .view(like.size().as_slice())
        .to_kind(like.kind())
        .to_device(device)
}

/// The start point of an attack of radius `eps` from `x`: `uniform` (ARD: no
/// clamp before the first forward), `uniform_clamped`, `normal_small`
/// (x + 0.001 N(0,1), RSLAD/TRADES) or `none`.
pub fn random_start(x: &Tensor, kind: RandomStart, eps: f64, key: NoiseKey) -> Tensor {
    let x = x.detach();
    match kind {
        RandomStart::None => x.copy(),
        RandomStart::Uniform => &x + uniform(&x, eps, key),
        RandomStart::UniformClamped => (&x + uniform(&x, eps, key)).clamp(0.0, 1.0),
        RandomStart::NormalSmall => &x + normal(&x, 0.001, key),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn same_key_same_noise_and_bounds() {
        let like = Tensor::zeros([4, 3, 2, 2], (tch::Kind::Float, Device::Cpu));
        let key = NoiseKey {
            seed: 1,
            counter: 7,
            stream: 2,
        };
        let a = uniform(&like, 0.03, key);
        let b = uniform(&like, 0.03, key);
        assert!(a.equal(&b));
        assert!(a.abs().max().double_value(&[]) <= 0.03);
        let c = uniform(&like, 0.03, NoiseKey { counter: 8, ..key });
        assert!(!a.equal(&c));
        let n = normal(&like, 1.0, key);
        assert_eq!(n.size(), like.size());
    }
}
