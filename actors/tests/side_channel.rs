//! A downstream stage publishes versions (weights) that an upstream stage waits
//! for, through a `Mailbox`: with staleness 0 the pipeline is exactly sequential,
//! and a failure downstream wakes the waiting upstream stage.

mod common;

use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use ard_actors::{Emitter, Mailbox, PipelineError, Stage, StageError};
use common::{assert_failed, builder, Batch, CountSource};

/// Before handling batch `t`, waits for weights version `t - staleness`.
struct Attack {
    weights: Mailbox<u64>,
    staleness: u64,
    /// (batch, weights version used) per batch.
    used: Arc<Mutex<Vec<(u64, u64)>>>,
}

impl Stage for Attack {
    type In = Batch;
    type Out = Batch;

    fn name(&self) -> &str {
        "attack"
    }

    fn handle(&mut self, msg: Batch, out: &mut Emitter<Batch>) -> Result<(), StageError> {
        let wanted = msg.seq.saturating_sub(self.staleness);
        let weights = &self.weights;
        let version = out.idle_while(|cancel| weights.wait_for_version(wanted, cancel))?;
        self.used
            .lock()
            .map_err(|_| StageError::msg("poisoned"))?
            .push((msg.seq, version.version));
        out.send(msg)
    }
}

/// Trains on each batch, then publishes weights version `seq + 1`; can fail at one
/// batch instead.
struct Student {
    weights: Mailbox<u64>,
    step_time: Duration,
    fail_at: Option<u64>,
}

impl Stage for Student {
    type In = Batch;
    type Out = ();

    fn name(&self) -> &str {
        "student"
    }

    fn handle(&mut self, msg: Batch, _out: &mut Emitter<()>) -> Result<(), StageError> {
        std::thread::sleep(self.step_time);
        if self.fail_at == Some(msg.seq) {
            return Err(StageError::msg("loss is NaN"));
        }
        let version = msg.seq + 1;
        self.weights.publish(version, version * 100)?;
        Ok(())
    }

    fn finish(&mut self, _out: &mut Emitter<()>) -> Result<(), StageError> {
        self.weights.close();
        Ok(())
    }
}

fn run(
    staleness: u64,
    fail_at: Option<u64>,
) -> (
    Result<ard_actors::RunSummary, PipelineError>,
    Vec<(u64, u64)>,
) {
    let weights = Mailbox::new();
    weights.publish(0, 0).expect("initial weights");
    let used = Arc::new(Mutex::new(Vec::new()));
    let attack = Attack {
        weights: weights.clone(),
        staleness,
        used: used.clone(),
    };
    let student = Student {
        weights,
        step_time: Duration::from_millis(3),
        fail_at,
    };
    let result = builder()
        .source(CountSource::new("data", 30), 4)
        .and_then(|chain| chain.stage(attack, 2))
        .and_then(|chain| chain.sink(student))
        .and_then(|builder| builder.run())
        .and_then(|handle| handle.join());
    let used = used.lock().expect("lock").clone();
    (result, used)
}

#[test]
fn staleness_zero_is_sequential() {
    let (result, used) = run(0, None);
    let summary = result.expect("pipeline completes");
    // Batch t was attacked with the weights after step t - 1, exactly.
    assert_eq!(used, (0..30).map(|t| (t, t)).collect::<Vec<_>>());
    let attack = summary.stage("attack").expect("attack stats");
    assert!(
        attack.idle_s > 0.03,
        "waiting for weights is idle time: {attack:?}"
    );
}

#[test]
fn staleness_one_lets_the_attack_run_ahead_by_at_most_one() {
    let (result, used) = run(1, None);
    result.expect("pipeline completes");
    assert_eq!(used.len(), 30);
    for (batch, version) in used {
        assert!(version + 1 >= batch, "batch {batch} used weights {version}");
    }
}

#[test]
fn a_failing_publisher_wakes_the_waiting_stage_and_is_the_reported_cause() {
    let started = Instant::now();
    let (result, used) = run(0, Some(5));
    assert_failed(&result.expect_err("the student fails"), "student", "NaN");
    assert!(started.elapsed() < Duration::from_secs(2));
    assert!(used.len() <= 6, "attack ran past the failure: {used:?}");
}
