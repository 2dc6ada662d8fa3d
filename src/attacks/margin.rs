//! Margin-type losses on logits, per sample: the Carlini–Wagner margin of
//! `cw`, and the difference-of-logits-ratio (DLR) losses of APGD (Croce & Hein
//! 2020), untargeted and targeted. Every function returns a `[B]` tensor that
//! the attack maximises.

use crate::error::Result;
use tch::{Kind, Tensor};

/// `z_y`: the logit of each sample's label. `logits` [B, C], `y` [B] (i64) → [B].
pub fn true_logit(logits: &Tensor, y: &Tensor) -> Result<Tensor> {
    Ok(logits
        .f_gather(1, &y.f_unsqueeze(1)?, false)?
        .f_squeeze_dim(1)?)
}

/// `max_{i != y} z_i` → [B].
pub fn max_other_logit(logits: &Tensor, y: &Tensor) -> Result<Tensor> {
    let classes = logits.size().last().copied().unwrap_or(0);
    let is_label = y.f_one_hot(classes)?.f_to_kind(Kind::Bool)?;
    Ok(logits
        .f_masked_fill(&is_label, f64::NEG_INFINITY)?
        .f_amax([1], false)?)
}

/// The CW-inf margin `-max(z_y - max_{i != y} z_i + kappa, 0)`: rises as the
/// label loses its lead, and is flat (zero gradient) once another class leads
/// by `kappa`.
pub fn cw_margin(logits: &Tensor, y: &Tensor, kappa: f64) -> Result<Tensor> {
    let margin = true_logit(logits, y)? - max_other_logit(logits, y)?;
    Ok(-(margin + kappa).f_clamp_min(0.0)?)
}

/// Logits sorted in descending order, checked to have at least `need` classes.
fn sorted_desc(logits: &Tensor, need: i64, what: &str) -> Result<Tensor> {
    let classes = logits.size().last().copied().unwrap_or(0);
    if classes < need {
        return Err(crate::Error::attack(
            what,
            format!("needs at least {need} classes, got {classes}"),
        ));
    }
    Ok(logits.f_sort(1, true)?.0)
}

/// Untargeted DLR: `-(z_y - max_{i != y} z_i) / (z_pi1 - z_pi3 + 1e-12)`, pi
/// sorting the logits in decreasing order (scale-invariant in the logits).
pub fn dlr(logits: &Tensor, y: &Tensor) -> Result<Tensor> {
    let s = sorted_desc(logits, 3, "the DLR loss")?;
    let num = true_logit(logits, y)? - max_other_logit(logits, y)?;
    let den = s.select(1, 0) - s.select(1, 2) + 1e-12;
    Ok(-num / den)
}

/// Targeted DLR towards class `t` [B]:
/// `-(z_y - z_t) / (z_pi1 - (z_pi3 + z_pi4) / 2 + 1e-12)`.
pub fn dlr_targeted(logits: &Tensor, y: &Tensor, t: &Tensor) -> Result<Tensor> {
    let s = sorted_desc(logits, 4, "the targeted DLR loss")?;
    let num = true_logit(logits, y)? - true_logit(logits, t)?;
    let den = s.select(1, 0) - (s.select(1, 2) + s.select(1, 3)) * 0.5 + 1e-12;
    Ok(-num / den)
}

#[cfg(test)]
mod tests {
    use super::*;
    use tch::Device;

    fn logits() -> (Tensor, Tensor) {
        let z = Tensor::from_slice(&[3.0f32, 1.0, 0.5, -1.0, 0.0, 2.0, 4.0, 1.0]).view([2, 4]);
        (z, Tensor::from_slice(&[0i64, 1]))
    }

    #[test]
    fn values_by_hand() {
        let (z, y) = logits();
        // Sample 0: z_y = 3, best other 1 → margin 2; sample 1: z_y = 2, best other 4 → -2.
        let cw = cw_margin(&z, &y, 50.0).unwrap();
        assert_eq!(Vec::<f32>::try_from(&cw).unwrap(), vec![-52.0, -48.0]);
        let d = dlr(&z, &y).unwrap();
        let d: Vec<f32> = Vec::try_from(&d).unwrap();
        assert!((d[0] - (-2.0 / (3.0 - 0.5))).abs() < 1e-6);
        assert!((d[1] - (2.0 / (4.0 - 1.0))).abs() < 1e-6);
        let t = Tensor::from_slice(&[1i64, 2]);
        let dt: Vec<f32> = Vec::try_from(&dlr_targeted(&z, &y, &t).unwrap()).unwrap();
        assert!((dt[0] - (-(3.0 - 1.0) / (3.0 - (0.5 - 1.0) / 2.0))).abs() < 1e-6);
        assert!((dt[1] - (-(2.0 - 4.0) / (4.0 - (1.0 + 0.0) / 2.0))).abs() < 1e-6);
    }

    #[test]
    fn bad_shapes_are_errors() {
        let z = Tensor::zeros([2, 2], (Kind::Float, Device::Cpu));
        let y = Tensor::from_slice(&[0i64, 1]);
        assert!(dlr(&z, &y).is_err());
        let z = Tensor::zeros([2, 10], (Kind::Float, Device::Cpu));
        assert!(cw_margin(&z, &Tensor::from_slice(&[0i64, 12]), 0.0).is_err());
    }
}
