//! The teacher soft-label cache: the teacher's logits for (training image,
//! augmentation view), computed once and shared by epochs, runs and shards.
//!
//! The teacher only ever sees clean augmented images, so its output for an
//! (image, view) pair never changes: a cache keyed by (dataset index, view) is
//! exact. With `[teacher] soft_labels = "cached"` a run reads its soft labels
//! from the cache file and runs the teacher only on misses, storing them.
//!
//! - [`views`]: which views an image has in the cache (all 162, or K fixed ones)
//!   and which one it is trained on in an epoch;
//! - [`format`]: the file format (magic, bincode header, filled bitmap, logits);
//! - [`identity`]: what a run's cache must match (teacher weights md5, dataset
//!   md5, policy, dtype) and where the file lives;
//! - [`lock`]: the writer lock (one writer per file; readers take none);
//! - [`cache`]: [`SoftLabelCache`], one file mapped read-only or held for writing;
//! - [`source`]: [`SoftLabelSource`], the teacher logits of a batch from the cache
//!   or the teacher, used by the teacher stage and the sequential trainer;
//! - [`shard`]: `--shard I/N` ranges and merging shard files;
//! - [`command`]: the `ard-pipeline soft-labels` subcommand.
//!
//! Sizes (50,000 images, 10 classes): 20 bytes per (image, view) in f16, so
//! 1 MB per view-set and 162 MB for all 162 views (324 MB in f32).

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
