//! Device strings (`cpu`, `cuda`, `cuda:N`, `auto`) and libtorch thread setup.

use crate::error::{Error, Result};
use tch::{Device, Tensor};

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

/// Moves a host tensor to `device`. On CUDA through pinned (page-locked)
/// memory with a non-blocking copy: the transfer is queued on the stream
/// instead of stalling the host until the GPU has caught up (libtorch keeps
/// the pinned buffer alive until the copy has run). On the CPU, as it is.
pub fn upload(t: Tensor, device: Device) -> Result<Tensor> {
    if device.is_cuda() {
        let kind = t.kind();
        Ok(t.f_pin_memory(device)?
            .f_to_device_(device, kind, true, false)?)
    } else {
        Ok(t.f_to_device(device)?)
    }
}

/// Sets libtorch's intra-op threads for the calling thread's pool (all cores when None).
pub fn set_threads(threads: Option<usize>) {
    let n = threads.unwrap_or_else(|| {
        std::thread::available_parallelism()
            .map(|n| n.get())
            .unwrap_or(1)
    });
    set_this_threads_intra_op(n);
}

/// Sets the calling thread's intra-op thread count (OpenMP's is per thread).
///
/// libtorch initialises a thread's count lazily, at its first parallel
/// operation, from the value most recently set by ANY thread; a thread that
/// set its own count before its first operation therefore took whatever
/// another thread set last (the pipeline's compute stages ran on 1 thread
/// instead of all cores, depending on start-up order). Asking for the count
/// first runs that initialisation, so the value set here stays.
pub fn set_this_threads_intra_op(threads: usize) {
    let _ = tch::get_num_threads();
    tch::set_num_threads(threads.max(1) as i32);
}

#[cfg(test)]
mod thread_count_tests {
    use super::set_this_threads_intra_op;
    use std::sync::Barrier;

    /// Two threads set their own counts; a third then sets 1 (which also
    /// becomes libtorch's process-wide default for threads not yet started).
    #[test]
    fn a_threads_own_count_survives_a_later_setting_elsewhere() {
        let (set, overwritten) = (Barrier::new(3), Barrier::new(3));
        let (protected, raw) = std::thread::scope(|scope| {
            let protected = scope.spawn(|| {
                set_this_threads_intra_op(5);
                set.wait();
                overwritten.wait();
                tch::get_num_threads()
            });
            let raw = scope.spawn(|| {
                tch::set_num_threads(7); // no parallel operation has run on this thread yet
                set.wait();
                overwritten.wait();
                tch::get_num_threads()
            });
            set.wait();
            set_this_threads_intra_op(1);
            overwritten.wait();
            (protected.join().unwrap(), raw.join().unwrap())
        });
        assert_eq!(protected, 5);
        // libtorch's lazy per-thread initialisation, the reason for the helper:
        assert_ne!(raw, 7, "libtorch no longer resets a thread's count lazily");
    }
}
