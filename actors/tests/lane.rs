//! Stages that compute on a shared `ComputeLane` served by the thread that
//! joins the pipeline: their jobs run on that thread, one at a time, in
//! order; the wait for the lane is idle time, not busy time; and a failing
//! job stops the pipeline like any stage error.

mod common;

use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::thread::ThreadId;
use std::time::Duration;

use ard_actors::{
    ComputeLane, Emitter, PipelineBuilder, PipelineError, PipelineOptions, Stage, StageError,
};
use common::{assert_failed, builder, registry, Batch, CollectSink, CountSource};

/// A stage whose work is a job of `work` on the lane.
struct LaneStage {
    name: String,
    lane: ComputeLane,
    work: Duration,
    /// Threads the jobs ran on, with the stage and the batch.
    ran_on: Arc<Mutex<Vec<(String, u64, ThreadId)>>>,
    /// Jobs running right now, across stages (must never exceed 1).
    running: Arc<AtomicUsize>,
    overlaps: Arc<AtomicUsize>,
    fail_at: Option<u64>,
}

impl Stage for LaneStage {
    type In = Batch;
    type Out = Batch;

    fn name(&self) -> &str {
        &self.name
    }

    fn handle(&mut self, msg: Batch, out: &mut Emitter<Batch>) -> Result<(), StageError> {
        let (work, running, overlaps) = (self.work, &self.running, &self.overlaps);
        let seq = msg.seq;
        let fail = self.fail_at == Some(seq);
        let thread = out.on_lane(&self.lane, move || {
            if running.fetch_add(1, Ordering::SeqCst) != 0 {
                overlaps.fetch_add(1, Ordering::SeqCst);
            }
            std::thread::sleep(work);
            running.fetch_sub(1, Ordering::SeqCst);
            if fail {
                Err(StageError::msg(format!("job for batch {seq} failed")))
            } else {
                Ok(std::thread::current().id())
            }
        })??;
        self.ran_on
            .lock()
            .map_err(|_| StageError::msg("poisoned"))?
            .push((self.name.clone(), seq, thread));
        out.send(msg)
    }
}

struct Setup {
    ran_on: Arc<Mutex<Vec<(String, u64, ThreadId)>>>,
    overlaps: Arc<AtomicUsize>,
}

fn run(
    batches: u64,
    fail_at: Option<u64>,
) -> (Result<ard_actors::RunSummary, PipelineError>, Setup) {
    let (lane, server) = ComputeLane::on_this_thread("compute");
    let setup = Setup {
        ran_on: Arc::default(),
        overlaps: Arc::default(),
    };
    let running = Arc::new(AtomicUsize::new(0));
    let stage = |name: &str, fail_at: Option<u64>| LaneStage {
        name: name.to_owned(),
        lane: lane.clone(),
        work: Duration::from_millis(20),
        ran_on: setup.ran_on.clone(),
        running: running.clone(),
        overlaps: setup.overlaps.clone(),
        fail_at,
    };
    let (teacher, attack) = (stage("teacher", None), stage("attack", fail_at));
    drop(lane);
    let result = builder()
        .source(CountSource::new("data", batches), 2)
        .and_then(|chain| chain.stage(teacher, 2))
        .and_then(|chain| chain.stage(attack, 2))
        .and_then(|chain| chain.sink(CollectSink::new("student")))
        .and_then(|builder| builder.run())
        .unwrap()
        .join_serving(server);
    (result, setup)
}

#[test]
fn lane_jobs_run_on_the_joining_thread_one_at_a_time() {
    let here = std::thread::current().id();
    let (result, setup) = run(6, None);
    let summary = result.unwrap();
    let ran_on = setup.ran_on.lock().unwrap();
    assert_eq!(ran_on.len(), 12);
    assert!(ran_on.iter().all(|(_, _, t)| *t == here), "{ran_on:?}");
    assert_eq!(setup.overlaps.load(Ordering::SeqCst), 0);
    // Each stage's busy time is its own jobs (6 x 20 ms), not the other's as well:
    // the two stages share the lane, so each waited for the other's jobs (idle).
    // Counted as busy, the waits would make each stage busy nearly all the run.
    let wall = summary.wall.as_secs_f64();
    for name in ["teacher", "attack"] {
        let s = summary.stage(name).unwrap();
        assert!(s.busy_s >= 0.11, "{name}: {s:?}");
        assert!(s.busy_s < 0.75 * wall, "{name}: {s:?} of {wall} s");
    }
    let idle: f64 = ["teacher", "attack"]
        .iter()
        .map(|n| summary.stage(n).unwrap().idle_s)
        .sum();
    assert!(idle > 0.0, "{summary:?}");
}

#[test]
fn a_failing_lane_job_fails_the_pipeline_with_its_stage() {
    let (result, _) = run(6, Some(2));
    let error = result.expect_err("the attack stage fails");
    assert_failed(&error, "attack", "job for batch 2 failed");
}

/// Runs `work(seq)` on the lane per batch and records what it got to do.
struct Timed {
    name: &'static str,
    lane: ComputeLane,
    work: fn(u64) -> Duration,
    /// Time spent before submitting the job (off the lane).
    before: fn(u64) -> Duration,
    jobs_done: Arc<AtomicUsize>,
    interrupted: Arc<AtomicUsize>,
}

impl Stage for Timed {
    type In = Batch;
    type Out = Batch;

    fn name(&self) -> &str {
        self.name
    }

    fn handle(&mut self, msg: Batch, out: &mut Emitter<Batch>) -> Result<(), StageError> {
        let (work, done) = ((self.work)(msg.seq), &self.jobs_done);
        std::thread::sleep((self.before)(msg.seq));
        out.on_lane(&self.lane, move || {
            std::thread::sleep(work);
            done.fetch_add(1, Ordering::SeqCst);
        })?;
        out.send(msg)
    }

    fn interrupted(&mut self) {
        self.interrupted.fetch_add(1, Ordering::SeqCst);
    }
}

/// A stage that submits a long job just after a cancel (it was mid-message)
/// holds the lane past the shutdown grace; a stage queued behind it still
/// runs its job and reaches its `interrupted` hook (where the student stage
/// checkpoints). Timeline (ms): the cancel comes at 50 (grace 300), a
/// submits its batch-1 job at 100 (it runs to 1100), b its batch-0 job at 150.
#[test]
fn a_stage_queued_behind_a_long_job_still_finishes_after_a_cancel() {
    let (lane, server) = ComputeLane::on_this_thread("compute");
    let (done_b, interrupted_b) = (Arc::new(AtomicUsize::new(0)), Arc::new(AtomicUsize::new(0)));
    let a = Timed {
        name: "a",
        lane: lane.clone(),
        // Batch 0 at once, batch 1 holds the lane for a second.
        work: |seq| Duration::from_millis(if seq == 1 { 1000 } else { 0 }),
        before: |seq| Duration::from_millis(if seq == 1 { 100 } else { 0 }),
        jobs_done: Arc::default(),
        interrupted: Arc::default(),
    };
    let b = Timed {
        name: "b",
        lane,
        work: |_| Duration::from_millis(1),
        // Its batch-0 job arrives after a's batch-1 job took the lane.
        before: |_| Duration::from_millis(150),
        jobs_done: done_b.clone(),
        interrupted: interrupted_b.clone(),
    };
    let options = PipelineOptions {
        shutdown_grace: Duration::from_millis(300),
        ..PipelineOptions::default()
    };
    let handle = PipelineBuilder::new(&registry(), options)
        .and_then(|builder| builder.source(CountSource::new("data", 5), 1))
        .and_then(|chain| chain.stage(a, 1))
        .and_then(|chain| chain.stage(b, 1))
        .and_then(|chain| chain.sink(CollectSink::new("sink")))
        .and_then(|builder| builder.run())
        .unwrap();
    let token = handle.cancel_token();
    let canceller = std::thread::spawn(move || {
        std::thread::sleep(Duration::from_millis(50));
        token.cancel();
    });
    let result = handle.join_serving(server);
    canceller.join().unwrap();
    assert!(
        matches!(result, Err(PipelineError::Cancelled)),
        "{result:?}"
    );
    // b's job for batch 0 was queued behind a's long job for batch 1, which
    // ended long after the grace (counted from the cancel) had run out.
    assert_eq!(done_b.load(Ordering::SeqCst), 1);
    assert_eq!(interrupted_b.load(Ordering::SeqCst), 1);
}
