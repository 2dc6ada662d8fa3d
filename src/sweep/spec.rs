//! The sweep file format (TOML):
//!
//! ```toml
//! base = "../single-t4.toml"      # a run config, relative to this file
//! [sweep]
//! name = "table2"                 # the sweep folder is out_dir/name
//! out_dir = "runs/sweeps"
//! backend = "local"               # local | ray | k8s
//! parallel = 2                    # runs at once
//! retries = 1                     # extra attempts of a failed run
//! metrics_base_port = 9187        # run i serves metrics on 127.0.0.1:9187+i; 0: none
//! ray_address = "http://127.0.0.1:8265"
//! [sweep.k8s]
//! image = "ghcr.io/example/ard-pipeline:latest"
//! namespace = "default"
//! [common]                        # applied to every run first
//! "data.train_limit" = 256
//! [grid]                          # cartesian product, in key order ...
//! "attack.steps" = [1, 2, 10]
//! [[rows]]                        # ... or explicit rows
//! "train.epochs" = 10
//! "attack.steps" = 10
//! ```
//!
//! Keys of the grid and the rows are dotted paths into the run config; nested
//! tables (`attack = { steps = 2 }`, or unquoted `attack.steps = 2`) mean the same.
//! A quoted dotted key whose value is a table (`"optim.schedule" = { kind =
//! "constant" }`) replaces that section whole instead of merging into it.

use crate::error::{Error, Result};
use schemars::JsonSchema;
use serde::{Deserialize, Serialize};
use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

/// Which engine executes the runs.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, Default, JsonSchema)]
#[serde(rename_all = "snake_case")]
pub enum Backend {
    /// Child processes of this binary on this machine.
    #[default]
    Local,
    /// Jobs on a Ray cluster, through the Ray Jobs REST API.
    Ray,
    /// A Kubernetes Indexed Job (rendered to YAML, not applied).
    K8s,
}

impl std::str::FromStr for Backend {
    type Err = String;
    fn from_str(s: &str) -> std::result::Result<Self, String> {
        match s {
            "local" => Ok(Backend::Local),
            "ray" => Ok(Backend::Ray),
            "k8s" | "kubernetes" => Ok(Backend::K8s),
            other => Err(format!("unknown backend {other:?} (local, ray, k8s)")),
        }
    }
}

/// `[sweep.k8s]`: what the rendered Indexed Job needs.
#[derive(Debug, Clone, Serialize, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields, default)]
pub struct K8sSettings {
    /// Container image of every pod: the binary on PATH, the repository
    /// (configs, weights, data) in its working directory.
    pub image: String,
    /// Namespace of the Job and its ConfigMap.
    pub namespace: String,
    /// PersistentVolumeClaim mounted at `results_mount` (run folders go there).
    pub results_claim: String,
    /// Where the pods mount `results_claim`.
    pub results_mount: String,
    /// GPUs per pod (`nvidia.com/gpu`); 0: none.
    pub gpus: u32,
}

impl Default for K8sSettings {
    fn default() -> Self {
        Self {
            image: "ard-pipeline:latest".into(),
            namespace: "default".into(),
            results_claim: "ard-results".into(),
            results_mount: "/results".into(),
            gpus: 1,
        }
    }
}

/// `[sweep]`: name, place and how the runs are executed.
#[derive(Debug, Clone, Serialize, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields, default)]
pub struct SweepSettings {
    /// Sweep name: the sweep folder is `out_dir/name`.
    pub name: String,
    /// Parent of the sweep folder (relative to the working directory, like `run.out_dir`).
    pub out_dir: PathBuf,
    /// Where the runs execute (`--backend` overrides it).
    pub backend: Backend,
    /// Runs executing at once.
    pub parallel: usize,
    /// Extra attempts of a run that failed.
    pub retries: usize,
    /// libtorch threads per run (default: the cores divided by `parallel` for
    /// local and Ray runs; all cores of the pod for k8s).
    pub threads: Option<usize>,
    /// Run i serves /metrics on 127.0.0.1:(base + i); 0 disables the endpoint.
    pub metrics_base_port: u16,
    /// Base URL of the Ray dashboard (Jobs API).
    pub ray_address: String,
    /// Seconds between status polls of running jobs.
    pub poll_s: f64,
    pub k8s: K8sSettings,
}

impl Default for SweepSettings {
    fn default() -> Self {
        Self {
            name: "sweep".into(),
            out_dir: "runs/sweeps".into(),
            backend: Backend::Local,
            parallel: 1,
            retries: 0,
            threads: None,
            metrics_base_port: 9187,
            ray_address: "http://127.0.0.1:8265".into(),
            poll_s: 0.5,
            k8s: K8sSettings::default(),
        }
    }
}

/// A whole sweep file.
#[derive(Debug, Clone, Serialize, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct SweepFile {
    /// The run config every run starts from (relative to the sweep file).
    pub base: PathBuf,
    pub sweep: SweepSettings,
    /// Key path -> value applied to every run, before the run's own point.
    #[serde(default)]
    #[schemars(with = "Option<serde_json::Map<String, serde_json::Value>>")]
    pub common: Option<toml::Table>,
    /// Key path -> values: the cartesian product (first key varies slowest).
    #[serde(default)]
    #[schemars(with = "Option<serde_json::Map<String, serde_json::Value>>")]
    pub grid: Option<toml::Table>,
    /// Explicit rows: key path -> value each.
    #[serde(default)]
    #[schemars(with = "Option<Vec<serde_json::Map<String, serde_json::Value>>>")]
    pub rows: Option<Vec<toml::Table>>,
    /// Where the file was read from (set by `read`).
    #[serde(skip)]
    pub path: PathBuf,
}

impl SweepFile {
    /// Reads and checks a sweep file (structure only; runs are checked by `expand`).
    pub fn read(path: &Path) -> Result<SweepFile> {
        let err = |message: String| Error::config(path.display().to_string(), message);
        let text = std::fs::read_to_string(path).map_err(|e| err(e.to_string()))?;
        let mut file: SweepFile = serde_path_to_error::deserialize(toml::Deserializer::new(&text))
            .map_err(|e| {
                let key = e.path().to_string();
                let msg = e.into_inner().message().trim_end().to_string();
                if key == "." || key.is_empty() {
                    err(msg)
                } else {
                    err(format!("key `{key}`: {msg}"))
                }
            })?;
        file.path = path.to_path_buf();
        match (&file.grid, &file.rows) {
            (Some(_), Some(_)) => {
                return Err(err("give either [grid] or [[rows]], not both".into()))
            }
            (None, None) => return Err(err("no [grid] and no [[rows]]: nothing to sweep".into())),
            (Some(grid), None) if grid.is_empty() => {
                return Err(err(
                    "[grid] is empty: nothing to sweep (give it keys with lists of values, \
                     e.g. `optim.lr = [0.05, 0.1]`)"
                        .into(),
                ))
            }
            (None, Some(rows)) if rows.is_empty() => {
                return Err(err("`rows` is empty: nothing to sweep".into()))
            }
            _ => {}
        }
        if file.sweep.parallel == 0 {
            return Err(err("key `sweep.parallel`: must be at least 1".into()));
        }
        if file.sweep.name.is_empty()
            || !file
                .sweep
                .name
                .chars()
                .all(|c| c.is_ascii_alphanumeric() || c == '-' || c == '_')
        {
            return Err(err(format!(
                "key `sweep.name`: {:?} must be non-empty letters, digits, '-' or '_'",
                file.sweep.name
            )));
        }
        Ok(file)
    }

    /// The base run config's path.
    pub fn base_path(&self) -> PathBuf {
        self.path
            .parent()
            .unwrap_or(Path::new("."))
            .join(&self.base)
    }

    /// `out_dir/name`.
    pub fn dir(&self) -> PathBuf {
        self.sweep.out_dir.join(&self.sweep.name)
    }

    /// `[common]` as key path -> value.
    pub fn common(&self) -> BTreeMap<String, toml::Value> {
        self.common.as_ref().map(flat).unwrap_or_default()
    }

    /// The points of the sweep: key path -> value, in order.
    pub fn points(&self) -> Result<Vec<BTreeMap<String, toml::Value>>> {
        let err = |message: String| Error::config(self.path.display().to_string(), message);
        if let Some(rows) = &self.rows {
            return Ok(rows.iter().map(flat).collect());
        }
        let grid = self.grid.as_ref().expect("checked by read");
        let mut axes: Vec<(String, Vec<toml::Value>)> = Vec::new();
        // Keep the file's order of keys (toml::Table keeps insertion order
        // only with preserve_order; sorted order is deterministic either way).
        for (key, values) in flat(grid) {
            match values {
                toml::Value::Array(vs) if !vs.is_empty() => axes.push((key, vs)),
                toml::Value::Array(_) => {
                    return Err(err(format!("key `grid.{key}`: an empty list of values")))
                }
                other => {
                    return Err(err(format!(
                        "key `grid.{key}`: expected a list of values, found {other}"
                    )))
                }
            }
        }
        let mut points = vec![BTreeMap::new()];
        for (key, values) in &axes {
            let mut next = Vec::with_capacity(points.len() * values.len());
            for p in &points {
                for v in values {
                    let mut q: BTreeMap<String, toml::Value> = p.clone();
                    q.insert(key.clone(), v.clone());
                    next.push(q);
                }
            }
            points = next;
        }
        Ok(points)
    }
}

/// `table` with dotted keys (see [`flatten`]).
fn flat(table: &toml::Table) -> BTreeMap<String, toml::Value> {
    let mut out = BTreeMap::new();
    flatten("", table, &mut out);
    out
}

/// Nested tables become dotted keys; other values (lists included) are leaves.
fn flatten(prefix: &str, table: &toml::Table, out: &mut BTreeMap<String, toml::Value>) {
    for (k, v) in table {
        let key = if prefix.is_empty() {
            k.clone()
        } else {
            format!("{prefix}.{k}")
        };
        match v {
            // A quoted dotted key ("optim.schedule" = { ... }) sets its value
            // whole; a nested table sets its keys one by one.
            toml::Value::Table(t) if !k.contains('.') => flatten(&key, t, out),
            other => {
                out.insert(key, other.clone());
            }
        }
    }
}
