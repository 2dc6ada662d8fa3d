//! Learning-rate schedules: `constant`, `multistep` (per epoch, every
//! milestone applied — the original ARD code's second decay never happened),
//! `cosine` and `one_cycle` (both per iteration).

use crate::config::{OptimConfig, ScheduleKind};

/// A schedule resolved for a run of `total_iters` iterations.
#[derive(Debug, Clone)]
pub struct Schedule {
    pub base_lr: f64,
    pub kind: ScheduleKind,
    pub milestones: Vec<usize>,
    pub gamma: f64,
    pub peak_at: f64,
    pub total_iters: usize,
}

impl Schedule {
    pub fn new(cfg: &OptimConfig, total_iters: usize) -> Schedule {
        let s = &cfg.schedule;
        Schedule {
            base_lr: cfg.lr.get(),
            kind: s.kind,
            milestones: s.milestones.clone().unwrap_or_default(),
            gamma: s.gamma.map(|g| g.get()).unwrap_or(1.0),
            peak_at: s.peak_at.map(|p| p.get()).unwrap_or(0.3),
            total_iters: total_iters.max(1),
        }
    }

    /// The rate for global iteration `iter` (0-based) in epoch `epoch` (0-based).
    pub fn lr(&self, epoch: usize, iter: usize) -> f64 {
        self.lr_at(epoch, iter as f64 / self.total_iters as f64)
    }

    /// The rate at fraction `t` of the run (iterations, or a time budget's
    /// seconds) in epoch `epoch`.
    pub fn lr_at(&self, epoch: usize, t: f64) -> f64 {
        match self.kind {
            ScheduleKind::Constant => self.base_lr,
            ScheduleKind::Multistep => {
                let passed = self.milestones.iter().filter(|&&m| m <= epoch).count();
                self.base_lr * self.gamma.powi(passed as i32)
            }
            ScheduleKind::Cosine => self.base_lr * 0.5 * (1.0 + (std::f64::consts::PI * t).cos()),
            ScheduleKind::OneCycle => {
                if t < self.peak_at {
                    self.base_lr * t / self.peak_at
                } else {
                    self.base_lr * (1.0 - t).max(0.0) / (1.0 - self.peak_at)
                }
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::config::{Real, ScheduleConfig};

    fn cfg(kind: ScheduleKind) -> OptimConfig {
        let mut c = OptimConfig {
            lr: Real(0.1),
            ..Default::default()
        };
        c.schedule = ScheduleConfig {
            kind,
            ..Default::default()
        };
        c
    }

    #[test]
    fn multistep_applies_every_milestone() {
        let mut c = cfg(ScheduleKind::Multistep);
        c.schedule.milestones = Some(vec![75, 90, 100]);
        c.schedule.gamma = Some(Real(0.1));
        let s = Schedule::new(&c, 1000);
        assert_eq!(s.lr(74, 0), 0.1);
        assert!((s.lr(75, 0) - 0.01).abs() < 1e-12);
        assert!((s.lr(90, 0) - 0.001).abs() < 1e-12);
        assert!((s.lr(100, 0) - 0.0001).abs() < 1e-12);
    }

    #[test]
    fn cosine_and_one_cycle_shapes() {
        let s = Schedule::new(&cfg(ScheduleKind::Cosine), 100);
        assert!((s.lr(0, 0) - 0.1).abs() < 1e-12);
        assert!((s.lr(0, 50) - 0.05).abs() < 1e-12);
        let mut c = cfg(ScheduleKind::OneCycle);
        c.schedule.peak_at = Some(Real(0.25));
        let s = Schedule::new(&c, 100);
        assert_eq!(s.lr(0, 0), 0.0);
        assert!((s.lr(0, 25) - 0.1).abs() < 1e-12);
        assert!((s.lr(0, 100)).abs() < 1e-12);
    }
}
