//! The CIFAR-10 data layer: the binary reader ([`cifar`]), md5 checks
//! ([`checksum`]) and the verified download ([`download`]), the 162
//! crop-and-flip [`View`]s ([`augment`]), epoch plans and [`Batch`] tensors
//! ([`batch`]), and the held-out validation split ([`validation`]).
//!
//! Typical use: `let train = data::load(&cfg.data, SplitKind::Train)?;` then, per
//! epoch, `for (idx, views) in EpochPlan::train(&cfg.data, seed, epoch).batches(train.len())`
//! and `make_batch(&train, &idx, &views, device)?`.

pub mod augment;
pub mod batch;
pub mod checksum;
pub mod cifar;
pub mod download;
pub mod validation;

pub use augment::{apply_view, view_for, View, NUM_VIEWS};
pub use batch::{batches, epoch_order, make_batch, Batch, Batches, EpochPlan};
pub use checksum::{Stamp, STAMP_FILE};
pub use cifar::{load_split, Split, SplitKind, IMAGE_BYTES, NUM_CLASSES};
pub use download::{download_cifar10_from, ensure_cifar10, ARCHIVE_MD5, URL};

use crate::config::DataConfig;
use crate::error::Result;

/// Loads split `kind` as `[data]` says: makes sure the files are there
/// ([`ensure_cifar10`]), reads and verifies them ([`load_split`]), and keeps the
/// first `train_limit` / `test_limit` images. Training images exclude the
/// validation split (the last `validation_images`, see [`validation`]).
pub fn load(cfg: &DataConfig, kind: SplitKind) -> Result<Split> {
    if kind == SplitKind::Train {
        return Ok(validation::load_train_and_validation(cfg)?.0);
    }
    ensure_cifar10(cfg)?;
    let split = load_split(&cfg.root, kind, cfg.checksums)?;
    Ok(split.prefix(cfg.test_limit.unwrap_or(usize::MAX)))
}
