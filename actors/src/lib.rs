//! ard-actors: the generic actor runtime of ard-pipeline (no tch, no ML).
//!
//! A pipeline is a [`Source`], [`Stage`]s and a sink (a `Stage` with `Out = ()`),
//! each on its own OS thread, connected by bounded crossbeam queues that block when
//! full (backpressure, never dropping). The runtime measures every stage (batches,
//! images, seconds busy, blocked on output, idle on input; queue depths) into a
//! Prometheus registry, stops everything promptly when one stage fails, panics or
//! stalls, and on a clean end of input drains and flushes in order.
//!
//! ```
//! use ard_actors::{Emitter, Message, PipelineBuilder, PipelineOptions, Source, Stage, StageError};
//!
//! struct Images(u64); // a batch of this many images
//! impl Message for Images {
//!     fn images(&self) -> u64 { self.0 }
//! }
//!
//! struct Data { left: u32 }
//! impl Source for Data {
//!     type Out = Images;
//!     fn name(&self) -> &str { "data" }
//!     fn produce(&mut self) -> Result<Option<Images>, StageError> {
//!         if self.left == 0 { return Ok(None); }
//!         self.left -= 1;
//!         Ok(Some(Images(128)))
//!     }
//! }
//!
//! struct Count { total: u64 }
//! impl Stage for Count {
//!     type In = Images;
//!     type Out = (); // a sink
//!     fn name(&self) -> &str { "count" }
//!     fn handle(&mut self, msg: Images, _out: &mut Emitter<()>) -> Result<(), StageError> {
//!         self.total += msg.0;
//!         Ok(())
//!     }
//! }
//!
//! # fn main() -> Result<(), ard_actors::PipelineError> {
//! let registry = prometheus::Registry::new();
//! let summary = PipelineBuilder::new(&registry, PipelineOptions::default())?
//!     .source(Data { left: 10 }, 4)?
//!     .sink(Count { total: 0 })?
//!     .run()?
//!     .join()?;
//! assert_eq!(summary.stage("count").map(|s| s.images), Some(1280));
//! println!("{summary}");
//! # Ok(())
//! # }
//! ```
//!
//! Modules, one concept each:
//! - [`stage`]: the `Message`, `Source` and `Stage` traits;
//! - [`emitter`]: a stage's output, with backpressure and cancellation;
//! - [`pipeline`]: builder, typed chain, running handle;
//! - [`cancel`]: the cancellation token;
//! - [`mailbox`]: the versioned latest-value side channel (weights);
//! - [`error`]: `StageError`, `PipelineError`;
//! - [`lane`]: a compute thread shared by stages (one intra-op team on a CPU);
//! - [`metrics_names`]: canonical metric names and help;
//! - [`stats`]: per-stage snapshots and the run summary;
//! - [`compliance`]: the shared check that every stage exports every metric;
//! - internal: `metrics` (registration), `inbox`, `driver` (the stage loop),
//!   `supervisor` (first failure wins), `watchdog` (stall detection).

#![warn(clippy::too_many_lines)]

pub mod cancel;
pub mod compliance;
mod driver;
pub mod emitter;
pub mod error;
mod inbox;
pub mod lane;
pub mod mailbox;
mod metrics;
pub mod metrics_names;
pub mod pipeline;
pub mod stage;
pub mod stats;
mod supervisor;
mod watchdog;

pub use cancel::CancelToken;
pub use emitter::{Emitter, TrySend};
pub use error::{PipelineError, StageError};
pub use lane::{ComputeLane, LaneServer, LaneStopped};
pub use mailbox::{Mailbox, MailboxError, Versioned};
pub use pipeline::{Chain, PipelineBuilder, PipelineHandle, PipelineOptions};
pub use stage::{Message, Source, Stage};
pub use stats::{RunSummary, StageShares, StageStats, StatsReader};
