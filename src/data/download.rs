//! Download of the official CIFAR-10 binary archive, verified before use.
//!
//! The archive is streamed into a hidden temporary file next to the dataset root
//! while its md5 is computed; only when the md5 matches is it extracted, into a
//! hidden temporary folder next to the root, together with the download stamp
//! ([`STAMP_FILE`](super::checksum::STAMP_FILE)) holding each extracted file's
//! md5. The folder is flushed to disk and renamed onto the root in one step, so
//! the root either does not exist or holds a complete, verified dataset. On any
//! failure the temporary files are removed and the error names the URL.

use super::checksum::{hex, Stamp};
use super::cifar::{
    batch_files, missing_files, META_FILE, RECORDS_PER_FILE, RECORD_BYTES, TEST_FILES, TRAIN_FILES,
};
use crate::config::DataConfig;
use crate::error::{Error, Result};
use flate2::read::GzDecoder;
use md5::{Digest, Md5};
use std::collections::BTreeMap;
use std::fs::{self, File};
use std::io::{self, BufReader, Read, Write};
use std::path::{Component, Path, PathBuf};
use std::time::{Duration, SystemTime, UNIX_EPOCH};

/// The official CIFAR-10 binary archive.
pub const URL: &str = "https://www.cs.toronto.edu/~kriz/cifar-10-binary.tar.gz";
/// md5 of the archive at [`URL`].
pub const ARCHIVE_MD5: &str = "c32a1d4ab5d03f1284b67883e8d87530";
/// Folder inside the archive that holds the batch files.
const ARCHIVE_DIR: &str = "cifar-10-batches-bin";
/// Give up when connecting takes longer than this.
const CONNECT_TIMEOUT: Duration = Duration::from_secs(30);
/// Give up when no byte arrives for this long.
const READ_TIMEOUT: Duration = Duration::from_secs(60);

/// Downloads the archive at `url`, checks that its md5 is `expected_md5`, and
/// installs its batch files and `batches.meta.txt` as the folder `root` (with the
/// download stamp). `root` must not exist or be an empty folder; it is never left
/// half-written.
pub fn download_cifar10_from(root: &Path, url: &str, expected_md5: &str) -> Result<()> {
    install(root, url, expected_md5).map_err(|message| Error::Download {
        url: url.to_owned(),
        message,
    })
}

/// Makes sure the CIFAR-10 files are in `cfg.root`: nothing to do when they are
/// present; downloaded from [`URL`] when absent and `cfg.download`; an error
/// saying where to put them otherwise (or when the download fails).
pub fn ensure_cifar10(cfg: &DataConfig) -> Result<()> {
    let root = &cfg.root;
    let missing = missing_files(root);
    if missing.is_empty() {
        return Ok(());
    }
    if !cfg.download {
        return Err(Error::dataset(
            root,
            format!(
                "CIFAR-10 not found (missing {}) and data.download = false; put the binary files in \
                 this folder, or set `data.download = true` to fetch the official archive from {URL}",
                missing.join(", ")
            ),
        ));
    }
    fetch_into(root, URL)
}

/// Downloads the archive at `url` (md5-checked against [`ARCHIVE_MD5`]) into
/// `root` unless the files are already there (`ard-pipeline data fetch`). A
/// failed download's error ends with where to put the files by hand.
pub fn fetch_into(root: &Path, url: &str) -> Result<()> {
    if missing_files(root).is_empty() {
        return Ok(());
    }
    log::info!(
        "CIFAR-10 not found in {}: downloading {url}",
        root.display()
    );
    download_cifar10_from(root, url, ARCHIVE_MD5).map_err(|e| match e {
        Error::Download { url, message } => Error::Download {
            url,
            message: format!(
                "{message}; without internet access, put the CIFAR-10 binary files ({}, {}) in {} by hand",
                TRAIN_FILES.join(", "),
                TEST_FILES.join(", "),
                root.display()
            ),
        },
        other => other,
    })
}

/// The download and installation; errors are messages for [`Error::Download`].
fn install(root: &Path, url: &str, expected_md5: &str) -> Result<(), String> {
    let name = root
        .file_name()
        .ok_or_else(|| format!("dataset root {} has no folder name", root.display()))?
        .to_string_lossy()
        .into_owned();
    let parent = match root.parent() {
        Some(p) if !p.as_os_str().is_empty() => p.to_path_buf(),
        _ => PathBuf::from("."),
    };
    check_root_free(root)?;
    fs::create_dir_all(&parent).map_err(|e| format!("cannot create {}: {e}", parent.display()))?;

    let nanos = SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| d.as_nanos());
    let tag = format!(".{name}.{}-{nanos}", std::process::id());
    let mut temps = TempPaths::default();

    let archive = parent.join(format!("{tag}.tar.gz.part"));
    temps.0.push(archive.clone());
    let actual = fetch(url, &archive)?;
    if !actual.eq_ignore_ascii_case(expected_md5) {
        return Err(format!(
            "md5 of the downloaded archive is {actual}, expected {expected_md5}: the download is corrupt \
             or the file at this URL changed; nothing was extracted"
        ));
    }

    let staging = parent.join(format!("{tag}.extract"));
    temps.0.push(staging.clone());
    fs::create_dir(&staging).map_err(|e| format!("cannot create {}: {e}", staging.display()))?;
    let files = extract(&archive, &staging)?;
    Stamp::new(url, &actual, files)
        .write(&staging)
        .map_err(|e| e.to_string())?;
    sync_dir(&staging)?;

    check_root_free(root)?;
    if root.is_dir() {
        // An empty folder: replace it.
        fs::remove_dir(root)
            .map_err(|e| format!("cannot replace empty folder {}: {e}", root.display()))?;
    }
    fs::rename(&staging, root).map_err(|e| {
        format!(
            "cannot move {} to {}: {e}",
            staging.display(),
            root.display()
        )
    })?;
    temps.0.retain(|p| p != &staging);
    sync_dir(&parent)?;
    log::info!(
        "CIFAR-10 installed in {} (archive md5 {actual})",
        root.display()
    );
    Ok(())
}

/// Errors unless `root` is absent or an empty folder.
fn check_root_free(root: &Path) -> Result<(), String> {
    match fs::read_dir(root) {
        Err(e) if e.kind() == io::ErrorKind::NotFound => Ok(()),
        Err(e) => Err(format!("{} exists but cannot be used as the dataset folder: {e}", root.display())),
        Ok(mut entries) => match entries.next() {
            None => Ok(()),
            Some(_) => Err(format!(
            "{} exists and is not empty (missing: {}); the downloader never writes into an existing \
             folder: move it away or complete it by hand",
            root.display(),
                missing_files(root).join(", ")
            )),
        },
    }
}

/// Streams `url` into `dest`, returning the body's md5.
fn fetch(url: &str, dest: &Path) -> Result<String, String> {
    let agent = ureq::AgentBuilder::new()
        .timeout_connect(CONNECT_TIMEOUT)
        .timeout_read(READ_TIMEOUT)
        .build();
    // Ask for the bytes as stored: the md5 is of the .tar.gz itself.
    let resp = agent
        .get(url)
        .set("Accept-Encoding", "identity")
        .call()
        .map_err(|e| format!("request failed: {e}"))?;
    let expected_len = resp
        .header("Content-Length")
        .and_then(|v| v.trim().parse::<u64>().ok());
    let mut body = resp.into_reader();
    let mut out =
        File::create(dest).map_err(|e| format!("cannot create {}: {e}", dest.display()))?;
    let mut md5 = Md5::new();
    let mut buf = vec![0u8; 1 << 20];
    let mut total = 0u64;
    let mut next_report = 0u64;
    loop {
        let n = match body.read(&mut buf) {
            Ok(0) => break,
            Ok(n) => n,
            Err(e) if e.kind() == io::ErrorKind::Interrupted => continue,
            Err(e) => return Err(format!("connection failed after {total} bytes: {e}")),
        };
        md5.update(&buf[..n]);
        out.write_all(&buf[..n])
            .map_err(|e| format!("cannot write {}: {e}", dest.display()))?;
        total += n as u64;
        if let Some(len) = expected_len.filter(|_| total >= next_report) {
            log::info!("downloaded {} of {} MB", total >> 20, len >> 20);
            next_report = total + len / 10;
        }
    }
    if let Some(len) = expected_len {
        if total != len {
            return Err(format!("the body ended after {total} of {len} bytes"));
        }
    }
    Ok(hex(&md5.finalize()))
}

/// Extracts the batch files and `batches.meta.txt` from `cifar-10-batches-bin/`
/// in the archive into `dir`, flushed to disk; returns each file's md5.
fn extract(archive: &Path, dir: &Path) -> Result<BTreeMap<String, String>, String> {
    let file =
        File::open(archive).map_err(|e| format!("cannot open {}: {e}", archive.display()))?;
    let mut tar = tar::Archive::new(GzDecoder::new(BufReader::new(file)));
    let entries = tar.entries().map_err(|e| format!("corrupt archive: {e}"))?;
    let mut found = BTreeMap::new();
    for entry in entries {
        let mut entry = entry.map_err(|e| format!("corrupt archive: {e}"))?;
        let path = entry
            .path()
            .map_err(|e| format!("corrupt archive: {e}"))?
            .into_owned();
        let Some(name) = member_name(&path) else {
            continue;
        };
        if !entry.header().entry_type().is_file() {
            return Err(format!(
                "archive member {} is not a regular file",
                path.display()
            ));
        }
        let dest = dir.join(name);
        let mut out =
            File::create(&dest).map_err(|e| format!("cannot create {}: {e}", dest.display()))?;
        let mut hashing = HashingWriter {
            inner: &mut out,
            md5: Md5::new(),
            len: 0,
        };
        io::copy(&mut entry, &mut hashing).map_err(|e| {
            format!(
                "cannot extract {} to {}: {e}",
                path.display(),
                dest.display()
            )
        })?;
        let (md5, len) = (hex(&hashing.md5.finalize()), hashing.len);
        let expected = (RECORDS_PER_FILE * RECORD_BYTES) as u64;
        if name != META_FILE && len != expected {
            return Err(format!(
                "archive member {} has {len} bytes, expected {expected}",
                path.display()
            ));
        }
        out.sync_all()
            .map_err(|e| format!("cannot flush {}: {e}", dest.display()))?;
        found.insert(name.to_owned(), md5);
    }
    let missing: Vec<&str> = batch_files().filter(|n| !found.contains_key(*n)).collect();
    if !missing.is_empty() {
        return Err(format!(
            "the archive lacks {ARCHIVE_DIR}/{{{}}}",
            missing.join(", ")
        ));
    }
    Ok(found)
}

/// The file name for archive member `path` if it is one we extract
/// (`cifar-10-batches-bin/<batch file or batches.meta.txt>`).
fn member_name(path: &Path) -> Option<&'static str> {
    let mut parts = path
        .components()
        .filter(|c| !matches!(c, Component::CurDir));
    let (Some(Component::Normal(dir)), Some(Component::Normal(file)), None) =
        (parts.next(), parts.next(), parts.next())
    else {
        return None;
    };
    if dir.to_str() != Some(ARCHIVE_DIR) {
        return None;
    }
    batch_files()
        .chain([META_FILE])
        .find(|m| file.to_str() == Some(*m))
}

/// Flushes a folder's entries to disk (a no-op where folders cannot be opened).
fn sync_dir(dir: &Path) -> Result<(), String> {
    #[cfg(unix)]
    File::open(dir)
        .and_then(|d| d.sync_all())
        .map_err(|e| format!("cannot flush {}: {e}", dir.display()))?;
    #[cfg(not(unix))]
    let _ = dir;
    Ok(())
}

/// A writer that hashes and counts what passes through.
struct HashingWriter<W> {
    inner: W,
    md5: Md5,
    len: u64,
}

impl<W: Write> Write for HashingWriter<W> {
    fn write(&mut self, buf: &[u8]) -> io::Result<usize> {
        let n = self.inner.write(buf)?;
        self.md5.update(&buf[..n]);
        self.len += n as u64;
        Ok(n)
    }

    fn flush(&mut self) -> io::Result<()> {
        self.inner.flush()
    }
}

/// Temporary files and folders, removed when dropped.
#[derive(Default)]
struct TempPaths(Vec<PathBuf>);

impl Drop for TempPaths {
    fn drop(&mut self) {
        for p in &self.0 {
            let _ = match fs::symlink_metadata(p) {
                Ok(m) if m.is_dir() => fs::remove_dir_all(p),
                Ok(_) => fs::remove_file(p),
                Err(_) => Ok(()),
            };
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn member_names() {
        assert_eq!(
            member_name(Path::new("cifar-10-batches-bin/data_batch_3.bin")),
            Some("data_batch_3.bin")
        );
        assert_eq!(
            member_name(Path::new("./cifar-10-batches-bin/test_batch.bin")),
            Some("test_batch.bin")
        );
        assert_eq!(
            member_name(Path::new("cifar-10-batches-bin/batches.meta.txt")),
            Some(META_FILE)
        );
        assert_eq!(
            member_name(Path::new("cifar-10-batches-bin/readme.html")),
            None
        );
        assert_eq!(
            member_name(Path::new("cifar-10-batches-bin/../test_batch.bin")),
            None
        );
        assert_eq!(member_name(Path::new("other/test_batch.bin")), None);
        assert_eq!(member_name(Path::new("test_batch.bin")), None);
        assert_eq!(
            member_name(Path::new("cifar-10-batches-bin/x/test_batch.bin")),
            None
        );
    }

    #[test]
    fn offline_ensure_says_where_to_put_files() {
        let dir = tempfile::tempdir().unwrap();
        let cfg = DataConfig {
            root: dir.path().join("cifar"),
            download: false,
            ..DataConfig::default()
        };
        let e = ensure_cifar10(&cfg).unwrap_err().to_string();
        assert!(
            e.contains(&cfg.root.display().to_string()) && e.contains("data.download = true"),
            "{e}"
        );
        assert!(!cfg.root.exists());
    }

    #[test]
    fn refuses_a_non_empty_root() {
        let dir = tempfile::tempdir().unwrap();
        fs::write(dir.path().join("keep.txt"), "x").unwrap();
        // Fails before any network access.
        let e =
            download_cifar10_from(dir.path(), "http://127.0.0.1:9/none", ARCHIVE_MD5).unwrap_err();
        assert!(e.to_string().contains("not empty"), "{e}");
        assert!(dir.path().join("keep.txt").exists());
    }
}
