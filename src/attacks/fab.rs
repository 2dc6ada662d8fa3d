//! FAB-T: the targeted L-inf Fast Adaptive Boundary attack (Croce & Hein,
//! "Minimally distorted adversarial examples with a fast adaptive boundary
//! attack", ICML 2020), as AutoAttack's standard version runs it: one run per
//! target class (the clean logits' ranks 2..=10), each from the clean point
//! (no random start), 100 iterations, alpha_max 0.1, eta 1.05, beta 0.9.
//!
//! One run towards target t, per image (x0: the clean image; f = z_t - z_y):
//!
//! ```text
//! x1 = x0
//! repeat N times:
//!     linearise f at x1: the hyperplane H = {z : f(x1) + <grad f(x1), z - x1> = 0}
//!     d1 = P(x1), d2 = P(x0)      minimal L-inf steps onto H within [0, 1]
//!     alpha = clamp(|d1| / (|d1| + |d2|), 0, alpha_max)   (|.|: L-inf, at least 1e-8)
//!     x1 = clamp((1 - alpha)(x1 + eta d1) + alpha (x0 + eta d2), 0, 1)
//!     if x1 is misclassified:
//!         keep x1 as the best point when |x1 - x0| is the smallest so far
//!         x1 = x0 + beta (x1 - x0)                                 (step back)
//! ```
//!
//! Success is any misclassification (not only as t) at an L-inf distance of at
//! most eps; each further target attacks only the images no earlier one has
//! fooled, and images misclassified clean are not attacked. An image leaves a
//! run once its best point is within eps: its verdict cannot change (the best
//! distance only shrinks), so the robust accuracy is the full run's.
//!
//! The projection ([`project_linf`]) is exact and batched: sort each row's
//! room to move, and the reduction of the hyperplane's residual reachable
//! within a radius is a piecewise-linear function whose breakpoints are those
//! rooms; the radius needed is read off the segment the residual falls in.
//! Input gradients come from one backward pass per iteration; BatchNorm runs
//! in eval mode.

use super::margin::true_logit;
use super::restarts::{where_true, SubInput};
use super::{predict, Attack, AttackInput, NoiseKey};
use crate::error::{Error, Result};
use crate::models::Model;
use tch::{Kind, Tensor};

/// AutoAttack's number of FAB-T target classes.
pub const FAB_T_TARGETS: usize = 9;
/// Largest weight of the step from the clean point (alpha_max).
pub const FAB_ALPHA_MAX: f64 = 0.1;
/// Overshoot of each projection (eta).
pub const FAB_ETA: f64 = 1.05;
/// Step back towards the clean point after a success (beta).
pub const FAB_BETA: f64 = 0.9;

/// The FAB-T attack: see the module docs.
#[derive(Debug, Clone, Copy)]
pub struct FabT {
    pub eps: f64,
    /// Iterations per target class.
    pub iterations: usize,
    /// Target classes: the clean logits' ranks 2 ..= targets + 1.
    pub targets: usize,
    pub alpha_max: f64,
    pub eta: f64,
    pub beta: f64,
}

/// FAB-T with AutoAttack's parameters and `iterations` per target class.
pub fn fab_t(eps: f64, iterations: usize) -> FabT {
    FabT {
        eps,
        iterations,
        targets: FAB_T_TARGETS,
        alpha_max: FAB_ALPHA_MAX,
        eta: FAB_ETA,
        beta: FAB_BETA,
    }
}

/// The smallest-L-inf step `d` [R, D] that moves each row of `t` [R, D]
/// (points in [0, 1]) onto the hyperplane `<w, z> = b` (`w` [R, D], `b` [R])
/// while `t + d` stays in [0, 1]; where the box cannot reach the hyperplane,
/// the step to the box corner that comes closest. Coordinates with `w = 0`
/// do not move.
pub fn project_linf(t: &Tensor, w: &Tensor, b: &Tensor) -> Result<Tensor> {
    // Orient each row so that its point lies on the positive side: the step
    // must then lower <w, z> by c >= 0, and coordinate i lowers it by |w_i|
    // per unit moved against sign(w_i), with `room` to its bound.
    let residual = w
        .f_mul(t)?
        .f_sum_dim_intlist(&[1i64][..], false, Kind::Float)?
        - b;
    let side = residual.f_ge(0.0)?.f_to_kind(Kind::Float)? * 2.0 - 1.0;
    let w = w * side.f_unsqueeze(1)?;
    let c = (residual * &side).f_unsqueeze(1)?;
    let direction = -w.f_sign()?;
    let room = t.f_where_self(&w.f_gt(0.0)?, &(1.0 - t))?;
    let weight = w.f_abs()?;
    // Breakpoints: rooms in decreasing order. At radius room_(j), rows j' <= j
    // move the radius and the rest their whole room: the reduction reached is
    // W_j room_(j) + R_j (W: cumulative weight, R: weighted room left).
    let (room_sorted, order) = room.f_sort(1, true)?;
    let weight_sorted = weight.f_gather(1, &order, false)?;
    let moved = &weight_sorted * &room_sorted;
    let total = moved.f_sum_dim_intlist(&[1i64][..], true, Kind::Float)?;
    let w_cum = weight_sorted.f_cumsum(1, Kind::Float)?;
    let r_left = &total - moved.f_cumsum(1, Kind::Float)?;
    let reached = &w_cum * &room_sorted + &r_left;
    // Breakpoints that overshoot c; the radius lies below the last of them.
    let over = reached
        .f_gt_tensor(&c)?
        .f_sum_dim_intlist(&[1i64][..], true, Kind::Int64)?;
    let j = (&over - 1).f_clamp_min(0)?;
    let w_j = w_cum.f_gather(1, &j, false)?;
    let r_j = r_left.f_gather(1, &j, false)?;
    let radius = ((&c - r_j) / w_j.f_clamp_min(1e-30)?).f_clamp_min(0.0)?;
    // No breakpoint overshoots: even the whole box falls short, so move all the way.
    let radius = radius.f_where_self(&over.f_gt(0)?, &room.f_max()?.f_add_scalar(1.0)?)?;
    Ok(direction * room.f_minimum(&radius)?)
}

/// Per-image L-inf norm of `d` [B, D] → [B].
fn linf(d: &Tensor) -> Result<Tensor> {
    Ok(d.f_abs()?.f_amax([1], false)?)
}

/// One run on the images still being attacked: their inputs and state.
struct Run {
    /// Clean images [A, D] (flattened), labels and targets [A].
    x0: Tensor,
    y: Tensor,
    t: Tensor,
    /// Current iterate [B, D] (flattened images).
    x1: Tensor,
    /// Best misclassified point found [B, D] (x0 while none).
    best: Tensor,
    /// Its L-inf distance to x0 [B] (1e10 while none).
    best_norm: Tensor,
}

impl FabT {
    fn check(&self, x: &Tensor) -> Result<()> {
        let bad = |m: String| Err(Error::attack("fab_t", m));
        if self.eps.is_nan() || self.eps <= 0.0 {
            return bad(format!("eps must be positive, got {}", self.eps));
        }
        if self.iterations == 0 || self.targets == 0 {
            return bad("needs at least 1 iteration and 1 target class".into());
        }
        if x.dim() != 4 {
            return bad(format!("expects images [B, C, H, W], got {:?}", x.size()));
        }
        Ok(())
    }

    /// `f = z_t - z_y` [B] at `x` [B, C, H, W] and its input gradient, flattened [B, D].
    fn linearise(
        &self,
        model: &Model,
        x: &Tensor,
        y: &Tensor,
        t: &Tensor,
    ) -> Result<(Tensor, Tensor)> {
        tch::with_grad(|| {
            let x_var = x.detach().set_requires_grad(true);
            let z = model.forward_t(&x_var, false);
            let f = true_logit(&z, t)? - true_logit(&z, y)?;
            let grad = Tensor::run_backward(&[&f.sum(Kind::Float)], &[&x_var], false, false)
                .pop()
                .ok_or_else(|| Error::attack("fab_t", "no input gradient"))?;
            Ok((f.detach(), grad.f_flatten(1, -1)?))
        })
    }

    /// One iteration on the active images, `shape` [A, C, H, W].
    fn step(&self, model: &Model, shape: &[i64], run: &mut Run) -> Result<()> {
        let (x0, y) = (&run.x0, &run.y);
        let images = |flat: &Tensor| flat.f_view(shape);
        let a = x0.size()[0];
        let (f, w) = self.linearise(model, &images(&run.x1)?, y, &run.t)?;
        let b = w
            .f_mul(&run.x1)?
            .f_sum_dim_intlist(&[1i64][..], false, Kind::Float)?
            - f;
        let d = project_linf(
            &Tensor::f_cat(&[&run.x1, x0], 0)?,
            &Tensor::f_cat(&[&w, &w], 0)?,
            &Tensor::f_cat(&[&b, &b], 0)?,
        )?;
        let (d1, d2) = (d.narrow(0, 0, a), d.narrow(0, a, a));
        let size = linf(&d)?.f_clamp_min(1e-8)?;
        let (s1, s2) = (size.narrow(0, 0, a), size.narrow(0, a, a));
        let alpha = (&s1 / (&s1 + &s2))
            .f_clamp(0.0, self.alpha_max)?
            .f_unsqueeze(1)?;
        let from_x1 = (&run.x1 + &d1 * self.eta) * (-&alpha + 1.0);
        let from_x0 = (x0 + &d2 * self.eta) * &alpha;
        let next = (from_x1 + from_x0).f_clamp(0.0, 1.0)?;
        let wrong = predict(model, &images(&next)?).f_ne_tensor(y)?;
        let norm = linf(&(&next - x0))?;
        let better = wrong.f_logical_and(&norm.f_lt_tensor(&run.best_norm)?)?;
        run.best = next.f_where_self(&better.f_unsqueeze(1)?, &run.best)?;
        run.best_norm = norm.f_where_self(&better, &run.best_norm)?;
        let back = x0 + (&next - x0) * self.beta;
        run.x1 = back.f_where_self(&wrong.f_unsqueeze(1)?, &next)?;
        Ok(())
    }

    /// One run towards `target` [B] on (x, y), from `x_start`: the
    /// adversarial images [B, C, H, W] (x where the run failed) and whether
    /// each fooled the model within eps [B].
    pub fn run_target(
        &self,
        model: &Model,
        x: &Tensor,
        y: &Tensor,
        target: &Tensor,
        x_start: &Tensor,
    ) -> Result<(Tensor, Tensor)> {
        self.check(x)?;
        let shape = x.size();
        if x_start.size() != shape {
            let message = format!("start {:?} and input {shape:?} differ", x_start.size());
            return Err(Error::attack("fab_t", message));
        }
        let n = shape[0];
        let x0 = x.detach().f_flatten(1, -1)?;
        let mut x1 = x_start.detach().f_flatten(1, -1)?;
        let mut best = x0.copy();
        let mut best_norm = Tensor::full([n], 1e10, (Kind::Float, x.device()));
        let mut active = Tensor::arange(n, (Kind::Int64, x.device()));
        for _ in 0..self.iterations {
            if active.numel() == 0 {
                break;
            }
            let rows = |v: &Tensor| v.f_index_select(0, &active);
            let mut run = Run {
                x0: rows(&x0)?,
                y: rows(y)?,
                t: rows(target)?,
                x1: rows(&x1)?,
                best: rows(&best)?,
                best_norm: rows(&best_norm)?,
            };
            let mut sub_shape = shape.clone();
            sub_shape[0] = active.size()[0];
            self.step(model, &sub_shape, &mut run)?;
            x1 = x1.f_index_copy(0, &active, &run.x1)?;
            best = best.f_index_copy(0, &active, &run.best)?;
            best_norm = best_norm.f_index_copy(0, &active, &run.best_norm)?;
            // Images fooled within eps are done: their verdict is final.
            active = active.f_index_select(0, &where_true(&run.best_norm.f_gt(self.eps)?))?;
        }
        let best = best.f_view(shape.as_slice())?;
        let fooled = best_norm
            .f_le(self.eps)?
            .f_logical_and(&predict(model, &best).f_ne_tensor(y)?)?;
        let x_adv = best.f_where_self(&fooled.f_view([-1, 1, 1, 1])?, x)?;
        Ok((x_adv.detach(), fooled))
    }
}

impl Attack for FabT {
    fn name(&self) -> String {
        match self.iterations {
            100 => "fab_t".into(),
            k => format!("fab_t{k}"),
        }
    }

    fn gradient_steps(&self) -> usize {
        self.iterations * self.targets
    }

    /// FAB-T starts at the clean point.
    fn start(&self, x: &Tensor, _key: NoiseKey) -> Tensor {
        x.detach().copy()
    }

    /// Every target class in turn from `x_start`, each on the images the
    /// model is right on clean and no earlier target has fooled.
    fn run_from(&self, model: &Model, input: &AttackInput, x_start: &Tensor) -> Result<Tensor> {
        self.check(input.x)?;
        let x = input.x.detach();
        let clean = tch::no_grad(|| model.forward_t(&x, false));
        let classes = clean.size()[1];
        let mut robust = clean.argmax(-1, false).f_eq_tensor(input.y)?;
        let ranked = clean.argsort(-1, true);
        let mut x_adv = x.copy();
        for rank in 1..=self.targets as i64 {
            let idx = where_true(&robust);
            if idx.numel() == 0 || rank >= classes {
                break;
            }
            let sub = SubInput::new(input, &idx)?;
            let target = ranked.select(1, rank).f_index_select(0, &idx)?;
            let start = x_start.f_index_select(0, &idx)?;
            let (adv, fooled) = self.run_target(model, &sub.x, &sub.y, &target, &start)?;
            x_adv = x_adv.f_index_copy(0, &idx, &adv)?;
            robust = robust.f_index_copy(0, &idx, &fooled.logical_not())?;
        }
        Ok(x_adv)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use tch::Device;

    fn rows(v: &[f32], r: i64) -> Tensor {
        Tensor::from_slice(v).view([r, -1])
    }

    /// A brute-force check: the step lands on the hyperplane, stays in the
    /// box, and no smaller L-inf radius can reach it.
    #[test]
    fn projection_is_the_smallest_step_onto_the_plane() {
        let t = rows(&[0.2, 0.5, 0.9, 0.5, 0.5, 0.5, 0.1, 0.9, 0.3], 3);
        let w = rows(&[1.0, -2.0, 0.5, 1.0, 1.0, 0.0, 3.0, 1.0, -1.0], 3);
        let b = Tensor::from_slice(&[1.0f32, 0.2, 0.2]);
        let d = project_linf(&t, &w, &b).unwrap();
        let z = &t + &d;
        assert!(z.min().double_value(&[]) >= -1e-6 && z.max().double_value(&[]) <= 1.0 + 1e-6);
        let on_plane = (&w * &z).sum_dim_intlist(&[1i64][..], false, Kind::Float) - &b;
        assert!(
            on_plane.abs().max().double_value(&[]) < 1e-5,
            "{on_plane:?}"
        );
        // Coordinates with w = 0 stay put.
        assert_eq!(d.double_value(&[1, 2]), 0.0);
        // Row 1: lower <w, z> from 1.0 to 0.2 with weights 1, 1: radius 0.4.
        let r1 = d.get(1).abs().max().double_value(&[]);
        assert!((r1 - 0.4).abs() < 1e-6, "{r1}");
        // Row 2: 0.3 + 0.9 - 0.3 = 0.9 down to 0.2 with rooms 0.1 (w 3),
        // 0.9 (w 1), 0.7 (w -1): 0.3 + 2 r = 0.7 → r = 0.2 > 0.1.
        let r2 = d.get(2).abs().max().double_value(&[]);
        assert!((r2 - 0.2).abs() < 1e-6, "{r2}");
        assert!((d.double_value(&[2, 0]) + 0.1).abs() < 1e-6);
    }

    #[test]
    fn an_unreachable_plane_gives_the_box_corner() {
        let t = rows(&[0.5, 0.5], 1);
        let w = rows(&[1.0, 1.0], 1);
        let b = Tensor::from_slice(&[5.0f32]);
        let d = project_linf(&t, &w, &b).unwrap();
        assert_eq!(Vec::<f32>::try_from(&d.view([-1])).unwrap(), vec![0.5, 0.5]);
        let none = project_linf(&t, &t.zeros_like(), &Tensor::from_slice(&[1.0f32])).unwrap();
        assert_eq!(none.abs().sum(Kind::Float).double_value(&[]), 0.0);
    }

    #[test]
    fn projection_matches_brute_force_on_random_rows() {
        tch::manual_seed(3);
        let t = Tensor::rand([64, 12], (Kind::Float, Device::Cpu));
        let w = Tensor::randn([64, 12], (Kind::Float, Device::Cpu));
        let b = Tensor::randn([64], (Kind::Float, Device::Cpu));
        let d = project_linf(&t, &w, &b).unwrap();
        // For each row, the reachable change of <w, z> within radius r is
        // monotone in r; the found radius reaches the plane and 0.999 r does not.
        let reach =
            |r: &Tensor| {
                let up = (-&t + 1.0).minimum(r);
                let down = t.minimum(r);
                let gain_up = (w.clamp_min(0.0) * &up - w.clamp_max(0.0) * &down).sum_dim_intlist(
                    &[1i64][..],
                    false,
                    Kind::Float,
                );
                let gain_down = (w.clamp_min(0.0) * &down - w.clamp_max(0.0) * &up)
                    .sum_dim_intlist(&[1i64][..], false, Kind::Float);
                (gain_up, gain_down)
            };
        let need = &b - (&w * &t).sum_dim_intlist(&[1i64][..], false, Kind::Float);
        let radius = d.abs().amax([1], true);
        let (up, down) = reach(&(&radius * 0.999));
        let short = need
            .gt(0.0)
            .logical_and(&up.lt_tensor(&need))
            .logical_or(&need.le(0.0).logical_and(&down.lt_tensor(&(-&need))));
        let z = &t + &d;
        let miss = ((&w * &z).sum_dim_intlist(&[1i64][..], false, Kind::Float) - &b).abs();
        let on_plane = miss.lt(1e-4);
        // Each row is either on the plane at a minimal radius, or unreachable
        // (then every coordinate with weight sits at a bound).
        let at_bound = z
            .le(1e-6)
            .logical_or(&z.ge(1.0 - 1e-6))
            .logical_or(&w.eq(0.0))
            .all_dim(1, false);
        let ok = on_plane
            .logical_and(&short)
            .logical_or(&on_plane.logical_not().logical_and(&at_bound));
        assert!(bool::try_from(ok.all()).unwrap(), "{miss:?} {short:?}");
    }
}
