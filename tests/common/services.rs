//! Real services for the integration tests, on 127.0.0.1 only, bounded in
//! time, killed by PID when the guard drops.
#![allow(dead_code)]

use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

/// A child process killed (by PID) when dropped.
pub struct Killed(pub Child);

impl Drop for Killed {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

/// A free TCP port on 127.0.0.1 (bound and released).
pub fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port()
}

/// A program from PATH; panics under CI when missing, else None (the caller skips loudly).
pub fn program(name: &str) -> Option<PathBuf> {
    let found = std::env::var_os("PATH").and_then(|p| {
        std::env::split_paths(&p)
            .map(|d| d.join(name))
            .find(|p| p.is_file())
    });
    if found.is_none() {
        assert!(
            std::env::var_os("CI").is_none(),
            "{name} is not installed (scripts/services.sh installs it)"
        );
        eprintln!("SKIPPED: {name} is not installed; run scripts/services.sh");
    }
    found
}

/// A Prometheus server on 127.0.0.1 scraping `targets` every second.
pub struct Prometheus {
    pub port: u16,
    _child: Killed,
    _dir: tempfile::TempDir,
}

impl Prometheus {
    pub fn start(binary: &Path, targets: &[String], rule_files: &[PathBuf]) -> Prometheus {
        let dir = tempfile::tempdir().unwrap();
        let rules: Vec<String> = rule_files
            .iter()
            .map(|p| format!("  - {}", p.display()))
            .collect();
        let targets: Vec<String> = targets.iter().map(|t| format!("'{t}'")).collect();
        let cfg = format!(
            "global:\n  scrape_interval: 1s\n  evaluation_interval: 1s\nrule_files:\n{}\nscrape_configs:\n  - job_name: ard\n    static_configs:\n      - targets: [{}]\n",
            if rules.is_empty() { "  []".to_string() } else { rules.join("\n") },
            targets.join(", ")
        );
        let cfg_path = dir.path().join("prometheus.yml");
        std::fs::write(&cfg_path, cfg).unwrap();
        Prometheus::start_with_config(binary, dir, &cfg_path)
    }

    /// A Prometheus server on 127.0.0.1 running the config file `cfg_path`
    /// (typically written into `dir`, where relative paths in it then resolve),
    /// storing its data under `dir`, which lives as long as the server.
    pub fn start_with_config(binary: &Path, dir: tempfile::TempDir, cfg_path: &Path) -> Prometheus {
        let port = free_port();
        let log = dir.path().join("prometheus.log");
        let child = Command::new(binary)
            .arg(format!("--config.file={}", cfg_path.display()))
            .arg(format!(
                "--storage.tsdb.path={}",
                dir.path().join("tsdb").display()
            ))
            .arg(format!("--web.listen-address=127.0.0.1:{port}"))
            .stdout(Stdio::null())
            .stderr(std::fs::File::create(&log).unwrap())
            .spawn()
            .expect("prometheus starts");
        let mut prom = Prometheus {
            port,
            _child: Killed(child),
            _dir: dir,
        };
        let deadline = Instant::now() + Duration::from_secs(30);
        while Instant::now() < deadline {
            if ureq::get(&format!("http://127.0.0.1:{port}/-/ready"))
                .call()
                .is_ok()
            {
                return prom;
            }
            if let Ok(Some(status)) = prom._child.0.try_wait() {
                let log = std::fs::read_to_string(&log).unwrap_or_default();
                let tail: Vec<&str> = log.lines().rev().take(5).collect();
                panic!(
                    "prometheus exited ({status}) before it was ready:\n{}",
                    tail.into_iter().rev().collect::<Vec<_>>().join("\n")
                );
            }
            std::thread::sleep(Duration::from_millis(200));
        }
        panic!("prometheus did not become ready on 127.0.0.1:{port}");
    }

    /// An instant query; the `data.result` array.
    pub fn query(&self, promql: &str) -> Vec<serde_json::Value> {
        let url = format!("http://127.0.0.1:{}/api/v1/query", self.port);
        match ureq::get(&url).query("query", promql).call() {
            Ok(resp) => {
                let v: serde_json::Value =
                    serde_json::from_str(&resp.into_string().unwrap()).unwrap();
                v["data"]["result"].as_array().cloned().unwrap_or_default()
            }
            Err(e) => panic!("query {promql:?} failed: {e}"),
        }
    }

    /// An instant query that reports a rejected query instead of panicking: the
    /// `data.result` array, or Prometheus's error message (bad PromQL, a
    /// many-to-many match, ...).
    pub fn try_query(&self, promql: &str) -> Result<Vec<serde_json::Value>, String> {
        let v = self.api("/api/v1/query", &[("query", promql)])?;
        Ok(v["data"]["result"].as_array().cloned().unwrap_or_default())
    }

    /// A GET on the HTTP API (`path` like `/api/v1/rules`) with query
    /// parameters: the whole JSON answer when its status is "success", else
    /// the error Prometheus gave.
    pub fn api(&self, path: &str, params: &[(&str, &str)]) -> Result<serde_json::Value, String> {
        let url = format!("http://127.0.0.1:{}{path}", self.port);
        let mut request = ureq::get(&url).timeout(Duration::from_secs(10));
        for (key, value) in params {
            request = request.query(key, value);
        }
        let body = match request.call() {
            Ok(resp) => resp.into_string().map_err(|e| e.to_string())?,
            Err(ureq::Error::Status(code, resp)) => {
                let body = resp.into_string().unwrap_or_default();
                let v: serde_json::Value = serde_json::from_str(&body).unwrap_or_default();
                return Err(format!(
                    "HTTP {code}: {}",
                    v["error"].as_str().unwrap_or(&body)
                ));
            }
            Err(e) => return Err(e.to_string()),
        };
        let v: serde_json::Value =
            serde_json::from_str(&body).map_err(|e| format!("{e}: {body}"))?;
        if v["status"] == "success" {
            Ok(v)
        } else {
            Err(format!("{}: {}", v["errorType"], v["error"]))
        }
    }
}
