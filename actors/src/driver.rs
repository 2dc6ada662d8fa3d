//! The loop each stage thread runs: receive, handle, measure, send; flush at end of
//! stream; report the outcome (including panics) to the supervisor before the
//! thread's queues are dropped.

use std::panic::{catch_unwind, AssertUnwindSafe};
use std::sync::Arc;
use std::time::{Duration, Instant};

use crate::emitter::{Emitter, Waits};
use crate::error::StageError;
use crate::inbox::Inbox;
use crate::metrics::{StageMetrics, StageTimes};
use crate::stage::{Message, Source, Stage};
use crate::supervisor::Supervisor;
use crate::watchdog::BusyClock;

/// The work of one stage thread, ready to run.
pub(crate) type NodeBody = Box<dyn FnOnce() + Send>;

/// What a stage thread needs besides its stage and queues.
#[derive(Clone)]
pub(crate) struct NodeContext {
    pub name: String,
    pub supervisor: Arc<Supervisor>,
    pub clock: Arc<BusyClock>,
    pub metrics: StageMetrics,
}

pub(crate) fn source_body<S: Source>(
    mut source: S,
    mut out: Emitter<S::Out>,
    cx: NodeContext,
) -> NodeBody {
    Box::new(move || {
        let outcome = catch_unwind(AssertUnwindSafe(|| {
            drive_source(&mut source, &mut out, &cx)
        }));
        cx.clock.stop();
        // Waits cut short by a failure or cancellation still count.
        cx.metrics
            .record_times(split(Duration::ZERO, out.take_waits()));
        cx.supervisor.report(&cx.name, outcome);
        // Only now close the output: a downstream stage that sees it closed while
        // the pipeline is not cancelled knows the stream really ended.
        drop(out);
        drop(source);
    })
}

pub(crate) fn stage_body<S: Stage>(
    mut stage: S,
    mut inbox: Inbox<S::In>,
    mut out: Emitter<S::Out>,
    cx: NodeContext,
) -> NodeBody {
    Box::new(move || {
        let outcome = catch_unwind(AssertUnwindSafe(|| {
            drive_stage(&mut stage, &mut inbox, &mut out, &cx)
        }));
        cx.clock.stop();
        if matches!(&outcome, Ok(Err(e)) if e.is_cancelled()) {
            // The stage's last handle() completed: let it save its state.
            if catch_unwind(AssertUnwindSafe(|| stage.interrupted())).is_err() {
                log::error!(
                    "stage `{}` panicked while saving its state on cancellation",
                    cx.name
                );
            }
        }
        let mut leftover = split(Duration::ZERO, out.take_waits());
        leftover.idle += inbox.take_idle();
        cx.metrics.record_times(leftover);
        cx.supervisor.report(&cx.name, outcome);
        drop(out);
        drop(inbox);
        drop(stage);
    })
}

fn drive_source<S: Source>(
    source: &mut S,
    out: &mut Emitter<S::Out>,
    cx: &NodeContext,
) -> Result<(), StageError> {
    loop {
        if out.cancel_token().is_cancelled() {
            return Err(StageError::cancelled());
        }
        let (produced, busy) = timed(&cx.clock, || source.produce());
        let Some(msg) = produced? else {
            return Ok(());
        };
        let images = msg.images();
        let sent = out.send(msg);
        let mut times = split(Duration::ZERO, out.take_waits());
        times.busy = busy;
        cx.metrics.record_batch(sent.is_ok(), images, times);
        sent?;
    }
}

fn drive_stage<S: Stage>(
    stage: &mut S,
    inbox: &mut Inbox<S::In>,
    out: &mut Emitter<S::Out>,
    cx: &NodeContext,
) -> Result<(), StageError> {
    while let Some(msg) = inbox.recv()? {
        let images = msg.images();
        let (handled, elapsed) = timed(&cx.clock, || stage.handle(msg, out));
        let mut times = split(elapsed, out.take_waits());
        times.idle += inbox.take_idle();
        cx.metrics.record_batch(handled.is_ok(), images, times);
        handled?;
    }
    let idle = inbox.take_idle();
    let (finished, elapsed) = timed(&cx.clock, || stage.finish(out));
    let mut times = split(elapsed, out.take_waits());
    times.idle += idle;
    cx.metrics.record_times(times);
    finished?;
    Ok(())
}

/// Runs `work` with the stage marked busy; returns its result and duration.
fn timed<R>(clock: &BusyClock, work: impl FnOnce() -> R) -> (R, Duration) {
    clock.start();
    let started = Instant::now();
    let result = work();
    let elapsed = started.elapsed();
    clock.stop();
    (result, elapsed)
}

/// Splits the wall time of one call into busy time and the waits inside it.
fn split(elapsed: Duration, waits: Waits) -> StageTimes {
    StageTimes {
        busy: elapsed.saturating_sub(waits.blocked + waits.idle),
        blocked: waits.blocked,
        idle: waits.idle,
    }
}
