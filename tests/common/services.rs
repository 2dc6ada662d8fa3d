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
    std::net::TcpListener::bind("127.0.0.1:0").unwrap().local_addr().unwrap().port()
}

/// A program from PATH; panics under CI when missing, else None (the caller skips loudly).
pub fn program(name: &str) -> Option<PathBuf> {
    let found = std::env::var_os("PATH")
        .and_then(|p| std::env::split_paths(&p).map(|d| d.join(name)).find(|p| p.is_file()));
    if found.is_none() {
        assert!(std::env::var_os("CI").is_none(), "{name} is not installed (scripts/services.sh installs it)");
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
        let port = free_port();
        let rules: Vec<String> = rule_files.iter().map(|p| format!("  - {}", p.display())).collect();
        let targets: Vec<String> = targets.iter().map(|t| format!("'{t}'")).collect();
        let cfg = format!(
            "global:\n  scrape_interval: 1s\n  evaluation_interval: 1s\nrule_files:\n{}\nscrape_configs:\n  - job_name: ard\n    static_configs:\n      - targets: [{}]\n",
            if rules.is_empty() { "  []".to_string() } else { rules.join("\n") },
            targets.join(", ")
        );
        let cfg_path = dir.path().join("prometheus.yml");
        std::fs::write(&cfg_path, cfg).unwrap();
        let child = Command::new(binary)
            .arg(format!("--config.file={}", cfg_path.display()))
            .arg(format!("--storage.tsdb.path={}", dir.path().join("tsdb").display()))
            .arg(format!("--web.listen-address=127.0.0.1:{port}"))
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .expect("prometheus starts");
        let prom = Prometheus { port, _child: Killed(child), _dir: dir };
        let deadline = Instant::now() + Duration::from_secs(30);
        while Instant::now() < deadline {
            if ureq::get(&format!("http://127.0.0.1:{port}/-/ready")).call().is_ok() {
                return prom;
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
                let v: serde_json::Value = serde_json::from_str(&resp.into_string().unwrap()).unwrap();
                v["data"]["result"].as_array().cloned().unwrap_or_default()
            }
            Err(e) => panic!("query {promql:?} failed: {e}"),
        }
    }
}
