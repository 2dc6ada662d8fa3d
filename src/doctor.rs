//! `ard-pipeline doctor`: what a user runs when the GPU is not used. It says
//! which libtorch this binary was built against and which one it loaded,
//! whether libtorch's CUDA half is linked, compiled in and usable (devices,
//! cuDNN), the CPU side (intra-op threads, native bf16), where a config's data
//! and weights are and whether they can be read, and one verdict line for the
//! config's `run.device`.

use crate::config::Config;
use crate::data::cifar;
use crate::device::{self, CudaFacts, DeviceRequest};
use serde::Serialize;
use std::path::{Path, PathBuf};

/// libtorch's version where this binary was built (build.rs).
pub const BUILT_AGAINST: &str = env!("ARD_LIBTORCH_BUILD_VERSION");

/// Whether build.rs linked `libtorch_cuda.so` into this binary.
pub const CUDA_LINKED_AT_BUILD: bool = matches!(env!("ARD_LIBTORCH_CUDA_LINKED").as_bytes(), b"1");

/// Everything `doctor` found; printed as lines, or written as JSON.
#[derive(Debug, Clone, Serialize)]
pub struct Diagnosis {
    pub libtorch_built_against: String,
    /// Version and folder of the libtorch this process loaded (from the path
    /// of `libtorch_cpu.so` in its memory map).
    pub libtorch_loaded: Option<String>,
    pub libtorch_loaded_from: Option<PathBuf>,
    /// build.rs found `libtorch_cuda.so` and linked it.
    pub cuda_linked_at_build: bool,
    /// `libtorch_cuda.so` is mapped into this process.
    pub cuda_library_loaded: bool,
    /// libtorch's CUDA hooks are registered (CUDA compiled in).
    pub cuda_compiled: bool,
    pub cuda_runtime_version: Option<String>,
    pub cuda_devices: usize,
    /// Device names from `nvidia-smi` (libtorch does not give them to tch).
    pub cuda_device_names: Vec<String>,
    pub cudnn_compiled: Option<String>,
    pub cudnn_available: bool,
    pub intra_op_threads: i32,
    pub cores: usize,
    pub cpu_native_bf16: bool,
    pub config: Option<ConfigCheck>,
    /// One line: can the config (or `device = "auto"` without one) run here.
    pub verdict: String,
    pub ok: bool,
}

/// The paths a config reads and its device request.
#[derive(Debug, Clone, Serialize)]
pub struct ConfigCheck {
    pub path: PathBuf,
    pub device: String,
    pub paths: Vec<PathCheck>,
}

/// One path a run reads, and what was found there.
#[derive(Debug, Clone, Serialize)]
pub struct PathCheck {
    /// The config key.
    pub key: String,
    pub path: PathBuf,
    pub status: String,
    /// The run cannot start with it as it is.
    pub blocking: bool,
}

/// Examines this process and machine, and `cfg` (read from `path`) when given.
pub fn diagnose(cfg: Option<(&Path, &Config)>) -> Diagnosis {
    let facts = CudaFacts::probe();
    let mapped = mapped_libraries();
    let (loaded_version, loaded_from) = loaded_libtorch(&mapped);
    let cuda_library_loaded = mapped.iter().any(|p| {
        p.file_name()
            .is_some_and(|n| n.to_string_lossy().starts_with("libtorch_cuda.so"))
    });
    let cudnn_compiled = facts
        .compiled
        .then(tch::utils::version_cudnn)
        .filter(|v| *v > 0)
        .map(|v| format!("{}.{}.{}", v / 10000, (v / 100) % 100, v % 100));
    let cuda_runtime_version = facts
        .compiled
        .then(tch::utils::version_cudart)
        .filter(|v| *v > 0)
        .map(|v| format!("{}.{}", v / 1000, (v % 1000) / 10));
    let config = cfg.map(|(path, cfg)| ConfigCheck {
        path: path.to_path_buf(),
        device: cfg.run.device.clone(),
        paths: check_paths(cfg),
    });
    let request = config.as_ref().map_or("auto", |c| c.device.as_str());
    let (verdict, ok) = verdict(request, facts, config.as_ref());
    Diagnosis {
        libtorch_built_against: BUILT_AGAINST.to_string(),
        libtorch_loaded: loaded_version,
        libtorch_loaded_from: loaded_from,
        cuda_linked_at_build: CUDA_LINKED_AT_BUILD,
        cuda_library_loaded,
        cuda_compiled: facts.compiled,
        cuda_runtime_version,
        cuda_devices: facts.devices,
        cuda_device_names: (facts.devices > 0).then(gpu_names).unwrap_or_default(),
        cudnn_compiled,
        cudnn_available: facts.devices > 0 && tch::Cuda::cudnn_is_available(),
        intra_op_threads: tch::get_num_threads(),
        cores: device::cores(),
        cpu_native_bf16: crate::perf::cpu_has_native_bf16(),
        config,
        verdict,
        ok,
    }
}

/// The verdict line for a device request and the config's paths.
fn verdict(request: &str, facts: CudaFacts, config: Option<&ConfigCheck>) -> (String, bool) {
    let subject = match config {
        Some(c) => format!("{}: run.device = {request:?}", c.path.display()),
        None => format!("device {request:?}"),
    };
    let chosen = device::parse_device(request).and_then(|parsed| {
        let choice = device::choose_device(parsed, facts)?;
        match config.and_then(|c| c.paths.iter().find(|p| p.blocking)) {
            Some(b) => Err(format!("{} {}: {}", b.key, b.path.display(), b.status)),
            None => Ok((parsed, choice)),
        }
    });
    let (parsed, (device, why)) = match chosen {
        Ok(chosen) => chosen,
        Err(e) => return (format!("{subject}: cannot run here: {e}"), false),
    };
    let why = if parsed == DeviceRequest::Cpu {
        String::new()
    } else {
        format!(": {why}")
    };
    (
        format!("{subject}: runs on {}{why}", device::device_name(device)),
        true,
    )
}

/// The data folder and every weights file the config names.
fn check_paths(cfg: &Config) -> Vec<PathCheck> {
    let mut out = Vec::new();
    let root = &cfg.data.root;
    let missing = cifar::missing_files(root);
    let (status, blocking) = if missing.is_empty() {
        ("readable: every CIFAR-10 file is there".to_string(), false)
    } else if cfg.data.download {
        (
            format!(
                "missing {}; data.download = true: the run downloads CIFAR-10 here",
                missing.join(", ")
            ),
            false,
        )
    } else {
        (
            format!("missing {} and data.download = false", missing.join(", ")),
            true,
        )
    };
    out.push(PathCheck {
        key: "data.root".into(),
        path: root.clone(),
        status,
        blocking,
    });
    let uses_teacher = crate::config::uses_teacher(cfg.loss.kind);
    if let Some(w) = cfg.teacher.weights.as_ref().filter(|_| uses_teacher) {
        out.push(file_check("teacher.weights", w));
    }
    if let Some(w) = &cfg.student.init {
        out.push(file_check("student.init", w));
    }
    out.push(out_dir_check(&cfg.run.out_dir));
    out
}

/// `run.out_dir`: a folder, or a path the run can create (its nearest
/// existing ancestor is a folder). A file there (or above it) blocks the run.
fn out_dir_check(path: &Path) -> PathCheck {
    let check = |status: String, blocking| PathCheck {
        key: "run.out_dir".into(),
        path: path.to_path_buf(),
        status,
        blocking,
    };
    match std::fs::metadata(path) {
        Ok(m) if m.is_dir() => check(
            "a folder: each run writes into run.out_dir/run.name".into(),
            false,
        ),
        Ok(_) => check(
            "a file, not a folder: runs are written into run.out_dir/run.name; \
             set run.out_dir to a folder"
                .into(),
            true,
        ),
        Err(e) => {
            let existing = path.ancestors().skip(1).find(|a| {
                let a = if a.as_os_str().is_empty() {
                    Path::new(".")
                } else {
                    a
                };
                a.exists()
            });
            match existing {
                Some(a) if !a.as_os_str().is_empty() && !a.is_dir() => check(
                    format!(
                        "cannot be created: {} is a file, not a folder; set run.out_dir to a folder",
                        a.display()
                    ),
                    true,
                ),
                _ if e.kind() == std::io::ErrorKind::NotFound => {
                    check("missing: the run creates it".into(), false)
                }
                _ => check(format!("cannot be read: {e}"), true),
            }
        }
    }
}

/// Checks the `--json` path of `doctor` before anything is examined: its
/// folder must exist and it must not be a folder itself.
pub fn check_json_path(path: &Path) -> crate::error::Result<()> {
    let bad = |why: String| {
        Err(crate::error::Error::Usage(format!(
            "doctor --json {}: {why}",
            path.display()
        )))
    };
    if path.is_dir() {
        return bad("is a folder; give a file path such as doctor.json".into());
    }
    let parent = path
        .parent()
        .filter(|p| !p.as_os_str().is_empty())
        .unwrap_or(Path::new("."));
    if !parent.is_dir() {
        let what = if parent.exists() {
            "is not a folder"
        } else {
            "does not exist"
        };
        return bad(format!("{} {what}", parent.display()));
    }
    Ok(())
}

fn file_check(key: &str, path: &Path) -> PathCheck {
    let (status, blocking) = match std::fs::metadata(path) {
        Ok(m) if m.is_dir() => ("a folder, not a file".to_string(), true),
        Ok(m) => match std::fs::File::open(path) {
            Ok(_) => (format!("readable ({} bytes)", m.len()), false),
            Err(e) => (format!("not readable: {e}"), true),
        },
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => ("no such file".to_string(), true),
        Err(e) => (format!("cannot be read: {e}"), true),
    };
    PathCheck {
        key: key.into(),
        path: path.to_path_buf(),
        status,
        blocking,
    }
}

/// The files this process has mapped (Linux: /proc/self/maps).
fn mapped_libraries() -> Vec<PathBuf> {
    let Ok(maps) = std::fs::read_to_string("/proc/self/maps") else {
        return Vec::new();
    };
    let mut paths: Vec<PathBuf> = maps
        .lines()
        .filter_map(|l| l.split_whitespace().nth(5))
        .filter(|p| p.starts_with('/'))
        .map(PathBuf::from)
        .collect();
    paths.dedup();
    paths
}

/// The version and the folder of the libtorch whose `libtorch_cpu.so` this
/// process loaded: `version.py` beside `lib/` in a PyPI torch package,
/// `build-version` in a libtorch archive.
fn loaded_libtorch(mapped: &[PathBuf]) -> (Option<String>, Option<PathBuf>) {
    let Some(lib) = mapped
        .iter()
        .find(|p| p.file_name().is_some_and(|n| n == "libtorch_cpu.so"))
    else {
        return (None, None);
    };
    let root = lib.parent().and_then(Path::parent).map(Path::to_path_buf);
    let version = root
        .as_deref()
        .and_then(crate::libtorch_dir::libtorch_version);
    (version, root)
}

/// GPU names and memory from `nvidia-smi`, when it is installed.
fn gpu_names() -> Vec<String> {
    let out = std::process::Command::new("nvidia-smi")
        .args([
            "--query-gpu=index,name,memory.total",
            "--format=csv,noheader",
        ])
        .output();
    match out {
        Ok(o) if o.status.success() => String::from_utf8_lossy(&o.stdout)
            .lines()
            .map(|l| l.trim().to_string())
            .filter(|l| !l.is_empty())
            .collect(),
        _ => vec!["(names unknown: nvidia-smi not found)".to_string()],
    }
}

impl Diagnosis {
    /// The report as aligned lines, the verdict last.
    pub fn text(&self) -> String {
        let yes = |b: bool| if b { "yes" } else { "no" };
        let mut rows: Vec<(&str, String)> = vec![
            (
                "libtorch built against",
                self.libtorch_built_against.clone(),
            ),
            (
                "libtorch loaded",
                match (&self.libtorch_loaded, &self.libtorch_loaded_from) {
                    (v, Some(p)) => format!(
                        "{} ({})",
                        v.as_deref().unwrap_or("version unknown"),
                        p.display()
                    ),
                    _ => "unknown (no libtorch_cpu.so in /proc/self/maps)".into(),
                },
            ),
            (
                "CUDA half linked",
                format!(
                    "{} at build; libtorch_cuda.so loaded: {}",
                    yes(self.cuda_linked_at_build),
                    yes(self.cuda_library_loaded)
                ),
            ),
            (
                "CUDA compiled in",
                match &self.cuda_runtime_version {
                    Some(v) if self.cuda_compiled => format!("yes (CUDA runtime {v})"),
                    _ => yes(self.cuda_compiled).to_string(),
                },
            ),
            (
                "cuDNN",
                format!(
                    "compiled in: {}; available: {}",
                    self.cudnn_compiled
                        .as_ref()
                        .map_or("no".to_string(), |v| format!("yes ({v})")),
                    yes(self.cudnn_available)
                ),
            ),
            ("CUDA devices", self.cuda_devices.to_string()),
        ];
        for name in &self.cuda_device_names {
            rows.push(("  device", name.clone()));
        }
        rows.push((
            "intra-op threads",
            format!("{} ({} cores)", self.intra_op_threads, self.cores),
        ));
        rows.push((
            "CPU bf16",
            if self.cpu_native_bf16 {
                "native (AVX512-BF16): the attack and the student compute in bf16 by default"
            } else {
                "no native bf16: f32 by default (perf.attack_dtype / student_dtype = \"bf16\" are refused)"
            }
            .to_string(),
        ));
        if let Some(c) = &self.config {
            rows.push(("config", c.path.display().to_string()));
            for p in &c.paths {
                rows.push((
                    "",
                    format!("{} = {}: {}", p.key, p.path.display(), p.status),
                ));
            }
        }
        let verdict = if self.ok {
            "verdict: ok"
        } else {
            "verdict: NO"
        };
        rows.push((verdict, self.verdict.clone()));
        rows.iter().map(|(k, v)| format!("{k:<24} {v}\n")).collect()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn check(blocking: bool) -> ConfigCheck {
        ConfigCheck {
            path: "c.toml".into(),
            device: "cpu".into(),
            paths: vec![PathCheck {
                key: "teacher.weights".into(),
                path: "w.safetensors".into(),
                status: "no such file".into(),
                blocking,
            }],
        }
    }

    #[test]
    fn the_verdict_names_the_device_or_the_blocking_path() {
        let gpu = CudaFacts {
            compiled: true,
            devices: 1,
        };
        let (line, ok) = verdict("cuda:3", gpu, None);
        assert!(
            !ok && line.contains("cuda:3") && line.contains("1 CUDA device"),
            "{line}"
        );
        let (line, ok) = verdict("auto", gpu, Some(&check(false)));
        assert!(ok && line.contains("runs on cuda:0"), "{line}");
        let (line, ok) = verdict("cpu", gpu, Some(&check(true)));
        assert!(
            !ok && line.contains("teacher.weights w.safetensors: no such file"),
            "{line}"
        );
        let (line, ok) = verdict("tpu", gpu, None);
        assert!(!ok && line.contains("unknown device"), "{line}");
    }
}
