//! Reading a config file (layered with the `config` crate), plus environment
//! overrides read with the same types as the file.

use super::types::Config;
use crate::error::{Error, Result};
use serde::Deserialize;
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
        .ok_or_else(|| {
            let message = if name.is_dir() {
                "is a folder, not a config file".to_string()
            } else if name.exists() {
                "is not a regular file (a named pipe, socket or device?); give a config file"
                    .to_string()
            } else {
                format!(
                    "no such file (looked at {})",
                    candidates
                        .iter()
                        .map(|p| p.display().to_string())
                        .collect::<Vec<_>>()
                        .join(", ")
                )
            };
            Error::config(name.display().to_string(), message)
        })
}

/// How deep `base = "..."` chains may go.
const MAX_BASE_DEPTH: usize = 8;

/// Loads a config file (and the files it extends through `base`) with
/// environment overrides, then validates it.
pub fn load(path: &Path) -> Result<Config> {
    let merged = resolve_bases(path, 0)?;
    let text = toml::to_string(&merged).map_err(|e| {
        Error::config(
            path.display().to_string(),
            format!("cannot merge with its base: {e}"),
        )
    })?;
    load_str(&text, &path.display().to_string(), true)
}

/// Reads `path`, checks it on its own (so errors name this file and line),
/// and lays it over the file its `base` key names.
fn resolve_bases(path: &Path, depth: usize) -> Result<toml::Table> {
    let origin = path.display().to_string();
    let err = |message: String| Error::config(&origin, message);
    if depth > MAX_BASE_DEPTH {
        return Err(err(format!(
            "`base` chain deeper than {MAX_BASE_DEPTH} (a cycle?)"
        )));
    }
    let text = std::fs::read_to_string(path).map_err(|e| err(e.to_string()))?;
    if is_sweep_file(&text) {
        return Err(err(format!(
            "is a sweep file (it has a [sweep] table), not a run config; check it with \
             `ard-pipeline sweep --dry-run --config {origin}`"
        )));
    }
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

/// Whether `text` is a sweep file: TOML with a top-level `[sweep]` table.
fn is_sweep_file(text: &str) -> bool {
    toml::from_str::<toml::Table>(text)
        .is_ok_and(|t| t.get("sweep").is_some_and(toml::Value::is_table))
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
            let key = match key.as_str() {
                "." | "" => inner.span().and_then(|s| key_at(text, s.start)),
                _ => Some(key),
            };
            let key = key.map(|k| format!("key `{k}`: ")).unwrap_or_default();
            Error::config(origin, format!("{key}{message}{at}"))
        })
}

/// Parses config text (`origin` names it in errors); `with_env` lays the
/// `ARD__SECTION__KEY` overrides over it, read with the same types as the
/// file (see [`env_overrides`]). Validates the result.
pub fn load_str(text: &str, origin: &str, with_env: bool) -> Result<Config> {
    let err = |message: String| Error::config(origin, message);
    // The text alone first: its errors name the full key and the line.
    check_file(text, origin)?;
    let mut builder = config::Config::builder()
        .add_source(config::File::from_str(text, config::FileFormat::Toml));
    if with_env {
        let overrides = env_overrides(text, origin)?;
        if !overrides.is_empty() {
            let layer = toml::to_string(&overrides).map_err(|e| err(e.to_string()))?;
            builder = builder.add_source(config::File::from_str(&layer, config::FileFormat::Toml));
        }
    }
    let layered = builder.build().map_err(|e| err(e.to_string()))?;
    let config: Config = layered.try_deserialize().map_err(|e| err(e.to_string()))?;
    if config.base.is_some() {
        return Err(err(
            "key `base`: only files can extend a base (use ard_pipeline::config::load)".into(),
        ));
    }
    config.validate().map_err(|errors| {
        let message = errors
            .iter()
            .map(|e| e.to_string())
            .collect::<Vec<_>>()
            .join("; ");
        // A value set by an environment variable is blamed on that variable.
        let keys: Vec<&str> = errors.iter().map(|e| e.key).collect();
        let vars = if with_env { env_vars() } else { Vec::new() };
        let culprits: Vec<String> = vars
            .into_iter()
            .filter(|v| keys.contains(&v.path.join(".").as_str()))
            .map(|v| format!("{}={:?}", v.var, v.raw))
            .collect();
        if culprits.is_empty() {
            err(message)
        } else {
            let file = format!("{origin} with environment {}", culprits.join(", "));
            Error::config(file, message)
        }
    })?;
    Ok(config)
}

/// The built-in defaults with the environment overrides laid over them, not
/// validated: for commands that need only a few keys (`eval` without `--config`).
pub fn defaults_with_env() -> Result<Config> {
    let text = Config::default().to_toml();
    let origin = "(built-in defaults)";
    let overrides = env_overrides(&text, origin)?;
    let mut table: toml::Table =
        toml::from_str(&text).map_err(|e| Error::config(origin, e.to_string()))?;
    overlay(&mut table, overrides);
    Config::deserialize(toml::Value::Table(table)).map_err(|e| Error::config(origin, e.to_string()))
}

/// One `ARD__SECTION__KEY=value` variable: its key path and its value, read
/// as a TOML value (a number, a boolean, a list) or else taken as a string.
struct EnvOverride {
    var: String,
    raw: String,
    path: Vec<String>,
    value: toml::Value,
}

fn env_vars() -> Vec<EnvOverride> {
    let prefix = format!("{ENV_PREFIX}__");
    let mut vars: Vec<EnvOverride> = std::env::vars_os()
        .filter_map(|(k, v)| Some((k.into_string().ok()?, v.into_string().ok()?)))
        .filter_map(|(var, raw)| {
            let rest = var.strip_prefix(&prefix)?.to_ascii_lowercase();
            let path: Vec<String> = rest.split("__").map(str::to_string).collect();
            if path.iter().any(String::is_empty) {
                return None;
            }
            let value = toml::from_str::<toml::Table>(&format!("v = {raw}"))
                .ok()
                .and_then(|mut t| t.remove("v"))
                .unwrap_or_else(|| toml::Value::String(raw.clone()));
            Some(EnvOverride {
                var,
                raw,
                path,
                value,
            })
        })
        .collect();
    vars.sort_by(|a, b| a.var.cmp(&b.var));
    vars
}

fn set_path(table: &mut toml::Table, path: &[String], value: toml::Value) {
    let (last, parents) = path.split_last().expect("paths are never empty");
    let mut t = table;
    for p in parents {
        let entry = t
            .entry(p.clone())
            .or_insert_with(|| toml::Value::Table(Default::default()));
        if !entry.is_table() {
            *entry = toml::Value::Table(Default::default());
        }
        t = entry.as_table_mut().expect("made a table above");
    }
    t.insert(last.clone(), value);
}

/// The environment overrides as a TOML table, checked with the config's own
/// types over `text`: `ARD__TRAIN__EPOCHS=1.5` is refused as `epochs = 1.5`
/// in the file would be (never rounded), and an error names the variable.
/// A value that reads as a number or boolean where the key wants a string
/// (`ARD__RUN__NAME=2024`) is taken as the string.
fn env_overrides(text: &str, origin: &str) -> Result<toml::Table> {
    let mut vars = env_vars();
    if vars.is_empty() {
        return Ok(toml::Table::new());
    }
    let base: toml::Table =
        toml::from_str(text).map_err(|e| Error::config(origin, e.to_string()))?;
    // Each retry turns one more override into a string, so this loop ends.
    loop {
        let mut overrides = toml::Table::new();
        for v in &vars {
            set_path(&mut overrides, &v.path, v.value.clone());
        }
        let mut merged = base.clone();
        overlay(&mut merged, overrides.clone());
        let checked = serde_path_to_error::deserialize::<_, Config>(toml::Value::Table(merged));
        let Err(e) = checked else {
            return Ok(overrides);
        };
        let key = e.path().to_string();
        let culprit = vars.iter_mut().find(|v| {
            v.path.join(".") == key || key.starts_with(&format!("{}.", v.path.join(".")))
        });
        let file = match culprit {
            Some(v) if !v.value.is_str() && wants_string(e.inner().message()) => {
                v.value = toml::Value::String(v.raw.clone());
                continue;
            }
            Some(v) => format!("{origin} with environment {}={:?}", v.var, v.raw),
            None => {
                let names: Vec<&str> = vars.iter().map(|v| v.var.as_str()).collect();
                format!("{origin} with environment {}", names.join(", "))
            }
        };
        let message = format!("key `{key}`: {}", e.into_inner().message().trim_end());
        return Err(Error::config(file, message));
    }
}

/// Whether a serde "invalid type" message says a string was expected.
fn wants_string(message: &str) -> bool {
    message
        .split_once("expected")
        .is_some_and(|(_, wanted)| wanted.contains("string"))
}

/// The dotted key whose value starts on the line of `offset` (`[section]`
/// headers above it included), for parse errors that carry only a position.
fn key_at(text: &str, offset: usize) -> Option<String> {
    let before = &text[..offset.min(text.len())];
    let line_start = before.rfind('\n').map_or(0, |i| i + 1);
    let line = text[line_start..].lines().next()?;
    let (key, _) = line.split_once('=')?;
    let key = key.trim().trim_matches('"');
    if key.is_empty() || key.starts_with('[') {
        return None;
    }
    let section = before[..line_start]
        .lines()
        .rev()
        .map(str::trim)
        .find(|l| l.starts_with('[') && !l.starts_with("[["))
        .map(|l| l.trim_matches(['[', ']']).trim().to_string());
    Some(match section {
        Some(s) if !s.is_empty() => format!("{s}.{key}"),
        _ => key.to_string(),
    })
}

fn line_of(text: &str, offset: usize) -> usize {
    text[..offset.min(text.len())].matches('\n').count() + 1
}
