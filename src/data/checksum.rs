//! Checksums of the CIFAR-10 batch files: the offline copy's md5 table, the stamp
//! that the downloader writes after extracting the md5-verified official archive,
//! and the check that [`DataChecksums`] selects.
//!
//! "Official" means "produced by our verified download": the archive's md5 is
//! checked before extraction, and the md5 of every extracted file is recorded in
//! `root/.ard-verified.json` ([`STAMP_FILE`]). Later loads compare against it.

use crate::config::DataChecksums;
use crate::error::{Error, Result};
use md5::{Digest, Md5};
use serde::{Deserialize, Serialize};
use std::collections::BTreeMap;
use std::fs;
use std::io::Write;
use std::path::Path;

/// Name of the stamp file, inside the dataset root.
pub const STAMP_FILE: &str = ".ard-verified.json";

/// Version of the stamp format written by this code.
const STAMP_FORMAT: u32 = 1;

/// md5 of each batch file of the offline copy (`shared/data/README.md`).
pub const OFFLINE_COPY_MD5: [(&str, &str); 6] = [
    ("data_batch_1.bin", "fb844f0c8abf3ee2867bc0b66db76e34"),
    ("data_batch_2.bin", "a03813b579934887e19fffa24f57e096"),
    ("data_batch_3.bin", "9338b8beb58f9f053aa7e7f6d2ca26a1"),
    ("data_batch_4.bin", "5d6a4b059305fb3437429da7d5355351"),
    ("data_batch_5.bin", "b543e7acd6f6cab339de5ace5ae323ae"),
    ("test_batch.bin", "c3b28fcb373f35d9e9d1b6f7428ee370"),
];

/// Lower-case hex md5 of `bytes`.
pub fn md5_hex(bytes: &[u8]) -> String {
    hex(&Md5::digest(bytes))
}

/// Lower-case hex digest (`D`: md5, sha256, ...) of the file at `path`, read in 1 MiB chunks.
pub fn file_digest<D: Digest + Write>(path: &Path) -> std::io::Result<String> {
    let mut f = std::io::BufReader::with_capacity(1 << 20, fs::File::open(path)?);
    let mut hasher = D::new();
    std::io::copy(&mut f, &mut hasher)?;
    Ok(hex(&hasher.finalize()))
}

/// Lower-case hex sha256 of the file at `path` (what records of a weights file carry).
pub fn sha256(path: &Path) -> Result<String> {
    file_digest::<sha2::Sha256>(path).map_err(|e| Error::io(path, e))
}

/// Lower-case hex of a digest.
pub(crate) fn hex(digest: &[u8]) -> String {
    use std::fmt::Write as _;
    let mut s = String::with_capacity(digest.len() * 2);
    for b in digest {
        let _ = write!(s, "{b:02x}");
    }
    s
}

/// The offline copy's md5 of the batch file `name`, if it is one.
pub fn offline_copy_md5(name: &str) -> Option<&'static str> {
    OFFLINE_COPY_MD5
        .iter()
        .find(|(n, _)| *n == name)
        .map(|(_, m)| *m)
}

/// Record of a verified download, stored as JSON in [`STAMP_FILE`].
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Stamp {
    /// Format version (currently 1).
    pub format: u32,
    /// Where the archive came from.
    pub source_url: String,
    /// md5 of the archive, verified before extraction.
    pub archive_md5: String,
    /// md5 of each extracted file, by file name.
    pub files: BTreeMap<String, String>,
}

impl Stamp {
    /// A stamp for files extracted from the archive at `source_url`.
    pub fn new(source_url: &str, archive_md5: &str, files: BTreeMap<String, String>) -> Self {
        Self {
            format: STAMP_FORMAT,
            source_url: source_url.to_owned(),
            archive_md5: archive_md5.to_owned(),
            files,
        }
    }

    /// Reads `dir/.ard-verified.json`; `Ok(None)` when there is none.
    pub fn read(dir: &Path) -> Result<Option<Self>> {
        let path = dir.join(STAMP_FILE);
        let text = match fs::read_to_string(&path) {
            Ok(t) => t,
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(None),
            Err(e) => return Err(Error::io(&path, e)),
        };
        let stamp: Stamp = serde_json::from_str(&text).map_err(|e| Error::Dataset {
            path: path.clone(),
            message: format!(
                "unreadable download stamp ({e}); delete the dataset folder and download again"
            ),
        })?;
        if stamp.format != STAMP_FORMAT {
            return Err(Error::dataset(
                path,
                format!(
                    "download stamp has format {}, this build reads format {STAMP_FORMAT}",
                    stamp.format
                ),
            ));
        }
        Ok(Some(stamp))
    }

    /// Writes the stamp into `dir` and flushes it to disk.
    pub fn write(&self, dir: &Path) -> Result<()> {
        let path = dir.join(STAMP_FILE);
        let text = serde_json::to_string_pretty(self).map_err(Error::json("the download stamp"))?;
        let mut f = fs::File::create(&path).map_err(|e| Error::io(&path, e))?;
        f.write_all(text.as_bytes())
            .map_err(|e| Error::io(&path, e))?;
        f.write_all(b"\n").map_err(|e| Error::io(&path, e))?;
        f.sync_all().map_err(|e| Error::io(&path, e))
    }
}

/// Checks the md5 of the batch file at `path` (named `name`) against the set
/// that `checksums` selects. `stamp` is the root's download stamp, if any.
///
/// `actual` is `None` only for [`DataChecksums::Skip`], where nothing is checked.
pub(crate) fn verify(
    path: &Path,
    name: &str,
    actual: Option<&str>,
    checksums: DataChecksums,
    stamp: Option<&Stamp>,
) -> Result<()> {
    let Some(actual) = actual else {
        return match checksums {
            DataChecksums::Skip => Ok(()),
            _ => Err(Error::dataset(path, "its md5 was not computed")),
        };
    };
    let offline = offline_copy_md5(name);
    let official = stamp.and_then(|s| s.files.get(name)).map(String::as_str);
    let fail = |message: String| Err(Error::dataset(path, message));
    let no_stamp = || match stamp {
        None => format!("no record of a verified download ({STAMP_FILE} is absent)"),
        Some(_) => format!("{STAMP_FILE} lists no md5 for {name}"),
    };
    match checksums {
        DataChecksums::Skip => Ok(()),
        DataChecksums::OfflineCopy => match offline {
            Some(exp) if exp == actual => Ok(()),
            Some(exp) => fail(format!(
                "md5 mismatch against the offline_copy checksums: expected {exp}, actual {actual}; \
                 the file is corrupt or is not the offline copy (see data.checksums)"
            )),
            None => fail(format!("no offline_copy checksum is known for {name}")),
        },
        DataChecksums::Official => match official {
            Some(exp) if exp == actual => Ok(()),
            Some(exp) => fail(format!(
                "md5 mismatch against the official checksums (recorded by the verified download in \
                 {STAMP_FILE}): expected {exp}, actual {actual}; the file changed after download, \
                 delete the folder and download again"
            )),
            None => fail(format!(
                "cannot verify against the official checksums: {}; files count as official only when \
                 this project's downloader fetched them (set data.download = true on an empty root), \
                 or choose data.checksums = \"offline_copy\" or \"any\"",
                no_stamp()
            )),
        },
        DataChecksums::Any => {
            if offline == Some(actual) || official == Some(actual) {
                return Ok(());
            }
            let off = offline.map_or_else(|| "none known".to_owned(), |m| format!("expected {m}"));
            let ofc = official.map_or_else(no_stamp, |m| format!("expected {m}"));
            fail(format!(
                "md5 {actual} matches neither checksum set (data.checksums = \"any\"): \
                 offline_copy {off}; official {ofc}; the file is corrupt or unknown"
            ))
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn md5_of_known_strings() {
        assert_eq!(md5_hex(b""), "d41d8cd98f00b204e9800998ecf8427e");
        assert_eq!(md5_hex(b"abc"), "900150983cd24fb0d6963f7d28e17f72");
    }

    #[test]
    fn verify_selects_the_set() {
        let p = Path::new("x/data_batch_1.bin");
        let off = OFFLINE_COPY_MD5[0].1;
        let stamp = Stamp::new(
            "u",
            "a",
            [("data_batch_1.bin".to_owned(), "00".repeat(16))].into(),
        );
        let ofc = stamp.files["data_batch_1.bin"].clone();
        let name = "data_batch_1.bin";
        assert!(verify(p, name, Some(off), DataChecksums::OfflineCopy, None).is_ok());
        assert!(verify(
            p,
            name,
            Some(&ofc),
            DataChecksums::OfflineCopy,
            Some(&stamp)
        )
        .is_err());
        assert!(verify(p, name, Some(&ofc), DataChecksums::Official, Some(&stamp)).is_ok());
        assert!(verify(p, name, Some(off), DataChecksums::Official, Some(&stamp)).is_err());
        assert!(verify(p, name, Some(off), DataChecksums::Official, None).is_err());
        assert!(verify(p, name, Some(off), DataChecksums::Any, None).is_ok());
        assert!(verify(p, name, Some(&ofc), DataChecksums::Any, Some(&stamp)).is_ok());
        assert!(verify(p, name, Some("ff"), DataChecksums::Any, Some(&stamp)).is_err());
        assert!(verify(p, name, None, DataChecksums::Skip, None).is_ok());
        let e = verify(p, name, Some("ff"), DataChecksums::OfflineCopy, None)
            .unwrap_err()
            .to_string();
        assert!(
            e.contains("data_batch_1.bin") && e.contains(off) && e.contains("ff"),
            "{e}"
        );
    }

    #[test]
    fn stamp_round_trip() {
        let dir = tempfile::tempdir().unwrap();
        assert_eq!(Stamp::read(dir.path()).unwrap(), None);
        let stamp = Stamp::new("http://x", "abc", [("a".to_owned(), "b".to_owned())].into());
        stamp.write(dir.path()).unwrap();
        assert_eq!(Stamp::read(dir.path()).unwrap(), Some(stamp));
        fs::write(dir.path().join(STAMP_FILE), "{").unwrap();
        assert!(Stamp::read(dir.path()).is_err());
    }
}
