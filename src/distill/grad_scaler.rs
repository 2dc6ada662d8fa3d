//! Dynamic loss scaling for fp16 training (`perf.amp` on CUDA).
//!
//! fp16 gradients below ~6e-8 flush to zero. The loss is multiplied by a
//! large power of two before the backward pass and the gradients divided by
//! it before the optimiser sees them; a power of two changes no bits of a
//! finite value, so the update is the unscaled one. When the scaled backward
//! overflows (any gradient inf or NaN) the step is skipped and the scale
//! halved; after `growth_interval` good steps in a row it doubles. The
//! defaults are PyTorch's `torch.cuda.amp.GradScaler`'s.

use crate::error::Result;
use tch::{Kind, Tensor};

/// The scaler's state.
#[derive(Debug, Clone, PartialEq)]
pub struct GradScaler {
    scale: f64,
    growth_interval: u32,
    good_steps: u32,
}

impl Default for GradScaler {
    fn default() -> Self {
        Self::new(65536.0, 2000)
    }
}

impl GradScaler {
    /// A scaler starting at `init_scale` that doubles after `growth_interval`
    /// good steps (and halves on every overflow).
    pub fn new(init_scale: f64, growth_interval: u32) -> Self {
        GradScaler {
            scale: init_scale,
            growth_interval: growth_interval.max(1),
            good_steps: 0,
        }
    }

    /// The current scale.
    pub fn scale(&self) -> f64 {
        self.scale
    }

    /// `loss` times the scale, to call `backward` on.
    pub fn scaled(&self, loss: &Tensor) -> Tensor {
        loss * self.scale
    }

    /// Divides every defined gradient by the scale, in place, and reports
    /// whether they are all finite (one device synchronisation).
    pub fn unscale(&self, params: &[Tensor]) -> Result<bool> {
        let inverse = 1.0 / self.scale;
        tch::no_grad(|| -> Result<bool> {
            let mut total: Option<Tensor> = None;
            for p in params {
                let mut g = p.grad();
                if !g.defined() {
                    continue;
                }
                let _ = g.f_mul_scalar_(inverse)?;
                // inf and NaN survive the sum; f32 accumulation of finite values does not overflow here.
                let s = g.f_abs()?.f_sum(Kind::Float)?;
                total = Some(match total {
                    None => s,
                    Some(t) => t.f_add(&s)?,
                });
            }
            Ok(total.is_none_or(|t| t.double_value(&[]).is_finite()))
        })
    }

    /// Records a step's outcome: `finite` false means the step was skipped.
    pub fn update(&mut self, finite: bool) {
        if finite {
            self.good_steps += 1;
            if self.good_steps >= self.growth_interval {
                self.scale *= 2.0;
                self.good_steps = 0;
            }
        } else {
            self.scale *= 0.5;
            self.good_steps = 0;
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use tch::Device;

    fn param(values: &[f32]) -> Tensor {
        Tensor::from_slice(values).set_requires_grad(true)
    }

    #[test]
    fn scaled_gradients_unscale_to_the_plain_ones_bit_for_bit() {
        let scaler = GradScaler::default();
        let (a, b) = (param(&[0.3, -1.7, 2.5]), param(&[0.3, -1.7, 2.5]));
        let x = Tensor::from_slice(&[1e-3f32, 7.0, -0.25]);
        (&a * &x).square().sum(Kind::Float).backward();
        scaler
            .scaled(&(&b * &x).square().sum(Kind::Float))
            .backward();
        assert!(scaler.unscale(std::slice::from_ref(&b)).unwrap());
        let (ga, gb) = (a.grad(), b.grad());
        assert_eq!(
            Vec::<f32>::try_from(&ga).unwrap(),
            Vec::<f32>::try_from(&gb).unwrap()
        );
        assert_eq!(gb.device(), Device::Cpu);
    }

    #[test]
    fn an_overflow_is_reported_skipped_and_backs_the_scale_off() {
        let mut scaler = GradScaler::new(1024.0, 3);
        let p = param(&[1.0, 2.0]);
        (&p * Tensor::from_slice(&[f32::INFINITY, 1.0]))
            .sum(Kind::Float)
            .backward();
        let finite = scaler.unscale(std::slice::from_ref(&p)).unwrap();
        assert!(!finite);
        scaler.update(finite);
        assert_eq!(scaler.scale(), 512.0);
        let nan = param(&[1.0]);
        (&nan * f64::NAN).sum(Kind::Float).backward();
        assert!(!scaler.unscale(std::slice::from_ref(&nan)).unwrap());
    }

    #[test]
    fn the_scale_grows_after_the_interval_of_good_steps_only() {
        let mut scaler = GradScaler::new(8.0, 3);
        scaler.update(true);
        scaler.update(true);
        assert_eq!(scaler.scale(), 8.0);
        scaler.update(true);
        assert_eq!(scaler.scale(), 16.0);
        scaler.update(true);
        scaler.update(false); // an overflow resets the count
        scaler.update(true);
        scaler.update(true);
        assert_eq!(scaler.scale(), 8.0);
        scaler.update(true);
        assert_eq!(scaler.scale(), 16.0);
    }

    #[test]
    fn parameters_without_gradients_count_as_finite() {
        let scaler = GradScaler::default();
        assert!(scaler.unscale(&[param(&[1.0])]).unwrap());
        assert!(scaler.unscale(&[]).unwrap());
    }
}
