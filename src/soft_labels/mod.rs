//! The teacher soft-label cache: the teacher's logits for (training image,
//! augmentation view), computed once and shared by epochs, runs and shards (see
//! the README). The teacher only sees clean augmented images, so a cache keyed
//! by (dataset index, view) is exact.
//!
//! With `views = "all"` each epoch draws new views (a repeat has probability
//! 1/162), so a cold cache saves little within one run: fill it ahead with
//! `ard-pipeline soft-labels` (shardable with `--shard I/N`). `views = K`
//! ([`views::fixed_views`]) also applies to `online` runs, so the two compare
//! like for like.
//!
//! An f32 cache gives runs bit-identical to online ones (same seed,
//! deterministic settings; `tests/soft_labels_training.rs`). f16 rounds each logit (relative error
//! below 4.9e-4), misses too, so a warm and a cold cache give the same run;
//! measured on the test setting, after 12 steps the weights differ from the
//! online run's as much as two online runs at 1 and 2 threads do: f16 is at the
//! noise floor of training itself.
//!
//! Sharing: a complete cache is mapped read-only without a lock; a writer
//! holds `FILE.lock` ([`lock`]) and replaces the file atomically. A file whose
//! header names another teacher, dataset, view policy or dtype is refused,
//! naming the field ([`identity`]).

pub mod cache;
pub mod command;
pub mod error;
pub mod format;
pub mod identity;
pub mod lock;
pub mod shard;
pub mod source;
pub mod views;

pub use cache::{Access, SoftLabelCache};
pub use error::{CacheError, CacheResult};
pub use format::{Dtype, Header, Identity};
pub use identity::{cache_path, run_identity};
pub use shard::{merge, MergeReport, Shard};
pub use source::SoftLabelSource;
pub use views::{fixed_views, slot_for, ViewSet};
