//! The local backend: each task is a child process of this very binary
//! (`std::env::current_exe()`) with the task's arguments (a sweep run's
//! generated config, an evaluation's shard), its output appended to the
//! task's log.

use super::manifest::tail;
use super::schedule::{Attempt, Executor, Task};
use crate::error::{Error, Result};
use std::ffi::OsString;
use std::io::Write;
use std::path::PathBuf;
use std::process::{Child, Command, Stdio};

pub struct Local {
    pub exe: PathBuf,
    /// Set in every child's environment besides this process's own.
    pub env: Vec<(OsString, OsString)>,
}

impl Local {
    pub fn new() -> Result<Local> {
        let exe = std::env::current_exe().map_err(|e| Error::io("/proc/self/exe", e))?;
        Ok(Local {
            exe,
            env: Vec::new(),
        })
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

    fn start(&mut self, task: &Task, attempt: usize) -> Result<LocalHandle> {
        let log_path = &task.log;
        let mut log = std::fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(log_path)
            .map_err(|e| Error::io(log_path, e))?;
        writeln!(
            log,
            "=== attempt {attempt}: {} {}",
            self.exe.display(),
            task.args_text(str::to_string)
        )
        .map_err(|e| Error::io(log_path, e))?;
        let err_log = log.try_clone().map_err(|e| Error::io(log_path, e))?;
        let child = Command::new(&self.exe)
            .args(&task.args)
            .envs(self.env.clone())
            .stdin(Stdio::null())
            .stdout(Stdio::from(log))
            .stderr(Stdio::from(err_log))
            .spawn()
            .map_err(|e| Error::Process(format!("spawn {}: {e}", self.exe.display())))?;
        Ok(LocalHandle { child: Some(child) })
    }

    fn poll(&mut self, task: &Task, handle: &mut LocalHandle) -> Result<Option<Attempt>> {
        let Some(child) = handle.child.as_mut() else {
            return Ok(Some(Attempt::Failed {
                reason: "no process".into(),
                log_tail: String::new(),
            }));
        };
        let status = child
            .try_wait()
            .map_err(|e| Error::Process(format!("waiting for {}: {e}", task.name)))?;
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
                    log_tail: tail(&task.log, 8),
                }
            }
        }))
    }

    fn stop(&mut self, handle: &mut LocalHandle) {
        // Dropping the old handle kills and reaps its child.
        *handle = LocalHandle { child: None };
    }
}
