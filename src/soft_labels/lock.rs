//! The writer lock of a cache file: `FILE.lock`, created with `create_new` and
//! holding the writer's PID and host. A second writer gets
//! [`CacheError::Locked`]; a lock left by a dead process on this host (a killed
//! fill) is detected by PID liveness and taken over. Readers take no lock: a
//! writer only ever replaces the file by rename, so a reader's mapping stays valid.

use super::error::{CacheError, CacheResult};
use std::fs;
use std::io::Write;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU64, Ordering};

static NONCE: AtomicU64 = AtomicU64::new(0);

/// Held while a process may write a cache file; released (the lock file
/// removed) on drop.
#[derive(Debug)]
pub struct WriterLock {
    path: PathBuf,
    token: String,
}

/// `FILE.lock` beside `cache`.
pub fn lock_path(cache: &Path) -> PathBuf {
    let mut name = cache
        .file_name()
        .map(|n| n.to_os_string())
        .unwrap_or_default();
    name.push(".lock");
    cache.with_file_name(name)
}

fn hostname() -> String {
    fs::read_to_string("/proc/sys/kernel/hostname")
        .map(|h| h.trim().to_owned())
        .or_else(|_| std::env::var("HOSTNAME"))
        .unwrap_or_else(|_| "unknown".into())
}

/// Whether process `pid` runs on this host. Only Linux can tell (`/proc`);
/// elsewhere every holder counts as alive, and a stale lock is removed by hand.
fn alive(pid: u32) -> bool {
    if cfg!(target_os = "linux") {
        pid != 0 && Path::new("/proc").join(pid.to_string()).exists()
    } else {
        true
    }
}

/// Parses `pid P host H nonce N`.
fn holder_of(text: &str) -> Option<(u32, &str)> {
    let mut words = text.split_whitespace();
    let (Some("pid"), Some(pid), Some("host"), Some(host)) =
        (words.next(), words.next(), words.next(), words.next())
    else {
        return None;
    };
    Some((pid.parse().ok()?, host))
}

impl WriterLock {
    /// Takes the lock of `cache`, creating its folder if needed.
    pub fn acquire(cache: &Path) -> CacheResult<WriterLock> {
        let path = lock_path(cache);
        if let Some(dir) = path.parent().filter(|d| !d.as_os_str().is_empty()) {
            fs::create_dir_all(dir).map_err(|e| CacheError::io(dir, e))?;
        }
        let host = hostname();
        let token = format!(
            "pid {} host {} nonce {}\n",
            std::process::id(),
            host,
            NONCE.fetch_add(1, Ordering::Relaxed)
        );
        for attempt in 0..2 {
            match fs::OpenOptions::new()
                .write(true)
                .create_new(true)
                .open(&path)
            {
                Ok(mut f) => {
                    f.write_all(token.as_bytes())
                        .and_then(|_| f.sync_all())
                        .map_err(|e| CacheError::io(&path, e))?;
                    return Ok(WriterLock { path, token });
                }
                Err(e) if e.kind() == std::io::ErrorKind::AlreadyExists => {
                    let text = fs::read_to_string(&path).unwrap_or_default();
                    let stale =
                        matches!(holder_of(&text), Some((pid, h)) if h == host && !alive(pid));
                    if stale && attempt == 0 {
                        log::warn!(
                            "{}: removing a stale lock of a process that is gone ({})",
                            path.display(),
                            text.trim()
                        );
                        let _ = fs::remove_file(&path);
                        continue;
                    }
                    let holder = match text.trim() {
                        "" => "holder unknown".to_owned(),
                        t => t.to_owned(),
                    };
                    return Err(CacheError::Locked {
                        path: cache.to_owned(),
                        lock: path,
                        holder,
                    });
                }
                Err(e) => return Err(CacheError::io(&path, e)),
            }
        }
        Err(CacheError::Locked {
            path: cache.to_owned(),
            lock: path,
            holder: "taken again while a stale lock was being removed".into(),
        })
    }

    /// The lock file.
    pub fn path(&self) -> &Path {
        &self.path
    }
}

impl Drop for WriterLock {
    fn drop(&mut self) {
        // Remove only our own lock (never one taken over after ours was judged stale).
        if fs::read_to_string(&self.path).is_ok_and(|t| t == self.token) {
            let _ = fs::remove_file(&self.path);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn second_writer_is_refused_and_stale_locks_are_taken_over() {
        let dir = tempfile::tempdir().unwrap();
        let cache = dir.path().join("c.softlabels");
        let first = WriterLock::acquire(&cache).unwrap();
        assert!(lock_path(&cache).exists());
        let e = WriterLock::acquire(&cache).unwrap_err().to_string();
        assert!(
            e.contains("c.softlabels.lock") && e.contains(&format!("pid {}", std::process::id())),
            "{e}"
        );
        drop(first);
        assert!(!lock_path(&cache).exists());
        if cfg!(target_os = "linux") {
            // pid_max is at most 2^22: this PID cannot be alive.
            fs::write(
                lock_path(&cache),
                format!("pid 4294967 host {} nonce 0\n", hostname()),
            )
            .unwrap();
            let taken = WriterLock::acquire(&cache).unwrap();
            drop(taken);
            assert!(!lock_path(&cache).exists());
        }
        // Another host's lock is never judged stale from here.
        fs::write(lock_path(&cache), "pid 4294967 host elsewhere nonce 0\n").unwrap();
        assert!(WriterLock::acquire(&cache).is_err());
    }
}
