//! The `ray` backend against a real Ray head on 127.0.0.1 (the project venv's
//! `ray`, from scripts/requirements.txt): the tiny sweep is submitted through
//! the Ray Jobs REST API, each run's logs come back into the sweep folder, and
//! a failing row's Ray job is reported with its logs and retried; then an
//! evaluation split in two shards runs as two Ray jobs and joins.

mod common;

use common::services::{free_port, Killed};
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

extern "C" {
    fn kill(pid: i32, sig: i32) -> i32;
}

/// `ray start --head --block` in its own temp dir; SIGTERM on drop stops every
/// process it started.
struct RayHead {
    child: Option<Killed>,
    port: u16,
    _dir: tempfile::TempDir,
}

impl RayHead {
    fn start(ray: &Path) -> RayHead {
        // Ray's socket paths must stay short: a temp dir directly under /tmp.
        let dir = tempfile::Builder::new()
            .prefix("ray")
            .tempdir_in("/tmp")
            .unwrap();
        let port = free_port();
        let log = std::fs::File::create(dir.path().join("ray-start.log")).unwrap();
        let child = Command::new(ray)
            .args([
                "start",
                "--head",
                "--block",
                "--port=0",
                "--num-cpus=2",
                "--include-dashboard=true",
                "--dashboard-host=127.0.0.1",
                "--disable-usage-stats",
            ])
            .arg(format!("--dashboard-port={port}"))
            .arg(format!("--temp-dir={}", dir.path().join("t").display()))
            .env("RAY_USAGE_STATS_ENABLED", "0")
            .stdout(Stdio::from(log.try_clone().unwrap()))
            .stderr(Stdio::from(log))
            .spawn()
            .expect("ray start");
        let mut head = RayHead {
            child: Some(Killed(child)),
            port,
            _dir: dir,
        };
        let deadline = Instant::now() + Duration::from_secs(90);
        loop {
            if ureq::get(&format!("http://127.0.0.1:{port}/api/jobs/"))
                .timeout(Duration::from_secs(5))
                .call()
                .is_ok()
            {
                return head;
            }
            if let Some(Ok(Some(status))) = head.child.as_mut().map(|c| c.0.try_wait()) {
                let log = std::fs::read_to_string(head._dir.path().join("ray-start.log"))
                    .unwrap_or_default();
                panic!("ray start exited ({status}):\n{log}");
            }
            assert!(
                Instant::now() < deadline,
                "the Ray dashboard never answered on {port}"
            );
            std::thread::sleep(Duration::from_millis(500));
        }
    }
}

impl Drop for RayHead {
    fn drop(&mut self) {
        if let Some(mut c) = self.child.take() {
            // SAFETY: a signal to our own child, by PID.
            unsafe { kill(c.0.id() as i32, 15) };
            let deadline = Instant::now() + Duration::from_secs(30);
            while Instant::now() < deadline {
                if let Ok(Some(_)) = c.0.try_wait() {
                    break;
                }
                std::thread::sleep(Duration::from_millis(200));
            }
            // Killed's drop SIGKILLs it if it is still there.
        }
    }
}

fn base_config(dir: &Path) -> PathBuf {
    tch::manual_seed(0);
    let teacher = dir.join("teacher.safetensors");
    ard_pipeline::models::Model::new("wrn10_1".parse().unwrap(), tch::Device::Cpu)
        .save(&teacher)
        .unwrap();
    let cfg = dir.join("base.toml");
    std::fs::write(
        &cfg,
        format!(
            "[run]\nname = \"tiny\"\ndevice = \"cpu\"\n[data]\nroot = \"{root}\"\ndownload = false\nchecksums = \"skip\"\nbatch_size = 32\ntrain_limit = 64\n[teacher]\narch = \"wrn10_1\"\nweights = \"{t}\"\n[student]\narch = \"mobilenet_v2_x0.25\"\n[attack]\nkind = \"pgd\"\nsteps = 1\nstep_size = \"8/255\"\n[loss]\nkind = \"ard\"\n[optim]\nlr = 0.05\n[train]\nepochs = 1\n[eval]\nevery_epochs = 1\nattacks = [\"natural\", \"train_attack\", \"pgd2\"]\ntest_limit = 32\n[metrics]\nlisten = \"\"\n",
            root = common::cifar_root().display(),
            t = teacher.display()
        ),
    )
    .unwrap();
    cfg
}

#[test]
fn ray_backend_runs_the_sweep_as_ray_jobs() {
    let ray = common::repo().join(".venv/bin/ray");
    if !ray.is_file() {
        assert!(
            std::env::var_os("CI").is_none(),
            "no {} (scripts/bootstrap.sh installs scripts/requirements.txt)",
            ray.display()
        );
        eprintln!("SKIPPED: no {}", ray.display());
        return;
    }
    let started = Instant::now();
    let head = RayHead::start(&ray);
    eprintln!("ray head up in {:.1}s", started.elapsed().as_secs_f64());
    let dir = tempfile::tempdir().unwrap();
    let base = base_config(dir.path());
    let out = dir.path().join("sweeps");
    let file = dir.path().join("tiny-ray.toml");
    let missing = dir.path().join("no-such-teacher.safetensors");
    std::fs::write(
        &file,
        format!(
            "base = \"{}\"\n[sweep]\nname = \"tiny-ray\"\nout_dir = \"{}\"\nbackend = \"local\"\nparallel = 2\nretries = 1\nmetrics_base_port = 0\npoll_s = 0.5\nray_address = \"http://127.0.0.1:{}\"\n[[rows]]\n\"attack.steps\" = 1\n[[rows]]\n\"attack.steps\" = 2\n\"attack.step_size\" = \"4/255\"\n[[rows]]\n\"teacher.weights\" = \"{}\"\n",
            base.display(),
            out.display(),
            head.port,
            missing.display()
        ),
    )
    .unwrap();
    let run = Command::new(env!("CARGO_BIN_EXE_ard-pipeline"))
        .args([
            "sweep",
            "--backend",
            "ray",
            "--config",
            file.to_str().unwrap(),
        ])
        .current_dir(common::repo())
        .output()
        .unwrap();
    let stdout = String::from_utf8_lossy(&run.stdout);
    let stderr = String::from_utf8_lossy(&run.stderr);
    eprintln!("ray sweep done at {:.1}s", started.elapsed().as_secs_f64());
    assert_eq!(run.status.code(), Some(1), "{stdout}\n{stderr}");
    let sweep_dir = out.join("tiny-ray");
    for name in ["tiny-ray-00-as1", "tiny-ray-01-as2-ss4_255"] {
        assert!(
            sweep_dir
                .join("runs")
                .join(name)
                .join("summary.json")
                .is_file(),
            "{name}: {stdout}\n{stderr}"
        );
        // The job's logs were fetched into the sweep folder.
        let log =
            std::fs::read_to_string(sweep_dir.join("logs").join(format!("{name}.log"))).unwrap();
        assert!(log.contains("=== ray job") && log.contains(name), "{log}");
    }
    let failures: Vec<&str> = stderr
        .lines()
        .filter(|l| l.contains("FAILED tiny-ray-02"))
        .collect();
    assert_eq!(failures.len(), 2, "one attempt and one retry:\n{stderr}");
    assert!(
        failures[1].contains("FAILED") && failures[1].contains("ray job"),
        "{stderr}"
    );
    assert!(
        stderr.contains("no-such-teacher"),
        "the job's log tail:\n{stderr}"
    );
    assert!(
        stdout.contains("2 done") && stdout.contains("1 failed"),
        "{stdout}"
    );
    let csv = std::fs::read_to_string(sweep_dir.join("report.csv")).unwrap();
    assert_eq!(csv.lines().count(), 4, "{csv}");
    eval_shards_on_ray(head.port, dir.path());
    drop(head);
    eprintln!("ray test total {:.1}s", started.elapsed().as_secs_f64());
}

/// `eval --shards 2 --backend ray` on the head at `port`: two Ray jobs whose
/// parts join into the unsplit evaluation's result, their logs fetched
/// beside the parts.
fn eval_shards_on_ray(port: u16, dir: &Path) {
    let eval = |extra: &[&str]| {
        let out = Command::new(env!("CARGO_BIN_EXE_ard-pipeline"))
            .args(["eval", "--arch", "wrn16_2", "--weights"])
            .arg(common::repo().join("weights/teacher-cpu-wrn16_2.safetensors"))
            .arg("--data-root")
            .arg(common::cifar_root())
            .args([
                "--device",
                "cpu",
                "--test-limit",
                "64",
                "--batch-size",
                "32",
            ])
            .args(["--attacks", "natural"])
            .args(extra)
            .current_dir(common::repo())
            .output()
            .unwrap();
        let stderr = String::from_utf8_lossy(&out.stderr).into_owned();
        assert!(out.status.success(), "{stderr}");
        stderr
    };
    let (whole, split) = (dir.join("whole.json"), dir.join("split.json"));
    eval(&["--json", whole.to_str().unwrap()]);
    let address = format!("http://127.0.0.1:{port}");
    let stderr = eval(&[
        "--shards",
        "2",
        "--backend",
        "ray",
        "--ray-address",
        &address,
        "--json",
        split.to_str().unwrap(),
    ]);
    assert!(stderr.contains("done shard-1-of-2"), "{stderr}");
    let read = |p: &Path| -> serde_json::Value {
        let mut v: serde_json::Value =
            serde_json::from_str(&std::fs::read_to_string(p).unwrap()).unwrap();
        v.as_object_mut().unwrap().remove("seconds");
        v
    };
    assert_eq!(read(&whole), read(&split));
    assert_eq!(read(&whole)["images"], 64);
    let log = std::fs::read_to_string(dir.join("split.json.parts/part-1-of-2.log")).unwrap();
    assert!(log.contains("=== ray job shard-1-of-2"), "{log}");
}

/// A one-request-per-connection HTTP server on 127.0.0.1 answering like the
/// Ray Jobs API; records (method, path, body).
fn fake_ray(
    answers: Vec<(&'static str, String)>,
) -> (u16, std::sync::mpsc::Receiver<(String, String, String)>) {
    use std::io::{BufRead, BufReader, Read, Write};
    let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let port = listener.local_addr().unwrap().port();
    let (tx, rx) = std::sync::mpsc::channel();
    std::thread::spawn(move || {
        for (prefix, body) in answers {
            let (mut stream, _) = listener.accept().unwrap();
            let mut reader = BufReader::new(stream.try_clone().unwrap());
            let mut line = String::new();
            reader.read_line(&mut line).unwrap();
            let mut parts = line.split_whitespace();
            let method = parts.next().unwrap_or("").to_string();
            let path = parts.next().unwrap_or("").to_string();
            let mut length = 0;
            loop {
                let mut h = String::new();
                reader.read_line(&mut h).unwrap();
                if h.trim().is_empty() {
                    break;
                }
                if let Some(v) = h.to_ascii_lowercase().strip_prefix("content-length:") {
                    length = v.trim().parse().unwrap();
                }
            }
            let mut req = vec![0; length];
            reader.read_exact(&mut req).unwrap();
            assert!(
                path.starts_with(prefix),
                "expected a request to {prefix}, got {method} {path}"
            );
            tx.send((method, path, String::from_utf8(req).unwrap()))
                .unwrap();
            write!(
                stream,
                "HTTP/1.1 200 OK\r\nContent-Type: application/json\r\nContent-Length: {}\r\nConnection: close\r\n\r\n{body}",
                body.len()
            )
            .unwrap();
        }
    });
    (port, rx)
}

#[test]
fn ray_client_submits_polls_and_fetches_logs() {
    use ard_pipeline::sweep::{
        manifest::SweepDir, ray::Ray, schedule::Attempt, schedule::Executor,
    };
    let tmp = tempfile::tempdir().unwrap();
    let file = tmp.path().join("s.toml");
    std::fs::write(
        &file,
        format!(
            "base = \"{}\"\n[sweep]\nname = \"fake\"\nout_dir = \"{}\"\n[common]\n\"attack.kind\" = \"pgd\"\n[[rows]]\n\"attack.steps\" = 2\n",
            common::repo().join("configs/quickstart.toml").display(),
            tmp.path().display()
        ),
    )
    .unwrap();
    let (_, _, runs) =
        ard_pipeline::sweep::command::plan(&file, Some(ard_pipeline::sweep::Backend::Ray)).unwrap();
    let dir = SweepDir::new(tmp.path().join("fake"));
    std::fs::create_dir_all(dir.path.join("logs")).unwrap();
    let (port, requests) = fake_ray(vec![
        ("/api/jobs/", r#"{"job_id": "raysubmit_1", "submission_id": "fake-00-as2-a1-1"}"#.into()),
        ("/api/jobs/fake-00-as2-a1-1", r#"{"status": "RUNNING", "message": ""}"#.into()),
        (
            "/api/jobs/fake-00-as2-a1-1",
            r#"{"status": "FAILED", "message": "Job entrypoint command failed with exit code 1, last logs:\nmore"}"#.into(),
        ),
        ("/api/jobs/fake-00-as2-a1-1/logs", r#"{"logs": "starting\nerror: boom\n"}"#.into()),
    ]);
    let mut ray = Ray::new(&format!("http://127.0.0.1:{port}/"), Some(1)).unwrap();
    let task = dir.task(&runs[0]);
    let mut handle = ray.start(&task, 1).unwrap();
    assert_eq!(handle.submission_id, "fake-00-as2-a1-1");
    let (method, path, body) = requests.recv().unwrap();
    assert_eq!((method.as_str(), path.as_str()), ("POST", "/api/jobs/"));
    let body: serde_json::Value = serde_json::from_str(&body).unwrap();
    let entry = body["entrypoint"].as_str().unwrap();
    assert!(entry.starts_with("cd '/"), "{entry}");
    assert!(
        entry.contains("' --config '/") && entry.ends_with("fake-00-as2.toml'"),
        "{entry}"
    );
    assert!(
        body["submission_id"]
            .as_str()
            .unwrap()
            .starts_with("fake-00-as2-a1-"),
        "{body}"
    );
    assert_eq!(body["entrypoint_num_cpus"], 1);
    assert_eq!(body["metadata"]["sweep_run"], "fake-00-as2");
    assert!(ray.poll(&task, &mut handle).unwrap().is_none());
    match ray.poll(&task, &mut handle).unwrap() {
        Some(Attempt::Failed { reason, log_tail }) => {
            assert!(
                reason.contains("FAILED")
                    && reason.contains("exit code 1")
                    && !reason.contains("more"),
                "{reason}"
            );
            assert!(log_tail.contains("error: boom"), "{log_tail}");
        }
        other => panic!("expected a failure, got {other:?}"),
    }
    let methods: Vec<String> = requests
        .try_iter()
        .map(|(m, p, _)| format!("{m} {p}"))
        .collect();
    assert_eq!(
        methods,
        [
            "GET /api/jobs/fake-00-as2-a1-1",
            "GET /api/jobs/fake-00-as2-a1-1",
            "GET /api/jobs/fake-00-as2-a1-1/logs"
        ]
    );
    let log = std::fs::read_to_string(dir.log("fake-00-as2")).unwrap();
    assert!(log.contains("error: boom"), "{log}");
}
