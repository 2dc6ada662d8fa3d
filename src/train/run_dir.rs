//! The run folder: resolved config, per-epoch `metrics.jsonl`, eval results,
//! checkpoints.

use crate::config::Config;
use crate::error::{Error, Result};
use serde::Serialize;
use std::io::Write;
use std::path::{Path, PathBuf};

/// `run.out_dir/run.name`, created and checked for writing up front.
#[derive(Debug, Clone)]
pub struct RunDir {
    pub path: PathBuf,
}

impl RunDir {
    /// Creates the folder and writes the resolved config into it.
    pub fn create(cfg: &Config) -> Result<RunDir> {
        let path = cfg.run.out_dir.join(&cfg.run.name);
        create_run_folder(&path)?;
        let dir = RunDir { path };
        // A new run starts its per-epoch records and its checkpoint afresh.
        for name in [
            "metrics.jsonl",
            "eval.jsonl",
            super::resume::CHECKPOINT_FILE,
        ] {
            let file = dir.file(name);
            if file.exists() {
                log::info!(
                    "replacing {} from an earlier run of the same name",
                    file.display()
                );
                std::fs::remove_file(&file).map_err(|e| Error::io(&file, e))?;
            }
        }
        dir.write_text("config.toml", &cfg.to_toml())?;
        Ok(dir)
    }

    /// Opens the folder of a run being resumed: its records stay (see
    /// [`RunDir::retain_jsonl`]), the config is written again.
    pub fn reopen(cfg: &Config) -> Result<RunDir> {
        let path = cfg.run.out_dir.join(&cfg.run.name);
        create_run_folder(&path)?;
        let dir = RunDir { path };
        dir.write_text("config.toml", &cfg.to_toml())?;
        Ok(dir)
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
        let line = serde_json::to_string(record).map_err(|e| Error::Other(e.to_string()))?;
        let mut f = std::fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(&path)
            .map_err(|e| Error::io(&path, e))?;
        writeln!(f, "{line}").map_err(|e| Error::io(&path, e))
    }
}

fn create_run_folder(path: &Path) -> Result<()> {
    std::fs::create_dir_all(path).map_err(|e| {
        Error::Other(format!(
            "run folder {}: cannot create it ({e}); set run.out_dir to a writable folder",
            path.display()
        ))
    })
}

/// Writes `text` to `path` via a temp file and rename.
pub fn write_text_atomic(path: &Path, text: &str) -> Result<()> {
    let tmp = path.with_extension(format!("tmp-{}", std::process::id()));
    let result = std::fs::write(&tmp, text)
        .and_then(|_| std::fs::File::open(&tmp)?.sync_all())
        .and_then(|_| std::fs::rename(&tmp, path));
    result.map_err(|e| {
        let _ = std::fs::remove_file(&tmp);
        Error::io(path, e)
    })
}
