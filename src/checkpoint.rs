//! Model checkpoints as safetensors with PyTorch state_dict names, written
//! atomically, loaded strictly (every name and shape must match).
//!
//! PyTorch's BatchNorm also stores `num_batches_tracked`; it is only used when
//! BatchNorm's momentum is None (never here), so it is ignored on load and
//! written as 0 on save, which lets PyTorch load our files with `strict=True`.
//!
//! No file with a non-finite floating-point tensor is ever written, and none is
//! ever loaded: a NaN or infinity in a weight or a BatchNorm statistic is a
//! diverged model, and both sides refuse it by name.

use crate::error::{Error, Result};
use std::collections::BTreeMap;
use std::fs::File;
use std::path::{Path, PathBuf};
use tch::{nn::VarStore, Tensor};

const BN_COUNTER: &str = "num_batches_tracked";

pub(crate) fn ckpt_err(path: &Path, message: impl Into<String>) -> Error {
    Error::Checkpoint {
        path: path.to_path_buf(),
        message: message.into(),
    }
}

/// The first floating-point tensor of `tensors` holding a NaN or an infinity.
pub fn first_non_finite<'a>(
    tensors: impl IntoIterator<Item = (&'a String, &'a Tensor)>,
) -> Option<&'a str> {
    tensors
        .into_iter()
        .find(|(_, t)| {
            t.is_floating_point() && tch::no_grad(|| t.isfinite().all().int64_value(&[]) == 0)
        })
        .map(|(name, _)| name.as_str())
}

/// Writes named tensors to `path` atomically: a temp file beside it, fsync,
/// rename. A non-finite tensor is refused before anything is written (the
/// previous file, if any, stays as it was).
pub fn write_atomic(path: &Path, tensors: &[(String, Tensor)]) -> Result<()> {
    if let Some(name) = first_non_finite(tensors.iter().map(|(n, t)| (n, t))) {
        return Err(ckpt_err(
            path,
            format!(
                "not written: tensor {name} holds NaN or infinite values (the model diverged); {}",
                if path.exists() {
                    "the previous file is kept"
                } else {
                    "no file was written"
                }
            ),
        ));
    }
    let dir = path
        .parent()
        .filter(|d| !d.as_os_str().is_empty())
        .unwrap_or(Path::new("."));
    std::fs::create_dir_all(dir).map_err(|e| Error::io(dir, e))?;
    let name = path
        .file_name()
        .ok_or_else(|| ckpt_err(path, "not a file path"))?
        .to_string_lossy();
    let tmp: PathBuf = dir.join(format!(".{name}.tmp-{}", std::process::id()));
    let result = (|| {
        Tensor::write_safetensors(tensors, &tmp)
            .map_err(|e| ckpt_err(path, format!("write failed: {e}")))?;
        File::open(&tmp)
            .and_then(|f| f.sync_all())
            .map_err(|e| Error::io(&tmp, e))?;
        std::fs::rename(&tmp, path).map_err(|e| Error::io(path, e))?;
        if let Ok(d) = File::open(dir) {
            let _ = d.sync_all();
        }
        Ok(())
    })();
    if result.is_err() {
        let _ = std::fs::remove_file(&tmp);
    }
    result
}

/// Saves every variable of `vs` (plus PyTorch's BatchNorm counters) to `path`.
pub fn save(vs: &VarStore, path: &Path) -> Result<()> {
    let vars: BTreeMap<String, Tensor> = vs.variables().into_iter().collect();
    let mut tensors: Vec<(String, Tensor)> = Vec::with_capacity(vars.len() * 2);
    for (name, t) in &vars {
        tensors.push((name.clone(), t.to_device(tch::Device::Cpu).contiguous()));
        if let Some(prefix) = name.strip_suffix(".running_mean") {
            tensors.push((format!("{prefix}.{BN_COUNTER}"), Tensor::from(0i64)));
        }
    }
    write_atomic(path, &tensors)
}

/// Reads a safetensors file into a name → tensor map (on the CPU).
pub fn read(path: &Path) -> Result<BTreeMap<String, Tensor>> {
    if path.is_dir() {
        return Err(ckpt_err(path, "is a folder, not a weights file"));
    }
    if !path.is_file() {
        return Err(ckpt_err(path, "no such file"));
    }
    let named = Tensor::read_safetensors(path)
        .map_err(|e| ckpt_err(path, format!("not a readable safetensors file ({e})")))?;
    Ok(named.into_iter().collect())
}

/// Loads `path` into `vs` strictly: every variable must be present with its
/// shape, and the file may hold nothing else (bar BatchNorm counters). On a
/// mismatch nothing is modified and the error lists the first differences.
pub fn load_into(vs: &mut VarStore, path: &Path, arch: &str) -> Result<()> {
    load_map_into(vs, read(path)?, path, arch)
}

/// [`load_into`] from tensors already read (`path` names them in errors).
pub fn load_map_into(
    vs: &mut VarStore,
    mut file: BTreeMap<String, Tensor>,
    path: &Path,
    arch: &str,
) -> Result<()> {
    file.retain(|name, _| !name.ends_with(BN_COUNTER));
    if let Some(name) = first_non_finite(&file) {
        return Err(ckpt_err(
            path,
            format!("tensor {name} holds NaN or infinite values: not a usable model"),
        ));
    }
    let vars = vs.variables();
    let mut problems = Vec::new();
    for (name, var) in vars.iter().collect::<BTreeMap<_, _>>() {
        match file.get(name) {
            None => problems.push(format!("missing {name} {:?}", var.size())),
            Some(t) if t.size() != var.size() => problems.push(format!(
                "{name}: file has {:?}, {arch} needs {:?}",
                t.size(),
                var.size()
            )),
            Some(_) => {}
        }
    }
    for name in file.keys().filter(|n| !vars.contains_key(*n)) {
        problems.push(format!("unexpected {name}"));
    }
    if !problems.is_empty() {
        let shown: Vec<_> = problems.iter().take(6).cloned().collect();
        let more = problems.len().saturating_sub(shown.len());
        return Err(ckpt_err(
            path,
            format!(
                "does not fit architecture {arch}: {}{}",
                shown.join("; "),
                if more > 0 {
                    format!("; and {more} more")
                } else {
                    String::new()
                }
            ),
        ));
    }
    tch::no_grad(|| {
        for (name, var) in vars.iter() {
            let src = file[name].to_kind(var.kind()).to_device(var.device());
            var.shallow_clone().f_copy_(&src)?;
        }
        Ok(())
    })
}
