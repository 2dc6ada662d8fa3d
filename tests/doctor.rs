//! `ard-pipeline doctor` on bad input: a missing or unreadable config, a
//! device this machine does not have, a weights file that is not there. Each
//! gives one clear line naming the thing at fault and a non-zero exit, never
//! a panic.

mod common;

use std::process::{Command, Output};

fn doctor(config: &std::path::Path) -> Output {
    Command::new(env!("CARGO_BIN_EXE_ard-pipeline"))
        .args(["--log-level", "error", "doctor", "--config"])
        .arg(config)
        .current_dir(common::repo())
        .output()
        .unwrap()
}

fn text(out: &Output) -> String {
    format!(
        "{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    )
}

/// A config that can run on the CPU here, with `extra` appended.
fn config(dir: &std::path::Path, extra: &str) -> std::path::PathBuf {
    let path = dir.join("c.toml");
    std::fs::write(
        &path,
        format!(
            "[run]\ndevice = \"cpu\"\n[data]\nroot = {:?}\ndownload = false\n\
             [teacher]\narch = \"wrn16_2\"\nweights = \"weights/teacher-cpu-wrn16_2.safetensors\"\n{extra}",
            common::cifar_root().display().to_string()
        ),
    )
    .unwrap();
    path
}

#[test]
fn a_config_that_can_run_here_is_ok() {
    let dir = tempfile::tempdir().unwrap();
    let out = doctor(&config(dir.path(), ""));
    let t = text(&out);
    assert!(out.status.success(), "{t}");
    assert!(
        t.contains("verdict: ok") && t.contains("runs on cpu"),
        "{t}"
    );
    assert!(t.contains("readable: every CIFAR-10 file is there"), "{t}");
}

#[test]
fn missing_or_unreadable_configs_give_one_line() {
    let dir = tempfile::tempdir().unwrap();
    for (path, expect) in [
        (dir.path().join("absent.toml"), "no such file"),
        (dir.path().to_path_buf(), "is a folder, not a config file"),
    ] {
        let out = doctor(&path);
        let stderr = String::from_utf8_lossy(&out.stderr);
        assert_eq!(out.status.code(), Some(1), "{stderr}");
        assert!(
            stderr.contains(expect) && stderr.contains(&*path.display().to_string()),
            "{stderr}"
        );
        assert_eq!(stderr.lines().count(), 1, "{stderr}");
        assert!(!stderr.contains("panicked"), "{stderr}");
    }
    let bad = dir.path().join("bad.toml");
    std::fs::write(&bad, [0xff, 0xfe, b'[', 0x00]).unwrap();
    let out = doctor(&bad);
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(1), "{stderr}");
    assert!(
        stderr.contains("bad.toml") && !stderr.contains("panicked"),
        "{stderr}"
    );
}

#[test]
fn a_device_this_machine_lacks_is_refused_with_the_reason() {
    let dir = tempfile::tempdir().unwrap();
    let path = config(dir.path(), "");
    let text_of = |device: &str| {
        let body = std::fs::read_to_string(&path)
            .unwrap()
            .replace("\"cpu\"", &format!("{device:?}"));
        let p = dir.path().join("d.toml");
        std::fs::write(&p, body).unwrap();
        let out = doctor(&p);
        (out.status.code(), text(&out))
    };
    let devices = tch::Cuda::device_count() as usize;
    let (code, t) = text_of(&format!("cuda:{}", devices + 2));
    assert_eq!(code, Some(1), "{t}");
    let verdict = t.lines().find(|l| l.starts_with("verdict")).unwrap();
    assert!(
        verdict.contains(&format!("cuda:{}", devices + 2)),
        "{verdict}"
    );
    assert!(verdict.contains("cannot run here"), "{verdict}");
    if !tch::utils::has_cudart() {
        assert!(verdict.contains("no CUDA support"), "{verdict}");
    } else if devices == 0 {
        assert!(verdict.contains("no CUDA device is visible"), "{verdict}");
    }
    // "auto" always runs, and says where and why.
    let (code, t) = text_of("auto");
    assert_eq!(code, Some(0), "{t}");
    assert!(t.contains("run.device = \"auto\": runs on"), "{t}");
}

#[test]
fn a_missing_weights_file_names_its_key() {
    let dir = tempfile::tempdir().unwrap();
    let path = config(dir.path(), "[loss]\nkind = \"ard\"\n");
    let body = std::fs::read_to_string(&path).unwrap().replace(
        "weights/teacher-cpu-wrn16_2.safetensors",
        "weights/absent.safetensors",
    );
    std::fs::write(&path, body).unwrap();
    let out = doctor(&path);
    let t = text(&out);
    assert_eq!(out.status.code(), Some(1), "{t}");
    assert!(
        t.contains("cannot run here: teacher.weights weights/absent.safetensors: no such file"),
        "{t}"
    );
}

#[test]
fn run_out_dir_that_is_a_file_blocks_the_verdict() {
    let dir = tempfile::tempdir().unwrap();
    let file = dir.path().join("runs-file");
    std::fs::write(&file, "not a folder").unwrap();
    let path = config(dir.path(), "");
    let body = std::fs::read_to_string(&path).unwrap().replacen(
        "device = \"cpu\"\n",
        &format!(
            "device = \"cpu\"\nout_dir = {:?}\n",
            file.display().to_string()
        ),
        1,
    );
    std::fs::write(&path, body).unwrap();
    let out = doctor(&path);
    let t = text(&out);
    assert_eq!(out.status.code(), Some(1), "{t}");
    let verdict = t.lines().find(|l| l.starts_with("verdict")).unwrap();
    assert!(
        verdict.contains("verdict: NO")
            && verdict.contains("run.out_dir")
            && verdict.contains("a file, not a folder"),
        "{t}"
    );
    // Below a file, the folder cannot be created either.
    let below = std::fs::read_to_string(&path)
        .unwrap()
        .replace("runs-file", "runs-file/sub");
    std::fs::write(&path, below).unwrap();
    let t = text(&doctor(&path));
    assert!(
        t.contains("verdict: NO") && t.contains("cannot be created"),
        "{t}"
    );
}

#[test]
fn json_into_a_missing_folder_is_one_line_naming_the_flag() {
    let dir = tempfile::tempdir().unwrap();
    let target = dir.path().join("absent").join("doctor.json");
    let out = Command::new(env!("CARGO_BIN_EXE_ard-pipeline"))
        .args(["--log-level", "error", "doctor", "--json"])
        .arg(&target)
        .current_dir(common::repo())
        .output()
        .unwrap();
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(1), "{stderr}");
    assert_eq!(stderr.lines().count(), 1, "{stderr}");
    assert!(
        stderr.contains("doctor --json")
            && stderr.contains(&*target.display().to_string())
            && stderr.contains("does not exist"),
        "{stderr}"
    );
    // Nothing was examined and printed before the refusal.
    assert!(
        out.stdout.is_empty(),
        "{}",
        String::from_utf8_lossy(&out.stdout)
    );
}
