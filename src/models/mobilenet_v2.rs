//! MobileNetV2 for 32x32 inputs (the usual CIFAR variant: 3x3 stem of stride 1,
//! second stage of stride 1, 1280-channel head, 4x4 average pool), with
//! parameter names of the widely used PyTorch definition (`conv1`, `bn1`,
//! `layers.N.conv1..3`, `layers.N.shortcut.{0,1}`, `conv2`, `bn2`, `linear`).

use super::layers::{avg_pool, conv_bn, depthwise_bn, ConvBn};
use super::Net;
use tch::{nn, nn::ModuleT, Tensor};

/// (expansion, output channels, blocks, first stride) per stage.
pub const STAGES: [(i64, i64, usize, i64); 7] = [
    (1, 16, 1, 1),
    (6, 24, 2, 1),
    (6, 32, 3, 2),
    (6, 64, 4, 2),
    (6, 96, 3, 1),
    (6, 160, 3, 2),
    (6, 320, 1, 1),
];

/// Rounds `channels * width` to a multiple of 8, never below 90% of it (as torchvision).
pub fn scaled(channels: i64, width: f64) -> i64 {
    let v = channels as f64 * width;
    let rounded = (((v + 4.0) / 8.0).floor() * 8.0).max(8.0);
    (if rounded < 0.9 * v {
        rounded + 8.0
    } else {
        rounded
    }) as i64
}

#[derive(Debug)]
struct Block {
    /// conv1 and bn1: the 1x1 expansion.
    expand: ConvBn,
    /// conv2 and bn2: the depthwise 3x3.
    depthwise: ConvBn,
    /// conv3 and bn3: the 1x1 projection.
    project: ConvBn,
    /// None: identity (or no residual when strided).
    shortcut: Option<ConvBn>,
    residual: bool,
}

impl Block {
    fn new(p: nn::Path, c_in: i64, c_out: i64, expansion: i64, stride: i64) -> Self {
        let planes = expansion * c_in;
        let shortcut = (stride == 1 && c_in != c_out).then(|| {
            let s = &p / "shortcut";
            conv_bn(&s / "0", &s / "1", c_in, c_out, 1, 1)
        });
        Block {
            expand: conv_bn(&p / "conv1", &p / "bn1", c_in, planes, 1, 1),
            depthwise: depthwise_bn(&p / "conv2", &p / "bn2", planes, stride),
            project: conv_bn(&p / "conv3", &p / "bn3", planes, c_out, 1, 1),
            shortcut,
            residual: stride == 1,
        }
    }

    fn fold_batch_norm(&mut self) {
        self.expand.fold();
        self.depthwise.fold();
        self.project.fold();
        if let Some(s) = &mut self.shortcut {
            s.fold();
        }
    }
}

impl ModuleT for Block {
    fn forward_t(&self, x: &Tensor, train: bool) -> Tensor {
        let out = x.apply_t(&self.expand, train).relu();
        let out = out.apply_t(&self.depthwise, train).relu();
        let out = out.apply_t(&self.project, train);
        match (&self.shortcut, self.residual) {
            (Some(s), _) => out + x.apply_t(s, train),
            (None, true) => out + x,
            (None, false) => out,
        }
    }
}

/// MobileNetV2 for CIFAR.
#[derive(Debug)]
pub struct MobileNetV2 {
    /// conv1 and bn1.
    stem: ConvBn,
    layers: Vec<Block>,
    /// conv2 and bn2: the 1x1 to the head's channels.
    head: ConvBn,
    linear: nn::Linear,
}

/// Builds MobileNetV2 under `p`; `width` scales every channel count (1.0: 2,296,922
/// parameters for 10 classes).
pub fn mobilenet_v2(p: &nn::Path, num_classes: i64, width: f64) -> MobileNetV2 {
    let stem = scaled(32, width);
    let head = scaled(1280, width.max(1.0));
    let mut c_in = stem;
    let mut layers = Vec::new();
    for &(expansion, c_out, blocks, stride) in &STAGES {
        let c_out = scaled(c_out, width);
        for b in 0..blocks {
            let stride = if b == 0 { stride } else { 1 };
            layers.push(Block::new(
                p / "layers" / layers.len(),
                c_in,
                c_out,
                expansion,
                stride,
            ));
            c_in = c_out;
        }
    }
    MobileNetV2 {
        stem: conv_bn(p / "conv1", p / "bn1", 3, stem, 3, 1),
        layers,
        head: conv_bn(p / "conv2", p / "bn2", c_in, head, 1, 1),
        linear: nn::linear(p / "linear", head, num_classes, Default::default()),
    }
}

impl ModuleT for MobileNetV2 {
    /// `x`: [B, 3, 32, 32] in [0, 1] → logits [B, classes].
    fn forward_t(&self, x: &Tensor, train: bool) -> Tensor {
        let mut out = x.apply_t(&self.stem, train).relu();
        for layer in &self.layers {
            out = layer.forward_t(&out, train);
        }
        let out = out.apply_t(&self.head, train).relu();
        avg_pool(&out, 4).flatten(1, -1).apply(&self.linear)
    }
}

impl Net for MobileNetV2 {
    fn fold_batch_norm(&mut self) {
        self.stem.fold();
        self.layers.iter_mut().for_each(Block::fold_batch_norm);
        self.head.fold();
    }
}
