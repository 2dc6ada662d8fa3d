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

/// What this process's libtorch offers for CUDA: whether CUDA is compiled in
/// (libtorch's CUDA half registered itself, i.e. `libtorch_cuda.so` is linked
/// and loaded) and how many devices it sees.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct CudaFacts {
    pub compiled: bool,
    pub devices: usize,
}

impl CudaFacts {
    /// Asks this process's libtorch.
    pub fn probe() -> Self {
        let compiled = tch::utils::has_cudart();
        let devices = if compiled {
            tch::Cuda::device_count().max(0) as usize
        } else {
            0
        };
        CudaFacts { compiled, devices }
    }
}

/// The device `request` gets on a machine with `facts`, with the reason in
/// words; or why it cannot run here.
pub fn choose_device(
    request: DeviceRequest,
    facts: CudaFacts,
) -> std::result::Result<(Device, String), String> {
    const NO_CUDA: &str = "this binary's libtorch has no CUDA support (a CPU-only libtorch, \
         or libtorch_cuda.so not linked into the binary; `ard-pipeline doctor` tells which)";
    const NO_DEVICE: &str = "CUDA is compiled in but no CUDA device is visible \
         (check the driver with nvidia-smi, and CUDA_VISIBLE_DEVICES)";
    match request {
        DeviceRequest::Cpu => Ok((Device::Cpu, "the config asks for the CPU".into())),
        DeviceRequest::Auto if facts.devices > 0 => Ok((
            Device::Cuda(0),
            format!("the first of {} CUDA device(s)", facts.devices),
        )),
        DeviceRequest::Auto => Ok((
            Device::Cpu,
            (if facts.compiled { NO_DEVICE } else { NO_CUDA }).to_string(),
        )),
        DeviceRequest::Cuda(i) if i < facts.devices => Ok((
            Device::Cuda(i),
            format!("CUDA device {i} of {}", facts.devices),
        )),
        DeviceRequest::Cuda(_) if !facts.compiled => {
            Err(format!("{NO_CUDA}; use device = \"cpu\" or \"auto\""))
        }
        DeviceRequest::Cuda(_) if facts.devices == 0 => {
            Err(format!("{NO_DEVICE}; use device = \"cpu\" or \"auto\""))
        }
        DeviceRequest::Cuda(i) => Err(format!(
            "cuda:{i} asked, but this machine has {n} CUDA device(s) (cuda:0 to cuda:{last})",
            n = facts.devices,
            last = facts.devices - 1
        )),
    }
}

/// Resolves a device string on this machine: `cuda` without a usable device
/// is an error naming why, `auto` falls back to the CPU and logs why.
pub fn resolve_device(text: &str) -> Result<Device> {
    let err = |message: String| Error::Device {
        name: text.to_string(),
        message,
    };
    let request = parse_device(text).map_err(err)?;
    let (device, why) = choose_device(request, CudaFacts::probe()).map_err(err)?;
    if request == DeviceRequest::Auto {
        log::info!("device \"auto\" chose {}: {why}", device_name(device));
    }
    Ok(device)
}

/// `cpu` or `cuda:N`, as a config writes it.
pub fn device_name(device: Device) -> String {
    match device {
        Device::Cuda(i) => format!("cuda:{i}"),
        _ => "cpu".to_string(),
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

/// The cores of this machine (1 when unknown).
pub fn cores() -> usize {
    std::thread::available_parallelism().map_or(1, |n| n.get())
}

/// Sets libtorch's intra-op threads for the calling thread's pool (all cores when None).
pub fn set_threads(threads: Option<usize>) {
    set_this_threads_intra_op(threads.unwrap_or_else(cores));
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

#[cfg(test)]
mod choice_tests {
    use super::{choose_device, CudaFacts, DeviceRequest};
    use tch::Device;

    const CPU_ONLY: CudaFacts = CudaFacts {
        compiled: false,
        devices: 0,
    };
    const NO_GPU: CudaFacts = CudaFacts {
        compiled: true,
        devices: 0,
    };
    const ONE_GPU: CudaFacts = CudaFacts {
        compiled: true,
        devices: 1,
    };

    #[test]
    fn auto_takes_the_gpu_when_there_is_one_and_says_why_not_otherwise() {
        assert_eq!(
            choose_device(DeviceRequest::Auto, ONE_GPU).unwrap().0,
            Device::Cuda(0)
        );
        let (d, why) = choose_device(DeviceRequest::Auto, NO_GPU).unwrap();
        assert_eq!(d, Device::Cpu);
        assert!(why.contains("no CUDA device is visible"), "{why}");
        let (d, why) = choose_device(DeviceRequest::Auto, CPU_ONLY).unwrap();
        assert_eq!(d, Device::Cpu);
        assert!(why.contains("no CUDA support"), "{why}");
    }

    #[test]
    fn cuda_requests_that_cannot_run_name_the_reason() {
        let e = choose_device(DeviceRequest::Cuda(3), ONE_GPU).unwrap_err();
        assert!(
            e.contains("cuda:3") && e.contains("1 CUDA device(s)"),
            "{e}"
        );
        let e = choose_device(DeviceRequest::Cuda(0), CPU_ONLY).unwrap_err();
        assert!(e.contains("no CUDA support"), "{e}");
        let e = choose_device(DeviceRequest::Cuda(0), NO_GPU).unwrap_err();
        assert!(e.contains("no CUDA device is visible"), "{e}");
        assert_eq!(
            choose_device(DeviceRequest::Cuda(0), ONE_GPU).unwrap().0,
            Device::Cuda(0)
        );
    }
}
