//! `ard-pipeline eval --shards N --json OUT`: an evaluation split by images
//! and run on a sweep backend. Shard I is a task of the sweep's scheduler
//! ([`super::schedule`]), run on local child processes or as a Ray job: this
//! binary with the evaluation's own flags and `--shard I/N --json
//! OUT.parts/part-I-of-N.json`, its output in `OUT.parts/part-I-of-N.log`.
//! When every part is there they are joined as `eval merge` joins them.
//!
//! A shard writes its part atomically when it ends, so the same command run
//! again after a stop (a signal, a lost machine) starts only the shards whose
//! part is missing. The parts already there must be the ones this command
//! writes (same checkpoint sha256, evaluations, eps, seed, batch size, images
//! and shard count): anything else in the folder is refused, naming the file,
//! before a shard starts, because joining it would give a result no command
//! computed.

use super::schedule::{schedule, Policy, RunStatus, Task};
use super::spec::Backend;
use super::{local, ray};
use crate::config::Config;
use crate::error::{Error, Result};
use crate::eval::command::{expected_parts, unsplittable, EvalOptions, EvalOutcome};
use crate::eval::record::EvalFile;
use crate::report::plural::count;
use std::ffi::OsString;
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

/// How the shards run (the flags beside `--shards`).
#[derive(Debug, Clone)]
pub struct ShardedEval {
    pub shards: u32,
    /// Shards running at once.
    pub parallel: usize,
    /// Extra attempts of a failed shard.
    pub retries: usize,
    /// Local or Ray (k8s is refused: its Job is in deploy/k8s).
    pub backend: Backend,
    /// Base URL of the Ray dashboard (`--backend ray`).
    pub ray_address: String,
    /// A shard's arguments before `--shard I/N --json PART`: `eval` and this
    /// evaluation's flags, their paths absolute.
    pub args: Vec<OsString>,
    /// Time between polls of the running shards.
    pub poll: Duration,
}

/// The folder of the parts of `--json OUT`: `OUT.parts` beside it.
pub fn parts_dir(json: &Path) -> PathBuf {
    let mut name = json.as_os_str().to_os_string();
    name.push(".parts");
    PathBuf::from(name)
}

/// The part of shard `index` of `count` in `dir`.
pub fn part_path(dir: &Path, index: u32, count: u32) -> PathBuf {
    dir.join(format!("part-{index}-of-{count}.json"))
}

/// The shard count of a part's file name (`part-I-of-N.json`), if it is one.
fn count_of(name: &str) -> Option<u32> {
    let (i, n) = name
        .strip_prefix("part-")?
        .strip_suffix(".json")?
        .split_once("-of-")?;
    i.parse::<u32>().ok()?;
    n.parse().ok()
}

/// Runs the evaluation `opts` describes (`opts.json`: the joined result) as
/// `plan` says and returns the joined outcome to print, then write. When
/// `stopped` says so (a signal), the running shards are stopped and the
/// error is [`Error::Cancelled`]; the parts written so far stay.
pub fn run(
    cfg: Config,
    opts: &EvalOptions,
    plan: &ShardedEval,
    stopped: &dyn Fn() -> bool,
    mut say: impl FnMut(&str),
) -> Result<EvalOutcome> {
    let began = Instant::now();
    let json = check_flags(opts, plan)?;
    let at_once = plan.parallel.min(plan.shards as usize).max(1);
    let threads = cfg.run.threads;
    let each = threads.unwrap_or((crate::device::cores() / at_once).max(1));
    let env = child_env(threads.is_none().then_some(each));
    let expected = expected_parts(cfg, opts, plan.shards)?;
    let dir = parts_dir(json);
    std::fs::create_dir_all(&dir).map_err(|e| Error::io(&dir, e))?;
    check_parts(&dir, &expected)?;
    let tasks = tasks(&ray::absolute(&dir)?, plan);
    say(&format!(
        "{} in {} shards, {at_once} at once on {} with {} each; parts and logs in {}",
        count(
            expected[0].shard.map_or(0, |p| p.total) as u64,
            "test image"
        ),
        plan.shards,
        crate::config::spelled(&plan.backend),
        count(each as u64, "thread"),
        dir.display()
    ));
    let policy = Policy {
        parallel: plan.parallel,
        retries: plan.retries,
        poll: plan.poll,
    };
    let results = if plan.backend == Backend::Ray {
        let mut exec = ray::Ray::new(&plan.ray_address, Some(each))?;
        exec.env = env;
        schedule(&mut exec, &tasks, policy, stopped, &mut say)?
    } else {
        let mut exec = local::Local::new()?;
        exec.env = env.into_iter().map(|(k, v)| (k.into(), v.into())).collect();
        schedule(&mut exec, &tasks, policy, stopped, &mut say)?
    };
    let failed: Vec<String> = (results.iter().zip(&tasks))
        .filter(|(r, _)| matches!(r.status, RunStatus::Failed { .. }))
        .map(|(_, t)| t.log.display().to_string())
        .collect();
    if !failed.is_empty() {
        return Err(Error::Process(format!(
            "eval --shards {}: {} of the shards failed (their logs: {}); run the same command again to run only the shards without a part",
            plan.shards,
            failed.len(),
            failed.join(", ")
        )));
    }
    check_parts(&dir, &expected)?;
    let parts: Vec<PathBuf> = tasks.iter().map(|t| t.done.clone()).collect();
    let mut outcome = crate::eval::command::merge(&parts, json)?;
    outcome.wall_s = began.elapsed().as_secs_f64();
    Ok(outcome)
}

/// `--json`, after refusing what a split evaluation cannot do.
fn check_flags<'a>(opts: &'a EvalOptions, plan: &ShardedEval) -> Result<&'a Path> {
    let refuse = |why: &str| {
        Err(Error::Usage(format!(
            "eval --shards {}: {why}",
            plan.shards
        )))
    };
    if opts.shard.is_some() {
        return refuse("not with --shard (it runs every shard itself)");
    }
    if let Some(why) = unsplittable(opts) {
        return refuse(why);
    }
    if plan.backend == Backend::K8s {
        return refuse(
            "--backend k8s is not run from here: apply deploy/k8s/eval-shards-job.yaml, then eval-merge-job.yaml",
        );
    }
    match &opts.json {
        Some(json) => Ok(json),
        None => refuse("needs --json OUT, the joined result (the parts go in OUT.parts/)"),
    }
}

/// The variable that sets a shard's libtorch threads.
const THREADS_VAR: &str = "ARD__RUN__THREADS";

/// The environment of every shard: this process's `ARD__*` overrides (a Ray
/// job does not inherit them), and `threads` as `run.threads` when given
/// (the config leaves it unset: the cores are shared among the shards
/// running at once).
fn child_env(threads: Option<usize>) -> Vec<(String, String)> {
    let mut env: Vec<(String, String)> = std::env::vars()
        .filter(|(k, _)| k.starts_with("ARD__"))
        .collect();
    if let Some(t) = threads {
        env.retain(|(k, _)| k != THREADS_VAR);
        env.push((THREADS_VAR.into(), t.to_string()));
    }
    env
}

/// One task per shard: `ARGS --shard I/N --json DIR/part-I-of-N.json`, done
/// when that part exists, output in `DIR/part-I-of-N.log`.
fn tasks(dir: &Path, plan: &ShardedEval) -> Vec<Task> {
    let n = plan.shards;
    (0..n)
        .map(|i| {
            let part = part_path(dir, i, n);
            let mut args = plan.args.clone();
            args.extend(["--shard".into(), format!("{i}/{n}").into()]);
            args.extend(["--json".into(), part.clone().into_os_string()]);
            Task {
                index: i as usize,
                name: format!("shard-{i}-of-{n}"),
                args,
                log: part.with_extension("log"),
                done: part,
            }
        })
        .collect()
}

/// Refuses a part in `dir` that this command would not write: one of
/// another shard count, or one whose provenance or images differ from
/// `expected` (one per shard), each with how to clear it.
fn check_parts(dir: &Path, expected: &[EvalFile]) -> Result<()> {
    let n = expected.len() as u32;
    let refuse = |m: String| Err(Error::Usage(format!("eval --shards {n}: {m}")));
    let entries = std::fs::read_dir(dir).map_err(|e| Error::io(dir, e))?;
    for entry in entries {
        let name = entry.map_err(|e| Error::io(dir, e))?.file_name();
        match count_of(&name.to_string_lossy()) {
            Some(other) if other != n => {
                return refuse(format!(
                    "{} is a part of an evaluation in {other} shards; remove the folder {} to evaluate afresh (or give --shards {other} to finish that one)",
                    dir.join(&name).display(),
                    dir.display()
                ));
            }
            _ => {}
        }
    }
    for (i, want) in expected.iter().enumerate() {
        let path = part_path(dir, i as u32, n);
        if !path.is_file() {
            continue;
        }
        let text = std::fs::read_to_string(&path).map_err(|e| Error::io(&path, e))?;
        let checked = serde_json::from_str::<EvalFile>(&text)
            .map_err(|e| Error::Usage(format!("{} is not an eval JSON file ({e})", path.display())))
            .and_then(|part| {
                crate::eval::shards::check_part(want, &part, &path.display().to_string())
            });
        if let Err(e) = checked {
            return refuse(format!(
                "{e}; remove it (or the folder {}) to evaluate afresh",
                dir.display()
            ));
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn part_names_give_their_shard_count() {
        assert_eq!(count_of("part-0-of-2.json"), Some(2));
        assert_eq!(count_of("part-11-of-16.json"), Some(16));
        assert_eq!(count_of("part-0-of-2.log"), None);
        assert_eq!(count_of("part-0-of-2.tmp-123"), None);
        assert_eq!(count_of("part-x-of-2.json"), None);
        let dir = parts_dir(Path::new("runs/eval.json"));
        assert_eq!(dir, Path::new("runs/eval.json.parts"));
        assert_eq!(
            part_path(&dir, 1, 2),
            Path::new("runs/eval.json.parts/part-1-of-2.json")
        );
    }

    #[test]
    fn each_shard_runs_the_same_flags_on_its_own_part() {
        let plan = ShardedEval {
            shards: 2,
            parallel: 2,
            retries: 0,
            backend: Backend::Local,
            ray_address: String::new(),
            args: vec!["eval".into(), "--weights".into(), "/w.safetensors".into()],
            poll: Duration::from_millis(10),
        };
        let tasks = tasks(Path::new("/out/e.json.parts"), &plan);
        assert_eq!(tasks.len(), 2);
        let t = &tasks[1];
        assert_eq!(t.name, "shard-1-of-2");
        assert_eq!(
            t.args_text(str::to_string),
            "eval --weights /w.safetensors --shard 1/2 --json /out/e.json.parts/part-1-of-2.json"
        );
        assert_eq!(t.done, Path::new("/out/e.json.parts/part-1-of-2.json"));
        assert_eq!(t.log, Path::new("/out/e.json.parts/part-1-of-2.log"));
        // A Ray job runs the same command line, quoted, from this folder.
        let ray = ray::Ray::new("http://127.0.0.1:1", Some(1)).unwrap();
        let body = ray.submission(t, "shard-1-of-2-a1-0");
        let entry = body["entrypoint"].as_str().unwrap();
        assert!(
            entry.ends_with(
                "eval --weights '/w.safetensors' --shard '1/2' --json '/out/e.json.parts/part-1-of-2.json'"
            ),
            "{entry}"
        );
    }
}
