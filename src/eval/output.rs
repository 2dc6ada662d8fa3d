//! The files `ard-pipeline eval` writes (`--json`, `--save-logits`), checked
//! before anything is computed: an evaluation can run for hours, and a result
//! that cannot be written at its end is a result lost. A path passes when its
//! folder exists and takes a new file, it is not a folder itself, and it is
//! none of the command's inputs (writing the JSON over `--weights` would
//! replace the checkpoint) nor another output.

use crate::error::{Error, Result};
use std::path::{Path, PathBuf};

/// An output file and the flag that named it.
#[derive(Debug, Clone, Copy)]
pub struct Output<'a> {
    pub flag: &'a str,
    pub path: &'a Path,
}

/// The path with its folder resolved (symlinks, `..`), so that two spellings
/// of one file compare equal; the path as given when the folder is missing.
fn resolved(path: &Path) -> PathBuf {
    if let Ok(p) = path.canonicalize() {
        return p;
    }
    let dir = folder(path);
    match (dir.canonicalize(), path.file_name()) {
        (Ok(d), Some(name)) => d.join(name),
        _ => path.to_path_buf(),
    }
}

/// The folder a file goes in (`.` for a bare name).
fn folder(path: &Path) -> &Path {
    path.parent()
        .filter(|d| !d.as_os_str().is_empty())
        .unwrap_or(Path::new("."))
}

/// Whether a new file can be made in `dir`: makes and removes a probe file.
fn writable(dir: &Path) -> std::io::Result<()> {
    let probe = dir.join(format!(".ard-eval-probe-{}", std::process::id()));
    std::fs::write(&probe, b"")?;
    std::fs::remove_file(&probe)
}

/// Checks every output against the rules above; `inputs` are the files the
/// command reads, each with the flag or key that named it.
pub fn check_outputs(outputs: &[Output], inputs: &[(&str, &Path)]) -> Result<()> {
    let usage = |flag: &str, path: &Path, why: String| {
        Err(Error::Usage(format!(
            "eval {flag} {}: {why}",
            path.display()
        )))
    };
    for (i, out) in outputs.iter().enumerate() {
        let (flag, path) = (out.flag, out.path);
        if path.is_dir() {
            return usage(flag, path, "is a folder; give a file name".into());
        }
        let dir = folder(path);
        if !dir.is_dir() {
            return usage(
                flag,
                path,
                format!(
                    "the folder {} does not exist (create it first)",
                    dir.display()
                ),
            );
        }
        if let Err(e) = writable(dir) {
            return usage(
                flag,
                path,
                format!("cannot write in {}: {e}", dir.display()),
            );
        }
        let me = resolved(path);
        let clash = inputs
            .iter()
            .copied()
            .chain(outputs[..i].iter().map(|o| (o.flag, o.path)))
            .find(|(_, other)| resolved(other) == me);
        if let Some((other, _)) = clash {
            return usage(
                flag,
                path,
                format!("is also {other}; writing it would replace that file"),
            );
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn out<'a>(flag: &'a str, path: &'a Path) -> Output<'a> {
        Output { flag, path }
    }

    #[test]
    fn missing_folders_inputs_and_folders_are_refused_by_flag() {
        let dir = std::env::temp_dir().join(format!("ard-eval-output-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let weights = dir.join("w.safetensors");
        std::fs::write(&weights, b"x").unwrap();
        let json = dir.join("eval.json");
        let err = |outs: &[Output], ins: &[(&str, &Path)]| {
            check_outputs(outs, ins).unwrap_err().to_string()
        };
        assert!(check_outputs(&[out("--json", &json)], &[("--weights", &weights)]).is_ok());
        let missing = dir.join("nope/eval.json");
        let e = err(&[out("--json", &missing)], &[]);
        assert!(e.contains("--json") && e.contains("does not exist"), "{e}");
        // The same file spelt another way is still the checkpoint.
        let other_spelling = dir.join(".").join("w.safetensors");
        let e = err(
            &[out("--json", &other_spelling)],
            &[("--weights", &weights)],
        );
        assert!(e.contains("is also --weights"), "{e}");
        let e = err(&[out("--json", &dir)], &[]);
        assert!(e.contains("is a folder"), "{e}");
        let e = err(&[out("--json", &json), out("--save-logits", &json)], &[]);
        assert!(
            e.contains("--save-logits") && e.contains("is also --json"),
            "{e}"
        );
        std::fs::remove_dir_all(&dir).unwrap();
    }
}
