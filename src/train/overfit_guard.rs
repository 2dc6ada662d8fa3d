//! The catastrophic-overfitting guard of 1-step training (`[guard]`).
//!
//! 1-step adversarial training can collapse within an epoch (Wong et al.,
//! "Fast is better than free", 2020): accuracy under the 1-step training attack
//! goes *up* while accuracy under a multi-step attack falls towards zero — the
//! model has learnt to mask the one gradient step it is trained on. The guard
//! watches for exactly that signature on held-out images (the validation
//! split, never trained on): after every epoch it takes the accuracy under
//! `eval.validation_attack` (PGD-10 by default; "robust") and under the
//! training attack, and reports a collapse when
//!
//! - robust accuracy is at least `guard.max_drop` percentage points below the
//!   best robust accuracy seen so far, **and**
//! - training-attack accuracy has risen (or held) since that best epoch.
//!
//! A model that merely gets worse (both fall) is not a collapse. What happens
//! then is `guard.action`: `warn` logs it, `stop` also raises the [`StopFlag`]
//! that ends training and rolls the result back to the best-by-validation
//! checkpoint (see [`super::validation`]). This module is only the decision;
//! it holds no model and runs no attack.

use serde::{Deserialize, Serialize};
use std::fmt;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;

/// One epoch as the guard sees it: accuracies (percent) on its held-out images.
#[derive(Debug, Clone, Copy, PartialEq, Serialize, Deserialize)]
pub struct GuardPoint {
    /// Epochs completed (1-based).
    pub epoch: usize,
    /// Accuracy under the guard's multi-step attack (`eval.validation_attack`).
    pub robust: f64,
    /// Accuracy under the training attack (BatchNorm in eval mode).
    pub train_attack: f64,
}

/// A detected collapse: the epoch's numbers and the best epoch's.
#[derive(Debug, Clone, Copy, PartialEq, Serialize, Deserialize)]
pub struct Collapse {
    pub at: GuardPoint,
    /// The epoch with the best robust accuracy before the collapse.
    pub best: GuardPoint,
    /// `best.robust - at.robust`, percentage points.
    pub drop: f64,
}

impl fmt::Display for Collapse {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            f,
            "catastrophic overfitting at epoch {}: robust accuracy {:.2}% is {:.2} points below \
             the best {:.2}% (epoch {}) while training-attack accuracy held or rose ({:.2}% -> {:.2}%)",
            self.at.epoch,
            self.at.robust,
            self.drop,
            self.best.robust,
            self.best.epoch,
            self.best.train_attack,
            self.at.train_attack
        )
    }
}

/// The guard's memory: the best robust accuracy so far and its epoch.
#[derive(Debug, Clone)]
pub struct OverfitGuard {
    max_drop: f64,
    best: Option<GuardPoint>,
}

impl OverfitGuard {
    /// A guard that reports a drop of `max_drop` percentage points or more.
    pub fn new(max_drop: f64) -> OverfitGuard {
        OverfitGuard {
            max_drop,
            best: None,
        }
    }

    /// The best epoch so far (highest robust accuracy; the earliest on ties).
    pub fn best(&self) -> Option<GuardPoint> {
        self.best
    }

    /// Takes one epoch's numbers; `Some` when they show a collapse (see the
    /// module docs). A collapsed epoch never becomes the best.
    pub fn observe(&mut self, point: GuardPoint) -> Option<Collapse> {
        let Some(best) = self.best else {
            self.best = Some(point);
            return None;
        };
        if point.robust > best.robust {
            self.best = Some(point);
            return None;
        }
        let drop = best.robust - point.robust;
        (drop >= self.max_drop && point.train_attack >= best.train_attack).then_some(Collapse {
            at: point,
            best,
            drop,
        })
    }
}

/// A flag that asks training to stop early, shared between the stage that
/// decides (the eval stage, or the sequential trainer) and the one that obeys
/// (the data stage stops producing batches; the pipeline then drains).
#[derive(Debug, Clone, Default)]
pub struct StopFlag(Arc<AtomicBool>);

impl StopFlag {
    pub fn new() -> StopFlag {
        StopFlag::default()
    }

    /// Asks training to stop.
    pub fn raise(&self) {
        self.0.store(true, Ordering::SeqCst);
    }

    /// Whether stopping was asked for.
    pub fn is_raised(&self) -> bool {
        self.0.load(Ordering::SeqCst)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn p(epoch: usize, robust: f64, train_attack: f64) -> GuardPoint {
        GuardPoint {
            epoch,
            robust,
            train_attack,
        }
    }

    /// Feeds a sequence; returns the epochs flagged as collapses.
    fn flagged(max_drop: f64, seq: &[(f64, f64)]) -> Vec<usize> {
        let mut g = OverfitGuard::new(max_drop);
        seq.iter()
            .enumerate()
            .filter_map(|(i, &(r, t))| g.observe(p(i + 1, r, t)).map(|c| c.at.epoch))
            .collect()
    }

    #[test]
    fn a_synthetic_collapse_triggers_at_its_epoch() {
        // FGSM training as Wong et al. report it: PGD accuracy climbs, then
        // falls to ~0 within an epoch while FGSM accuracy jumps up.
        let seq = [
            (30.0, 38.0),
            (36.0, 44.0),
            (41.0, 49.0),
            (43.0, 51.0),
            (2.0, 85.0),
            (0.5, 92.0),
        ];
        assert_eq!(flagged(10.0, &seq), [5, 6]);
        let mut g = OverfitGuard::new(10.0);
        let mut first = None;
        for (i, &(r, t)) in seq.iter().enumerate() {
            if let Some(c) = g.observe(p(i + 1, r, t)) {
                first.get_or_insert(c);
            }
        }
        let c = first.unwrap();
        assert_eq!(c.best, p(4, 43.0, 51.0));
        assert_eq!(c.at, p(5, 2.0, 85.0));
        assert!((c.drop - 41.0).abs() < 1e-12);
        let text = c.to_string();
        assert!(
            text.contains("epoch 5") && text.contains("epoch 4"),
            "{text}"
        );
        // The collapsed epochs never replaced the best.
        assert_eq!(g.best(), Some(p(4, 43.0, 51.0)));
    }

    #[test]
    fn healthy_or_merely_worse_training_does_not_trigger() {
        // Steady progress with noise below the threshold.
        assert!(flagged(
            10.0,
            &[(30.0, 35.0), (34.0, 40.0), (31.0, 42.0), (38.0, 45.0)]
        )
        .is_empty());
        // Everything gets worse (divergence, too high a learning rate): the
        // training-attack accuracy falls too, so it is no collapse.
        assert!(flagged(10.0, &[(40.0, 50.0), (20.0, 30.0), (10.0, 12.0)]).is_empty());
        // A drop just under the threshold.
        assert!(flagged(10.0, &[(40.0, 50.0), (30.5, 60.0)]).is_empty());
        // At the threshold, with the training-attack accuracy held: a collapse.
        assert_eq!(flagged(10.0, &[(40.0, 50.0), (30.0, 50.0)]), [2]);
        // The first epoch only sets the reference.
        assert!(flagged(0.5, &[(0.0, 100.0)]).is_empty());
    }

    #[test]
    fn stop_flag_is_shared() {
        let a = StopFlag::new();
        let b = a.clone();
        assert!(!b.is_raised());
        a.raise();
        assert!(b.is_raised());
    }
}
