//! Whole-file writes that never leave a half-written file: the text goes to a
//! temporary file beside the target, is synced, then renamed over it.

use crate::error::{Error, Result};
use std::path::Path;

/// Writes `text` to `path` via a temp file and rename.
pub fn write_text_atomic(path: &Path, text: &str) -> Result<()> {
    let tmp = path.with_extension(format!("tmp-{}", std::process::id()));
    let result = std::fs::write(&tmp, text)
        .and_then(|_| std::fs::File::open(&tmp)?.sync_all())
        .and_then(|_| std::fs::rename(&tmp, path));
    result.map_err(|e| {
        let _ = std::fs::remove_file(&tmp);
        Error::io(path, e)
    })
}
