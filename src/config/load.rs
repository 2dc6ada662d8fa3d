//! Reading a config file with the `config` crate, plus environment overrides.

use super::types::Config;
use crate::error::{Error, Result};
use std::path::{Path, PathBuf};

/// Environment overrides look like `ARD__ATTACK__STEPS=2`.
pub const ENV_PREFIX: &str = "ARD";

/// Resolves `--config NAME`: NAME itself when it exists, else `configs/NAME`
/// (also with `.toml` appended), so `--config single-t4.toml` works from the
/// repository root.
pub fn find_config(name: &Path) -> Result<PathBuf> {
    let mut candidates = vec![name.to_path_buf()];
    if name.is_relative() {
        candidates.push(Path::new("configs").join(name));
        if name.extension().is_none() {
            candidates.push(Path::new("configs").join(name).with_extension("toml"));
        }
    }
    candidates
        .iter()
        .find(|p| p.is_file())
        .cloned()
        .ok_or_else(|| Error::Config {
            file: name.display().to_string(),
            message: format!(
                "no such file (looked at {})",
                candidates
                    .iter()
                    .map(|p| p.display().to_string())
                    .collect::<Vec<_>>()
                    .join(", ")
            ),
        })
}

/// Loads a config file with environment overrides, then validates it.
pub fn load(path: &Path) -> Result<Config> {
    let text = std::fs::read_to_string(path).map_err(|e| Error::Config {
        file: path.display().to_string(),
        message: e.to_string(),
    })?;
    load_str(&text, &path.display().to_string(), true)
}

/// Parses config text (`origin` names it in errors); `with_env` applies
/// `ARD__SECTION__KEY` overrides. Validates the result.
pub fn load_str(text: &str, origin: &str, with_env: bool) -> Result<Config> {
    let err = |message: String| Error::Config {
        file: origin.to_string(),
        message,
    };
    // The file alone first, through serde_path_to_error: its errors name the
    // full key (`attack.epz`) and toml's carry line and column.
    let file_only = toml::Deserializer::new(text);
    serde_path_to_error::deserialize::<_, Config>(file_only).map_err(|e| {
        let key = e.path().to_string();
        let inner = e.into_inner();
        let message = inner.message().trim_end().to_string();
        let at = inner
            .span()
            .map(|s| line_of(text, s.start))
            .map(|l| format!(" (line {l})"))
            .unwrap_or_default();
        if key == "." || key.is_empty() {
            err(format!("{message}{at}"))
        } else {
            err(format!("key `{key}`: {message}{at}"))
        }
    })?;
    let mut builder = config::Config::builder()
        .add_source(config::File::from_str(text, config::FileFormat::Toml));
    if with_env {
        builder = builder.add_source(
            config::Environment::with_prefix(ENV_PREFIX)
                .prefix_separator("__")
                .separator("__")
                .try_parsing(true),
        );
    }
    let layered = builder.build().map_err(|e| err(e.to_string()))?;
    let config: Config = layered.try_deserialize().map_err(|e| err(describe(e)))?;
    config.validate().map_err(|errors| {
        err(errors
            .iter()
            .map(|e| e.to_string())
            .collect::<Vec<_>>()
            .join("; "))
    })?;
    Ok(config)
}

fn line_of(text: &str, offset: usize) -> usize {
    text[..offset.min(text.len())].matches('\n').count() + 1
}

/// Makes the `config` crate's errors say which key when they do not already.
fn describe(error: config::ConfigError) -> String {
    format!("{error} (after applying {ENV_PREFIX}__SECTION__KEY environment overrides)")
}
