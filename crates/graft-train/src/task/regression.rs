//! Regression: one number per example, MSE or Huber on standardized targets (the saved model
//! predicts raw values), MAE, RMSE and R², predicted against true values.

use std::collections::BTreeMap;
use std::path::Path;

use graft_data::table::{Column, Value};
use graft_data::{TextExample, regression_values};

use super::{
    Detection, EvaluationPlot, Metric, Prediction, TaskLogic, TaskSpec, VALID_LOSS, present,
};
use crate::config::DataSection;
use crate::error::TrainError;
use crate::init::distinct;
use crate::loss::{LossKind, Targets};
use crate::metrics::{RegressionReport, Report};
use crate::plots;

/// Integer labels with at most this many distinct values are classes, not a number to regress.
const MAX_INTEGER_CLASSES: usize = 20;

/// One number per example.
pub struct Regression;

/// The regression report inside `report`.
fn of(report: &Report) -> Option<&RegressionReport> {
    match report {
        Report::Regression(r) => Some(r),
        _ => None,
    }
}

const METRICS: &[Metric] = &[
    VALID_LOSS,
    Metric::lower("valid_mae", |r| of(r).map(|r| r.mae)),
    Metric::lower("valid_rmse", |r| of(r).map(|r| r.rmse)),
    Metric::higher("valid_r2", |r| of(r).map(|r| r.r2)),
    Metric::higher("valid_pearson", |r| of(r).map(|r| r.pearson)),
    Metric::higher("valid_spearman", |r| of(r).map(|r| r.spearman)),
];

impl TaskLogic for Regression {
    fn config_name(&self) -> &'static str {
        "regression"
    }

    fn problem_type(&self) -> &'static str {
        "regression"
    }

    fn default_loss(&self) -> LossKind {
        LossKind::Mse
    }

    fn fits(&self, loss: LossKind) -> bool {
        matches!(loss, LossKind::Mse | LossKind::Huber)
    }

    fn takes_label_smoothing(&self) -> bool {
        false
    }

    fn takes_class_weights(&self) -> bool {
        false
    }

    fn metrics(&self) -> &'static [Metric] {
        METRICS
    }

    fn headline(&self) -> &'static str {
        "valid_r2"
    }

    fn outputs_noun(&self) -> &'static str {
        "target"
    }

    fn has_label_set(&self) -> bool {
        false
    }

    fn label_lists(&self) -> bool {
        false
    }

    /// The one output is named after the target's column (a labels file does not apply).
    fn labels(
        &self,
        _train: &[TextExample],
        data: &DataSection,
    ) -> Result<Vec<String>, TrainError> {
        Ok(vec![data.label_column.clone()])
    }

    fn row_problem(&self, label: &str) -> Option<String> {
        if label.is_empty() {
            return Some("empty label".into());
        }
        match label.parse::<f64>() {
            Ok(v) if v.is_finite() => None,
            _ => Some(format!(
                "regression target `{label}` is not a finite number"
            )),
        }
    }

    fn label_problem(&self, _spec: &TaskSpec, _label: &str) -> Option<String> {
        None // no label set
    }

    fn targets(
        &self,
        _spec: &TaskSpec,
        examples: &[TextExample],
        source: &Path,
    ) -> Result<Targets, TrainError> {
        Ok(Targets::Values(regression_values(examples, source)?))
    }

    fn standardize(&self, train: &mut Targets, valid: &mut Targets) -> Option<(f64, f64)> {
        let Targets::Values(values) = train else {
            return None;
        };
        let n = values.len().max(1) as f64;
        let mean = values.iter().map(|&v| v as f64).sum::<f64>() / n;
        let var = values
            .iter()
            .map(|&v| (v as f64 - mean).powi(2))
            .sum::<f64>()
            / n;
        let std = if var > 0.0 { var.sqrt() } else { 1.0 };
        let standardize = |v: &mut f32| *v = ((*v as f64 - mean) / std) as f32;
        values.iter_mut().for_each(standardize);
        if let Targets::Values(valid) = valid {
            valid.iter_mut().for_each(standardize);
        }
        Some((mean, std))
    }

    fn report(
        &self,
        _spec: &TaskSpec,
        outputs: &[Vec<f32>],
        targets: &Targets,
        standardization: Option<(f64, f64)>,
    ) -> Report {
        let Targets::Values(values) = targets else {
            unreachable!("regression targets are values")
        };
        let (targets, predicted) = raw_values(outputs, values, standardization);
        Report::Regression(RegressionReport::new(&targets, &predicted))
    }

    fn evaluation_plot(
        &self,
        spec: &TaskSpec,
        report: &Report,
        outputs: &[Vec<f32>],
        targets: &Targets,
    ) -> Option<EvaluationPlot> {
        let (Some(r), Targets::Values(values)) = (of(report), targets) else {
            return None;
        };
        let (targets, predicted) = raw_values(outputs, values, None);
        let title = format!(
            "{}: R² = {:.3}, MAE = {:.3}, n = {}",
            spec.labels.first().map_or("value", String::as_str),
            r.r2,
            r.mae,
            r.n
        );
        Some(EvaluationPlot {
            name: plots::REGRESSION_PLOT,
            image: plots::regression_plot(&targets, &predicted, &title),
        })
    }

    fn prediction(&self, _spec: &TaskSpec, row: &[f32]) -> Prediction {
        Prediction {
            value: Some(row[0] as f64),
            ..Prediction::default()
        }
    }

    fn detection_rank(&self) -> u8 {
        1
    }

    /// Numbers, unless they are few integers (ratings, class ids).
    fn detect(&self, column: &Column) -> Option<Detection> {
        let present = present(column);
        let numbers: Vec<f64> = present
            .iter()
            .filter_map(|v| match v {
                Value::Number(n) => Some(*n),
                _ => None,
            })
            .collect();
        if numbers.is_empty() || numbers.len() != present.len() {
            return None;
        }
        let integers = numbers.iter().all(|n| n.fract() == 0.0);
        (!(integers && distinct(column) <= MAX_INTEGER_CLASSES))
            .then_some(Detection { separator: None })
    }

    fn describe(&self, rows: usize, _classes: &BTreeMap<String, usize>) -> String {
        format!("regression over {rows} rows")
    }
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
