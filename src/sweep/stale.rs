//! Finished rows whose settings changed: a row with a `summary.json` is
//! skipped by the scheduler, so a sweep file edited after it ran (a new
//! `optim.lr` in `[common]`) would leave a folder that claims results never
//! trained with its configs. Such rows are found by comparing each finished
//! run's resolved `config.toml` with the row's new resolved config (the
//! training settings only, as a resumption does), then refused, naming the
//! differences, or moved aside (`--fresh`) so that they run again.

use super::expand::PlannedRun;
use super::manifest::SweepDir;
use crate::error::{Error, Result};
use crate::train::folder::{lock_run_folder, move_aside};
use crate::train::resume::{setting_differences, SettingDiff};
use crate::train::{RunFile, RunFolder};
use std::path::{Path, PathBuf};

/// How many differences one row's line names before "and N more".
const SHOWN_DIFFERENCES: usize = 4;

/// A finished row trained with other settings than the sweep file's now.
#[derive(Debug, Clone, PartialEq)]
pub struct StaleRow {
    pub index: usize,
    pub name: String,
    /// What changed; empty when the run's `config.toml` is missing or unreadable
    /// (`problem` says which).
    pub differences: Vec<SettingDiff>,
    pub problem: Option<String>,
}

impl StaleRow {
    /// `row 0 (NAME): optim.lr: was 0.05, now 0.2; ...`.
    pub fn line(&self) -> String {
        let what = match &self.problem {
            Some(p) => p.clone(),
            None => {
                let mut parts: Vec<String> = self
                    .differences
                    .iter()
                    .take(SHOWN_DIFFERENCES)
                    .map(|d| format!("{}: was {}, now {}", d.key, d.old, d.new))
                    .collect();
                if self.differences.len() > SHOWN_DIFFERENCES {
                    parts.push(format!(
                        "and {} more",
                        self.differences.len() - SHOWN_DIFFERENCES
                    ));
                }
                parts.join("; ")
            }
        };
        format!("row {} ({}): {what}", self.index, self.name)
    }
}

/// The finished rows of `runs` in `dir` whose training settings differ from
/// the sweep file's now.
pub fn stale_rows(dir: &SweepDir, runs: &[PlannedRun]) -> Vec<StaleRow> {
    runs.iter()
        .map(|r| (r, RunFolder::at(&dir.run(&r.name))))
        .filter(|(_, folder)| folder.finished())
        .filter_map(|(r, folder)| {
            let saved = folder.file(RunFile::Config);
            let (differences, problem) = match folder.read_text(RunFile::Config) {
                Err(e) => (Vec::new(), Some(e.to_string())),
                Ok(text) => match setting_differences(&text, &r.config) {
                    Ok(d) => (d, None),
                    Err(e) => (Vec::new(), Some(format!("{}: {e}", saved.display()))),
                },
            };
            (!differences.is_empty() || problem.is_some()).then(|| StaleRow {
                index: r.index,
                name: r.name.clone(),
                differences,
                problem,
            })
        })
        .collect()
}

/// The error for finished rows that changed (`sweep_file` names the file).
pub fn refusal(sweep_file: &Path, stale: &[StaleRow]) -> Error {
    let lines: Vec<String> = stale.iter().map(StaleRow::line).collect();
    Error::config(
        sweep_file.display().to_string(),
        format!(
            "{} finished row(s) were trained with other settings than the file's now, so their \
             results would not be what the sweep says:\n  {}\nrerun them with `ard-pipeline sweep --fresh` \
             (their run folders move to NAME.previous-N), or restore the settings",
            stale.len(),
            lines.join("\n  ")
        ),
    )
}

/// Moves the run folders of `stale` aside (each under its lock) so that
/// they run again; returns where each went.
pub fn move_aside_rows(dir: &SweepDir, stale: &[StaleRow]) -> Result<Vec<PathBuf>> {
    stale
        .iter()
        .map(|row| {
            let folder = dir.run(&row.name);
            let _lock = lock_run_folder(&folder)?;
            move_aside(&folder)
        })
        .collect()
}
