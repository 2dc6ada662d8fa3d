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
        std::fs::create_dir_all(&path).map_err(|e| Error::io(&path, e))?;
        let dir = RunDir { path };
        // A new run starts its per-epoch records afresh.
        for name in ["metrics.jsonl", "eval.jsonl"] {
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
