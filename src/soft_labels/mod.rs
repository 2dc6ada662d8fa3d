//! The teacher soft-label cache: the teacher's logits for (training image,
//! augmentation view), computed once and shared by epochs, runs and shards.
//!
//! The teacher only ever sees clean augmented images, so its output for an
//! (image, view) pair never changes: a cache keyed by (dataset index, view) is
//! exact. `[teacher] soft_labels = "cached"` makes a run read its soft labels
//! from the cache file and run the teacher only on misses, storing them.
//!
//! # Modes
//!
//! - `online`: a teacher forward on every batch (no file).
//! - `cached`, `views = "all"`: the augmentation stays exactly the paper's random
//!   crop+flip; the cache holds all 162 views of each image (162 MB in f16 for
//!   50,000 images). A run fills what it misses, but each epoch draws new views
//!   (a repeat has probability 1/162), so a cold cache saves little within one
//!   run: fill it ahead with `ard-pipeline soft-labels` (one teacher pass over
//!   162 views, shardable with `--shard I/N`), and every later run, and every
//!   run of a sweep, skips the teacher entirely.
//! - `cached`, `views = K`: each image is trained on one of K fixed views
//!   ([`views::fixed_views`]), as in fast-KD work. Filling costs K teacher passes
//!   instead of 162, and a run's own first epochs fill the cache quickly; the
//!   price is the augmentation: the student sees K distinct crops of each image
//!   instead of up to 162, which weakens augmentation's regularisation (to be
//!   measured per K on robust accuracy; `configs/ablations/fixed-views.toml`).
//!   `views = K` also applies to `online` runs, so the two compare like for like.
//!
//! # Exactness and storage type
//!
//! With `cache_dtype = "f32"` a cached run is bit-identical to the online run
//! (same seed, deterministic settings; `tests/soft_labels_training.rs`). f16
//! rounds each logit to 11 significant bits (relative error below 4.9e-4);
//! misses are returned rounded too, so a run is the same with a warm or a cold
//! cache. Measured on the test setting (MobileNetV2-x0.25 student, WRN-10-1
//! teacher, 1 thread): the student after one step differs from the online run's
//! by 2e-5 relative; later steps amplify any difference through the attack's
//! sign(gradient), so after 12 steps the weights differ as much as those of two
//! online runs at 1 and 2 threads (last-bit rounding only): f16 is at the noise
//! floor of training itself.
//!
//! # Sharing
//!
//! A complete cache is memory-mapped read-only and never written, so any number
//! of runs share it without a lock. A run or fill that adds entries holds the
//! writer lock `FILE.lock` (a second writer gets a clear error) and replaces the
//! file atomically (temp file, fsync, rename) at epoch ends. A file whose header
//! names another teacher (weights md5), dataset (md5 of the split after
//! `train_limit`), augmentation or view policy, class count or dtype is refused,
//! naming the field.
//!
//! # Modules
//!
//! - [`views`]: which views an image has in the cache (all 162, or K fixed ones)
//!   and which one it is trained on in an epoch;
//! - [`format`]: the file format (magic, bincode header, filled bitmap, logits);
//! - [`identity`]: what a run's cache must match, and where the file lives;
//! - [`lock`]: the writer lock (one writer per file; readers take none);
//! - [`cache`]: [`SoftLabelCache`], one file mapped read-only or held for writing;
//! - [`source`]: [`SoftLabelSource`], the teacher logits of a batch from the cache
//!   or the teacher, used by the teacher stage and the sequential trainer;
//! - [`shard`]: `--shard I/N` ranges and merging shard files;
//! - [`command`]: the `ard-pipeline soft-labels` subcommand.
//!
//! Metrics: `ard_soft_label_cache_hits_total` and `..._misses_total` count
//! images; the teacher stage's busy share (`ard_stage_busy_seconds_total{stage="teacher"}`,
//! and the run report) shows what the cache saves.

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
