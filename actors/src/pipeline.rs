//! Building, running and joining a pipeline: [`PipelineBuilder`], [`Chain`],
//! [`PipelineHandle`].
//!
//! ```ignore
//! let builder = PipelineBuilder::new(&registry, PipelineOptions::default())?;
//! let cancel = builder.cancel_token(); // hand to a signal handler
//! let handle = builder
//!     .source(data, 4)?          // capacity of the queue data -> teacher
//!     .stage(teacher, 4)?        // teacher -> attack
//!     .stage(attack, 2)?         // attack -> student
//!     .stage(student, 1)?        // student -> eval
//!     .sink(eval)?
//!     .run()?;
//! let summary = handle.join()?;
//! println!("{summary}");
//! ```
//!
//! The chain is typed: each stage's input type must be the previous stage's output
//! type. A sink (a `Stage` with `Out = ()`) ends a chain and gives the builder back,
//! so a pipeline may hold several independent chains that share cancellation,
//! failure and metrics (for example an evaluator fed from a [`Mailbox`]).
//!
//! [`Mailbox`]: crate::Mailbox

use std::collections::{HashMap, HashSet};
use std::sync::Arc;
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

use crossbeam_channel::{Receiver, RecvTimeoutError, Sender};
use prometheus::Registry;

use crate::cancel::CancelToken;
use crate::driver::{self, NodeBody, NodeContext};
use crate::emitter::Emitter;
use crate::error::PipelineError;
use crate::inbox::Inbox;
use crate::lane::LaneServer;
use crate::metrics::PipelineMetrics;
use crate::metrics_names::queue_name;
use crate::stage::{Message, Source, Stage};
use crate::stats::{RunSummary, StageStats, StatsReader};
use crate::supervisor::Supervisor;
use crate::watchdog::{BusyClock, Watchdog, Watched};

/// How often `join` re-checks for stalled stages and the shutdown deadline.
const JOIN_POLL: Duration = Duration::from_millis(20);

/// How a pipeline runs (not what it computes).
#[derive(Clone, Debug)]
pub struct PipelineOptions {
    /// Fail with [`PipelineError::Stalled`] when a stage is busy in a single call
    /// (`produce`, `handle` or `finish`, not counting queue waits) for longer than
    /// this. `None` disables the watchdog.
    pub stall_timeout: Option<Duration>,
    /// After the pipeline is cancelled or fails, how long `join` waits for stage
    /// threads to return before detaching them (a stage stops at its next message
    /// boundary, so this bounds one `handle` call).
    pub shutdown_grace: Duration,
    /// Constant labels added to every metric of this pipeline (e.g. `run`).
    pub const_labels: HashMap<String, String>,
    /// Cancel with this token (one the caller already holds, e.g. for a signal
    /// handler installed before the pipeline is built); a fresh one by default.
    pub cancel: Option<CancelToken>,
}

impl Default for PipelineOptions {
    fn default() -> Self {
        Self {
            stall_timeout: None,
            shutdown_grace: Duration::from_secs(5),
            const_labels: HashMap::new(),
            cancel: None,
        }
    }
}

/// Assembles a pipeline; start with [`source`](Self::source).
pub struct PipelineBuilder {
    metrics: PipelineMetrics,
    supervisor: Arc<Supervisor>,
    options: PipelineOptions,
    epoch: Instant,
    names: HashSet<String>,
    nodes: Vec<Node>,
}

/// A stage, built and connected, waiting for `run`.
struct Node {
    cx: NodeContext,
    body: NodeBody,
}

/// A chain whose last stage emits `T` and still needs a consumer: add a
/// [`stage`](Self::stage) or end it with a [`sink`](Self::sink).
pub struct Chain<T: Message> {
    builder: PipelineBuilder,
    tail: Tail<T>,
}

/// The last stage of a chain, waiting for the emitter of its output queue.
struct Tail<T> {
    cx: NodeContext,
    capacity: usize,
    start: Box<dyn FnOnce(Emitter<T>) -> NodeBody + Send>,
}

impl PipelineBuilder {
    /// A builder whose metrics are registered in `registry` (with
    /// `options.const_labels`). Fails if they collide with ones already there.
    pub fn new(registry: &Registry, options: PipelineOptions) -> Result<Self, PipelineError> {
        Ok(Self {
            metrics: PipelineMetrics::register(registry, &options.const_labels)?,
            supervisor: Arc::new(Supervisor::with_token(
                options.cancel.clone().unwrap_or_default(),
            )),
            options,
            epoch: Instant::now(),
            names: HashSet::new(),
            nodes: Vec::new(),
        })
    }

    /// The token that cancels this pipeline; usable before and during the run.
    pub fn cancel_token(&self) -> CancelToken {
        self.supervisor.cancel_token().clone()
    }

    /// Starts a chain with `source`, whose output queue holds up to `capacity`
    /// messages.
    pub fn source<S: Source>(
        mut self,
        source: S,
        capacity: usize,
    ) -> Result<Chain<S::Out>, PipelineError> {
        let cx = self.add_stage(source.name(), Some(capacity))?;
        Ok(Chain {
            builder: self,
            tail: Tail {
                cx: cx.clone(),
                capacity,
                start: Box::new(move |out| driver::source_body(source, out, cx)),
            },
        })
    }

    /// Spawns one thread per stage, named after it, and (if configured) the
    /// watchdog.
    pub fn run(self) -> Result<PipelineHandle, PipelineError> {
        if self.nodes.is_empty() {
            return Err(PipelineError::Empty);
        }
        let started = Instant::now();
        let supervisor = self.supervisor;
        let (done_tx, done_rx) = crossbeam_channel::unbounded();
        let mut watched = Vec::with_capacity(self.nodes.len());
        let mut stats = Vec::with_capacity(self.nodes.len());
        let mut threads = Vec::with_capacity(self.nodes.len());
        for (index, node) in self.nodes.into_iter().enumerate() {
            let Node { cx, body } = node;
            watched.push(Watched {
                index,
                stage: cx.name.clone(),
                clock: cx.clock.clone(),
            });
            stats.push((cx.name.clone(), cx.metrics.clone()));
            let done = DoneSignal {
                tx: done_tx.clone(),
                index,
            };
            let thread = std::thread::Builder::new()
                .name(cx.name.clone())
                .spawn(move || {
                    let _done = done;
                    body();
                })
                .map_err(|source| spawn_failed(&supervisor, &cx.name, source))?;
            threads.push(Some((cx.name, thread)));
        }
        drop(done_tx);
        let watchdog = self
            .options
            .stall_timeout
            .map(|timeout| Watchdog::spawn(timeout, watched, supervisor.clone()))
            .transpose()
            .map_err(|source| spawn_failed(&supervisor, "ard-watchdog", source))?;
        Ok(PipelineHandle {
            supervisor,
            threads,
            done: done_rx,
            watchdog,
            stats: StatsReader::new(stats),
            started,
            shutdown_grace: self.options.shutdown_grace,
            joined: false,
        })
    }

    /// Validates a new stage and registers its metrics.
    fn add_stage(
        &mut self,
        name: &str,
        capacity: Option<usize>,
    ) -> Result<NodeContext, PipelineError> {
        if name.is_empty() || name.contains('\0') {
            return Err(PipelineError::InvalidStageName {
                stage: name.to_owned(),
            });
        }
        if self.names.contains(name) {
            return Err(PipelineError::DuplicateStage {
                stage: name.to_owned(),
            });
        }
        if capacity == Some(0) {
            return Err(PipelineError::InvalidCapacity {
                stage: name.to_owned(),
            });
        }
        let metrics = self.metrics.stage(name)?;
        self.names.insert(name.to_owned());
        Ok(NodeContext {
            name: name.to_owned(),
            supervisor: self.supervisor.clone(),
            clock: Arc::new(BusyClock::new(self.epoch)),
            metrics,
        })
    }

    /// Connects `tail` to the consumer named `consumer` through a new bounded queue;
    /// completes the tail's node and returns the consumer's end of the queue.
    fn connect<T: Message>(
        &mut self,
        tail: Tail<T>,
        consumer: &str,
    ) -> Result<Inbox<T>, PipelineError> {
        let (tx, rx) = crossbeam_channel::bounded(tail.capacity);
        let queue = queue_name(&tail.cx.name, consumer);
        let depth = self.metrics.queue(&queue)?;
        let cancel = self.cancel_token();
        let out = Emitter::new(
            tx,
            queue,
            depth.clone(),
            cancel.clone(),
            tail.cx.clock.clone(),
        );
        self.nodes.push(Node {
            body: (tail.start)(out),
            cx: tail.cx,
        });
        Ok(Inbox::new(rx, depth, cancel))
    }
}

impl<T: Message> Chain<T> {
    /// Adds `stage`, fed by the previous stage, with an output queue of `capacity`
    /// messages.
    pub fn stage<S: Stage<In = T>>(
        self,
        stage: S,
        capacity: usize,
    ) -> Result<Chain<S::Out>, PipelineError> {
        let Chain { mut builder, tail } = self;
        let cx = builder.add_stage(stage.name(), Some(capacity))?;
        let inbox = builder.connect(tail, &cx.name)?;
        Ok(Chain {
            builder,
            tail: Tail {
                cx: cx.clone(),
                capacity,
                start: Box::new(move |out| driver::stage_body(stage, inbox, out, cx)),
            },
        })
    }

    /// Ends the chain with `sink`; returns the builder (to `run`, or to add another
    /// chain).
    pub fn sink<S: Stage<In = T, Out = ()>>(
        self,
        sink: S,
    ) -> Result<PipelineBuilder, PipelineError> {
        let Chain { mut builder, tail } = self;
        let cx = builder.add_stage(sink.name(), None)?;
        let inbox = builder.connect(tail, &cx.name)?;
        let out = Emitter::discarding(builder.cancel_token(), cx.clock.clone());
        builder.nodes.push(Node {
            body: driver::stage_body(sink, inbox, out, cx.clone()),
            cx,
        });
        Ok(builder)
    }

    /// The pipeline's cancellation token (as [`PipelineBuilder::cancel_token`]).
    pub fn cancel_token(&self) -> CancelToken {
        self.builder.cancel_token()
    }
}

/// Cancels the pipeline whose thread `stage` could not be spawned; the error to return.
fn spawn_failed(supervisor: &Supervisor, stage: &str, source: std::io::Error) -> PipelineError {
    supervisor.cancel_token().cancel();
    PipelineError::Spawn {
        stage: stage.to_owned(),
        source,
    }
}

/// Tells `join` that a stage thread ended, even if it unwound.
struct DoneSignal {
    tx: Sender<usize>,
    index: usize,
}

impl Drop for DoneSignal {
    fn drop(&mut self) {
        let _ = self.tx.send(self.index);
    }
}

/// A running pipeline. Dropping it without [`join`](Self::join) cancels it.
#[must_use = "dropping a PipelineHandle cancels the pipeline; call join()"]
pub struct PipelineHandle {
    supervisor: Arc<Supervisor>,
    threads: Vec<Option<(String, JoinHandle<()>)>>,
    done: Receiver<usize>,
    watchdog: Option<Watchdog>,
    stats: StatsReader,
    started: Instant,
    shutdown_grace: Duration,
    joined: bool,
}

impl PipelineHandle {
    /// Cancels the pipeline: every stage stops at its next message boundary (or
    /// wakes from a blocked send or receive) without flushing; `join` then returns
    /// [`PipelineError::Cancelled`].
    pub fn cancel(&self) {
        self.supervisor.cancel_token().cancel();
    }

    /// The pipeline's cancellation token.
    pub fn cancel_token(&self) -> CancelToken {
        self.supervisor.cancel_token().clone()
    }

    /// Current per-stage totals, in pipeline order.
    pub fn stats(&self) -> Vec<StageStats> {
        self.stats.snapshot()
    }

    /// A cloneable reader of the per-stage totals, usable from other threads
    /// (a status endpoint) while the pipeline runs and after it ends.
    pub fn stats_reader(&self) -> StatsReader {
        self.stats.clone()
    }

    /// Waits for the pipeline to end.
    ///
    /// Returns the summary if every stage drained and flushed; the first failure
    /// ([`PipelineError::StageFailed`], [`PipelineError::Stalled`]) if one stopped
    /// it; [`PipelineError::Cancelled`] if it was cancelled. Threads of stalled
    /// stages, and threads still running `shutdown_grace` after the pipeline was
    /// stopped, are detached rather than joined, so this always returns.
    pub fn join(self) -> Result<RunSummary, PipelineError> {
        self.finish(None)
    }

    /// Like [`join`](Self::join), while running the jobs of a [`ComputeLane`]
    /// on this thread (the lane's [`LaneServer`]), so that stages computing on
    /// the lane run their tensor work on the thread that built them. After a
    /// cancellation, `shutdown_grace` counts from the lane's last job: stages
    /// queued behind a long job still finish their message (and checkpoint).
    ///
    /// [`ComputeLane`]: crate::ComputeLane
    pub fn join_serving(self, lane: LaneServer) -> Result<RunSummary, PipelineError> {
        self.finish(Some(lane))
    }

    fn finish(mut self, lane: Option<LaneServer>) -> Result<RunSummary, PipelineError> {
        self.joined = true;
        self.wait_for_threads(lane.as_ref());
        if let Some(watchdog) = self.watchdog.take() {
            watchdog.stop();
        }
        if let Some(failure) = self.supervisor.take_failure() {
            return Err(failure);
        }
        if self.supervisor.cancel_token().is_cancelled() {
            return Err(PipelineError::Cancelled);
        }
        Ok(RunSummary {
            wall: self.started.elapsed(),
            stages: self.stats.snapshot(),
        })
    }

    fn wait_for_threads(&mut self, lane: Option<&LaneServer>) {
        let mut deadline: Option<Instant> = None;
        loop {
            for index in 0..self.threads.len() {
                if self.threads[index].is_some() && self.supervisor.is_stalled(index) {
                    if let Some((stage, _detached)) = self.threads[index].take() {
                        log::warn!("detaching the thread of stalled stage `{stage}`");
                    }
                }
            }
            if self.threads.iter().all(Option::is_none) {
                return;
            }
            let now = Instant::now();
            if deadline.is_none() && self.supervisor.cancel_token().is_cancelled() {
                deadline = Some(now + self.shutdown_grace);
            }
            if deadline.is_some_and(|deadline| now >= deadline) {
                for (stage, _detached) in self.threads.iter_mut().filter_map(Option::take) {
                    log::warn!(
                        "stage `{stage}` did not stop within {:?} of shutdown; detaching its thread",
                        self.shutdown_grace
                    );
                }
                return;
            }
            let wait = deadline.map_or(JOIN_POLL, |deadline| {
                deadline.saturating_duration_since(now).min(JOIN_POLL)
            });
            let done = match lane {
                // Run lane jobs as they come while waiting (a closed lane: all its users are gone).
                Some(lane) => crossbeam_channel::select! {
                    recv(self.done) -> index => index.map_err(|_| RecvTimeoutError::Disconnected),
                    recv(lane.jobs()) -> job => {
                        if let Ok(job) = job {
                            job();
                            // A stage waiting for the lane is still finishing its message:
                            // the shutdown grace counts from the lane's last job.
                            if deadline.is_some() {
                                deadline = Some(Instant::now() + self.shutdown_grace);
                            }
                        }
                        continue;
                    }
                    default(wait) => Err(RecvTimeoutError::Timeout),
                },
                None => self.done.recv_timeout(wait),
            };
            match done {
                Ok(index) => self.join_thread(index),
                Err(RecvTimeoutError::Timeout) => {}
                Err(RecvTimeoutError::Disconnected) => {
                    // Every thread has ended.
                    for index in 0..self.threads.len() {
                        self.join_thread(index);
                    }
                    return;
                }
            }
        }
    }

    fn join_thread(&mut self, index: usize) {
        let Some((stage, thread)) = self.threads.get_mut(index).and_then(Option::take) else {
            return;
        };
        if let Err(payload) = thread.join() {
            // Stage code runs under catch_unwind; this is a panic in a Drop.
            self.supervisor.fail(PipelineError::StageFailed {
                message: format!(
                    "panicked while shutting down: {}",
                    crate::supervisor::panic_message(payload.as_ref())
                ),
                stage,
                cause: None,
            });
        }
    }
}

impl Drop for PipelineHandle {
    fn drop(&mut self) {
        if !self.joined {
            self.supervisor.cancel_token().cancel();
        }
    }
}
