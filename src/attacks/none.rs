//! `none`: clean inputs (natural training, and the control of every ablation).

use super::{Attack, AttackInput, NoiseKey};
use crate::error::Result;
use crate::models::Model;
use tch::Tensor;

/// Returns the inputs unchanged.
#[derive(Debug, Clone, Copy)]
pub struct NoAttack;

impl Attack for NoAttack {
    fn name(&self) -> String {
        "none".into()
    }
    fn gradient_steps(&self) -> usize {
        0
    }
    fn start(&self, x: &Tensor, _key: NoiseKey) -> Tensor {
        x.detach()
    }
    fn run_from(&self, _model: &Model, _input: &AttackInput, x_start: &Tensor) -> Result<Tensor> {
        Ok(x_start.detach())
    }
}
