//! ONNX Runtime, loaded at run time (never downloaded at build time): from
//! `--onnxruntime PATH`, else `ORT_DYLIB_PATH`, else the venv's `onnxruntime`
//! package (`.venv/lib/python3*/site-packages/onnxruntime/capi/libonnxruntime.so*`).
//! [`OnnxModel`] runs an exported model on tch tensors: images [N, 3, 32, 32]
//! in [0, 1] in, logits [N, 10] out.

use crate::error::{Error, Result};
use ort::environment::Environment;
use ort::session::Session;
use ort::value::TensorRef;
use std::path::{Path, PathBuf};
use std::sync::OnceLock;
use tch::{Device, Kind, Tensor};

/// The ONNX Runtime API version this binary asks for (ort's `api-31`).
pub const MIN_RUNTIME: &str = "1.31";

/// The runtime library loaded in this process, with its environment (loaded
/// once; later calls must name the same library).
static LOADED: OnceLock<std::result::Result<(PathBuf, Environment), String>> = OnceLock::new();

/// The venv's ONNX Runtime library, if the `onnxruntime` package is installed.
fn venv_library(venv: &Path) -> Option<PathBuf> {
    let lib = venv.join("lib");
    let mut found: Vec<PathBuf> = std::fs::read_dir(&lib)
        .ok()?
        .flatten()
        .map(|python| python.path().join("site-packages/onnxruntime/capi"))
        .filter_map(|capi| std::fs::read_dir(capi).ok())
        .flatten()
        .flatten()
        .map(|f| f.path())
        .filter(|p| {
            p.file_name()
                .and_then(|n| n.to_str())
                .is_some_and(|n| n.starts_with("libonnxruntime.so"))
        })
        .collect();
    found.sort();
    found.pop()
}

/// Where the runtime library is: `explicit`, else `ORT_DYLIB_PATH`, else the venv's.
pub fn find_library(explicit: Option<&Path>) -> Result<PathBuf> {
    let (path, from) = if let Some(p) = explicit {
        (p.to_path_buf(), "--onnxruntime")
    } else if let Some(p) = std::env::var_os("ORT_DYLIB_PATH").filter(|p| !p.is_empty()) {
        (PathBuf::from(p), "ORT_DYLIB_PATH")
    } else {
        let path = venv_library(Path::new(".venv")).ok_or_else(|| {
            Error::Onnx(format!(
                "ONNX Runtime not found: no libonnxruntime.so in .venv (run `bash scripts/bootstrap.sh`, \
                 which installs the onnxruntime package, >= {MIN_RUNTIME}), and neither \
                 --onnxruntime nor ORT_DYLIB_PATH is set"
            ))
        })?;
        return Ok(path);
    };
    if !path.is_file() {
        return Err(Error::Onnx(format!(
            "ONNX Runtime library {} (from {from}): no such file",
            path.display()
        )));
    }
    Ok(path)
}

/// Loads the runtime library once per process; returns its path.
pub fn load(explicit: Option<&Path>) -> Result<PathBuf> {
    let path = find_library(explicit)?;
    let loaded = LOADED.get_or_init(|| {
        let cannot = |e: &dyn std::fmt::Display| {
            format!(
                "ONNX Runtime library {}: cannot be loaded ({e}); it must be ONNX Runtime >= {MIN_RUNTIME}",
                path.display()
            )
        };
        let builder = ort::init_from(&path).map_err(|e| cannot(&e))?;
        let env = builder.with_name("ard-pipeline").build().map_err(|e| cannot(&e))?;
        Ok((path.clone(), env))
    });
    match loaded {
        Ok((p, _)) if *p == path => Ok(p.clone()),
        Ok((p, _)) => Err(Error::Onnx(format!(
            "ONNX Runtime is already loaded from {} in this process, not {}",
            p.display(),
            path.display()
        ))),
        Err(e) => Err(Error::Onnx(e.clone())),
    }
}

/// One exported model in an ONNX Runtime session (CPU).
pub struct OnnxModel {
    session: Session,
    path: PathBuf,
}

fn ort_error(path: &Path, what: &str, e: impl std::fmt::Display) -> Error {
    Error::Onnx(format!("ONNX model {}: {what}: {e}", path.display()))
}

impl OnnxModel {
    /// Opens `path` with `threads` intra-op threads (the runtime must be [`load`]ed).
    pub fn open(path: &Path, threads: usize) -> Result<OnnxModel> {
        let Some(Ok((_, env))) = LOADED.get() else {
            return Err(Error::Onnx(
                "ONNX Runtime is not loaded (deploy::runtime::load first)".into(),
            ));
        };
        let session = Session::builder(env)
            .and_then(|b| Ok(b.with_intra_threads(threads.max(1))?))
            .and_then(|b| Ok(b.with_inter_threads(1)?))
            .and_then(|mut b| b.commit_from_file(path))
            .map_err(|e| ort_error(path, "cannot be opened", e))?;
        let inputs = session.inputs();
        let outputs = session.outputs();
        if inputs.len() != 1 || outputs.len() != 1 {
            return Err(ort_error(
                path,
                "not a classifier",
                format!(
                    "{} inputs and {} outputs (want images -> logits)",
                    inputs.len(),
                    outputs.len()
                ),
            ));
        }
        Ok(OnnxModel {
            session,
            path: path.to_path_buf(),
        })
    }

    /// Logits [N, classes] (f32, CPU) for images `x` [N, 3, H, W].
    pub fn logits(&mut self, x: &Tensor) -> Result<Tensor> {
        let x = x
            .f_to_device(Device::Cpu)?
            .f_to_kind(Kind::Float)?
            .f_contiguous()?;
        let shape: Vec<i64> = x.size();
        let n = x.numel();
        let mut data = vec![0f32; n];
        x.f_copy_data(&mut data, n)?;
        let path = &self.path;
        let input = TensorRef::from_array_view((shape.clone(), &data[..]))
            .map_err(|e| ort_error(path, "input", e))?;
        let outputs = self
            .session
            .run(ort::inputs![input])
            .map_err(|e| ort_error(path, "run", e))?;
        let (out_shape, values) = outputs[0]
            .try_extract_tensor::<f32>()
            .map_err(|e| ort_error(path, "output", e))?;
        let out_shape: Vec<i64> = out_shape.iter().copied().collect();
        if out_shape.len() != 2 || out_shape[0] != shape[0] {
            return Err(ort_error(
                path,
                "output",
                format!("logits of shape {out_shape:?} for {} images", shape[0]),
            ));
        }
        Ok(Tensor::from_slice(values).view(out_shape.as_slice()))
    }
}
