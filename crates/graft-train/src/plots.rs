//! Pictures of a run, drawn with plotters into a bitmap and written as PNG with the `image` crate:
//! `training.png` (losses and the monitored metric per epoch, the learning rate per step, the
//! epochs where frozen layers were unfrozen marked) and the evaluation's `confusion_matrix.png`
//! (rows normalized by true class, with counts; multi-label: a 2 x 2 matrix per label) or, for
//! regression, `predicted_vs_true.png`.
//! The font is compiled in, so no system fonts are needed.

use std::path::Path;
use std::sync::Once;

use image::RgbImage;
use plotters::coord::Shift;
use plotters::coord::types::RangedCoordf64;
use plotters::prelude::*;
use plotters::style::FontStyle;
use plotters::style::text_anchor::{HPos, Pos, VPos};

use crate::error::TrainError;
use crate::files::write_atomic;
use crate::progress::{EpochMetrics, StepMetrics};

pub const TRAINING_PLOT: &str = "training.png";
pub const CONFUSION_PLOT: &str = "confusion_matrix.png";
pub const REGRESSION_PLOT: &str = "predicted_vs_true.png";

const FONT: &str = "sans-serif";
const TRAIN_COLOR: RGBColor = RGBColor(31, 119, 180);
const VALID_COLOR: RGBColor = RGBColor(255, 127, 14);
const BACKBONE_COLOR: RGBColor = RGBColor(44, 160, 44);
const MARK_COLOR: RGBColor = RGBColor(150, 150, 150);

/// Registers the bundled font with plotters, once per process.
fn register_font() {
    static ONCE: Once = Once::new();
    ONCE.call_once(|| {
        let bytes: &'static [u8] = include_bytes!("../assets/DejaVuSans-subset.ttf");
        plotters::style::register_font(FONT, FontStyle::Normal, bytes)
            .unwrap_or_else(|_| panic!("the bundled font is a valid TrueType file"));
    });
}

/// Draws into a white `width` x `height` bitmap.
fn draw(
    width: u32,
    height: u32,
    paint: impl FnOnce(&DrawingArea<BitMapBackend, Shift>) -> Result<(), String>,
) -> Result<RgbImage, String> {
    register_font();
    let mut buffer = vec![255u8; (width * height * 3) as usize];
    {
        let root = BitMapBackend::with_buffer(&mut buffer, (width, height)).into_drawing_area();
        paint(&root)?;
        root.present().map_err(|e| e.to_string())?;
    }
    Ok(RgbImage::from_raw(width, height, buffer).expect("buffer of the image's size"))
}

/// Writes `image` as a PNG file, atomically.
pub fn save_png(path: &Path, image: &RgbImage) -> Result<(), TrainError> {
    let mut bytes = Vec::new();
    image
        .write_to(
            &mut std::io::Cursor::new(&mut bytes),
            image::ImageFormat::Png,
        )
        .map_err(|e| TrainError::Unsupported(format!("{}: {e}", path.display())))?;
    write_atomic(path, &bytes)
}

/// What `metrics.jsonl` holds, for plotting.
#[derive(Debug, Clone, Default)]
pub struct History {
    pub epochs: Vec<EpochMetrics>,
    pub steps: Vec<StepMetrics>,
}

impl History {
    /// Parses `metrics.jsonl` lines (`{"kind": "epoch" | "step", ...}`).
    pub fn parse(text: &str) -> Result<Self, String> {
        let mut history = Self::default();
        for (index, line) in text
            .lines()
            .enumerate()
            .filter(|(_, l)| !l.trim().is_empty())
        {
            let error = |e: serde_json::Error| format!("line {}: {e}", index + 1);
            let mut value: serde_json::Value = serde_json::from_str(line).map_err(error)?;
            let kind = value
                .as_object_mut()
                .and_then(|o| o.remove("kind"))
                .and_then(|k| k.as_str().map(str::to_string));
            match kind.as_deref() {
                Some("epoch") => history
                    .epochs
                    .push(serde_json::from_value(value).map_err(error)?),
                Some("step") => history
                    .steps
                    .push(serde_json::from_value(value).map_err(error)?),
                _ => {}
            }
        }
        Ok(history)
    }

    /// Epochs in which more values trained than in the one before (frozen layers unfrozen).
    pub fn unfreeze_epochs(&self) -> Vec<usize> {
        self.epochs
            .windows(2)
            .filter(|w| w[1].trainable_parameters > w[0].trainable_parameters)
            .map(|w| w[1].epoch)
            .collect()
    }
}

/// The metric drawn beside the losses: the monitored one, or the task's headline metric when the
/// loss is monitored.
fn plotted_metric(history: &History, monitor: &str) -> Option<String> {
    let first = history.epochs.first()?;
    if monitor != "valid_loss" && first.valid.contains_key(monitor) {
        return Some(monitor.to_string());
    }
    first.headline().map(|(name, _)| name.to_string())
}

fn range(values: impl Iterator<Item = f64>) -> std::ops::Range<f64> {
    let (mut low, mut high) = (f64::INFINITY, f64::NEG_INFINITY);
    for v in values.filter(|v| v.is_finite()) {
        low = low.min(v);
        high = high.max(v);
    }
    if !low.is_finite() {
        return 0.0..1.0;
    }
    let pad = ((high - low) * 0.08).max(high.abs().max(1e-12) * 0.02);
    (low - pad)..(high + pad)
}

fn epoch_range(history: &History) -> std::ops::Range<f64> {
    let last = history.epochs.last().map_or(1, |e| e.epoch) as f64;
    let first = history.epochs.first().map_or(1, |e| e.epoch) as f64;
    (first - 0.3)..(last + 0.3)
}

type Chart<'a, 'b> =
    ChartContext<'a, BitMapBackend<'b>, Cartesian2d<RangedCoordf64, RangedCoordf64>>;

/// Dashed-looking vertical marks at `xs`, with a label at the top.
fn mark_epochs(chart: &mut Chart, xs: &[f64], y: std::ops::Range<f64>) -> Result<(), String> {
    for &x in xs {
        let dashes = 24;
        let step = (y.end - y.start) / dashes as f64;
        chart
            .draw_series((0..dashes).step_by(2).map(|i| {
                let from = y.start + step * i as f64;
                PathElement::new(
                    vec![(x, from), (x, from + step)],
                    MARK_COLOR.stroke_width(2),
                )
            }))
            .map_err(|e| e.to_string())?;
        chart
            .draw_series(std::iter::once(Text::new(
                "unfreeze",
                (x, y.end - step * 0.5),
                (FONT, 13).into_font().color(&MARK_COLOR),
            )))
            .map_err(|e| e.to_string())?;
    }
    Ok(())
}

fn line(
    chart: &mut Chart,
    points: Vec<(f64, f64)>,
    color: RGBColor,
    label: &str,
    dots: bool,
) -> Result<(), String> {
    let style = color.stroke_width(2);
    chart
        .draw_series(LineSeries::new(points.clone(), style))
        .map_err(|e| e.to_string())?
        .label(label)
        .legend(move |(x, y)| PathElement::new(vec![(x, y), (x + 20, y)], style));
    if dots {
        chart
            .draw_series(
                points
                    .into_iter()
                    .map(|p| Circle::new(p, 4, color.filled())),
            )
            .map_err(|e| e.to_string())?;
    }
    Ok(())
}

fn legend<'a, 'b: 'a>(chart: &mut Chart<'a, 'b>) -> Result<(), String> {
    chart
        .configure_series_labels()
        .position(SeriesLabelPosition::UpperRight)
        .background_style(WHITE.mix(0.85))
        .border_style(BLACK)
        .label_font((FONT, 15))
        .draw()
        .map_err(|e| e.to_string())
}

/// `training.png`: losses and the plotted metric per epoch (top), learning rates per step (below).
pub fn training_plot(history: &History, monitor: &str) -> Result<RgbImage, String> {
    draw(1400, 950, |root| {
        root.fill(&WHITE).map_err(|e| e.to_string())?;
        let (top, bottom) = root.split_vertically(560);
        let (losses, metric) = top.split_horizontally(700);
        let unfreeze: Vec<f64> = history
            .unfreeze_epochs()
            .iter()
            .map(|&e| e as f64)
            .collect();
        loss_panel(&losses, history, &unfreeze)?;
        if let Some(name) = plotted_metric(history, monitor) {
            metric_panel(&metric, history, &name, monitor, &unfreeze)?;
        }
        learning_rate_panel(&bottom, history)
    })
}

/// A part of the picture that one panel is drawn on.
type Area<'b> = DrawingArea<BitMapBackend<'b>, Shift>;

/// A chart of one value per epoch on `area`, its mesh drawn (the y axis over `y`, named
/// `y_desc`); `y_format` formats the y labels when given.
fn epoch_chart<'a, 'b>(
    area: &'a Area<'b>,
    history: &History,
    caption: &str,
    y: std::ops::Range<f64>,
    y_desc: &str,
    y_format: Option<&dyn Fn(&f64) -> String>,
) -> Result<Chart<'a, 'b>, String> {
    let mut chart = ChartBuilder::on(area)
        .caption(caption, (FONT, 24))
        .margin(14)
        .x_label_area_size(48)
        .y_label_area_size(80)
        .build_cartesian_2d(epoch_range(history), y)
        .map_err(|e| e.to_string())?;
    let mut mesh = chart.configure_mesh();
    mesh.x_desc("epoch")
        .y_desc(y_desc)
        .x_labels(history.epochs.len().clamp(2, 12))
        .x_label_formatter(&|x| format!("{x:.0}"))
        .label_style((FONT, 15))
        .axis_desc_style((FONT, 17));
    if let Some(format) = y_format {
        mesh.y_label_formatter(format);
    }
    mesh.draw().map_err(|e| e.to_string())?;
    Ok(chart)
}

/// The top left panel: training and validation loss per epoch.
fn loss_panel(area: &Area, history: &History, unfreeze: &[f64]) -> Result<(), String> {
    let dots = history.epochs.len() < 40;
    let y = range(
        history
            .epochs
            .iter()
            .flat_map(|e| [e.train_loss, e.valid_loss]),
    );
    let mut chart = epoch_chart(area, history, "Loss per epoch", y.clone(), "loss", None)?;
    let points = |f: fn(&EpochMetrics) -> f64| -> Vec<(f64, f64)> {
        history
            .epochs
            .iter()
            .map(|e| (e.epoch as f64, f(e)))
            .collect()
    };
    line(
        &mut chart,
        points(|e| e.train_loss),
        TRAIN_COLOR,
        "train",
        dots,
    )?;
    line(
        &mut chart,
        points(|e| e.valid_loss),
        VALID_COLOR,
        "valid",
        dots,
    )?;
    mark_epochs(&mut chart, unfreeze, y)?;
    legend(&mut chart)
}

/// The top right panel: the validation metric `name` per epoch.
fn metric_panel(
    area: &Area,
    history: &History,
    name: &str,
    monitor: &str,
    unfreeze: &[f64],
) -> Result<(), String> {
    let values: Vec<(f64, f64)> = history
        .epochs
        .iter()
        .filter_map(|e| e.valid.get(name).map(|&v| (e.epoch as f64, v)))
        .collect();
    let y = range(values.iter().map(|p| p.1));
    let caption = if name == monitor {
        format!("{name} (monitored)")
    } else {
        name.to_string()
    };
    let three_places = |v: &f64| format!("{v:.3}");
    let mut chart = epoch_chart(
        area,
        history,
        &caption,
        y.clone(),
        name,
        Some(&three_places),
    )?;
    let dots = history.epochs.len() < 40;
    line(&mut chart, values, VALID_COLOR, name, dots)?;
    mark_epochs(&mut chart, unfreeze, y)?;
    legend(&mut chart)
}

/// The bottom panel: the head's (and the top backbone block's) learning rate per step.
fn learning_rate_panel(area: &Area, history: &History) -> Result<(), String> {
    let steps = &history.steps;
    let last_step = steps.last().map_or(1, |s| s.step) as f64;
    let y = range(
        steps
            .iter()
            .flat_map(|s| [Some(s.lr), s.backbone_lr])
            .flatten()
            .chain([0.0]),
    );
    let mut chart = ChartBuilder::on(area)
        .caption("Learning rate per step", (FONT, 24))
        .margin(14)
        .x_label_area_size(48)
        .y_label_area_size(80)
        .build_cartesian_2d(0.0..last_step.max(1.0) + 0.5, y.clone())
        .map_err(|e| e.to_string())?;
    chart
        .configure_mesh()
        .x_desc("optimizer step")
        .y_desc("learning rate")
        .x_label_formatter(&|x| format!("{x:.0}"))
        .y_label_formatter(&|v| format!("{v:.1e}"))
        .label_style((FONT, 15))
        .axis_desc_style((FONT, 17))
        .draw()
        .map_err(|e| e.to_string())?;
    let head: Vec<(f64, f64)> = steps.iter().map(|s| (s.step as f64, s.lr)).collect();
    line(&mut chart, head, TRAIN_COLOR, "head", false)?;
    let backbone: Vec<(f64, f64)> = steps
        .iter()
        .filter_map(|s| s.backbone_lr.map(|lr| (s.step as f64, lr)))
        .collect();
    if !backbone.is_empty() {
        line(
            &mut chart,
            backbone,
            BACKBONE_COLOR,
            "backbone (top block)",
            false,
        )?;
    }
    let unfreeze_steps: Vec<f64> = history
        .unfreeze_epochs()
        .iter()
        .filter_map(|&epoch| steps.iter().find(|s| s.epoch == epoch))
        .map(|s| s.step as f64)
        .collect();
    mark_epochs(&mut chart, &unfreeze_steps, y)?;
    legend(&mut chart)
}

/// White to dark blue, as matplotlib's "Blues".
fn blues(fraction: f64) -> RGBColor {
    let t = fraction.clamp(0.0, 1.0);
    let mix = |from: f64, to: f64| (from + (to - from) * t).round() as u8;
    RGBColor(mix(247.0, 8.0), mix(251.0, 48.0), mix(255.0, 107.0))
}

/// Pixel width of `text` in the bundled font at `size`.
fn text_width(area: &DrawingArea<BitMapBackend, Shift>, text: &str, size: u32) -> u32 {
    area.estimate_text_size(text, &(FONT, size).into_font().color(&BLACK))
        .map_or(text.len() as u32 * size / 2, |(w, _)| w)
}

/// `confusion_matrix.png`: rows are true classes, columns predicted; each cell is coloured by
/// its share of the true class and shows the count and that share.
pub fn confusion_plot(labels: &[String], matrix: &[Vec<usize>]) -> Result<RgbImage, String> {
    let k = labels.len().max(1);
    let cell = (720 / k as u32).clamp(28, 90);
    // Room for the labels, measured in the font (a throwaway area just for measuring).
    let longest = {
        let mut width = 0;
        draw(8, 8, |area| {
            width = labels
                .iter()
                .map(|l| text_width(area, l, 15))
                .max()
                .unwrap_or(0);
            Ok(())
        })?;
        width.min(260)
    };
    let left = 60 + longest;
    let top = 70;
    let bottom = 50 + longest;
    let side = cell * k as u32;
    let (width, height) = (left + side + 30, top + side + bottom);
    draw(width, height, |root| {
        root.fill(&WHITE).map_err(|e| e.to_string())?;
        let err = |e: DrawingAreaErrorKind<_>| e.to_string();
        let centered = Pos::new(HPos::Center, VPos::Center);
        root.draw(&Text::new(
            "Confusion matrix (rows normalized by true class)",
            ((width / 2) as i32, 24),
            (FONT, 20).into_font().color(&BLACK).pos(centered),
        ))
        .map_err(err)?;
        for (t, row) in matrix.iter().enumerate() {
            let support: usize = row.iter().sum();
            for (p, &count) in row.iter().enumerate() {
                let at = (left + p as u32 * cell, top + t as u32 * cell);
                matrix_cell(root, at, cell, count, support)?;
            }
        }
        for (i, label) in labels.iter().enumerate() {
            let middle = (i as u32 * cell + cell / 2) as i32;
            // True classes to the left of their rows.
            root.draw(&Text::new(
                label.clone(),
                (left as i32 - 8, top as i32 + middle),
                (FONT, 15)
                    .into_font()
                    .color(&BLACK)
                    .pos(Pos::new(HPos::Right, VPos::Center)),
            ))
            .map_err(err)?;
            // Predicted classes below their columns, turned to read upwards.
            root.draw(&Text::new(
                label.clone(),
                (left as i32 + middle, (top + side) as i32 + 8),
                (FONT, 15)
                    .into_font()
                    .transform(FontTransform::Rotate270)
                    .color(&BLACK)
                    .pos(Pos::new(HPos::Right, VPos::Center)),
            ))
            .map_err(err)?;
        }
        root.draw(&Text::new(
            "predicted",
            ((left + side / 2) as i32, (height - 16) as i32),
            (FONT, 17).into_font().color(&BLACK).pos(centered),
        ))
        .map_err(err)?;
        root.draw(&Text::new(
            "true",
            (18, (top + side / 2) as i32),
            (FONT, 17)
                .into_font()
                .transform(FontTransform::Rotate270)
                .color(&BLACK)
                .pos(centered),
        ))
        .map_err(err)?;
        Ok(())
    })
}

/// One confusion-matrix cell at `(x, y)`, `size` wide: coloured by its share of the row's
/// `support`, with the count (and the share, when there is room).
fn matrix_cell(
    root: &DrawingArea<BitMapBackend, Shift>,
    (x, y): (u32, u32),
    size: u32,
    count: usize,
    support: usize,
) -> Result<(), String> {
    let err = |e: DrawingAreaErrorKind<_>| e.to_string();
    let share = if support == 0 {
        0.0
    } else {
        count as f64 / support as f64
    };
    let font = (size / 4).clamp(9, 16);
    let (x, y, side) = (x as i32, y as i32, size as i32);
    root.draw(&Rectangle::new(
        [(x, y), (x + side, y + side)],
        blues(share).filled(),
    ))
    .map_err(err)?;
    root.draw(&Rectangle::new(
        [(x, y), (x + side, y + side)],
        RGBColor(220, 220, 220).stroke_width(1),
    ))
    .map_err(err)?;
    let ink = if share > 0.5 { WHITE } else { BLACK };
    let centered = Pos::new(HPos::Center, VPos::Center);
    let (middle_x, middle_y) = (x + side / 2, y + side / 2);
    let two_lines = size >= 44;
    let count_y = if two_lines {
        middle_y - font as i32 / 2 - 1
    } else {
        middle_y
    };
    root.draw(&Text::new(
        count.to_string(),
        (middle_x, count_y),
        (FONT, font).into_font().color(&ink).pos(centered),
    ))
    .map_err(err)?;
    if two_lines {
        root.draw(&Text::new(
            format!("{:.0}%", share * 100.0),
            (middle_x, middle_y + font as i32 / 2 + 2),
            (FONT, font - 2).into_font().color(&ink).pos(centered),
        ))
        .map_err(err)?;
    }
    Ok(())
}

/// Multi-label `confusion_matrix.png`: one 2 x 2 matrix per label (scikit-learn's
/// `multilabel_confusion_matrix`), rows the truth (without, with the label), columns the
/// prediction, each row normalized. `counts[label] = [[tn, fp], [fn, tp]]`.
pub fn multi_label_plot(labels: &[String], counts: &[[[usize; 2]; 2]]) -> Result<RgbImage, String> {
    let (cell, per_row) = (64u32, 4usize);
    let panel = (90 + 2 * cell + 30, 60 + 2 * cell + 50);
    let columns = labels.len().clamp(1, per_row) as u32;
    let rows = labels.len().div_ceil(per_row).max(1) as u32;
    let (width, height) = (columns * panel.0 + 20, 60 + rows * panel.1);
    draw(width, height, |root| {
        root.fill(&WHITE).map_err(|e| e.to_string())?;
        let err = |e: DrawingAreaErrorKind<_>| e.to_string();
        let text = |s: String, at: (i32, i32), size: u32, pos: Pos| {
            Text::new(s, at, (FONT, size).into_font().color(&BLACK).pos(pos))
        };
        let centered = Pos::new(HPos::Center, VPos::Center);
        let right = Pos::new(HPos::Right, VPos::Center);
        root.draw(&text(
            "Confusion matrix per label (rows normalized by true value)".into(),
            ((width / 2) as i32, 24),
            20,
            centered,
        ))
        .map_err(err)?;
        for (i, (label, matrix)) in labels.iter().zip(counts).enumerate() {
            let (px, py) = (
                10 + (i % per_row) as u32 * panel.0,
                50 + (i / per_row) as u32 * panel.1,
            );
            let (left, top) = (px + 90, py + 40);
            let name: String = label.chars().take(28).collect();
            root.draw(&text(
                name,
                ((left + cell) as i32, (py + 16) as i32),
                16,
                centered,
            ))
            .map_err(err)?;
            for (t, row) in matrix.iter().enumerate() {
                let support = row[0] + row[1];
                for (p, &count) in row.iter().enumerate() {
                    let at = (left + p as u32 * cell, top + t as u32 * cell);
                    matrix_cell(root, at, cell, count, support)?;
                }
                let truth = if t == 0 { "true: no" } else { "true: yes" };
                let y = (top + t as u32 * cell + cell / 2) as i32;
                root.draw(&text(truth.into(), (left as i32 - 6, y), 13, right))
                    .map_err(err)?;
            }
            for (p, predicted) in ["pred: no", "pred: yes"].iter().enumerate() {
                let x = (left + p as u32 * cell + cell / 2) as i32;
                let y = (top + 2 * cell + 14) as i32;
                root.draw(&text(predicted.to_string(), (x, y), 13, centered))
                    .map_err(err)?;
            }
        }
        Ok(())
    })
}

/// `predicted_vs_true.png`: one point per example, the diagonal where they would be equal.
pub fn regression_plot(
    targets: &[f64],
    predicted: &[f64],
    title: &str,
) -> Result<RgbImage, String> {
    draw(900, 860, |root| {
        root.fill(&WHITE).map_err(|e| e.to_string())?;
        let span = range(targets.iter().chain(predicted).copied());
        let mut chart = ChartBuilder::on(root)
            .caption(title, (FONT, 22))
            .margin(16)
            .x_label_area_size(50)
            .y_label_area_size(80)
            .build_cartesian_2d(span.clone(), span.clone())
            .map_err(|e| e.to_string())?;
        chart
            .configure_mesh()
            .x_desc("true value")
            .y_desc("predicted value")
            .label_style((FONT, 15))
            .axis_desc_style((FONT, 17))
            .draw()
            .map_err(|e| e.to_string())?;
        chart
            .draw_series(LineSeries::new(
                [(span.start, span.start), (span.end, span.end)],
                MARK_COLOR.stroke_width(2),
            ))
            .map_err(|e| e.to_string())?
            .label("predicted = true")
            .legend(|(x, y)| {
                PathElement::new(vec![(x, y), (x + 20, y)], MARK_COLOR.stroke_width(2))
            });
        let alpha = if targets.len() > 500 { 0.35 } else { 0.7 };
        chart
            .draw_series(
                targets
                    .iter()
                    .zip(predicted)
                    .map(|(&t, &p)| Circle::new((t, p), 4, TRAIN_COLOR.mix(alpha).filled())),
            )
            .map_err(|e| e.to_string())?;
        legend(&mut chart)
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A made-up history: 6 epochs of 5 steps, unfrozen at epoch 4.
    pub(crate) fn history() -> History {
        let mut lines = Vec::new();
        for epoch in 1..=6usize {
            for s in 0..5 {
                let step = (epoch - 1) * 5 + s + 1;
                let lr = 1e-3 * (1.0 - step as f64 / 30.0);
                lines.push(format!(
                    r#"{{"kind":"step","step":{step},"epoch":{epoch},"lr":{lr},"backbone_lr":{}}}"#,
                    lr / 10.0
                ));
            }
            let loss = 1.0 / epoch as f64;
            lines.push(format!(
                r#"{{"kind":"epoch","epoch":{epoch},"train_loss":{loss},"valid_loss":{},"valid_accuracy":{},"valid_macro_f1":0.5,"lr":0.001,"trainable_parameters":{},"seconds":1.0}}"#,
                loss * 1.2,
                0.5 + 0.05 * epoch as f64,
                if epoch < 4 { 100 } else { 5000 }
            ));
        }
        History::parse(&lines.join("\n")).unwrap()
    }

    fn png_dimensions(image: &RgbImage) -> (u32, u32) {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("a.png");
        save_png(&path, image).unwrap();
        let read = image::open(&path).unwrap();
        (read.width(), read.height())
    }

    #[test]
    fn training_plot_marks_unfreezing_and_draws_every_panel() {
        let history = history();
        assert_eq!(history.epochs.len(), 6);
        assert_eq!(history.steps.len(), 30);
        assert_eq!(history.unfreeze_epochs(), [4]);
        let image = training_plot(&history, "valid_accuracy").unwrap();
        assert_eq!(png_dimensions(&image), (1400, 950));
        // Each panel has ink of the series colours.
        let has = |color: RGBColor, (x0, y0, x1, y1): (u32, u32, u32, u32)| {
            (x0..x1)
                .any(|x| (y0..y1).any(|y| image.get_pixel(x, y).0 == [color.0, color.1, color.2]))
        };
        assert!(has(TRAIN_COLOR, (0, 0, 700, 560)), "train loss");
        assert!(has(VALID_COLOR, (700, 0, 1400, 560)), "metric");
        assert!(has(BACKBONE_COLOR, (0, 560, 1400, 950)), "backbone lr");
        assert!(has(MARK_COLOR, (0, 0, 700, 560)), "unfreeze mark");
        // The loss is monitored: the headline metric is drawn instead.
        assert!(training_plot(&history, "valid_loss").is_ok());
        assert!(training_plot(&History::default(), "valid_loss").is_ok());
    }

    #[test]
    fn confusion_and_regression_plots() {
        let labels: Vec<String> = (0..10).map(|i| format!("class-{i}")).collect();
        let matrix: Vec<Vec<usize>> = (0..10)
            .map(|t| {
                (0..10)
                    .map(|p| {
                        if t == p {
                            8
                        } else {
                            usize::from(p == (t + 1) % 10)
                        }
                    })
                    .collect()
            })
            .collect();
        let image = confusion_plot(&labels, &matrix).unwrap();
        let (width, height) = png_dimensions(&image);
        assert!(width >= 60 + 720 && height >= 70 + 720, "{width}x{height}");
        // The diagonal cell of class 0 is dark (8 of 9), its neighbour pale.
        let dark = blues(8.0 / 9.0);
        assert!(image.pixels().any(|p| p.0 == [dark.0, dark.1, dark.2]));
        let two = confusion_plot(&labels[..2], &[vec![3, 1], vec![0, 0]]).unwrap();
        assert!(two.width() > 200);

        let tags: Vec<String> = ["hot", "tea", "coffee", "sweet", "cold"]
            .map(String::from)
            .to_vec();
        let counts: Vec<[[usize; 2]; 2]> = (0..5).map(|i| [[10 + i, 2], [1, 7 - i]]).collect();
        let image = multi_label_plot(&tags, &counts).unwrap();
        let (width, height) = png_dimensions(&image);
        assert!(width > 4 * 200 && height > 2 * 200, "{width}x{height}");
        assert!(image.pixels().any(|p| p.0
            == [
                blues(10.0 / 12.0).0,
                blues(10.0 / 12.0).1,
                blues(10.0 / 12.0).2
            ]));

        let targets: Vec<f64> = (0..50).map(f64::from).collect();
        let predicted: Vec<f64> = targets.iter().map(|t| t * 0.9 + 2.0).collect();
        let image = regression_plot(&targets, &predicted, "price: R² = 0.9").unwrap();
        assert_eq!(png_dimensions(&image), (900, 860));
    }

    /// Writes the three pictures to `GRAFT_PLOT_SAMPLES` for a look by eye.
    #[test]
    fn samples_for_a_look() {
        let Ok(dir) = std::env::var("GRAFT_PLOT_SAMPLES") else {
            return;
        };
        let dir = Path::new(&dir);
        save_png(
            &dir.join("training.png"),
            &training_plot(&history(), "valid_accuracy").unwrap(),
        )
        .unwrap();
        let labels: Vec<String> = [
            "t-shirt",
            "trouser",
            "pullover",
            "dress",
            "coat",
            "sandal",
            "shirt",
            "sneaker",
            "bag",
            "ankle-boot",
        ]
        .map(String::from)
        .to_vec();
        let matrix: Vec<Vec<usize>> = (0..10)
            .map(|t| {
                (0..10)
                    .map(|p| if t == p { 40 + t } else { (t * 7 + p * 3) % 5 })
                    .collect()
            })
            .collect();
        save_png(
            &dir.join("confusion.png"),
            &confusion_plot(&labels, &matrix).unwrap(),
        )
        .unwrap();
        let counts: Vec<[[usize; 2]; 2]> = (0..6).map(|i| [[30 + i, 4], [2 + i, 12]]).collect();
        let image = multi_label_plot(&labels[..6], &counts).unwrap();
        save_png(&dir.join("multi_label.png"), &image).unwrap();
        let targets: Vec<f64> = (0..200)
            .map(|i| (i as f64 * 0.37).sin() * 10.0 + 20.0)
            .collect();
        let predicted: Vec<f64> = targets
            .iter()
            .enumerate()
            .map(|(i, t)| t + ((i * 13) % 7) as f64 - 3.0)
            .collect();
        save_png(
            &dir.join("regression.png"),
            &regression_plot(
                &targets,
                &predicted,
                "price: R² = 0.812, MAE = 1.93, n = 200",
            )
            .unwrap(),
        )
        .unwrap();
    }
}
