//! PNG plots of a run (plotters, bitmap backend): loss and accuracy per epoch,
//! and per-stage throughput and busy share. The font is embedded (DejaVu Sans,
//! see DejaVuSans-LICENSE.txt), so plots render on machines without fonts.

use crate::error::{Error, Result};
use plotters::coord::types::RangedCoordf64;
use plotters::coord::Shift;
use plotters::prelude::*;
use plotters::style::{register_font, FontStyle};
use std::collections::{BTreeMap, BTreeSet};
use std::ops::Range;
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

/// A PNG's drawing area.
type Area<'p> = DrawingArea<BitMapBackend<'p>, Shift>;
/// A chart with f64 axes.
type Chart<'a, 'p> =
    ChartContext<'a, BitMapBackend<'p>, Cartesian2d<RangedCoordf64, RangedCoordf64>>;
/// Bar charts' x positions: how many, and the name of each.
type Names<'f> = (usize, &'f dyn Fn(&f64) -> String);
/// What drawing returns; [`draw`] turns the error into [`Error::Plot`].
type Drawn<T = ()> = std::result::Result<T, Box<dyn std::error::Error>>;

/// Draws a `size` PNG at `path`: registers the font, fills the image white,
/// runs `body` on it and presents it; any error as [`Error::Plot`].
fn draw(path: &Path, size: (u32, u32), body: impl FnOnce(&Area) -> Drawn) -> Result<()> {
    font();
    let root = BitMapBackend::new(path, size).into_drawing_area();
    let drawn = || -> Drawn {
        root.fill(&WHITE)?;
        body(&root)?;
        Ok(root.present()?)
    };
    drawn().map_err(|e| Error::Plot {
        path: path.to_path_buf(),
        message: e.to_string(),
    })
}

/// A chart on `area`: `caption` (text, font size) and `layout` (margin, x and
/// y label area sizes) over `x` by `y`, its mesh drawn with the axis
/// descriptions `desc` (x, y); with `names` (count, formatter) the x
/// positions are named instead, without vertical mesh lines or x description.
fn chart_on<'a, 'p>(
    area: &'a Area<'p>,
    caption: (&str, u32),
    layout: (u32, u32, u32),
    (x, y): (Range<f64>, Range<f64>),
    desc: (&str, &str),
    names: Option<Names>,
) -> Drawn<Chart<'a, 'p>> {
    let (margin, x_area, y_area) = layout;
    let mut chart = ChartBuilder::on(area)
        .caption(caption.0, ("sans-serif", caption.1))
        .margin(margin)
        .x_label_area_size(x_area)
        .y_label_area_size(y_area)
        .build_cartesian_2d(x, y)?;
    let mut mesh = chart.configure_mesh();
    match names {
        Some((n, name)) => mesh.x_labels(n).x_label_formatter(name).disable_x_mesh(),
        None => mesh.x_desc(desc.0),
    };
    mesh.y_desc(desc.1).draw()?;
    Ok(chart)
}

/// A line through `points` (`width` wide) with a dot on each, in `color`,
/// and with a `label`, its entry in the legend.
fn dotted_line(
    chart: &mut Chart,
    points: Vec<(f64, f64)>,
    color: RGBColor,
    width: u32,
    label: Option<&str>,
) -> Drawn {
    let line = chart.draw_series(LineSeries::new(points.clone(), color.stroke_width(width)))?;
    if let Some(label) = label {
        line.label(label).legend(move |(x, y)| {
            PathElement::new(vec![(x, y), (x + 18, y)], color.stroke_width(2))
        });
    }
    chart.draw_series(
        points
            .into_iter()
            .map(|p| Circle::new(p, 3, color.filled())),
    )?;
    Ok(())
}

/// The legend of a chart's labelled series, in a white bordered box.
fn legend<'a, 'p: 'a>(chart: &mut Chart<'a, 'p>, position: SeriesLabelPosition) -> Drawn {
    chart
        .configure_series_labels()
        .position(position)
        .background_style(WHITE.mix(0.8))
        .border_style(BLACK)
        .draw()?;
    Ok(())
}

/// Training loss per epoch (left) and accuracy per evaluation per epoch (right).
pub fn training_curves(
    path: &Path,
    loss: &[(usize, f64)],
    accuracy: &[(usize, BTreeMap<String, f64>)],
) -> Result<()> {
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
    let epochs = 0.5..max_epoch as f64 + 0.5;
    draw(path, (1200, 450), |root| {
        let (left, right) = root.split_horizontally(600);
        let mut chart = chart_on(
            &left,
            ("training loss", 22),
            (12, 36, 60),
            (epochs.clone(), lo..hi),
            ("epoch", "mean loss"),
            None,
        )?;
        let points = loss.iter().map(|&(e, l)| (e as f64, l)).collect();
        dotted_line(&mut chart, points, COLORS[0], 2, None)?;

        let mut chart = chart_on(
            &right,
            ("test accuracy (%)", 22),
            (12, 36, 50),
            (epochs, 0.0..100.0),
            ("epoch", "accuracy %"),
            None,
        )?;
        let names: BTreeSet<&String> = accuracy.iter().flat_map(|(_, m)| m.keys()).collect();
        for (i, name) in names.iter().enumerate() {
            let points = accuracy
                .iter()
                .filter_map(|(e, m)| m.get(*name).map(|&a| (*e as f64, a)))
                .collect();
            dotted_line(
                &mut chart,
                points,
                COLORS[i % COLORS.len()],
                2,
                Some(name.as_str()),
            )?;
        }
        if !names.is_empty() {
            legend(&mut chart, SeriesLabelPosition::MiddleRight)?;
        }
        Ok(())
    })
}

/// One run's validation curve: its label and (seconds, natural %, robust %) points.
pub type TimedCurve = (String, Vec<(f64, f64, f64)>);

/// Validation accuracy against training seconds, one line per run: natural
/// (left) and under the validation attack (right).
pub fn curves_over_time(path: &Path, title: &str, runs: &[TimedCurve]) -> Result<()> {
    let max_s = runs
        .iter()
        .flat_map(|(_, p)| p.iter().map(|q| q.0))
        .fold(1.0f64, f64::max);
    draw(path, (1400, 520), |root| {
        let root = root.titled(title, ("sans-serif", 22))?;
        let (left, right) = root.split_horizontally(700);
        for (area, caption, pick) in [
            (&left, "validation natural accuracy %", 0usize),
            (&right, "validation robust accuracy %", 1),
        ] {
            let top = runs
                .iter()
                .flat_map(|(_, p)| p.iter().map(|q| if pick == 0 { q.1 } else { q.2 }))
                .fold(10.0f64, f64::max);
            let mut chart = chart_on(
                area,
                (caption, 18),
                (12, 36, 50),
                (0.0..max_s * 1.05, 0.0..(top * 1.1).min(100.0)),
                ("training seconds", "accuracy %"),
                None,
            )?;
            for (i, (label, points)) in runs.iter().enumerate() {
                // Past the palette, the colours repeat in thinner lines.
                let width = if i >= COLORS.len() { 1 } else { 2 };
                let xy = points
                    .iter()
                    .map(|q| (q.0, if pick == 0 { q.1 } else { q.2 }))
                    .collect();
                dotted_line(
                    &mut chart,
                    xy,
                    COLORS[i % COLORS.len()],
                    width,
                    Some(label.as_str()),
                )?;
            }
            legend(&mut chart, SeriesLabelPosition::LowerRight)?;
        }
        Ok(())
    })
}

/// Per-stage images/s (left) and share of wall time busy / blocked / idle (right).
pub fn stage_throughput(path: &Path, stages: &[(String, f64, f64, f64, f64)]) -> Result<()> {
    let n = stages.len().max(1);
    let max_rate = stages.iter().map(|s| s.1).fold(0.0, f64::max).max(1e-9) * 1.15;
    let labels: Vec<String> = stages.iter().map(|s| s.0.clone()).collect();
    let label_of = |x: &f64| labels.get(x.round() as usize).cloned().unwrap_or_default();
    let positions = -0.5..n as f64 - 0.5;
    draw(path, (1200, 450), |root| {
        let (left, right) = root.split_horizontally(600);
        let mut chart = chart_on(
            &left,
            ("images/s per stage", 22),
            (12, 36, 60),
            (positions.clone(), 0.0..max_rate),
            ("", "images/s"),
            Some((n, &label_of)),
        )?;
        chart.draw_series(stages.iter().enumerate().map(|(i, s)| {
            Rectangle::new(
                [(i as f64 - 0.3, 0.0), (i as f64 + 0.3, s.1)],
                COLORS[0].filled(),
            )
        }))?;

        let mut chart = chart_on(
            &right,
            ("share of wall time (busy / blocked / idle)", 20),
            (12, 36, 50),
            (positions, 0.0..100.0),
            ("", "% of wall time"),
            Some((n, &label_of)),
        )?;
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
                }))?
                .label(name)
                .legend(move |(x, y)| {
                    Rectangle::new([(x, y - 5), (x + 12, y + 5)], color.filled())
                });
        }
        legend(&mut chart, SeriesLabelPosition::MiddleRight)
    })
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
    let range = |vals: Vec<f64>| {
        let finite: Vec<f64> = vals.into_iter().filter(|v| v.is_finite()).collect();
        if finite.is_empty() {
            return 0.0..1.0;
        }
        let lo = finite.iter().cloned().fold(f64::MAX, f64::min);
        let hi = finite.iter().cloned().fold(f64::MIN, f64::max);
        let pad = ((hi - lo) * 0.1).max(hi.abs() * 0.05).max(0.5);
        lo - pad..hi + pad
    };
    let x = range(points.iter().map(|p| p.x).collect());
    let y = range(points.iter().map(|p| p.y).collect());
    let series: BTreeSet<&String> = points.iter().map(|p| &p.series).collect();
    draw(path, (900, 650), |root| {
        let mut chart = chart_on(
            root,
            (title, 24),
            (16, 44, 64),
            (x, y),
            (x_desc, y_desc),
            None,
        )?;
        for (i, name) in series.iter().enumerate() {
            let color = COLORS[i % COLORS.len()];
            let mine: Vec<&ScatterPoint> = points
                .iter()
                .filter(|p| &p.series == *name && p.x.is_finite() && p.y.is_finite())
                .collect();
            chart
                .draw_series(
                    mine.iter()
                        .map(|p| Circle::new((p.x, p.y), 5, color.filled())),
                )?
                .label(name.as_str())
                .legend(move |(x, y)| Circle::new((x + 6, y), 5, color.filled()));
            chart.draw_series(mine.iter().map(|p| {
                Text::new(
                    p.label.clone(),
                    (p.x, p.y),
                    ("sans-serif", 14).into_font().color(&BLACK),
                )
            }))?;
        }
        if !series.is_empty() {
            legend(&mut chart, SeriesLabelPosition::MiddleRight)?;
        }
        Ok(())
    })
}
