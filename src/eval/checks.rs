//! Checks of a model before AutoAttack scores it, after the authors' own
//! (`autoattack/checks.py`): a model whose logits do not depend on its input,
//! that answers the same input differently (randomised), whose outputs look
//! like probabilities rather than logits, or whose input gradients vanish on
//! some images cannot be evaluated reliably by gradient attacks, and its
//! robust accuracy would be overestimated. Each finding is a [`ModelFlag`] the
//! eval table prints and the JSON report keeps, so nothing is scored silently.
//! The checks look at one batch of the evaluated images.

use crate::attacks::margin::dlr;
use crate::error::{Error, Result};
use crate::models::Model;
use serde::{Deserialize, Serialize};
use tch::{Kind, Reduction, Tensor};

/// What a check found.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum FlagKind {
    /// The same logits for different images.
    ConstantOutput,
    /// Different logits for the same images, forward to forward.
    Randomized,
    /// Every output row in [0, 1] and summing to 1.
    Probabilities,
    /// A zero input gradient on some images.
    ZeroGradients,
}

/// One finding: its kind and the line the table prints.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct ModelFlag {
    pub check: FlagKind,
    pub message: String,
}

/// Tolerance of the randomness check on L2-normalised logits (AutoAttack's).
const RANDOM_TOL: f64 = 1e-4;
/// Tolerance of the probability check (AutoAttack's).
const PROB_TOL: f64 = 1e-5;

fn flag(check: FlagKind, message: String) -> ModelFlag {
    ModelFlag { check, message }
}

/// Rows scaled to unit L2 norm.
fn unit_rows(z: &Tensor) -> Result<Tensor> {
    let norm = z
        .f_square()?
        .f_sum_dim_intlist(&[1i64][..], true, Kind::Float)?
        .f_sqrt()?;
    Ok(z / (norm + 1e-10))
}

/// Images [B] whose input gradient of the DLR loss (cross-entropy with fewer
/// than 3 classes) is exactly zero. Only images the model gets right count:
/// those are the ones attacked (on a misclassified image whose label ranks
/// third, DLR is constant by construction).
fn zero_gradients(forward: &Forward, x: &Tensor, y: &Tensor) -> Result<Tensor> {
    tch::with_grad(|| {
        let x_var = x.detach().set_requires_grad(true);
        let z = forward(&x_var);
        let loss = match dlr(&z, y) {
            Ok(l) => l,
            Err(_) => z.f_cross_entropy_loss::<Tensor>(y, None, Reduction::None, -100, 0.0)?,
        };
        if !loss.requires_grad() {
            // The output does not depend on the input at all.
            return Ok(z.detach().f_argmax(-1, false)?.f_eq_tensor(y)?);
        }
        let grad = Tensor::run_backward(&[&loss.sum(Kind::Float)], &[&x_var], false, false)
            .pop()
            .ok_or_else(|| Error::invalid("model checks", "no input gradient"))?;
        let size =
            grad.f_abs()?
                .f_flatten(1, -1)?
                .f_sum_dim_intlist(&[1i64][..], false, Kind::Float)?;
        let right = z.detach().f_argmax(-1, false)?.f_eq_tensor(y)?;
        Ok(size.f_eq(0.0)?.f_logical_and(&right)?)
    })
}

/// A model as a function from images [B, C, H, W] to logits [B, K].
pub type Forward<'a> = dyn Fn(&Tensor) -> Tensor + 'a;

/// Runs every check on `model` (BatchNorm in eval mode) with the images
/// `x` [B, C, H, W] and labels `y` [B].
pub fn check_model(model: &Model, x: &Tensor, y: &Tensor) -> Result<Vec<ModelFlag>> {
    check(&|x: &Tensor| model.forward_t(x, false), x, y)
}

/// [`check_model`] for any differentiable `forward`.
pub fn check(forward: &Forward, x: &Tensor, y: &Tensor) -> Result<Vec<ModelFlag>> {
    let mut flags = Vec::new();
    let n = x.size()[0];
    if n == 0 {
        return Ok(flags);
    }
    let z = tch::no_grad(|| forward(x));
    let again = tch::no_grad(|| forward(x));
    let drift = (unit_rows(&z)? - unit_rows(&again)?)
        .f_square()?
        .f_sum_dim_intlist(&[1i64][..], false, Kind::Float)?
        .f_sqrt()?
        .f_max()?
        .double_value(&[]);
    if drift > RANDOM_TOL {
        flags.push(flag(
            FlagKind::Randomized,
            format!(
                "the model answers the same images differently (normalised logits move by {drift:.2e}): \
                 a randomised model needs AutoAttack's rand version, not the standard one"
            ),
        ));
    }
    let images_differ = n > 1 && (x - x.get(0)).f_abs()?.f_max()?.double_value(&[]) > 0.0;
    let spread = (&z - z.get(0)).f_abs()?.f_max()?.double_value(&[]);
    if images_differ && spread == 0.0 {
        flags.push(flag(
            FlagKind::ConstantOutput,
            format!("the model gives the same logits for all {n} images checked: its output does not depend on its input"),
        ));
    }
    let (lo, hi) = (z.f_min()?.double_value(&[]), z.f_max()?.double_value(&[]));
    let row_sum = (z.f_sum_dim_intlist(&[1i64][..], false, Kind::Float)? - 1.0)
        .f_abs()?
        .f_max()?
        .double_value(&[]);
    if hi < 1.0 + PROB_TOL && lo > -PROB_TOL && row_sum < PROB_TOL {
        flags.push(flag(
            FlagKind::Probabilities,
            "the model's outputs look like probabilities (in [0, 1], rows summing to 1): \
             attacks need the logits before the softmax"
                .into(),
        ));
    }
    let zero = zero_gradients(forward, x, y)?
        .f_sum(Kind::Int64)?
        .int64_value(&[]);
    if zero > 0 {
        let right = z
            .f_argmax(-1, false)?
            .f_eq_tensor(y)?
            .f_sum(Kind::Int64)?
            .int64_value(&[]);
        flags.push(flag(
            FlagKind::ZeroGradients,
            format!(
                "{zero} of {right} images checked that the model gets right have a zero input \
                 gradient: gradient attacks cannot move them, so the robust accuracy may be \
                 overestimated"
            ),
        ));
    }
    for f in &flags {
        log::warn!("model check: {}", f.message);
    }
    Ok(flags)
}

#[cfg(test)]
mod tests {
    use super::*;
    use tch::Device;

    fn images() -> Tensor {
        tch::manual_seed(1);
        Tensor::rand([8, 3, 4, 4], (Kind::Float, Device::Cpu))
    }

    /// Labels the model gets right (the images an attack works on).
    fn labels(f: &Forward, x: &Tensor) -> Tensor {
        tch::no_grad(|| f(x)).argmax(-1, false)
    }

    /// A fixed random linear model on the flattened image.
    fn weights() -> Tensor {
        tch::manual_seed(2);
        Tensor::randn([48, 10], (Kind::Float, Device::Cpu))
    }

    fn kinds(flags: &[ModelFlag]) -> Vec<FlagKind> {
        flags.iter().map(|f| f.check).collect()
    }

    #[test]
    fn a_plain_model_raises_no_flag() {
        let x = images();
        let w = weights();
        let f = |x: &Tensor| x.flatten(1, -1).matmul(&w);
        assert_eq!(check(&f, &x, &labels(&f, &x)).unwrap(), vec![]);
    }

    #[test]
    fn constant_logits_are_flagged() {
        let x = images();
        let bias = Tensor::arange(10, (Kind::Float, Device::Cpu));
        let f = |x: &Tensor| bias.expand([x.size()[0], 10], false);
        let flags = kinds(&check(&f, &x, &labels(&f, &x)).unwrap());
        assert_eq!(
            flags,
            vec![FlagKind::ConstantOutput, FlagKind::ZeroGradients]
        );
    }

    #[test]
    fn a_randomised_model_is_flagged() {
        let x = images();
        let w = weights();
        let f = |x: &Tensor| {
            x.flatten(1, -1).matmul(&w)
                + Tensor::randn([x.size()[0], 10], (Kind::Float, Device::Cpu))
        };
        assert_eq!(
            kinds(&check(&f, &x, &labels(&f, &x)).unwrap()),
            vec![FlagKind::Randomized]
        );
    }

    #[test]
    fn probabilities_are_flagged() {
        let x = images();
        let w = weights();
        let f = |x: &Tensor| x.flatten(1, -1).matmul(&w).softmax(-1, Kind::Float);
        assert_eq!(
            kinds(&check(&f, &x, &labels(&f, &x)).unwrap()),
            vec![FlagKind::Probabilities]
        );
    }

    #[test]
    fn zero_gradients_on_some_images_are_flagged() {
        let x = images();
        // Images darker than the middle sit where a ReLU is off: their logits
        // are the fixed offsets, with no gradient.
        let dark = x.mean_dim(&[1i64, 2, 3][..], false, Kind::Float).lt(0.5);
        let expected = dark.sum(Kind::Int64).int64_value(&[]);
        assert!(expected > 0 && expected < 8, "{expected}");
        let scale = Tensor::arange(10, (Kind::Float, Device::Cpu));
        let offset = Tensor::from_slice(&[0.0f32, 3.0, 1.0, 4.0, 1.0, 5.0, 9.0, 2.0, 6.0, 5.0]);
        let f = |x: &Tensor| {
            let s = (x.mean_dim(&[1i64, 2, 3][..], true, Kind::Float) - 0.5).relu();
            s.view([-1, 1]) * &scale * 10.0 + &offset
        };
        let flags = check(&f, &x, &labels(&f, &x)).unwrap();
        assert_eq!(kinds(&flags), vec![FlagKind::ZeroGradients]);
        assert!(
            flags[0].message.starts_with(&format!("{expected} of ")),
            "{flags:?}"
        );
        // Misclassified images do not count.
        let wrong = (labels(&f, &x) + 1).remainder(10);
        assert_eq!(check(&f, &x, &wrong).unwrap(), vec![]);
    }
}
