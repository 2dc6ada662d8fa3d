//! Shards: `--shard I/N` fills the contiguous image range I of N (I from 0) into
//! a partial file `NAME.shard-I-of-N` beside the full cache file, so N processes
//! (a Kubernetes Indexed Job, say) fill one cache together; [`merge`] joins the
//! N partial files into the full file, checking that their headers agree and
//! that the shards cover every image exactly once, each completely filled.

use super::cache::SoftLabelCache;
use super::error::{CacheError, CacheResult};
use super::format::Header;
use serde::{Deserialize, Serialize};
use std::fmt;
use std::path::{Path, PathBuf};
use std::str::FromStr;

/// Shard `index` of `count`, from 0; a partial file's header names its shard.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
pub struct Shard {
    pub index: u32,
    pub count: u32,
}

impl FromStr for Shard {
    type Err = String;
    fn from_str(s: &str) -> Result<Shard, String> {
        let bad =
            |why: &str| format!("--shard {s:?}: {why}; expected I/N with 0 <= I < N, e.g. 0/4");
        let (i, n) = s.split_once('/').ok_or_else(|| bad("no '/'"))?;
        let index: u32 = i.trim().parse().map_err(|_| bad("I is not a number"))?;
        let count: u32 = n.trim().parse().map_err(|_| bad("N is not a number"))?;
        if count == 0 {
            return Err(bad("N must be at least 1"));
        }
        if index >= count {
            return Err(bad("I must be below N (shards count from 0)"));
        }
        Ok(Shard { index, count })
    }
}

impl fmt::Display for Shard {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}/{}", self.index, self.count)
    }
}

impl Shard {
    /// Dataset indices `start..end` of this shard over `n` images: contiguous,
    /// sizes differing by at most one, covering `0..n` over all shards.
    pub fn range(self, n: u64) -> (u64, u64) {
        let at = |i: u32| (u128::from(n) * u128::from(i) / u128::from(self.count)) as u64;
        (at(self.index), at(self.index + 1))
    }

    /// The partial file of this shard beside the full cache file `full`.
    pub fn path(self, full: &Path) -> PathBuf {
        let mut name = full.file_name().unwrap_or_default().to_os_string();
        name.push(format!(".shard-{}-of-{}", self.index, self.count));
        full.with_file_name(name)
    }
}

/// The shard files beside the full cache file `full` (`NAME.shard-I-of-N`), sorted.
pub fn find_shards(full: &Path) -> CacheResult<Vec<PathBuf>> {
    let dir = full
        .parent()
        .filter(|d| !d.as_os_str().is_empty())
        .unwrap_or(Path::new("."));
    let prefix = format!(
        "{}.shard-",
        full.file_name().unwrap_or_default().to_string_lossy()
    );
    let entries = std::fs::read_dir(dir).map_err(|e| CacheError::io(dir, e))?;
    let mut found = Vec::new();
    for entry in entries {
        let entry = entry.map_err(|e| CacheError::io(dir, e))?;
        let file = entry.file_name().to_string_lossy().into_owned();
        let Some(rest) = file.strip_prefix(&prefix) else {
            continue;
        };
        let Some((i, n)) = rest.split_once("-of-") else {
            continue;
        };
        if let (Ok(i), Ok(n)) = (i.parse::<u32>(), n.parse::<u32>()) {
            found.push(((n, i), entry.path()));
        }
    }
    found.sort();
    Ok(found.into_iter().map(|(_, p)| p).collect())
}

/// What [`merge`] produced.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct MergeReport {
    pub output: PathBuf,
    pub shards: usize,
    pub images: u64,
    pub entries: u64,
}

/// Joins the partial files `shards` into `output` (written atomically under
/// its writer lock). Every shard must be complete, all headers must agree
/// (identity and N), and the shards must cover the dataset exactly once. An
/// existing `output` is replaced only when its identity matches.
pub fn merge(shards: &[PathBuf], output: &Path) -> CacheResult<MergeReport> {
    let Some(first_path) = shards.first() else {
        return Err(CacheError::invalid(output, "no shard files to merge"));
    };
    let mut parts = Vec::with_capacity(shards.len());
    for p in shards {
        parts.push(SoftLabelCache::open_any(p)?);
    }
    let shard_of = |part: &SoftLabelCache| {
        part.header().shard.ok_or_else(|| {
            CacheError::invalid(
                part.path(),
                "is not a shard file (its header names no shard)",
            )
        })
    };
    let first = &parts[0];
    let identity = first.identity().clone();
    let count = shard_of(first)?.count;
    let mut seen: Vec<Option<&Path>> = vec![None; count as usize];
    for part in &parts {
        let h = part.header();
        if let Err(mut e) = part.identity().check(&identity, part.path()) {
            if let CacheError::Mismatch { run, .. } = &mut e {
                *run = format!("{run} (as in {})", first_path.display());
            }
            return Err(e);
        }
        let shard = shard_of(part)?;
        if shard.count != count {
            return Err(CacheError::invalid(
                part.path(),
                format!(
                    "is shard {shard}, but {} is one of {count}",
                    first_path.display()
                ),
            ));
        }
        let range = shard.range(identity.dataset_images);
        if (h.image_start, h.image_end) != range {
            return Err(CacheError::corrupt(
                part.path(),
                format!(
                    "shard {shard} holds images {}..{}, expected {range:?}",
                    h.image_start, h.image_end
                ),
            ));
        }
        if let Some(other) = seen[shard.index as usize].replace(part.path()) {
            return Err(CacheError::invalid(
                part.path(),
                format!("shard {shard} is given twice (also {})", other.display()),
            ));
        }
        if !part.is_complete() {
            return Err(CacheError::invalid(
                part.path(),
                format!(
                    "shard {shard} is incomplete ({} of {} entries filled); run `ard-pipeline soft-labels --shard {shard}` again to finish it",
                    part.filled(),
                    part.capacity()
                ),
            ));
        }
    }
    let missing: Vec<String> = seen
        .iter()
        .enumerate()
        .filter(|(_, p)| p.is_none())
        .map(|(i, _)| format!("{i}/{count}"))
        .collect();
    if !missing.is_empty() {
        return Err(CacheError::invalid(
            output,
            format!("cannot merge: shard(s) {} missing", missing.join(", ")),
        ));
    }
    let header = Header::new(identity, 0, first.identity().dataset_images, None);
    let mut full = SoftLabelCache::create(output, header.clone())?;
    if output.exists() {
        // Never replace a cache of something else.
        SoftLabelCache::open_any(output)?
            .identity()
            .check(&header.identity, output)?;
    }
    for part in &parts {
        full.copy_from(part)?;
    }
    full.flush()?;
    Ok(MergeReport {
        output: output.to_owned(),
        shards: parts.len(),
        images: header.images(),
        entries: full.filled(),
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parse_and_ranges() {
        assert_eq!("1/4".parse::<Shard>(), Ok(Shard { index: 1, count: 4 }));
        for bad in ["4/4", "1", "a/2", "0/0", "-1/2"] {
            assert!(bad.parse::<Shard>().is_err(), "{bad}");
        }
        for (n, count) in [(50_000u64, 7u32), (10, 3), (2, 5)] {
            let mut next = 0;
            for index in 0..count {
                let (s, e) = Shard { index, count }.range(n);
                assert_eq!(s, next);
                assert!(e - s <= n.div_ceil(u64::from(count)));
                next = e;
            }
            assert_eq!(next, n);
        }
        let p = Shard { index: 2, count: 8 }.path(Path::new("c/x.softlabels"));
        assert_eq!(p, Path::new("c/x.softlabels.shard-2-of-8"));
    }
}
