//! The writer lock of a cache file: `FILE.lock` beside it (a
//! [`crate::file_lock::FileLock`]). A second writer gets [`CacheError::Locked`];
//! a lock left by a dead process on this host (a killed fill) is taken over.
//! Readers take no lock: a writer only ever replaces the file by rename, so a
//! reader's mapping stays valid.

use super::error::{CacheError, CacheResult};
use crate::file_lock::{FileLock, LockError};
use std::path::{Path, PathBuf};

/// `FILE.lock` beside `cache`.
pub fn lock_path(cache: &Path) -> PathBuf {
    let mut name = cache.file_name().unwrap_or_default().to_os_string();
    name.push(".lock");
    cache.with_file_name(name)
}

/// Takes the writer lock of `cache`, creating its folder if needed; it is held
/// while a process may write the file and released on drop.
pub fn acquire(cache: &Path) -> CacheResult<FileLock> {
    FileLock::acquire(&lock_path(cache)).map_err(|e| match e {
        LockError::Held { lock, holder } => CacheError::Locked {
            path: cache.to_owned(),
            lock,
            holder,
        },
        LockError::Io { path, source } => CacheError::io(&path, source),
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_second_writer_is_refused_naming_the_cache_and_the_holder() {
        let dir = tempfile::tempdir().unwrap();
        let cache = dir.path().join("c.softlabels");
        let first = acquire(&cache).unwrap();
        assert!(lock_path(&cache).exists());
        let e = acquire(&cache).unwrap_err().to_string();
        assert!(
            e.contains("c.softlabels.lock") && e.contains(&format!("pid {}", std::process::id())),
            "{e}"
        );
        drop(first);
        assert!(!lock_path(&cache).exists());
    }
}
