//! What can go wrong with a soft-label cache file, each error naming the file
//! and, where it applies, the header field at fault.

use std::path::PathBuf;

/// Result with a [`CacheError`].
pub type CacheResult<T> = std::result::Result<T, CacheError>;

/// A soft-label cache problem. Converts into the crate's [`Error`](crate::Error).
#[derive(Debug, thiserror::Error)]
pub enum CacheError {
    /// Reading, writing or renaming the file failed.
    #[error("soft-label cache {}: {source}", path.display())]
    Io {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },

    /// The file does not start with the cache's magic bytes.
    #[error("soft-label cache {}: not a soft-label cache file ({detail})", path.display())]
    Foreign { path: PathBuf, detail: String },

    /// Written by another version of the format.
    #[error(
        "soft-label cache {}: format version {found}, this build reads version {expected}; \
         delete it and fill it again with `ard-pipeline soft-labels`",
        path.display()
    )]
    Version {
        path: PathBuf,
        found: u32,
        expected: u32,
    },

    /// Shorter than its header says.
    #[error(
        "soft-label cache {}: truncated: {actual} bytes, the header needs {expected}; \
         an interrupted copy? delete it and fill it again",
        path.display()
    )]
    Truncated {
        path: PathBuf,
        actual: u64,
        expected: u64,
    },

    /// The header or the filled-entries bitmap is inconsistent.
    #[error("soft-label cache {}: corrupt: {detail}", path.display())]
    Corrupt { path: PathBuf, detail: String },

    /// The header was written for another teacher, dataset or policy.
    #[error(
        "soft-label cache {}: header field `{field}` does not match this run: the file has {cached}, \
         the run needs {run}; the file holds soft labels of another {what}, so it is not used. \
         Point teacher.cache_dir elsewhere, or delete the file",
        path.display()
    )]
    Mismatch {
        path: PathBuf,
        field: &'static str,
        what: &'static str,
        cached: String,
        run: String,
    },

    /// Another process (or handle) is writing the file.
    #[error(
        "soft-label cache {}: another writer holds the lock {} ({holder}); wait for it to finish, \
         or delete the lock file if that process is gone",
        path.display(),
        lock.display()
    )]
    Locked {
        path: PathBuf,
        lock: PathBuf,
        holder: String,
    },

    /// A request the file cannot serve (an index outside it, a write to a
    /// read-only cache, shards that do not fit together, ...).
    #[error("soft-label cache {}: {detail}", path.display())]
    Invalid { path: PathBuf, detail: String },

    /// A libtorch operation on the teacher's logits failed.
    #[error("soft-label cache: libtorch: {0}")]
    Torch(#[from] tch::TchError),
}

impl CacheError {
    pub(crate) fn io(path: impl Into<PathBuf>, source: std::io::Error) -> Self {
        CacheError::Io {
            path: path.into(),
            source,
        }
    }

    pub(crate) fn invalid(path: impl Into<PathBuf>, detail: impl Into<String>) -> Self {
        CacheError::Invalid {
            path: path.into(),
            detail: detail.into(),
        }
    }

    pub(crate) fn truncated(path: impl Into<PathBuf>, actual: u64, expected: u64) -> Self {
        CacheError::Truncated {
            path: path.into(),
            actual,
            expected,
        }
    }

    pub(crate) fn corrupt(path: impl Into<PathBuf>, detail: impl Into<String>) -> Self {
        CacheError::Corrupt {
            path: path.into(),
            detail: detail.into(),
        }
    }
}

impl From<CacheError> for crate::Error {
    fn from(e: CacheError) -> Self {
        match e {
            CacheError::Torch(t) => crate::Error::Torch(t),
            other => crate::Error::Component(Box::new(other)),
        }
    }
}
