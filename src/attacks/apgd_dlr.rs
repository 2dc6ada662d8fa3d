//! `apgd_dlr`: APGD maximising the untargeted difference-of-logits-ratio loss
//! `-(z_y - max_{i != y} z_i) / (z_pi1 - z_pi3)`, invariant to shifts and
//! rescaling of the logits, so it is not fooled by logit scaling that flattens
//! the cross-entropy. The algorithm is in `apgd`.

use super::apgd::{Apgd, ApgdLoss};

/// Builds APGD-DLR: `iterations` per run, `restarts` runs.
pub fn apgd_dlr(eps: f64, iterations: usize, restarts: usize) -> Apgd {
    Apgd {
        eps,
        iterations,
        loss: ApgdLoss::Dlr,
        restarts,
    }
}
