//! The Ray backend: each task is a Ray job submitted through the Ray Jobs
//! REST API of the dashboard (`POST /api/jobs/`, `GET /api/jobs/{id}`,
//! `GET /api/jobs/{id}/logs`). The entrypoint is this binary with the task's
//! arguments (a sweep run's generated config, an evaluation's shard; their
//! paths absolute), started in this process's working directory, so the
//! cluster must see the same files (one box, or a shared file system). The
//! job's logs are appended to the task's log when it ends.

use super::schedule::{Attempt, Executor, Task};
use crate::error::{Error, Result};
use std::path::{Path, PathBuf};
use std::time::Duration;

pub struct Ray {
    /// Dashboard base URL, e.g. `http://127.0.0.1:8265`.
    pub address: String,
    pub exe: PathBuf,
    pub cwd: PathBuf,
    /// CPUs Ray reserves for each job's entrypoint.
    pub cpus: Option<usize>,
    /// Environment variables of every job (`runtime_env.env_vars`; none: no
    /// `runtime_env`).
    pub env: Vec<(String, String)>,
}

pub struct RayHandle {
    pub submission_id: String,
}

/// Quotes for a POSIX shell.
pub fn shell_quote(s: &str) -> String {
    format!("'{}'", s.replace('\'', "'\\''"))
}

/// A word for a POSIX shell: bare when it is letters, digits, `-` and `_`
/// only (a flag, a subcommand), else quoted.
pub fn shell_word(s: &str) -> String {
    let plain = |c: char| c.is_ascii_alphanumeric() || c == '-' || c == '_';
    if !s.is_empty() && s.chars().all(plain) {
        s.to_string()
    } else {
        shell_quote(s)
    }
}

/// `p` as an absolute path: relative ones are taken from the working
/// directory, the one a Ray job also starts in.
pub fn absolute(p: &Path) -> Result<PathBuf> {
    if p.is_absolute() {
        return Ok(p.to_path_buf());
    }
    let cwd = std::env::current_dir().map_err(|e| Error::io(".", e))?;
    Ok(cwd.join(p))
}

impl Ray {
    pub fn new(address: &str, cpus: Option<usize>) -> Result<Ray> {
        let exe = std::env::current_exe().map_err(|e| Error::io("/proc/self/exe", e))?;
        let cwd = std::env::current_dir().map_err(|e| Error::io(".", e))?;
        Ok(Ray {
            address: address.trim_end_matches('/').to_string(),
            exe,
            cwd,
            cpus,
            env: Vec::new(),
        })
    }

    fn agent(&self) -> ureq::Agent {
        ureq::AgentBuilder::new()
            .timeout(Duration::from_secs(30))
            .build()
    }

    /// The JSON answer to `GET url`.
    fn get_json(&self, url: &str) -> Result<serde_json::Value> {
        let resp = self.agent().get(url).call().map_err(|e| http_err(url, e))?;
        json_body(url, resp)
    }

    /// The JSON body of the submission of `task`.
    pub fn submission(&self, task: &Task, submission_id: &str) -> serde_json::Value {
        let entrypoint = format!(
            "cd {} && {} {}",
            shell_quote(&self.cwd.display().to_string()),
            shell_quote(&self.exe.display().to_string()),
            task.args_text(shell_word)
        );
        let mut body = serde_json::json!({
            "entrypoint": entrypoint,
            "submission_id": submission_id,
            "metadata": { "sweep_run": task.name, "index": task.index.to_string() },
        });
        if let Some(c) = self.cpus {
            body["entrypoint_num_cpus"] = serde_json::json!(c);
        }
        if !self.env.is_empty() {
            let vars: serde_json::Map<String, serde_json::Value> = (self.env.iter())
                .map(|(k, v)| (k.clone(), serde_json::json!(v)))
                .collect();
            body["runtime_env"] = serde_json::json!({ "env_vars": vars });
        }
        body
    }

    /// Submits a job; its submission id.
    pub fn submit(&self, body: &serde_json::Value) -> Result<String> {
        let url = format!("{}/api/jobs/", self.address);
        let resp = self
            .agent()
            .post(&url)
            .set("Content-Type", "application/json")
            .send_string(&body.to_string())
            .map_err(|e| http_err(&url, e))?;
        let v = json_body(&url, resp)?;
        v["submission_id"]
            .as_str()
            .or_else(|| v["job_id"].as_str())
            .map(String::from)
            .ok_or_else(|| ray_err(&url, format!("no submission_id in the answer to POST: {v}")))
    }

    /// The job's status: PENDING, RUNNING, SUCCEEDED, FAILED, STOPPED; and its message.
    pub fn status(&self, id: &str) -> Result<(String, String)> {
        let url = format!("{}/api/jobs/{id}", self.address);
        let v = self.get_json(&url)?;
        let status = v["status"]
            .as_str()
            .ok_or_else(|| ray_err(&url, format!("no status in the answer to GET: {v}")))?;
        Ok((
            status.to_string(),
            v["message"].as_str().unwrap_or("").to_string(),
        ))
    }

    /// The job's logs.
    pub fn logs(&self, id: &str) -> Result<String> {
        let v = self.get_json(&format!("{}/api/jobs/{id}/logs", self.address))?;
        Ok(v["logs"].as_str().unwrap_or("").to_string())
    }

    /// Asks Ray to stop a job.
    pub fn stop_job(&self, id: &str) -> Result<()> {
        let url = format!("{}/api/jobs/{id}/stop", self.address);
        self.agent()
            .post(&url)
            .call()
            .map_err(|e| http_err(&url, e))?;
        Ok(())
    }

    fn save_logs(&self, task: &Task, id: &str) -> String {
        match self.logs(id) {
            Ok(text) => {
                let path = &task.log;
                let mut all = std::fs::read_to_string(path).unwrap_or_default();
                all.push_str(&format!("=== ray job {id}\n{text}"));
                let _ = std::fs::write(path, all);
                let lines: Vec<&str> = text.lines().collect();
                lines[lines.len().saturating_sub(8)..].join("\n")
            }
            Err(e) => format!("(logs unavailable: {e})"),
        }
    }
}

fn json_body(url: &str, resp: ureq::Response) -> Result<serde_json::Value> {
    let text = resp
        .into_string()
        .map_err(|e| ray_err(url, e.to_string()))?;
    serde_json::from_str(&text).map_err(|e| ray_err(url, format!("bad JSON ({e}): {text}")))
}

fn http_err(url: &str, e: ureq::Error) -> Error {
    match e {
        ureq::Error::Status(code, resp) => {
            let body = resp.into_string().unwrap_or_default();
            ray_err(url, format!("HTTP {code}: {}", body.trim()))
        }
        other => ray_err(url, other.to_string()),
    }
}

fn ray_err(url: &str, message: String) -> Error {
    Error::Ray {
        url: url.to_string(),
        message,
    }
}

impl Executor for Ray {
    type Handle = RayHandle;

    fn start(&mut self, task: &Task, attempt: usize) -> Result<RayHandle> {
        let millis = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map(|d| d.as_millis())
            .unwrap_or(0);
        let id = format!("{}-a{attempt}-{millis}", task.name);
        let submission_id = self.submit(&self.submission(task, &id))?;
        Ok(RayHandle { submission_id })
    }

    fn poll(&mut self, task: &Task, handle: &mut RayHandle) -> Result<Option<Attempt>> {
        let (status, message) = self.status(&handle.submission_id)?;
        Ok(match status.as_str() {
            "SUCCEEDED" => {
                self.save_logs(task, &handle.submission_id);
                Some(Attempt::Succeeded)
            }
            "FAILED" | "STOPPED" => {
                let log_tail = self.save_logs(task, &handle.submission_id);
                let reason = format!(
                    "ray job {} {status}: {}",
                    handle.submission_id,
                    message.lines().next().unwrap_or("")
                );
                Some(Attempt::Failed { reason, log_tail })
            }
            _ => None,
        })
    }

    fn stop(&mut self, handle: &mut RayHandle) {
        let _ = self.stop_job(&handle.submission_id);
    }
}
