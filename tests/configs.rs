//! Every file under configs/ parses and validates; bad input gets a clear
//! message naming the file, the key and the value.

use ard_pipeline::config::{self, AttackKind, Views};
use std::path::{Path, PathBuf};

fn toml_files(dir: &Path, out: &mut Vec<PathBuf>) {
    for entry in std::fs::read_dir(dir).unwrap() {
        let path = entry.unwrap().path();
        if path.is_dir() {
            toml_files(&path, out);
        } else if path.extension().is_some_and(|e| e == "toml") {
            out.push(path);
        }
    }
}

fn is_sweep_file(path: &Path) -> bool {
    std::fs::read_to_string(path)
        .ok()
        .and_then(|t| toml::from_str::<toml::Table>(&t).ok())
        .is_some_and(|t| t.get("sweep").is_some_and(|v| v.is_table()))
}

/// Tests that read the environment (through `config::load`) or change it.
static ENV: std::sync::Mutex<()> = std::sync::Mutex::new(());

#[test]
fn every_config_validates() {
    let _env = ENV.lock().unwrap_or_else(|e| e.into_inner());
    let mut files = Vec::new();
    toml_files(
        &Path::new(env!("CARGO_MANIFEST_DIR")).join("configs"),
        &mut files,
    );
    assert!(files.len() >= 5, "expected the configs, found {files:?}");
    for f in &files {
        // Sweep files (a top-level [sweep] table) are not run configs;
        // tests/sweep_files.rs expands them and validates every run.
        if is_sweep_file(f) {
            continue;
        }
        if let Err(e) = config::load(f) {
            panic!("{e}");
        }
    }
}

/// Every run config reads its data inside the clone: a relative data.root
/// without `..` (the clone's data/), so it runs in any clone.
#[test]
fn every_config_reads_its_data_inside_the_clone() {
    let _env = ENV.lock().unwrap_or_else(|e| e.into_inner());
    let mut files = Vec::new();
    toml_files(
        &Path::new(env!("CARGO_MANIFEST_DIR")).join("configs"),
        &mut files,
    );
    for f in files.iter().filter(|f| !is_sweep_file(f)) {
        let root = config::load(f).unwrap().data.root;
        assert!(
            root.is_relative()
                && root
                    .components()
                    .all(|c| c != std::path::Component::ParentDir),
            "{}: data.root = {} is outside the clone",
            f.display(),
            root.display()
        );
    }
}

#[test]
fn single_t4_is_the_papers_setting() {
    let path = Path::new(env!("CARGO_MANIFEST_DIR")).join("configs/single-t4.toml");
    let cfg = config::load_str(
        &std::fs::read_to_string(path).unwrap(),
        "single-t4.toml",
        false,
    )
    .unwrap();
    assert_eq!(cfg.student.arch.to_string(), "mobilenet_v2");
    assert_eq!(cfg.teacher.arch.to_string(), "wrn34_10");
    assert_eq!(cfg.attack.kind, AttackKind::Pgd);
    assert_eq!(cfg.attack.steps, 1);
    assert!((cfg.attack.eps.get() - 8.0 / 255.0).abs() < 1e-12);
    assert!((cfg.attack.step_size.get() - 8.0 / 255.0).abs() < 1e-12);
    assert_eq!(cfg.loss.alpha.get(), 1.0);
    assert_eq!(cfg.loss.temperature.get(), 30.0);
    assert_eq!(cfg.optim.lr.get(), 0.05);
    assert_eq!(cfg.optim.momentum.get(), 0.9);
    assert_eq!(cfg.optim.weight_decay.get(), 2e-4);
    assert_eq!(cfg.data.batch_size, 128);
    assert_eq!(cfg.train.epochs, 70);
    assert_eq!(cfg.run.device, "cuda");
    assert_eq!(cfg.teacher.views, Views::All);
}

fn err(text: &str) -> String {
    config::load_str(text, "bad.toml", false)
        .unwrap_err()
        .to_string()
}

#[test]
fn misspelt_keys_are_named_with_their_section() {
    let e = err("[attack]\nepz = 0.1\n");
    assert!(
        e.contains("bad.toml") && e.contains("attack") && e.contains("epz"),
        "{e}"
    );
    let e = err("[atack]\neps = 0.1\n");
    assert!(e.contains("atack"), "{e}");
}

#[test]
fn wrong_types_and_values_are_named() {
    let e = err("[data]\nbatch_size = \"big\"\n");
    assert!(e.contains("data.batch_size") && e.contains("line 2"), "{e}");
    let e = err("[attack]\neps = \"8/0\"\n");
    assert!(
        e.contains("attack.eps") && e.contains("division by zero"),
        "{e}"
    );
    let e = err("[data]\nbatch_size = 0\n[loss]\nkind = \"pgd_at\"\n");
    assert!(
        e.contains("data.batch_size") && e.contains("at least 1"),
        "{e}"
    );
    let e = err("[attack]\neps = -0.1\n[loss]\nkind = \"pgd_at\"\n");
    assert!(e.contains("attack.eps") && e.contains("-0.1"), "{e}");
    let e = err("[attack]\neps = 0.03\nstep_size = 0.1\n[loss]\nkind = \"pgd_at\"\n");
    assert!(e.contains("attack.step_size") && e.contains("2*eps"), "{e}");
    let e = err("[pipeline]\nqueue_capacity = 0\n[loss]\nkind = \"pgd_at\"\n");
    assert!(e.contains("pipeline.queue_capacity"), "{e}");
    let e = err("[student]\narch = \"mobilenet\"\n");
    assert!(e.contains("student.arch") && e.contains("known:"), "{e}");
    let e = err("[loss]\nkind = \"ard\"\n");
    assert!(e.contains("teacher.weights"), "{e}");
}

#[test]
fn settings_a_schedule_does_not_use_are_refused() {
    let e = err("[loss]\nkind = \"pgd_at\"\n[optim]\nschedule = { kind = \"constant\", milestones = [10] }\n");
    assert!(e.contains("optim.schedule.milestones"), "{e}");
}

#[test]
fn fractions_and_views_parse() {
    let cfg = config::load_str(
        "[attack]\neps = \"8/255\"\nstep_size = \"2 / 255\"\n[teacher]\nviews = 8\n[loss]\nkind = \"pgd_at\"\n",
        "ok.toml",
        false,
    )
    .unwrap();
    assert!((cfg.attack.eps.get() - 8.0 / 255.0).abs() < 1e-15);
    assert_eq!(cfg.teacher.views, Views::Fixed(8));
    let e = err("[teacher]\nviews = 200\n[loss]\nkind = \"pgd_at\"\n");
    assert!(e.contains("teacher.views"), "{e}");
}

#[test]
fn environment_overrides_apply_and_are_validated() {
    let _env = ENV.lock().unwrap_or_else(|e| e.into_inner());
    std::env::set_var("ARD__ATTACK__STEPS", "3");
    std::env::set_var("ARD__DATA__BATCH_SIZE", "32");
    let cfg = config::load_str("[loss]\nkind = \"pgd_at\"\n", "env.toml", true).unwrap();
    assert_eq!(cfg.attack.steps, 3);
    assert_eq!(cfg.data.batch_size, 32);
    std::env::set_var("ARD__DATA__BATCH_SIZE", "0");
    let e = config::load_str("[loss]\nkind = \"pgd_at\"\n", "env.toml", true)
        .unwrap_err()
        .to_string();
    assert!(e.contains("data.batch_size"), "{e}");
    std::env::remove_var("ARD__ATTACK__STEPS");
    std::env::remove_var("ARD__DATA__BATCH_SIZE");
}

#[test]
fn a_file_extends_its_base() {
    let _env = ENV.lock().unwrap_or_else(|e| e.into_inner());
    let dir = Path::new(env!("CARGO_MANIFEST_DIR")).join("configs");
    let cfg = config::load(&dir.join("ablations/fgsm-rs.toml")).unwrap();
    assert_eq!(cfg.attack.kind, AttackKind::FgsmRs);
    assert_eq!(cfg.run.name, "quickstart-fgsm-rs");
    // Inherited from quickstart.toml.
    assert_eq!(cfg.data.train_limit, Some(30000));
    assert_eq!(cfg.teacher.arch.to_string(), "wrn16_2");
    let tmp = tempfile::tempdir().unwrap();
    let bad = tmp.path().join("child.toml");
    std::fs::write(&bad, "base = \"missing.toml\"\n").unwrap();
    let e = config::load(&bad).unwrap_err().to_string();
    assert!(
        e.contains("child.toml") && e.contains("missing.toml"),
        "{e}"
    );
    std::fs::write(&bad, "base = \"child.toml\"\n").unwrap();
    let e = config::load(&bad).unwrap_err().to_string();
    assert!(e.contains("cycle"), "{e}");
    std::fs::write(
        &bad,
        format!(
            "base = \"{}\"\n[attack]\nepz = 1\n",
            dir.join("quickstart.toml").display()
        ),
    )
    .unwrap();
    let e = config::load(&bad).unwrap_err().to_string();
    assert!(
        e.contains("child.toml") && e.contains("attack.epz") && e.contains("line 3"),
        "{e}"
    );
}

/// Limits that validation used to miss (issue 18, item 4): each is refused
/// with its key before anything runs, instead of panicking, growing memory
/// without bound, or training on nonsense.
#[test]
fn values_that_cannot_run_are_refused_with_their_key() {
    for (text, key) in [
        (
            "[pipeline]\nqueue_capacity = 1000000000000000000\n",
            "pipeline.queue_capacity",
        ),
        (
            "[pipeline]\nqueue_capacity = 100000000\n",
            "pipeline.queue_capacity",
        ),
        ("[data]\nbatch_size = 1000000000\n", "data.batch_size"),
        ("[optim]\nlr = \"inf\"\n", "optim.lr"),
        ("[optim]\nlr = 50.0\n", "optim.lr"),
    ] {
        let e = config::load_str(text, "limits.toml", false)
            .err()
            .unwrap_or_else(|| panic!("{text:?} validated"))
            .to_string();
        assert!(
            e.contains("limits.toml") && e.contains(key),
            "{text:?}: {e}"
        );
    }
    // From the environment, 1e400 overflows to infinity (as the issue found).
    {
        let _env = ENV.lock().unwrap_or_else(|e| e.into_inner());
        std::env::set_var("ARD__OPTIM__LR", "1e400");
        let e = config::load_str("", "limits.toml", true)
            .err()
            .map(|e| e.to_string());
        std::env::remove_var("ARD__OPTIM__LR");
        let e = e.expect("lr = 1e400 from the environment validated");
        assert!(e.contains("optim.lr"), "{e}");
    }
    // The largest sane values still pass.
    config::load_str(
        "[data]\nbatch_size = 50000\n[pipeline]\nqueue_capacity = 64\n[optim]\nlr = 10.0\n[loss]\nkind = \"pgd_at\"\n",
        "limits.toml",
        false,
    )
    .unwrap();
}
