//! [`ComputeLane`]: one worker thread that runs the compute of several stages,
//! one job at a time, in the order the jobs arrive.
//!
//! Why: on a CPU every stage's tensor work competes for the same cores, and an
//! intra-op thread team (OpenMP) belongs to the OS thread that starts it. Stages
//! that compute on their own threads each keep a team, so the process holds more
//! worker threads than cores; the OpenMP runtime then stops spinning between
//! operations and puts idle workers to sleep, and every operation pays a wake-up.
//! Stages that hand their compute to one lane share one team of exactly the cores
//! they were given, as a single-threaded training loop would, while their
//! bookkeeping (queues, checkpoints, metrics) stays on their own threads.
//!
//! The lane is best served by the thread that set the run up (the pipeline's
//! caller, [`PipelineHandle::join_serving`](crate::PipelineHandle::join_serving)):
//! libgomp keeps a thread team per thread that ever ran a parallel region, and
//! once the process holds more team threads than cores it throttles spinning
//! for every team. Serving compute on the thread whose team already exists
//! keeps the process at one team.
//!
//! A job may borrow from the calling stage: [`ComputeLane::run`] does not return
//! until the job has finished (or panicked: the panic is re-raised on the caller).

use std::marker::PhantomData;
use std::panic::{self, AssertUnwindSafe};
use std::sync::Arc;
use std::thread::{JoinHandle, ThreadId};
use std::time::{Duration, Instant};

use crossbeam_channel::{Receiver, Sender};

/// A unit of work, its lifetime erased (see [`ComputeLane::run`]).
pub(crate) type Job = Box<dyn FnOnce() + Send + 'static>;

/// The outcome of one job: its result (or panic payload), and how long it
/// waited in the lane's queue before it started.
type Outcome<R> = (std::thread::Result<R>, Duration);

/// A handle on a shared compute thread. Cloning gives another handle on the
/// same thread; the lane closes when the last handle is dropped.
#[derive(Clone)]
pub struct ComputeLane {
    inner: Arc<Inner>,
}

struct Inner {
    name: String,
    jobs: Option<Sender<Job>>,
    /// The lane's own thread, when [`ComputeLane::spawn`] started one.
    thread: Option<JoinHandle<()>>,
    thread_id: ThreadId,
}

/// The receiving end of a lane, held by the thread that runs its jobs.
pub struct LaneServer {
    jobs: Receiver<Job>,
}

/// The lane's thread is gone; it can run nothing more.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct LaneStopped {
    pub lane: String,
}

impl std::fmt::Display for LaneStopped {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "compute lane '{}' has stopped", self.lane)
    }
}

impl std::error::Error for LaneStopped {}

impl ComputeLane {
    /// A lane served by the calling thread: it must then hand the
    /// [`LaneServer`] to [`LaneServer::serve`] or
    /// [`PipelineHandle::join_serving`](crate::PipelineHandle::join_serving).
    pub fn on_this_thread(name: &str) -> (Self, LaneServer) {
        let (tx, rx) = crossbeam_channel::unbounded::<Job>();
        let lane = Self {
            inner: Arc::new(Inner {
                name: name.to_owned(),
                jobs: Some(tx),
                thread: None,
                thread_id: std::thread::current().id(),
            }),
        };
        (lane, LaneServer { jobs: rx })
    }

    /// Starts a thread named `name` that serves the lane, running `setup` on
    /// it first (per-thread settings such as the intra-op thread count).
    pub fn spawn(name: &str, setup: impl FnOnce() + Send + 'static) -> std::io::Result<Self> {
        let (tx, rx) = crossbeam_channel::unbounded::<Job>();
        let server = LaneServer { jobs: rx };
        let thread = std::thread::Builder::new()
            .name(name.to_owned())
            .spawn(move || {
                setup();
                server.serve();
            })?;
        Ok(Self {
            inner: Arc::new(Inner {
                name: name.to_owned(),
                thread_id: thread.thread().id(),
                jobs: Some(tx),
                thread: Some(thread),
            }),
        })
    }

    /// The lane's name (its thread's name).
    pub fn name(&self) -> &str {
        &self.inner.name
    }

    /// Runs `job` on the lane, after the jobs queued before it, and returns
    /// its result with the time it waited for the lane. Blocks until the job
    /// has finished; a panic in the job is re-raised here.
    ///
    /// Must not be called from a job (it would wait for itself); that is
    /// reported as an error instead of a deadlock.
    pub fn run<'a, R: Send + 'a>(
        &self,
        job: impl FnOnce() -> R + Send + 'a,
    ) -> Result<(R, Duration), LaneStopped> {
        let stopped = || LaneStopped {
            lane: self.inner.name.clone(),
        };
        if std::thread::current().id() == self.inner.thread_id {
            return Err(stopped());
        }
        let jobs = self.inner.jobs.as_ref().ok_or_else(stopped)?;
        let (reply_tx, reply_rx) = crossbeam_channel::bounded::<Outcome<R>>(1);
        let task = Task {
            job: Some(job),
            reply: reply_tx,
            submitted: Instant::now(),
            _result: PhantomData,
        };
        let erased: Box<dyn FnOnce() + Send + 'a> = Box::new(move || task.run());
        // SAFETY: the job may borrow data that lives for 'a only. It is run (or
        // dropped unrun) before this function returns: we return only after
        // `reply_rx` yields, which happens when `Task::run` has sent the
        // outcome (the job consumed) or when the `Task` was dropped, and
        // `Task`'s Drop drops the job before the reply sender (the field that
        // wakes us). A failed `send` hands the job back here, where it is
        // dropped. The job is `Send`, so running it on the lane's thread is
        // allowed; nothing else touches its borrows meanwhile, because this
        // thread is blocked below.
        let erased: Job =
            unsafe { std::mem::transmute::<Box<dyn FnOnce() + Send + 'a>, Job>(erased) };
        if jobs.send(erased).is_err() {
            return Err(stopped());
        }
        match reply_rx.recv() {
            Ok((Ok(result), queued)) => Ok((result, queued)),
            Ok((Err(payload), _)) => panic::resume_unwind(payload),
            Err(_) => Err(stopped()),
        }
    }
}

impl LaneServer {
    /// Runs each job as it arrives, until every [`ComputeLane`] handle is gone.
    pub fn serve(self) {
        for job in self.jobs {
            job();
        }
    }

    /// The queue of jobs, for a caller that waits on other things too.
    pub(crate) fn jobs(&self) -> &Receiver<Job> {
        &self.jobs
    }
}

/// A job with its reply channel. Dropping it drops the job before the reply
/// sender, so the caller cannot wake while the job (and its borrows) is alive.
struct Task<F, R> {
    job: Option<F>,
    reply: Sender<Outcome<R>>,
    submitted: Instant,
    _result: PhantomData<fn() -> R>,
}

impl<F: FnOnce() -> R, R> Task<F, R> {
    fn run(mut self) {
        let queued = self.submitted.elapsed();
        let result = match self.job.take() {
            Some(job) => panic::catch_unwind(AssertUnwindSafe(job)),
            None => return,
        };
        // The caller may already be gone only if it panicked, which it cannot
        // while blocked in `run`; a failed send is harmless either way.
        let _ = self.reply.send((result, queued));
    }
}

impl<F, R> Drop for Task<F, R> {
    fn drop(&mut self) {
        // Explicitly before `reply` (a field, dropped after this body).
        drop(self.job.take());
    }
}

impl Drop for Inner {
    fn drop(&mut self) {
        // Closing the queue ends the loop; wait for it unless we are that thread.
        drop(self.jobs.take());
        if let Some(thread) = self.thread.take() {
            if std::thread::current().id() != self.thread_id {
                let _ = thread.join();
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn jobs_borrow_from_the_caller_and_run_on_the_lane_thread() {
        let lane = ComputeLane::spawn("lane-test", || {}).unwrap();
        let mut counts = vec![0u32; 4];
        let (thread_name, _) = lane
            .run(|| {
                counts[2] += 5;
                std::thread::current().name().map(str::to_owned)
            })
            .unwrap();
        assert_eq!(counts, vec![0, 0, 5, 0]);
        assert_eq!(thread_name.as_deref(), Some("lane-test"));
    }

    #[test]
    fn setup_runs_on_the_lane_before_any_job() {
        thread_local!(static SET: std::cell::Cell<u32> = const { std::cell::Cell::new(0) });
        let lane = ComputeLane::spawn("lane-setup", || SET.with(|s| s.set(7))).unwrap();
        let (seen, _) = lane.run(|| SET.with(|s| s.get())).unwrap();
        assert_eq!(seen, 7);
        assert_eq!(SET.with(|s| s.get()), 0, "the caller's thread is untouched");
    }

    #[test]
    fn a_panicking_job_panics_the_caller_and_the_lane_goes_on() {
        let lane = ComputeLane::spawn("lane-panic", || {}).unwrap();
        let caught = std::panic::catch_unwind(AssertUnwindSafe(|| {
            lane.run(|| -> u32 { panic!("boom in a job") })
        }));
        let payload = caught.expect_err("the panic must reach the caller");
        assert_eq!(payload.downcast_ref::<&str>(), Some(&"boom in a job"));
        assert_eq!(lane.run(|| 41 + 1).unwrap().0, 42);
    }

    #[test]
    fn jobs_from_several_threads_never_overlap_and_report_their_queueing() {
        use std::sync::atomic::{AtomicUsize, Ordering};
        let lane = ComputeLane::spawn("lane-serial", || {}).unwrap();
        let inside = Arc::new(AtomicUsize::new(0));
        let overlaps = Arc::new(AtomicUsize::new(0));
        let waited: Vec<Duration> = std::thread::scope(|scope| {
            let handles: Vec<_> = (0..4)
                .map(|_| {
                    let (lane, inside, overlaps) = (lane.clone(), inside.clone(), overlaps.clone());
                    scope.spawn(move || {
                        let mut waited = Duration::ZERO;
                        for _ in 0..5 {
                            let ((), queued) = lane
                                .run(|| {
                                    if inside.fetch_add(1, Ordering::SeqCst) != 0 {
                                        overlaps.fetch_add(1, Ordering::SeqCst);
                                    }
                                    std::thread::sleep(Duration::from_millis(5));
                                    inside.fetch_sub(1, Ordering::SeqCst);
                                })
                                .unwrap();
                            waited += queued;
                        }
                        waited
                    })
                })
                .collect();
            handles.into_iter().map(|h| h.join().unwrap()).collect()
        });
        assert_eq!(overlaps.load(Ordering::SeqCst), 0);
        // 4 threads x 5 jobs of 5 ms on one lane: together they queued for a while.
        let total: Duration = waited.iter().sum();
        assert!(total >= Duration::from_millis(20), "queued {total:?}");
    }

    #[test]
    fn a_job_that_calls_its_own_lane_gets_an_error_not_a_deadlock() {
        let lane = ComputeLane::spawn("lane-reentrant", || {}).unwrap();
        let inner = lane.clone();
        let (nested, _) = lane.run(move || inner.run(|| 1).map(|(v, _)| v)).unwrap();
        assert_eq!(
            nested,
            Err(LaneStopped {
                lane: "lane-reentrant".into()
            })
        );
    }

    #[test]
    fn a_lane_on_this_thread_runs_other_threads_jobs_here() {
        let (lane, server) = ComputeLane::on_this_thread("lane-here");
        let here = std::thread::current().id();
        let worker = std::thread::spawn(move || {
            let mut ran_on = Vec::new();
            for _ in 0..3 {
                ran_on.push(lane.run(|| std::thread::current().id()).unwrap().0);
            }
            ran_on
        });
        server.serve(); // returns once the worker's handle is dropped
        assert_eq!(worker.join().unwrap(), vec![here; 3]);
    }

    #[test]
    fn dropping_the_last_handle_ends_the_thread() {
        let lane = ComputeLane::spawn("lane-drop", || {}).unwrap();
        let copy = lane.clone();
        drop(lane);
        assert_eq!(copy.run(|| 3).unwrap().0, 3);
        drop(copy); // joins the thread; the test would hang if it did not end
    }
}
