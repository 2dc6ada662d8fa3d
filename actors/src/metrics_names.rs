//! The canonical names, help strings and labels of the runtime's metrics.
//!
//! Every stage emits every metric in [`REQUIRED_STAGE_METRICS`] (labelled with
//! [`STAGE_LABEL`]), and every queue emits [`QUEUE_DEPTH`] (labelled with
//! [`QUEUE_LABEL`], named by [`queue_name`]). A shared test checks both.

/// Label naming the stage of a per-stage metric.
pub const STAGE_LABEL: &str = "stage";
/// Label naming the queue of [`QUEUE_DEPTH`].
pub const QUEUE_LABEL: &str = "queue";

/// Counter: batches (messages) a stage processed; a source counts those it produced.
pub const STAGE_BATCHES_TOTAL: &str = "ard_stage_batches_total";
/// Help text of [`STAGE_BATCHES_TOTAL`].
pub const STAGE_BATCHES_TOTAL_HELP: &str =
    "Batches processed by a stage (produced, for the source).";

/// Counter: images in those batches.
pub const STAGE_IMAGES_TOTAL: &str = "ard_stage_images_total";
/// Help text of [`STAGE_IMAGES_TOTAL`].
pub const STAGE_IMAGES_TOTAL_HELP: &str =
    "Images in the batches processed by a stage (produced, for the source).";

/// Counter: seconds a stage spent working (not waiting on its queues).
pub const STAGE_BUSY_SECONDS_TOTAL: &str = "ard_stage_busy_seconds_total";
/// Help text of [`STAGE_BUSY_SECONDS_TOTAL`].
pub const STAGE_BUSY_SECONDS_TOTAL_HELP: &str =
    "Seconds a stage spent working, excluding waits on its queues and side channels.";

/// Counter: seconds a stage spent blocked on a full output queue (backpressure).
pub const STAGE_BLOCKED_SECONDS_TOTAL: &str = "ard_stage_blocked_seconds_total";
/// Help text of [`STAGE_BLOCKED_SECONDS_TOTAL`].
pub const STAGE_BLOCKED_SECONDS_TOTAL_HELP: &str =
    "Seconds a stage spent blocked on a full output queue.";

/// Counter: seconds a stage spent waiting on an empty input queue or a side channel.
pub const STAGE_IDLE_SECONDS_TOTAL: &str = "ard_stage_idle_seconds_total";
/// Help text of [`STAGE_IDLE_SECONDS_TOTAL`].
pub const STAGE_IDLE_SECONDS_TOTAL_HELP: &str =
    "Seconds a stage spent waiting on an empty input queue or a side channel.";

/// Gauge: messages waiting in a queue between two stages.
pub const QUEUE_DEPTH: &str = "ard_queue_depth";
/// Help text of [`QUEUE_DEPTH`].
pub const QUEUE_DEPTH_HELP: &str = "Messages waiting in the queue between two stages.";

/// The metrics every stage must emit, each labelled with [`STAGE_LABEL`].
pub const REQUIRED_STAGE_METRICS: [&str; 5] = [
    STAGE_BATCHES_TOTAL,
    STAGE_IMAGES_TOTAL,
    STAGE_BUSY_SECONDS_TOTAL,
    STAGE_BLOCKED_SECONDS_TOTAL,
    STAGE_IDLE_SECONDS_TOTAL,
];

/// The [`QUEUE_LABEL`] value of the queue from `producer` to `consumer`:
/// `"<producer>_to_<consumer>"`.
pub fn queue_name(producer: &str, consumer: &str) -> String {
    format!("{producer}_to_{consumer}")
}
