//! The training checkpoint, `checkpoint.safetensors` in the run folder,
//! replaced atomically (the previous one stays until the new one is complete):
//! the student's variables (weights and BatchNorm statistics) under `model.`,
//! the optimiser's momentum under `optim.`, and a JSON [`TrainState`] (bytes
//! under `__state__`): the data position (which also fixes the learning-rate
//! schedule), the running epoch figures, the finished epochs, and the resolved
//! config the run was started with.
//!
//! No random-generator state is saved: every random draw of training (shuffle,
//! augmentation views, attack random starts) is keyed by (seed, epoch, index)
//! or (seed, step), so the position determines it. The soft-label cache saves
//! itself (entries missing after a kill are recomputed bit-identically), and
//! `eval.jsonl` is trimmed to the checkpoint on resume.

use super::folder::{self, RunFile, RunFolder};
use super::records::{EpochRecord, EvalRecord};
use crate::checkpoint::ckpt_err;
use crate::config::{Config, ResumePolicy};
use crate::distill::Sgd;
use crate::error::{Error, Result};
use crate::models::Model;
use serde::{Deserialize, Serialize};
use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use tch::{Kind, Tensor};

const STATE_KEY: &str = "__state__";
const MODEL_PREFIX: &str = "model.";
const OPTIM_PREFIX: &str = "optim.";
const FORMAT: u32 = 1;

/// Config keys that may change between a run and its resumption: they do not
/// change what is trained (where things are, what is evaluated, how it is
/// served). Anything else must match.
const MAY_CHANGE: &[&str] = &[
    "run.resume",
    "run.threads",
    "run.out_dir",
    // The folder may be renamed: the name says where the run lives, not what it trains.
    "run.name",
    "run.save_final",
    "run.checkpoint_every_steps",
    "data.root",
    "data.download",
    "data.checksums",
    "teacher.cache_dir",
    "teacher.soft_labels",
    "teacher.cache_dtype",
    "eval.",
    "metrics.",
    "pipeline.stall_timeout_s",
    "pipeline.queue_capacity",
    "pipeline.compute",
    // Same weights bit for bit either way (tests/perf_paths.rs).
    "perf.clean_forward_no_grad",
    "perf.malloc_reuse",
];

/// Where training stands: the next step to run.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct TrainPosition {
    /// Optimisation steps done (the next step's global index).
    pub step: usize,
    /// Epoch of the next step, from 0.
    pub epoch: usize,
    /// Batches of that epoch already done.
    pub batch_in_epoch: usize,
    /// Running figures of the unfinished epoch.
    pub epoch_loss_sum: f64,
    pub epoch_images: usize,
    pub epoch_seconds: f64,
    /// Training seconds spent so far against `train.max_seconds` (0 without a budget).
    #[serde(default)]
    pub train_seconds: f64,
}

/// The JSON part of a checkpoint.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct TrainState {
    pub format: u32,
    pub position: TrainPosition,
    /// Epochs completed so far.
    pub epochs: Vec<EpochRecord>,
    /// Always false when written: a finished run is marked by its
    /// `summary.json` (the checkpoint is not rewritten). A checkpoint that
    /// says true is refused like a finished run.
    #[serde(default)]
    pub finished: bool,
    /// Student architecture.
    pub arch: String,
    /// The resolved config the run was started with (TOML).
    pub config: String,
    /// Wall-clock seconds of the run up to this checkpoint: every earlier
    /// process's up to its last checkpoint, plus this one's.
    #[serde(default)]
    pub wall_s: f64,
}

impl TrainState {
    pub fn new(
        cfg: &Config,
        position: TrainPosition,
        epochs: Vec<EpochRecord>,
        wall_s: f64,
    ) -> Self {
        TrainState {
            format: FORMAT,
            position,
            epochs,
            finished: false,
            arch: cfg.student.arch.to_string(),
            config: cfg.to_toml(),
            wall_s,
        }
    }
}

/// A checkpoint read back.
#[derive(Debug)]
pub struct Checkpoint {
    pub path: PathBuf,
    pub state: TrainState,
    model: BTreeMap<String, Tensor>,
    optim: BTreeMap<String, Tensor>,
}

/// Writes the checkpoint of `student` and `sgd` at `state` to `path`
/// atomically. Non-finite weights are refused by
/// [`crate::checkpoint::write_atomic`] (the previous checkpoint, the last good
/// one, stays).
pub fn write(path: &Path, student: &Model, sgd: &Sgd, state: &TrainState) -> Result<()> {
    let mut tensors = Vec::new();
    for (name, t) in student.vs.variables() {
        tensors.push((
            format!("{MODEL_PREFIX}{name}"),
            t.to_device(tch::Device::Cpu).contiguous(),
        ));
    }
    for (name, t) in sgd.state_tensors() {
        tensors.push((format!("{OPTIM_PREFIX}{name}"), t.contiguous()));
    }
    let json = serde_json::to_vec(state).map_err(Error::json("training state"))?;
    tensors.push((STATE_KEY.to_string(), Tensor::from_slice(&json)));
    crate::checkpoint::write_atomic(path, &tensors)
}

/// Reads a checkpoint; a file that is not one is an error naming it.
pub fn read(path: &Path) -> Result<Checkpoint> {
    let mut all = crate::checkpoint::read(path)?;
    let state = all
        .remove(STATE_KEY)
        .ok_or_else(|| ckpt_err(path, "not a training checkpoint (no training state)"))?;
    if state.kind() != Kind::Uint8 {
        return Err(ckpt_err(path, "training state is not bytes"));
    }
    let bytes = Vec::<u8>::try_from(&state)
        .map_err(|e| ckpt_err(path, format!("training state unreadable: {e}")))?;
    let state: TrainState = serde_json::from_slice(&bytes)
        .map_err(|e| ckpt_err(path, format!("training state unreadable: {e}")))?;
    if state.format != FORMAT {
        return Err(ckpt_err(
            path,
            format!(
                "checkpoint format {} (this build reads {FORMAT})",
                state.format
            ),
        ));
    }
    let (mut model, mut optim) = (BTreeMap::new(), BTreeMap::new());
    for (name, t) in all {
        if let Some(n) = name.strip_prefix(MODEL_PREFIX) {
            model.insert(n.to_string(), t);
        } else if let Some(n) = name.strip_prefix(OPTIM_PREFIX) {
            optim.insert(n.to_string(), t);
        } else {
            return Err(ckpt_err(path, format!("unexpected entry {name}")));
        }
    }
    for (prefix, tensors) in [(MODEL_PREFIX, &model), (OPTIM_PREFIX, &optim)] {
        if let Some(name) = crate::checkpoint::first_non_finite(tensors) {
            return Err(ckpt_err(
                path,
                format!("tensor {prefix}{name} holds NaN or infinite values: the run diverged before this checkpoint was written"),
            ));
        }
    }
    Ok(Checkpoint {
        path: path.to_path_buf(),
        state,
        model,
        optim,
    })
}

impl Checkpoint {
    /// Loads the saved weights into `student` and the momentum into `sgd`
    /// (strictly: names and shapes must match).
    pub fn restore(&self, student: &mut Model, sgd: &mut Sgd) -> Result<()> {
        let arch = student.arch.to_string();
        let model = self
            .model
            .iter()
            .map(|(k, v)| (k.clone(), v.shallow_clone()))
            .collect();
        crate::checkpoint::load_map_into(&mut student.vs, model, &self.path, &arch)?;
        sgd.load_state(&self.optim)
            .map_err(|e| ckpt_err(&self.path, e.to_string()))
    }
}

fn flatten(prefix: &str, value: &toml::Value, out: &mut BTreeMap<String, String>) {
    match value {
        toml::Value::Table(t) => {
            for (k, v) in t {
                let key = if prefix.is_empty() {
                    k.clone()
                } else {
                    format!("{prefix}.{k}")
                };
                flatten(&key, v, out);
            }
        }
        other => {
            out.insert(prefix.to_string(), other.to_string());
        }
    }
}

/// One training setting that differs between two resolved configs.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SettingDiff {
    /// Dotted key, e.g. `optim.lr`.
    pub key: String,
    /// Its value in the earlier config (`(unset)` when absent).
    pub old: String,
    /// Its value in the new config (`(unset)` when absent).
    pub new: String,
}

/// The training settings (all but [`MAY_CHANGE`]) that differ between the
/// resolved config `saved` (TOML, as a run folder or checkpoint keeps it)
/// and `cfg`, in key order.
pub fn setting_differences(saved: &str, cfg: &Config) -> Result<Vec<SettingDiff>> {
    let parse = |text: &str| -> Result<BTreeMap<String, String>> {
        let value: toml::Value = toml::from_str(text).map_err(|e| Error::Config {
            file: "the earlier run's config".into(),
            message: format!("unreadable: {e}"),
        })?;
        let mut flat = BTreeMap::new();
        flatten("", &value, &mut flat);
        flat.retain(|k, _| !MAY_CHANGE.iter().any(|p| k == p || k.starts_with(p)));
        Ok(flat)
    };
    let (old, new) = (parse(saved)?, parse(&cfg.to_toml())?);
    let keys: std::collections::BTreeSet<&String> = old.keys().chain(new.keys()).collect();
    let none = "(unset)".to_string();
    Ok(keys
        .into_iter()
        .filter(|k| old.get(*k) != new.get(*k))
        .map(|k| SettingDiff {
            key: k.clone(),
            old: old.get(k).unwrap_or(&none).clone(),
            new: new.get(k).unwrap_or(&none).clone(),
        })
        .collect())
}

/// The training settings that differ between the checkpoint's config and
/// `cfg`, as `key: checkpoint X, config Y` lines.
pub fn config_differences(saved: &str, cfg: &Config) -> Result<Vec<String>> {
    Ok(setting_differences(saved, cfg)?
        .into_iter()
        .map(|d| format!("{}: checkpoint {}, config {}", d.key, d.old, d.new))
        .collect())
}

/// Opens the run folder of `cfg` under its lock and decides, per
/// `run.resume`, whether the run continues from its checkpoint:
/// - an unfinished checkpoint is resumed (`auto`, `always`); its records stay
///   up to the checkpoint and the later ones are dropped (they are redone);
/// - a finished run (its `summary.json`) is never touched unless the user
///   asks: `auto` refuses, naming `--fresh`;
/// - starting afresh (`never`, i.e. `--fresh`, or `auto` on leftovers of a run
///   killed before its first checkpoint) first moves the earlier files to
///   `NAME.previous-N`, so that no folder ever mixes two runs.
pub fn open_run(cfg: &Config) -> Result<(RunFolder, Option<Checkpoint>)> {
    let path = folder::run_path(cfg);
    let lock = folder::lock_run_folder(&path)?;
    let checkpoint = checkpoint_to_resume(cfg, &RunFolder::at(&path))?;
    let Some(ckpt) = checkpoint else {
        if folder::has_files(&path) {
            let aside = folder::move_aside(&path)?;
            log::warn!(
                "{}: the earlier run's files were moved to {} (this run starts afresh)",
                path.display(),
                aside.display()
            );
        }
        return Ok((RunFolder::open(cfg, lock, false)?, None));
    };
    let dir = RunFolder::open(cfg, lock, true)?;
    let done = ckpt.state.epochs.len();
    let step = ckpt.state.position.step;
    dir.retain_records(RunFile::EpochLog, |r: &EpochRecord| r.epoch <= done)?;
    dir.retain_records(RunFile::EvalLog, |r: &EvalRecord| r.step <= step)?;
    log::info!(
        "resuming {} at step {} (epoch {}, batch {})",
        ckpt.path.display(),
        step,
        ckpt.state.position.epoch + 1,
        ckpt.state.position.batch_in_epoch
    );
    Ok((dir, Some(ckpt)))
}

/// The checkpoint in `folder` that `cfg`'s `run.resume` continues from
/// (None: start afresh); a finished run, or a config that differs in a
/// training setting, is refused.
fn checkpoint_to_resume(cfg: &Config, folder: &RunFolder) -> Result<Option<Checkpoint>> {
    let path = folder.file(RunFile::Checkpoint);
    let fresh_hint =
        "start afresh with --fresh (or run.resume = \"never\"), or use another run.name";
    let finished = folder.finished();
    match cfg.run.resume {
        ResumePolicy::Never => Ok(None),
        ResumePolicy::Auto | ResumePolicy::Always if path.exists() => {
            let ckpt = read(&path).map_err(|e| Error::RunFolder {
                path: folder.path.clone(),
                message: format!("{e}; {fresh_hint}"),
            })?;
            if ckpt.state.finished || finished {
                return Err(finished_run_error(&folder.path, cfg.run.resume));
            }
            let diffs = config_differences(&ckpt.state.config, cfg)?;
            if !diffs.is_empty() {
                return Err(ckpt_err(
                    &path,
                    format!(
                        "cannot resume: the config differs from the checkpoint's in {} setting(s): {}; {fresh_hint}",
                        diffs.len(),
                        diffs[..diffs.len().min(6)].join("; ")
                    ),
                ));
            }
            Ok(Some(ckpt))
        }
        ResumePolicy::Auto | ResumePolicy::Always if finished => {
            Err(finished_run_error(&folder.path, cfg.run.resume))
        }
        ResumePolicy::Always => Err(ckpt_err(
            &path,
            "nothing to resume: no checkpoint in the run folder",
        )),
        ResumePolicy::Auto => Ok(None),
    }
}

/// A finished run's folder is left as it is unless the user says otherwise.
fn finished_run_error(folder: &Path, policy: ResumePolicy) -> Error {
    let what = if policy == ResumePolicy::Always {
        "nothing to resume: it holds a finished run".to_string()
    } else {
        format!(
            "holds a finished run ({}); its files were left as they are",
            RunFile::Summary
        )
    };
    Error::RunFolder {
        path: folder.to_owned(),
        message: format!(
            "{what}. To train it again, pass --fresh (the finished run's files move to {}.previous-N), or set another run.name",
            folder.display()
        ),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn training_settings_must_match_but_serving_ones_may_change() {
        let cfg = Config::default();
        let saved = cfg.to_toml();
        let mut same = cfg.clone();
        same.metrics.listen = "127.0.0.1:1".into();
        same.eval.test_limit = Some(7);
        same.run.threads = Some(1);
        assert!(config_differences(&saved, &same).unwrap().is_empty());
        let mut other = cfg.clone();
        other.optim.lr = crate::config::Real(0.5);
        other.train.epochs = 99;
        let diffs = config_differences(&saved, &other).unwrap();
        assert_eq!(diffs.len(), 2, "{diffs:?}");
        assert!(
            diffs.iter().any(|d| d.starts_with("optim.lr:")),
            "{diffs:?}"
        );
        assert!(
            diffs.iter().any(|d| d.starts_with("train.epochs:")),
            "{diffs:?}"
        );
    }
}
