//! SGD with momentum, weight decay and optional Nesterov, exactly as
//! `torch.optim.SGD` (dampening 0), plus optional global gradient-norm clipping
//! as `torch.nn.utils.clip_grad_norm_`. The momentum buffers are plain tensors
//! so checkpoints can carry them.

use crate::error::Result;
use tch::{nn::VarStore, Tensor};

/// The optimiser state for one model.
#[derive(Debug)]
pub struct Sgd {
    pub momentum: f64,
    pub weight_decay: f64,
    pub nesterov: bool,
    pub grad_clip: Option<f64>,
    names: Vec<String>,
    params: Vec<Tensor>,
    /// One buffer per parameter; undefined until its first step.
    buffers: Vec<Option<Tensor>>,
}

impl Sgd {
    /// Optimises the trainable variables of `vs` (in a stable, name-sorted order).
    pub fn from_config(vs: &VarStore, cfg: &crate::config::OptimConfig) -> Sgd {
        let mut named: Vec<(String, Tensor)> = vs
            .variables()
            .into_iter()
            .filter(|(_, t)| t.requires_grad())
            .collect();
        named.sort_by(|a, b| a.0.cmp(&b.0));
        let (names, params): (Vec<String>, Vec<Tensor>) = named.into_iter().unzip();
        let buffers = params.iter().map(|_| None).collect();
        Sgd {
            momentum: cfg.momentum.get(),
            weight_decay: cfg.weight_decay.get(),
            nesterov: cfg.nesterov,
            grad_clip: cfg.grad_clip.map(|c| c.get()),
            names,
            params,
            buffers,
        }
    }

    /// The parameters it updates.
    pub fn params(&self) -> &[Tensor] {
        &self.params
    }

    /// Clears every parameter's gradient.
    pub fn zero_grad(&mut self) {
        for p in &mut self.params {
            let mut g = p.grad();
            if g.defined() {
                let _ = g.detach_().zero_();
            }
        }
    }

    /// The parameters' names, in [`Sgd::params`] order.
    pub fn names(&self) -> &[String] {
        &self.names
    }

    /// One step with learning rate `lr` on the parameters' own gradients;
    /// parameters without a gradient are skipped.
    pub fn step(&mut self, lr: f64) -> Result<()> {
        let grads: Vec<Tensor> = self.params.iter().map(|p| p.grad()).collect();
        self.step_with(lr, &grads)
    }

    /// One step with learning rate `lr` on `grads`, one per parameter in
    /// [`Sgd::params`] order (undefined: skipped), e.g. the f32 gradients of
    /// a bf16 compute copy ([`crate::perf::ComputeCopy`]). Clipping scales them in place.
    pub fn step_with(&mut self, lr: f64, grads: &[Tensor]) -> Result<()> {
        if grads.len() != self.params.len() {
            let (g, p) = (grads.len(), self.params.len());
            let message = format!("{g} gradients for {p} parameters");
            return Err(crate::Error::invalid("optimiser step", message));
        }
        tch::no_grad(|| -> Result<()> {
            if let Some(max_norm) = self.grad_clip {
                let coef = max_norm / (global_norm(grads) + 1e-6);
                if coef < 1.0 {
                    for g in grads.iter().filter(|g| g.defined()) {
                        let _ = g.shallow_clone().f_mul_scalar_(coef)?;
                    }
                }
            }
            for ((p, buf), g) in self
                .params
                .iter_mut()
                .zip(self.buffers.iter_mut())
                .zip(grads)
            {
                if !g.defined() {
                    continue;
                }
                let mut d_p = if self.weight_decay != 0.0 {
                    g.f_add(&(&*p * self.weight_decay))?
                } else {
                    g.shallow_clone()
                };
                if self.momentum != 0.0 {
                    let b = match buf {
                        None => d_p.detach().copy(),
                        Some(b) => {
                            let _ = b.f_mul_scalar_(self.momentum)?.f_add_(&d_p)?;
                            b.shallow_clone()
                        }
                    };
                    *buf = Some(b.shallow_clone());
                    d_p = if self.nesterov {
                        d_p.f_add(&(&b * self.momentum))?
                    } else {
                        b
                    };
                }
                let _ = p.f_sub_(&(d_p * lr))?;
            }
            Ok(())
        })
    }

    /// The optimiser state as named tensors (`momentum.<parameter name>`), for checkpoints.
    pub fn state_tensors(&self) -> Vec<(String, Tensor)> {
        self.names
            .iter()
            .zip(&self.buffers)
            .filter_map(|(n, b)| {
                b.as_ref()
                    .map(|b| (format!("momentum.{n}"), b.to_device(tch::Device::Cpu)))
            })
            .collect()
    }

    /// Restores the state written by [`Sgd::state_tensors`]; unknown or
    /// mis-shaped entries are an error naming them.
    pub fn load_state(&mut self, state: &std::collections::BTreeMap<String, Tensor>) -> Result<()> {
        let bad = |message: String| crate::Error::invalid("optimiser state", message);
        for (key, t) in state {
            let name = key
                .strip_prefix("momentum.")
                .ok_or_else(|| bad(format!("unexpected {key}")))?;
            let found = self.names.iter().position(|n| n == name);
            let i = found.ok_or_else(|| bad(format!("no parameter {name}")))?;
            let shape = self.params[i].size();
            if t.size() != shape {
                let got = t.size();
                return Err(bad(format!("{name} has {got:?}, parameter has {shape:?}")));
            }
            self.buffers[i] = Some(
                t.to_device(self.params[i].device())
                    .to_kind(self.params[i].kind()),
            );
        }
        Ok(())
    }
}

/// The L2 norm of the defined tensors of `grads` together.
fn global_norm(grads: &[Tensor]) -> f64 {
    grads
        .iter()
        .filter(|g| g.defined())
        .map(|g| g.square().sum(tch::Kind::Double).double_value(&[]))
        .sum::<f64>()
        .sqrt()
}
