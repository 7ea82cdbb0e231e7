//! The task logic, the same for every backbone and modality: targets from labels, the default
//! loss and the metrics `monitor` may name, reports, and predictions. Adding a task touches this
//! module (and data reading, `data.rs`) only.

use std::path::Path;

use graft_data::{LabelSet, TextExample, encode_multi_label, regression_values};
use serde::{Deserialize, Serialize};

use crate::error::{TrainError, TrainError as E};
use crate::loss::{LossKind, Targets};
use crate::metrics::{EvalReport, MultiLabelReport, RegressionReport, Report};
use crate::plots;

/// What the head predicts.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, Default)]
#[serde(rename_all = "snake_case")]
pub enum Task {
    /// One class per example (softmax + cross-entropy).
    #[default]
    Classification,
    /// Any number of labels per example (sigmoid + binary cross-entropy).
    MultiLabel,
    /// One number per example.
    Regression,
}

impl Task {
    /// The name transformers uses for it (`problem_type`), also stored in `graft.json`.
    pub fn name(self) -> &'static str {
        match self {
            Self::Classification => "single_label_classification",
            Self::MultiLabel => "multi_label_classification",
            Self::Regression => "regression",
        }
    }

    pub fn named(name: &str) -> Result<Self, TrainError> {
        [Self::Classification, Self::MultiLabel, Self::Regression]
            .into_iter()
            .find(|t| t.name() == name)
            .ok_or_else(|| E::Unsupported(format!("unknown task `{name}` in graft.json")))
    }

    /// The loss used when `[loss] kind` is not given.
    pub fn default_loss(self) -> LossKind {
        match self {
            Self::Classification => LossKind::CrossEntropy,
            Self::MultiLabel => LossKind::Bce,
            Self::Regression => LossKind::Mse,
        }
    }

    pub fn fits(self, loss: LossKind) -> bool {
        matches!(
            (self, loss),
            (Self::Classification, LossKind::CrossEntropy)
                | (Self::MultiLabel, LossKind::Bce)
                | (Self::Regression, LossKind::Mse | LossKind::Huber)
        )
    }

    /// The metrics `[train] monitor` can name; the first is the default.
    pub fn monitors(self) -> &'static [&'static str] {
        match self {
            Self::Classification => &["valid_loss", "valid_accuracy", "valid_macro_f1"],
            Self::MultiLabel => &[
                "valid_loss",
                "valid_micro_f1",
                "valid_macro_f1",
                "valid_hamming",
            ],
            Self::Regression => &["valid_loss", "valid_mae", "valid_rmse", "valid_r2"],
        }
    }

    /// What the outputs are called in logs: classes, labels or the target.
    pub fn outputs_noun(self) -> &'static str {
        match self {
            Self::Classification => "classes",
            Self::MultiLabel => "labels",
            Self::Regression => "target",
        }
    }
}

/// Whether a larger value of the metric is better.
pub fn higher_is_better(metric: &str) -> bool {
    matches!(
        metric,
        "valid_accuracy" | "valid_macro_f1" | "valid_micro_f1" | "valid_r2"
    )
}

/// How a run's outputs are read: its task, output names and multi-label settings.
#[derive(Debug, Clone, PartialEq)]
pub struct TaskSpec {
    pub task: Task,
    /// Classes, labels, or the regression target's column.
    pub labels: Vec<String>,
    pub threshold: f64,
    pub separator: String,
}

impl TaskSpec {
    /// Raw targets of `examples` (read from `source`); unknown labels are errors naming the line.
    pub fn targets(&self, examples: &[TextExample], source: &Path) -> Result<Targets, TrainError> {
        let set = || LabelSet::new(self.labels.clone()).map_err(E::Unsupported);
        Ok(match self.task {
            Task::Classification => Targets::Classes(set()?.encode(examples, source)?),
            Task::MultiLabel => Targets::MultiLabel(encode_multi_label(
                &set()?,
                examples,
                &self.separator,
                source,
            )?),
            Task::Regression => Targets::Values(regression_values(examples, source)?),
        })
    }

    /// The report on raw outputs `[n][k]` against raw targets; `standardization` maps outputs
    /// and targets of a standardized regression back to raw values.
    pub fn report(
        &self,
        outputs: &[Vec<f32>],
        targets: &Targets,
        standardization: Option<(f64, f64)>,
    ) -> Report {
        match targets {
            Targets::MultiLabel(t) => {
                let predicted = outputs
                    .iter()
                    .map(|row| row.iter().map(|&x| self.on(x)).collect())
                    .collect::<Vec<Vec<bool>>>();
                Report::MultiLabel(MultiLabelReport::new(
                    &self.labels,
                    t,
                    &predicted,
                    self.threshold,
                ))
            }
            Targets::Values(t) => {
                let (targets, predicted) = raw_values(outputs, t, standardization);
                Report::Regression(RegressionReport::new(&targets, &predicted))
            }
            Targets::Classes(t) => {
                Report::Classification(EvalReport::new(&self.labels, t, &argmax_rows(outputs)))
            }
        }
    }

    /// The evaluation's picture: the confusion matrix of a classification (multi-label: one 2 x 2
    /// matrix per label), predicted against true values of a regression.
    pub fn evaluation_plot(
        &self,
        report: &Report,
        outputs: &[Vec<f32>],
        targets: &Targets,
    ) -> Option<EvaluationPlot> {
        let drawn = match (report, targets) {
            (Report::Classification(r), _) => (
                plots::CONFUSION_PLOT,
                plots::confusion_plot(&r.labels, &r.confusion_matrix),
            ),
            (Report::Regression(r), Targets::Values(t)) => {
                let (targets, predicted) = raw_values(outputs, t, None);
                let title = format!(
                    "{}: R² = {:.3}, MAE = {:.3}, n = {}",
                    self.labels.first().map_or("value", String::as_str),
                    r.r2,
                    r.mae,
                    r.n
                );
                (
                    plots::REGRESSION_PLOT,
                    plots::regression_plot(&targets, &predicted, &title),
                )
            }
            (Report::MultiLabel(r), Targets::MultiLabel(t)) => {
                let mut counts = vec![[[0usize; 2]; 2]; r.labels.len()];
                for (truth, row) in t.iter().zip(outputs) {
                    for (c, (&yes, &logit)) in truth.iter().zip(row).enumerate() {
                        counts[c][usize::from(yes)][usize::from(self.on(logit))] += 1;
                    }
                }
                (
                    plots::CONFUSION_PLOT,
                    plots::multi_label_plot(&r.labels, &counts),
                )
            }
            _ => return None,
        };
        Some(EvaluationPlot {
            name: drawn.0,
            image: drawn.1,
        })
    }

    fn on(&self, logit: f32) -> bool {
        sigmoid(logit) as f64 >= self.threshold
    }

    /// Raw outputs as predictions.
    pub fn predictions(&self, outputs: &[Vec<f32>]) -> Vec<Prediction> {
        let named = |row: &[f32]| -> serde_json::Map<String, serde_json::Value> {
            self.labels
                .iter()
                .zip(row)
                .map(|(l, &p)| (l.clone(), serde_json::json!(p)))
                .collect()
        };
        outputs
            .iter()
            .map(|row| match self.task {
                Task::Classification => {
                    let probabilities = softmax_row(row);
                    let top = argmax_rows(std::slice::from_ref(&probabilities))[0];
                    Prediction {
                        label: Some(self.labels[top].clone()),
                        probabilities: Some(named(&probabilities)),
                        ..Prediction::default()
                    }
                }
                Task::MultiLabel => {
                    let probabilities: Vec<f32> = row.iter().map(|&x| sigmoid(x)).collect();
                    let on = self.labels.iter().zip(row).filter(|(_, x)| self.on(**x));
                    Prediction {
                        labels: Some(on.map(|(l, _)| l.clone()).collect()),
                        probabilities: Some(named(&probabilities)),
                        ..Prediction::default()
                    }
                }
                Task::Regression => Prediction {
                    value: Some(row[0] as f64),
                    ..Prediction::default()
                },
            })
            .collect()
    }
}

/// One prediction. Classification: the top `label` and every label's probability. Multi-label:
/// the `labels` at or above the threshold and every label's probability. Regression: `value`.
#[derive(Debug, Clone, Default, Serialize)]
pub struct Prediction {
    /// The image file (image models).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub input: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub label: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub labels: Option<Vec<String>>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub value: Option<f64>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub probabilities: Option<serde_json::Map<String, serde_json::Value>>,
}

fn sigmoid(x: f32) -> f32 {
    1.0 / (1.0 + (-x).exp())
}

fn softmax_row(row: &[f32]) -> Vec<f32> {
    let max = row.iter().copied().fold(f32::NEG_INFINITY, f32::max);
    let exp: Vec<f32> = row.iter().map(|&x| (x - max).exp()).collect();
    let sum: f32 = exp.iter().sum();
    exp.iter().map(|e| e / sum).collect()
}

fn argmax_rows(rows: &[Vec<f32>]) -> Vec<usize> {
    rows.iter()
        .map(|row| {
            row.iter()
                .enumerate()
                .fold((0, f32::NEG_INFINITY), |best, (i, &p)| {
                    if p > best.1 { (i, p) } else { best }
                })
                .0
        })
        .collect()
}

/// Regression targets and predictions as raw values (`standardization` undone).
fn raw_values(
    outputs: &[Vec<f32>],
    targets: &[f32],
    standardization: Option<(f64, f64)>,
) -> (Vec<f64>, Vec<f64>) {
    let (mean, std) = standardization.unwrap_or((0.0, 1.0));
    (
        targets.iter().map(|&v| v as f64 * std + mean).collect(),
        outputs.iter().map(|o| o[0] as f64 * std + mean).collect(),
    )
}

/// An evaluation's picture and its file name; drawing can fail (the message says why).
pub struct EvaluationPlot {
    pub name: &'static str,
    pub image: Result<image::RgbImage, String>,
}
