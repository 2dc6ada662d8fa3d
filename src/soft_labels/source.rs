//! [`SoftLabelSource`]: teacher logits for a batch, from the cache or from a
//! teacher forward. The teacher stage and the sequential trainer both call it,
//! so both engines see the same soft labels.

use super::cache::{Access, SoftLabelCache};
use super::error::CacheError;
use super::format::Header;
use super::identity::{cache_path, run_identity};
use super::views::ViewSet;
use crate::config::{Config, SoftLabels};
use crate::data::{Split, View};
use crate::error::{Error, Result};
use crate::metrics::TrainMetrics;
use crate::models::Model;
use tch::{Device, Kind, Tensor};

/// Teacher logits for a clean batch: eval mode, no gradient.
pub fn teacher_logits(teacher: &Model, x: &Tensor) -> Tensor {
    let _guard = tch::no_grad_guard();
    teacher.forward_t(x, false)
}

/// The values of `t` as f32, in row-major order, copied to the host.
pub(crate) fn to_host_f32(t: &Tensor) -> Result<Vec<f32>> {
    Ok(Vec::<f32>::try_from(
        t.f_to_device(Device::Cpu)?
            .f_to_kind(Kind::Float)?
            .f_contiguous()?
            .f_flatten(0, -1)?,
    )?)
}

/// Where soft labels come from. See the module docs.
pub struct SoftLabelSource {
    cache: Option<SoftLabelCache>,
    views: ViewSet,
    metrics: Option<TrainMetrics>,
    hits: u64,
    misses: u64,
    /// A complete cache's logits held on the training device ([`SoftLabelSource::keep_on_device`]).
    resident: Option<ResidentLogits>,
}

/// Every entry of a complete cache as one `[images x slots, classes]` tensor.
struct ResidentLogits {
    logits: Tensor,
    first_image: u64,
    slots: usize,
}

impl std::fmt::Debug for SoftLabelSource {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("SoftLabelSource")
            .field("cache", &self.cache)
            .field("hits", &self.hits)
            .field("misses", &self.misses)
            .finish_non_exhaustive()
    }
}

impl SoftLabelSource {
    /// A teacher forward on every batch.
    pub fn online() -> SoftLabelSource {
        SoftLabelSource {
            cache: None,
            views: ViewSet::All,
            metrics: None,
            hits: 0,
            misses: 0,
            resident: None,
        }
    }

    /// Looks up and fills `cache`, whose view set is `views`.
    pub fn cached(cache: SoftLabelCache) -> SoftLabelSource {
        SoftLabelSource {
            views: cache.identity().views,
            cache: Some(cache),
            ..SoftLabelSource::online()
        }
    }

    /// The source a run of `cfg` on `train` uses. `online` when
    /// `teacher.soft_labels = "online"` or the run has no teacher. Otherwise the
    /// cache file of the config ([`cache_path`]): a complete file is mapped
    /// read-only and never written; an incomplete or absent one is opened for
    /// writing (under its lock), its misses are computed and stored, and it is
    /// written back at epoch ends. A file of another teacher, dataset or policy
    /// is refused.
    pub fn for_run(
        cfg: &Config,
        train: &Split,
        has_teacher: bool,
        metrics: Option<TrainMetrics>,
    ) -> Result<SoftLabelSource> {
        if cfg.teacher.soft_labels == SoftLabels::Online || !has_teacher {
            return Ok(SoftLabelSource {
                metrics,
                ..SoftLabelSource::online()
            });
        }
        let identity = run_identity(cfg, train)?;
        let path = cache_path(cfg)?;
        let header = Header::new(identity, 0, train.len() as u64, None);
        let cache = if path.exists() {
            let shared = SoftLabelCache::open(&path, &header, Access::ReadOnly)?;
            if shared.is_complete() {
                log::info!(
                    "soft labels: {} is complete ({} entries), read-only",
                    path.display(),
                    shared.capacity()
                );
                shared
            } else {
                drop(shared);
                let cache = SoftLabelCache::open(&path, &header, Access::ReadWrite)?;
                log::info!(
                    "soft labels: {} holds {} of {} entries; misses are computed and stored",
                    path.display(),
                    cache.filled(),
                    cache.capacity()
                );
                cache
            }
        } else {
            log::info!(
                "soft labels: creating {}; misses are computed and stored",
                path.display()
            );
            SoftLabelCache::open(&path, &header, Access::ReadWrite)?
        };
        Ok(SoftLabelSource {
            metrics,
            ..SoftLabelSource::cached(cache)
        })
    }

    /// A complete cache: the teacher never runs.
    pub fn is_complete(&self) -> bool {
        self.cache.as_ref().is_some_and(SoftLabelCache::is_complete)
    }

    /// The cache, if any.
    pub fn cache(&self) -> Option<&SoftLabelCache> {
        self.cache.as_ref()
    }

    /// Images served from the cache, and images the teacher ran on, so far
    /// (both 0 when online).
    pub fn counts(&self) -> (u64, u64) {
        (self.hits, self.misses)
    }

    /// Holds a complete cache's logits on `device` for the rest of the run, so
    /// a batch's soft labels are gathered there: on a GPU one upload of the
    /// whole file (2 MB per view for CIFAR-10's 50,000 images) instead of a
    /// copy per batch. Returns whether it did (only a complete cache can be).
    pub fn keep_on_device(&mut self, device: Device) -> Result<bool> {
        let Some(cache) = self.cache.as_ref().filter(|c| c.is_complete()) else {
            return Ok(false);
        };
        let (classes, slots) = (cache.classes(), cache.slots());
        let first_image = cache.header().image_start;
        let images = (cache.header().image_end - first_image) as usize;
        let mut all = vec![0f32; images * slots * classes];
        for (row, out) in all.chunks_exact_mut(classes).enumerate() {
            let (image, slot) = (first_image + (row / slots) as u64, row % slots);
            if !cache.get(image, slot, out)? {
                return Err(CacheError::corrupt(
                    cache.path(),
                    format!(
                        "it says it is complete but has no entry for image {image}, slot {slot}"
                    ),
                )
                .into());
            }
        }
        let logits = Tensor::f_from_slice(&all)?
            .f_view([(images * slots) as i64, classes as i64])?
            .f_to_device(device)?;
        self.resident = Some(ResidentLogits {
            logits,
            first_image,
            slots,
        });
        Ok(true)
    }

    /// Teacher logits `[B, classes]` (f32, on `x`'s device) for the batch `x` of
    /// dataset images `indices` under `views`. Online: a teacher forward. Cached:
    /// filled entries are read, the others computed by one teacher forward on
    /// just those images and stored (when the cache is writable). With an f16
    /// cache the computed logits are returned rounded as stored, so a run gives
    /// the same result whether the cache was warm or cold.
    pub fn logits(
        &mut self,
        teacher: &Model,
        x: &Tensor,
        indices: &[u64],
        views: &[View],
    ) -> Result<Tensor> {
        let Some(cache) = self.cache.as_mut() else {
            return Ok(teacher_logits(teacher, x));
        };
        let b = indices.len();
        if views.len() != b || x.size().first().copied() != Some(b as i64) {
            return Err(Error::invalid(
                "soft labels",
                format!(
                    "batch of {:?} images with {b} indices and {} views",
                    x.size().first(),
                    views.len()
                ),
            ));
        }
        let c = cache.classes();
        let mut out = vec![0f32; b * c];
        let mut slots = Vec::with_capacity(b);
        let mut missing = Vec::new();
        for (j, (&i, &v)) in indices.iter().zip(views).enumerate() {
            let slot = self.views.slot_of(i, v).ok_or_else(|| {
                Error::from(CacheError::invalid(
                    cache.path(),
                    format!("view {v:?} of image {i} is not among its {}", self.views),
                ))
            })?;
            slots.push(slot);
            if self.resident.is_none() && !cache.get(i, slot, &mut out[j * c..(j + 1) * c])? {
                missing.push(j);
            }
        }
        if let Some(resident) = &self.resident {
            let rows: Vec<i64> = indices
                .iter()
                .zip(&slots)
                .map(|(&i, &slot)| {
                    ((i - resident.first_image) as usize * resident.slots + slot) as i64
                })
                .collect();
            let rows = crate::device::upload(Tensor::f_from_slice(&rows)?, x.device())?;
            self.hits += b as u64;
            if let Some(m) = &self.metrics {
                m.cache_hit(b as u64);
            }
            return Ok(resident.logits.f_index_select(0, &rows)?);
        }
        let hits = (b - missing.len()) as u64;
        let misses = missing.len() as u64;
        if !missing.is_empty() {
            let sub = if missing.len() == b {
                x.shallow_clone()
            } else {
                let rows: Vec<i64> = missing.iter().map(|&j| j as i64).collect();
                x.f_index_select(0, &Tensor::from_slice(&rows).to_device(x.device()))?
            };
            let t = teacher_logits(teacher, &sub);
            if t.size() != [missing.len() as i64, c as i64] {
                return Err(CacheError::invalid(
                    cache.path(),
                    format!(
                        "the teacher gave logits of shape {:?}, it holds {c} classes",
                        t.size()
                    ),
                )
                .into());
            }
            let computed = to_host_f32(&t)?;
            let writable = cache.is_writable();
            for (r, &j) in missing.iter().enumerate() {
                let row = &mut out[j * c..(j + 1) * c];
                row.copy_from_slice(&computed[r * c..(r + 1) * c]);
                if writable {
                    cache.put(indices[j], slots[j], row)?;
                }
                cache.round_trip(row);
            }
        }
        self.hits += hits;
        self.misses += misses;
        if let Some(m) = &self.metrics {
            m.cache_hit(hits);
            m.cache_miss(misses);
        }
        crate::device::upload(
            Tensor::f_from_slice(&out)?.f_view([b as i64, c as i64])?,
            x.device(),
        )
    }

    /// Writes new entries back to the file (called at epoch ends); nothing when
    /// nothing was added or the cache is read-only.
    pub fn end_epoch(&mut self) -> Result<()> {
        if let Some(cache) = self.cache.as_mut() {
            if cache.is_writable() && cache.flush()? {
                log::info!(
                    "soft labels: wrote {} ({} of {} entries filled)",
                    cache.path().display(),
                    cache.filled(),
                    cache.capacity()
                );
            }
        }
        Ok(())
    }

    /// Writes what is left and releases the writer lock.
    pub fn finish(&mut self) -> Result<()> {
        self.end_epoch()?;
        self.cache = None;
        Ok(())
    }
}
