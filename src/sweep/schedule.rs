//! The scheduler shared by the local and Ray backends: at most `parallel`
//! tasks at once, a task whose done file exists is skipped (resumable), a
//! failed task is retried up to `retries` times, every failure is reported.
//! A task is one process of this binary: a sweep's run (`--config CONFIG`,
//! done when its `summary.json` exists; [`super::manifest::SweepDir::task`])
//! or a shard of a split evaluation (`eval ... --shard I/N --json PART`, done
//! when its part exists; [`super::eval_shards`]).

use crate::error::{Error, Result};
use std::collections::VecDeque;
use std::ffi::OsString;
use std::path::PathBuf;
use std::time::{Duration, Instant};

/// One process of this binary to run to success.
#[derive(Debug, Clone)]
pub struct Task {
    pub index: usize,
    /// Its name in messages, logs and Ray submission ids (no `/`).
    pub name: String,
    /// The arguments after the executable.
    pub args: Vec<OsString>,
    /// The file whose presence means the task finished (written last, atomically).
    pub done: PathBuf,
    /// Where its output goes (appended to, one header line per attempt).
    pub log: PathBuf,
}

impl Task {
    /// The done file's name, for messages (`summary.json`).
    pub fn done_name(&self) -> String {
        self.done.file_name().map_or_else(
            || self.done.display().to_string(),
            |n| n.to_string_lossy().into_owned(),
        )
    }

    /// The arguments as one line (for a log header or a shell).
    pub fn args_text(&self, quote: impl Fn(&str) -> String) -> String {
        let args: Vec<String> = self
            .args
            .iter()
            .map(|a| quote(&a.to_string_lossy()))
            .collect();
        args.join(" ")
    }
}

/// How one attempt ended.
#[derive(Debug, Clone)]
pub enum Attempt {
    Succeeded,
    /// Why (exit code, job status) and the last lines of its log.
    Failed {
        reason: String,
        log_tail: String,
    },
}

/// Starts and watches tasks on one engine.
pub trait Executor {
    type Handle;
    /// Starts attempt `attempt` (from 1) of `task`.
    fn start(&mut self, task: &Task, attempt: usize) -> Result<Self::Handle>;
    /// None while the attempt runs.
    fn poll(&mut self, task: &Task, handle: &mut Self::Handle) -> Result<Option<Attempt>>;
    /// Stops an attempt (the scheduler is failing).
    fn stop(&mut self, handle: &mut Self::Handle);
}

/// How a task ended.
#[derive(Debug, Clone, PartialEq)]
pub enum RunStatus {
    /// Its done file existed before the scheduler started it.
    Skipped,
    Succeeded {
        attempts: usize,
        seconds: f64,
    },
    Failed {
        attempts: usize,
        reason: String,
    },
}

#[derive(Debug, Clone)]
pub struct RunResult {
    pub index: usize,
    pub name: String,
    pub status: RunStatus,
}

/// How many tasks at once, how often a failed task is retried, how often the
/// running ones are polled.
#[derive(Debug, Clone, Copy)]
pub struct Policy {
    pub parallel: usize,
    pub retries: usize,
    pub poll: Duration,
}

/// Runs every task to success or exhaustion of its retries; when `stopped`
/// says so (a signal), stops the running attempts and returns
/// [`Error::Cancelled`] (done files written so far stay).
pub fn schedule<E: Executor>(
    exec: &mut E,
    tasks: &[Task],
    policy: Policy,
    stopped: &dyn Fn() -> bool,
    mut say: impl FnMut(&str),
) -> Result<Vec<RunResult>> {
    let Policy {
        parallel,
        retries,
        poll,
    } = policy;
    let mut book = Book {
        tasks,
        retries,
        results: vec![None; tasks.len()],
        pending: VecDeque::new(),
    };
    for (i, r) in tasks.iter().enumerate() {
        if r.done.is_file() {
            say(&format!("skip {} ({} exists)", r.name, r.done_name()));
            book.results[i] = Some(RunStatus::Skipped);
        } else {
            book.pending.push_back((i, 1));
        }
    }
    let mut running: Vec<(usize, usize, E::Handle, Instant)> = Vec::new();
    let outcome = (|| -> Result<()> {
        while !book.pending.is_empty() || !running.is_empty() {
            while running.len() < parallel.max(1) {
                let Some((i, attempt)) = book.pending.pop_front() else {
                    break;
                };
                let r = &tasks[i];
                say(&format!(
                    "start {} (attempt {attempt} of {})",
                    r.name,
                    retries + 1
                ));
                match exec.start(r, attempt) {
                    Ok(h) => running.push((i, attempt, h, Instant::now())),
                    Err(e) => book.finish(
                        i,
                        attempt,
                        Attempt::Failed {
                            reason: format!("could not start: {e}"),
                            log_tail: String::new(),
                        },
                        0.0,
                        &mut say,
                    ),
                }
            }
            std::thread::sleep(poll);
            if stopped() {
                return Err(Error::Cancelled);
            }
            let mut k = 0;
            while k < running.len() {
                let (i, attempt) = (running[k].0, running[k].1);
                let ended = exec.poll(&tasks[i], &mut running[k].2)?;
                match ended {
                    None => k += 1,
                    Some(mut end) => {
                        let (_, _, _, started) = running.remove(k);
                        if matches!(end, Attempt::Succeeded) && !tasks[i].done.is_file() {
                            end = Attempt::Failed {
                                reason: format!(
                                    "finished without writing {}",
                                    tasks[i].done_name()
                                ),
                                log_tail: String::new(),
                            };
                        }
                        book.finish(i, attempt, end, started.elapsed().as_secs_f64(), &mut say);
                    }
                }
            }
        }
        Ok(())
    })();
    if let Err(e) = outcome {
        for (_, _, h, _) in running.iter_mut() {
            exec.stop(h);
        }
        return Err(e);
    }
    Ok(book
        .results
        .into_iter()
        .zip(tasks)
        .map(|(status, r)| RunResult {
            index: r.index,
            name: r.name.clone(),
            status: status.expect("every task ends"),
        })
        .collect())
}

/// The tasks' outcomes so far and the attempts still to start (task, attempt).
struct Book<'a> {
    tasks: &'a [Task],
    retries: usize,
    results: Vec<Option<RunStatus>>,
    pending: VecDeque<(usize, usize)>,
}

impl Book<'_> {
    /// Records how attempt `attempt` of task `i` ended; a failure with retries
    /// left is queued again.
    fn finish(
        &mut self,
        i: usize,
        attempt: usize,
        end: Attempt,
        seconds: f64,
        say: &mut impl FnMut(&str),
    ) {
        let r = &self.tasks[i];
        match end {
            Attempt::Succeeded => {
                say(&format!("done {} in {seconds:.1}s", r.name));
                self.results[i] = Some(RunStatus::Succeeded {
                    attempts: attempt,
                    seconds,
                });
            }
            Attempt::Failed { reason, log_tail } => {
                let mut msg = format!(
                    "FAILED {} (attempt {attempt} of {}): {reason}",
                    r.name,
                    self.retries + 1
                );
                if !log_tail.trim().is_empty() {
                    for line in log_tail.lines() {
                        msg.push_str(&format!("\n    | {line}"));
                    }
                }
                say(&msg);
                if attempt <= self.retries {
                    self.pending.push_back((i, attempt + 1));
                } else {
                    self.results[i] = Some(RunStatus::Failed {
                        attempts: attempt,
                        reason,
                    });
                }
            }
        }
    }
}
