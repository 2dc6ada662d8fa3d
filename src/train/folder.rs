//! The run folder and the one place that names its files ([`RunFile`]):
//! every file of a run is written and read through a [`RunFolder`]. One
//! process at a time: the folder's lock (`NAME.lock` beside it) is held while
//! a writing [`RunFolder`] lives, and a run that starts afresh never writes
//! into an earlier run's files (they are moved aside first, see
//! [`crate::train::resume::open_run`]). Readers of finished runs (resume,
//! the sweep report and stale check) use [`RunFolder::at`], without the lock.

use super::records::{EpochRecord, EvalRecord, Summary};
use crate::atomic_file::write_text_atomic;
use crate::config::Config;
use crate::error::{Error, Result};
use crate::file_lock::{FileLock, LockError};
use crate::report::plots;
use serde::{de::DeserializeOwned, Serialize};
use std::collections::BTreeMap;
use std::io::Write;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Instant;

/// The files of a run folder.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum RunFile {
    /// The resolved config the run trains with.
    Config,
    /// One [`EpochRecord`](super::records::EpochRecord) a line.
    EpochLog,
    /// One [`EvalRecord`](super::records::EvalRecord) a line.
    EvalLog,
    /// One validation line a validated epoch.
    ValidationLog,
    /// The best-by-validation checkpoint's record and weights.
    BestRecord,
    BestWeights,
    /// The weights at the last epoch end.
    LastWeights,
    /// The run's result (the best weights after a guard roll-back).
    FinalWeights,
    /// The training checkpoint (weights, momentum, position).
    Checkpoint,
    TrainingPlot,
    StagesPlot,
    /// The [`Summary`](super::records::Summary): its presence marks a finished run.
    Summary,
}

impl RunFile {
    pub const fn name(self) -> &'static str {
        match self {
            RunFile::Config => "config.toml",
            RunFile::EpochLog => "metrics.jsonl",
            RunFile::EvalLog => "eval.jsonl",
            RunFile::ValidationLog => "validation.jsonl",
            RunFile::BestRecord => "best.json",
            RunFile::BestWeights => "best.safetensors",
            RunFile::LastWeights => "last.safetensors",
            RunFile::FinalWeights => "final.safetensors",
            RunFile::Checkpoint => "checkpoint.safetensors",
            RunFile::TrainingPlot => "training.png",
            RunFile::StagesPlot => "stages.png",
            RunFile::Summary => "summary.json",
        }
    }
}

impl std::fmt::Display for RunFile {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.name())
    }
}

/// `run.out_dir/run.name`, created and checked for writing up front.
#[derive(Debug, Clone)]
pub struct RunFolder {
    pub path: PathBuf,
    /// The folder's lock, released when the last clone is dropped (None:
    /// a finished run's folder opened for reading, see [`RunFolder::at`]).
    _lock: Option<Arc<FileLock>>,
    /// When this process took the folder: where its share of the run's
    /// wall-clock time starts.
    opened: Instant,
}

/// The folder of `cfg`'s run.
pub fn run_path(cfg: &Config) -> PathBuf {
    cfg.run.out_dir.join(&cfg.run.name)
}

/// Takes the lock of the run folder `path` (`NAME.lock` beside it), so that a
/// second process on the same folder is refused at once, naming the holder.
pub fn lock_run_folder(path: &Path) -> Result<FileLock> {
    let mut name = path.file_name().unwrap_or_default().to_os_string();
    name.push(".lock");
    FileLock::acquire(&path.with_file_name(name)).map_err(|e| match e {
        LockError::Held { lock, holder } => Error::RunFolder {
            path: path.to_owned(),
            message: format!(
                "in use by {holder} (lock file {}); wait for that run to end, or set another run.name",
                lock.display()
            ),
        },
        LockError::Io { path: lock, source } => Error::RunFolder {
            path: path.to_owned(),
            message: format!(
                "cannot create its lock file {} ({source}); set run.out_dir to a writable folder",
                lock.display()
            ),
        },
    })
}

/// Whether `path` holds anything at all.
pub fn has_files(path: &Path) -> bool {
    std::fs::read_dir(path).is_ok_and(|mut d| d.next().is_some())
}

/// Renames the folder `path` to the first free `NAME.previous-N` beside it and
/// returns the new name. The caller holds the folder's lock.
pub fn move_aside(path: &Path) -> Result<PathBuf> {
    let name = path.file_name().unwrap_or_default().to_string_lossy();
    let target = (1..)
        .map(|n| path.with_file_name(format!("{name}.previous-{n}")))
        .find(|p| !p.exists())
        .expect("an unbounded range has a free name");
    std::fs::rename(path, &target).map_err(|e| Error::RunFolder {
        path: path.to_owned(),
        message: format!(
            "cannot move the earlier run's files aside to {} ({e}); nothing was changed",
            target.display()
        ),
    })?;
    Ok(target)
}

impl RunFolder {
    /// Opens the folder of `cfg`'s run under its lock (created when absent)
    /// and writes the resolved config into it. A `resumed` run's records stay
    /// (see [`RunFolder::retain_jsonl`]) and temporary files of a killed process
    /// are removed.
    pub fn open(cfg: &Config, lock: FileLock, resumed: bool) -> Result<RunFolder> {
        let path = run_path(cfg);
        std::fs::create_dir_all(&path).map_err(|e| Error::RunFolder {
            path: path.clone(),
            message: format!("cannot create it ({e}); set run.out_dir to a writable folder"),
        })?;
        let dir = RunFolder {
            path,
            _lock: Some(Arc::new(lock)),
            opened: Instant::now(),
        };
        if resumed {
            dir.remove_stale_temp_files();
        }
        dir.write_text(RunFile::Config, &cfg.to_toml())?;
        Ok(dir)
    }

    /// Removes the `*.tmp-PID` files an interrupted atomic write left behind
    /// (with the folder's lock held, no live process owns one).
    fn remove_stale_temp_files(&self) {
        let Ok(entries) = std::fs::read_dir(&self.path) else {
            return;
        };
        for entry in entries.flatten() {
            let name = entry.file_name().to_string_lossy().into_owned();
            let stale = name
                .rsplit_once(".tmp-")
                .is_some_and(|(_, pid)| pid.parse::<u32>().is_ok());
            if stale && entry.path().is_file() {
                log::info!(
                    "removing {} (left by an interrupted write)",
                    entry.path().display()
                );
                let _ = std::fs::remove_file(entry.path());
            }
        }
    }

    /// Keeps only the records of `name` that `keep` accepts (rewritten
    /// atomically; an absent file stays absent). A line that is not a `T`
    /// is refused as [`RunFolder::read_records`] refuses it.
    pub fn retain_records<T: DeserializeOwned>(
        &self,
        name: RunFile,
        keep: impl Fn(&T) -> bool,
    ) -> Result<()> {
        let path = self.file(name);
        let Ok(text) = std::fs::read_to_string(&path) else {
            return Ok(());
        };
        let mut kept = String::new();
        for (line, record) in text.lines().zip(parse_lines::<T>(&path, &text)?) {
            if record.as_ref().is_some_and(&keep) {
                kept.push_str(line);
                kept.push('\n');
            }
        }
        if kept != text {
            write_text_atomic(&path, &kept)?;
        }
        Ok(())
    }

    /// The records of the JSON-lines file `name` (none when it is absent).
    /// A line that is not a `T` (a record of an older or unknown format) is
    /// refused, naming the file and line; a last line cut short by a killed
    /// process is skipped.
    pub fn read_records<T: DeserializeOwned>(&self, name: RunFile) -> Result<Vec<T>> {
        let path = self.file(name);
        let text = std::fs::read_to_string(&path).unwrap_or_default();
        Ok(parse_lines(&path, &text)?.into_iter().flatten().collect())
    }

    /// The text of file `name`, or the error naming it (absent included).
    pub fn read_text(&self, name: RunFile) -> Result<String> {
        let path = self.file(name);
        std::fs::read_to_string(&path).map_err(|e| Error::io(&path, e))
    }

    /// The JSON file `name` as a `T`: None when it is absent, an error naming
    /// it when it is not a `T`.
    pub fn read_json<T: DeserializeOwned>(&self, name: RunFile) -> Result<Option<T>> {
        let path = self.file(name);
        let Ok(text) = std::fs::read_to_string(&path) else {
            return Ok(None);
        };
        serde_json::from_str(&text)
            .map(Some)
            .map_err(|e| unknown_format(&path, e.line(), &e))
    }

    /// The run finished: `training.png` (loss and accuracy per epoch, from
    /// the records of the whole run, resumptions included), `stages.png`
    /// (per-stage throughput; no bars for an engine without stages), then
    /// `summary.json`, which marks the run finished (resume refuses it). A
    /// plot that cannot be drawn is a warning, not a failure.
    pub fn finish(&self, summary: &Summary) -> Result<()> {
        let epochs: Vec<EpochRecord> = self.read_records(RunFile::EpochLog)?;
        let loss: Vec<(usize, f64)> = epochs.iter().map(|r| (r.epoch, r.mean_loss)).collect();
        let acc: Vec<(usize, BTreeMap<String, f64>)> = self
            .read_records::<EvalRecord>(RunFile::EvalLog)?
            .into_iter()
            .map(|e| (e.epoch, e.report.accuracy.into_iter().collect()))
            .collect();
        let training = plots::training_curves(&self.file(RunFile::TrainingPlot), &loss, &acc);
        let bars: Vec<_> = summary
            .stages
            .iter()
            .map(|s| {
                (
                    s.stage.clone(),
                    s.images_per_s,
                    s.busy_share,
                    s.blocked_share,
                    s.idle_share,
                )
            })
            .collect();
        let stages = plots::stage_throughput(&self.file(RunFile::StagesPlot), &bars);
        for e in [training.err(), stages.err()].into_iter().flatten() {
            log::warn!("{e}");
        }
        let json = serde_json::to_string_pretty(summary).map_err(Error::json("summary"))?;
        self.write_text(RunFile::Summary, &json)
    }

    /// Whether the run in this folder finished (its `summary.json`).
    pub fn finished(&self) -> bool {
        self.has(RunFile::Summary)
    }

    /// The folder at `path`, for reading a run's files (no lock, nothing written).
    pub fn at(path: &Path) -> RunFolder {
        RunFolder {
            path: path.to_owned(),
            _lock: None,
            opened: Instant::now(),
        }
    }

    /// Seconds since this process opened the folder.
    pub fn seconds_open(&self) -> f64 {
        self.opened.elapsed().as_secs_f64()
    }

    /// The path of `file` in this folder.
    pub fn file(&self, file: RunFile) -> PathBuf {
        self.path.join(file.name())
    }

    /// Whether `file` exists in this folder.
    pub fn has(&self, file: RunFile) -> bool {
        self.file(file).is_file()
    }

    /// Saves `model`'s weights as `file`.
    pub fn save_model(&self, file: RunFile, model: &crate::models::Model) -> Result<()> {
        model.save(&self.file(file))
    }

    /// Writes a small text file atomically (temp file + rename).
    pub fn write_text(&self, name: RunFile, text: &str) -> Result<()> {
        write_text_atomic(&self.file(name), text)
    }

    /// Appends one JSON record as a line of `name`.
    pub fn append_jsonl<T: Serialize>(&self, name: RunFile, record: &T) -> Result<()> {
        let path = self.file(name);
        let line = serde_json::to_string(record).map_err(Error::json("run record"))?;
        let mut f = std::fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(&path)
            .map_err(|e| Error::io(&path, e))?;
        writeln!(f, "{line}").map_err(|e| Error::io(&path, e))
    }
}

/// The error for a record this build cannot read, in one line.
fn unknown_format(path: &Path, line: usize, e: &serde_json::Error) -> Error {
    Error::RunFolder {
        path: path.to_owned(),
        message: format!(
            "line {line}: not a record this build reads (an older or unknown format: {e}); \
             start the run afresh with --fresh"
        ),
    }
}

/// Each line of `text` parsed as a `T` (None for a last line cut short:
/// no newline after it).
fn parse_lines<T: DeserializeOwned>(path: &Path, text: &str) -> Result<Vec<Option<T>>> {
    let cut_short = !text.is_empty() && !text.ends_with('\n');
    let count = text.lines().count();
    text.lines()
        .enumerate()
        .map(|(i, line)| match serde_json::from_str(line) {
            Ok(record) => Ok(Some(record)),
            Err(_) if cut_short && i + 1 == count => Ok(None),
            Err(e) => Err(unknown_format(path, i + 1, &e)),
        })
        .collect()
}
