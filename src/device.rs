//! Device strings (`cpu`, `cuda`, `cuda:N`, `auto`) and libtorch thread setup.

use crate::error::{Error, Result};
use tch::Device;

/// What a device string asks for, before looking at the machine.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum DeviceRequest {
    Cpu,
    Cuda(usize),
    Auto,
}

/// Parses a device string without touching any device.
pub fn parse_device(text: &str) -> std::result::Result<DeviceRequest, String> {
    match text {
        "cpu" => Ok(DeviceRequest::Cpu),
        "cuda" => Ok(DeviceRequest::Cuda(0)),
        "auto" => Ok(DeviceRequest::Auto),
        other => other
            .strip_prefix("cuda:")
            .and_then(|n| n.parse().ok())
            .map(DeviceRequest::Cuda)
            .ok_or_else(|| format!("unknown device {other:?}")),
    }
}

/// Resolves a device string on this machine: `cuda` without CUDA is an error,
/// `auto` falls back to the CPU.
pub fn resolve_device(text: &str) -> Result<Device> {
    let err = |message: String| Error::Device {
        name: text.to_string(),
        message,
    };
    match parse_device(text).map_err(err)? {
        DeviceRequest::Cpu => Ok(Device::Cpu),
        DeviceRequest::Auto => Ok(Device::cuda_if_available()),
        DeviceRequest::Cuda(i) => {
            let count = tch::Cuda::device_count() as usize;
            if i < count {
                Ok(Device::Cuda(i))
            } else if count == 0 {
                Err(err(
                    "CUDA is not available on this machine (use device = \"cpu\" or \"auto\")"
                        .into(),
                ))
            } else {
                Err(err(format!("only {count} CUDA device(s) here")))
            }
        }
    }
}

/// Sets libtorch's intra-op threads for the calling thread's pool (all cores when None).
pub fn set_threads(threads: Option<usize>) {
    let n = threads.unwrap_or_else(|| {
        std::thread::available_parallelism()
            .map(|n| n.get())
            .unwrap_or(1)
    });
    tch::set_num_threads(n as i32);
}
