//! Bad input, end to end through the command line: each case exits non-zero
//! with a message naming the thing at fault, never a panic or a backtrace.
//! The book's troubleshooting table (docs/src/troubleshooting.md) lists these messages.

mod common;

use common::services;
use std::path::{Path, PathBuf};
use std::process::{Command, Output};
use std::time::{Duration, Instant};

/// A small run on the offline CIFAR-10 copy; `extra` is appended (later keys of
/// a section would be duplicates, so cases add whole sections or replace text).
fn config_text(dir: &Path, teacher: &Path, port: u16) -> String {
    format!(
        "[run]\nname = \"bad\"\ndevice = \"cpu\"\nthreads = 1\nout_dir = \"{out}\"\n\
         [data]\nroot = \"{root}\"\ndownload = false\nchecksums = \"skip\"\nbatch_size = 32\ntrain_limit = 256\n\
         [teacher]\narch = \"wrn10_1\"\nweights = \"{t}\"\n\
         [student]\narch = \"mobilenet_v2_x0.25\"\n\
         [attack]\nkind = \"pgd\"\nsteps = 1\nstep_size = \"8/255\"\n\
         [loss]\nkind = \"ard\"\n\
         [train]\nepochs = 3\n\
         [eval]\nattacks = [\"natural\"]\ntest_limit = 32\n\
         [metrics]\nlisten = \"127.0.0.1:{port}\"\n",
        out = dir.join("runs").display(),
        root = common::cifar_root().display(),
        t = teacher.display()
    )
}

struct Case {
    dir: tempfile::TempDir,
    teacher: PathBuf,
    port: u16,
}

impl Case {
    fn new() -> Case {
        let dir = tempfile::tempdir().unwrap();
        let teacher = common::random_checkpoint(dir.path(), "teacher", "wrn10_1", 3);
        Case {
            dir,
            teacher,
            port: services::free_port(),
        }
    }

    fn text(&self) -> String {
        config_text(self.dir.path(), &self.teacher, self.port)
    }

    fn write(&self, text: &str) -> PathBuf {
        let path = self.dir.path().join("bad.toml");
        std::fs::write(&path, text).unwrap();
        path
    }

    /// Runs with `text` as the config and returns the combined output of a failed run.
    fn fails(&self, text: &str, args: &[&str]) -> String {
        let cfg = self.write(text);
        let out = run(Command::new(env!("CARGO_BIN_EXE_ard-pipeline"))
            .args(["--config", cfg.to_str().unwrap()])
            .args(args));
        failed(&out)
    }
}

fn run(cmd: &mut Command) -> Output {
    cmd.env_remove("RUST_BACKTRACE")
        .output()
        .expect("ard-pipeline runs")
}

fn failed(out: &Output) -> String {
    let text = format!(
        "{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(!out.status.success(), "should have failed:\n{text}");
    assert!(out.status.code().is_some(), "killed by a signal:\n{text}");
    assert!(
        !text.contains("panicked") && !text.contains("stack backtrace"),
        "a panic is not an error message:\n{text}"
    );
    println!(
        "---\n{}",
        text.lines()
            .filter(|l| l.contains("error") || l.contains("Error"))
            .collect::<Vec<_>>()
            .join("\n")
    );
    text
}

fn assert_names(text: &str, parts: &[&str]) {
    for p in parts {
        assert!(text.contains(p), "expected {p:?} in:\n{text}");
    }
}

#[test]
fn config_mistakes_name_the_file_key_and_value() {
    let c = Case::new();
    let base = c.text();
    let e = c.fails(&base.replace("steps = 1\n", "steps = 1\nepz = 0.1\n"), &[]);
    assert_names(&e, &["bad.toml", "attack.epz", "unknown field"]);
    let e = c.fails(
        &base.replace("batch_size = 32", "batch_size = \"big\""),
        &[],
    );
    assert_names(&e, &["bad.toml", "data.batch_size", "invalid type"]);
    let e = c.fails(&base.replace("steps = 1\n", "steps = 1\neps = -0.1\n"), &[]);
    assert_names(&e, &["attack.eps", "-0.1"]);
    let e = c.fails(
        &base.replace("step_size = \"8/255\"", "step_size = \"40/255\""),
        &[],
    );
    assert_names(&e, &["attack.step_size"]);
    let e = c.fails(&base.replace("batch_size = 32", "batch_size = 0"), &[]);
    assert_names(&e, &["data.batch_size", "0"]);
    let e = c.fails(&format!("{base}[pipeline]\nqueue_capacity = 0\n"), &[]);
    assert_names(&e, &["pipeline.queue_capacity"]);
    let e = c.fails(
        &base.replace("[run]\n", "[run]\ncheckpoint_every_steps = 0\n"),
        &[],
    );
    assert_names(&e, &["run.checkpoint_every_steps"]);
}

#[test]
fn empty_paths_huge_numbers_and_optional_values_are_named_plainly() {
    let c = Case::new();
    let base = c.text();
    let out_dir = format!("out_dir = \"{}\"", c.dir.path().join("runs").display());
    let root = format!("root = \"{}\"", common::cifar_root().display());
    let teacher = format!("weights = \"{}\"", c.teacher.display());
    for (text, key) in [
        (base.replace(&out_dir, "out_dir = \"\""), "run.out_dir"),
        (
            base.replace("[run]\n", "[run]\nsave_final = \"\"\n"),
            "run.save_final",
        ),
        (base.replace(&root, "root = \"\""), "data.root"),
        (base.replace(&teacher, "weights = \"\""), "teacher.weights"),
        (
            base.replace("[teacher]\n", "[teacher]\ncache_dir = \"\"\n"),
            "teacher.cache_dir",
        ),
    ] {
        let e = c.fails(&text, &["--dry-run"]);
        assert_names(&e, &[key, "must not be empty"]);
    }
    let e = c.fails(
        &base.replace("steps = 1\n", "steps = 18446744073709551615\n"),
        &[],
    );
    assert_names(&e, &["attack.steps", "too large"]);
    let e = c.fails(&base.replace("train_limit = 256", "train_limit = 0"), &[]);
    assert_names(&e, &["data.train_limit", "= 0"]);
    assert!(!e.contains("Some(") && !e.contains("None"), "{e}");
    // A folder where a weights file belongs.
    let folder = c.dir.path().join("a-folder.safetensors");
    std::fs::create_dir_all(&folder).unwrap();
    let e = c.fails(
        &base.replace(&teacher, &format!("weights = \"{}\"", folder.display())),
        &["--dry-run"],
    );
    assert_names(&e, &["a-folder.safetensors", "is a folder"]);
}

#[test]
fn environment_overrides_have_the_file_types_and_reach_every_command() {
    let c = Case::new();
    let cfg = c.write(&c.text());
    let bin = env!("CARGO_BIN_EXE_ard-pipeline");
    let with_env = |var: &str, value: &str, args: &[&str]| {
        run(Command::new(bin)
            .args(["--config", cfg.to_str().unwrap()])
            .args(args)
            .env(var, value))
    };
    for (var, value, key) in [
        ("ARD__TRAIN__EPOCHS", "1.5", "train.epochs"),
        ("ARD__ATTACK__STEPS", "2.7", "attack.steps"),
        ("ARD__DATA__BATCH_SIZE", "many", "data.batch_size"),
    ] {
        let e = failed(&with_env(var, value, &["validate"]));
        assert_names(&e, &[var, value, key]);
    }
    // A value of the right type that fails validation is blamed on the
    // variable, with its value (never "unset" for a NaN).
    for (var, value, key) in [
        ("ARD__RUN__DEVICE", "tpu", "run.device"),
        ("ARD__ATTACK__EPS", "5", "attack.eps"),
        ("ARD__ATTACK__EPS", "nan", "attack.eps"),
    ] {
        let e = failed(&with_env(var, value, &["validate"]));
        assert_names(&e, &[&format!("environment {var}=\"{value}\""), key]);
        assert!(!e.contains("unset"), "{e}");
    }
    // A number where a string is wanted is taken as the string.
    let out = with_env("ARD__RUN__NAME", "2024", &["validate"]);
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    // `eval` without --config reads the overrides too.
    let nowhere = c.dir.path().join("no-cifar-here");
    let out = run(Command::new(bin)
        .args(["eval", "--arch", "wrn10_1", "--weights"])
        .arg(&c.teacher)
        .args(["--attacks", "natural", "--test-limit", "8"])
        .env("ARD__DATA__ROOT", &nowhere)
        .env("ARD__DATA__DOWNLOAD", "false"));
    assert_names(&failed(&out), &["no-cifar-here"]);
    let out = run(Command::new(bin)
        .args(["eval", "--arch", "wrn10_1", "--weights"])
        .arg(&c.teacher)
        .args(["--attacks", "natural", "--test-limit", "0"]));
    assert_names(&failed(&out), &["--test-limit", "0"]);
}

#[test]
fn missing_and_truncated_dataset_files_are_named() {
    let c = Case::new();
    let empty = c.dir.path().join("no-data");
    std::fs::create_dir_all(&empty).unwrap();
    let root = common::cifar_root().display().to_string();
    let e = c.fails(&c.text().replace(&root, &empty.display().to_string()), &[]);
    assert_names(&e, &["no-data", "missing", "data.download"]);

    // Every file present, the test split cut short.
    let cut = c.dir.path().join("cut-data");
    std::fs::create_dir_all(&cut).unwrap();
    for entry in std::fs::read_dir(common::cifar_root()).unwrap() {
        let entry = entry.unwrap();
        let name = entry.file_name();
        if name == "test_batch.bin" {
            let bytes = std::fs::read(entry.path()).unwrap();
            std::fs::write(cut.join(&name), &bytes[..3073 * 100 + 17]).unwrap();
        } else {
            std::os::unix::fs::symlink(entry.path(), cut.join(&name)).unwrap();
        }
    }
    let e = c.fails(&c.text().replace(&root, &cut.display().to_string()), &[]);
    assert_names(&e, &["test_batch.bin", "truncated"]);
}

#[test]
fn a_checkpoint_of_another_architecture_lists_the_mismatches() {
    let c = Case::new();
    let text = c.text().replace(
        "arch = \"mobilenet_v2_x0.25\"\n",
        &format!(
            "arch = \"mobilenet_v2_x0.25\"\ninit = \"{}\"\n",
            c.teacher.display()
        ),
    );
    let e = c.fails(&text, &[]);
    assert_names(
        &e,
        &[
            "teacher.safetensors",
            "does not fit architecture mobilenet_v2_x0.25",
            "missing",
        ],
    );
}

#[test]
fn a_soft_label_cache_of_another_teacher_is_refused() {
    let c = Case::new();
    let cache = c.dir.path().join("cache");
    let text = c
        .text()
        .replace(
            "weights = ",
            &format!(
                "soft_labels = \"cached\"\nviews = 1\ncache_dir = \"{}\"\nweights = ",
                cache.display()
            ),
        )
        .replace("train_limit = 256", "train_limit = 64")
        .replace("epochs = 3", "epochs = 1");
    let cfg = c.write(&text);
    let out =
        run(Command::new(env!("CARGO_BIN_EXE_ard-pipeline"))
            .args(["--config", cfg.to_str().unwrap()]));
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    // Same architecture, other weights.
    common::random_checkpoint(c.dir.path(), "teacher", "wrn10_1", 4);
    let e = c.fails(&text, &["--fresh"]);
    assert_names(&e, &["soft-label cache", "another teacher"]);
}

#[test]
fn a_taken_metrics_port_names_the_address_and_the_key() {
    let c = Case::new();
    let _taken = std::net::TcpListener::bind(("127.0.0.1", c.port)).unwrap();
    let e = c.fails(&c.text(), &[]);
    assert_names(&e, &[&format!("127.0.0.1:{}", c.port), "metrics.listen"]);
}

#[test]
fn an_unwritable_run_folder_is_named() {
    let c = Case::new();
    let file = c.dir.path().join("a-file");
    std::fs::write(&file, "not a folder").unwrap();
    let runs = c.dir.path().join("runs").display().to_string();
    let e = c.fails(
        &c.text()
            .replace(&runs, &file.join("runs").display().to_string()),
        &[],
    );
    assert_names(&e, &["a-file", "run folder", "run.out_dir"]);
}

/// A full disk while checkpointing, simulated with a file-size limit
/// (`ulimit -f`, SIGXFSZ ignored so writes fail with EFBIG): the run stops
/// with an error naming the checkpoint, the previous checkpoint is untouched
/// and no temp file is left.
#[test]
fn a_full_disk_while_checkpointing_keeps_the_previous_checkpoint() {
    let c = Case::new();
    let text = c
        .text()
        .replace("[run]\n", "[run]\ncheckpoint_every_steps = 2\n");
    let cfg = c.write(&text);
    // A first run, killed after its first checkpoint.
    let mut child = services::Killed(
        Command::new(env!("CARGO_BIN_EXE_ard-pipeline"))
            .args(["--config", cfg.to_str().unwrap()])
            .stderr(std::process::Stdio::null())
            .spawn()
            .unwrap(),
    );
    let ckpt = c.dir.path().join("runs/bad/checkpoint.safetensors");
    let deadline = Instant::now() + Duration::from_secs(300);
    while !ckpt.exists() {
        assert!(Instant::now() < deadline, "no checkpoint written");
        assert!(child.0.try_wait().unwrap().is_none(), "the run ended early");
        std::thread::sleep(Duration::from_millis(20));
    }
    child.0.kill().unwrap();
    child.0.wait().unwrap();
    let before = std::fs::read(&ckpt).unwrap();
    // Resume with files limited to a size below the checkpoint's.
    let limit_kb = (before.len() / 1024 / 2).max(1);
    let out = run(Command::new("bash").args([
        "-c",
        &format!("trap '' XFSZ; ulimit -f {limit_kb}; exec \"$0\" --config \"$1\" --resume"),
        env!("CARGO_BIN_EXE_ard-pipeline"),
        cfg.to_str().unwrap(),
    ]));
    let e = failed(&out);
    assert_names(&e, &["checkpoint.safetensors", "write failed"]);
    assert_eq!(
        std::fs::read(&ckpt).unwrap(),
        before,
        "the previous checkpoint changed"
    );
    let leftovers: Vec<_> = std::fs::read_dir(c.dir.path().join("runs/bad"))
        .unwrap()
        .filter_map(|e| e.ok())
        .map(|e| e.file_name().to_string_lossy().into_owned())
        .filter(|n| n.contains(".tmp"))
        .collect();
    assert!(leftovers.is_empty(), "{leftovers:?}");
}

#[test]
fn a_config_that_is_a_pipe_or_a_sweep_file_is_named_as_such() {
    let c = Case::new();
    let bin = env!("CARGO_BIN_EXE_ard-pipeline");
    let fifo = c.dir.path().join("fifo.toml");
    let made = Command::new("mkfifo").arg(&fifo).status().unwrap();
    assert!(made.success());
    let e = failed(&run(Command::new(bin)
        .args(["validate", "--config"])
        .arg(&fifo)));
    assert_names(&e, &["fifo.toml", "not a regular file"]);
    assert!(!e.contains("no such file"), "{e}");
    let sweep = c.dir.path().join("sweep.toml");
    std::fs::write(
        &sweep,
        "base = \"bad.toml\"\n[sweep]\nname = \"s\"\n[grid]\n\"optim.lr\" = [0.1]\n",
    )
    .unwrap();
    for command in ["validate", "doctor"] {
        let e = failed(&run(Command::new(bin)
            .args([command, "--config"])
            .arg(&sweep)));
        assert_names(&e, &["sweep.toml", "is a sweep file", "sweep --dry-run"]);
        assert!(!e.contains("unknown field"), "{e}");
    }
}
