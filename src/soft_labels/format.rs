//! The cache file format: a fixed preamble, a bincode header, a bitmap of filled
//! entries, the logits, then their checksums.
//!
//! ```text
//! offset 0   magic  b"ARDSLC\r\n"          (8 bytes; \r\n catches text-mode mangling)
//!        8   format version, u32 LE        (FORMAT_VERSION)
//!       12   header length H, u32 LE
//!       16   Header, bincode 2 (standard config, serde), H bytes
//!            zero padding to a multiple of 64
//!            bitmap: one bit per (image, slot), image-major, LSB first; bits past
//!            the last entry are zero; zero padding to a multiple of 64
//!            logits: [images][slots][classes], f16 or f32 little-endian
//!            checksums: CRC-32 (u32 LE) of each block of BLOCK_ENTRIES entries'
//!            logits, then one of the bitmap
//! ```
//!
//! The header says everything a run must match ([`Identity`]: teacher weights,
//! dataset, augmentation policy, number of classes, dtype) and which images the
//! file holds (a whole split, or one shard's range). The file's size follows from
//! the header, so a truncated file is recognised before any logit is read. The
//! checksums catch a flipped byte (a bad disk, a damaged copy): a logit that
//! changed is never used ([`verify`]).

use super::error::{CacheError, CacheResult};
use super::shard::Shard;
use super::views::ViewSet;
use serde::{Deserialize, Serialize};
use std::fmt;
use std::io::Read;
use std::path::Path;

/// First 8 bytes of every cache file.
pub const MAGIC: [u8; 8] = *b"ARDSLC\r\n";
/// Version of the layout and header written by this build (2: checksums).
pub const FORMAT_VERSION: u32 = 2;
/// Entries per checksummed block of logits (20 KiB of f16 CIFAR-10 logits).
pub const BLOCK_ENTRIES: u64 = 1024;
/// Bytes before the header: magic, version, header length.
pub const PREAMBLE_BYTES: usize = 16;
/// Largest header accepted (a guard against reading garbage as a length).
pub const MAX_HEADER_BYTES: u32 = 1 << 16;
/// Largest dataset a header may describe (keeps every size computation far from overflow).
pub const MAX_IMAGES: u64 = 1 << 32;
/// Alignment of the bitmap and the logits inside the file.
pub const ALIGN: u64 = 64;
/// The augmentation whose views the cache indexes: `RandomCrop(32, padding=4)`
/// (zero padding) then `RandomHorizontalFlip`, on pixels / 255.
pub const AUGMENTATION: &str = "crop32-pad4-flip";

/// Storage type of the logits.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
pub enum Dtype {
    F16,
    F32,
}

impl Dtype {
    /// Bytes per logit.
    pub fn size(self) -> usize {
        match self {
            Dtype::F16 => 2,
            Dtype::F32 => 4,
        }
    }

    /// File-name tag: `f16` or `f32`.
    pub fn name(self) -> &'static str {
        match self {
            Dtype::F16 => "f16",
            Dtype::F32 => "f32",
        }
    }
}

impl From<crate::config::CacheDtype> for Dtype {
    fn from(d: crate::config::CacheDtype) -> Self {
        match d {
            crate::config::CacheDtype::F16 => Dtype::F16,
            crate::config::CacheDtype::F32 => Dtype::F32,
        }
    }
}

impl fmt::Display for Dtype {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.name())
    }
}

/// What a cache's soft labels depend on; a run uses a file only when all of it matches.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Identity {
    /// Teacher architecture, e.g. `wrn34_10`.
    pub teacher_arch: String,
    /// md5 (hex) of the teacher's safetensors file.
    pub teacher_weights_md5: String,
    /// md5 (hex) of the training images then labels, after `train_limit`.
    pub dataset_md5: String,
    /// Number of training images (after `train_limit`).
    pub dataset_images: u64,
    /// [`AUGMENTATION`], plus the fixed-view construction for `ViewSet::Fixed`.
    pub augmentation: String,
    /// Which views each image has.
    pub views: ViewSet,
    /// Logits per entry.
    pub num_classes: u32,
    /// Storage type.
    pub dtype: Dtype,
}

impl Identity {
    /// The first field where `self` (a file's) differs from `run`:
    /// (field name, what it identifies, file value, run value).
    pub fn first_difference(
        &self,
        run: &Identity,
    ) -> Option<(&'static str, &'static str, String, String)> {
        macro_rules! field {
            ($f:ident, $what:expr) => {
                if self.$f != run.$f {
                    return Some((
                        stringify!($f),
                        $what,
                        format!("{:?}", self.$f),
                        format!("{:?}", run.$f),
                    ));
                }
            };
        }
        field!(teacher_arch, "teacher");
        field!(teacher_weights_md5, "teacher (other weights)");
        field!(dataset_images, "dataset (another train_limit?)");
        field!(dataset_md5, "dataset");
        field!(augmentation, "augmentation policy");
        field!(views, "view policy (teacher.views)");
        field!(num_classes, "number of classes");
        field!(dtype, "storage type (teacher.cache_dtype)");
        None
    }

    /// Errors with [`CacheError::Mismatch`] naming `path` and the first differing field.
    pub fn check(&self, run: &Identity, path: &Path) -> CacheResult<()> {
        match self.first_difference(run) {
            None => Ok(()),
            Some((field, what, cached, run)) => Err(CacheError::Mismatch {
                path: path.to_owned(),
                field,
                what,
                cached,
                run,
            }),
        }
    }
}

/// The header of a cache file.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Header {
    /// [`FORMAT_VERSION`] (also in the preamble).
    pub format_version: u32,
    pub identity: Identity,
    /// Dataset indices `start..end` of the images this file holds.
    pub image_start: u64,
    pub image_end: u64,
    /// Which shard this partial file is; `None` for a file of the whole split.
    pub shard: Option<Shard>,
}

impl Header {
    /// The header of a file holding images `start..end` of `identity`'s dataset.
    pub fn new(identity: Identity, start: u64, end: u64, shard: Option<Shard>) -> Header {
        Header {
            format_version: FORMAT_VERSION,
            identity,
            image_start: start,
            image_end: end,
            shard,
        }
    }

    /// Images in the file.
    pub fn images(&self) -> u64 {
        self.image_end.saturating_sub(self.image_start)
    }

    /// Slots per image.
    pub fn slots(&self) -> usize {
        self.identity.views.slots()
    }

    /// Entries (image, slot) in the file.
    pub fn entries(&self) -> u64 {
        self.images() * self.slots() as u64
    }

    /// Bytes of one entry's logits.
    pub fn entry_bytes(&self) -> usize {
        self.identity.num_classes as usize * self.identity.dtype.size()
    }

    /// Structural sanity of a decoded header.
    fn validate(&self, path: &Path) -> CacheResult<()> {
        let id = &self.identity;
        let bad = |detail: String| Err(CacheError::corrupt(path, detail));
        if self.format_version != FORMAT_VERSION {
            return bad(format!(
                "header format_version {} differs from the preamble's {FORMAT_VERSION}",
                self.format_version
            ));
        }
        if id.dataset_images > MAX_IMAGES {
            return bad(format!(
                "dataset_images = {} is out of range (at most {MAX_IMAGES})",
                id.dataset_images
            ));
        }
        if !(1..=100_000).contains(&id.num_classes) {
            return bad(format!("num_classes = {} is out of range", id.num_classes));
        }
        if !id.views.is_valid() {
            return bad(format!(
                "views = {:?} is out of range (1..=162 fixed views)",
                id.views
            ));
        }
        if self.image_start > self.image_end || self.image_end > id.dataset_images {
            return bad(format!(
                "image range {}..{} does not fit a dataset of {} images",
                self.image_start, self.image_end, id.dataset_images
            ));
        }
        if let Some(s) = self.shard {
            if s.count == 0 || s.index >= s.count {
                return bad(format!("shard {}/{} is not valid", s.index, s.count));
            }
        }
        Ok(())
    }
}

/// Byte offsets of a file's sections.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Layout {
    pub bitmap_offset: u64,
    pub bitmap_bytes: u64,
    pub logits_offset: u64,
    pub logits_bytes: u64,
    /// Where the checksums start: right after the logits.
    pub checksums_offset: u64,
    /// Checksummed blocks of logits (the bitmap's checksum comes after them).
    pub blocks: u64,
    /// Size of the whole file.
    pub total: u64,
}

fn align(x: u64) -> u64 {
    x.div_ceil(ALIGN) * ALIGN
}

impl Layout {
    /// The layout of a file whose encoded header is `header_bytes` long.
    pub fn new(header: &Header, header_bytes: usize) -> Option<Layout> {
        let bitmap_offset = align(PREAMBLE_BYTES as u64 + header_bytes as u64);
        let bitmap_bytes = header.entries().div_ceil(8);
        let logits_offset = align(bitmap_offset.checked_add(bitmap_bytes)?);
        let logits_bytes = header.entries().checked_mul(header.entry_bytes() as u64)?;
        let checksums_offset = logits_offset.checked_add(logits_bytes)?;
        let blocks = header.entries().div_ceil(BLOCK_ENTRIES);
        let total = checksums_offset.checked_add((blocks + 1) * 4)?;
        Some(Layout {
            bitmap_offset,
            bitmap_bytes,
            logits_offset,
            logits_bytes,
            checksums_offset,
            blocks,
            total,
        })
    }

    /// Bytes of the checksums section.
    pub fn checksums_bytes(&self) -> u64 {
        (self.blocks + 1) * 4
    }
}

/// The checksums section of a file whose logits are `logits` (entries of
/// `entry_bytes` each) and whose bitmap is `bitmap`: one CRC-32 per block of
/// [`BLOCK_ENTRIES`] entries, then the bitmap's, as little-endian bytes.
pub fn checksums(logits: &[u8], entry_bytes: usize, bitmap: &[u8]) -> Vec<u8> {
    let block = (BLOCK_ENTRIES as usize * entry_bytes).max(1);
    logits
        .chunks(block)
        .map(crc32fast::hash)
        .chain(std::iter::once(crc32fast::hash(bitmap)))
        .flat_map(u32::to_le_bytes)
        .collect()
}

/// What [`verify`] found wrong with a file's contents.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Damage {
    /// The filled-entries bitmap changed: which entries hold logits is unknown.
    Bitmap,
    /// These blocks of logits (indices, from 0) changed.
    Blocks(Vec<u64>),
}

/// Checks `logits` and `bitmap` against `stored` (the file's checksums
/// section); `None` when everything matches.
pub fn verify(logits: &[u8], entry_bytes: usize, bitmap: &[u8], stored: &[u8]) -> Option<Damage> {
    let computed = checksums(logits, entry_bytes, bitmap);
    if computed.len() != stored.len()
        || computed[computed.len() - 4..] != stored[stored.len() - 4..]
    {
        return Some(Damage::Bitmap);
    }
    let bad: Vec<u64> = computed
        .chunks_exact(4)
        .zip(stored.chunks_exact(4))
        .take(computed.len() / 4 - 1)
        .enumerate()
        .filter(|(_, (a, b))| a != b)
        .map(|(i, _)| i as u64)
        .collect();
    (!bad.is_empty()).then_some(Damage::Blocks(bad))
}

fn bincode_config() -> impl bincode::config::Config {
    bincode::config::standard().with_limit::<{ MAX_HEADER_BYTES as usize }>()
}

/// Preamble and header bytes, and the layout they imply.
pub fn encode_header(header: &Header, path: &Path) -> CacheResult<(Vec<u8>, Layout)> {
    let body = bincode::serde::encode_to_vec(header, bincode_config())
        .map_err(|e| CacheError::invalid(path, format!("cannot encode the header: {e}")))?;
    let layout = Layout::new(header, body.len())
        .ok_or_else(|| CacheError::invalid(path, "the cache would not fit in 2^64 bytes"))?;
    let mut out = Vec::with_capacity(layout.bitmap_offset as usize);
    out.extend_from_slice(&MAGIC);
    out.extend_from_slice(&FORMAT_VERSION.to_le_bytes());
    out.extend_from_slice(&(body.len() as u32).to_le_bytes());
    out.extend_from_slice(&body);
    out.resize(layout.bitmap_offset as usize, 0);
    Ok((out, layout))
}

/// Reads and checks the preamble and header of the file `path` from `reader`,
/// whose total size is `file_len`: magic, version, a decodable and consistent
/// header, and a file size equal to the layout's.
pub fn read_header(
    reader: &mut impl Read,
    file_len: u64,
    path: &Path,
) -> CacheResult<(Header, Layout)> {
    let mut pre = Vec::with_capacity(PREAMBLE_BYTES);
    reader
        .by_ref()
        .take(PREAMBLE_BYTES as u64)
        .read_to_end(&mut pre)
        .map_err(|e| CacheError::io(path, e))?;
    let got = pre.len();
    let magic_len = got.min(MAGIC.len());
    if pre[..magic_len] != MAGIC[..magic_len] || got == 0 {
        return Err(CacheError::Foreign {
            path: path.to_owned(),
            detail: format!(
                "it starts with {:02x?}, a cache starts with {:02x?} (\"ARDSLC\\r\\n\")",
                &pre[..magic_len],
                MAGIC
            ),
        });
    }
    if got < PREAMBLE_BYTES {
        return Err(CacheError::truncated(path, file_len, PREAMBLE_BYTES as u64));
    }
    let version = u32::from_le_bytes([pre[8], pre[9], pre[10], pre[11]]);
    if version != FORMAT_VERSION {
        return Err(CacheError::Version {
            path: path.to_owned(),
            found: version,
            expected: FORMAT_VERSION,
        });
    }
    let header_len = u32::from_le_bytes([pre[12], pre[13], pre[14], pre[15]]);
    if header_len == 0 || header_len > MAX_HEADER_BYTES {
        return Err(CacheError::corrupt(
            path,
            format!("header length {header_len} is out of range (1..={MAX_HEADER_BYTES})"),
        ));
    }
    let needed = PREAMBLE_BYTES as u64 + u64::from(header_len);
    if file_len < needed {
        return Err(CacheError::truncated(path, file_len, needed));
    }
    let mut body = vec![0u8; header_len as usize];
    reader
        .read_exact(&mut body)
        .map_err(|e| CacheError::io(path, e))?;
    let (header, used): (Header, usize) =
        bincode::serde::decode_from_slice(&body, bincode_config())
            .map_err(|e| CacheError::corrupt(path, format!("undecodable header: {e}")))?;
    if used != body.len() {
        return Err(CacheError::corrupt(
            path,
            format!("header has {} stray bytes", body.len() - used),
        ));
    }
    header.validate(path)?;
    let layout = Layout::new(&header, body.len())
        .ok_or_else(|| CacheError::corrupt(path, "header sizes overflow"))?;
    if file_len < layout.total {
        return Err(CacheError::truncated(path, file_len, layout.total));
    }
    if file_len > layout.total {
        return Err(CacheError::corrupt(
            path,
            format!(
                "{} bytes, the header describes {}: trailing bytes",
                file_len, layout.total
            ),
        ));
    }
    Ok((header, layout))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn identity() -> Identity {
        Identity {
            teacher_arch: "wrn10_1".into(),
            teacher_weights_md5: "ab".repeat(16),
            dataset_md5: "cd".repeat(16),
            dataset_images: 100,
            augmentation: AUGMENTATION.into(),
            views: ViewSet::Fixed(3),
            num_classes: 10,
            dtype: Dtype::F16,
        }
    }

    #[test]
    fn header_round_trip_and_layout() {
        let h = Header::new(identity(), 20, 60, Some(Shard { index: 1, count: 3 }));
        let p = Path::new("x.softlabels");
        let (bytes, layout) = encode_header(&h, p).unwrap();
        assert_eq!(bytes.len() as u64, layout.bitmap_offset);
        assert_eq!(layout.bitmap_offset % ALIGN, 0);
        assert_eq!(layout.logits_offset % ALIGN, 0);
        assert_eq!(layout.bitmap_bytes, (40 * 3u64).div_ceil(8));
        assert_eq!(layout.logits_bytes, 40 * 3 * 10 * 2);
        let mut file = bytes.clone();
        file.resize(layout.total as usize, 0);
        let (back, l2) = read_header(&mut &file[..], file.len() as u64, p).unwrap();
        assert_eq!(back, h);
        assert_eq!(l2, layout);
        let e = read_header(&mut &file[..], file.len() as u64 - 1, p).unwrap_err();
        assert!(matches!(e, CacheError::Truncated { .. }), "{e}");
        let e = read_header(&mut &b"hello world, not a cache"[..], 24, p).unwrap_err();
        assert!(matches!(e, CacheError::Foreign { .. }), "{e}");
        let e = read_header(&mut &b""[..], 0, p).unwrap_err();
        assert!(matches!(e, CacheError::Foreign { .. }), "{e}");
    }

    #[test]
    fn differences_name_the_field() {
        let a = identity();
        let mut b = a.clone();
        assert!(a.first_difference(&b).is_none());
        b.views = ViewSet::All;
        assert_eq!(a.first_difference(&b).unwrap().0, "views");
        b = a.clone();
        b.teacher_weights_md5 = "00".repeat(16);
        let e = a
            .check(&b, Path::new("c.softlabels"))
            .unwrap_err()
            .to_string();
        assert!(
            e.contains("c.softlabels") && e.contains("teacher_weights_md5"),
            "{e}"
        );
    }
}
