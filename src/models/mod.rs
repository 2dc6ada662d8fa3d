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
use tch::{nn, nn::ModuleT, Device, Tensor};

/// CIFAR-10.
pub const NUM_CLASSES: i64 = 10;

/// A model with its own variables: what each stage owns.
#[derive(Debug)]
pub struct Model {
    pub arch: Arch,
    pub vs: nn::VarStore,
    net: Box<dyn ModuleT>,
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
        Model { arch, vs, net }
    }

    /// A model with weights from a safetensors checkpoint.
    pub fn load(arch: Arch, device: Device, path: &Path) -> Result<Model> {
        let mut model = Model::new(arch, device);
        checkpoint::load_into(&mut model.vs, path, &arch.to_string())?;
        Ok(model)
    }

    /// Logits for `x` ([B, 3, 32, 32] in [0, 1]); `train` selects BatchNorm's
    /// batch statistics (and updates its running statistics).
    pub fn forward_t(&self, x: &Tensor, train: bool) -> Tensor {
        self.net.forward_t(x, train)
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
        self.vs.copy(&other.vs)?;
        Ok(())
    }

    pub fn device(&self) -> Device {
        self.vs.device()
    }
}
