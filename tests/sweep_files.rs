//! Every sweep file under configs/ (a TOML file with a top-level [sweep]
//! table) expands, and every run it describes validates; bad rows fail the
//! whole sweep up front, naming the row and the key.

use ard_pipeline::sweep::{self, Backend, SweepFile};
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

fn repo() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR"))
}

#[test]
fn every_sweep_file_expands_and_validates() {
    let mut files = Vec::new();
    toml_files(&repo().join("configs"), &mut files);
    let sweeps: Vec<&PathBuf> = files.iter().filter(|f| is_sweep_file(f)).collect();
    assert!(
        sweeps.len() >= 2,
        "expected the paper sweeps, found {sweeps:?}"
    );
    for f in sweeps {
        for backend in [Backend::Local, Backend::Ray, Backend::K8s] {
            let (file, _, runs) = sweep::command::plan(f, Some(backend))
                .unwrap_or_else(|e| panic!("{}: {e}", f.display()));
            assert!(!runs.is_empty(), "{}", f.display());
            let mut names = std::collections::BTreeSet::new();
            for (i, r) in runs.iter().enumerate() {
                assert_eq!(r.index, i);
                assert!(names.insert(r.name.clone()), "duplicate {}", r.name);
                assert_eq!(r.config.run.name, r.name);
                assert!(r.name.starts_with(&format!("{}-{i:02}", file.sweep.name)));
                // The rendered config is self-contained and validates again.
                ard_pipeline::config::load_str(&r.toml, &r.name, false)
                    .unwrap_or_else(|e| panic!("{}: {e}", r.name));
            }
        }
    }
}

#[test]
fn table2_has_the_papers_35_rows() {
    let path = repo().join("configs/paper/table2.toml");
    let (_, _, runs) = sweep::command::plan(&path, Some(Backend::Local)).unwrap();
    assert_eq!(runs.len(), 35);
    let paper =
        std::fs::read_to_string(repo().join("../shared/paper/table2.csv")).unwrap_or_default();
    for (r, line) in runs.iter().zip(paper.lines().skip(1)) {
        let cols: Vec<&str> = line.split(',').collect();
        assert_eq!(r.config.train.epochs.to_string(), cols[0], "{}", r.name);
        assert_eq!(r.config.attack.steps.to_string(), cols[1], "{}", r.name);
        let ss = ard_pipeline::config::parse_real(cols[2]).unwrap();
        assert!(
            (r.config.attack.step_size.get() - ss).abs() < 1e-12,
            "{}",
            r.name
        );
        assert!((r.config.optim.lr.get() - cols[3].parse::<f64>().unwrap()).abs() < 1e-12);
        let arch = if r.config.attack.steps == 10 {
            "mobilenet_v2"
        } else {
            "resnet18"
        };
        assert_eq!(r.config.student.arch.to_string(), arch, "{}", r.name);
        // Everything else is the single-T4 setting.
        assert_eq!(r.config.teacher.arch.to_string(), "wrn34_10");
        assert!((r.config.attack.eps.get() - 8.0 / 255.0).abs() < 1e-12);
        assert_eq!(r.config.run.out_dir, Path::new("runs/sweeps/table2/runs"));
        assert_eq!(
            r.config.metrics.listen,
            format!("127.0.0.1:{}", 9187 + r.index)
        );
    }
}

#[test]
fn a_bad_row_fails_the_whole_sweep_naming_row_and_key() {
    let dir = tempfile::tempdir().unwrap();
    let base = repo().join("configs/quickstart.toml");
    let f = dir.path().join("bad.toml");
    std::fs::write(
        &f,
        format!(
            "base = \"{}\"\n[sweep]\nname = \"bad\"\nout_dir = \"{}\"\n[[rows]]\n\"attack.steps\" = 1\n[[rows]]\n\"attack.stepz\" = 2\n[[rows]]\n\"data.batch_size\" = 0\n",
            base.display(),
            dir.path().display()
        ),
    )
    .unwrap();
    let e = sweep::command::plan(&f, None).unwrap_err().to_string();
    assert!(e.contains("row 1") && e.contains("stepz"), "{e}");
    assert!(e.contains("row 2") && e.contains("data.batch_size"), "{e}");
    assert!(!e.contains("row 0"), "{e}");
    // Nothing was started or written.
    assert!(!dir.path().join("bad").exists());
    let e = sweep::run_sweep(&f, None, |_| {}).unwrap_err().to_string();
    assert!(e.contains("row 1"), "{e}");
    assert!(!dir.path().join("bad").exists());
}

#[test]
fn a_grid_is_the_cartesian_product() {
    let dir = tempfile::tempdir().unwrap();
    let f = dir.path().join("grid.toml");
    std::fs::write(
        &f,
        format!(
            "base = \"{}\"\n[sweep]\nname = \"g\"\nparallel = 2\nmetrics_base_port = 0\n[common]\n\"attack.kind\" = \"pgd\"\n[grid]\n\"attack.steps\" = [1, 2, 10]\noptim.lr = [0.05, 0.1]\n",
            repo().join("configs/quickstart.toml").display()
        ),
    )
    .unwrap();
    let file = SweepFile::read(&f).unwrap();
    let (_, _, runs) = sweep::command::plan(&f, None).unwrap();
    assert_eq!(runs.len(), 6);
    let pairs: Vec<(usize, f64)> = runs
        .iter()
        .map(|r| (r.config.attack.steps, r.config.optim.lr.get()))
        .collect();
    assert_eq!(
        pairs,
        vec![
            (1, 0.05),
            (1, 0.1),
            (2, 0.05),
            (2, 0.1),
            (10, 0.05),
            (10, 0.1)
        ]
    );
    assert_eq!(runs[0].name, "g-00-as1-lr0.05");
    assert!(runs.iter().all(|r| r.config.metrics.listen.is_empty()));
    let cores = std::thread::available_parallelism()
        .map(|n| n.get())
        .unwrap_or(1);
    assert_eq!(runs[0].config.run.threads, Some((cores / 2).max(1)));
    assert_eq!(file.dir(), Path::new("runs/sweeps/g"));
}

#[test]
fn an_empty_grid_or_rows_list_is_refused() {
    let dir = tempfile::tempdir().unwrap();
    let base = repo().join("configs/quickstart.toml");
    for (body, says) in [
        ("[grid]\n", "[grid] is empty"),
        ("rows = []\n", "`rows` is empty"),
    ] {
        let f = dir.path().join("empty.toml");
        std::fs::write(
            &f,
            format!(
                "base = \"{}\"\n{body}[sweep]\nname = \"e\"\nout_dir = \"{}\"\n",
                base.display(),
                dir.path().display()
            ),
        )
        .unwrap();
        let e = sweep::command::plan(&f, None).unwrap_err().to_string();
        assert!(e.contains(says) && e.contains("empty.toml"), "{e}");
        assert!(!dir.path().join("e").exists());
    }
}

/// A sweep of two rows in `dir` (1- and 2-step PGD) with `optim.lr = lr` in `[common]`.
fn two_rows(dir: &Path, lr: f64) -> PathBuf {
    let f = dir.join("two.toml");
    std::fs::write(
        &f,
        format!(
            "base = \"{}\"\n[sweep]\nname = \"two\"\nout_dir = \"{}\"\nmetrics_base_port = 0\n[common]\n\"optim.lr\" = {lr}\n\"attack.kind\" = \"pgd\"\n[[rows]]\n\"attack.steps\" = 1\n[[rows]]\n\"attack.steps\" = 2\n",
            repo().join("configs/quickstart.toml").display(),
            dir.display()
        ),
    )
    .unwrap();
    f
}

#[test]
fn finished_rows_whose_settings_changed_are_refused_or_moved_aside() {
    use ard_pipeline::sweep::{manifest::SweepDir, stale, SweepOptions};
    let dir = tempfile::tempdir().unwrap();
    // Both rows finished with lr 0.05 (a run folder keeps its resolved config).
    let (file, _, runs) = sweep::command::plan(&two_rows(dir.path(), 0.05), None).unwrap();
    let sweep_dir = SweepDir::new(file.dir());
    for r in &runs {
        let run = sweep_dir.run(&r.name);
        std::fs::create_dir_all(&run).unwrap();
        std::fs::write(run.join("config.toml"), &r.toml).unwrap();
        std::fs::write(run.join("summary.json"), "{}").unwrap();
    }
    let f = two_rows(dir.path(), 0.05);
    let unchanged = sweep::run_sweep_with(
        &f,
        &SweepOptions {
            dry_run: true,
            ..SweepOptions::default()
        },
        |_| {},
    );
    assert!(unchanged.is_ok(), "{unchanged:?}");

    // Then [common] changes: the finished rows no longer describe the file.
    let f = two_rows(dir.path(), 0.2);
    let configs = dir.path().join("two/configs");
    let e = sweep::run_sweep(&f, None, |_| {}).unwrap_err().to_string();
    assert!(
        e.contains("2 finished row(s)")
            && e.contains("row 0 (two-00-as1): optim.lr: was 0.05, now 0.2")
            && e.contains("--fresh"),
        "{e}"
    );
    assert!(!configs.exists(), "refused before any config was rewritten");
    let mut said = Vec::new();
    let dry = SweepOptions {
        dry_run: true,
        ..SweepOptions::default()
    };
    let e = sweep::run_sweep_with(&f, &dry, |l| said.push(l.to_string())).unwrap_err();
    assert!(e.to_string().contains("changed"), "{e}");
    assert!(
        said.iter().any(|l| l.starts_with("refused: row 1")),
        "{said:?}"
    );
    // --fresh moves them aside (as a run folder's --fresh does), and they run again.
    let (_, _, new_runs) = sweep::command::plan(&f, None).unwrap();
    let changed = stale::stale_rows(&sweep_dir, &new_runs);
    assert_eq!(changed.len(), 2);
    let moved = stale::move_aside_rows(&sweep_dir, &changed).unwrap();
    assert_eq!(
        moved[0],
        sweep_dir.runs().join("two-00-as1.previous-1"),
        "{moved:?}"
    );
    assert!(moved[0].join("summary.json").is_file());
    assert!(!sweep_dir.summary("two-00-as1").exists());
    assert!(stale::stale_rows(&sweep_dir, &new_runs).is_empty());
}
