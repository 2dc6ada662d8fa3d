//! What a run shows a person: a progress bar while it trains, PNG plots
//! of loss, accuracy and per-stage throughput in the run folder, the per-stage
//! table printed at its end, counted nouns for messages; and the check that
//! `ard-pipeline report` is given a sweep folder before it writes anything into it.

pub mod plots;
pub mod plural;
pub mod progress;
pub mod stage_table;

use crate::error::{Error, Result};
use std::path::Path;

/// Refuses, in one line, a `report` folder that is not a sweep folder (one
/// `ard-pipeline sweep` wrote: `manifest.json`, or `configs/` and `runs/`), so
/// that report.md, report.csv and the plots never land in a run folder or
/// any other folder.
pub fn check_sweep_folder(path: &Path) -> Result<()> {
    let refuse = |why: &str| {
        Err(Error::Usage(format!(
            "report {}: {why}; give a sweep folder (sweep.out_dir/sweep.name, \
             which holds manifest.json)",
            path.display()
        )))
    };
    match std::fs::metadata(path) {
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return refuse("no such folder"),
        Err(e) => return refuse(&format!("cannot be read ({e})")),
        Ok(m) if !m.is_dir() => return refuse("is a file, not a folder"),
        Ok(_) => {}
    }
    if path.join("manifest.json").is_file()
        || (path.join("configs").is_dir() && path.join("runs").is_dir())
    {
        return Ok(());
    }
    if path.join("config.toml").is_file() || path.join("summary.json").is_file() {
        return refuse("is a run folder, not a sweep folder");
    }
    refuse("is not a sweep folder (no manifest.json)")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn only_sweep_folders_pass() {
        let dir = tempfile::tempdir().unwrap();
        let err = |p: &Path| check_sweep_folder(p).unwrap_err().to_string();
        assert!(err(&dir.path().join("absent")).contains("no such folder"));
        let file = dir.path().join("f");
        std::fs::write(&file, "").unwrap();
        assert!(err(&file).contains("is a file"));
        let run = dir.path().join("run");
        std::fs::create_dir(&run).unwrap();
        std::fs::write(run.join("config.toml"), "").unwrap();
        assert!(err(&run).contains("is a run folder"), "{}", err(&run));
        let other = dir.path().join("other");
        std::fs::create_dir_all(other.join("runs")).unwrap();
        assert!(err(&other).contains("no manifest.json"));
        let sweep = dir.path().join("sweep");
        std::fs::create_dir(&sweep).unwrap();
        std::fs::write(sweep.join("manifest.json"), "{}").unwrap();
        check_sweep_folder(&sweep).unwrap();
    }
}
