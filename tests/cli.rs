//! The command line as a user meets it: help, validate, clear errors and exit
//! codes, and `eval` on a converted PyTorch checkpoint giving PyTorch's numbers.

mod common;

/// The binary's own command-line definition, walked through clap's tree.
#[allow(dead_code)]
#[path = "../src/cli.rs"]
mod cli;

use clap::CommandFactory;
use std::collections::BTreeMap;
use std::process::Command;

fn bin() -> Command {
    let mut c = Command::new(env!("CARGO_BIN_EXE_ard-pipeline"));
    c.current_dir(common::repo());
    c
}

fn run(args: &[&str]) -> (i32, String, String) {
    let out = bin().args(args).output().unwrap();
    (
        out.status.code().unwrap_or(-1),
        String::from_utf8_lossy(&out.stdout).into(),
        String::from_utf8_lossy(&out.stderr).into(),
    )
}

#[test]
fn help_lists_the_commands() {
    let (code, out, _) = run(&["--help"]);
    assert_eq!(code, 0);
    for word in ["validate", "eval", "--config", "--engine"] {
        assert!(out.contains(word), "{word} missing from --help:\n{out}");
    }
}

#[test]
fn validate_finds_configs_by_name_and_rejects_bad_ones() {
    let (code, out, err) = run(&["validate", "--config", "single-t4.toml"]);
    assert_eq!(code, 0, "{err}");
    assert!(out.contains("ok"), "{out}");
    let dir = tempfile::tempdir().unwrap();
    let bad = dir.path().join("bad.toml");
    std::fs::write(&bad, "[attack]\nsteps = \"many\"\n").unwrap();
    let (code, _, err) = run(&["validate", "--config", bad.to_str().unwrap()]);
    assert_eq!(code, 1);
    assert!(
        err.contains("bad.toml") && err.contains("attack.steps"),
        "{err}"
    );
    assert!(
        !err.contains("panicked") && !err.contains("RUST_BACKTRACE"),
        "{err}"
    );
    let (code, _, err) = run(&["--config", "no-such.toml"]);
    assert_eq!(code, 1);
    assert!(err.contains("no-such.toml"), "{err}");
}

#[test]
fn eval_of_a_converted_checkpoint_matches_pytorch() {
    let dir = tempfile::tempdir().unwrap();
    let pt = dir.path().join("model.pt");
    let st = dir.path().join("model.safetensors");
    let arch = "mobilenet_v2_x0.5";
    common::python(
        "eval_cli.py",
        &["--arch", arch, "--make", pt.to_str().unwrap()],
    );
    let py = common::repo().join(".venv/bin/python");
    let conv = Command::new(py)
        .arg(common::repo().join("scripts/convert_checkpoint.py"))
        .args([pt.to_str().unwrap(), st.to_str().unwrap()])
        .output()
        .unwrap();
    assert!(
        conv.status.success(),
        "{}",
        String::from_utf8_lossy(&conv.stderr)
    );

    let json = dir.path().join("eval.json");
    let logits = dir.path().join("logits.safetensors");
    let root = common::cifar_root();
    let cfg = dir.path().join("eval.toml");
    std::fs::write(&cfg, format!("[run]\ndevice = \"cpu\"\n[data]\nroot = \"{}\"\nchecksums = \"any\"\ndownload = false\n[loss]\nkind = \"pgd_at\"\n", root.display())).unwrap();
    let (code, out, err) = run(&[
        "eval",
        "--config",
        cfg.to_str().unwrap(),
        "--arch",
        arch,
        "--weights",
        st.to_str().unwrap(),
        "--test-limit",
        "500",
        "--attacks",
        "natural",
        "--json",
        json.to_str().unwrap(),
        "--save-logits",
        logits.to_str().unwrap(),
    ]);
    assert_eq!(code, 0, "{out}\n{err}");
    let report: serde_json::Value =
        serde_json::from_str(&std::fs::read_to_string(&json).unwrap()).unwrap();
    let ours = report["accuracy"]["natural"].as_f64().unwrap();

    let reference: serde_json::Value = serde_json::from_str(&common::python(
        "eval_cli.py",
        &[
            "--arch",
            arch,
            "--weights",
            st.to_str().unwrap(),
            "--data",
            root.to_str().unwrap(),
            "--n",
            "500",
        ],
    ))
    .unwrap();
    assert!(
        (ours - reference["accuracy"].as_f64().unwrap()).abs() < 1e-4, // float32 mean on the Python side
        "accuracy {ours} vs PyTorch {}",
        reference["accuracy"]
    );
    let saved = common::read(&logits);
    let theirs: Vec<Vec<f64>> = serde_json::from_value(reference["logits"].clone()).unwrap();
    let theirs = tch::Tensor::from_slice(&theirs.concat()).view([500, 10]);
    let e = common::rel_err(&saved["logits"], &theirs, 1.0);
    assert!(e < 1e-4, "logits differ from PyTorch: rel {e}");
}

#[test]
fn eval_of_a_wrong_architecture_names_the_mismatch() {
    let dir = tempfile::tempdir().unwrap();
    let st = dir.path().join("r18.safetensors");
    ard_pipeline::models::Model::new(ard_pipeline::models::Arch::ResNet18, tch::Device::Cpu)
        .save(&st)
        .unwrap();
    let root = common::cifar_root();
    let (code, _, err) = run(&[
        "eval",
        "--arch",
        "mobilenet_v2",
        "--weights",
        st.to_str().unwrap(),
        "--data-root",
        root.to_str().unwrap(),
        "--test-limit",
        "10",
    ]);
    assert_eq!(code, 1);
    assert!(
        err.contains("does not fit architecture mobilenet_v2"),
        "{err}"
    );
}

/// Every visible subcommand (nested ones too) by its path, e.g. "soft-labels merge".
fn subcommands() -> Vec<(String, clap::Command)> {
    fn walk(prefix: &str, cmd: &clap::Command, out: &mut Vec<(String, clap::Command)>) {
        for sub in cmd.get_subcommands().filter(|s| !s.is_hide_set()) {
            let path = format!("{prefix}{}", sub.get_name()).trim().to_string();
            out.push((path.clone(), sub.clone()));
            walk(&format!("{path} "), sub, out);
        }
    }
    let mut cmd = cli::Cli::command();
    cmd.build();
    let mut out = Vec::new();
    walk("", &cmd, &mut out);
    out
}

/// A flag's help text, long form when it has one.
fn help_of(arg: &clap::Arg) -> String {
    arg.get_long_help()
        .or(arg.get_help())
        .map(ToString::to_string)
        .unwrap_or_default()
}

#[test]
fn the_command_tree_is_well_formed() {
    cli::Cli::command().debug_assert();
}

#[test]
fn every_subcommand_describes_its_own_config() {
    let mut seen: BTreeMap<String, String> = BTreeMap::new();
    for (path, cmd) in subcommands() {
        let Some(arg) = cmd.get_arguments().find(|a| a.get_id() == "config") else {
            continue;
        };
        let help = help_of(arg);
        assert!(!help.is_empty(), "`{path} --config` has no help");
        assert!(
            !help.contains("subcommand"),
            "`{path} --config` describes the top level, not {path}: {help}"
        );
        if let Some(other) = seen.insert(help.clone(), path.clone()) {
            panic!("`{path} --config` and `{other} --config` share one description: {help}");
        }
    }
    for path in [
        "run",
        "validate",
        "doctor",
        "eval",
        "soft-labels",
        "soft-labels merge",
        "sweep",
        "bench",
        "export",
    ] {
        assert!(
            seen.values().any(|p| p == path),
            "`{path}` has no --config of its own: {seen:?}"
        );
    }
    // `report` reads a sweep folder only: no --config that would do nothing.
    let (_, report) = subcommands()
        .into_iter()
        .find(|(p, _)| p == "report")
        .unwrap();
    assert!(report.get_arguments().all(|a| a.get_id() != "config"));
}

#[test]
fn no_flag_description_is_copied_between_subcommands() {
    // help text -> the first subcommand and flag that use it.
    let mut seen: BTreeMap<String, (String, String)> = BTreeMap::new();
    for (path, cmd) in subcommands() {
        for arg in cmd.get_arguments() {
            let id = arg.get_id().to_string();
            if arg.is_global_set()
                || arg.is_hide_set()
                || ["help", "version"].contains(&id.as_str())
            {
                continue;
            }
            let help = help_of(arg);
            assert!(!help.is_empty(), "`{path} --{id}` has no help");
            match seen.get(&help) {
                Some((other, other_id)) if *other != path => panic!(
                    "`{path} --{id}` copies the description of `{other} --{other_id}`: {help}"
                ),
                _ => {
                    seen.insert(help, (path.clone(), id));
                }
            }
        }
    }
}

/// The first line of clap's error for `args`, or "" when they parse.
fn parse_error(args: &[&str]) -> String {
    let argv = std::iter::once("ard-pipeline").chain(args.iter().copied());
    match <cli::Cli as clap::Parser>::try_parse_from(argv) {
        Ok(_) => String::new(),
        Err(e) => e.to_string().lines().next().unwrap_or_default().to_string(),
    }
}

#[test]
fn image_counts_above_their_maximum_are_refused_naming_flag_value_and_range() {
    let export = [
        "export",
        "--arch",
        "resnet18",
        "--weights",
        "w",
        "--out",
        "o",
    ];
    let cases: [(Vec<&str>, &str, &str, &str); 3] = [
        (
            vec!["eval", "--test-limit", "10001"],
            "--test-limit",
            "10001",
            "10000",
        ),
        (
            [&export[..], &["--test-images", "10001"]].concat(),
            "--test-images",
            "10001",
            "10000",
        ),
        (
            [&export[..], &["--int8", "--calibration", "50001"]].concat(),
            "--calibration",
            "50001",
            "50000",
        ),
    ];
    for (args, flag, value, max) in cases {
        let e = parse_error(&args);
        assert!(
            e.contains(flag) && e.contains(value) && e.contains(max),
            "{args:?}: {e}"
        );
        // The maximum itself and 1 are accepted; 0 is refused like the rest.
        let at_max: Vec<&str> = args
            .iter()
            .map(|a| if *a == value { max } else { a })
            .collect();
        assert_eq!(parse_error(&at_max), "", "{at_max:?}");
        let zero: Vec<&str> = args
            .iter()
            .map(|a| if *a == value { "0" } else { a })
            .collect();
        assert!(parse_error(&zero).contains(flag), "{zero:?}");
    }
}

#[test]
fn config_before_a_subcommand_reaches_it_and_wrong_top_level_flags_are_refused() {
    let dir = tempfile::tempdir().unwrap();
    let cfg = dir.path().join("ok.toml");
    std::fs::write(&cfg, "[loss]\nkind = \"pgd_at\"\n[train]\nepochs = 1\n").unwrap();
    let cfg = cfg.to_str().unwrap();
    // Both places work; "1 epoch", not "1 epochs".
    for args in [["--config", cfg, "validate"], ["validate", "--config", cfg]] {
        let (code, out, err) = run(&args);
        assert_eq!(code, 0, "{args:?}: {err}");
        assert!(out.contains("1 epoch)"), "{out}");
    }
    let (code, _, err) = run(&["--config", cfg, "validate", "--config", "other.toml"]);
    assert_eq!(code, 1);
    assert!(err.contains("--config given twice"), "{err}");
    let (code, _, err) = run(&["--config", cfg, "report", dir.path().to_str().unwrap()]);
    assert_eq!(code, 1);
    assert!(err.contains("--config does nothing"), "{err}");
    let (code, _, err) = run(&["--dry-run", "validate", "--config", cfg]);
    assert_eq!(code, 1);
    assert!(
        err.contains("--dry-run") && err.contains("ard-pipeline run"),
        "{err}"
    );
}

#[test]
fn export_reads_its_data_from_data_root() {
    let dir = tempfile::tempdir().unwrap();
    let cfg = dir.path().join("export.toml");
    std::fs::write(
        &cfg,
        "[data]\ndownload = false\n[loss]\nkind = \"pgd_at\"\n",
    )
    .unwrap();
    let root = dir.path().join("elsewhere/cifar-10-batches-bin");
    let (code, _, err) = run(&[
        "export",
        "--config",
        cfg.to_str().unwrap(),
        "--data-root",
        root.to_str().unwrap(),
        "--arch",
        "mobilenet_v2_x0.25",
        "--weights",
        "weights/teacher-cpu-wrn16_2.safetensors",
        "--out",
        dir.path().join("out").to_str().unwrap(),
    ]);
    assert_eq!(code, 1, "{err}");
    assert!(
        err.contains(&root.display().to_string()) && err.contains("missing"),
        "{err}"
    );
    assert!(!dir.path().join("out").exists(), "nothing written");
}
