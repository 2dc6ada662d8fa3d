//! Small building blocks shared by the zoo: bias-free convolutions, BatchNorm
//! with PyTorch's defaults, and a convolution followed by BatchNorm that an
//! inference-only model merges into one biased convolution.

use tch::{nn, nn::ModuleT, Kind, Tensor};

/// BatchNorm's eps (PyTorch's default), used by [`bn`] and by folding.
const BN_EPS: f64 = 1e-5;

/// Conv2d without bias (every conv in the zoo), `k`x`k` with padding `k / 2`.
pub fn conv(p: nn::Path, c_in: i64, c_out: i64, k: i64, stride: i64) -> nn::Conv2D {
    grouped_conv(p, c_in, c_out, k, stride, 1)
}

/// A depthwise 3x3 convolution of `c` channels (groups = c), without bias.
pub fn depthwise(p: nn::Path, c: i64, stride: i64) -> nn::Conv2D {
    grouped_conv(p, c, c, 3, stride, c)
}

fn grouped_conv(
    p: nn::Path,
    c_in: i64,
    c_out: i64,
    k: i64,
    stride: i64,
    groups: i64,
) -> nn::Conv2D {
    let cfg = nn::ConvConfig {
        stride,
        padding: k / 2,
        groups,
        bias: false,
        ..Default::default()
    };
    nn::conv2d(p, c_in, c_out, k, cfg)
}

/// BatchNorm2d with eps 1e-5 and momentum 0.1, as PyTorch.
pub fn bn(p: nn::Path, c: i64) -> nn::BatchNorm {
    nn::batch_norm2d(
        p,
        c,
        nn::BatchNormConfig {
            eps: BN_EPS,
            ..Default::default()
        },
    )
}

/// A bias-free convolution and the BatchNorm right after it, as one layer.
/// Once [`ConvBn::fold`]ed it runs as a single convolution with weights
/// scaled per output channel and a bias — the same function in eval mode to
/// float rounding, without BatchNorm's passes over the activations (forward
/// and backward). Folding gives the convolution new weight and bias tensors:
/// the variables in the var store are left as they were.
#[derive(Debug)]
pub struct ConvBn {
    conv: nn::Conv2D,
    bn: nn::BatchNorm,
    folded: bool,
}

impl ConvBn {
    /// `conv` (bias-free) followed by `bn`.
    pub fn new(conv: nn::Conv2D, bn: nn::BatchNorm) -> ConvBn {
        ConvBn {
            conv,
            bn,
            folded: false,
        }
    }

    /// Merges BatchNorm's running statistics and affine parameters into the
    /// convolution: w' = w * g / sqrt(var + eps), b' = beta - mean * g /
    /// sqrt(var + eps), computed in f64 and stored in the weights' type and
    /// memory format. Valid for eval-mode forwards only.
    pub fn fold(&mut self) {
        if self.folded {
            return;
        }
        let (w, b) = tch::no_grad(|| {
            let f64 = |t: &Tensor| t.detach().to_kind(Kind::Double);
            let gamma = self.bn.ws.as_ref().map_or_else(
                || Tensor::ones_like(&self.bn.running_var).to_kind(Kind::Double),
                f64,
            );
            let beta = self.bn.bs.as_ref().map_or_else(
                || Tensor::zeros_like(&self.bn.running_mean).to_kind(Kind::Double),
                f64,
            );
            let scale = gamma / (f64(&self.bn.running_var) + BN_EPS).sqrt();
            let ws = &self.conv.ws;
            // empty_like keeps the weights' strides: channels-last stays so.
            let mut w = ws.empty_like();
            w.copy_(&(f64(ws) * scale.view([-1, 1, 1, 1])));
            let b = (beta - f64(&self.bn.running_mean) * scale).to_kind(ws.kind());
            (w, b)
        });
        self.conv.ws = w;
        self.conv.bs = Some(b);
        self.folded = true;
    }
}

impl ModuleT for ConvBn {
    fn forward_t(&self, x: &Tensor, train: bool) -> Tensor {
        if self.folded {
            x.apply(&self.conv)
        } else {
            x.apply(&self.conv).apply_t(&self.bn, train)
        }
    }
}

/// [`conv`] followed by [`bn`] of its output channels.
pub fn conv_bn(pc: nn::Path, pb: nn::Path, c_in: i64, c_out: i64, k: i64, stride: i64) -> ConvBn {
    ConvBn::new(conv(pc, c_in, c_out, k, stride), bn(pb, c_out))
}

/// [`depthwise`] followed by [`bn`].
pub fn depthwise_bn(pc: nn::Path, pb: nn::Path, c: i64, stride: i64) -> ConvBn {
    ConvBn::new(depthwise(pc, c, stride), bn(pb, c))
}

/// Average pooling with a `k`x`k` window and stride `k`, as `F.avg_pool2d(x, k)`.
/// (tch's `avg_pool2d_default` passes a divisor override of 1, i.e. sums.)
pub fn avg_pool(x: &tch::Tensor, k: i64) -> tch::Tensor {
    x.avg_pool2d([k, k], [k, k], [0, 0], false, true, None::<i64>)
}
