//! Edge numbers of a model: parameters, multiply-accumulates (MACs) per
//! 32x32 image, and inference latency on the machine at hand.
//!
//! MACs count convolutions and linear layers only (BatchNorm folds into the
//! preceding convolution at deployment; ReLU, pooling and additions are
//! negligible), from a layer inventory written for each architecture of the
//! zoo ([`layers`]). Each inventory names its layers with the model's own
//! parameter names, so a unit test checks every layer's weight shape against
//! the model's variables, and a parity test checks every layer's MACs against
//! forward hooks on the PyTorch reference models.
//!
//! Latency is the median wall time of a forward pass (BatchNorm in eval mode,
//! no graph) after warm-up, per batch size (1 and 128 by default), with the
//! libtorch threads in force; CUDA is synchronised before each clock reading.

use crate::attacks::noise::{self, NoiseKey};
use crate::error::{Error, Result};
use crate::models::mobilenet_v2::{scaled, STAGES};
use crate::models::{Arch, Model, NUM_CLASSES};
use serde::{Deserialize, Serialize};
use std::time::Instant;
use tch::{Device, Kind, Tensor};

/// Input side of the zoo's models (CIFAR-10).
pub const IMAGE_SIZE: i64 = 32;

/// One layer that the forward pass uses, with its cost for one image.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct LayerCost {
    /// The layer's parameter prefix (`block1.layer.0.conv1`), as in checkpoints.
    pub name: String,
    /// Shape of the layer's `weight`.
    pub weight_shape: Vec<i64>,
    /// Trainable parameters (weight and bias).
    pub params: u64,
    /// Multiply-accumulates for one image (0 for BatchNorm).
    pub macs: u64,
}

/// Builds an inventory while walking an architecture.
struct Inventory {
    layers: Vec<LayerCost>,
}

impl Inventory {
    /// A bias-free k x k convolution with padding k/2 from `c_in` channels
    /// per group to `c_out`; returns the output side.
    fn conv(
        &mut self,
        name: String,
        (c_in, c_out): (i64, i64),
        k: i64,
        stride: i64,
        side: i64,
    ) -> i64 {
        let out = (side + 2 * (k / 2) - k) / stride + 1;
        let weight = c_out * c_in * k * k;
        self.layers.push(LayerCost {
            name,
            weight_shape: vec![c_out, c_in, k, k],
            params: weight as u64,
            macs: (weight * out * out) as u64,
        });
        out
    }

    /// A depthwise 3x3 convolution of `c` channels (groups = c: one input
    /// channel per group).
    fn depthwise(&mut self, name: String, c: i64, stride: i64, side: i64) -> i64 {
        self.conv(name, (1, c), 3, stride, side)
    }

    fn bn(&mut self, name: String, c: i64) {
        self.layers.push(LayerCost {
            name,
            weight_shape: vec![c],
            params: 2 * c as u64,
            macs: 0,
        });
    }

    fn linear(&mut self, name: String, c_in: i64, c_out: i64) {
        self.layers.push(LayerCost {
            name,
            weight_shape: vec![c_out, c_in],
            params: (c_in * c_out + c_out) as u64,
            macs: (c_in * c_out) as u64,
        });
    }
}

/// The layers the forward pass of `arch` uses on one 32x32 image, in order.
pub fn layers(arch: Arch) -> Vec<LayerCost> {
    let mut inv = Inventory { layers: Vec::new() };
    let s = IMAGE_SIZE;
    match arch {
        Arch::Wrn { depth, widen } => {
            let n = (depth.saturating_sub(4) / 6).max(1);
            let k = widen as i64;
            let ch = [16, 16 * k, 32 * k, 64 * k];
            let mut side = inv.conv("conv1".into(), (3, ch[0]), 3, 1, s);
            let mut c_in = ch[0];
            for (block, c_out, stride) in [
                ("block1", ch[1], 1),
                ("block2", ch[2], 2),
                ("block3", ch[3], 2),
            ] {
                for i in 0..n {
                    let (c, st) = if i == 0 { (c_in, stride) } else { (c_out, 1) };
                    let p = format!("{block}.layer.{i}");
                    inv.bn(format!("{p}.bn1"), c);
                    let out = inv.conv(format!("{p}.conv1"), (c, c_out), 3, st, side);
                    inv.bn(format!("{p}.bn2"), c_out);
                    inv.conv(format!("{p}.conv2"), (c_out, c_out), 3, 1, out);
                    if c != c_out {
                        inv.conv(format!("{p}.convShortcut"), (c, c_out), 1, st, side);
                    }
                    side = out;
                }
                c_in = c_out;
            }
            inv.bn("bn1".into(), ch[3]);
            inv.linear("fc".into(), ch[3], NUM_CLASSES);
        }
        Arch::ResNet18 => {
            let mut side = inv.conv("conv1".into(), (3, 64), 3, 1, s);
            inv.bn("bn1".into(), 64);
            let mut c_in = 64;
            for (stage, (c_out, stride)) in [(64, 1), (128, 2), (256, 2), (512, 2)]
                .into_iter()
                .enumerate()
            {
                for b in 0..2 {
                    let st = if b == 0 { stride } else { 1 };
                    let p = format!("layer{}.{b}", stage + 1);
                    let out = inv.conv(format!("{p}.conv1"), (c_in, c_out), 3, st, side);
                    inv.bn(format!("{p}.bn1"), c_out);
                    inv.conv(format!("{p}.conv2"), (c_out, c_out), 3, 1, out);
                    inv.bn(format!("{p}.bn2"), c_out);
                    if st != 1 || c_in != c_out {
                        inv.conv(format!("{p}.shortcut.0"), (c_in, c_out), 1, st, side);
                        inv.bn(format!("{p}.shortcut.1"), c_out);
                    }
                    side = out;
                    c_in = c_out;
                }
            }
            inv.linear("linear".into(), 512, NUM_CLASSES);
        }
        Arch::MobileNetV2 { width } => {
            let stem = scaled(32, width);
            let head = scaled(1280, width.max(1.0));
            let mut side = inv.conv("conv1".into(), (3, stem), 3, 1, s);
            inv.bn("bn1".into(), stem);
            let mut c_in = stem;
            let mut index = 0;
            for (expansion, c_out, blocks, stride) in STAGES {
                let c_out = scaled(c_out, width);
                for b in 0..blocks {
                    let st = if b == 0 { stride } else { 1 };
                    let planes = expansion * c_in;
                    let p = format!("layers.{index}");
                    inv.conv(format!("{p}.conv1"), (c_in, planes), 1, 1, side);
                    inv.bn(format!("{p}.bn1"), planes);
                    let out = inv.depthwise(format!("{p}.conv2"), planes, st, side);
                    inv.bn(format!("{p}.bn2"), planes);
                    inv.conv(format!("{p}.conv3"), (planes, c_out), 1, 1, out);
                    inv.bn(format!("{p}.bn3"), c_out);
                    if st == 1 && c_in != c_out {
                        inv.conv(format!("{p}.shortcut.0"), (c_in, c_out), 1, 1, side);
                        inv.bn(format!("{p}.shortcut.1"), c_out);
                    }
                    side = out;
                    c_in = c_out;
                    index += 1;
                }
            }
            inv.conv("conv2".into(), (c_in, head), 1, 1, side);
            inv.bn("bn2".into(), head);
            inv.linear("linear".into(), head, NUM_CLASSES);
        }
    }
    inv.layers
}

/// MACs of one 32x32 image through `arch`.
pub fn macs_per_image(arch: Arch) -> u64 {
    layers(arch).iter().map(|l| l.macs).sum()
}

/// Parameters the forward pass of `arch` uses (WRN's `sub_block1` is stored
/// but unused, so this is less than [`Model::num_parameters`] there).
pub fn parameters_in_forward(arch: Arch) -> u64 {
    layers(arch).iter().map(|l| l.params).sum()
}

/// How to measure latency.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct LatencyOptions {
    pub batch_sizes: Vec<usize>,
    /// Untimed forward passes first, per batch size (fewer once they take a
    /// quarter of the budget).
    pub warmup: usize,
    /// Timed forward passes per batch size (at most).
    pub runs: usize,
    /// Stop timing a batch size after this many seconds, once 3 runs are in.
    pub budget_s: f64,
}

impl Default for LatencyOptions {
    fn default() -> Self {
        Self {
            batch_sizes: vec![1, 128],
            warmup: 2,
            runs: 20,
            budget_s: 60.0,
        }
    }
}

/// Latency of one batch size.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Latency {
    pub batch: usize,
    /// Timed runs.
    pub runs: usize,
    pub median_ms: f64,
    pub min_ms: f64,
    /// `median_ms / batch`.
    pub per_image_ms: f64,
    /// `batch / median`.
    pub images_per_s: f64,
}

/// The edge numbers of a model.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct EdgeReport {
    pub arch: String,
    /// Trainable parameters stored in the checkpoint.
    pub parameters: u64,
    /// Parameters the forward pass uses.
    pub parameters_in_forward: u64,
    /// Conv + linear multiply-accumulates per 32x32 image.
    pub macs_per_image: u64,
    /// Where latency was measured (`cpu`, `cuda:0`), with libtorch's intra-op threads.
    pub device: String,
    pub threads: i32,
    #[serde(default)]
    pub latency: Vec<Latency>,
}

/// The median of `times` (seconds), which must not be empty.
fn median(times: &mut [f64]) -> f64 {
    times.sort_by(|a, b| a.total_cmp(b));
    let m = times.len() / 2;
    if times.len() % 2 == 1 {
        times[m]
    } else {
        0.5 * (times[m - 1] + times[m])
    }
}

/// Times `run`, one forward pass of `batch` images in whatever runtime (see
/// [`LatencyOptions`]): warm-up, then up to `opts.runs` timed calls.
pub fn time_latency(
    batch: usize,
    opts: &LatencyOptions,
    mut run: impl FnMut() -> Result<()>,
) -> Result<Latency> {
    if batch == 0 || opts.runs == 0 {
        return Err(Error::Usage(format!(
            "latency: batch size and runs must be at least 1 (batch {batch}, runs {})",
            opts.runs
        )));
    }
    let warm = Instant::now();
    for _ in 0..opts.warmup {
        run()?;
        // One warm-up pass is enough when a pass is that slow.
        if warm.elapsed().as_secs_f64() > opts.budget_s / 4.0 {
            break;
        }
    }
    let mut times = Vec::with_capacity(opts.runs);
    let mut spent = 0.0;
    for _ in 0..opts.runs {
        let began = Instant::now();
        run()?;
        let dt = began.elapsed().as_secs_f64();
        times.push(dt);
        spent += dt;
        if spent > opts.budget_s && times.len() >= 3 {
            break;
        }
    }
    let runs = times.len();
    let min = times.iter().copied().fold(f64::INFINITY, f64::min);
    let med = median(&mut times);
    Ok(Latency {
        batch,
        runs,
        median_ms: 1e3 * med,
        min_ms: 1e3 * min,
        per_image_ms: 1e3 * med / batch as f64,
        images_per_s: batch as f64 / med.max(1e-12),
    })
}

/// Times forward passes of `model` at `batch` images (see [`LatencyOptions`]).
pub fn measure_latency(model: &Model, batch: usize, opts: &LatencyOptions) -> Result<Latency> {
    let device = model.device();
    let like = Tensor::zeros(
        [batch.max(1) as i64, 3, IMAGE_SIZE, IMAGE_SIZE],
        (Kind::Float, Device::Cpu),
    );
    let key = NoiseKey {
        seed: 0,
        counter: batch as u64,
        stream: 0x1A7E,
    };
    let x = (noise::uniform(&like, 0.5, key) + 0.5).f_to_device(device)?;
    tch::no_grad(|| {
        time_latency(batch, opts, || {
            let _ = model.forward_t(&x, false);
            if let Device::Cuda(i) = device {
                tch::Cuda::synchronize(i as i64);
            }
            Ok(())
        })
    })
}

/// Parameters and MACs of `model`, and its latency.
pub fn edge_report(model: &Model, opts: &LatencyOptions) -> Result<EdgeReport> {
    let latency = opts
        .batch_sizes
        .iter()
        .map(|&b| measure_latency(model, b, opts))
        .collect::<Result<_>>()?;
    Ok(EdgeReport {
        arch: model.arch.to_string(),
        parameters: model.num_parameters().max(0) as u64,
        parameters_in_forward: parameters_in_forward(model.arch),
        macs_per_image: macs_per_image(model.arch),
        device: crate::device::device_name(model.device()),
        threads: tch::get_num_threads(),
        latency,
    })
}

pub use super::interval::thousands;

impl EdgeReport {
    /// Human-readable lines for the eval table.
    pub fn lines(&self) -> String {
        let macs = self.macs_per_image as f64;
        let macs = if macs >= 1e9 {
            format!("{:.2} GMAC", macs / 1e9)
        } else {
            format!("{:.1} MMAC", macs / 1e6)
        };
        let mut s = format!(
            "{}: {} parameters ({} used in forward), {macs} per 32x32 image\n",
            self.arch,
            thousands(self.parameters),
            thousands(self.parameters_in_forward),
        );
        for l in &self.latency {
            s += &format!(
                "  latency on {} ({} thread{}), batch {:>3}: median {:9.2} ms over {:>2} runs \
                 ({:.3} ms/image, {:.1} images/s)\n",
                self.device,
                self.threads,
                if self.threads == 1 { "" } else { "s" },
                l.batch,
                l.median_ms,
                l.runs,
                l.per_image_ms,
                l.images_per_s
            );
        }
        s
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::collections::BTreeMap;

    /// Every layer of the inventory is a variable of the model with the same
    /// shape, and nothing the forward pass uses is left out.
    #[test]
    fn inventory_matches_the_models_variables() {
        for name in [
            "wrn10_1",
            "wrn16_2",
            "wrn34_10",
            "resnet18",
            "mobilenet_v2",
            "mobilenet_v2_x0.5",
            "mobilenet_v2_x1.4",
        ] {
            let arch: Arch = name.parse().unwrap();
            let model = Model::new(arch, Device::Cpu);
            let vars: BTreeMap<String, Tensor> = model
                .vs
                .variables()
                .into_iter()
                .filter(|(k, _)| !k.ends_with(".running_mean") && !k.ends_with(".running_var"))
                .collect();
            let mut covered = 0u64;
            for l in layers(arch) {
                let w = vars
                    .get(&format!("{}.weight", l.name))
                    .unwrap_or_else(|| panic!("{name}: no variable {}.weight", l.name));
                assert_eq!(w.size(), l.weight_shape, "{name}: {}", l.name);
                covered += l.params;
            }
            let unused: u64 = vars
                .iter()
                .filter(|(k, _)| k.starts_with("sub_block1."))
                .map(|(_, v)| v.numel() as u64)
                .sum();
            assert_eq!(
                covered + unused,
                model.num_parameters() as u64,
                "{name}: parameters outside the inventory"
            );
        }
    }

    #[test]
    fn known_figures() {
        // ARCHITECTURE.md: WRN-34-10 uses 46.2M parameters in forward (48.3M stored)
        // and about 6.7 GMAC per image; MobileNetV2 2,296,922; ResNet-18 11,173,962.
        // The MAC counts agree with PyTorch forward hooks (tests/parity_eval.rs).
        let wrn: Arch = "wrn34_10".parse().unwrap();
        assert_eq!(parameters_in_forward(wrn), 46_160_474);
        assert_eq!(macs_per_image(wrn), 6_658_906_368);
        let mobilenet: Arch = "mobilenet_v2".parse().unwrap();
        assert_eq!(parameters_in_forward(mobilenet), 2_296_922);
        assert_eq!(macs_per_image(mobilenet), 91_154_944);
        assert_eq!(parameters_in_forward(Arch::ResNet18), 11_173_962);
        assert_eq!(macs_per_image(Arch::ResNet18), 555_422_720);
    }

    #[test]
    fn latency_is_measured() {
        crate::device::set_this_threads_intra_op(1);
        let model = Model::new("wrn10_1".parse().unwrap(), Device::Cpu);
        let opts = LatencyOptions {
            batch_sizes: vec![1, 4],
            warmup: 1,
            runs: 3,
            budget_s: 10.0,
        };
        let report = edge_report(&model, &opts).unwrap();
        assert_eq!(report.latency.len(), 2);
        for l in &report.latency {
            assert_eq!(l.runs, 3);
            assert!(l.median_ms > 0.0 && l.min_ms <= l.median_ms);
        }
        assert!(report.lines().contains("batch   4"));
        assert!(measure_latency(&model, 0, &opts).is_err());
        assert_eq!(thousands(1234567), "1,234,567");
        assert_eq!(median(&mut [3.0, 1.0, 2.0, 10.0]), 2.5);
    }
}
