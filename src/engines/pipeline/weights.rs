//! Moving weights between the student and its replicas: a fixed variable
//! layout, deep-copied snapshots, and BatchNorm statistics carried from the
//! attack's replica back to the student.

use crate::error::Result;
use crate::models::Model;
use tch::Tensor;

/// BatchNorm's running-statistics momentum (PyTorch's default, as the zoo uses).
pub const BN_MOMENTUM: f64 = 0.1;

/// The variables of one architecture in a fixed (name-sorted) order.
#[derive(Debug, Clone)]
pub struct WeightLayout {
    pub names: Vec<String>,
    /// Indices (into `names`) of BatchNorm running statistics.
    pub bn: Vec<usize>,
}

impl WeightLayout {
    pub fn of(model: &Model) -> WeightLayout {
        let mut names: Vec<String> = model.vs.variables().into_keys().collect();
        names.sort();
        let bn = names
            .iter()
            .enumerate()
            .filter(|(_, n)| n.ends_with(".running_mean") || n.ends_with(".running_var"))
            .map(|(i, _)| i)
            .collect();
        WeightLayout { names, bn }
    }

    fn vars(&self, model: &Model) -> Vec<Tensor> {
        let vars = model.vs.variables();
        self.names.iter().map(|n| vars[n].shallow_clone()).collect()
    }

    /// Deep copies of every variable.
    pub fn snapshot(&self, model: &Model) -> Vec<Tensor> {
        tch::no_grad(|| self.vars(model).iter().map(|t| t.detach().copy()).collect())
    }

    /// Overwrites `model`'s variables with `weights` (same layout).
    pub fn load(&self, model: &Model, weights: &[Tensor]) -> Result<()> {
        tch::no_grad(|| -> Result<()> {
            for (mut var, w) in self.vars(model).into_iter().zip(weights) {
                var.f_copy_(w)?;
            }
            Ok(())
        })
    }

    /// Deep copies of the BatchNorm running statistics.
    pub fn bn_stats(&self, model: &Model) -> Vec<Tensor> {
        let vars = self.vars(model);
        tch::no_grad(|| self.bn.iter().map(|&i| vars[i].detach().copy()).collect())
    }

    /// Brings `student`'s BatchNorm statistics to where the attack's forwards
    /// would have left them. When the replica started from the student's own
    /// statistics (staleness 0) this is a copy, so the result is exactly the
    /// sequential algorithm's. Otherwise the attack's k updates
    /// r <- (1-m) r + m b are replayed on the student's statistics:
    /// r_student <- (1-m)^k r_student + (after - (1-m)^k before).
    pub fn apply_bn(
        &self,
        student: &Model,
        after: &[Tensor],
        before: &[Tensor],
        forwards: usize,
        exact: bool,
    ) -> Result<()> {
        let vars = self.vars(student);
        let decay = (1.0 - BN_MOMENTUM).powi(forwards as i32);
        tch::no_grad(|| -> Result<()> {
            for ((&i, a), b) in self.bn.iter().zip(after).zip(before) {
                let mut var = vars[i].shallow_clone();
                if exact {
                    var.f_copy_(a)?;
                } else {
                    let replayed = &var * decay + (a - b * decay);
                    var.f_copy_(&replayed)?;
                }
            }
            Ok(())
        })
    }
}
