//! [`SoftLabelCache`]: one cache file in memory, keyed by (dataset index, slot).
//!
//! A cache opened [`Access::ReadOnly`] maps the file (memmap2) and never writes
//! it; many runs can share one file this way. [`Access::ReadWrite`] takes the
//! writer lock ([`lock::acquire`]), reads the file (or starts empty) into memory,
//! and [`flush`](SoftLabelCache::flush) writes it back atomically (temp file,
//! fsync, rename, fsync of the folder) when something was added.
//!
//! Opening checks the file's checksums ([`format::verify`]): a block of logits
//! that changed on disk is dropped (its entries count as missing, so a run or
//! `soft-labels` computes them again), a changed bitmap refuses the file.
//! Non-finite logits are never stored nor served.

use super::error::{CacheError, CacheResult};
use super::format::{
    self, encode_header, read_header, Damage, Dtype, Header, Identity, Layout, BLOCK_ENTRIES,
};
use super::lock;
use crate::file_lock::FileLock;
use memmap2::Mmap;
use std::fs::{self, File};
use std::io::{BufWriter, Read, Seek, SeekFrom, Write};
use std::path::{Path, PathBuf};

/// How a cache file is opened.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Access {
    /// Memory-mapped, shared, never written; no lock.
    ReadOnly,
    /// In memory, under the writer lock; created empty when absent.
    ReadWrite,
}

/// The logits section.
enum Logits {
    /// The file's bytes, mapped; the logits are `map[start..end]`.
    Mapped { map: Mmap, start: usize, end: usize },
    /// An owned copy (writers).
    Owned(Vec<u8>),
    /// No entries at all (an empty range).
    Empty,
}

impl Logits {
    fn bytes(&self) -> &[u8] {
        match self {
            Logits::Mapped { map, start, end } => &map[*start..*end],
            Logits::Owned(v) => v,
            Logits::Empty => &[],
        }
    }
}

/// A soft-label cache file, open for reading or writing. See the module docs.
pub struct SoftLabelCache {
    path: PathBuf,
    header: Header,
    layout: Layout,
    slots: usize,
    classes: usize,
    bitmap: Vec<u8>,
    filled: u64,
    logits: Logits,
    dirty: bool,
    lock: Option<FileLock>,
}

impl std::fmt::Debug for SoftLabelCache {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("SoftLabelCache")
            .field("path", &self.path)
            .field("filled", &self.filled)
            .field("entries", &self.header.entries())
            .field("writable", &self.lock.is_some())
            .finish_non_exhaustive()
    }
}

fn count_bits(bitmap: &[u8]) -> u64 {
    bitmap.iter().map(|b| u64::from(b.count_ones())).sum()
}

/// Bytes of the logits section of `layout` in memory.
fn logits_len(path: &Path, layout: &Layout) -> CacheResult<usize> {
    usize::try_from(layout.logits_bytes)
        .map_err(|_| CacheError::invalid(path, "too large for this machine's address space"))
}

impl SoftLabelCache {
    /// Opens the file at `path` as the cache `expected` describes: its identity
    /// and image range must match `expected`'s, or the file is refused
    /// ([`CacheError::Mismatch`]). `ReadWrite` creates an empty cache when the
    /// file is absent; `ReadOnly` errors then.
    pub fn open(path: &Path, expected: &Header, access: Access) -> CacheResult<SoftLabelCache> {
        let lock = match access {
            Access::ReadWrite => Some(lock::acquire(path)?),
            Access::ReadOnly => None,
        };
        if access == Access::ReadWrite && !path.exists() {
            return SoftLabelCache::empty(path, expected.clone(), lock);
        }
        let cache = SoftLabelCache::read(path, access, lock)?;
        cache.check(expected)?;
        Ok(cache)
    }

    /// Opens any valid cache file without matching it to a run (to inspect or
    /// merge it), read-only.
    pub fn open_any(path: &Path) -> CacheResult<SoftLabelCache> {
        SoftLabelCache::read(path, Access::ReadOnly, None)
    }

    /// An empty cache that only lives in memory until flushed, under `lock`.
    fn empty(path: &Path, header: Header, lock: Option<FileLock>) -> CacheResult<SoftLabelCache> {
        let (_, layout) = encode_header(&header, path)?;
        let logits = match logits_len(path, &layout)? {
            0 => Logits::Empty,
            n => Logits::Owned(vec![0u8; n]),
        };
        let bitmap = vec![0u8; layout.bitmap_bytes as usize];
        Ok(Self::assemble(path, header, layout, bitmap, logits, lock))
    }

    /// The cache of a file's parts; `filled` is counted from `bitmap`.
    fn assemble(
        path: &Path,
        header: Header,
        layout: Layout,
        bitmap: Vec<u8>,
        logits: Logits,
        lock: Option<FileLock>,
    ) -> Self {
        SoftLabelCache {
            path: path.to_owned(),
            slots: header.slots(),
            classes: header.identity.num_classes as usize,
            filled: count_bits(&bitmap),
            bitmap,
            header,
            layout,
            logits,
            dirty: false,
            lock,
        }
    }

    fn read(path: &Path, access: Access, lock: Option<FileLock>) -> CacheResult<SoftLabelCache> {
        let mut file = File::open(path).map_err(|e| CacheError::io(path, e))?;
        let len = file.metadata().map_err(|e| CacheError::io(path, e))?.len();
        let (header, layout) = read_header(&mut file, len, path)?;
        file.seek(SeekFrom::Start(layout.bitmap_offset))
            .map_err(|e| CacheError::io(path, e))?;
        let mut bitmap = vec![0u8; layout.bitmap_bytes as usize];
        file.read_exact(&mut bitmap)
            .map_err(|e| CacheError::io(path, e))?;
        let entries = header.entries();
        if entries % 8 != 0 && bitmap.last().is_some_and(|b| b >> (entries % 8) != 0) {
            return Err(CacheError::corrupt(
                path,
                "bits set past the last entry of the filled bitmap",
            ));
        }
        let logits = if layout.logits_bytes == 0 {
            Logits::Empty
        } else {
            match access {
                Access::ReadOnly => {
                    // SAFETY: cache files are only ever replaced by rename, never
                    // written in place, so the mapped bytes do not change under us.
                    let map = unsafe { Mmap::map(&file) }.map_err(|e| CacheError::io(path, e))?;
                    if (map.len() as u64) < layout.total {
                        return Err(CacheError::truncated(path, map.len() as u64, layout.total));
                    }
                    Logits::Mapped {
                        map,
                        start: layout.logits_offset as usize,
                        end: layout.checksums_offset as usize,
                    }
                }
                Access::ReadWrite => {
                    file.seek(SeekFrom::Start(layout.logits_offset))
                        .map_err(|e| CacheError::io(path, e))?;
                    let mut v = vec![0u8; logits_len(path, &layout)?];
                    file.read_exact(&mut v)
                        .map_err(|e| CacheError::io(path, e))?;
                    Logits::Owned(v)
                }
            }
        };
        file.seek(SeekFrom::Start(layout.checksums_offset))
            .map_err(|e| CacheError::io(path, e))?;
        let mut stored = vec![0u8; layout.checksums_bytes() as usize];
        file.read_exact(&mut stored)
            .map_err(|e| CacheError::io(path, e))?;
        let damage = format::verify(logits.bytes(), header.entry_bytes(), &bitmap, &stored);
        let mut cache = Self::assemble(path, header, layout, bitmap, logits, lock);
        match damage {
            None => {}
            Some(Damage::Bitmap) => {
                return Err(CacheError::corrupt(
                    path,
                    "its filled-entries bitmap fails its checksum (damaged on disk or in a copy); \
                     delete the file and fill it again with `ard-pipeline soft-labels`",
                ))
            }
            Some(Damage::Blocks(blocks)) => cache.drop_blocks(&blocks),
        }
        Ok(cache)
    }

    /// Forgets the entries of the logits `blocks` that failed their checksum:
    /// they count as missing, so they are computed again (and a writer
    /// rewrites the file).
    fn drop_blocks(&mut self, blocks: &[u64]) {
        let entries = self.header.entries();
        let slots = self.slots as u64;
        let mut images = Vec::new();
        for &b in blocks {
            let (first, end) = (b * BLOCK_ENTRIES, ((b + 1) * BLOCK_ENTRIES).min(entries));
            for e in first..end {
                self.bitmap[(e / 8) as usize] &= !(1 << (e % 8));
            }
            let start = self.header.image_start;
            images.push(format!(
                "{}..{}",
                start + first / slots,
                start + end.div_ceil(slots)
            ));
        }
        self.filled = count_bits(&self.bitmap);
        self.dirty = self.lock.is_some();
        log::warn!(
            "soft-label cache {}: {} block(s) of logits fail their checksum (damaged on disk or in a copy), \
             images {}: those entries are not used and are computed again",
            self.path.display(),
            blocks.len(),
            images.join(", ")
        );
    }

    /// Refuses the file unless it matches `expected` (identity and image range).
    fn check(&self, expected: &Header) -> CacheResult<()> {
        self.header.identity.check(&expected.identity, &self.path)?;
        let got = (
            self.header.image_start,
            self.header.image_end,
            self.header.shard,
        );
        let want = (expected.image_start, expected.image_end, expected.shard);
        if got != want {
            let show = |(s, e, sh): (u64, u64, Option<super::shard::Shard>)| match sh {
                Some(sh) => format!("images {s}..{e} (shard {sh})"),
                None => format!("images {s}..{e} (whole split)"),
            };
            return Err(CacheError::Mismatch {
                path: self.path.clone(),
                field: "image range",
                what: "part of the dataset",
                cached: show(got),
                run: show(want),
            });
        }
        Ok(())
    }

    pub fn path(&self) -> &Path {
        &self.path
    }

    pub fn header(&self) -> &Header {
        &self.header
    }

    pub fn identity(&self) -> &Identity {
        &self.header.identity
    }

    /// Logits per entry.
    pub fn classes(&self) -> usize {
        self.classes
    }

    /// Slots per image.
    pub fn slots(&self) -> usize {
        self.slots
    }

    /// Filled entries.
    pub fn filled(&self) -> u64 {
        self.filled
    }

    /// All entries (images x slots).
    pub fn capacity(&self) -> u64 {
        self.header.entries()
    }

    /// Every entry is filled: a run never needs the teacher.
    pub fn is_complete(&self) -> bool {
        self.filled == self.capacity()
    }

    /// Opened for writing (holds the lock).
    pub fn is_writable(&self) -> bool {
        self.lock.is_some()
    }

    /// Position of (dataset index, slot) among the file's entries.
    fn entry(&self, index: u64, slot: usize) -> CacheResult<u64> {
        let h = &self.header;
        if index < h.image_start || index >= h.image_end || slot >= self.slots {
            return Err(CacheError::invalid(
                &self.path,
                format!(
                    "no entry for image {index}, slot {slot}: the file holds images {}..{} with {} slots each",
                    h.image_start, h.image_end, self.slots
                ),
            ));
        }
        Ok((index - h.image_start) * self.slots as u64 + slot as u64)
    }

    /// Whether (index, slot) is filled.
    pub fn contains(&self, index: u64, slot: usize) -> CacheResult<bool> {
        let e = self.entry(index, slot)?;
        Ok(self.bit(e))
    }

    fn bit(&self, e: u64) -> bool {
        self.bitmap[(e / 8) as usize] & (1 << (e % 8)) != 0
    }

    /// Copies the logits of (index, slot) into `out` (`classes()` long) and
    /// returns true, or returns false when the entry is not filled.
    pub fn get(&self, index: u64, slot: usize, out: &mut [f32]) -> CacheResult<bool> {
        let e = self.entry(index, slot)?;
        if !self.bit(e) {
            return Ok(false);
        }
        if out.len() != self.classes {
            return Err(CacheError::invalid(
                &self.path,
                format!(
                    "{} logits asked for, entries hold {}",
                    out.len(),
                    self.classes
                ),
            ));
        }
        let eb = self.header.entry_bytes();
        let raw = &self.logits.bytes()[e as usize * eb..(e as usize + 1) * eb];
        match self.header.identity.dtype {
            Dtype::F32 => {
                for (o, c) in out.iter_mut().zip(raw.chunks_exact(4)) {
                    *o = f32::from_le_bytes([c[0], c[1], c[2], c[3]]);
                }
            }
            Dtype::F16 => {
                for (o, c) in out.iter_mut().zip(raw.chunks_exact(2)) {
                    *o = half::f16::from_bits(u16::from_le_bytes([c[0], c[1]])).to_f32();
                }
            }
        }
        if out.iter().any(|x| !x.is_finite()) {
            return Err(CacheError::corrupt(
                &self.path,
                format!(
                    "image {index}, slot {slot} holds a non-finite logit; delete the file and fill it again \
                     with `ard-pipeline soft-labels`"
                ),
            ));
        }
        Ok(true)
    }

    /// `logits` as they read back after storage: rounded to f16 for an f16
    /// cache (round to nearest even), unchanged for f32.
    pub fn round_trip(&self, logits: &mut [f32]) {
        if self.header.identity.dtype == Dtype::F16 {
            for x in logits {
                *x = half::f16::from_f32(*x).to_f32();
            }
        }
    }

    /// Stores the logits of (index, slot); errors on a read-only cache.
    pub fn put(&mut self, index: u64, slot: usize, logits: &[f32]) -> CacheResult<()> {
        let e = self.entry(index, slot)?;
        if logits.len() != self.classes {
            return Err(CacheError::invalid(
                &self.path,
                format!(
                    "the teacher gave {} logits per image, the cache holds {} (header num_classes)",
                    logits.len(),
                    self.classes
                ),
            ));
        }
        let dtype = self.header.identity.dtype;
        let stored_finite = |x: &f32| match dtype {
            Dtype::F32 => x.is_finite(),
            Dtype::F16 => half::f16::from_f32(*x).is_finite(),
        };
        if let Some(x) = logits.iter().find(|x| !stored_finite(x)) {
            let why = if x.is_finite() {
                "beyond f16's range (set teacher.cache_dtype = \"f32\")"
            } else {
                "not finite: are the teacher's weights or the images broken?"
            };
            return Err(CacheError::invalid(
                &self.path,
                format!(
                    "the teacher gave the logit {x} for image {index}, slot {slot}, {why}; nothing was stored"
                ),
            ));
        }
        let eb = self.header.entry_bytes();
        let raw = &mut self.owned_mut()?[e as usize * eb..(e as usize + 1) * eb];
        match dtype {
            Dtype::F32 => {
                for (c, x) in raw.chunks_exact_mut(4).zip(logits) {
                    c.copy_from_slice(&x.to_le_bytes());
                }
            }
            Dtype::F16 => {
                for (c, x) in raw.chunks_exact_mut(2).zip(logits) {
                    c.copy_from_slice(&half::f16::from_f32(*x).to_bits().to_le_bytes());
                }
            }
        }
        let (byte, bit) = ((e / 8) as usize, 1u8 << (e % 8));
        if self.bitmap[byte] & bit == 0 {
            self.bitmap[byte] |= bit;
            self.filled += 1;
        }
        self.dirty = true;
        Ok(())
    }

    /// Copies every filled entry of `other` (same identity, a sub-range of this
    /// file's images) into this cache, raw (no re-rounding).
    pub fn copy_from(&mut self, other: &SoftLabelCache) -> CacheResult<()> {
        other
            .header
            .identity
            .check(&self.header.identity, &other.path)?;
        let (s, e) = (other.header.image_start, other.header.image_end);
        if s < self.header.image_start || e > self.header.image_end {
            return Err(CacheError::invalid(
                &other.path,
                format!(
                    "images {s}..{e} do not fit in {}'s {}..{}",
                    self.path.display(),
                    self.header.image_start,
                    self.header.image_end
                ),
            ));
        }
        let eb = self.header.entry_bytes();
        let first = (s - self.header.image_start) * self.slots as u64;
        let n = other.header.entries();
        let src = other.logits.bytes();
        self.owned_mut()?[(first * eb as u64) as usize..((first + n) * eb as u64) as usize]
            .copy_from_slice(&src[..(n * eb as u64) as usize]);
        for j in 0..n {
            let (byte, bit) = (((first + j) / 8) as usize, 1u8 << ((first + j) % 8));
            if other.bit(j) {
                self.bitmap[byte] |= bit;
            } else {
                self.bitmap[byte] &= !bit;
            }
        }
        self.filled = count_bits(&self.bitmap);
        self.dirty = true;
        Ok(())
    }

    /// The logits' bytes, to store into; errors on a read-only cache.
    fn owned_mut(&mut self) -> CacheResult<&mut [u8]> {
        match &mut self.logits {
            Logits::Owned(bytes) => Ok(bytes),
            _ => Err(CacheError::invalid(
                &self.path,
                "opened read-only: cannot store soft labels",
            )),
        }
    }

    /// Writes the cache to its file when it holds unwritten entries (atomically:
    /// temp file, fsync, rename). Returns whether it wrote.
    pub fn flush(&mut self) -> CacheResult<bool> {
        if !self.dirty {
            return Ok(false);
        }
        if self.lock.is_none() {
            return Err(CacheError::invalid(
                &self.path,
                "opened read-only: cannot write",
            ));
        }
        self.write_to(&self.path.clone())?;
        self.dirty = false;
        Ok(true)
    }

    /// Writes the whole cache to `path` atomically.
    fn write_to(&self, path: &Path) -> CacheResult<()> {
        let (head, layout) = encode_header(&self.header, path)?;
        debug_assert_eq!(layout, self.layout);
        let dir = path
            .parent()
            .filter(|d| !d.as_os_str().is_empty())
            .unwrap_or(Path::new("."));
        fs::create_dir_all(dir).map_err(|e| CacheError::io(dir, e))?;
        let name = path.file_name().unwrap_or_default().to_string_lossy();
        let tmp = dir.join(format!(".{name}.tmp-{}", std::process::id()));
        let result = (|| -> std::io::Result<()> {
            let file = File::create(&tmp)?;
            let mut w = BufWriter::with_capacity(1 << 20, file);
            w.write_all(&head)?;
            w.write_all(&self.bitmap)?;
            let pad = layout.logits_offset - layout.bitmap_offset - layout.bitmap_bytes;
            w.write_all(&vec![0u8; pad as usize])?;
            let logits = self.logits.bytes();
            w.write_all(logits)?;
            w.write_all(&format::checksums(
                logits,
                self.header.entry_bytes(),
                &self.bitmap,
            ))?;
            let file = w.into_inner().map_err(|e| e.into_error())?;
            file.sync_all()?;
            fs::rename(&tmp, path)?;
            if let Ok(d) = File::open(dir) {
                let _ = d.sync_all();
            }
            Ok(())
        })();
        result.map_err(|e| {
            let _ = fs::remove_file(&tmp);
            CacheError::io(path, e)
        })
    }

    /// A new writable cache at `path` with `header`, under the writer lock;
    /// nothing is on disk until [`flush`](Self::flush), which writes it even
    /// when nothing was added (a merge must produce its output file).
    pub fn create(path: &Path, header: Header) -> CacheResult<SoftLabelCache> {
        let lock = lock::acquire(path)?;
        let mut cache = SoftLabelCache::empty(path, header, Some(lock))?;
        cache.dirty = true;
        Ok(cache)
    }
}
