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

/// A model with its own variables: what each stage owns.
#[derive(Debug)]
pub struct Model {
    pub arch: Arch,
    pub vs: nn::VarStore,
    net: Box<dyn ModuleT>,
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
        let net: Box<dyn ModuleT> = match arch {
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
