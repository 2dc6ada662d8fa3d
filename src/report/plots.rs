//! PNG plots of a run (plotters, bitmap backend): loss and accuracy per epoch,
//! and per-stage throughput and busy share. The font is embedded (DejaVu Sans,
//! see DejaVuSans-LICENSE.txt), so plots render on machines without fonts.

use crate::error::{Error, Result};
use plotters::prelude::*;
use plotters::style::{register_font, FontStyle};
use std::collections::BTreeMap;
use std::path::Path;
use std::sync::Once;

static FONT: &[u8] = include_bytes!("DejaVuSans.ttf");
static REGISTER: Once = Once::new();

fn font() {
    REGISTER.call_once(|| {
        if register_font("sans-serif", FontStyle::Normal, FONT).is_err() {
            log::warn!("could not register the plot font");
        }
    });
}

fn plot_err(path: &Path, e: impl std::fmt::Display) -> Error {
    Error::Plot {
        path: path.to_path_buf(),
        message: e.to_string(),
    }
}

const COLORS: [RGBColor; 10] = [
    RGBColor(31, 119, 180),
    RGBColor(214, 39, 40),
    RGBColor(44, 160, 44),
    RGBColor(255, 127, 14),
    RGBColor(148, 103, 189),
    RGBColor(140, 86, 75),
    RGBColor(227, 119, 194),
    RGBColor(127, 127, 127),
    RGBColor(188, 189, 34),
    RGBColor(23, 190, 207),
];

/// Training loss per epoch (left) and accuracy per evaluation per epoch (right).
pub fn training_curves(
    path: &Path,
    loss: &[(usize, f64)],
    accuracy: &[(usize, BTreeMap<String, f64>)],
) -> Result<()> {
    font();
    let root = BitMapBackend::new(path, (1200, 450)).into_drawing_area();
    root.fill(&WHITE).map_err(|e| plot_err(path, e))?;
    let (left, right) = root.split_horizontally(600);
    let max_epoch = loss
        .iter()
        .map(|l| l.0)
        .chain(accuracy.iter().map(|a| a.0))
        .max()
        .unwrap_or(1)
        .max(1);
    let finite: Vec<f64> = loss.iter().map(|l| l.1).filter(|v| v.is_finite()).collect();
    let (lo, hi) = finite
        .iter()
        .fold((f64::MAX, f64::MIN), |(a, b), &v| (a.min(v), b.max(v)));
    let (lo, hi) = if finite.is_empty() {
        (0.0, 1.0)
    } else {
        (lo.min(hi) * 0.95, hi * 1.05 + 1e-9)
    };
    let mut chart = ChartBuilder::on(&left)
        .caption("training loss", ("sans-serif", 22))
        .margin(12)
        .x_label_area_size(36)
        .y_label_area_size(60)
        .build_cartesian_2d(0.5..max_epoch as f64 + 0.5, lo..hi)
        .map_err(|e| plot_err(path, e))?;
    chart
        .configure_mesh()
        .x_desc("epoch")
        .y_desc("mean loss")
        .draw()
        .map_err(|e| plot_err(path, e))?;
    chart
        .draw_series(LineSeries::new(
            loss.iter().map(|&(e, l)| (e as f64, l)),
            COLORS[0].stroke_width(2),
        ))
        .map_err(|e| plot_err(path, e))?;
    chart
        .draw_series(
            loss.iter()
                .map(|&(e, l)| Circle::new((e as f64, l), 3, COLORS[0].filled())),
        )
        .map_err(|e| plot_err(path, e))?;

    let mut chart = ChartBuilder::on(&right)
        .caption("test accuracy (%)", ("sans-serif", 22))
        .margin(12)
        .x_label_area_size(36)
        .y_label_area_size(50)
        .build_cartesian_2d(0.5..max_epoch as f64 + 0.5, 0.0..100.0)
        .map_err(|e| plot_err(path, e))?;
    chart
        .configure_mesh()
        .x_desc("epoch")
        .y_desc("accuracy %")
        .draw()
        .map_err(|e| plot_err(path, e))?;
    let names: Vec<String> = accuracy
        .iter()
        .flat_map(|(_, m)| m.keys().cloned())
        .collect::<std::collections::BTreeSet<_>>()
        .into_iter()
        .collect();
    for (i, name) in names.iter().enumerate() {
        let color = COLORS[i % COLORS.len()];
        let points: Vec<(f64, f64)> = accuracy
            .iter()
            .filter_map(|(e, m)| m.get(name).map(|&a| (*e as f64, a)))
            .collect();
        chart
            .draw_series(LineSeries::new(points.clone(), color.stroke_width(2)))
            .map_err(|e| plot_err(path, e))?
            .label(name.clone())
            .legend(move |(x, y)| {
                PathElement::new(vec![(x, y), (x + 18, y)], color.stroke_width(2))
            });
        chart
            .draw_series(
                points
                    .into_iter()
                    .map(|p| Circle::new(p, 3, color.filled())),
            )
            .map_err(|e| plot_err(path, e))?;
    }
    if !names.is_empty() {
        chart
            .configure_series_labels()
            .background_style(WHITE.mix(0.8))
            .border_style(BLACK)
            .draw()
            .map_err(|e| plot_err(path, e))?;
    }
    root.present().map_err(|e| plot_err(path, e))
}

/// Validation accuracy against training seconds, one line per run: natural
/// (left) and under the validation attack (right). `runs`: (label, points of
/// (seconds, natural %, robust %)).
pub fn curves_over_time(
    path: &Path,
    title: &str,
    runs: &[(String, Vec<(f64, f64, f64)>)],
) -> Result<()> {
    font();
    let root = BitMapBackend::new(path, (1400, 520)).into_drawing_area();
    root.fill(&WHITE).map_err(|e| plot_err(path, e))?;
    let root = root
        .titled(title, ("sans-serif", 22))
        .map_err(|e| plot_err(path, e))?;
    let (left, right) = root.split_horizontally(700);
    let max_s = runs
        .iter()
        .flat_map(|(_, p)| p.iter().map(|q| q.0))
        .fold(1.0f64, f64::max);
    for (area, caption, pick) in [
        (&left, "validation natural accuracy %", 0usize),
        (&right, "validation robust accuracy %", 1),
    ] {
        let top = runs
            .iter()
            .flat_map(|(_, p)| p.iter().map(|q| if pick == 0 { q.1 } else { q.2 }))
            .fold(10.0f64, f64::max);
        let mut chart = ChartBuilder::on(area)
            .caption(caption, ("sans-serif", 18))
            .margin(12)
            .x_label_area_size(36)
            .y_label_area_size(50)
            .build_cartesian_2d(0.0..max_s * 1.05, 0.0..(top * 1.1).min(100.0))
            .map_err(|e| plot_err(path, e))?;
        chart
            .configure_mesh()
            .x_desc("training seconds")
            .y_desc("accuracy %")
            .draw()
            .map_err(|e| plot_err(path, e))?;
        for (i, (label, points)) in runs.iter().enumerate() {
            let color = COLORS[i % COLORS.len()];
            let dashed = i >= COLORS.len();
            let xy: Vec<(f64, f64)> = points
                .iter()
                .map(|q| (q.0, if pick == 0 { q.1 } else { q.2 }))
                .collect();
            chart
                .draw_series(LineSeries::new(
                    xy.clone(),
                    color.stroke_width(if dashed { 1 } else { 2 }),
                ))
                .map_err(|e| plot_err(path, e))?
                .label(label.clone())
                .legend(move |(x, y)| {
                    PathElement::new(vec![(x, y), (x + 18, y)], color.stroke_width(2))
                });
            chart
                .draw_series(xy.into_iter().map(|p| Circle::new(p, 3, color.filled())))
                .map_err(|e| plot_err(path, e))?;
        }
        chart
            .configure_series_labels()
            .position(SeriesLabelPosition::LowerRight)
            .background_style(WHITE.mix(0.8))
            .border_style(BLACK)
            .label_font(("sans-serif", 12))
            .draw()
            .map_err(|e| plot_err(path, e))?;
    }
    root.present().map_err(|e| plot_err(path, e))
}

/// Per-stage images/s (left) and share of wall time busy / blocked / idle (right).
pub fn stage_throughput(path: &Path, stages: &[(String, f64, f64, f64, f64)]) -> Result<()> {
    font();
    let root = BitMapBackend::new(path, (1200, 450)).into_drawing_area();
    root.fill(&WHITE).map_err(|e| plot_err(path, e))?;
    let (left, right) = root.split_horizontally(600);
    let n = stages.len().max(1);
    let max_rate = stages.iter().map(|s| s.1).fold(0.0, f64::max).max(1e-9) * 1.15;
    let labels: Vec<String> = stages.iter().map(|s| s.0.clone()).collect();
    let label_of = |x: &f64| labels.get(x.round() as usize).cloned().unwrap_or_default();
    let mut chart = ChartBuilder::on(&left)
        .caption("images/s per stage", ("sans-serif", 22))
        .margin(12)
        .x_label_area_size(36)
        .y_label_area_size(60)
        .build_cartesian_2d(-0.5..n as f64 - 0.5, 0.0..max_rate)
        .map_err(|e| plot_err(path, e))?;
    chart
        .configure_mesh()
        .x_labels(n)
        .x_label_formatter(&label_of)
        .y_desc("images/s")
        .disable_x_mesh()
        .draw()
        .map_err(|e| plot_err(path, e))?;
    chart
        .draw_series(stages.iter().enumerate().map(|(i, s)| {
            Rectangle::new(
                [(i as f64 - 0.3, 0.0), (i as f64 + 0.3, s.1)],
                COLORS[0].filled(),
            )
        }))
        .map_err(|e| plot_err(path, e))?;

    let mut chart = ChartBuilder::on(&right)
        .caption(
            "share of wall time (busy / blocked / idle)",
            ("sans-serif", 20),
        )
        .margin(12)
        .x_label_area_size(36)
        .y_label_area_size(50)
        .build_cartesian_2d(-0.5..n as f64 - 0.5, 0.0..100.0)
        .map_err(|e| plot_err(path, e))?;
    chart
        .configure_mesh()
        .x_labels(n)
        .x_label_formatter(&label_of)
        .y_desc("% of wall time")
        .disable_x_mesh()
        .draw()
        .map_err(|e| plot_err(path, e))?;
    for (k, (name, color)) in [
        ("busy", COLORS[1]),
        ("blocked", COLORS[3]),
        ("idle", COLORS[2]),
    ]
    .into_iter()
    .enumerate()
    {
        chart
            .draw_series(stages.iter().enumerate().map(move |(i, s)| {
                let (b, bl, id) = (s.2 * 100.0, s.3 * 100.0, s.4 * 100.0);
                let (y0, y1) = match k {
                    0 => (0.0, b),
                    1 => (b, b + bl),
                    _ => (b + bl, b + bl + id),
                };
                Rectangle::new(
                    [(i as f64 - 0.3, y0), (i as f64 + 0.3, y1.min(100.0))],
                    color.filled(),
                )
            }))
            .map_err(|e| plot_err(path, e))?
            .label(name)
            .legend(move |(x, y)| Rectangle::new([(x, y - 5), (x + 12, y + 5)], color.filled()));
    }
    chart
        .configure_series_labels()
        .background_style(WHITE.mix(0.8))
        .border_style(BLACK)
        .draw()
        .map_err(|e| plot_err(path, e))?;
    root.present().map_err(|e| plot_err(path, e))
}

/// One point of a labelled scatter plot: x, y, label, series (colour and legend).
#[derive(Debug, Clone)]
pub struct ScatterPoint {
    pub x: f64,
    pub y: f64,
    pub label: String,
    pub series: String,
}

/// A scatter plot with a text label beside every point and one colour per
/// series (a sweep's rows: robust vs natural accuracy, time per epoch vs steps).
pub fn labelled_scatter(
    path: &Path,
    title: &str,
    x_desc: &str,
    y_desc: &str,
    points: &[ScatterPoint],
) -> Result<()> {
    font();
    let root = BitMapBackend::new(path, (900, 650)).into_drawing_area();
    root.fill(&WHITE).map_err(|e| plot_err(path, e))?;
    let range = |vals: Vec<f64>| {
        let finite: Vec<f64> = vals.into_iter().filter(|v| v.is_finite()).collect();
        if finite.is_empty() {
            return (0.0, 1.0);
        }
        let lo = finite.iter().cloned().fold(f64::MAX, f64::min);
        let hi = finite.iter().cloned().fold(f64::MIN, f64::max);
        let pad = ((hi - lo) * 0.1).max(hi.abs() * 0.05).max(0.5);
        (lo - pad, hi + pad)
    };
    let (x0, x1) = range(points.iter().map(|p| p.x).collect());
    let (y0, y1) = range(points.iter().map(|p| p.y).collect());
    let mut chart = ChartBuilder::on(&root)
        .caption(title, ("sans-serif", 24))
        .margin(16)
        .x_label_area_size(44)
        .y_label_area_size(64)
        .build_cartesian_2d(x0..x1, y0..y1)
        .map_err(|e| plot_err(path, e))?;
    chart
        .configure_mesh()
        .x_desc(x_desc)
        .y_desc(y_desc)
        .draw()
        .map_err(|e| plot_err(path, e))?;
    let series: Vec<String> = points
        .iter()
        .map(|p| p.series.clone())
        .collect::<std::collections::BTreeSet<_>>()
        .into_iter()
        .collect();
    for (i, name) in series.iter().enumerate() {
        let color = COLORS[i % COLORS.len()];
        let mine: Vec<&ScatterPoint> = points.iter().filter(|p| &p.series == name).collect();
        chart
            .draw_series(
                mine.iter()
                    .filter(|p| p.x.is_finite() && p.y.is_finite())
                    .map(|p| Circle::new((p.x, p.y), 5, color.filled())),
            )
            .map_err(|e| plot_err(path, e))?
            .label(name.clone())
            .legend(move |(x, y)| Circle::new((x + 6, y), 5, color.filled()));
        chart
            .draw_series(
                mine.iter()
                    .filter(|p| p.x.is_finite() && p.y.is_finite())
                    .map(|p| {
                        Text::new(
                            p.label.clone(),
                            (p.x, p.y),
                            ("sans-serif", 14).into_font().color(&BLACK),
                        )
                    }),
            )
            .map_err(|e| plot_err(path, e))?;
    }
    if !series.is_empty() {
        chart
            .configure_series_labels()
            .background_style(WHITE.mix(0.8))
            .border_style(BLACK)
            .draw()
            .map_err(|e| plot_err(path, e))?;
    }
    root.present().map_err(|e| plot_err(path, e))
}
