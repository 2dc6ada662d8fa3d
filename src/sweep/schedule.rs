//! The scheduler shared by the local and Ray backends: at most `parallel`
//! runs at once, a run with a `summary.json` is skipped (resumable), a failed
//! run is retried up to `retries` times, every failure is reported.

use super::expand::PlannedRun;
use super::manifest::SweepDir;
use crate::error::Result;
use std::collections::VecDeque;
use std::time::{Duration, Instant};

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

/// Starts and watches runs on one engine.
pub trait Executor {
    type Handle;
    /// Starts attempt `attempt` (from 1) of `run`.
    fn start(&mut self, run: &PlannedRun, attempt: usize) -> Result<Self::Handle>;
    /// None while the attempt runs.
    fn poll(&mut self, run: &PlannedRun, handle: &mut Self::Handle) -> Result<Option<Attempt>>;
    /// Stops an attempt (the sweep is failing).
    fn stop(&mut self, handle: &mut Self::Handle);
}

/// How a run of the sweep ended.
#[derive(Debug, Clone, PartialEq)]
pub enum RunStatus {
    /// Its summary.json existed before the sweep started it.
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

/// How many runs at once, how often a failed run is retried, how often the
/// running ones are polled.
#[derive(Debug, Clone, Copy)]
pub struct Policy {
    pub parallel: usize,
    pub retries: usize,
    pub poll: Duration,
}

/// Runs every run to success or exhaustion of its retries.
pub fn schedule<E: Executor>(
    exec: &mut E,
    runs: &[PlannedRun],
    dir: &SweepDir,
    policy: Policy,
    mut say: impl FnMut(&str),
) -> Result<Vec<RunResult>> {
    let Policy {
        parallel,
        retries,
        poll,
    } = policy;
    let mut book = Book {
        runs,
        retries,
        results: vec![None; runs.len()],
        pending: VecDeque::new(),
    };
    for (i, r) in runs.iter().enumerate() {
        if dir.summary(&r.name).is_file() {
            say(&format!("skip {} (summary.json exists)", r.name));
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
                let r = &runs[i];
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
            let mut k = 0;
            while k < running.len() {
                let (i, attempt) = (running[k].0, running[k].1);
                let ended = exec.poll(&runs[i], &mut running[k].2)?;
                match ended {
                    None => k += 1,
                    Some(mut end) => {
                        let (_, _, _, started) = running.remove(k);
                        if matches!(end, Attempt::Succeeded)
                            && !dir.summary(&runs[i].name).is_file()
                        {
                            end = Attempt::Failed {
                                reason: "finished without writing summary.json".into(),
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
        .zip(runs)
        .map(|(status, r)| RunResult {
            index: r.index,
            name: r.name.clone(),
            status: status.expect("every run ends"),
        })
        .collect())
}

/// The runs' outcomes so far and the attempts still to start (run, attempt).
struct Book<'a> {
    runs: &'a [PlannedRun],
    retries: usize,
    results: Vec<Option<RunStatus>>,
    pending: VecDeque<(usize, usize)>,
}

impl Book<'_> {
    /// Records how attempt `attempt` of run `i` ended; a failure with retries
    /// left is queued again.
    fn finish(
        &mut self,
        i: usize,
        attempt: usize,
        end: Attempt,
        seconds: f64,
        say: &mut impl FnMut(&str),
    ) {
        let r = &self.runs[i];
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
