//! WideResNet-depth-k with the parameter names of the TRADES reference code
//! (`block1.layer.0.bn1`, `convShortcut`, `fc`), so the public TRADES
//! checkpoint loads after conversion. `sub_block1` exists in that checkpoint
//! but not in its forward pass: it is created here (so checkpoints round-trip)
//! and never used.

use super::layers::{avg_pool, bn, conv, conv_bn, ConvBn};
use super::Net;
use tch::{nn, nn::ModuleT, Tensor};

#[derive(Debug)]
struct BasicBlock {
    /// Pre-activation of the block's input (after a residual sum: not foldable).
    bn1: nn::BatchNorm,
    /// conv1 and bn2.
    first: ConvBn,
    conv2: nn::Conv2D,
    /// Present when input and output channels differ.
    conv_shortcut: Option<nn::Conv2D>,
}

impl BasicBlock {
    fn new(p: nn::Path, c_in: i64, c_out: i64, stride: i64) -> Self {
        BasicBlock {
            bn1: bn(&p / "bn1", c_in),
            first: conv_bn(&p / "conv1", &p / "bn2", c_in, c_out, 3, stride),
            conv2: conv(&p / "conv2", c_out, c_out, 3, 1),
            conv_shortcut: (c_in != c_out)
                .then(|| conv(&p / "convShortcut", c_in, c_out, 1, stride)),
        }
    }
}

impl ModuleT for BasicBlock {
    fn forward_t(&self, x: &Tensor, train: bool) -> Tensor {
        let pre = x.apply_t(&self.bn1, train).relu();
        let out = pre.apply_t(&self.first, train).relu().apply(&self.conv2);
        match &self.conv_shortcut {
            // TRADES: when channels change, the shortcut sees the pre-activated input.
            Some(c) => pre.apply(c) + out,
            None => x + out,
        }
    }
}

fn network_block(p: nn::Path, n: usize, c_in: i64, c_out: i64, stride: i64) -> Vec<BasicBlock> {
    (0..n)
        .map(|i| {
            let (c, s) = if i == 0 { (c_in, stride) } else { (c_out, 1) };
            BasicBlock::new(&p / "layer" / i, c, c_out, s)
        })
        .collect()
}

/// WideResNet-depth-widen for CIFAR.
#[derive(Debug)]
pub struct WideResNet {
    conv1: nn::Conv2D,
    blocks: Vec<BasicBlock>,
    bn1: nn::BatchNorm,
    fc: nn::Linear,
}

/// Builds WRN-`depth`-`widen` under `p` (depth = 6n + 4).
pub fn wide_resnet(p: &nn::Path, num_classes: i64, depth: usize, widen: usize) -> WideResNet {
    let n = (depth - 4) / 6;
    let k = widen as i64;
    let ch = [16, 16 * k, 32 * k, 64 * k];
    let mut blocks = network_block(p / "block1", n, ch[0], ch[1], 1);
    // Kept only for checkpoint compatibility with TRADES.
    let _unused = network_block(p / "sub_block1", n, ch[0], ch[1], 1);
    blocks.extend(network_block(p / "block2", n, ch[1], ch[2], 2));
    blocks.extend(network_block(p / "block3", n, ch[2], ch[3], 2));
    WideResNet {
        conv1: conv(p / "conv1", 3, ch[0], 3, 1),
        blocks,
        bn1: bn(p / "bn1", ch[3]),
        fc: nn::linear(p / "fc", ch[3], num_classes, Default::default()),
    }
}

impl ModuleT for WideResNet {
    /// `x`: [B, 3, 32, 32] in [0, 1] → logits [B, classes].
    fn forward_t(&self, x: &Tensor, train: bool) -> Tensor {
        let mut out = x.apply(&self.conv1);
        for block in &self.blocks {
            out = block.forward_t(&out, train);
        }
        avg_pool(&out.apply_t(&self.bn1, train).relu(), 8)
            .flatten(1, -1)
            .apply(&self.fc)
    }
}

impl Net for WideResNet {
    /// Folds each block's bn2 into its conv1; the pre-activation BatchNorms
    /// (each block's bn1 and the last bn1) follow a residual sum and stay.
    fn fold_batch_norm(&mut self) {
        for block in &mut self.blocks {
            block.first.fold();
        }
    }
}
