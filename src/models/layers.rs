//! Small building blocks shared by the zoo: bias-free convolutions and BatchNorm
//! with PyTorch's defaults.

use tch::nn;

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
    nn::batch_norm2d(p, c, Default::default())
}

/// Average pooling with a `k`x`k` window and stride `k`, as `F.avg_pool2d(x, k)`.
/// (tch's `avg_pool2d_default` passes a divisor override of 1, i.e. sums.)
pub fn avg_pool(x: &tch::Tensor, k: i64) -> tch::Tensor {
    x.avg_pool2d([k, k], [k, k], [0, 0], false, true, None::<i64>)
}
