//! The run folder: resolved config, per-epoch `metrics.jsonl`, eval results,
//! checkpoints. One process at a time: the folder's lock (`NAME.lock` beside
//! it) is held while a [`RunDir`] lives, and a run that starts afresh never
//! writes into an earlier run's files (they are moved aside first, see
//! [`crate::train::resume::open_run`]).

use crate::atomic_file::write_text_atomic;
use crate::config::Config;
use crate::error::{Error, Result};
use crate::file_lock::{FileLock, LockError};
use serde::{de::DeserializeOwned, Serialize};
use std::io::Write;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Instant;

/// `run.out_dir/run.name`, created and checked for writing up front.
#[derive(Debug, Clone)]
pub struct RunDir {
    pub path: PathBuf,
    /// The folder's lock, released when the last clone is dropped.
    _lock: Arc<FileLock>,
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

impl RunDir {
    /// Opens the folder of `cfg`'s run under its lock (created when absent)
    /// and writes the resolved config into it. A `resumed` run's records stay
    /// (see [`RunDir::retain_jsonl`]) and temporary files of a killed process
    /// are removed.
    pub fn open(cfg: &Config, lock: FileLock, resumed: bool) -> Result<RunDir> {
        let path = run_path(cfg);
        std::fs::create_dir_all(&path).map_err(|e| Error::RunFolder {
            path: path.clone(),
            message: format!("cannot create it ({e}); set run.out_dir to a writable folder"),
        })?;
        let dir = RunDir {
            path,
            _lock: Arc::new(lock),
            opened: Instant::now(),
        };
        if resumed {
            dir.remove_stale_temp_files();
        }
        dir.write_text("config.toml", &cfg.to_toml())?;
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

    /// Keeps only the JSON lines of `name` that `keep` accepts (rewritten
    /// atomically; an absent file stays absent).
    pub fn retain_jsonl(
        &self,
        name: &str,
        keep: impl Fn(&serde_json::Value) -> bool,
    ) -> Result<()> {
        let path = self.file(name);
        let Ok(text) = std::fs::read_to_string(&path) else {
            return Ok(());
        };
        let kept: String = text
            .lines()
            .filter(|l| serde_json::from_str(l).is_ok_and(|v| keep(&v)))
            .map(|l| format!("{l}\n"))
            .collect();
        if kept != text {
            write_text_atomic(&path, &kept)?;
        }
        Ok(())
    }

    /// The records of the JSON-lines file `name` that parse as `T` (none
    /// when it is absent).
    pub fn read_jsonl<T: DeserializeOwned>(&self, name: &str) -> Vec<T> {
        std::fs::read_to_string(self.file(name))
            .unwrap_or_default()
            .lines()
            .filter_map(|l| serde_json::from_str(l).ok())
            .collect()
    }

    /// Seconds since this process opened the folder.
    pub fn seconds_open(&self) -> f64 {
        self.opened.elapsed().as_secs_f64()
    }

    pub fn file(&self, name: &str) -> PathBuf {
        self.path.join(name)
    }

    /// Writes a small text file atomically (temp file + rename).
    pub fn write_text(&self, name: &str, text: &str) -> Result<()> {
        write_text_atomic(&self.file(name), text)
    }

    /// Appends one JSON record as a line of `name`.
    pub fn append_jsonl<T: Serialize>(&self, name: &str, record: &T) -> Result<()> {
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
