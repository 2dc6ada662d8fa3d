//! The model zoo: MobileNetV2, ResNet-18 and WideResNet for CIFAR, each a
//! function from a var-store path to `impl ModuleT`, with PyTorch's parameter
//! names so checkpoints move both ways.

mod arch;
mod layers;
pub mod mobilenet_v2;
pub mod resnet18;
pub mod wide_resnet;

pub use arch::Arch;

use crate::checkpoint;
use crate::error::Result;
use std::path::Path;
use tch::{nn, nn::ModuleT, Device, Kind, Tensor};

/// CIFAR-10.
pub const NUM_CLASSES: i64 = 10;

/// A network of the zoo.
pub trait Net: ModuleT {
    /// Merges every BatchNorm that directly follows a convolution into it
    /// ([`layers::ConvBn::fold`]); the network then runs in eval mode only.
    fn fold_batch_norm(&mut self);
}

/// A model with its own variables: what each stage owns.
#[derive(Debug)]
pub struct Model {
    pub arch: Arch,
    pub vs: nn::VarStore,
    net: Box<dyn Net>,
    /// BatchNorm folded into the convolutions ([`Model::fold_batch_norm`]).
    folded: bool,
    /// Inputs go to the network in channels-last format ([`Model::use_channels_last`]).
    channels_last: bool,
    /// Type the network computes in ([`Model::use_compute_kind`]); f32 by default.
    compute: Kind,
}

impl Model {
    /// A freshly initialised model (seed libtorch with `tch::manual_seed` first
    /// for a reproducible init).
    pub fn new(arch: Arch, device: Device) -> Model {
        let vs = nn::VarStore::new(device);
        let root = vs.root();
        let net: Box<dyn Net> = match arch {
            Arch::MobileNetV2 { width } => {
                Box::new(mobilenet_v2::mobilenet_v2(&root, NUM_CLASSES, width))
            }
            Arch::ResNet18 => Box::new(resnet18::resnet18(&root, NUM_CLASSES)),
            Arch::Wrn { depth, widen } => {
                Box::new(wide_resnet::wide_resnet(&root, NUM_CLASSES, depth, widen))
            }
        };
        Model {
            arch,
            vs,
            net,
            folded: false,
            channels_last: false,
            compute: Kind::Float,
        }
    }

    /// A model with weights from a safetensors checkpoint.
    pub fn load(arch: Arch, device: Device, path: &Path) -> Result<Model> {
        let mut model = Model::new(arch, device);
        checkpoint::load_into(&mut model.vs, path, &arch.to_string())?;
        Ok(model)
    }

    /// Logits for `x` ([B, 3, 32, 32] in [0, 1], f32) as f32 [B, classes];
    /// `train` selects BatchNorm's batch statistics (and updates its running
    /// statistics). A channels-last or bf16 model converts `x` on the way in
    /// and the logits on the way out; gradients flow through both casts.
    pub fn forward_t(&self, x: &Tensor, train: bool) -> Tensor {
        assert!(
            !(train && self.folded),
            "a model with BatchNorm folded in runs in eval mode only"
        );
        let x = if self.channels_last {
            to_channels_last(x)
        } else {
            x.shallow_clone()
        };
        if self.compute == Kind::Float {
            self.net.forward_t(&x, train)
        } else {
            self.net
                .forward_t(&x.to_kind(self.compute), train)
                .to_kind(Kind::Float)
        }
    }

    /// Stores every 4-d weight (the convolutions) channels-last — NCHW shape
    /// with NHWC strides, which oneDNN's convolutions prefer — and makes
    /// [`Model::forward_t`] convert its input the same way. Values, names and
    /// checkpoints are unchanged (saving writes contiguous NCHW); copies into
    /// these variables (`copy_`) keep the format.
    pub fn use_channels_last(&mut self) {
        assert!(!self.folded, "channels-last goes before folding");
        tch::no_grad(|| {
            for (_, mut var) in self.vs.variables() {
                if var.dim() == 4 {
                    let nhwc = to_channels_last(&var.detach());
                    var.set_data(&nhwc);
                }
            }
        });
        self.channels_last = true;
    }

    /// Computes in `kind` (e.g. bf16): every variable except BatchNorm's
    /// (weight, bias, running statistics: they stay f32, which libtorch's
    /// mixed-type BatchNorm accepts) is converted, inputs are cast to `kind`
    /// and logits back to f32. Meant for a replica that only runs attacks:
    /// copying f32 weights in (`copy_`) rounds them to `kind`.
    pub fn use_compute_kind(&mut self, kind: Kind) {
        assert!(!self.folded, "the compute type goes before folding");
        let vars = self.vs.variables();
        let batch_norms: Vec<&str> = vars
            .keys()
            .filter_map(|n| n.strip_suffix(".running_mean"))
            .collect();
        let is_batch_norm = |name: &str| {
            name.rsplit_once('.')
                .is_some_and(|(prefix, _)| batch_norms.contains(&prefix))
        };
        tch::no_grad(|| {
            for (name, var) in &vars {
                if !is_batch_norm(name) && var.kind() != kind {
                    let converted = var.detach().to_kind(kind);
                    var.shallow_clone().set_data(&converted);
                }
            }
        });
        self.compute = kind;
    }

    /// Folds BatchNorm into the convolutions it follows, for a model that
    /// only evaluates and attacks (eval-mode forwards): the same function to
    /// float rounding, without BatchNorm's passes over the activations (about
    /// 1.5x faster forward and backward for MobileNetV2 on a CPU). Call it
    /// after [`Model::use_channels_last`]. The variables are unchanged, so
    /// [`Model::save`] writes the original weights; [`Model::copy_weights_from`]
    /// is refused (the folded copies would go stale).
    pub fn fold_batch_norm(&mut self) {
        self.net.fold_batch_norm();
        self.folded = true;
    }

    /// Saves the weights (and BatchNorm statistics) as safetensors, atomically.
    pub fn save(&self, path: &Path) -> Result<()> {
        checkpoint::save(&self.vs, path)
    }

    /// Number of trainable parameters (WRN counts its unused `sub_block1`, as the checkpoint does).
    pub fn num_parameters(&self) -> i64 {
        self.vs
            .trainable_variables()
            .iter()
            .map(|t| t.numel() as i64)
            .sum()
    }

    /// Overwrites this model's variables with `other`'s (same architecture).
    pub fn copy_weights_from(&mut self, other: &Model) -> Result<()> {
        if self.folded {
            return Err(crate::Error::invalid(
                "model",
                "cannot copy weights into a model with BatchNorm folded in",
            ));
        }
        Ok(self.vs.copy(&other.vs)?)
    }

    pub fn device(&self) -> Device {
        self.vs.device()
    }
}

/// `x` [N, C, H, W] with channels-last (NHWC) strides and the same shape and
/// values: tch 0.26 has no memory-format argument, so a permute to NHWC, a
/// contiguous copy, and a permute back.
pub fn to_channels_last(x: &Tensor) -> Tensor {
    if x.dim() != 4 {
        return x.shallow_clone();
    }
    x.permute([0, 2, 3, 1]).contiguous().permute([0, 3, 1, 2])
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A fresh model of `arch` whose BatchNorms hold random statistics and
    /// affine parameters (folding the defaults would be close to a no-op).
    fn model_with_random_norms(arch: Arch) -> Model {
        let model = Model::new(arch, Device::Cpu);
        tch::no_grad(|| {
            for (name, mut v) in model.vs.variables() {
                if name.ends_with("running_var") || name.ends_with("bn1.weight") {
                    v.copy_(&(Tensor::rand_like(&v) + 0.5));
                } else if name.ends_with("running_mean") || name.contains("bn2") {
                    v.copy_(&(Tensor::rand_like(&v) - 0.5));
                }
            }
        });
        model
    }

    /// Logits and the input gradient of the summed logits' cross-entropy.
    fn logits_and_gradient(model: &Model, x: &Tensor) -> (Tensor, Tensor) {
        let x = x.detach().set_requires_grad(true);
        let logits = model.forward_t(&x, false);
        let y = Tensor::from_slice(&[1i64, 7, 3, 0]);
        let loss = logits.cross_entropy_for_logits(&y);
        let g = Tensor::run_backward(&[&loss], &[&x], false, false).remove(0);
        (logits.detach(), g)
    }

    fn relative(a: &Tensor, b: &Tensor) -> f64 {
        let scale = a.abs().max().double_value(&[]).max(1e-12);
        (a - b).abs().max().double_value(&[]) / scale
    }

    #[test]
    fn folded_models_compute_the_same_logits_and_input_gradients() {
        let x = Tensor::rand([4, 3, 32, 32], (Kind::Float, Device::Cpu));
        for arch in ["mobilenet_v2_x0.5", "resnet18", "wrn16_2"] {
            let arch: Arch = arch.parse().unwrap();
            let plain = model_with_random_norms(arch);
            let (want, want_g) = logits_and_gradient(&plain, &x);
            for channels_last in [false, true] {
                // (Tests share libtorch's generator: copy, never re-draw.)
                let mut folded = Model::new(arch, Device::Cpu);
                folded.copy_weights_from(&plain).unwrap();
                if channels_last {
                    folded.use_channels_last();
                }
                folded.fold_batch_norm();
                let (got, got_g) = logits_and_gradient(&folded, &x);
                let (dl, dg) = (relative(&want, &got), relative(&want_g, &got_g));
                // Rounding grows through the backward pass (up to 7e-3 seen).
                assert!(dl < 1e-4 && dg < 2e-2, "{arch} {channels_last}: {dl} {dg}");
            }
        }
    }

    #[test]
    fn folding_leaves_the_variables_and_refuses_weight_copies() {
        let arch: Arch = "mobilenet_v2_x0.5".parse().unwrap();
        let plain = model_with_random_norms(arch);
        let mut folded = Model::new(arch, Device::Cpu);
        folded.copy_weights_from(&plain).unwrap();
        folded.fold_batch_norm();
        for (name, v) in plain.vs.variables() {
            assert!(v.equal(&folded.vs.variables()[&name]), "{name} changed");
        }
        let e = folded.copy_weights_from(&plain).unwrap_err().to_string();
        assert!(e.contains("folded"), "{e}");
    }

    #[test]
    #[should_panic(expected = "eval mode only")]
    fn a_folded_model_refuses_train_mode() {
        let mut m = Model::new("mobilenet_v2_x0.5".parse().unwrap(), Device::Cpu);
        m.fold_batch_norm();
        let _ = m.forward_t(
            &Tensor::rand([2, 3, 32, 32], (Kind::Float, Device::Cpu)),
            true,
        );
    }
}
