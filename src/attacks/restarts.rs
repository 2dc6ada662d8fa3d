//! Random restarts for any attack: run 0 on every sample, then each further
//! run only on the samples the attack has not yet fooled (AutoAttack's
//! protocol). A sample's result is the first run's x_adv, replaced by a later
//! run's where that run fools the model. "Fooled" is judged by a forward pass
//! on x_adv, BatchNorm in eval mode.
//!
//! Run r starts from the inner attack's start under [`restart_key`]`(key, r)`;
//! run 0 uses `key` itself, so `pgd20` and `pgd20_r1` are the same attack.

use super::{predict, Attack, AttackInput, NoiseKey};
use crate::error::{Error, Result};
use crate::models::Model;
use tch::Tensor;

/// The noise key of run `r` of a multi-run attack (restart or target class).
pub fn restart_key(key: NoiseKey, r: usize) -> NoiseKey {
    NoiseKey {
        stream: key.stream.wrapping_add((r as u64) << 32),
        ..key
    }
}

/// Indices [K] (i64) where `mask` [B] (bool) holds.
pub(crate) fn where_true(mask: &Tensor) -> Tensor {
    mask.nonzero().squeeze_dim(1)
}

/// The rows `idx` of an attack's input.
pub(crate) struct SubInput {
    pub x: Tensor,
    pub y: Tensor,
    pub teacher_logits: Option<Tensor>,
}

impl SubInput {
    pub fn new(input: &AttackInput, idx: &Tensor) -> Result<SubInput> {
        Ok(SubInput {
            x: input.x.f_index_select(0, idx)?,
            y: input.y.f_index_select(0, idx)?,
            teacher_logits: match input.teacher_logits {
                Some(t) => Some(t.f_index_select(0, idx)?),
                None => None,
            },
        })
    }

    pub fn as_input(&self) -> AttackInput<'_> {
        AttackInput {
            x: &self.x,
            y: &self.y,
            teacher_logits: self.teacher_logits.as_ref(),
        }
    }
}

/// `inner` run `restarts` times, later runs on the still-unfooled samples only.
#[derive(Debug, Clone, Copy)]
pub struct Restarts<A> {
    pub inner: A,
    /// Runs in all (at least 1).
    pub restarts: usize,
}

impl<A: Attack> Attack for Restarts<A> {
    fn name(&self) -> String {
        if self.restarts > 1 {
            format!("{}_r{}", self.inner.name(), self.restarts)
        } else {
            self.inner.name()
        }
    }
    fn gradient_steps(&self) -> usize {
        self.inner.gradient_steps() * self.restarts.max(1)
    }
    fn start(&self, x: &Tensor, key: NoiseKey) -> Tensor {
        self.inner.start(x, key)
    }
    /// One run of the inner attack.
    fn run_from(&self, model: &Model, input: &AttackInput, x_start: &Tensor) -> Result<Tensor> {
        self.inner.run_from(model, input, x_start)
    }
    fn starts(&self, x: &Tensor, key: NoiseKey) -> Vec<Tensor> {
        (0..self.restarts.max(1))
            .map(|r| self.inner.start(x, restart_key(key, r)))
            .collect()
    }
    fn run_from_starts(
        &self,
        model: &Model,
        input: &AttackInput,
        starts: &[Tensor],
    ) -> Result<Tensor> {
        let (first, rest) = starts
            .split_first()
            .ok_or_else(|| Error::attack(self.name(), "no start points given"))?;
        let mut x_adv = self.inner.run_from(model, input, first)?;
        for start in rest {
            let unfooled = where_true(&predict(model, &x_adv).f_eq_tensor(input.y)?);
            if unfooled.numel() == 0 {
                break;
            }
            let sub = SubInput::new(input, &unfooled)?;
            let adv = self.inner.run_from(
                model,
                &sub.as_input(),
                &start.f_index_select(0, &unfooled)?,
            )?;
            let fooled = where_true(&predict(model, &adv).f_ne_tensor(&sub.y)?);
            x_adv = x_adv.f_index_copy(
                0,
                &unfooled.f_index_select(0, &fooled)?,
                &adv.f_index_select(0, &fooled)?,
            )?;
        }
        Ok(x_adv)
    }
}
