//! End-to-end ordering and in-order drain with flush.

mod common;

use std::time::Duration;

use ard_actors::{Emitter, Stage, StageError};
use common::{builder, start, Batch, CollectSink, CountSource, MapStage};

/// Groups `size` batches into one (keeping the first seq), flushing the rest in
/// `finish`; emits each group as its members' seqs, in order.
struct Regroup {
    size: usize,
    pending: Vec<Batch>,
}

impl Stage for Regroup {
    type In = Batch;
    type Out = Batch;

    fn name(&self) -> &str {
        "regroup"
    }

    fn handle(&mut self, msg: Batch, out: &mut Emitter<Batch>) -> Result<(), StageError> {
        self.pending.push(msg);
        if self.pending.len() == self.size {
            self.flush(out)?;
        }
        Ok(())
    }

    fn finish(&mut self, out: &mut Emitter<Batch>) -> Result<(), StageError> {
        self.flush(out)
    }
}

impl Regroup {
    fn flush(&mut self, out: &mut Emitter<Batch>) -> Result<(), StageError> {
        for batch in self.pending.drain(..) {
            out.send(batch)?;
        }
        Ok(())
    }
}

#[test]
fn order_is_preserved_end_to_end_and_finish_flushes() {
    let sink = CollectSink::new("sink");
    let seen = sink.seen.clone();
    let finished = sink.finished.clone();
    let mut slow = MapStage::new("slow");
    slow.delay = Duration::from_micros(300);
    let handle = builder()
        .source(CountSource::new("data", 500), 3)
        .and_then(|chain| chain.stage(MapStage::new("first"), 1))
        .and_then(|chain| chain.stage(slow, 2))
        // 500 is not a multiple of 7: the last 3 batches leave only through finish.
        .and_then(|chain| {
            chain.stage(
                Regroup {
                    size: 7,
                    pending: Vec::new(),
                },
                4,
            )
        })
        .and_then(|chain| chain.sink(sink))
        .and_then(|builder| builder.run())
        .expect("pipeline starts");
    let summary = handle.join().expect("pipeline completes");

    let seen = seen.lock().expect("sink lock").clone();
    assert_eq!(seen, (0..500).collect::<Vec<u64>>());
    assert!(finished.load(std::sync::atomic::Ordering::SeqCst));
    let names: Vec<&str> = summary.stages.iter().map(|s| s.stage.as_str()).collect();
    assert_eq!(names, ["data", "first", "slow", "regroup", "sink"]);
    for stats in &summary.stages {
        assert_eq!(stats.batches, 500, "{stats:?}");
        assert_eq!(stats.images, 500 * 8, "{stats:?}");
    }
    assert!(summary.stage("slow").map_or(0.0, |s| s.busy_s) >= 0.1);
    assert!(summary.wall >= Duration::from_millis(150));
}

/// Owns non-`Sync` state, like a message holding tch tensors.
struct NotSync(std::cell::Cell<u64>);

impl ard_actors::Message for NotSync {
    fn images(&self) -> u64 {
        1
    }
}

struct NotSyncSource(u64);

impl ard_actors::Source for NotSyncSource {
    type Out = NotSync;
    fn name(&self) -> &str {
        "data"
    }
    fn produce(&mut self) -> Result<Option<NotSync>, StageError> {
        self.0 += 1;
        Ok((self.0 <= 3).then(|| NotSync(std::cell::Cell::new(self.0))))
    }
}

struct NotSyncSink(std::sync::Arc<std::sync::Mutex<u64>>);

impl Stage for NotSyncSink {
    type In = NotSync;
    type Out = ();
    fn name(&self) -> &str {
        "sink"
    }
    fn handle(&mut self, msg: NotSync, _out: &mut Emitter<()>) -> Result<(), StageError> {
        *self.0.lock().map_err(|_| StageError::msg("poisoned"))? += msg.0.get();
        Ok(())
    }
}

#[test]
fn messages_need_only_be_send() {
    let total = std::sync::Arc::new(std::sync::Mutex::new(0));
    start(builder(), NotSyncSource(0), 1, NotSyncSink(total.clone()))
        .join()
        .expect("pipeline completes");
    assert_eq!(*total.lock().expect("lock"), 1 + 2 + 3);
}
