//! The observability files under `deploy/`:
//!
//! - promtool checks both scrape configs (with their rule files), the rule
//!   files, and runs the rule unit tests of `deploy/prometheus/tests/`;
//! - the Grafana provisioning and dashboards are consistent: one datasource
//!   uid, the dashboards folder that compose mounts, canonical metric names
//!   (`src/metrics/names.rs`) and recorded rule names only;
//! - a real Prometheus (Debian `prometheus`, on 127.0.0.1), running the shipped
//!   sweep config and rules, scrapes two real short runs (pgd1 and pgd2, each
//!   with its own port and `run` label), and every query of every panel of
//!   every dashboard, template variables substituted as Grafana would, returns
//!   data through the HTTP API while the runs go on; the sweep dashboard's
//!   queries return data for both runs.

mod common;

use common::services::{self, Killed, Prometheus};
use serde_json::Value;
use std::collections::{BTreeMap, BTreeSet};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

fn deploy() -> PathBuf {
    common::repo().join("deploy")
}

/// The files of `dir` whose names end in `suffix`, sorted.
fn files(dir: &Path, suffix: &str) -> Vec<PathBuf> {
    let mut found: Vec<PathBuf> = std::fs::read_dir(dir)
        .unwrap_or_else(|e| panic!("{}: {e}", dir.display()))
        .map(|entry| entry.unwrap().path())
        .filter(|p| p.is_file() && p.to_string_lossy().ends_with(suffix))
        .collect();
    found.sort();
    assert!(!found.is_empty(), "no *{suffix} in {}", dir.display());
    found
}

fn read(path: &Path) -> String {
    std::fs::read_to_string(path).unwrap_or_else(|e| panic!("{}: {e}", path.display()))
}

/// Runs promtool in `cwd`; its output, or a panic with it when it fails.
fn promtool(promtool: &Path, args: &[&str], cwd: &Path) -> String {
    let out = Command::new(promtool)
        .args(args)
        .current_dir(cwd)
        .output()
        .expect("promtool runs");
    let text = format!(
        "{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(
        out.status.success(),
        "promtool {} failed:\n{text}",
        args.join(" ")
    );
    text
}

fn dashboards() -> Vec<(String, Value)> {
    files(&deploy().join("grafana/dashboards"), ".json")
        .into_iter()
        .map(|p| {
            let name = p.file_name().unwrap().to_string_lossy().into_owned();
            let v: Value = serde_json::from_str(&read(&p))
                .unwrap_or_else(|e| panic!("{name}: invalid JSON: {e}"));
            (name, v)
        })
        .collect()
}

/// Every panel of a dashboard, those nested in collapsed rows included.
fn panels(dashboard: &Value) -> Vec<&Value> {
    let mut out = Vec::new();
    for panel in dashboard["panels"].as_array().into_iter().flatten() {
        out.push(panel);
        out.extend(panel["panels"].as_array().into_iter().flatten());
    }
    out
}

/// Panels that query (not rows), with their targets.
fn query_panels(dashboard: &Value) -> Vec<&Value> {
    panels(dashboard)
        .into_iter()
        .filter(|p| p["type"] != "row")
        .collect()
}

fn variables(dashboard: &Value) -> Vec<&Value> {
    dashboard["templating"]["list"]
        .as_array()
        .into_iter()
        .flatten()
        .collect()
}

/// The query text of a template variable (string or object form).
fn variable_query(var: &Value) -> String {
    var["query"]["query"]
        .as_str()
        .or(var["query"].as_str())
        .unwrap_or_default()
        .to_string()
}

/// Tokens of `[A-Za-z0-9_:]` that start with `prefix` (at a token start).
fn tokens(text: &str, prefix: &str) -> BTreeSet<String> {
    let is_ident = |c: char| c.is_ascii_alphanumeric() || c == '_' || c == ':';
    let mut out = BTreeSet::new();
    let mut rest = text;
    while let Some(i) = rest.find(prefix) {
        let before_ok = rest[..i].chars().next_back().is_none_or(|c| !is_ident(c));
        let tail = &rest[i..];
        let len = tail.find(|c: char| !is_ident(c)).unwrap_or(tail.len());
        if before_ok {
            out.insert(tail[..len].to_string());
        }
        rest = &tail[len.max(1)..];
    }
    out
}

/// Names recorded by the rule files.
fn recorded() -> BTreeSet<String> {
    files(&deploy().join("prometheus/rules"), ".yml")
        .iter()
        .flat_map(|p| {
            read(p)
                .lines()
                .filter_map(|l| {
                    l.trim()
                        .strip_prefix("- record:")
                        .map(|n| n.trim().to_string())
                })
                .collect::<Vec<_>>()
        })
        .collect()
}

/// The value of the first `key: value` line of a YAML file (enough for the
/// small provisioning files; their full parse is in `yaml_parses`).
fn yaml_value(path: &Path, key: &str) -> String {
    read(path)
        .lines()
        .find_map(|l| {
            l.trim()
                .strip_prefix(&format!("{key}:"))
                .map(|v| v.trim().trim_matches('"').to_string())
        })
        .unwrap_or_else(|| panic!("{}: no `{key}:`", path.display()))
}

/// Parses YAML files with PyYAML from the project venv (no YAML parser is a
/// dependency of this crate; scripts/requirements.txt installs PyYAML).
fn yaml_parses(paths: &[PathBuf]) {
    let script =
        "import sys, yaml\nfor p in sys.argv[1:]:\n    list(yaml.safe_load_all(open(p)))\n";
    let python = common::repo().join(".venv/bin/python");
    let out = Command::new(&python)
        .arg("-c")
        .arg(script)
        .args(paths)
        .output()
        .unwrap_or_else(|e| panic!("{}: {e} (run scripts/bootstrap.sh)", python.display()));
    assert!(
        out.status.success(),
        "YAML does not parse:\n{}",
        String::from_utf8_lossy(&out.stderr)
    );
}

#[test]
fn promtool_checks_the_scrape_configs_rules_and_rule_tests() {
    let Some(promtool_bin) = services::program("promtool") else {
        return;
    };
    let dir = deploy().join("prometheus");
    let rule_files = files(&dir.join("rules"), ".yml");
    for cfg in ["prometheus.yml", "prometheus-sweep.yml"] {
        let out = promtool(&promtool_bin, &["check", "config", cfg], &dir);
        assert!(
            out.contains(&format!("SUCCESS: {} rule files found", rule_files.len())),
            "{cfg} does not load every rule file:\n{out}"
        );
        assert!(!out.contains("WARNING"), "{cfg}:\n{out}");
    }
    let mut args = vec!["check".to_string(), "rules".to_string()];
    args.extend(rule_files.iter().map(|p| p.display().to_string()));
    let out = promtool(
        &promtool_bin,
        &args.iter().map(String::as_str).collect::<Vec<_>>(),
        &dir,
    );
    assert!(!out.contains("WARNING"), "{out}");
    for test in files(&dir.join("tests"), ".yml") {
        let out = promtool(
            &promtool_bin,
            &["test", "rules", test.to_str().unwrap()],
            &dir,
        );
        assert!(out.contains("SUCCESS"), "{out}");
    }
}

#[test]
fn dashboards_and_provisioning_agree_and_use_canonical_names() {
    let grafana = deploy().join("grafana");
    let datasources = grafana.join("provisioning/datasources/prometheus.yml");
    let providers = grafana.join("provisioning/dashboards/ard.yml");
    let compose = deploy().join("docker-compose.yml");
    let uid = yaml_value(&datasources, "uid");
    let dashboards_path = yaml_value(&providers, "path");
    let compose_text = read(&compose);
    for mount in [
        format!("./grafana/dashboards:{dashboards_path}"),
        "./grafana/provisioning/datasources:/etc/grafana/provisioning/datasources".to_string(),
        "./grafana/provisioning/dashboards:/etc/grafana/provisioning/dashboards".to_string(),
        "./prometheus:/etc/prometheus".to_string(),
    ] {
        assert!(
            compose_text.contains(&mount),
            "docker-compose.yml does not mount {mount}"
        );
    }
    let mut yaml = vec![datasources.clone(), providers.clone(), compose.clone()];
    yaml.extend(files(&deploy().join("prometheus"), ".yml"));
    yaml.extend(files(&deploy().join("prometheus/rules"), ".yml"));
    yaml.extend(files(&deploy().join("prometheus/tests"), ".yml"));
    yaml_parses(&yaml);

    let canonical: BTreeSet<&str> = ard_pipeline::metrics::names::ALL
        .iter()
        .map(|m| m.name)
        .collect();
    let recorded = recorded();
    for rules in files(&deploy().join("prometheus/rules"), ".yml") {
        for name in tokens(&read(&rules), "ard_") {
            assert!(
                canonical.contains(name.as_str()),
                "{}: {name} is not in src/metrics/names.rs",
                rules.display()
            );
        }
    }

    let mut uids = BTreeSet::new();
    for (name, dash) in dashboards() {
        assert!(
            dash["schemaVersion"].as_u64().unwrap_or(0) >= 38,
            "{name}: schemaVersion"
        );
        assert!(
            uids.insert(dash["uid"].as_str().unwrap_or_default().to_string()),
            "{name}: uid missing or repeated"
        );
        assert!(
            dash["title"].as_str().is_some_and(|t| !t.is_empty()),
            "{name}: title"
        );
        let vars = variables(&dash);
        let run = vars
            .iter()
            .find(|v| v["name"] == "run")
            .unwrap_or_else(|| panic!("{name}: no `run` variable"));
        assert_eq!(
            variable_query(run),
            "label_values(ard_epoch, run)",
            "{name}: the run variable"
        );
        let multi: Vec<String> = vars
            .iter()
            .filter(|v| v["multi"] == true)
            .map(|v| v["name"].as_str().unwrap().to_string())
            .collect();
        let mut ids = BTreeSet::new();
        for panel in panels(&dash) {
            let title = panel["title"].as_str().unwrap_or_default();
            assert!(!title.is_empty(), "{name}: a panel without a title");
            assert!(
                ids.insert(panel["id"].as_u64().expect("panel id")),
                "{name}: panel id of {title:?} repeated"
            );
            let pos = &panel["gridPos"];
            let (x, w, h) = (
                pos["x"].as_u64().unwrap(),
                pos["w"].as_u64().unwrap(),
                pos["h"].as_u64().unwrap(),
            );
            assert!(
                w > 0 && h > 0 && x + w <= 24,
                "{name}: {title:?} gridPos {pos}"
            );
            if panel["type"] == "row" {
                continue;
            }
            assert!(
                panel["description"].as_str().is_some_and(|d| !d.is_empty()),
                "{name}: {title:?} has no description"
            );
            assert_eq!(
                panel["datasource"]["uid"],
                uid.as_str(),
                "{name}: {title:?} datasource"
            );
            let targets = panel["targets"]
                .as_array()
                .unwrap_or_else(|| panic!("{name}: {title:?} has no targets"));
            assert!(!targets.is_empty(), "{name}: {title:?} has no targets");
            for t in targets {
                let expr = t["expr"]
                    .as_str()
                    .unwrap_or_else(|| panic!("{name}: {title:?}: a target without expr"));
                assert_eq!(
                    t["datasource"]["uid"],
                    uid.as_str(),
                    "{name}: {title:?}: {expr}"
                );
                for metric in tokens(expr, "ard_") {
                    assert!(
                        canonical.contains(metric.as_str()),
                        "{name}: {title:?}: {metric} is not in src/metrics/names.rs"
                    );
                }
                for rule in tokens(expr, "ard:") {
                    assert!(recorded.contains(&rule), "{name}: {title:?}: {rule} is not a recording rule of deploy/prometheus/rules");
                }
                // A repeated panel gets one value of its variable per copy.
                for var in multi
                    .iter()
                    .filter(|v| panel["repeat"].as_str() != Some(v.as_str()))
                {
                    let uses = expr.matches(&format!("${var}")).count();
                    let regex_uses = expr.matches(&format!("=~\"${var}\"")).count();
                    assert_eq!(
                        uses, regex_uses,
                        "{name}: {title:?}: multi-value ${var} outside a =~ matcher: {expr}"
                    );
                }
            }
        }
    }
    assert!(
        uids.contains("ard-run") && uids.contains("ard-sweep"),
        "{uids:?}"
    );
}

// ---------------------------------------------------------------- live check

/// Grafana's built-in interval variables, as the test sets them (1s scrapes).
const BUILTINS: [(&str, &str); 4] = [
    ("__rate_interval", "20s"),
    ("__interval", "5s"),
    ("__range", "1h"),
    ("__range_s", "3600"),
];

/// Substitutes Grafana template variables (`$name`, `${name}`, `${name:fmt}`,
/// `[[name]]`) from `vars` and the built-ins; an unknown variable is an error.
fn substitute(text: &str, vars: &BTreeMap<String, String>) -> Result<String, String> {
    let lookup = |name: &str| -> Result<String, String> {
        if let Some(v) = vars.get(name) {
            return Ok(v.clone());
        }
        BUILTINS
            .iter()
            .find(|(n, _)| *n == name)
            .map(|(_, v)| v.to_string())
            .ok_or(format!("unknown variable ${name}"))
    };
    let is_ident = |c: char| c.is_ascii_alphanumeric() || c == '_';
    let mut out = String::new();
    let mut rest = text;
    loop {
        let next = [rest.find('$'), rest.find("[[")]
            .into_iter()
            .flatten()
            .min();
        let Some(i) = next else { break };
        out.push_str(&rest[..i]);
        rest = &rest[i..];
        if let Some(body) = rest.strip_prefix("[[") {
            let end = body.find("]]").ok_or("unclosed [[")?;
            out.push_str(&lookup(body[..end].split(':').next().unwrap())?);
            rest = &body[end + 2..];
        } else if let Some(body) = rest.strip_prefix("${") {
            let end = body.find('}').ok_or("unclosed ${")?;
            out.push_str(&lookup(body[..end].split(':').next().unwrap())?);
            rest = &body[end + 1..];
        } else {
            let body = &rest[1..];
            let len = body.find(|c: char| !is_ident(c)).unwrap_or(body.len());
            if len == 0 || body.starts_with(|c: char| c.is_ascii_digit()) {
                out.push('$'); // a literal `$` (e.g. "$1" of label_replace)
            } else {
                out.push_str(&lookup(&body[..len])?);
            }
            rest = &body[len..];
        }
    }
    out.push_str(rest);
    Ok(out)
}

/// Grafana's value of a variable for the Prometheus datasource: the value, or
/// for several values the regex alternation `(a|b)`.
fn format_values(values: &[String]) -> String {
    if values.len() == 1 {
        values[0].clone()
    } else {
        format!("({})", values.join("|"))
    }
}

/// Evaluates a `label_values(SELECTOR, LABEL)` / `label_values(LABEL)` query.
fn label_values(prom: &Prometheus, query: &str) -> Result<Vec<String>, String> {
    let inner = query
        .trim()
        .strip_prefix("label_values(")
        .and_then(|q| q.strip_suffix(')'))
        .ok_or(format!("not a label_values query: {query}"))?;
    let (selector, label) = match inner.rfind(',') {
        Some(i) => (Some(inner[..i].trim()), inner[i + 1..].trim()),
        None => (None, inner.trim()),
    };
    let params: Vec<(&str, &str)> = selector.map(|s| ("match[]", s)).into_iter().collect();
    let v = prom.api(&format!("/api/v1/label/{label}/values"), &params)?;
    Ok(v["data"]
        .as_array()
        .into_iter()
        .flatten()
        .filter_map(|x| x.as_str().map(str::to_string))
        .collect())
}

/// One query to check: where it comes from, and the runs it must return data for.
struct Check {
    dashboard: String,
    panel: String,
    expr: String,
    /// Every run here must have a series with a finite value; empty: any one series.
    runs: Vec<String>,
    /// An annotation: checked as a range query over the test so far.
    range: bool,
    last: String,
}

impl Check {
    fn passes(&mut self, prom: &Prometheus, since: f64) -> bool {
        let result = if self.range {
            let now = format!("{:.3}", unix_now());
            let start = format!("{since:.3}");
            prom.api(
                "/api/v1/query_range",
                &[
                    ("query", &self.expr),
                    ("start", &start),
                    ("end", &now),
                    ("step", "1"),
                ],
            )
            .map(|v| v["data"]["result"].as_array().cloned().unwrap_or_default())
        } else {
            prom.try_query(&self.expr)
        };
        let series = match result {
            Ok(series) => series,
            Err(e) => {
                self.last = format!("error: {e}");
                return false;
            }
        };
        let finite = |s: &Value| {
            let values: Vec<&Value> = if self.range {
                s["values"]
                    .as_array()
                    .into_iter()
                    .flatten()
                    .map(|v| &v[1])
                    .collect()
            } else {
                vec![&s["value"][1]]
            };
            values.iter().any(|v| {
                v.as_str()
                    .and_then(|x| x.parse::<f64>().ok())
                    .is_some_and(f64::is_finite)
            })
        };
        let with_data: BTreeSet<String> = series
            .iter()
            .filter(|s| finite(s))
            .map(|s| s["metric"]["run"].as_str().unwrap_or_default().to_string())
            .collect();
        self.last = format!("{} series, finite for runs {with_data:?}", series.len());
        if self.runs.is_empty() {
            !with_data.is_empty()
        } else {
            self.runs.iter().all(|r| with_data.contains(r))
        }
    }
}

fn unix_now() -> f64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .as_secs_f64()
}

/// The config of one short CPU run: `steps`-step PGD, its own name and port,
/// the teacher online (the default `soft_labels`), eval every epoch.
fn run_config(name: &str, port: u16, steps: usize, dir: &Path, teacher: &Path) -> String {
    format!(
        r#"
[run]
name = "{name}"
device = "cpu"
threads = 1
out_dir = "{out}"
[data]
root = "{root}"
download = false
checksums = "any"
batch_size = 32
train_limit = 320
[teacher]
arch = "wrn10_1"
weights = "{teacher}"
[student]
arch = "mobilenet_v2_x0.25"
[attack]
kind = "pgd"
eps = "8/255"
step_size = "4/255"
steps = {steps}
[loss]
kind = "ard"
[optim]
lr = 0.05
[train]
epochs = 4
[eval]
every_epochs = 1
attacks = ["natural", "pgd3"]
test_limit = 64
[metrics]
listen = "127.0.0.1:{port}"
"#,
        out = dir.display(),
        root = common::cifar_root().display(),
        teacher = teacher.display()
    )
}

/// The shipped sweep config, run as is but for 1s intervals, in `dir` with a
/// copy of the rules and a file_sd file listing `targets`.
fn sweep_prometheus(binary: &Path, targets: &[String]) -> Prometheus {
    let dir = tempfile::tempdir().unwrap();
    let shipped = read(&deploy().join("prometheus/prometheus-sweep.yml"));
    let cfg = shipped
        .replace("scrape_interval: 5s", "scrape_interval: 1s")
        .replace("evaluation_interval: 5s", "evaluation_interval: 1s");
    assert_eq!(
        cfg.matches(": 1s").count(),
        2,
        "prometheus-sweep.yml no longer has 5s intervals to shorten"
    );
    assert!(
        cfg.contains("sweep-targets/*.json") && cfg.contains("rules/*.yml"),
        "prometheus-sweep.yml paths changed"
    );
    std::fs::create_dir(dir.path().join("rules")).unwrap();
    for rules in files(&deploy().join("prometheus/rules"), ".yml") {
        std::fs::copy(
            &rules,
            dir.path().join("rules").join(rules.file_name().unwrap()),
        )
        .unwrap();
    }
    std::fs::create_dir(dir.path().join("sweep-targets")).unwrap();
    let sd = serde_json::json!([{ "targets": targets, "labels": { "sweep": "deploy-test" } }]);
    std::fs::write(dir.path().join("sweep-targets/test.json"), sd.to_string()).unwrap();
    let cfg_path = dir.path().join("prometheus-sweep.yml");
    std::fs::write(&cfg_path, cfg).unwrap();
    Prometheus::start_with_config(binary, dir, &cfg_path)
}

/// Every check of one dashboard with its variables resolved, or why not yet.
fn dashboard_checks(
    prom: &Prometheus,
    name: &str,
    dash: &Value,
    run: &str,
    all_runs: &[String],
) -> Result<Vec<Check>, String> {
    let sweep = variables(dash)
        .iter()
        .any(|v| v["name"] == "run" && v["multi"] == true);
    let mut vars: BTreeMap<String, String> = BTreeMap::new();
    let mut all_values: BTreeMap<String, Vec<String>> = BTreeMap::new();
    for var in variables(dash) {
        let var_name = var["name"].as_str().unwrap().to_string();
        let query = substitute(&variable_query(var), &vars)?;
        let values = label_values(prom, &query)?;
        if values.is_empty() {
            return Err(format!(
                "{name}: variable {var_name}: {query} has no values yet"
            ));
        }
        let chosen = if var_name == "run" && !sweep {
            if !values.iter().any(|v| v == run) {
                return Err(format!(
                    "{name}: {query} does not list {run} yet: {values:?}"
                ));
            }
            vec![run.to_string()]
        } else if var_name == "run" {
            if !all_runs.iter().all(|r| values.contains(r)) {
                return Err(format!(
                    "{name}: {query} does not list {all_runs:?} yet: {values:?}"
                ));
            }
            values.clone()
        } else {
            values.clone()
        };
        vars.insert(var_name.clone(), format_values(&chosen));
        all_values.insert(var_name, chosen);
    }
    let runs = if sweep { all_runs.to_vec() } else { Vec::new() };
    let mut checks = Vec::new();
    for panel in query_panels(dash) {
        // A repeated panel: one copy per value of its variable.
        let copies: Vec<BTreeMap<String, String>> = match panel["repeat"].as_str() {
            Some(repeat) => all_values[repeat]
                .iter()
                .map(|value| {
                    let mut v = vars.clone();
                    v.insert(repeat.to_string(), value.clone());
                    v
                })
                .collect(),
            None => vec![vars.clone()],
        };
        for copy in copies {
            let title = substitute(panel["title"].as_str().unwrap_or_default(), &copy)?;
            for t in panel["targets"].as_array().into_iter().flatten() {
                let raw = t["expr"].as_str().unwrap_or_default();
                let expr = substitute(raw, &copy)
                    .map_err(|e| format!("{name}: {title:?}: {e} in {raw}"))?;
                checks.push(Check {
                    dashboard: name.into(),
                    panel: title.clone(),
                    expr,
                    runs: runs.clone(),
                    range: false,
                    last: String::new(),
                });
            }
        }
    }
    for ann in dash["annotations"]["list"].as_array().into_iter().flatten() {
        if let Some(raw) = ann["expr"].as_str() {
            let expr = substitute(raw, &vars)?;
            let title = format!("annotation {}", ann["name"].as_str().unwrap_or_default());
            checks.push(Check {
                dashboard: name.into(),
                panel: title,
                expr,
                runs: runs.clone(),
                range: true,
                last: String::new(),
            });
        }
    }
    Ok(checks)
}

fn spawn_run(cfg: &Path, log: &Path) -> Killed {
    Killed(
        Command::new(env!("CARGO_BIN_EXE_ard-pipeline"))
            .args(["--config", cfg.to_str().unwrap()])
            .stdout(Stdio::null())
            .stderr(std::fs::File::create(log).unwrap())
            .spawn()
            .unwrap(),
    )
}

fn failed(child: &mut Child) -> Option<std::process::ExitStatus> {
    child.try_wait().unwrap().filter(|status| !status.success())
}

#[test]
fn every_dashboard_panel_returns_data_from_real_runs() {
    let Some(prometheus) = services::program("prometheus") else {
        return;
    };
    let started = Instant::now();
    let since = unix_now() - 1.0;
    let dir = tempfile::tempdir().unwrap();
    tch::manual_seed(0);
    let teacher = dir.path().join("teacher.safetensors");
    ard_pipeline::models::Model::new("wrn10_1".parse().unwrap(), tch::Device::Cpu)
        .save(&teacher)
        .unwrap();

    // Two runs of a sweep over the attack steps, each on its own port.
    let runs = [("deploy-pgd1", 1), ("deploy-pgd2", 2)];
    let mut targets = Vec::new();
    let mut children = Vec::new();
    let names: Vec<String> = runs.iter().map(|(n, _)| n.to_string()).collect();
    let ports: Vec<u16> = runs.iter().map(|_| services::free_port()).collect();
    for port in &ports {
        targets.push(format!("127.0.0.1:{port}"));
    }
    let prom = sweep_prometheus(&prometheus, &targets);
    for ((name, steps), port) in runs.iter().zip(&ports) {
        let cfg = dir.path().join(format!("{name}.toml"));
        std::fs::write(&cfg, run_config(name, *port, *steps, dir.path(), &teacher)).unwrap();
        children.push((
            name.to_string(),
            dir.path().join(format!("{name}.log")),
            spawn_run(&cfg, &dir.path().join(format!("{name}.log"))),
        ));
    }

    let deadline = Instant::now() + Duration::from_secs(240);
    let dashboards = dashboards();
    let mut pending: Option<Vec<Check>> = None;
    let mut why_not = String::new();
    let mut total = 0;
    loop {
        for (name, log, child) in children.iter_mut() {
            if let Some(status) = failed(&mut child.0) {
                panic!("run {name} failed ({status}):\n{}", read(log));
            }
        }
        if pending.is_none() {
            let built: Result<Vec<Check>, String> = dashboards
                .iter()
                .map(|(name, dash)| dashboard_checks(&prom, name, dash, &names[0], &names))
                .collect::<Result<Vec<Vec<Check>>, String>>()
                .map(|v| v.into_iter().flatten().collect());
            match built {
                Ok(checks) => {
                    total = checks.len();
                    pending = Some(checks);
                }
                Err(e) => why_not = e,
            }
        }
        if let Some(checks) = pending.as_mut() {
            checks.retain_mut(|c| !c.passes(&prom, since));
            if checks.is_empty() {
                break;
            }
        }
        let all_exited = children
            .iter_mut()
            .all(|(_, _, c)| c.0.try_wait().unwrap().is_some());
        if Instant::now() > deadline || all_exited {
            match &pending {
                None => panic!("the dashboards' variables never resolved: {why_not}"),
                Some(checks) => {
                    let report: Vec<String> = checks
                        .iter()
                        .map(|c| {
                            format!(
                                "  {} / panel {:?}:\n    {}\n    last: {}",
                                c.dashboard, c.panel, c.expr, c.last
                            )
                        })
                        .collect();
                    panic!(
                        "{} of {total} dashboard queries never returned data{}:\n{}",
                        checks.len(),
                        if all_exited {
                            " before the runs ended"
                        } else {
                            " within 240s"
                        },
                        report.join("\n")
                    );
                }
            }
        }
        std::thread::sleep(Duration::from_millis(1000));
    }
    eprintln!(
        "all {total} dashboard queries returned data after {:.0}s",
        started.elapsed().as_secs_f64()
    );

    // The rules evaluated on real series without errors (a many-to-many join
    // in a recording rule would show here), and every one was evaluated.
    let rules = prom.api("/api/v1/rules", &[]).expect("rules API");
    let mut count = 0;
    for group in rules["data"]["groups"].as_array().into_iter().flatten() {
        for rule in group["rules"].as_array().into_iter().flatten() {
            count += 1;
            assert_eq!(
                rule["health"], "ok",
                "rule {} in {}: {}",
                rule["name"], group["file"], rule["lastError"]
            );
        }
    }
    let shipped: usize = files(&deploy().join("prometheus/rules"), ".yml")
        .iter()
        .map(|p| {
            read(p)
                .lines()
                .filter(|l| l.trim().starts_with("- record:") || l.trim().starts_with("- alert:"))
                .count()
        })
        .sum();
    assert_eq!(count, shipped, "every shipped rule is loaded");
    // No alert fires on two healthy runs.
    let firing = prom.try_query("ALERTS{alertstate=\"firing\"}").unwrap();
    assert!(firing.is_empty(), "alerts fire on healthy runs: {firing:?}");
}
