//! The local backend: each run is a child process of this very binary
//! (`std::env::current_exe()`) with its generated config, its output in
//! `logs/NAME.log`.

use super::expand::PlannedRun;
use super::manifest::{tail, SweepDir};
use super::schedule::{Attempt, Executor};
use crate::error::{Error, Result};
use std::io::Write;
use std::path::PathBuf;
use std::process::{Child, Command, Stdio};

pub struct Local {
    pub exe: PathBuf,
    pub dir: SweepDir,
}

impl Local {
    pub fn new(dir: SweepDir) -> Result<Local> {
        let exe = std::env::current_exe().map_err(|e| Error::io("/proc/self/exe", e))?;
        Ok(Local { exe, dir })
    }
}

/// A running child, killed by PID if the sweep stops early.
pub struct LocalHandle {
    child: Option<Child>,
}

impl Drop for LocalHandle {
    fn drop(&mut self) {
        if let Some(mut c) = self.child.take() {
            let _ = c.kill();
            let _ = c.wait();
        }
    }
}

impl Executor for Local {
    type Handle = LocalHandle;

    fn start(&mut self, run: &PlannedRun, attempt: usize) -> Result<LocalHandle> {
        let log_path = self.dir.log(&run.name);
        let mut log = std::fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(&log_path)
            .map_err(|e| Error::io(&log_path, e))?;
        writeln!(
            log,
            "=== attempt {attempt}: {} --config {}",
            self.exe.display(),
            self.dir.config(&run.name).display()
        )
        .map_err(|e| Error::io(&log_path, e))?;
        let err_log = log.try_clone().map_err(|e| Error::io(&log_path, e))?;
        let child = Command::new(&self.exe)
            .arg("--config")
            .arg(self.dir.config(&run.name))
            .stdin(Stdio::null())
            .stdout(Stdio::from(log))
            .stderr(Stdio::from(err_log))
            .spawn()
            .map_err(|e| Error::Process(format!("spawn {}: {e}", self.exe.display())))?;
        Ok(LocalHandle { child: Some(child) })
    }

    fn poll(&mut self, run: &PlannedRun, handle: &mut LocalHandle) -> Result<Option<Attempt>> {
        let Some(child) = handle.child.as_mut() else {
            return Ok(Some(Attempt::Failed {
                reason: "no process".into(),
                log_tail: String::new(),
            }));
        };
        let status = child
            .try_wait()
            .map_err(|e| Error::Process(format!("waiting for {}: {e}", run.name)))?;
        Ok(status.map(|s| {
            handle.child = None;
            if s.success() {
                Attempt::Succeeded
            } else {
                Attempt::Failed {
                    reason: match s.code() {
                        Some(c) => format!("exit code {c}"),
                        None => format!("killed ({s})"),
                    },
                    log_tail: tail(&self.dir.log(&run.name), 8),
                }
            }
        }))
    }

    fn stop(&mut self, handle: &mut LocalHandle) {
        // Dropping the old handle kills and reaps its child.
        *handle = LocalHandle { child: None };
    }
}
