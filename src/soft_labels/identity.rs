//! What a run's cache must match, computed from the config and the data: md5 of
//! the teacher's weights file, md5 of the training split in use, augmentation
//! and view policy, classes and dtype; and where the cache file lives.

use super::error::{CacheError, CacheResult};
use super::format::{Dtype, Identity, AUGMENTATION};
use super::views::{ViewSet, FIXED_VIEWS_POLICY};
use crate::config::Config;
use crate::data::checksum::{file_digest, hex};
use crate::data::Split;
use crate::error::{Error, Result};
use md5::{Digest, Md5};
use std::path::{Path, PathBuf};

/// Lower-case hex md5 of the file at `path`.
pub fn md5_file(path: &Path) -> CacheResult<String> {
    file_digest::<Md5>(path).map_err(|e| CacheError::io(path, e))
}

/// md5 of a training split: its image bytes, then its label bytes.
pub fn dataset_md5(train: &Split) -> String {
    let mut hasher = Md5::new();
    hasher.update(&train.images);
    hasher.update(&train.labels);
    hex(&hasher.finalize())
}

/// The augmentation-policy string of a header: [`AUGMENTATION`], plus the
/// fixed-view construction when views are fixed.
pub fn augmentation_policy(views: ViewSet) -> String {
    match views {
        ViewSet::All => AUGMENTATION.to_owned(),
        ViewSet::Fixed(_) => format!("{AUGMENTATION}; {FIXED_VIEWS_POLICY}"),
    }
}

/// The view set of `[teacher] views`, or a config error.
pub fn view_set(cfg: &Config) -> Result<ViewSet> {
    ViewSet::from_config(cfg.teacher.views).ok_or_else(|| Error::Config {
        file: "teacher.views".into(),
        message: format!(
            "{} is not \"all\" or 1..=162",
            crate::config::spelled(&cfg.teacher.views)
        ),
    })
}

/// The identity a run of `cfg` on `train` needs its cache to have. Hashes the
/// teacher's weights file (`teacher.weights`, required) and the split.
pub fn run_identity(cfg: &Config, train: &Split) -> Result<Identity> {
    let weights = cfg.teacher.weights.as_ref().ok_or_else(|| Error::Config {
        file: "teacher.weights".into(),
        message: "the soft-label cache needs the teacher's weights file (its md5 keys the cache)"
            .into(),
    })?;
    let views = view_set(cfg)?;
    Ok(Identity {
        teacher_arch: cfg.teacher.arch.to_string(),
        teacher_weights_md5: md5_file(weights)?,
        dataset_md5: dataset_md5(train),
        dataset_images: train.len() as u64,
        augmentation: augmentation_policy(views),
        views,
        num_classes: crate::models::NUM_CLASSES as u32,
        dtype: Dtype::from(cfg.teacher.cache_dtype),
    })
}

/// The cache file of `cfg`: `teacher.cache_dir/ARCH-VIEWS-DTYPE.softlabels`,
/// e.g. `cache/soft-labels/wrn34_10-all-f16.softlabels`. The header, not the
/// name, decides whether a run may use it.
pub fn cache_path(cfg: &Config) -> Result<PathBuf> {
    let views = view_set(cfg)?;
    Ok(cfg.teacher.cache_dir.join(format!(
        "{}-{}-{}.softlabels",
        cfg.teacher.arch,
        views.file_tag(),
        Dtype::from(cfg.teacher.cache_dtype).name()
    )))
}
