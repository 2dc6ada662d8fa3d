//! Reader of the official CIFAR-10 binary layout.
//!
//! `data_batch_1.bin` … `data_batch_5.bin` (train, 50,000 images) and
//! `test_batch.bin` (test, 10,000 images), 10,000 records each. A record is
//! 3073 bytes: one label byte (0..=9), then 1024 red, 1024 green and 1024 blue
//! bytes, row-major 32x32. Files are read whole and checked for size, label
//! range and md5 (as [`DataChecksums`] selects) before anything is returned.

use super::checksum::{self, Stamp};
use super::download::URL;
use crate::config::DataChecksums;
use crate::error::{Error, Result};
use md5::{Digest, Md5};
use std::fmt;
use std::path::Path;

/// Side of a CIFAR-10 image.
pub const IMAGE_SIZE: usize = 32;
/// Bytes of one image, channel-major (CHW): 3 x 32 x 32.
pub const IMAGE_BYTES: usize = 3 * IMAGE_SIZE * IMAGE_SIZE;
/// Bytes of one record: the label byte and the image.
pub const RECORD_BYTES: usize = 1 + IMAGE_BYTES;
/// Records in every batch file.
pub const RECORDS_PER_FILE: usize = 10_000;
/// Number of classes; labels are `0..NUM_CLASSES`.
pub const NUM_CLASSES: usize = 10;
/// The training batch files, in order.
pub const TRAIN_FILES: [&str; 5] = [
    "data_batch_1.bin",
    "data_batch_2.bin",
    "data_batch_3.bin",
    "data_batch_4.bin",
    "data_batch_5.bin",
];
/// The test batch file.
pub const TEST_FILES: [&str; 1] = ["test_batch.bin"];
/// Class names, one per line (not needed to train; extracted when downloading).
pub const META_FILE: &str = "batches.meta.txt";

/// Which half of CIFAR-10.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum SplitKind {
    /// 50,000 training images.
    Train,
    /// 10,000 test images.
    Test,
}

impl SplitKind {
    /// The batch files of this split, in order.
    pub fn files(self) -> &'static [&'static str] {
        match self {
            SplitKind::Train => &TRAIN_FILES,
            SplitKind::Test => &TEST_FILES,
        }
    }

    /// Number of images in the full split.
    pub fn num_images(self) -> usize {
        self.files().len() * RECORDS_PER_FILE
    }
}

impl fmt::Display for SplitKind {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            SplitKind::Train => "train",
            SplitKind::Test => "test",
        })
    }
}

/// Images and labels of (part of) a split, in file order, as raw bytes.
#[derive(Clone, PartialEq, Eq)]
pub struct Split {
    /// `len() * 3072` bytes; image `i` is `images[i*3072..(i+1)*3072]`, CHW.
    pub images: Vec<u8>,
    /// One label in `0..10` per image.
    pub labels: Vec<u8>,
}

impl fmt::Debug for Split {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Split")
            .field("len", &self.len())
            .finish_non_exhaustive()
    }
}

impl Split {
    /// A split from raw parts, checking that sizes agree and labels are in range.
    pub fn new(images: Vec<u8>, labels: Vec<u8>) -> Result<Self> {
        if images.len() != labels.len() * IMAGE_BYTES {
            return Err(Error::invalid(
                "split",
                format!(
                    "{} image bytes for {} labels, expected {}",
                    images.len(),
                    labels.len(),
                    labels.len() * IMAGE_BYTES
                ),
            ));
        }
        if let Some(i) = labels.iter().position(|&l| usize::from(l) >= NUM_CLASSES) {
            return Err(Error::invalid(
                "split",
                format!("label {} of image {i} is not in 0..=9", labels[i]),
            ));
        }
        Ok(Self { images, labels })
    }

    /// Number of images.
    pub fn len(&self) -> usize {
        self.labels.len()
    }

    /// True when there are no images.
    pub fn is_empty(&self) -> bool {
        self.labels.is_empty()
    }

    /// The 3072 CHW bytes of image `i`.
    ///
    /// # Panics
    /// If `i >= self.len()`.
    pub fn image(&self, i: usize) -> &[u8] {
        &self.images[i * IMAGE_BYTES..(i + 1) * IMAGE_BYTES]
    }

    /// The label of image `i`.
    ///
    /// # Panics
    /// If `i >= self.len()`.
    pub fn label(&self, i: usize) -> u8 {
        self.labels[i]
    }

    /// The first `n` images (all of them when `n >= len()`), as for
    /// `data.train_limit` and `data.test_limit`.
    pub fn prefix(mut self, n: usize) -> Self {
        let n = n.min(self.len());
        self.labels.truncate(n);
        self.images.truncate(n * IMAGE_BYTES);
        self
    }

    /// Removes the last `n` images (all when `n >= len()`) and returns them,
    /// e.g. to hold out a validation split from the training set.
    pub fn split_off_last(&mut self, n: usize) -> Split {
        let keep = self.len() - n.min(self.len());
        Split {
            images: self.images.split_off(keep * IMAGE_BYTES),
            labels: self.labels.split_off(keep),
        }
    }

    /// How many images of each class.
    pub fn class_counts(&self) -> [usize; NUM_CLASSES] {
        let mut counts = [0; NUM_CLASSES];
        for &l in &self.labels {
            if let Some(c) = counts.get_mut(usize::from(l)) {
                *c += 1;
            }
        }
        counts
    }
}

/// The batch files of both splits.
pub(super) fn batch_files() -> impl Iterator<Item = &'static str> {
    TRAIN_FILES.into_iter().chain(TEST_FILES)
}

/// The batch files (of both splits) that are absent from `root`.
pub fn missing_files(root: &Path) -> Vec<&'static str> {
    batch_files()
        .filter(|name| !root.join(name).is_file())
        .collect()
}

/// What to tell a user whose files are not in `root`.
pub(crate) fn where_to_put_files(root: &Path) -> String {
    format!(
        "put the CIFAR-10 binary files ({}, {}) in {}, or set `data.download = true` to fetch \
         the official archive from {URL}",
        TRAIN_FILES.join(", "),
        TEST_FILES.join(", "),
        root.display()
    )
}

/// Reads the split `kind` from `root`, checking every file's size, labels and
/// (unless `checksums` is [`DataChecksums::Skip`]) md5.
///
/// Errors name the file at fault: missing (with where to put it), truncated,
/// a label byte above 9 (with the record index), or an md5 mismatch (expected
/// and actual, and which checksum set).
pub fn load_split(root: &Path, kind: SplitKind, checksums: DataChecksums) -> Result<Split> {
    let stamp = match checksums {
        DataChecksums::Official | DataChecksums::Any => Stamp::read(root)?,
        DataChecksums::OfflineCopy | DataChecksums::Skip => None,
    };
    if checksums == DataChecksums::Skip {
        log::info!(
            "data.checksums = \"skip\": not verifying the md5 of the {kind} files in {}",
            root.display()
        );
    }
    let files = kind.files();
    // Read (and hash) the files in parallel: md5 is the slow part.
    let contents: Vec<Result<Vec<u8>>> = std::thread::scope(|s| {
        let handles: Vec<_> = files
            .iter()
            .map(|name| {
                let stamp = stamp.as_ref();
                s.spawn(move || read_batch_file(root, name, checksums, stamp))
            })
            .collect();
        handles
            .into_iter()
            .map(|h| {
                h.join()
                    .unwrap_or_else(|_| Err(Error::invalid("CIFAR-10 reader thread", "panicked")))
            })
            .collect()
    });
    let n = kind.num_images();
    let mut images = Vec::with_capacity(n * IMAGE_BYTES);
    let mut labels = Vec::with_capacity(n);
    for bytes in contents {
        for record in bytes?.chunks_exact(RECORD_BYTES) {
            labels.push(record[0]);
            images.extend_from_slice(&record[1..]);
        }
    }
    Ok(Split { images, labels })
}

/// Reads one batch file whole and checks its size, labels and md5.
fn read_batch_file(
    root: &Path,
    name: &str,
    checksums: DataChecksums,
    stamp: Option<&Stamp>,
) -> Result<Vec<u8>> {
    let path = root.join(name);
    let bytes = match std::fs::read(&path) {
        Ok(b) => b,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => {
            return Err(Error::Dataset {
                path,
                message: format!("missing; {}", where_to_put_files(root)),
            })
        }
        Err(e) => return Err(Error::io(path, e)),
    };
    check_records(&path, &bytes, checksums == DataChecksums::Skip)?;
    let actual = (checksums != DataChecksums::Skip).then(|| checksum::hex(&Md5::digest(&bytes)));
    checksum::verify(&path, name, actual.as_deref(), checksums, stamp)?;
    Ok(bytes)
}

/// Checks that `bytes` hold whole records with labels in `0..=9`: exactly
/// 10,000 of them, or at most 10,000 when `subset_ok` (`data.checksums =
/// "skip"`, which also admits subsets such as the device kit's).
fn check_records(path: &Path, bytes: &[u8], subset_ok: bool) -> Result<()> {
    let fail = |message: String| {
        Err(Error::Dataset {
            path: path.to_owned(),
            message,
        })
    };
    if !bytes.len().is_multiple_of(RECORD_BYTES) {
        return fail(format!(
            "size {} bytes is not a whole number of {RECORD_BYTES}-byte records: the file is truncated \
             or is not a CIFAR-10 binary batch",
            bytes.len()
        ));
    }
    let records = bytes.len() / RECORD_BYTES;
    if records != RECORDS_PER_FILE && !(subset_ok && records < RECORDS_PER_FILE) {
        let what = if records < RECORDS_PER_FILE {
            "the file is truncated"
        } else {
            "the file has extra data"
        };
        return fail(format!(
            "holds {records} records, expected {RECORDS_PER_FILE}: {what}"
        ));
    }
    if let Some(i) = bytes
        .chunks_exact(RECORD_BYTES)
        .position(|r| usize::from(r[0]) >= NUM_CLASSES)
    {
        return fail(format!(
            "record {i} (byte offset {}) has label byte {}, expected 0..=9: the file is corrupt",
            i * RECORD_BYTES,
            bytes[i * RECORD_BYTES]
        ));
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn synthetic(n: usize) -> Split {
        let labels = (0..n).map(|i| (i % NUM_CLASSES) as u8).collect();
        let images = (0..n * IMAGE_BYTES).map(|i| (i % 251) as u8).collect();
        Split::new(images, labels).unwrap()
    }

    #[test]
    fn prefix_and_split_off_last() {
        let s = synthetic(10);
        let img3 = s.image(3).to_vec();
        let mut p = s.clone().prefix(7);
        assert_eq!(p.len(), 7);
        assert_eq!(p.image(3), &img3[..]);
        let tail = p.split_off_last(2);
        assert_eq!((p.len(), tail.len()), (5, 2));
        assert_eq!(tail.image(0), s.image(5));
        assert_eq!(tail.label(1), s.label(6));
        assert_eq!(s.clone().prefix(100).len(), 10);
        let mut all = s.clone();
        assert_eq!(all.split_off_last(99).len(), 10);
        assert!(all.is_empty());
        assert_eq!(s.class_counts(), [1; NUM_CLASSES]);
    }

    #[test]
    fn new_rejects_bad_parts() {
        assert!(Split::new(vec![0; IMAGE_BYTES], vec![0, 1]).is_err());
        assert!(Split::new(vec![0; IMAGE_BYTES], vec![10]).is_err());
    }

    #[test]
    fn record_checks() {
        let p = Path::new("f.bin");
        let mut bytes = vec![0u8; RECORDS_PER_FILE * RECORD_BYTES];
        assert!(check_records(p, &bytes, false).is_ok());
        // A subset of whole records only where subsets are admitted.
        assert!(check_records(p, &bytes[..RECORD_BYTES * 10], true).is_ok());
        assert!(check_records(p, &[], true).is_ok());
        assert!(check_records(p, &bytes[..RECORD_BYTES * 10], false).is_err());
        assert!(check_records(p, &bytes[..100], true).is_err());
        let mut more = bytes.clone();
        more.extend_from_slice(&bytes[..RECORD_BYTES]);
        assert!(check_records(p, &more, true).is_err());
        bytes[17 * RECORD_BYTES] = 200;
        let e = check_records(p, &bytes, true).unwrap_err().to_string();
        assert!(e.contains("record 17") && e.contains("f.bin"), "{e}");
    }
}
