//! `ard-pipeline report SWEEP_DIR`: the sweep's runs in the layout of the
//! paper's Table 2 and more columns (`report.md`, `report.csv`; see
//! `PAPER_COLUMNS` and `LATER_COLUMNS`), and the plots
//! `robust_vs_natural.png`, `epoch_time_vs_steps.png` and, for runs with a
//! validation curve, `validation_vs_time.png`; and the check that it is given
//! a sweep folder before it writes anything into it.

use super::manifest::SweepDir;
use crate::atomic_file::write_text_atomic;
use crate::error::{Error, Result};
use crate::eval::interval;
use crate::report::plots::{labelled_scatter, ScatterPoint};
use crate::train::records::{EpochRecord, EvalRecord};
use crate::train::validation::ValidationLine;
use crate::train::{RunFile, RunFolder, Summary};
use indexmap::{IndexMap, IndexSet};
use std::path::{Path, PathBuf};

/// One row of the table.
#[derive(Debug, Clone, Default)]
pub struct ReportRow {
    pub index: usize,
    pub name: String,
    pub status: String,
    pub arch: String,
    pub epochs: Option<usize>,
    pub steps: Option<usize>,
    pub step_size: Option<f64>,
    pub lr: Option<f64>,
    pub mtl_epoch1: Option<f64>,
    pub nat_epoch1: Option<f64>,
    pub robust_epoch1: Option<f64>,
    pub mtl: Option<f64>,
    pub nat: Option<f64>,
    pub robust: Option<f64>,
    /// Other evaluations of the last snapshot (pgd20, cw, ...), in the order run.
    pub other: IndexMap<String, f64>,
    /// Test images of the epoch-1 evaluation, of the last one, and of the
    /// best checkpoint's: the n of each accuracy's interval.
    pub images_epoch1: Option<usize>,
    pub images: Option<usize>,
    pub best_images: Option<usize>,
    pub worst_case: Option<f64>,
    pub wall_s: Option<f64>,
    pub epoch_s: Option<f64>,
    pub attack_busy: Option<f64>,
    pub seed: Option<u64>,
    /// Loss and attack kinds (`ard pgd`, `pgd_at none`, ...).
    pub method: String,
    /// Training seconds spent against `train.max_seconds`.
    pub train_s: Option<f64>,
    /// Best-by-validation snapshot: its epoch, natural accuracy and worst case on the test set.
    pub best_epoch: Option<u64>,
    pub best_nat: Option<f64>,
    pub best_worst_case: Option<f64>,
    /// The overfitting guard: `off`, `no collapse`, or the epochs it saw collapse.
    pub guard: String,
    /// Per validated epoch: (training seconds, validation natural %, validation robust %).
    pub curve: Vec<(f64, f64, f64)>,
}

/// The files `write_report` wrote.
#[derive(Debug, Clone)]
pub struct Written {
    pub markdown: PathBuf,
    pub csv: PathBuf,
    pub plots: Vec<PathBuf>,
    pub rows: Vec<ReportRow>,
}

fn get<'a>(t: &'a toml::Table, path: &str) -> Option<&'a toml::Value> {
    let mut parts = path.split('.');
    let mut v = t.get(parts.next()?)?;
    for p in parts {
        v = v.as_table()?.get(p)?;
    }
    Some(v)
}

fn num(v: Option<&toml::Value>) -> Option<f64> {
    match v? {
        toml::Value::Float(f) => Some(*f),
        toml::Value::Integer(i) => Some(*i as f64),
        toml::Value::String(s) => crate::config::parse_real(s).ok(),
        _ => None,
    }
}

/// Refuses, in one line, a `report` folder that is not a sweep folder (one
/// `ard-pipeline sweep` wrote: `manifest.json`, or `configs/` and `runs/`), so
/// that report.md, report.csv and the plots never land in a run folder or
/// any other folder.
pub fn check_sweep_folder(path: &Path) -> Result<()> {
    let refuse = |why: &str| {
        Err(Error::Usage(format!(
            "report {}: {why}; give a sweep folder (sweep.out_dir/sweep.name, \
             which holds manifest.json)",
            path.display()
        )))
    };
    match std::fs::metadata(path) {
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return refuse("no such folder"),
        Err(e) => return refuse(&format!("cannot be read ({e})")),
        Ok(m) if !m.is_dir() => return refuse("is a file, not a folder"),
        Ok(_) => {}
    }
    if path.join("manifest.json").is_file()
        || (path.join("configs").is_dir() && path.join("runs").is_dir())
    {
        return Ok(());
    }
    let run = RunFolder::at(path);
    if run.has(RunFile::Config) || run.finished() {
        return refuse("is a run folder, not a sweep folder");
    }
    refuse("is not a sweep folder (no manifest.json)")
}

/// Reads one run's folder (and its generated config when the run never
/// started). A record this build cannot read is refused, naming its file.
pub fn read_row(dir: &SweepDir, index: usize, name: &str) -> Result<ReportRow> {
    let folder = RunFolder::at(&dir.run(name));
    let mut row = ReportRow {
        index,
        name: name.to_string(),
        ..Default::default()
    };
    let cfg_text = folder
        .read_text(RunFile::Config)
        .or_else(|_| std::fs::read_to_string(dir.config(name)))
        .unwrap_or_default();
    if let Ok(cfg) = toml::from_str::<toml::Table>(&cfg_text) {
        row.read_config(&cfg);
    }
    let epochs: Vec<EpochRecord> = folder.read_records(RunFile::EpochLog)?;
    row.read_epochs(&epochs);
    row.read_validation(&folder.read_records(RunFile::ValidationLog)?, &epochs);
    row.read_evals(&folder.read_records(RunFile::EvalLog)?);
    match folder.read_json::<Summary>(RunFile::Summary)? {
        Some(summary) => row.read_summary(&summary),
        None => {
            row.status = if folder.path.exists() {
                "failed"
            } else {
                "missing"
            }
            .into()
        }
    }
    Ok(row)
}

impl ReportRow {
    /// The settings of the run's resolved config.
    fn read_config(&mut self, cfg: &toml::Table) {
        let str_at = |k: &str| get(cfg, k).and_then(|v| v.as_str());
        self.arch = str_at("student.arch").unwrap_or("").to_string();
        self.epochs = num(get(cfg, "train.epochs")).map(|v| v as usize);
        self.steps = num(get(cfg, "attack.steps")).map(|v| v as usize);
        self.step_size = num(get(cfg, "attack.step_size"));
        self.lr = num(get(cfg, "optim.lr"));
        self.seed = num(get(cfg, "run.seed")).map(|v| v as u64);
        let (loss, attack) = (str_at("loss.kind"), str_at("attack.kind"));
        self.method = format!("{} {}", loss.unwrap_or("?"), attack.unwrap_or("?"));
        self.guard = match str_at("guard.action") {
            None | Some("off") => "off".into(),
            Some(_) => "no collapse".into(),
        };
    }

    /// Loss and time per epoch.
    fn read_epochs(&mut self, epochs: &[EpochRecord]) {
        self.mtl_epoch1 = epochs.iter().find(|e| e.epoch == 1).map(|e| e.mean_loss);
        self.mtl = epochs.last().map(|e| e.mean_loss);
        if !epochs.is_empty() {
            let secs: f64 = epochs.iter().map(|e| e.seconds).sum();
            self.epoch_s = Some(secs / epochs.len() as f64);
        }
        self.train_s = epochs.iter().rev().find_map(|e| e.train_seconds);
        if self.train_s.is_some() {
            // With a time budget `train.epochs` is only a bound: show the epochs trained.
            self.epochs = Some(epochs.len());
        }
    }

    /// The guard's collapses and the validation curve over training time.
    fn read_validation(&mut self, validation: &[ValidationLine], epochs: &[EpochRecord]) {
        let collapsed: Vec<String> = validation
            .iter()
            .filter(|v| v.collapse)
            .map(|v| v.epoch.to_string())
            .collect();
        if !collapsed.is_empty() {
            self.guard = format!("collapse at epoch {}", collapsed.join(" "));
        }
        let seconds_at = |epoch| epochs.iter().find(|e| e.epoch == epoch)?.train_seconds;
        self.curve = validation
            .iter()
            .filter_map(|v| Some((seconds_at(v.epoch)?, v.natural, v.robust)))
            .collect();
    }

    /// The test numbers after epoch 1 and of the last evaluation.
    fn read_evals(&mut self, evals: &[EvalRecord]) {
        let acc = |e: &EvalRecord, k: &str| e.report.accuracy.get(k).copied();
        if let Some(e1) = evals.iter().find(|e| e.epoch == 1) {
            self.nat_epoch1 = acc(e1, "natural");
            self.robust_epoch1 = acc(e1, "train_attack");
            self.images_epoch1 = Some(e1.report.images);
        }
        if let Some(last) = evals.iter().max_by_key(|e| e.epoch) {
            self.nat = acc(last, "natural");
            self.robust = acc(last, "train_attack");
            self.worst_case = Some(last.report.worst_case);
            self.images = Some(last.report.images);
            self.other = last
                .report
                .accuracy
                .iter()
                .filter(|(k, _)| *k != "natural" && *k != "train_attack")
                .map(|(k, v)| (k.clone(), *v))
                .collect();
        }
    }

    /// A finished run's summary: wall time, the best checkpoint, the
    /// attack stage's busy share, and what the records lacked.
    fn read_summary(&mut self, s: &Summary) {
        self.status = "ok".into();
        self.wall_s = Some(s.wall_s);
        let sel = &s.selection;
        self.best_epoch = sel.best_epoch.map(|e| e as u64);
        self.best_nat = sel
            .best_eval
            .as_ref()
            .and_then(|b| b.get("natural").copied());
        self.best_worst_case = sel.best_worst_case;
        self.best_images = sel.best_test.as_ref().map(|t| t.images).or(self.images);
        self.attack_busy = s
            .stages
            .iter()
            .find(|x| x.stage == "attack")
            .map(|x| x.busy_share);
        if self.nat.is_none() {
            self.nat = s.final_eval.get("natural").copied();
            self.robust = s.final_eval.get("train_attack").copied();
            self.images = sel.final_test.as_ref().map(|t| t.images);
        }
        if self.mtl.is_none() {
            self.mtl = s.final_loss;
        }
        if self.epoch_s.is_none() && s.epochs > 0 {
            self.epoch_s = Some(s.wall_s / s.epochs as f64);
        }
    }
}

/// All rows of a sweep folder: from manifest.json, else every folder under runs/.
pub fn read_rows(dir: &SweepDir) -> Result<Vec<ReportRow>> {
    let names: Vec<(usize, String)> = match dir.read_manifest() {
        Ok(m) => m.runs.into_iter().map(|r| (r.index, r.name)).collect(),
        Err(_) => {
            let runs = dir.runs();
            let mut names: Vec<String> = std::fs::read_dir(&runs)
                .map_err(|e| Error::io(&runs, e))?
                .filter_map(|e| e.ok())
                .filter(|e| e.path().is_dir())
                .map(|e| e.file_name().to_string_lossy().into_owned())
                .collect();
            names.sort();
            names.into_iter().enumerate().collect()
        }
    };
    if names.is_empty() {
        return Err(Error::RunFolder {
            path: dir.path.clone(),
            message: "no runs".into(),
        });
    }
    names.iter().map(|(i, n)| read_row(dir, *i, n)).collect()
}

/// `8/255` when the value is a whole number of 255ths, else the number.
pub fn step_text(v: f64) -> String {
    let k = v * 255.0;
    if (k - k.round()).abs() < 1e-6 {
        format!("{}/255", k.round() as i64)
    } else {
        format!("{v:.5}")
    }
}

/// A number with `digits` decimals, empty when absent.
fn f(v: Option<f64>, digits: usize) -> String {
    v.map(|v| format!("{v:.digits$}")).unwrap_or_default()
}

/// A value as text, `missing` when absent.
fn text<T: ToString>(v: Option<T>, missing: &str) -> String {
    v.map(|v| v.to_string()).unwrap_or_else(|| missing.into())
}

/// "1 step", "10 steps", or "? steps" when unknown (a plot label).
fn steps_label(steps: Option<usize>) -> String {
    steps.map_or_else(
        || "? steps".into(),
        |n| crate::report::plural::count(n as u64, "step"),
    )
}

/// What a column holds.
#[derive(Clone, Copy)]
enum Cell {
    Text(fn(&ReportRow) -> String),
    /// An accuracy (percent) and the images it was measured on.
    Accuracy(fn(&ReportRow) -> (Option<f64>, Option<usize>)),
}

/// A column of the table: its header and a row's cell.
type Column = (&'static str, Cell);

/// How accuracies are written: in Markdown with their 95% interval in the
/// cell (`45.30 (42.2-48.4)`, n in the `n` column); in CSV as numbers, each
/// followed by `_lo` and `_hi` columns.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Style {
    Markdown,
    Csv,
}

/// The columns before the other evaluations: the paper's Table 2.
const PAPER_COLUMNS: [Column; 14] = [
    ("#", Cell::Text(|r| r.index.to_string())),
    ("run", Cell::Text(|r| r.name.clone())),
    ("student", Cell::Text(|r| r.arch.clone())),
    ("Epo", Cell::Text(|r| text(r.epochs, ""))),
    ("AS", Cell::Text(|r| text(r.steps, ""))),
    (
        "StepSize",
        Cell::Text(|r| r.step_size.map(step_text).unwrap_or_default()),
    ),
    ("LR", Cell::Text(|r| text(r.lr, ""))),
    ("MTL@1", Cell::Text(|r| f(r.mtl_epoch1, 6))),
    ("Nat@1", Cell::Accuracy(|r| (r.nat_epoch1, r.images_epoch1))),
    (
        "R@1",
        Cell::Accuracy(|r| (r.robust_epoch1, r.images_epoch1)),
    ),
    ("MTL", Cell::Text(|r| f(r.mtl, 6))),
    ("n", Cell::Text(|r| text(r.images, ""))),
    ("Nat", Cell::Accuracy(|r| (r.nat, r.images))),
    ("R", Cell::Accuracy(|r| (r.robust, r.images))),
];

/// The columns after the other evaluations.
const LATER_COLUMNS: [Column; 12] = [
    ("worst_case", Cell::Accuracy(|r| (r.worst_case, r.images))),
    ("seed", Cell::Text(|r| text(r.seed, ""))),
    ("method", Cell::Text(|r| r.method.clone())),
    ("train_s", Cell::Text(|r| f(r.train_s, 0))),
    ("best_epoch", Cell::Text(|r| text(r.best_epoch, ""))),
    ("best_Nat", Cell::Accuracy(|r| (r.best_nat, r.best_images))),
    (
        "best_worst_case",
        Cell::Accuracy(|r| (r.best_worst_case, r.best_images)),
    ),
    ("guard", Cell::Text(|r| r.guard.clone())),
    ("wall_s", Cell::Text(|r| f(r.wall_s, 1))),
    ("s_per_epoch", Cell::Text(|r| f(r.epoch_s, 2))),
    (
        "attack_busy_%",
        Cell::Text(|r| f(r.attack_busy.map(|b| 100.0 * b), 1)),
    ),
    ("status", Cell::Text(|r| r.status.clone())),
];

/// A column's header(s) and a row's cell(s) in `style`.
fn cells(name: &str, cell: Cell, row: Option<&ReportRow>, style: Style) -> Vec<String> {
    match (cell, row) {
        (Cell::Text(_), None) => vec![name.to_string()],
        (Cell::Text(t), Some(r)) => vec![t(r)],
        (Cell::Accuracy(_), None) => match style {
            Style::Markdown => vec![name.to_string()],
            Style::Csv => vec![name.to_string(), format!("{name}_lo"), format!("{name}_hi")],
        },
        (Cell::Accuracy(a), Some(r)) => {
            let (acc, n) = a(r);
            accuracy_cells(acc, n, style)
        }
    }
}

/// An accuracy measured on `n` images as cell(s) in `style`.
fn accuracy_cells(acc: Option<f64>, n: Option<usize>, style: Style) -> Vec<String> {
    let i = acc.zip(n).map(|(acc, n)| interval::of_percent(acc, n));
    match style {
        Style::Markdown => vec![match (acc, i) {
            (Some(acc), Some(i)) => format!("{acc:.2} ({:.1}-{:.1})", i.lo, i.hi),
            _ => f(acc, 2),
        }],
        Style::Csv => vec![f(acc, 2), f(i.map(|i| i.lo), 2), f(i.map(|i| i.hi), 2)],
    }
}

/// The table's header and cells: [`PAPER_COLUMNS`], the other evaluations
/// any row has (in the order first run), [`LATER_COLUMNS`].
pub fn table(rows: &[ReportRow], style: Style) -> (Vec<String>, Vec<Vec<String>>) {
    let others: Vec<String> = rows
        .iter()
        .flat_map(|r| r.other.keys().cloned())
        .collect::<IndexSet<_>>()
        .into_iter()
        .collect();
    let line = |row: Option<&ReportRow>| -> Vec<String> {
        let mut out = Vec::new();
        for (name, cell) in PAPER_COLUMNS {
            out.extend(cells(name, cell, row, style));
        }
        for name in &others {
            out.extend(match row {
                None => cells(name, Cell::Accuracy(|_| (None, None)), None, style),
                Some(r) => accuracy_cells(r.other.get(name).copied(), r.images, style),
            });
        }
        for (name, cell) in LATER_COLUMNS {
            out.extend(cells(name, cell, row, style));
        }
        out
    };
    let header = line(None);
    let body = rows.iter().map(|r| line(Some(r))).collect();
    (header, body)
}

fn csv_cell(s: &str) -> String {
    if s.contains(',') || s.contains('"') || s.contains('\n') {
        format!("\"{}\"", s.replace('"', "\"\""))
    } else {
        s.to_string()
    }
}

/// Writes report.md, report.csv and the plots into the sweep folder.
pub fn write_report(sweep_dir: &Path) -> Result<Written> {
    let dir = SweepDir::new(sweep_dir);
    let rows = read_rows(&dir)?;
    let name = dir
        .read_manifest()
        .map(|m| m.sweep)
        .unwrap_or_else(|_| sweep_dir.display().to_string());
    let markdown = sweep_dir.join("report.md");
    let csv = sweep_dir.join("report.csv");
    write_text_atomic(&markdown, &markdown_report(&name, &rows))?;
    write_text_atomic(&csv, &csv_report(&rows))?;
    let plots = write_plots(sweep_dir, &name, &rows)?;
    Ok(Written {
        markdown,
        csv,
        plots,
        rows,
    })
}

/// report.csv: one row per run, intervals in `_lo` / `_hi` columns.
fn csv_report(rows: &[ReportRow]) -> String {
    let (header, cells) = table(rows, Style::Csv);
    std::iter::once(&header)
        .chain(&cells)
        .map(|c| c.iter().map(|h| csv_cell(h)).collect::<Vec<_>>().join(",") + "\n")
        .collect()
}

/// report.md: what the columns mean, the table, how many runs finished.
fn markdown_report(name: &str, rows: &[ReportRow]) -> String {
    let mut md = format!(
        "# Sweep {name}\n\nLayout of the paper's Table 2. Epo: epochs, AS: attack steps, MTL: mean training loss \
         (of epoch 1 and of the last epoch), Nat / R: natural accuracy and accuracy under the training attack (%), \
         after epoch 1 and at the end; then the other evaluations of the last snapshot, the worst case (right \
         clean and under every evaluation), the seed, loss and attack kinds, training seconds spent against \
         `train.max_seconds`, the best-by-validation snapshot (epoch, natural, worst case), the overfitting \
         guard's verdict, wall seconds, seconds per epoch, and the attack stage's busy share of wall time. \
         Each accuracy is followed by its 95% Wilson interval on the n test images it was measured on \
         (report.csv: the `_lo` and `_hi` columns).\n\n"
    );
    let (header, cells) = table(rows, Style::Markdown);
    md.push_str(&format!("| {} |\n", header.join(" | ")));
    md.push_str(&format!(
        "|{}\n",
        header.iter().map(|_| "---|").collect::<String>()
    ));
    for c in &cells {
        md.push_str(&format!("| {} |\n", c.join(" | ")));
    }
    let done = rows.iter().filter(|r| r.status == "ok").count();
    md.push_str(&format!(
        "\n{done} of {} finished.\n",
        crate::report::plural::count(rows.len() as u64, "run")
    ));
    md
}

/// The sweep's plots: robust against natural accuracy, epoch time against
/// attack steps, and validation curves over training time when runs have them.
fn write_plots(sweep_dir: &Path, name: &str, rows: &[ReportRow]) -> Result<Vec<PathBuf>> {
    // The rows with both coordinates, labelled by index, in `series` each.
    let scatter = |xy: fn(&ReportRow) -> Option<(f64, f64)>, series: fn(&ReportRow) -> String| {
        let point = |r: &ReportRow| {
            let (x, y) = xy(r)?;
            Some(ScatterPoint {
                x,
                y,
                label: format!(" {}", r.index),
                series: series(r),
            })
        };
        rows.iter().filter_map(point).collect::<Vec<_>>()
    };
    let acc = scatter(
        |r| Some((r.nat?, r.robust?)),
        |r| format!("{} {}", r.arch, steps_label(r.steps)),
    );
    let time = scatter(|r| Some((r.steps? as f64, r.epoch_s?)), |r| r.arch.clone());
    let p1 = sweep_dir.join("robust_vs_natural.png");
    let p2 = sweep_dir.join("epoch_time_vs_steps.png");
    labelled_scatter(
        &p1,
        &format!("{name}: robust vs natural accuracy (last eval)"),
        "natural accuracy %",
        "robust accuracy % (training attack)",
        &acc,
    )?;
    labelled_scatter(
        &p2,
        &format!("{name}: time per epoch vs attack steps"),
        "attack steps",
        "seconds per epoch",
        &time,
    )?;
    let mut plots = vec![p1, p2];
    let curves: Vec<_> = rows
        .iter()
        .filter(|r| !r.curve.is_empty())
        .map(|r| {
            (
                format!(
                    "{} {} seed {}",
                    r.method,
                    steps_label(r.steps),
                    text(r.seed, "?")
                ),
                r.curve.clone(),
            )
        })
        .collect();
    if !curves.is_empty() {
        let p3 = sweep_dir.join("validation_vs_time.png");
        crate::report::plots::curves_over_time(
            &p3,
            &format!("{name}: validation accuracy against training time"),
            &curves,
        )?;
        plots.push(p3);
    }
    Ok(plots)
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::path::Path;

    #[test]
    fn only_sweep_folders_pass() {
        let dir = tempfile::tempdir().unwrap();
        let err = |p: &Path| check_sweep_folder(p).unwrap_err().to_string();
        assert!(err(&dir.path().join("absent")).contains("no such folder"));
        let file = dir.path().join("f");
        std::fs::write(&file, "").unwrap();
        assert!(err(&file).contains("is a file"));
        let run = dir.path().join("run");
        std::fs::create_dir(&run).unwrap();
        std::fs::write(run.join("config.toml"), "").unwrap();
        assert!(err(&run).contains("is a run folder"), "{}", err(&run));
        let other = dir.path().join("other");
        std::fs::create_dir_all(other.join("runs")).unwrap();
        assert!(err(&other).contains("no manifest.json"));
        let sweep = dir.path().join("sweep");
        std::fs::create_dir(&sweep).unwrap();
        std::fs::write(sweep.join("manifest.json"), "{}").unwrap();
        check_sweep_folder(&sweep).unwrap();
    }
}
