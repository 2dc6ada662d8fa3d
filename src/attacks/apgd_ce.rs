//! `apgd_ce`: APGD maximising the cross-entropy on the true labels (the first
//! attack of AutoAttack; 100 iterations by default). The algorithm is in `apgd`.

use super::apgd::{Apgd, ApgdLoss};

/// Builds APGD-CE: `iterations` per run, `restarts` runs.
pub fn apgd_ce(eps: f64, iterations: usize, restarts: usize) -> Apgd {
    Apgd {
        eps,
        iterations,
        loss: ApgdLoss::CrossEntropy,
        restarts,
    }
}
