//! The Square attack, L-inf (Andriushchenko et al. 2020): a score-based
//! random search that needs only the model's logits, never a gradient, so it
//! attacks any model that answers queries: a tch model, or an exported file in
//! another runtime ([`square_linf`] takes the model as a closure). It is the
//! score-based member of AutoAttack's standard set and the usual check that a
//! model's robustness does not come from masked gradients.
//!
//! Start: vertical stripes of +-eps (one sign per channel and column). Each
//! iteration, every image not yet misclassified gets one square window of side
//! `s` at a random place, set to +-eps (one sign per channel, redrawn until the
//! window changes), and keeps it if the margin `z_y - max_{j != y} z_j`
//! decreases. `s = round(sqrt(p * H * W))`, with `p` halved from `p_init` on
//! the paper's schedule (iterations 10, 50, 200, 500, 1000, 2000, 4000, 6000
//! and 8000 of 10,000, scaled to the query budget). An image stops being
//! queried once its margin is negative. Every draw comes from one seeded host
//! generator per batch, so the attack is reproducible.
//!
//! [`SquareFlavour::AutoAttack`] is the variant AutoAttack's standard version
//! runs (its `SquareAttack` with `resc_schedule=False`): the schedule counts
//! iterations as they are (not scaled to the budget), a window is never
//! redrawn, and `queries` iterations follow the start (queries + 1 forwards).
//! The authors draw one window for the whole batch per iteration, this file
//! one per image: each image sees the same distribution of windows.

use super::margin::{max_other_logit, true_logit};
use super::noise::NoiseKey;
use super::{Attack, AttackInput};
use crate::error::{Error, Result};
use crate::models::Model;
use rand::Rng;
use tch::{Device, Kind, Tensor};

/// AutoAttack's `p_init` for L-inf Square.
pub const SQUARE_P_INIT: f64 = 0.8;
pub use crate::config::eval_attack::SQUARE_QUERIES;

/// The fraction of pixels a window covers at iteration `it` of `queries`.
pub fn window_fraction(p_init: f64, it: usize, queries: usize) -> f64 {
    let it = (it as f64 / queries.max(1) as f64 * 10_000.0) as usize;
    let halvings = [10, 50, 200, 500, 1000, 2000, 4000, 6000, 8000]
        .iter()
        .filter(|&&t| it > t)
        .count();
    p_init / f64::from(1u32 << halvings)
}

/// Side of the square window for fraction `p` of an `h` x `w` image: at least
/// 1 and at most `h - 1`.
fn window_side(p: f64, h: i64, w: i64) -> i64 {
    let s = (p * (h * w) as f64).sqrt().round() as i64;
    s.clamp(1, (h - 1).max(1))
}

/// `z_y - max_{j != y} z_j` per image [B]: negative once the image is misclassified.
fn margin(logits: &Tensor, y: &Tensor) -> Result<Tensor> {
    Ok(true_logit(logits, y)?.f_sub(&max_other_logit(logits, y)?)?)
}

/// A [K, 1, H, W] bool mask with a `side` x `side` square at (`top[k]`, `left[k]`).
fn square_masks(top: &[i64], left: &[i64], side: i64, h: i64, w: i64, device: Device) -> Tensor {
    let k = top.len() as i64;
    let top = Tensor::from_slice(top).to_device(device).view([k, 1]);
    let left = Tensor::from_slice(left).to_device(device).view([k, 1]);
    let rows = Tensor::arange(h, (Kind::Int64, device)).view([1, h]);
    let cols = Tensor::arange(w, (Kind::Int64, device)).view([1, w]);
    let in_rows = rows
        .ge_tensor(&top)
        .logical_and(&rows.lt_tensor(&(&top + side)));
    let in_cols = cols
        .ge_tensor(&left)
        .logical_and(&cols.lt_tensor(&(&left + side)));
    in_rows
        .view([k, 1, h, 1])
        .logical_and(&in_cols.view([k, 1, 1, w]))
}

/// Uniform +-1 values shaped `shape`, as f32 on `device`.
fn signs(rng: &mut impl Rng, shape: &[i64], device: Device) -> Tensor {
    let n: i64 = shape.iter().product();
    let v: Vec<f32> = (0..n)
        .map(|_| if rng.gen::<bool>() { 1.0 } else { -1.0 })
        .collect();
    Tensor::from_slice(&v).view(shape).to_device(device)
}

/// What a Square run did.
#[derive(Debug)]
pub struct SquareOutcome {
    /// The adversarial images [B, C, H, W] (the best found per image).
    pub x_adv: Tensor,
    /// Queries spent per image [B] (i64), the start included.
    pub queries: Tensor,
}

/// Which Square: see the module docs.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum SquareFlavour {
    /// The paper's schedule scaled to the budget; windows that change nothing
    /// are redrawn; `queries` queries in all (torchattacks' defaults).
    #[default]
    Scaled,
    /// AutoAttack's standard version: see the module docs.
    AutoAttack,
}

/// What one Square run is asked to do.
#[derive(Debug, Clone, Copy)]
pub struct SquareParams {
    pub eps: f64,
    /// The query budget per image.
    pub queries: usize,
    pub p_init: f64,
    pub flavour: SquareFlavour,
}

impl SquareParams {
    /// The iterations after the start and the window fraction at each.
    fn schedule(&self) -> (std::ops::Range<usize>, impl Fn(usize) -> f64 + '_) {
        let fixed = self.flavour == SquareFlavour::AutoAttack;
        let range = if fixed {
            0..self.queries
        } else {
            1..self.queries
        };
        let budget = if fixed { 10_000 } else { self.queries };
        (range, move |it| window_fraction(self.p_init, it, budget))
    }
}

/// L-inf Square on `x` [B, C, H, W] in [0, 1] with labels `y` [B]: `logits`
/// answers a batch of images (it is called on the images still standing only),
/// `queries` bounds the queries per image ([`SquareFlavour::Scaled`]), the
/// window starting at [`SQUARE_P_INIT`] of the image.
pub fn square_linf(
    logits: impl FnMut(&Tensor) -> Result<Tensor>,
    x: &Tensor,
    y: &Tensor,
    eps: f64,
    queries: usize,
    key: NoiseKey,
) -> Result<SquareOutcome> {
    let params = SquareParams {
        eps,
        queries,
        p_init: SQUARE_P_INIT,
        flavour: SquareFlavour::Scaled,
    };
    square_linf_with(logits, x, y, &params, key)
}

/// [`square_linf`] in either flavour.
pub fn square_linf_with(
    mut logits: impl FnMut(&Tensor) -> Result<Tensor>,
    x: &Tensor,
    y: &Tensor,
    params: &SquareParams,
    key: NoiseKey,
) -> Result<SquareOutcome> {
    let eps = params.eps;
    let size = x.size();
    let [b, c, h, w] = size[..] else {
        return Err(Error::attack(
            "square",
            format!("images must be [B, C, H, W], got {size:?}"),
        ));
    };
    let device = x.device();
    let y = y.to_device(device);
    let mut rng = key.rng();
    let mut delta = signs(&mut rng, &[b, c, 1, w], device).f_mul_scalar(eps)?;
    delta = delta.f_expand([b, c, h, w], false)?.f_contiguous()?;
    let mut x_best = (x + &delta).f_clamp(0.0, 1.0)?;
    let mut best = margin(&logits(&x_best)?, &y)?;
    let mut spent = Tensor::ones([b], (Kind::Int64, device));
    let (iterations, fraction) = params.schedule();
    let redraws = match params.flavour {
        SquareFlavour::Scaled => 32,
        SquareFlavour::AutoAttack => 0,
    };
    for it in iterations {
        let active = best.gt(0.0).nonzero().squeeze_dim(1);
        let k = active.size()[0];
        if k == 0 {
            break;
        }
        let side = window_side(fraction(it), h, w);
        let top: Vec<i64> = (0..k).map(|_| rng.gen_range(0..=h - side)).collect();
        let left: Vec<i64> = (0..k).map(|_| rng.gen_range(0..=w - side)).collect();
        let window = square_masks(&top, &left, side, h, w, device);
        let x_k = x.f_index_select(0, &active)?;
        let delta_k = delta.f_index_select(0, &active)?;
        // One sign per channel for the window, redrawn where it would change nothing.
        let mut fresh = signs(&mut rng, &[k, c, 1, 1], device).f_mul_scalar(eps)?;
        let old = (&x_k + &delta_k).f_clamp(0.0, 1.0)?;
        for _ in 0..redraws {
            let new = (&x_k + &fresh).f_clamp(0.0, 1.0)?;
            let differs = (new - &old)
                .abs()
                .f_gt(1e-7)?
                .f_logical_and(&window)?
                .f_flatten(1, -1)?
                .f_any_dim(1, false)?;
            let same = differs.logical_not().nonzero().squeeze_dim(1);
            let n_same = same.size()[0];
            if n_same == 0 {
                break;
            }
            let redrawn = signs(&mut rng, &[n_same, c, 1, 1], device).f_mul_scalar(eps)?;
            fresh = fresh.f_index_copy(0, &same, &redrawn)?;
        }
        let delta_new = fresh
            .f_expand_as(&delta_k)?
            .f_where_self(&window, &delta_k)?;
        let x_new = (&x_k + &delta_new).f_clamp(0.0, 1.0)?;
        let m_new = margin(&logits(&x_new)?, &y.f_index_select(0, &active)?)?;
        let better = m_new.f_lt_tensor(&best.f_index_select(0, &active)?)?;
        let keep = better.view([k, 1, 1, 1]);
        delta = delta.f_index_copy(0, &active, &delta_new.f_where_self(&keep, &delta_k)?)?;
        x_best = x_best.f_index_copy(
            0,
            &active,
            &x_new.f_where_self(&keep, &x_best.f_index_select(0, &active)?)?,
        )?;
        best = best.f_index_copy(
            0,
            &active,
            &m_new.f_minimum(&best.f_index_select(0, &active)?)?,
        )?;
        spent = spent.f_index_add(0, &active, &Tensor::ones([k], (Kind::Int64, device)))?;
    }
    Ok(SquareOutcome {
        x_adv: x_best,
        queries: spent,
    })
}

/// L-inf Square as an evaluation attack on a tch model (BatchNorm in eval
/// mode, no graph): `square[K]` in `eval.attacks`, K queries per image.
#[derive(Debug, Clone, Copy)]
pub struct Square {
    pub eps: f64,
    pub queries: usize,
    pub p_init: f64,
    pub flavour: SquareFlavour,
}

/// Square with AutoAttack's `p_init` and `queries` queries per image.
pub fn square(eps: f64, queries: usize) -> Square {
    Square {
        eps,
        queries,
        p_init: SQUARE_P_INIT,
        flavour: SquareFlavour::Scaled,
    }
}

/// Square as AutoAttack's standard version runs it ([`SquareFlavour::AutoAttack`]).
pub fn square_autoattack(eps: f64, queries: usize) -> Square {
    Square {
        flavour: SquareFlavour::AutoAttack,
        ..square(eps, queries)
    }
}

/// The key `run_from` uses when not given one through `perturb`.
const FIXED_KEY: NoiseKey = NoiseKey {
    seed: 0,
    counter: 0,
    stream: 0x5A_0A2E,
};

impl Square {
    fn run(&self, model: &Model, x: &Tensor, y: &Tensor, key: NoiseKey) -> Result<Tensor> {
        let logits = |x: &Tensor| Ok(tch::no_grad(|| model.forward_t(x, false)));
        let params = SquareParams {
            eps: self.eps,
            queries: self.queries,
            p_init: self.p_init,
            flavour: self.flavour,
        };
        Ok(square_linf_with(logits, x, y, &params, key)?.x_adv)
    }
}

impl Attack for Square {
    fn name(&self) -> String {
        match self.flavour {
            SquareFlavour::Scaled => format!("square{}", self.queries),
            SquareFlavour::AutoAttack => format!("square{}_autoattack", self.queries),
        }
    }

    /// Forward passes, not gradients: one per query.
    fn gradient_steps(&self) -> usize {
        0
    }

    /// Square draws its own start (the stripes) from the key; this is x.
    fn start(&self, x: &Tensor, _key: NoiseKey) -> Tensor {
        x.shallow_clone()
    }

    /// Square from x, with a fixed key (`perturb` uses the batch's key).
    fn run_from(&self, model: &Model, input: &AttackInput, x_start: &Tensor) -> Result<Tensor> {
        self.run(model, x_start, input.y, FIXED_KEY)
    }

    fn perturb(&self, model: &Model, input: &AttackInput, key: NoiseKey) -> Result<Tensor> {
        self.run(model, input.x, input.y, key)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_window_shrinks_on_the_papers_schedule() {
        assert_eq!(window_fraction(0.8, 0, 10_000), 0.8);
        assert_eq!(window_fraction(0.8, 10, 10_000), 0.8);
        assert_eq!(window_fraction(0.8, 11, 10_000), 0.4);
        assert_eq!(window_fraction(0.8, 9_000, 10_000), 0.8 / 512.0);
        // Scaled to the budget: iteration 100 of 1,000 is iteration 1,000 of 10,000.
        assert_eq!(window_fraction(0.8, 100, 1_000), 0.8 / 16.0);
        assert_eq!(window_side(0.8, 32, 32), 29);
        assert_eq!(window_side(0.8 / 512.0, 32, 32), 1);
        assert_eq!(window_side(1.0, 32, 32), 31);
    }

    #[test]
    fn autoattacks_schedule_counts_iterations_as_they_are() {
        let params = SquareParams {
            eps: 0.03,
            queries: 5000,
            p_init: 0.8,
            flavour: SquareFlavour::AutoAttack,
        };
        let (range, fraction) = params.schedule();
        assert_eq!(range, 0..5000);
        assert_eq!(fraction(10), 0.8);
        assert_eq!(fraction(11), 0.4);
        // Iteration 4,999 is past 4,000 of 10,000 only: p_init / 128, where the
        // scaled schedule would be at p_init / 512.
        assert_eq!(fraction(4_999), 0.8 / 128.0);
        let scaled = SquareParams {
            flavour: SquareFlavour::Scaled,
            ..params
        };
        let (range, fraction) = scaled.schedule();
        assert_eq!(range, 1..5000);
        assert_eq!(fraction(4_999), 0.8 / 512.0);
    }

    #[test]
    fn masks_are_squares_where_asked() {
        let m = square_masks(&[0, 5], &[3, 0], 2, 8, 8, Device::Cpu);
        assert_eq!(m.size(), [2, 1, 8, 8]);
        assert_eq!(m.sum(Kind::Int64).int64_value(&[]), 8);
        assert!(m.int64_value(&[0, 0, 1, 4]) == 1 && m.int64_value(&[0, 0, 2, 4]) == 0);
        assert!(m.int64_value(&[1, 0, 6, 1]) == 1 && m.int64_value(&[1, 0, 6, 2]) == 0);
    }

    /// A linear "model" whose margin falls as the red channel rises: Square
    /// must find the +eps corner, stay in the eps-ball and in [0, 1], and stop
    /// querying an image once it is misclassified.
    #[test]
    fn square_fools_a_linear_model_within_the_ball() {
        let eps = 8.0 / 255.0;
        let x = Tensor::full([4, 3, 8, 8], 0.5, (Kind::Float, Device::Cpu));
        let y = Tensor::zeros([4], (Kind::Int64, Device::Cpu));
        // logit 0 = 0.1 - mean(red - 0.5) * 10; logit 1 = 0.
        let model = |x: &Tensor| -> Result<Tensor> {
            let red = x
                .narrow(1, 0, 1)
                .mean_dim(&[1i64, 2, 3][..], false, Kind::Float)
                - 0.5;
            let z0 = red * -10.0 + 0.1;
            Ok(Tensor::stack(&[z0.shallow_clone(), z0.zeros_like()], 1))
        };
        let key = NoiseKey {
            seed: 3,
            counter: 0,
            stream: 1,
        };
        let out = square_linf(model, &x, &y, eps, 400, key).unwrap();
        let dist = (&out.x_adv - &x).abs().max().double_value(&[]);
        assert!(dist <= eps + 1e-6, "left the ball: {dist}");
        let z = model(&out.x_adv).unwrap();
        assert_eq!(z.argmax(1, false).sum(Kind::Int64).int64_value(&[]), 4);
        let spent = out.queries.max().int64_value(&[]);
        assert!(spent < 400, "kept querying fooled images: {spent}");
        // Same key, same result.
        let again = square_linf(model, &x, &y, eps, 400, key).unwrap();
        assert!(again.x_adv.equal(&out.x_adv));
    }
}
