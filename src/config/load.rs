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
            message: if name.is_dir() {
                "is a folder, not a config file".to_string()
            } else {
                format!(
                    "no such file (looked at {})",
                    candidates
                        .iter()
                        .map(|p| p.display().to_string())
                        .collect::<Vec<_>>()
                        .join(", ")
                )
            },
        })
}

/// How deep `base = "..."` chains may go.
const MAX_BASE_DEPTH: usize = 8;

/// Loads a config file (and the files it extends through `base`) with
/// environment overrides, then validates it.
pub fn load(path: &Path) -> Result<Config> {
    let merged = resolve_bases(path, 0)?;
    let text = toml::to_string(&merged).map_err(|e| Error::Config {
        file: path.display().to_string(),
        message: format!("cannot merge with its base: {e}"),
    })?;
    load_str(&text, &path.display().to_string(), true)
}

/// Reads `path`, checks it on its own (so errors name this file and line),
/// and lays it over the file its `base` key names.
fn resolve_bases(path: &Path, depth: usize) -> Result<toml::Table> {
    let origin = path.display().to_string();
    let err = |message: String| Error::Config {
        file: origin.clone(),
        message,
    };
    if depth > MAX_BASE_DEPTH {
        return Err(err(format!(
            "`base` chain deeper than {MAX_BASE_DEPTH} (a cycle?)"
        )));
    }
    let text = std::fs::read_to_string(path).map_err(|e| err(e.to_string()))?;
    check_file(&text, &origin)?;
    let mut table: toml::Table =
        toml::from_str(&text).map_err(|e| err(format!("not valid TOML: {e}")))?;
    match table.remove("base") {
        None => Ok(table),
        Some(toml::Value::String(base)) => {
            let base_path = path.parent().unwrap_or(Path::new(".")).join(&base);
            if !base_path.is_file() {
                return Err(err(format!(
                    "key `base`: no such file {}",
                    base_path.display()
                )));
            }
            let mut merged = resolve_bases(&base_path, depth + 1)?;
            overlay(&mut merged, table);
            Ok(merged)
        }
        Some(other) => Err(err(format!(
            "key `base`: expected a file name, found {other}"
        ))),
    }
}

/// Lays `top` over `base`, table by table.
fn overlay(base: &mut toml::Table, top: toml::Table) {
    for (key, value) in top {
        match (base.get_mut(&key), value) {
            (Some(toml::Value::Table(b)), toml::Value::Table(t)) => overlay(b, t),
            (_, value) => {
                base.insert(key, value);
            }
        }
    }
}

/// Deserialises one file's text on its own; errors name the full key and line.
fn check_file(text: &str, origin: &str) -> Result<()> {
    let err = |message: String| Error::Config {
        file: origin.to_string(),
        message,
    };
    serde_path_to_error::deserialize::<_, Config>(toml::Deserializer::new(text))
        .map(|_| ())
        .map_err(|e| {
            let key = e.path().to_string();
            let inner = e.into_inner();
            let message = inner.message().trim_end().to_string();
            let at = inner
                .span()
                .map(|s| format!(" (line {})", line_of(text, s.start)))
                .unwrap_or_default();
            if key == "." || key.is_empty() {
                err(format!("{message}{at}"))
            } else {
                err(format!("key `{key}`: {message}{at}"))
            }
        })
}

/// Parses config text (`origin` names it in errors); `with_env` applies
/// `ARD__SECTION__KEY` overrides. Validates the result.
pub fn load_str(text: &str, origin: &str, with_env: bool) -> Result<Config> {
    let err = |message: String| Error::Config {
        file: origin.to_string(),
        message,
    };
    // The text alone first: its errors name the full key and the line.
    check_file(text, origin)?;
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
    let mut config: Config = layered.try_deserialize().map_err(|e| err(describe(e)))?;
    if config.base.is_some() {
        return Err(err(
            "key `base`: only files can extend a base (use ard_pipeline::config::load)".into(),
        ));
    }
    config.base = None;
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
