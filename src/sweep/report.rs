//! `ard-pipeline report SWEEP_DIR`: the sweep's runs in the layout of the
//! paper's Table 2 and more columns (`report.md`, `report.csv`; see
//! `PAPER_COLUMNS` and `LATER_COLUMNS`), and the plots
//! `robust_vs_natural.png`, `epoch_time_vs_steps.png` and, for runs with a
//! validation curve, `validation_vs_time.png`.

use super::manifest::SweepDir;
use crate::error::{Error, Result};
use crate::eval::interval;
use crate::report::plots::{labelled_scatter, ScatterPoint};
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

fn read_json(path: &Path) -> Option<serde_json::Value> {
    serde_json::from_str(&std::fs::read_to_string(path).ok()?).ok()
}

fn read_jsonl(path: &Path) -> Vec<serde_json::Value> {
    std::fs::read_to_string(path)
        .unwrap_or_default()
        .lines()
        .filter_map(|l| serde_json::from_str(l).ok())
        .collect()
}

fn get<'a>(t: &'a toml::Table, path: &str) -> Option<&'a toml::Value> {
    let mut parts = path.split('.');
    let mut v = t.get(parts.next()?)?;
    for p in parts {
        v = v.as_table()?.get(p)?;
    }
    Some(v)
}

/// The record of `epoch` among a run's JSONL records.
fn at_epoch(records: &[serde_json::Value], epoch: u64) -> Option<&serde_json::Value> {
    records.iter().find(|e| e["epoch"].as_u64() == Some(epoch))
}

fn num(v: Option<&toml::Value>) -> Option<f64> {
    match v? {
        toml::Value::Float(f) => Some(*f),
        toml::Value::Integer(i) => Some(*i as f64),
        toml::Value::String(s) => crate::config::parse_real(s).ok(),
        _ => None,
    }
}

/// Reads one run's folder (and its generated config when the run never started).
pub fn read_row(dir: &SweepDir, index: usize, name: &str) -> ReportRow {
    let run = dir.run(name);
    let mut row = ReportRow {
        index,
        name: name.to_string(),
        ..Default::default()
    };
    let cfg_text = std::fs::read_to_string(run.join("config.toml"))
        .or_else(|_| std::fs::read_to_string(dir.config(name)))
        .unwrap_or_default();
    if let Ok(cfg) = toml::from_str::<toml::Table>(&cfg_text) {
        let str_at = |k: &str| get(&cfg, k).and_then(|v| v.as_str());
        row.arch = str_at("student.arch").unwrap_or("").to_string();
        row.epochs = num(get(&cfg, "train.epochs")).map(|v| v as usize);
        row.steps = num(get(&cfg, "attack.steps")).map(|v| v as usize);
        row.step_size = num(get(&cfg, "attack.step_size"));
        row.lr = num(get(&cfg, "optim.lr"));
        row.seed = num(get(&cfg, "run.seed")).map(|v| v as u64);
        let (loss, attack) = (str_at("loss.kind"), str_at("attack.kind"));
        row.method = format!("{} {}", loss.unwrap_or("?"), attack.unwrap_or("?"));
        row.guard = match str_at("guard.action") {
            None | Some("off") => "off".into(),
            Some(_) => "no collapse".into(),
        };
    }
    let epochs = read_jsonl(&run.join("metrics.jsonl"));
    let loss_of = |e: &serde_json::Value| e["mean_loss"].as_f64();
    row.mtl_epoch1 = at_epoch(&epochs, 1).and_then(loss_of);
    row.mtl = epochs.last().and_then(loss_of);
    let secs: Vec<f64> = epochs
        .iter()
        .filter_map(|e| e["seconds"].as_f64())
        .collect();
    if !secs.is_empty() {
        row.epoch_s = Some(secs.iter().sum::<f64>() / secs.len() as f64);
    }
    row.train_s = epochs
        .iter()
        .rev()
        .find_map(|e| e["train_seconds"].as_f64());
    if row.train_s.is_some() {
        // With a time budget `train.epochs` is only a bound: show the epochs trained.
        row.epochs = Some(epochs.len());
    }
    let validation = read_jsonl(&run.join("validation.jsonl"));
    let collapsed: Vec<String> = validation
        .iter()
        .filter(|v| v["collapse"].as_bool() == Some(true))
        .filter_map(|v| v["epoch"].as_u64().map(|e| e.to_string()))
        .collect();
    if !collapsed.is_empty() {
        row.guard = format!("collapse at epoch {}", collapsed.join(" "));
    }
    let seconds_at = |epoch| at_epoch(&epochs, epoch)?["train_seconds"].as_f64();
    row.curve = validation
        .iter()
        .filter_map(|v| {
            Some((
                seconds_at(v["epoch"].as_u64()?)?,
                v["natural"].as_f64()?,
                v["robust"].as_f64()?,
            ))
        })
        .collect();
    let evals = read_jsonl(&run.join("eval.jsonl"));
    let acc = |e: &serde_json::Value, k: &str| e["report"]["accuracy"][k].as_f64();
    let images = |e: &serde_json::Value| e["report"]["images"].as_u64().map(|n| n as usize);
    if let Some(e1) = at_epoch(&evals, 1) {
        row.nat_epoch1 = acc(e1, "natural");
        row.robust_epoch1 = acc(e1, "train_attack");
        row.images_epoch1 = images(e1);
    }
    let summary = read_json(&dir.summary(name));
    if let Some(last) = evals
        .iter()
        .max_by_key(|e| e["epoch"].as_u64().unwrap_or(0))
    {
        row.nat = acc(last, "natural");
        row.robust = acc(last, "train_attack");
        row.worst_case = last["report"]["worst_case"].as_f64();
        row.images = images(last);
        row.other = last["report"]["accuracy"]
            .as_object()
            .into_iter()
            .flatten()
            .filter(|(k, _)| *k != "natural" && *k != "train_attack")
            .filter_map(|(k, v)| Some((k.clone(), v.as_f64()?)))
            .collect();
    }
    match &summary {
        Some(s) => {
            row.status = "ok".into();
            row.wall_s = s["wall_s"].as_f64();
            row.best_epoch = s["best_epoch"].as_u64();
            row.best_nat = s["best_eval"]["natural"].as_f64();
            row.best_worst_case = s["best_worst_case"].as_f64();
            row.best_images = s["best_test"]["images"]
                .as_u64()
                .map(|n| n as usize)
                .or(row.images);
            row.attack_busy = s["stages"].as_array().and_then(|st| {
                st.iter()
                    .find(|x| x["stage"] == "attack")
                    .and_then(|x| x["busy_share"].as_f64())
            });
            if row.nat.is_none() {
                row.nat = s["final_eval"]["natural"].as_f64();
                row.robust = s["final_eval"]["train_attack"].as_f64();
                row.images = s["final_test"]["images"].as_u64().map(|n| n as usize);
            }
            if row.mtl.is_none() {
                row.mtl = s["final_loss"].as_f64();
            }
            if row.epoch_s.is_none() {
                let e = s["epochs"].as_f64().unwrap_or(0.0);
                row.epoch_s = row.wall_s.filter(|_| e > 0.0).map(|w| w / e);
            }
        }
        None => row.status = if run.exists() { "failed" } else { "missing" }.into(),
    }
    row
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
    Ok(names.iter().map(|(i, n)| read_row(dir, *i, n)).collect())
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
    let (header, cells) = table(&rows, Style::Csv);
    let csv: String = std::iter::once(&header)
        .chain(&cells)
        .map(|c| c.iter().map(|h| csv_cell(h)).collect::<Vec<_>>().join(",") + "\n")
        .collect();
    let name = dir
        .read_manifest()
        .map(|m| m.sweep)
        .unwrap_or_else(|_| sweep_dir.display().to_string());
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
    let (header, cells) = table(&rows, Style::Markdown);
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
    let markdown = sweep_dir.join("report.md");
    let csv_path = sweep_dir.join("report.csv");
    std::fs::write(&markdown, md).map_err(|e| Error::io(&markdown, e))?;
    std::fs::write(&csv_path, csv).map_err(|e| Error::io(&csv_path, e))?;

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
    Ok(Written {
        markdown,
        csv: csv_path,
        plots,
        rows,
    })
}
