//! The traits a pipeline is made of: [`Message`], [`Source`] and [`Stage`].
//!
//! A pipeline is one [`Source`], any number of [`Stage`]s, and a sink, which is a
//! [`Stage`] whose output type is `()`. Each runs on its own OS thread and owns its
//! state; messages move between threads by value, so they need only be
//! `Send + 'static` (tch tensors are `Send` but not `Sync`).

use crate::emitter::Emitter;
use crate::error::StageError;

/// A message that travels between stages: a batch of images.
pub trait Message: Send + 'static {
    /// How many images this message carries (counted in `ard_stage_images_total`).
    fn images(&self) -> u64;
}

/// The output of a sink. Carries no images.
impl Message for () {
    fn images(&self) -> u64 {
        0
    }
}

/// The first stage: produces messages until it is exhausted.
///
/// The runtime counts each produced message as one batch of this stage, and the
/// time spent in [`produce`](Source::produce) as busy time. A source that must block
/// on something other than the pipeline (a side channel) should hold a clone of the
/// pipeline's [`CancelToken`](crate::CancelToken) and honour it.
pub trait Source: Send + 'static {
    /// The messages this source produces.
    type Out: Message;

    /// Unique within the pipeline; names the thread and the `stage` metric label.
    fn name(&self) -> &str;

    /// The next message, or `None` when exhausted (the pipeline then drains and
    /// flushes in order).
    fn produce(&mut self) -> Result<Option<Self::Out>, StageError>;
}

/// A stage that turns input messages into zero or more output messages. A sink is a
/// `Stage` with `Out = ()`.
///
/// The runtime counts each input message as one batch of this stage. Time in
/// [`handle`](Stage::handle) is busy time, minus the time the emitter spent blocked
/// on a full output queue (blocked time) or in
/// [`Emitter::idle_while`] (idle time).
pub trait Stage: Send + 'static {
    /// The messages this stage consumes.
    type In: Message;
    /// The messages this stage emits; `()` for a sink.
    type Out: Message;

    /// Unique within the pipeline; names the thread and the `stage` metric label.
    fn name(&self) -> &str;

    /// Handles one input message, sending any number of outputs through `out`.
    /// An error (or a panic) stops the whole pipeline and is reported with this
    /// stage's name.
    fn handle(&mut self, msg: Self::In, out: &mut Emitter<Self::Out>) -> Result<(), StageError>;

    /// Called once when the input is exhausted (not on cancellation or failure),
    /// before the output queue is closed: flush buffered work here.
    fn finish(&mut self, out: &mut Emitter<Self::Out>) -> Result<(), StageError> {
        let _ = out;
        Ok(())
    }

    /// Called once, on the stage's own thread, when the pipeline was cancelled
    /// (a signal, or another stage's failure) and this stage stopped at a
    /// message boundary: its last `handle` completed, so its state is
    /// consistent. Save what must survive here (a checkpoint). Not called after
    /// this stage's own error or panic, nor after a normal end ([`finish`](Stage::finish)).
    fn interrupted(&mut self) {}
}
