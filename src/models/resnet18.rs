//! ResNet-18 for 32x32 inputs (3x3 stem, no max-pool, 4x4 average pool), with
//! the parameter names of the widely used PyTorch definition (`conv1`, `bn1`,
//! `layer1.0.conv1`, `layer2.0.shortcut.{0,1}`, `linear`).

use super::layers::{avg_pool, conv_bn, ConvBn};
use super::Net;
use tch::{nn, nn::ModuleT, Tensor};

#[derive(Debug)]
struct BasicBlock {
    /// conv1 and bn1.
    first: ConvBn,
    /// conv2 and bn2.
    second: ConvBn,
    shortcut: Option<ConvBn>,
}

impl BasicBlock {
    fn new(p: nn::Path, c_in: i64, c_out: i64, stride: i64) -> Self {
        let shortcut = (stride != 1 || c_in != c_out).then(|| {
            let s = &p / "shortcut";
            conv_bn(&s / "0", &s / "1", c_in, c_out, 1, stride)
        });
        BasicBlock {
            first: conv_bn(&p / "conv1", &p / "bn1", c_in, c_out, 3, stride),
            second: conv_bn(&p / "conv2", &p / "bn2", c_out, c_out, 3, 1),
            shortcut,
        }
    }

    fn fold_batch_norm(&mut self) {
        self.first.fold();
        self.second.fold();
        if let Some(s) = &mut self.shortcut {
            s.fold();
        }
    }
}

impl ModuleT for BasicBlock {
    fn forward_t(&self, x: &Tensor, train: bool) -> Tensor {
        let out = x.apply_t(&self.first, train).relu();
        let out = out.apply_t(&self.second, train);
        let skip = match &self.shortcut {
            Some(s) => x.apply_t(s, train),
            None => x.shallow_clone(),
        };
        (out + skip).relu()
    }
}

/// ResNet-18 for CIFAR (11,173,962 parameters for 10 classes).
#[derive(Debug)]
pub struct ResNet18 {
    /// conv1 and bn1.
    stem: ConvBn,
    blocks: Vec<BasicBlock>,
    linear: nn::Linear,
}

/// Builds ResNet-18 under `p`.
pub fn resnet18(p: &nn::Path, num_classes: i64) -> ResNet18 {
    let mut blocks = Vec::new();
    let mut c_in = 64;
    for (stage, (c_out, stride)) in [(64, 1), (128, 2), (256, 2), (512, 2)]
        .into_iter()
        .enumerate()
    {
        for b in 0..2 {
            let path = p / format!("layer{}", stage + 1) / b;
            blocks.push(BasicBlock::new(
                path,
                c_in,
                c_out,
                if b == 0 { stride } else { 1 },
            ));
            c_in = c_out;
        }
    }
    ResNet18 {
        stem: conv_bn(p / "conv1", p / "bn1", 3, 64, 3, 1),
        blocks,
        linear: nn::linear(p / "linear", 512, num_classes, Default::default()),
    }
}

impl ModuleT for ResNet18 {
    /// `x`: [B, 3, 32, 32] in [0, 1] → logits [B, classes].
    fn forward_t(&self, x: &Tensor, train: bool) -> Tensor {
        let mut out = x.apply_t(&self.stem, train).relu();
        for block in &self.blocks {
            out = block.forward_t(&out, train);
        }
        avg_pool(&out, 4).flatten(1, -1).apply(&self.linear)
    }
}

impl Net for ResNet18 {
    fn fold_batch_norm(&mut self) {
        self.stem.fold();
        self.blocks.iter_mut().for_each(BasicBlock::fold_batch_norm);
    }
}
