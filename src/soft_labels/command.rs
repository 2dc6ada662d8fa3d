//! `ard-pipeline soft-labels`: fill the cache ahead of training (the whole
//! training split, or one shard of it), and `soft-labels merge`: join shards.

use super::cache::{Access, SoftLabelCache};
use super::format::Header;
use super::identity::{cache_path, run_identity};
use super::shard::{self, MergeReport, Shard};
use super::source::{teacher_logits, to_host_f32};
use crate::config::{Config, SoftLabels};
use crate::data::{self, SplitKind};
use crate::error::{Error, Result};
use crate::models::Model;
use std::ops::Range;
use std::path::PathBuf;
use std::time::{Duration, Instant};

/// Write what is filled at least this often, so a killed fill resumes.
const CHECKPOINT_EVERY: Duration = Duration::from_secs(300);
/// Log progress at most this often.
const PROGRESS_EVERY: Duration = Duration::from_secs(10);

/// What a fill did.
#[derive(Debug, Clone, PartialEq)]
pub struct FillReport {
    /// The file filled (the full cache, or a shard's partial file).
    pub path: PathBuf,
    /// Dataset indices `start..end` it holds.
    pub images: (u64, u64),
    /// Entries computed now.
    pub computed: u64,
    /// Entries that were already there (a resumed or repeated fill).
    pub already: u64,
    /// Whether the file was (re)written.
    pub written: bool,
    pub seconds: f64,
    /// Entries still to compute when `stop` asked to end early (0 when complete).
    pub left: u64,
}

impl FillReport {
    /// One line for the terminal.
    pub fn summary(&self) -> String {
        format!(
            "{}: images {}..{}, {} computed, {} already filled, {:.1}s{}",
            self.path.display(),
            self.images.0,
            self.images.1,
            crate::report::plural::count(self.computed, "entry"),
            self.already,
            self.seconds,
            if self.written {
                ""
            } else {
                " (nothing to write)"
            }
        )
    }
}

/// Fills the cache of `cfg` with the teacher's logits for every training image
/// (after `train_limit`) and every view of `teacher.views`, or for the images of
/// `shard` only, into its partial file. Resumes a partly filled file; batches
/// of `data.batch_size` (image, view) pairs; `progress` gets log lines.
/// `stop` is asked after each batch: when
/// it says so, the entries computed so far are saved and the fill ends early
/// (its report says how many are left); the next fill continues from there.
pub fn fill(
    cfg: &Config,
    shard: Option<Shard>,
    stop: impl Fn() -> bool,
    mut progress: impl FnMut(&str),
) -> Result<FillReport> {
    let started = Instant::now();
    if cfg.teacher.soft_labels != SoftLabels::Cached {
        return Err(Error::Setting(format!(
            "teacher.soft_labels = \"{}\": this config's runs compute the teacher's logits online \
             and never read a cache, so there is nothing to fill; set teacher.soft_labels = \"cached\" to use one",
            crate::config::spelled(&cfg.teacher.soft_labels)
        )));
    }
    let device = crate::device::resolve_device(&cfg.run.device)?;
    crate::perf::configure_process(cfg);
    let weights = cfg.teacher.weights.as_ref().ok_or_else(|| Error::Config {
        file: "teacher.weights".into(),
        message: "filling soft labels needs the teacher's weights".into(),
    })?;
    let train = data::load(&cfg.data, SplitKind::Train)?;
    let teacher = Model::load(cfg.teacher.arch, device, weights)?;
    let identity = run_identity(cfg, &train)?;
    let full = cache_path(cfg)?;
    let n = train.len() as u64;
    let (path, (start, end)) = match shard {
        Some(s) => (s.path(&full), s.range(n)),
        None => (full, (0, n)),
    };
    let header = Header::new(identity, start, end, shard);
    let mut cache = SoftLabelCache::open(&path, &header, Access::ReadWrite)?;
    let views = cache.identity().views;
    let slots = cache.slots();
    let already = cache.filled();
    let pending = missing_entries(&cache, start..end)?;
    progress(&format!(
        "soft labels: {} images {start}..{end} x {} ({}): {} to compute, {} already filled",
        path.display(),
        slots,
        views,
        crate::report::plural::count(pending.len() as u64, "entry"),
        already
    ));
    let batch_size = cfg.data.batch_size.max(1);
    let (mut last_log, mut last_save) = (Instant::now(), Instant::now());
    let mut computed = 0u64;
    let entries = Entries {
        train: &train,
        teacher: &teacher,
        device,
    };
    for chunk in pending.chunks(batch_size) {
        entries.compute(&mut cache, chunk)?;
        computed += chunk.len() as u64;
        if last_log.elapsed() >= PROGRESS_EVERY {
            let rate = computed as f64 / started.elapsed().as_secs_f64().max(1e-9);
            let left = (pending.len() as u64 - computed) as f64 / rate.max(1e-9);
            progress(&format!(
                "soft labels: {computed}/{} entries ({rate:.0} images/s, about {left:.0}s left)",
                pending.len()
            ));
            last_log = Instant::now();
        }
        if last_save.elapsed() >= CHECKPOINT_EVERY {
            cache.flush()?;
            last_save = Instant::now();
        }
        if stop() {
            break;
        }
    }
    let written = cache.flush()?;
    let report = FillReport {
        path,
        images: (start, end),
        computed,
        already,
        written,
        seconds: started.elapsed().as_secs_f64(),
        left: pending.len() as u64 - computed,
    };
    progress(&report.summary());
    Ok(report)
}

/// The (image, slot) entries in `images` the cache does not hold yet.
fn missing_entries(cache: &SoftLabelCache, images: Range<u64>) -> Result<Vec<(u64, usize)>> {
    let mut pending = Vec::new();
    for i in images {
        for s in 0..cache.slots() {
            if !cache.contains(i, s)? {
                pending.push((i, s));
            }
        }
    }
    Ok(pending)
}

/// What computing cache entries reads: the training split and the teacher.
struct Entries<'a> {
    train: &'a data::Split,
    teacher: &'a Model,
    device: tch::Device,
}

impl Entries<'_> {
    /// The teacher's logits for `chunk`'s (image, slot) pairs, put in `cache`.
    fn compute(&self, cache: &mut SoftLabelCache, chunk: &[(u64, usize)]) -> Result<()> {
        let views = cache.identity().views;
        let c = cache.classes();
        let indices: Vec<usize> = chunk.iter().map(|&(i, _)| i as usize).collect();
        let chunk_views: Vec<data::View> = chunk
            .iter()
            .map(|&(i, s)| {
                views
                    .view_at(i, s)
                    .ok_or_else(|| Error::invalid("soft labels", format!("no view in slot {s}")))
            })
            .collect::<Result<_>>()?;
        let batch = data::make_batch(self.train, &indices, &chunk_views, self.device)?;
        let values = to_host_f32(&teacher_logits(self.teacher, &batch.images))?;
        if values.len() != chunk.len() * c {
            return Err(Error::invalid(
                "soft labels",
                format!(
                    "the teacher gave {} logits for {} images, the cache holds {c} classes",
                    values.len(),
                    chunk.len()
                ),
            ));
        }
        for (&(i, s), row) in chunk.iter().zip(values.chunks_exact(c)) {
            cache.put(i, s, row)?;
        }
        Ok(())
    }
}

/// Joins shard files into the full cache. Without `inputs`, the shards are
/// the `NAME.shard-I-of-N` files beside the config's cache file (`cfg` is
/// needed then); without `output`, the output is that cache file.
pub fn merge(
    cfg: Option<&Config>,
    inputs: Vec<PathBuf>,
    output: Option<PathBuf>,
) -> Result<MergeReport> {
    let cached = cfg.map(cache_path).transpose()?;
    let full = match (&output, &cached) {
        (Some(p), _) => p.clone(),
        (None, Some(p)) => p.clone(),
        (None, None) => {
            return Err(Error::Usage(
                "soft-labels merge: give --config or --output".into(),
            ))
        }
    };
    if !inputs.is_empty() {
        return Ok(shard::merge(&inputs, &full)?);
    }
    let Some(cached) = cached else {
        return Err(Error::Usage(
            "soft-labels merge: give the shard files, or --config to merge the shards beside its cache file".into(),
        ));
    };
    let found = shard::find_shards(&cached)?;
    if found.is_empty() {
        return Err(Error::Usage(format!(
            "soft-labels merge: no shard files {}.shard-I-of-N found",
            cached.display()
        )));
    }
    Ok(shard::merge(&found, &full)?)
}
