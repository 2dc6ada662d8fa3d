//! `ard-pipeline eval` as its users meet it: bad output paths refused before
//! any attack runs, the checkpoint never overwritten, the order of the
//! evaluations kept (a cascade's natural first), `--eps`, and a JSON that
//! says what was measured (threat model, weights' sha256, attack parameters,
//! intervals). On the committed WRN-16-2 teacher and the first 100 test images.

mod common;

use serde_json::Value;
use std::path::Path;
use std::process::{Command, Output};
use std::time::Duration;

const WEIGHTS: &str = "weights/teacher-cpu-wrn16_2.safetensors";

fn eval(args: &[&str]) -> Output {
    let mut cmd = Command::new(env!("CARGO_BIN_EXE_ard-pipeline"));
    cmd.args([
        "--config",
        "configs/quickstart.toml",
        "eval",
        "--arch",
        "wrn16_2",
    ])
    .args(["--data-root", common::cifar_root().to_str().unwrap()])
    .args(["--device", "cpu", "--test-limit", "100"])
    .args(args)
    .current_dir(common::repo());
    common::output_within(&mut cmd, Duration::from_secs(300))
}

fn ok(out: &Output) -> String {
    let stdout = String::from_utf8_lossy(&out.stdout).into_owned();
    assert!(
        out.status.success(),
        "{stdout}\n{}",
        String::from_utf8_lossy(&out.stderr)
    );
    stdout
}

fn failed(out: &Output) -> String {
    assert!(!out.status.success(), "succeeded");
    String::from_utf8_lossy(&out.stderr).into_owned()
}

fn json(path: &Path) -> Value {
    serde_json::from_str(&std::fs::read_to_string(path).unwrap()).unwrap()
}

/// The keys of a JSON object in the order written.
fn keys_in_order(text: &str, object: &str, names: &[&str]) -> Vec<usize> {
    let start = text.find(&format!("\"{object}\": {{")).unwrap();
    let end = start + text[start..].find('}').unwrap();
    names
        .iter()
        .map(|n| start + text[start..end].find(&format!("\"{n}\"")).unwrap())
        .collect()
}

#[test]
fn bad_outputs_are_refused_before_any_attack_and_the_checkpoint_is_kept() {
    let dir = tempfile::tempdir().unwrap();
    // A missing folder: one line naming --json, at once (APGD-T on 100
    // images would take minutes).
    let missing = dir.path().join("no/such/folder/eval.json");
    let began = std::time::Instant::now();
    let out = eval(&[
        "--weights",
        WEIGHTS,
        "--attacks",
        "apgd_t",
        "--json",
        missing.to_str().unwrap(),
    ]);
    let err = failed(&out);
    assert!(began.elapsed() < Duration::from_secs(30), "{err}");
    assert!(
        err.contains("--json") && err.contains("does not exist"),
        "{err}"
    );
    assert!(!err.contains("eval: apgd_t"), "an attack ran: {err}");
    // --json equal to --weights would replace the checkpoint.
    let weights = dir.path().join("w.safetensors");
    std::fs::copy(common::repo().join(WEIGHTS), &weights).unwrap();
    let before = std::fs::read(&weights).unwrap();
    let w = weights.to_str().unwrap();
    let out = eval(&["--weights", w, "--attacks", "natural", "--json", w]);
    let err = failed(&out);
    assert!(err.contains("is also --weights"), "{err}");
    assert_eq!(std::fs::read(&weights).unwrap(), before);
    let out = eval(&["--weights", w, "--save-logits", w]);
    assert!(failed(&out).contains("--save-logits"));
    // Latency batches beyond what memory holds: refused by flag.
    let out = eval(&["--latency", "--latency-batches", "1,100000"]);
    let err = failed(&out);
    assert!(err.contains("--latency-batches 100000"), "{err}");
}

#[test]
fn the_order_given_is_kept_and_a_cascade_starts_with_natural() {
    let dir = tempfile::tempdir().unwrap();
    let plain = dir.path().join("plain.json");
    let stdout = ok(&eval(&[
        "--weights",
        WEIGHTS,
        "--attacks",
        "pgd1,natural",
        "--json",
        plain.to_str().unwrap(),
    ]));
    let text = std::fs::read_to_string(&plain).unwrap();
    let at = keys_in_order(&text, "accuracy", &["pgd1", "natural"]);
    assert!(at[0] < at[1], "{text}");
    assert!(
        stdout.find("pgd1").unwrap() < stdout.find("natural").unwrap(),
        "{stdout}"
    );
    let natural = json(&plain)["accuracy"]["natural"].as_f64().unwrap();

    let cascade = dir.path().join("cascade.json");
    let stdout = ok(&eval(&[
        "--weights",
        WEIGHTS,
        "--attacks",
        "pgd1,natural",
        "--cascade",
        "--json",
        cascade.to_str().unwrap(),
    ]));
    let text = std::fs::read_to_string(&cascade).unwrap();
    let at = keys_in_order(&text, "accuracy", &["natural", "pgd1"]);
    assert!(at[0] < at[1], "natural runs first in a cascade: {text}");
    let r = json(&cascade);
    assert_eq!(r["accuracy"]["natural"].as_f64().unwrap(), natural, "{r}");
    assert_eq!(r["cascade"], true);
    let names: Vec<&str> = r["attacks"]
        .as_array()
        .unwrap()
        .iter()
        .map(|a| a["name"].as_str().unwrap())
        .collect();
    assert_eq!(names, ["natural", "pgd1"]);
    assert!(stdout.contains("cumulative"), "{stdout}");
    assert!(
        stdout.find("natural").unwrap() < stdout.find("pgd1").unwrap(),
        "{stdout}"
    );
}

#[test]
fn the_json_says_what_was_measured() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("eval.json");
    let stdout = ok(&eval(&[
        "--weights",
        WEIGHTS,
        "--attacks",
        "natural,pgd2",
        "--eps",
        "4/255",
        "--json",
        path.to_str().unwrap(),
    ]));
    let r = json(&path);
    assert_eq!(r["eps"].as_f64().unwrap(), 4.0 / 255.0);
    assert_eq!(r["eps_text"], "4/255");
    assert_eq!(r["norm"], "Linf");
    assert_eq!(r["arch"], "wrn16_2");
    let sha = ard_pipeline::deploy::export::sha256(&common::repo().join(WEIGHTS)).unwrap();
    assert_eq!(r["weights_sha256"], sha.as_str());
    assert_eq!(r["images"], 100);
    assert_eq!(r["version"], env!("CARGO_PKG_VERSION"));
    assert!(r["seed"].is_u64(), "{r}");
    let pgd = &r["attacks"][1];
    assert_eq!(
        (pgd["name"].as_str(), pgd["steps"].as_u64()),
        (Some("pgd2"), Some(2))
    );
    assert_eq!(pgd["eps"].as_f64().unwrap(), 4.0 / 255.0);
    assert_eq!(pgd["step_size"].as_f64().unwrap(), 2.0 / 255.0);
    let (acc, lo, hi) = (
        r["accuracy"]["pgd2"].as_f64().unwrap(),
        r["intervals"]["pgd2"]["lo"].as_f64().unwrap(),
        r["intervals"]["pgd2"]["hi"].as_f64().unwrap(),
    );
    assert!(lo < acc && acc < hi && hi - lo > 5.0, "{r}");
    assert!(r["worst_case_interval"]["lo"].is_number(), "{r}");
    // The table: intervals, n, eps, and what the worst case is over.
    assert!(stdout.contains("eps 4/255"), "{stdout}");
    assert!(stdout.contains(", n=100)"), "{stdout}");
    assert!(
        stdout.contains("right clean and under every one of natural, pgd2"),
        "{stdout}"
    );
    // An eps above 1 is refused by flag, with the form to use.
    let err = failed(&eval(&["--weights", WEIGHTS, "--eps", "8"]));
    assert!(err.contains("--eps") && err.contains("8/255"), "{err}");
}

#[test]
fn help_states_the_default_evaluations_and_eps_forms() {
    let out = Command::new(env!("CARGO_BIN_EXE_ard-pipeline"))
        .args(["eval", "--help"])
        .output()
        .unwrap();
    let help = String::from_utf8_lossy(&out.stdout);
    assert!(
        help.contains(ard_pipeline::eval::command::DEFAULT_ATTACKS),
        "{help}"
    );
    assert!(help.contains("8/255") && help.contains("--eps"), "{help}");
}

#[test]
fn two_shards_merge_into_the_unsplit_evaluation() {
    let dir = tempfile::tempdir().unwrap();
    let file = |name: &str| dir.path().join(name).to_str().unwrap().to_string();
    let common_args = [
        "--weights",
        WEIGHTS,
        "--attacks",
        "natural,pgd2",
        "--batch-size",
        "32",
    ];
    let run = |extra: &[&str]| {
        let args: Vec<&str> = common_args.iter().chain(extra).copied().collect();
        ok(&eval(&args))
    };
    let whole_table = run(&["--json", &file("whole.json")]);
    let part0 = run(&["--shard", "0/2", "--json", &file("part0.json")]);
    assert!(
        part0.contains("test images 0..64 (shard 0/2 of the first 100)"),
        "{part0}"
    );
    run(&["--shard", "1/2", "--json", &file("part1.json")]);
    let merge = |parts: &[String], out: &str| {
        let mut cmd = Command::new(env!("CARGO_BIN_EXE_ard-pipeline"));
        cmd.args(["eval", "merge"])
            .args(parts)
            .args(["--json", out]);
        common::output_within(&mut cmd, Duration::from_secs(60))
    };
    // Parts in any order.
    let merged_table = ok(&merge(
        &[file("part1.json"), file("part0.json")],
        &file("merged.json"),
    ));
    let (whole, merged) = (
        json(Path::new(&file("whole.json"))),
        json(Path::new(&file("merged.json"))),
    );
    for key in [
        "images",
        "accuracy",
        "worst_case",
        "intervals",
        "worst_case_interval",
        "attacks",
        "weights_sha256",
        "eps",
    ] {
        assert_eq!(whole[key], merged[key], "{key}: {whole} vs {merged}");
    }
    assert!(merged.get("shard").is_none(), "{merged}");
    // The same table, but for the seconds.
    let rows = |t: &str| -> Vec<String> {
        t.lines()
            .filter(|l| l.contains("% ("))
            .map(|l| l.split_whitespace().take(4).collect::<Vec<_>>().join(" "))
            .collect()
    };
    assert_eq!(
        rows(&whole_table),
        rows(&merged_table),
        "{whole_table}\n{merged_table}"
    );
    // An overlap, a gap, another eps: refused with the reason.
    let err = failed(&merge(
        &[file("part0.json"), file("part0.json"), file("part1.json")],
        &file("m.json"),
    ));
    assert!(err.contains("overlap"), "{err}");
    let err = failed(&merge(&[file("part1.json")], &file("m.json")));
    assert!(err.contains("a gap at image 0"), "{err}");
    let mut other: Value = json(Path::new(&file("part1.json")));
    other["eps"] = serde_json::json!(4.0 / 255.0);
    std::fs::write(file("other.json"), other.to_string()).unwrap();
    let err = failed(&merge(
        &[file("part0.json"), file("other.json")],
        &file("m.json"),
    ));
    assert!(err.contains("differ in eps"), "{err}");
    assert!(!dir.path().join("m.json").exists());
}
