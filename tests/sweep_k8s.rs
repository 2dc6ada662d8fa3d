//! The `k8s` backend renders, and does not apply, an Indexed Job and a
//! ConfigMap of run configs: for the paper's Table 2 they pass
//! `kubernetes-validate --strict` (as do the static manifests in deploy/k8s),
//! have the expected structure read back with PyYAML, and hold exactly the
//! configs the sweep expands to; the pod's command (`sweep-run --configs DIR`,
//! row from JOB_COMPLETION_INDEX) runs a row. The split evaluation's Jobs
//! (eval-shards-job.yaml, eval-merge-job.yaml) parse with the binary's own
//! command line into the shards and the merge of the parts that
//! `eval --shards` names.

mod common;

/// The binary's own command-line definition, to parse the Jobs' arguments.
#[allow(dead_code)]
#[path = "../src/cli.rs"]
mod cli;

use ard_pipeline::sweep::{self, Backend};
use std::path::{Path, PathBuf};
use std::process::Command;

fn bin() -> Command {
    Command::new(env!("CARGO_BIN_EXE_ard-pipeline"))
}

/// `kubernetes-validate --strict FILES` from the venv; false when it is not installed.
fn kubernetes_validate(files: &[PathBuf]) -> bool {
    let kv = common::repo().join(".venv/bin/kubernetes-validate");
    if !kv.is_file() {
        assert!(
            std::env::var_os("CI").is_none(),
            "no {} (scripts/bootstrap.sh installs scripts/requirements.txt)",
            kv.display()
        );
        eprintln!("SKIPPED kubernetes-validate: no {}", kv.display());
        return false;
    }
    let out = Command::new(&kv)
        .arg("--strict")
        .args(files)
        .output()
        .unwrap();
    let text = format!(
        "{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(
        out.status.success(),
        "kubernetes-validate --strict failed:\n{text}"
    );
    assert_eq!(text.matches("passed").count(), files.len(), "{text}");
    true
}

/// Checks the Job and ConfigMap with PyYAML and writes the ConfigMap's
/// entries as files into `out` (what the pod sees under /etc/ard-sweep).
const CHECK: &str = r#"
import sys, os, yaml, tomllib
job_path, cm_path, out, n, parallel = sys.argv[1], sys.argv[2], sys.argv[3], int(sys.argv[4]), int(sys.argv[5])
job = yaml.safe_load(open(job_path))
cm = yaml.safe_load(open(cm_path))
assert job["apiVersion"] == "batch/v1" and job["kind"] == "Job", job
spec = job["spec"]
assert spec["completionMode"] == "Indexed", spec
assert spec["completions"] == n and spec["parallelism"] == parallel, spec
pod = spec["template"]["spec"]
assert pod["restartPolicy"] == "Never"
[c] = pod["containers"]
assert c["command"] == ["ard-pipeline"], c
assert c["args"][:3] == ["sweep-run", "--configs", "/etc/ard-sweep"], c["args"]
assert c["args"][3:] == ["--index", "$(JOB_COMPLETION_INDEX)"], c["args"]
env = {e["name"]: e for e in c["env"]}
assert "job-completion-index" in env["JOB_COMPLETION_INDEX"]["valueFrom"]["fieldRef"]["fieldPath"]
mounts = {m["name"]: m["mountPath"] for m in c["volumeMounts"]}
vols = {v["name"]: v for v in pod["volumes"]}
assert mounts["configs"] == "/etc/ard-sweep"
assert vols["configs"]["configMap"]["name"] == cm["metadata"]["name"], (vols, cm["metadata"])
assert cm["kind"] == "ConfigMap" and cm["metadata"]["namespace"] == job["metadata"]["namespace"]
assert sorted(cm["data"]) == sorted(f"{i}.toml" for i in range(n)), sorted(cm["data"])
os.makedirs(out, exist_ok=True)
for key, text in cm["data"].items():
    cfg = tomllib.loads(text)
    i = int(key.split(".")[0])
    assert cfg["run"]["name"].startswith(f"-{i:02}") or f"-{i:02}" in cfg["run"]["name"], (key, cfg["run"]["name"])
    open(os.path.join(out, key), "w").write(text)
print("ok", n)
"#;

fn check_with_pyyaml(job: &Path, cm: &Path, out: &Path, n: usize, parallel: usize) {
    let py = common::repo().join(".venv/bin/python");
    assert!(
        py.is_file(),
        "no {} — run scripts/bootstrap.sh",
        py.display()
    );
    let o = Command::new(py)
        .args(["-c", CHECK])
        .args([job, cm, out])
        .args([n.to_string(), parallel.to_string()])
        .output()
        .unwrap();
    assert!(
        o.status.success(),
        "{}\n{}",
        String::from_utf8_lossy(&o.stdout),
        String::from_utf8_lossy(&o.stderr)
    );
}

#[test]
fn table2_renders_a_valid_indexed_job() {
    let tmp = tempfile::tempdir().unwrap();
    let table2 = common::repo().join("configs/paper/table2.toml");
    let out = bin()
        .args([
            "sweep",
            "--backend",
            "k8s",
            "--config",
            table2.to_str().unwrap(),
        ])
        .current_dir(tmp.path())
        .output()
        .unwrap();
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(
        out.status.success(),
        "{stdout}\n{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(stdout.contains("kubectl apply -f"), "{stdout}");
    let k = tmp.path().join("runs/sweeps/table2/k8s");
    let (job, cm) = (k.join("job.yaml"), k.join("configmap.yaml"));
    // Nothing ran: no run folders.
    assert_eq!(
        std::fs::read_dir(tmp.path().join("runs/sweeps/table2/runs"))
            .unwrap()
            .count(),
        0
    );
    let mut files = vec![job.clone(), cm.clone()];
    for f in std::fs::read_dir(common::repo().join("deploy/k8s")).unwrap() {
        let p = f.unwrap().path();
        if p.extension().is_some_and(|e| e == "yaml") {
            files.push(p);
        }
    }
    assert!(files.len() >= 7, "{files:?}");
    kubernetes_validate(&files);

    let configs = tmp.path().join("configs");
    check_with_pyyaml(&job, &cm, &configs, 35, 1);
    // The ConfigMap holds exactly the expanded runs, placed for the pods.
    let (_, _, runs) = sweep::command::plan(&table2, Some(Backend::K8s)).unwrap();
    for r in &runs {
        let cfg = ard_pipeline::config::load(&configs.join(format!("{}.toml", r.index))).unwrap();
        assert_eq!(cfg.run.name, r.name);
        assert_eq!(cfg.train.epochs, r.config.train.epochs);
        assert_eq!(cfg.attack.steps, r.config.attack.steps);
        assert_eq!(cfg.student.arch, r.config.student.arch);
        assert_eq!(cfg.run.out_dir, Path::new("/results/table2/runs"));
        assert_eq!(cfg.metrics.listen, "0.0.0.0:9187");
    }
    // The committed example is the rendered Job.
    let rendered = std::fs::read_to_string(&job).unwrap();
    let body: String = rendered.lines().skip(1).map(|l| format!("{l}\n")).collect();
    let committed =
        std::fs::read_to_string(common::repo().join("deploy/k8s/sweep-job.yaml")).unwrap();
    assert!(
        committed.ends_with(&body),
        "deploy/k8s/sweep-job.yaml is not what `sweep --backend k8s` renders for table2:\n{body}"
    );
    let shards =
        std::fs::read_to_string(common::repo().join("deploy/k8s/soft-labels-job.yaml")).unwrap();
    assert!(
        shards.contains("completionMode: Indexed") && shards.contains("$(JOB_COMPLETION_INDEX)/8")
    );
}

#[test]
fn a_pod_runs_its_row_from_the_rendered_configs() {
    let tmp = tempfile::tempdir().unwrap();
    tch::manual_seed(0);
    let teacher = tmp.path().join("teacher.safetensors");
    ard_pipeline::models::Model::new("wrn10_1".parse().unwrap(), tch::Device::Cpu)
        .save(&teacher)
        .unwrap();
    let base = tmp.path().join("base.toml");
    std::fs::write(
        &base,
        format!(
            "[run]\ndevice = \"cpu\"\n[data]\nroot = \"{}\"\ndownload = false\nchecksums = \"skip\"\nbatch_size = 32\ntrain_limit = 64\n[teacher]\narch = \"wrn10_1\"\nweights = \"{}\"\n[student]\narch = \"mobilenet_v2_x0.25\"\n[attack]\nsteps = 1\nstep_size = \"8/255\"\n[loss]\nkind = \"ard\"\n[eval]\nattacks = [\"natural\"]\ntest_limit = 32\n",
            common::cifar_root().display(),
            teacher.display()
        ),
    )
    .unwrap();
    let file = tmp.path().join("tiny-k8s.toml");
    std::fs::write(
        &file,
        format!(
            "base = \"{}\"\n[sweep]\nname = \"tiny_k8s\"\nbackend = \"k8s\"\nparallel = 2\n[sweep.k8s]\nimage = \"example/ard:1\"\nnamespace = \"ard\"\ngpus = 0\nresults_mount = \"{}\"\n[grid]\n\"attack.steps\" = [1, 2]\n",
            base.display(),
            tmp.path().join("results").display()
        ),
    )
    .unwrap();
    let (f, backend, runs) = sweep::command::plan(&file, None).unwrap();
    assert_eq!(backend, Backend::K8s);
    let (job, cm) = (tmp.path().join("job.yaml"), tmp.path().join("cm.yaml"));
    std::fs::write(&job, sweep::k8s::job(&f, &runs)).unwrap();
    std::fs::write(&cm, sweep::k8s::config_map(&f, &runs)).unwrap();
    assert!(std::fs::read_to_string(&job)
        .unwrap()
        .contains("name: ard-sweep-tiny-k8s\n"));
    kubernetes_validate(&[job.clone(), cm.clone()]);
    let configs = tmp.path().join("etc");
    check_with_pyyaml(&job, &cm, &configs, 2, 2);
    // What pod 1 runs: its index from the environment, the config from the mount.
    let out = bin()
        .args([
            "sweep-run",
            "--configs",
            configs.to_str().unwrap(),
            "--dry-run",
        ])
        .env("JOB_COMPLETION_INDEX", "1")
        .output()
        .unwrap();
    assert!(
        out.status.success() && String::from_utf8_lossy(&out.stdout).contains("dry run ok"),
        "{}\n{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    let out = bin()
        .args([
            "sweep-run",
            "--configs",
            configs.to_str().unwrap(),
            "--index",
            "7",
        ])
        .output()
        .unwrap();
    assert!(!out.status.success());
    assert!(String::from_utf8_lossy(&out.stderr).contains("7.toml"));
}

/// A Job's init containers' commands, its containers' arguments and its
/// completions and parallelism, as JSON (read with PyYAML).
fn job_args(file: &str) -> serde_json::Value {
    const READ: &str = r#"
import sys, json, yaml
spec = yaml.safe_load(open(sys.argv[1]))["spec"]
pod = spec["template"]["spec"]
[c] = pod["containers"]
assert c["command"] == ["ard-pipeline"], c
print(json.dumps({
    "init": [i["command"] for i in pod.get("initContainers", [])],
    "args": c["args"],
    "completions": spec["completions"],
    "parallelism": spec.get("parallelism", 1),
    "indexed": spec.get("completionMode") == "Indexed",
}))
"#;
    let py = common::repo().join(".venv/bin/python");
    let out = Command::new(py)
        .args(["-c", READ])
        .arg(common::repo().join("deploy/k8s").join(file))
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    serde_json::from_slice(&out.stdout).unwrap()
}

/// `ard-pipeline ARGS` through the binary's command-line parser.
fn parse(args: &[String]) -> cli::Command {
    use clap::Parser;
    let argv = std::iter::once("ard-pipeline".to_string()).chain(args.iter().cloned());
    match cli::Cli::try_parse_from(argv) {
        Ok(c) => c.command.expect("a subcommand"),
        Err(e) => panic!("{args:?} does not parse: {e}"),
    }
}

#[test]
fn the_split_evaluation_jobs_run_the_shards_and_merge_their_parts() {
    use ard_pipeline::sweep::eval_shards::{part_path, parts_dir};
    let job = job_args("eval-shards-job.yaml");
    let n = job["completions"].as_u64().unwrap() as u32;
    assert!(job["indexed"].as_bool().unwrap() && n > 1, "{job}");
    let args: Vec<String> = serde_json::from_value(job["args"].clone()).unwrap();
    let mut out = None;
    for i in 0..n {
        let pod: Vec<String> = args
            .iter()
            .map(|a| a.replace("$(JOB_COMPLETION_INDEX)", &i.to_string()))
            .collect();
        let cli::Command::Eval(eval) = parse(&pod) else {
            panic!("not eval: {pod:?}")
        };
        let shard = eval.shard.expect("--shard");
        assert_eq!((shard.index, shard.count), (i, n), "{pod:?}");
        assert!(eval.action.is_none() && eval.shards.is_none() && eval.weights.is_some());
        // Its part is where `eval --shards N --json OUT` keeps part i.
        let part = eval.json.expect("--json");
        let dir = part.parent().unwrap().to_path_buf();
        let name = dir.file_name().unwrap().to_str().unwrap();
        let whole = dir.with_file_name(name.strip_suffix(".parts").expect("OUT.parts"));
        assert_eq!(part, part_path(&parts_dir(&whole), i, n));
        out = Some(whole);
    }
    let out = out.unwrap();
    // The init container makes the parts folder, which `eval --json` wants to exist.
    let mkdir = serde_json::json!([["mkdir", "-p", parts_dir(&out)]]);
    assert_eq!(job["init"], mkdir, "{job}");
    let merge = job_args("eval-merge-job.yaml");
    let margs: Vec<String> = serde_json::from_value(merge["args"].clone()).unwrap();
    let cli::Command::Eval(eval) = parse(&margs) else {
        panic!("not eval: {margs:?}")
    };
    let Some(cli::EvalAction::Merge(m)) = eval.action else {
        panic!("not eval merge: {margs:?}")
    };
    let parts: Vec<PathBuf> = (0..n).map(|i| part_path(&parts_dir(&out), i, n)).collect();
    assert_eq!(m.parts, parts);
    assert_eq!(m.json, out);
}
