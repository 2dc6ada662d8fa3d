//! Expansion: the sweep's points applied to the base config, one validated
//! run config each, before anything starts. A bad row fails the whole sweep
//! naming the row and the key.

use super::spec::SweepFile;
use crate::config::{self, Config};
use crate::error::{Error, Result};
use std::collections::BTreeMap;
use std::path::PathBuf;

/// Where the runs of a sweep go and how they share a machine.
#[derive(Debug, Clone)]
pub struct RunPlacement {
    /// `run.out_dir` of every run.
    pub out_dir: PathBuf,
    /// `run.threads` of every run (None: leave the base's).
    pub threads: Option<usize>,
    /// `metrics.listen` of run i: Some(base) gives 127.0.0.1:(base+i), None "".
    pub metrics_base_port: Option<u16>,
    /// Overrides `metrics.listen` for every run (k8s: each pod has its own address).
    pub metrics_listen: Option<String>,
}

/// One run of a sweep.
#[derive(Debug, Clone)]
pub struct PlannedRun {
    pub index: usize,
    /// `{sweep}-{index:02}-{description}`.
    pub name: String,
    pub description: String,
    /// The sweep point: key path -> value.
    pub overrides: BTreeMap<String, toml::Value>,
    /// The resolved, validated config.
    pub config: Config,
    /// The resolved config as TOML (self-contained: no `base`).
    pub toml: String,
}

/// Expands a sweep file into validated runs.
pub fn expand(file: &SweepFile, placement: &RunPlacement) -> Result<Vec<PlannedRun>> {
    let base_path = file.base_path();
    let err = |message: String| Error::config(file.path.display().to_string(), message);
    let base = config::load(&base_path).map_err(|e| {
        err(format!(
            "its base {} does not load: {e}",
            base_path.display()
        ))
    })?;
    let Ok(toml::Value::Table(base_table)) = toml::Value::try_from(&base) else {
        return Err(Error::config(
            base_path.display().to_string(),
            "cannot be rendered as TOML",
        ));
    };
    let points = file.points()?;
    let rows = Rows {
        base: &base_table,
        common: &file.common(),
        placement,
    };
    let mut runs = Vec::with_capacity(points.len());
    let mut errors = Vec::new();
    for (index, point) in points.into_iter().enumerate() {
        let description = describe(&point);
        let name = if description.is_empty() {
            format!("{}-{index:02}", file.sweep.name)
        } else {
            format!("{}-{index:02}-{description}", file.sweep.name)
        };
        let origin = format!("{} row {index} ({name})", file.path.display());
        match rows.build_run(&point, &name, index, &origin) {
            Ok((config, toml)) => runs.push(PlannedRun {
                index,
                name,
                description,
                overrides: point,
                config,
                toml,
            }),
            Err(e) => errors.push(e.to_string()),
        }
    }
    if !errors.is_empty() {
        return Err(err(format!(
            "{} of {} {} not validate:\n  {}",
            errors.len(),
            crate::report::plural::count((errors.len() + runs.len()) as u64, "row"),
            if errors.len() == 1 { "does" } else { "do" },
            errors.join("\n  ")
        )));
    }
    let mut names = std::collections::BTreeSet::new();
    for r in &runs {
        if !names.insert(r.name.clone()) {
            return Err(err(format!("two rows have the same run name {}", r.name)));
        }
    }
    Ok(runs)
}

/// What every row of a sweep starts from: the base config, the keys common to
/// all rows, and where the runs go.
struct Rows<'a> {
    base: &'a toml::Table,
    common: &'a BTreeMap<String, toml::Value>,
    placement: &'a RunPlacement,
}

impl Rows<'_> {
    /// Row `index` (`point`) as run `name`: its config and that config as TOML.
    fn build_run(
        &self,
        point: &BTreeMap<String, toml::Value>,
        name: &str,
        index: usize,
        origin: &str,
    ) -> Result<(Config, String)> {
        let placement = self.placement;
        let err = |message: String| Error::config(origin, message);
        let mut table = self.base.clone();
        for (key, value) in self.common.iter().chain(point.iter()) {
            if key.starts_with("run.name") || key.starts_with("run.out_dir") || key == "base" {
                return Err(err(format!("key `{key}`: set by the sweep, not by a row")));
            }
            set_path(&mut table, key, value.clone())
                .map_err(|m| err(format!("key `{key}`: {m}")))?;
        }
        let mut set = |key: &str, value| set_path(&mut table, key, value).map_err(err);
        let s = |v: &str| toml::Value::String(v.to_string());
        set("run.name", s(name))?;
        set("run.out_dir", s(&placement.out_dir.display().to_string()))?;
        if let Some(t) = placement.threads {
            set("run.threads", toml::Value::Integer(t as i64))?;
        }
        let listen = match (&placement.metrics_listen, placement.metrics_base_port) {
            (Some(l), _) => l.clone(),
            (None, Some(port)) => {
                let port = port as usize + index;
                if port > u16::MAX as usize {
                    return Err(err(format!("metrics port {port} is out of range")));
                }
                format!("127.0.0.1:{port}")
            }
            (None, None) => String::new(),
        };
        set("metrics.listen", s(&listen))?;
        let text = toml::to_string(&table).map_err(|e| err(format!("cannot render: {e}")))?;
        let cfg = config::load_str(&text, origin, true)?;
        // Save exactly what the run will see, resolved.
        Ok((cfg.clone(), cfg.to_toml()))
    }
}

/// Sets `a.b.c = value`, creating tables on the way.
pub fn set_path(
    table: &mut toml::Table,
    path: &str,
    value: toml::Value,
) -> std::result::Result<(), String> {
    let parts: Vec<&str> = path.split('.').collect();
    if parts.iter().any(|p| p.is_empty()) {
        return Err(format!("`{path}` is not a key path"));
    }
    let mut t = table;
    for (i, part) in parts[..parts.len() - 1].iter().enumerate() {
        let entry = t
            .entry(part.to_string())
            .or_insert_with(|| toml::Value::Table(toml::Table::new()));
        t = match entry {
            toml::Value::Table(inner) => inner,
            other => {
                return Err(format!(
                    "`{}` is a value ({other}), not a section",
                    parts[..=i].join(".")
                ))
            }
        };
    }
    t.insert(parts[parts.len() - 1].to_string(), value);
    Ok(())
}

/// A short, file-name-safe description of a point: `e10-as2-ss4_255-lr0.05-resnet18`.
pub fn describe(point: &BTreeMap<String, toml::Value>) -> String {
    // A stable, readable order: the paper's columns first.
    const ORDER: [(&str, &str); 6] = [
        ("train.epochs", "e"),
        ("attack.steps", "as"),
        ("attack.step_size", "ss"),
        ("optim.lr", "lr"),
        ("student.arch", ""),
        ("attack.kind", ""),
    ];
    let mut parts = Vec::new();
    for (key, short) in ORDER {
        if let Some(v) = point.get(key) {
            parts.push(format!("{short}{}", value_text(v)));
        }
    }
    for (key, v) in point {
        if ORDER.iter().any(|(k, _)| k == key) {
            continue;
        }
        let last = key.rsplit('.').next().unwrap_or(key);
        parts.push(format!("{last}{}", value_text(v)));
    }
    sanitize(&parts.join("-"))
}

fn value_text(v: &toml::Value) -> String {
    match v {
        // A path names its file; a fraction like "8/255" stays.
        toml::Value::String(s) if s.contains('/') && crate::config::parse_real(s).is_err() => {
            std::path::Path::new(s)
                .file_stem()
                .map(|f| f.to_string_lossy().into_owned())
                .unwrap_or_else(|| s.clone())
        }
        toml::Value::String(s) => s.clone(),
        toml::Value::Float(f) => format!("{f}"),
        other => other.to_string(),
    }
}

fn sanitize(s: &str) -> String {
    s.replace(
        |c: char| !(c.is_ascii_alphanumeric() || c == '.' || c == '-' || c == '_'),
        "_",
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn set_path_creates_and_refuses() {
        let mut t = toml::Table::new();
        set_path(&mut t, "a.b", toml::Value::Integer(1)).unwrap();
        assert_eq!(t["a"]["b"].as_integer(), Some(1));
        assert!(set_path(&mut t, "a.b.c", toml::Value::Integer(1)).is_err());
        assert!(set_path(&mut t, "a..c", toml::Value::Integer(1)).is_err());
    }

    #[test]
    fn descriptions_are_short_and_safe() {
        let mut p = BTreeMap::new();
        p.insert("attack.steps".to_string(), toml::Value::Integer(2));
        p.insert(
            "attack.step_size".to_string(),
            toml::Value::String("4/255".into()),
        );
        p.insert("optim.lr".to_string(), toml::Value::Float(0.05));
        p.insert(
            "student.arch".to_string(),
            toml::Value::String("resnet18".into()),
        );
        assert_eq!(describe(&p), "as2-ss4_255-lr0.05-resnet18");
    }
}
