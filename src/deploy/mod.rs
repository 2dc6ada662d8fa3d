//! Deployment: a student exported to ONNX (BatchNorm folded; optionally an
//! int8 model quantized by ONNX Runtime), run outside libtorch in ONNX Runtime
//! ([`runtime`]), checked against the tch model, and measured as it ships:
//! robustness under transfer and Square attacks ([`verify`]), file sizes,
//! latency and peak memory, all written to a card ([`card`]) by
//! `ard-pipeline export` ([`export`]); or a RobustBench entry ([`robustbench`]).
//! Child processes die with the export ([`interrupt`]).

pub mod card;
pub mod export;
pub mod interrupt;
pub mod robustbench;
pub mod runtime;
pub mod verify;

use crate::error::{Error, Result};
use crate::eval::edge::{measure_latency, time_latency, Latency, LatencyOptions};
use crate::models::{Arch, Model};
use serde::{Deserialize, Serialize};
use std::path::Path;
use tch::{Device, Kind, Tensor};

/// What `ard-pipeline latency-child` prints: latency and resident memory of
/// a process that holds one model.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct ChildLatency {
    pub latency: Vec<Latency>,
    /// VmRSS before the runtime and model were loaded, MB.
    pub baseline_rss_mb: f64,
    /// VmHWM after the timings, MB.
    pub peak_rss_mb: f64,
}

/// A `/proc/self/status` field in MB (`VmRSS`, `VmHWM`).
fn status_mb(field: &str) -> f64 {
    std::fs::read_to_string("/proc/self/status")
        .ok()
        .and_then(|t| {
            t.lines()
                .find(|l| l.starts_with(field))
                .and_then(|l| l.split_whitespace().nth(1))
                .and_then(|kb| kb.parse::<f64>().ok())
        })
        .map_or(f64::NAN, |kb| kb / 1024.0)
}

/// Times an ONNX file in ONNX Runtime on `batch` random images.
fn onnx_latency(
    model: &mut runtime::OnnxModel,
    batch: usize,
    opts: &LatencyOptions,
) -> Result<Latency> {
    let x = Tensor::rand([batch.max(1) as i64, 3, 32, 32], (Kind::Float, Device::Cpu));
    time_latency(batch, opts, || model.logits(&x).map(drop))
}

/// `ard-pipeline latency-child`: loads one model (an ONNX file in ONNX
/// Runtime, or a safetensors checkpoint of `arch` in libtorch) with `threads`
/// threads, times it, and reports its latency and memory.
pub fn latency_child(
    model: &Path,
    arch: Option<Arch>,
    threads: usize,
    opts: &LatencyOptions,
    onnxruntime: Option<&Path>,
) -> Result<ChildLatency> {
    let baseline_rss_mb = status_mb("VmRSS:");
    crate::device::set_threads(Some(threads));
    let latency = match arch {
        Some(arch) => {
            let m = Model::load(arch, Device::Cpu, model)?;
            opts.batch_sizes
                .iter()
                .map(|&b| measure_latency(&m, b, opts))
                .collect::<Result<Vec<_>>>()?
        }
        None => {
            runtime::load(onnxruntime)?;
            let mut m = runtime::OnnxModel::open(model, threads)?;
            opts.batch_sizes
                .iter()
                .map(|&b| onnx_latency(&mut m, b, opts))
                .collect::<Result<Vec<_>>>()?
        }
    };
    let peak_rss_mb = status_mb("VmHWM:");
    if latency.is_empty() {
        return Err(Error::Usage("latency-child: no batch sizes".into()));
    }
    Ok(ChildLatency {
        latency,
        baseline_rss_mb,
        peak_rss_mb,
    })
}
