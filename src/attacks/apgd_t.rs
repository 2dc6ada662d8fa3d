//! `apgd_t`: targeted APGD-DLR as in AutoAttack's `apgd-t`: for each of the
//! `targets` classes ranked 2nd, 3rd, ... by the clean logits (9 by default:
//! every other class of CIFAR-10), APGD maximising
//! `-(z_y - z_t) / (z_pi1 - (z_pi3 + z_pi4) / 2)` on the samples that no
//! earlier target has fooled. Success is any misclassification. The algorithm
//! is in `apgd`.

use super::apgd::{Apgd, ApgdLoss};

/// AutoAttack's number of target classes.
pub const APGD_T_TARGETS: usize = 9;

/// Builds APGD-T: `iterations` per run, `restarts` runs per target class.
pub fn apgd_t(eps: f64, iterations: usize, restarts: usize, targets: usize) -> Apgd {
    Apgd {
        eps,
        iterations,
        loss: ApgdLoss::TargetedDlr { targets },
        restarts,
    }
}
