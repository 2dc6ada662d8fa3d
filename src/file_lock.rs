//! An exclusive lock file held by one process: created with `create_new`,
//! holding the holder's PID and host, removed on drop. A second process gets
//! [`LockError::Held`] naming the holder; a lock left by a dead process on this
//! host (a killed run) is detected by PID liveness and taken over. Used for
//! the run folder (one run per folder) and the soft-label cache (one writer).

use std::fs;
use std::io::Write;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU64, Ordering};

static NONCE: AtomicU64 = AtomicU64::new(0);

/// Why a lock could not be taken.
#[derive(Debug, thiserror::Error)]
pub enum LockError {
    /// Another live process (or another host) holds it.
    #[error("locked by {holder} (lock file {})", lock.display())]
    Held { lock: PathBuf, holder: String },
    /// The lock file could not be created or read.
    #[error("{}: {source}", path.display())]
    Io {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
}

/// Held while this process owns the lock; the lock file is removed on drop.
#[derive(Debug)]
pub struct FileLock {
    path: PathBuf,
    token: String,
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

impl FileLock {
    /// Takes the lock file `path`, creating its folder if needed.
    pub fn acquire(path: &Path) -> Result<FileLock, LockError> {
        let io = |p: &Path, source| LockError::Io {
            path: p.to_owned(),
            source,
        };
        if let Some(dir) = path.parent().filter(|d| !d.as_os_str().is_empty()) {
            fs::create_dir_all(dir).map_err(|e| io(dir, e))?;
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
                .open(path)
            {
                Ok(mut f) => {
                    f.write_all(token.as_bytes())
                        .and_then(|_| f.sync_all())
                        .map_err(|e| io(path, e))?;
                    return Ok(FileLock {
                        path: path.to_owned(),
                        token,
                    });
                }
                Err(e) if e.kind() == std::io::ErrorKind::AlreadyExists => {
                    let text = fs::read_to_string(path).unwrap_or_default();
                    let stale =
                        matches!(holder_of(&text), Some((pid, h)) if h == host && !alive(pid));
                    if stale && attempt == 0 {
                        log::warn!(
                            "{}: taking over the stale lock of a process that is gone ({})",
                            path.display(),
                            text.trim()
                        );
                        let _ = fs::remove_file(path);
                        continue;
                    }
                    let holder = match text.split(" nonce").next().unwrap_or("").trim() {
                        "" => "an unknown holder".to_owned(),
                        t => t.to_owned(),
                    };
                    return Err(LockError::Held {
                        lock: path.to_owned(),
                        holder,
                    });
                }
                Err(e) => return Err(io(path, e)),
            }
        }
        Err(LockError::Held {
            lock: path.to_owned(),
            holder: "a process that took it while a stale lock was being removed".into(),
        })
    }
}

impl Drop for FileLock {
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
    fn a_second_holder_is_refused_and_stale_locks_are_taken_over() {
        let dir = tempfile::tempdir().unwrap();
        let lock = dir.path().join("x.lock");
        let first = FileLock::acquire(&lock).unwrap();
        assert!(lock.exists());
        let e = FileLock::acquire(&lock).unwrap_err().to_string();
        assert!(
            e.contains("x.lock") && e.contains(&format!("pid {}", std::process::id())),
            "{e}"
        );
        drop(first);
        assert!(!lock.exists());
        if cfg!(target_os = "linux") {
            // pid_max is at most 2^22: this PID cannot be alive.
            fs::write(&lock, format!("pid 4294967 host {} nonce 0\n", hostname())).unwrap();
            let taken = FileLock::acquire(&lock).unwrap();
            drop(taken);
            assert!(!lock.exists());
        }
        // Another host's lock is never judged stale from here.
        fs::write(&lock, "pid 4294967 host elsewhere nonce 0\n").unwrap();
        assert!(FileLock::acquire(&lock).is_err());
    }
}
