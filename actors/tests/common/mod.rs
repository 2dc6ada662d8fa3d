//! Mock stages shared by the integration tests: a counting source, a mapping stage
//! and a collecting sink with injectable faults; helpers to build and start pipelines
//! and to check failures.
#![allow(dead_code)]

use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use ard_actors::{
    Emitter, Message, PipelineBuilder, PipelineError, PipelineHandle, PipelineOptions, Source,
    Stage, StageError,
};
use prometheus::Registry;

/// A numbered batch of `images` images.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Batch {
    pub seq: u64,
    pub images: u64,
}

impl Message for Batch {
    fn images(&self) -> u64 {
        self.images
    }
}

/// Counts messages alive between the source and the sink, and the maximum seen.
#[derive(Default)]
pub struct Outstanding {
    now: AtomicUsize,
    max: AtomicUsize,
}

impl Outstanding {
    pub fn add(&self) {
        let now = self.now.fetch_add(1, Ordering::SeqCst) + 1;
        self.max.fetch_max(now, Ordering::SeqCst);
    }

    pub fn remove(&self) {
        self.now.fetch_sub(1, Ordering::SeqCst);
    }

    pub fn max(&self) -> usize {
        self.max.load(Ordering::SeqCst)
    }
}

/// Produces batches 0..count (`u64::MAX` for "endless"), each of `images` images.
pub struct CountSource {
    pub name: String,
    pub next: u64,
    pub count: u64,
    pub images: u64,
    pub delay: Duration,
    pub outstanding: Option<Arc<Outstanding>>,
    /// Set when the source is dropped (its thread ended).
    pub dropped: Option<Arc<AtomicBool>>,
}

impl CountSource {
    pub fn new(name: &str, count: u64) -> Self {
        Self {
            name: name.to_owned(),
            next: 0,
            count,
            images: 8,
            delay: Duration::ZERO,
            outstanding: None,
            dropped: None,
        }
    }
}

impl Source for CountSource {
    type Out = Batch;

    fn name(&self) -> &str {
        &self.name
    }

    fn produce(&mut self) -> Result<Option<Batch>, StageError> {
        if self.next >= self.count {
            return Ok(None);
        }
        if !self.delay.is_zero() {
            std::thread::sleep(self.delay);
        }
        let batch = Batch {
            seq: self.next,
            images: self.images,
        };
        self.next += 1;
        if let Some(outstanding) = &self.outstanding {
            outstanding.add();
        }
        Ok(Some(batch))
    }
}

impl Drop for CountSource {
    fn drop(&mut self) {
        if let Some(dropped) = &self.dropped {
            dropped.store(true, Ordering::SeqCst);
        }
    }
}

/// What a [`MapStage`] (or a [`CollectSink`]) does at a given batch.
#[derive(Clone, Copy, Debug)]
pub enum Fault {
    None,
    /// Return an error when handling batch `seq`.
    ErrorAt(u64),
    /// Panic when handling batch `seq`.
    PanicAt(u64),
    /// Sleep this long inside `handle` at batch `seq` (a stall).
    SleepAt(u64, Duration),
    /// Return an error from `finish`.
    ErrorInFinish,
}

impl Fault {
    /// Acts out the fault if it is due at batch `batch`.
    fn at(self, batch: u64) -> Result<(), StageError> {
        match self {
            Fault::ErrorAt(seq) if seq == batch => Err(StageError::msg(format!("boom at {seq}"))),
            Fault::PanicAt(seq) if seq == batch => panic!("kaboom at {seq}"),
            Fault::SleepAt(seq, duration) if seq == batch => {
                std::thread::sleep(duration);
                Ok(())
            }
            _ => Ok(()),
        }
    }
}

/// Passes batches through (after `delay`), possibly faulting.
pub struct MapStage {
    pub name: String,
    pub delay: Duration,
    pub fault: Fault,
}

impl MapStage {
    pub fn new(name: &str) -> Self {
        Self {
            name: name.to_owned(),
            delay: Duration::ZERO,
            fault: Fault::None,
        }
    }

    pub fn with_fault(name: &str, fault: Fault) -> Self {
        Self {
            fault,
            ..Self::new(name)
        }
    }
}

impl Stage for MapStage {
    type In = Batch;
    type Out = Batch;

    fn name(&self) -> &str {
        &self.name
    }

    fn handle(&mut self, msg: Batch, out: &mut Emitter<Batch>) -> Result<(), StageError> {
        if !self.delay.is_zero() {
            std::thread::sleep(self.delay);
        }
        self.fault.at(msg.seq)?;
        out.send(msg)
    }

    fn finish(&mut self, _out: &mut Emitter<Batch>) -> Result<(), StageError> {
        match self.fault {
            Fault::ErrorInFinish => Err(StageError::msg("flush failed")),
            _ => Ok(()),
        }
    }
}

/// Records the sequence numbers it receives (after `delay` each), possibly faulting
/// (`ErrorInFinish` aside).
pub struct CollectSink {
    pub name: String,
    pub seen: Arc<Mutex<Vec<u64>>>,
    pub delay: Duration,
    pub fault: Fault,
    pub outstanding: Option<Arc<Outstanding>>,
    pub finished: Arc<AtomicBool>,
}

impl CollectSink {
    pub fn new(name: &str) -> Self {
        Self {
            name: name.to_owned(),
            seen: Arc::default(),
            delay: Duration::ZERO,
            fault: Fault::None,
            outstanding: None,
            finished: Arc::default(),
        }
    }
}

impl Stage for CollectSink {
    type In = Batch;
    type Out = ();

    fn name(&self) -> &str {
        &self.name
    }

    fn handle(&mut self, msg: Batch, _out: &mut Emitter<()>) -> Result<(), StageError> {
        if !self.delay.is_zero() {
            std::thread::sleep(self.delay);
        }
        self.fault.at(msg.seq)?;
        self.seen
            .lock()
            .map_err(|_| StageError::msg("poisoned"))?
            .push(msg.seq);
        if let Some(outstanding) = &self.outstanding {
            outstanding.remove();
        }
        Ok(())
    }

    fn finish(&mut self, _out: &mut Emitter<()>) -> Result<(), StageError> {
        self.finished.store(true, Ordering::SeqCst);
        Ok(())
    }
}

/// A fresh registry, so tests running in parallel do not collide.
pub fn registry() -> Registry {
    Registry::new()
}

/// A builder with default options on a fresh registry.
pub fn builder() -> PipelineBuilder {
    PipelineBuilder::new(&registry(), PipelineOptions::default()).expect("builder")
}

/// Runs `source` (output queue of `capacity`) straight into `sink` on `builder`.
pub fn start<S, K>(builder: PipelineBuilder, source: S, capacity: usize, sink: K) -> PipelineHandle
where
    S: Source,
    K: Stage<In = S::Out, Out = ()>,
{
    builder
        .source(source, capacity)
        .and_then(|chain| chain.sink(sink))
        .and_then(|builder| builder.run())
        .expect("pipeline starts")
}

/// Asserts that `error` is a failure of stage `expected` whose message contains `text`.
pub fn assert_failed(error: &PipelineError, expected: &str, text: &str) {
    match error {
        PipelineError::StageFailed { stage, message, .. } => {
            assert_eq!(stage, expected);
            assert!(message.contains(text), "{message}");
        }
        other => panic!("expected StageFailed, got {other:?}"),
    }
}
