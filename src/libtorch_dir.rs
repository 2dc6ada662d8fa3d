//! Reading a libtorch folder (a PyPI torch package or a libtorch archive):
//! its version. Shared by build.rs (the libtorch built against) and `doctor`
//! (the one loaded).

use std::path::Path;

/// The version recorded in a libtorch folder: `version.py` in a PyPI torch
/// package, `build-version` in a libtorch archive.
pub fn libtorch_version(root: &Path) -> Option<String> {
    if let Ok(text) = std::fs::read_to_string(root.join("version.py")) {
        for line in text.lines() {
            if let Some(rest) = line.trim().strip_prefix("__version__") {
                let v = rest.trim_start_matches([' ', '=', ':']).trim();
                return Some(v.trim_matches(['\'', '"']).to_string());
            }
        }
    }
    std::fs::read_to_string(root.join("build-version"))
        .ok()
        .map(|s| s.trim().to_string())
        .filter(|s| !s.is_empty())
}

#[cfg(test)]
mod tests {
    use super::libtorch_version;

    #[test]
    fn versions_are_read_from_both_layouts() {
        let dir = tempfile::tempdir().unwrap();
        std::fs::write(
            dir.path().join("version.py"),
            "from typing import Optional\n__version__ = '2.13.0+cu130'\ncuda = '13.0'\n",
        )
        .unwrap();
        assert_eq!(
            libtorch_version(dir.path()).as_deref(),
            Some("2.13.0+cu130")
        );
        let dir = tempfile::tempdir().unwrap();
        std::fs::write(dir.path().join("build-version"), "2.11.0+cu130\n").unwrap();
        assert_eq!(
            libtorch_version(dir.path()).as_deref(),
            Some("2.11.0+cu130")
        );
        assert_eq!(libtorch_version(&dir.path().join("absent")), None);
    }
}
