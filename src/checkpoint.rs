//! Model checkpoints as safetensors with PyTorch state_dict names, written
//! atomically, loaded strictly (every name and shape must match).
//!
//! PyTorch's BatchNorm also stores `num_batches_tracked`; it is only used when
//! BatchNorm's momentum is None (never here), so it is ignored on load and
//! written as 0 on save, which lets PyTorch load our files with `strict=True`.
//!
//! No file with a non-finite floating-point tensor is ever written, and none is
//! ever loaded: a NaN or infinity in a weight or a BatchNorm statistic is a
//! diverged model, and both sides refuse it by name. A parameter stored as an
//! integer or bool tensor is refused by name too (casting it would give a
//! model of rounded or zero weights that still "loads"). When the names do not
//! fit, the error says what the file's names look like ([`KeyLayout`]) and
//! what to pass instead.

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
    let not_float: Vec<_> = file
        .iter()
        .filter(|(name, t)| vars.contains_key(*name) && !t.is_floating_point())
        .collect();
    if let Some((name, t)) = not_float.first() {
        return Err(ckpt_err(
            path,
            format!(
                "tensor {name} is {}, not floating point ({} of {} tensors are): \
                 weights would be rounded; export the model's float weights",
                kind_name(t.kind()),
                not_float.len(),
                vars.len()
            ),
        ));
    }
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
        if let Some(hint) = KeyLayout::of(file.keys(), &vars).hint() {
            return Err(ckpt_err(
                path,
                format!("does not fit architecture {arch}: {hint}"),
            ));
        }
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

/// A tensor type as PyTorch spells it (`int32`, `bool`).
fn kind_name(kind: tch::Kind) -> String {
    use tch::Kind::*;
    match kind {
        Uint8 => "uint8".into(),
        Int8 => "int8".into(),
        Int16 => "int16".into(),
        Int => "int32".into(),
        Int64 => "int64".into(),
        Bool => "bool".into(),
        other => format!("{other:?}"),
    }
}

/// What a file's tensor names look like, when they are a known layout that is
/// not a plain weights file of the architecture asked for.
#[derive(Debug, PartialEq)]
enum KeyLayout {
    /// Every name is a model name under DataParallel's `module.` prefix.
    DataParallel,
    /// A run's training checkpoint: weights under `model.`, momentum under `optim.`.
    RunCheckpoint,
    /// Anything else (the plain mismatch list says more).
    Other,
}

impl KeyLayout {
    fn of<'a>(
        keys: impl IntoIterator<Item = &'a String>,
        vars: &std::collections::HashMap<String, Tensor>,
    ) -> KeyLayout {
        let keys: Vec<&String> = keys.into_iter().collect();
        let stripped = |prefix: &str| -> Option<Vec<&str>> {
            keys.iter().map(|k| k.strip_prefix(prefix)).collect()
        };
        let fits_under = |prefix: &str| {
            stripped(prefix).is_some_and(|names| {
                !names.is_empty() && names.iter().any(|n| vars.contains_key(*n))
            })
        };
        if fits_under("module.") {
            return KeyLayout::DataParallel;
        }
        let has = |prefix: &str| keys.iter().any(|k| k.starts_with(prefix));
        let state = keys.iter().any(|k| k.starts_with("__state__"));
        if has("model.") && (has("optim.") || state) {
            return KeyLayout::RunCheckpoint;
        }
        KeyLayout::Other
    }

    /// What the names look like and what to pass instead.
    fn hint(&self) -> Option<&'static str> {
        match self {
            KeyLayout::DataParallel => Some(
                "every tensor name starts with `module.` (a state_dict saved from \
                 torch.nn.DataParallel); write a copy without the prefix with \
                 `.venv/bin/python scripts/convert_checkpoint.py FILE OUT.safetensors` and pass OUT",
            ),
            KeyLayout::RunCheckpoint => Some(
                "this is a run's training checkpoint (checkpoint.safetensors: weights under \
                 `model.`, optimizer state under `optim.`), used by --resume; pass the run \
                 folder's final.safetensors or best.safetensors instead",
            ),
            KeyLayout::Other => None,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use tch::{nn, Device, Kind};

    /// A small stand-in model: `conv1.weight`, `linear.weight`, `linear.bias`.
    fn store() -> VarStore {
        let vs = VarStore::new(Device::Cpu);
        let root = vs.root();
        let _ = nn::conv2d(&root / "conv1", 3, 4, 3, Default::default());
        let _ = nn::linear(&root / "linear", 4, 10, Default::default());
        vs
    }

    /// The store's tensors with each name passed through `rename`.
    fn renamed(vs: &VarStore, rename: impl Fn(&str) -> String) -> BTreeMap<String, Tensor> {
        vs.variables()
            .into_iter()
            .map(|(n, t)| (rename(&n), t.detach().copy()))
            .collect()
    }

    fn load_error(file: BTreeMap<String, Tensor>) -> String {
        let mut vs = store();
        load_map_into(&mut vs, file, Path::new("w.safetensors"), "net")
            .unwrap_err()
            .to_string()
    }

    #[test]
    fn integer_weights_are_refused_by_name() {
        let vs = store();
        let mut file = renamed(&vs, str::to_string);
        let int = file["linear.weight"].to_kind(Kind::Int);
        file.insert("linear.weight".into(), int);
        let e = load_error(file);
        assert!(
            e.contains("tensor linear.weight is int32, not floating point (1 of"),
            "{e}"
        );
        // Every tensor as int32, as a wrong conversion writes them.
        let file = renamed(&vs, str::to_string)
            .into_iter()
            .map(|(n, t)| (n, t.to_kind(Kind::Int)))
            .collect();
        let e = load_error(file);
        assert!(e.contains("is int32, not floating point (4 of 4"), "{e}");
        // Float tensors of another width load (as PyTorch's load_state_dict casts them).
        let file = renamed(&vs, str::to_string)
            .into_iter()
            .map(|(n, t)| (n, t.to_kind(Kind::Double)))
            .collect();
        load_map_into(&mut store(), file, Path::new("w"), "net").unwrap();
    }

    #[test]
    fn module_prefixes_and_run_checkpoints_say_what_to_pass() {
        let vs = store();
        let e = load_error(renamed(&vs, |n| format!("module.{n}")));
        assert!(
            e.contains("starts with `module.`") && e.contains("scripts/convert_checkpoint.py"),
            "{e}"
        );
        let mut run = renamed(&vs, |n| format!("model.{n}"));
        run.insert(
            "optim.linear.bias".into(),
            Tensor::zeros([10], (Kind::Float, Device::Cpu)),
        );
        let e = load_error(run);
        assert!(
            e.contains("training checkpoint")
                && e.contains("final.safetensors or best.safetensors"),
            "{e}"
        );
        // A plain mismatch keeps the list of differences.
        let mut other = renamed(&vs, str::to_string);
        other.remove("linear.bias");
        let e = load_error(other);
        assert!(e.contains("missing linear.bias"), "{e}");
    }
}
