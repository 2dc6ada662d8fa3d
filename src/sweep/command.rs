//! `ard-pipeline sweep` and the internal `ard-pipeline sweep-run`.

use super::expand::{expand, PlannedRun, RunPlacement};
use super::manifest::SweepDir;
use super::schedule::{schedule, Policy, RunResult, RunStatus};
use super::spec::{Backend, SweepFile};
use super::{k8s, local, ray, report, stale};
use crate::config::{self, Config};
use crate::device::cores;
use crate::error::{Error, Result};
use std::path::{Path, PathBuf};
use std::time::Duration;

/// What a sweep did.
#[derive(Debug)]
pub struct SweepOutcome {
    pub dir: PathBuf,
    pub backend: Backend,
    /// Per run (empty for k8s, which only renders).
    pub results: Vec<RunResult>,
    /// Files written for k8s.
    pub rendered: Vec<PathBuf>,
}

impl SweepOutcome {
    pub fn failed(&self) -> Vec<&RunResult> {
        self.results
            .iter()
            .filter(|r| matches!(r.status, RunStatus::Failed { .. }))
            .collect()
    }

    /// The closing lines.
    pub fn summary(&self) -> String {
        if self.backend == Backend::K8s {
            let files: Vec<String> = self
                .rendered
                .iter()
                .map(|p| p.display().to_string())
                .collect();
            return format!(
                "rendered {}\napply with: kubectl apply -f {}\n",
                files.join(", "),
                files.join(" -f ")
            );
        }
        let count =
            |f: fn(&RunStatus) -> bool| self.results.iter().filter(|r| f(&r.status)).count();
        let mut s = format!(
            "sweep {}: {}, {} done, {} skipped (already done), {} failed\n",
            self.dir.display(),
            crate::report::plural::count(self.results.len() as u64, "run"),
            count(|s| matches!(s, RunStatus::Succeeded { .. })),
            count(|s| matches!(s, RunStatus::Skipped)),
            count(|s| matches!(s, RunStatus::Failed { .. })),
        );
        for r in self.failed() {
            if let RunStatus::Failed { attempts, reason } = &r.status {
                s.push_str(&format!(
                    "  failed: {} after {}: {reason}\n",
                    r.name,
                    crate::report::plural::count(*attempts as u64, "attempt")
                ));
            }
        }
        s
    }
}

/// Where the runs of `file` go on `backend`.
pub fn placement(file: &SweepFile, backend: Backend) -> RunPlacement {
    let s = &file.sweep;
    match backend {
        Backend::K8s => RunPlacement {
            out_dir: Path::new(&s.k8s.results_mount).join(&s.name).join("runs"),
            threads: s.threads,
            metrics_base_port: None,
            metrics_listen: Some(if s.metrics_base_port == 0 {
                String::new()
            } else {
                "0.0.0.0:9187".into()
            }),
        },
        Backend::Local | Backend::Ray => RunPlacement {
            out_dir: SweepDir::new(file.dir()).runs(),
            threads: Some(s.threads.unwrap_or((cores() / s.parallel.max(1)).max(1))),
            metrics_base_port: (s.metrics_base_port != 0).then_some(s.metrics_base_port),
            metrics_listen: None,
        },
    }
}

/// Reads and expands a sweep file for `backend` (the file's own when None).
pub fn plan(
    path: &Path,
    backend: Option<Backend>,
) -> Result<(SweepFile, Backend, Vec<PlannedRun>)> {
    let file = SweepFile::read(path)?;
    let backend = backend.unwrap_or(file.sweep.backend);
    let runs = expand(&file, &placement(&file, backend))?;
    Ok((file, backend, runs))
}

/// How `sweep` runs (the flags; the file describes the sweep).
#[derive(Debug, Clone, Copy, Default)]
pub struct SweepOptions {
    /// Overrides the sweep file's backend.
    pub backend: Option<Backend>,
    /// Rerun the finished rows whose settings changed (their folders move
    /// aside) instead of refusing them.
    pub fresh: bool,
    /// Check the file and say what would run, write and start nothing.
    pub dry_run: bool,
}

/// `ard-pipeline sweep --config FILE [--backend B]`.
pub fn run_sweep(
    path: &Path,
    backend: Option<Backend>,
    say: impl FnMut(&str),
) -> Result<SweepOutcome> {
    let options = SweepOptions {
        backend,
        ..SweepOptions::default()
    };
    run_sweep_with(path, &options, say)
}

/// `ard-pipeline sweep --config FILE [--backend B] [--fresh] [--dry-run]`.
/// Finished rows whose training settings changed since they ran are refused
/// before anything is written, unless `fresh` moves them aside ([`stale`]).
pub fn run_sweep_with(
    path: &Path,
    options: &SweepOptions,
    mut say: impl FnMut(&str),
) -> Result<SweepOutcome> {
    let (file, backend, runs) = plan(path, options.backend)?;
    let dir = SweepDir::new(file.dir());
    let backend_name = crate::config::spelled(&backend);
    let changed = if backend == Backend::K8s {
        Vec::new()
    } else {
        stale::stale_rows(&dir, &runs)
    };
    if options.dry_run {
        dry_run(&dir, &runs, &changed, options.fresh, say)?;
        return Ok(SweepOutcome {
            dir: dir.path,
            backend,
            results: Vec::new(),
            rendered: Vec::new(),
        });
    }
    if !changed.is_empty() && !options.fresh {
        return Err(stale::refusal(path, &changed));
    }
    for (row, aside) in changed.iter().zip(stale::move_aside_rows(&dir, &changed)?) {
        say(&format!(
            "rerun {}: trained with other settings, its folder moved to {}",
            row.line(),
            aside.display()
        ));
    }
    dir.write(&file.sweep.name, path, &backend_name, &runs)?;
    say(&format!(
        "sweep {}: {} validated, backend {backend_name}, folder {}",
        file.sweep.name,
        crate::report::plural::count(runs.len() as u64, "run"),
        dir.path.display()
    ));
    if backend != Backend::K8s && file.sweep.metrics_base_port != 0 {
        write_targets(&dir, &file.sweep.name, &runs)?;
    }
    let policy = Policy {
        parallel: file.sweep.parallel,
        retries: file.sweep.retries,
        poll: Duration::from_secs_f64(file.sweep.poll_s.max(0.01)),
    };
    let results = match backend {
        Backend::Local => {
            let tasks: Vec<_> = runs.iter().map(|r| dir.task(r)).collect();
            schedule(
                &mut local::Local::new()?,
                &tasks,
                policy,
                &|| false,
                &mut say,
            )?
        }
        Backend::Ray => {
            // The configs by absolute path: the jobs may start elsewhere.
            let at = SweepDir::new(ray::absolute(&dir.path)?);
            let tasks: Vec<_> = runs.iter().map(|r| at.task(r)).collect();
            let threads = placement(&file, backend).threads;
            let mut exec = ray::Ray::new(&file.sweep.ray_address, threads)?;
            schedule(&mut exec, &tasks, policy, &|| false, &mut say)?
        }
        Backend::K8s => {
            let k = dir.path.join("k8s");
            std::fs::create_dir_all(&k).map_err(|e| Error::io(&k, e))?;
            let cm = k.join("configmap.yaml");
            let job = k.join("job.yaml");
            std::fs::write(&cm, k8s::config_map(&file, &runs)).map_err(|e| Error::io(&cm, e))?;
            std::fs::write(&job, k8s::job(&file, &runs)).map_err(|e| Error::io(&job, e))?;
            return Ok(SweepOutcome {
                dir: dir.path,
                backend,
                results: Vec::new(),
                rendered: vec![cm, job],
            });
        }
    };
    match report::write_report(&dir.path) {
        Ok(written) => say(&format!("report: {}", written.markdown.display())),
        Err(e) => say(&format!("no report: {e}")),
    }
    Ok(SweepOutcome {
        dir: dir.path,
        backend,
        results,
        rendered: Vec::new(),
    })
}

/// `sweep --dry-run`: every row expanded and validated (done by the caller),
/// then what a real sweep would do with each; nothing is written.
fn dry_run(
    dir: &SweepDir,
    runs: &[PlannedRun],
    changed: &[stale::StaleRow],
    fresh: bool,
    mut say: impl FnMut(&str),
) -> Result<()> {
    let finished = runs
        .iter()
        .filter(|r| dir.summary(&r.name).is_file())
        .count();
    for row in changed {
        let verdict = if fresh { "would rerun" } else { "refused" };
        say(&format!("{verdict}: {}", row.line()));
    }
    say(&format!(
        "dry run: {} rows validated, {} to run, {} finished ({} of them with other settings{}); nothing written",
        runs.len(),
        runs.len() - finished,
        finished,
        changed.len(),
        if changed.is_empty() || fresh {
            ""
        } else {
            ": pass --fresh to rerun them"
        }
    ));
    if !changed.is_empty() && !fresh {
        return Err(Error::Usage(format!(
            "{} finished row(s) changed since they ran (see above)",
            changed.len()
        )));
    }
    Ok(())
}

/// `SWEEP_DIR/prometheus-targets.json`: every run's metrics address in the
/// Prometheus file_sd format; copy or link it into
/// deploy/prometheus/sweep-targets/ to scrape a sweep of more than the 8
/// ports `local.json` lists.
fn write_targets(dir: &SweepDir, sweep: &str, runs: &[PlannedRun]) -> Result<()> {
    let targets: Vec<&str> = runs
        .iter()
        .map(|r| r.config.metrics.listen.as_str())
        .filter(|l| !l.is_empty())
        .collect();
    let json = serde_json::json!([{ "targets": targets, "labels": { "sweep": sweep } }]);
    let path = dir.path.join("prometheus-targets.json");
    let text =
        serde_json::to_string_pretty(&json).map_err(Error::json("the Prometheus targets"))?;
    std::fs::write(&path, text).map_err(|e| Error::io(&path, e))
}

/// `ard-pipeline sweep-run`: the config of one row, from a sweep file (as the
/// local backend would place it) or from a folder of rendered configs
/// (`INDEX.toml`, the k8s ConfigMap).
pub fn sweep_run(sweep: Option<&Path>, configs: Option<&Path>, index: usize) -> Result<Config> {
    match (sweep, configs) {
        (Some(path), None) => {
            let (_, _, runs) = plan(path, Some(Backend::Local))?;
            let n = runs.len();
            runs.into_iter()
                .find(|r| r.index == index)
                .map(|r| r.config)
                .ok_or_else(|| {
                    Error::Usage(format!("{}: no row {index} (it has {n})", path.display()))
                })
        }
        (None, Some(dir)) => config::load(&dir.join(format!("{index}.toml"))),
        _ => Err(Error::Usage(
            "give exactly one of --sweep FILE and --configs DIR".into(),
        )),
    }
}
