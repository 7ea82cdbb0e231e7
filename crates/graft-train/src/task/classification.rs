//! Single-label classification: one class per example, softmax over the classes, cross-entropy
//! (with label smoothing and class weights), accuracy and macro-F1, a confusion matrix.

use std::collections::BTreeMap;
use std::path::Path;

use graft_data::table::Column;
use graft_data::{LabelSet, TextExample};

use super::{
    Detection, EvaluationPlot, Metric, Prediction, TaskLogic, TaskSpec, VALID_LOSS, unknown_label,
};
use crate::config::DataSection;
use crate::error::{TrainError, TrainError as E};
use crate::init::class_counts;
use crate::loss::{LossKind, Targets};
use crate::metrics::{EvalReport, Report};
use crate::plots;

/// One class per example.
pub struct Classification;

/// The classification report inside `report`.
fn of(report: &Report) -> Option<&EvalReport> {
    match report {
        Report::Classification(r) => Some(r),
        _ => None,
    }
}

const METRICS: &[Metric] = &[
    VALID_LOSS,
    Metric::higher("valid_accuracy", |r| of(r).map(|r| r.accuracy)),
    Metric::higher("valid_macro_f1", |r| of(r).map(|r| r.macro_f1)),
];

impl TaskLogic for Classification {
    fn config_name(&self) -> &'static str {
        "classification"
    }

    fn problem_type(&self) -> &'static str {
        "single_label_classification"
    }

    fn default_loss(&self) -> LossKind {
        LossKind::CrossEntropy
    }

    fn fits(&self, loss: LossKind) -> bool {
        loss == LossKind::CrossEntropy
    }

    fn takes_label_smoothing(&self) -> bool {
        true
    }

    fn takes_class_weights(&self) -> bool {
        true
    }

    fn metrics(&self) -> &'static [Metric] {
        METRICS
    }

    fn headline(&self) -> &'static str {
        "valid_accuracy"
    }

    fn outputs_noun(&self) -> &'static str {
        "classes"
    }

    fn has_label_set(&self) -> bool {
        true
    }

    fn label_lists(&self) -> bool {
        false
    }

    fn labels(&self, train: &[TextExample], data: &DataSection) -> Result<Vec<String>, TrainError> {
        let set = match &data.labels {
            Some(path) => LabelSet::from_file(path)?,
            None => LabelSet::from_examples(train, &data.train)?,
        };
        Ok(set.names().to_vec())
    }

    fn row_problem(&self, label: &str) -> Option<String> {
        label.is_empty().then(|| "empty label".into())
    }

    fn label_problem(&self, spec: &TaskSpec, label: &str) -> Option<String> {
        (!spec.labels.iter().any(|l| l == label)).then(|| unknown_label(spec, label))
    }

    fn targets(
        &self,
        spec: &TaskSpec,
        examples: &[TextExample],
        source: &Path,
    ) -> Result<Targets, TrainError> {
        let set = LabelSet::new(spec.labels.clone()).map_err(E::Unsupported)?;
        Ok(Targets::Classes(set.encode(examples, source)?))
    }

    fn report(
        &self,
        spec: &TaskSpec,
        outputs: &[Vec<f32>],
        targets: &Targets,
        _standardization: Option<(f64, f64)>,
    ) -> Report {
        let Targets::Classes(truth) = targets else {
            unreachable!("classification targets are classes")
        };
        Report::Classification(EvalReport::new(
            &spec.labels,
            truth,
            &outputs.iter().map(|row| argmax(row)).collect::<Vec<_>>(),
        ))
    }

    fn evaluation_plot(
        &self,
        _spec: &TaskSpec,
        report: &Report,
        _outputs: &[Vec<f32>],
        _targets: &Targets,
    ) -> Option<EvaluationPlot> {
        let r = of(report)?;
        Some(EvaluationPlot {
            name: plots::CONFUSION_PLOT,
            image: plots::confusion_plot(&r.labels, &r.confusion_matrix),
        })
    }

    fn prediction(&self, spec: &TaskSpec, row: &[f32]) -> Prediction {
        let probabilities = softmax(row);
        Prediction {
            label: Some(spec.labels[argmax(&probabilities)].clone()),
            probabilities: Some(spec.named(&probabilities)),
            ..Prediction::default()
        }
    }

    fn detection_rank(&self) -> u8 {
        u8::MAX // any column is classes
    }

    fn detect(&self, _column: &Column) -> Option<Detection> {
        Some(Detection { separator: None })
    }

    fn describe(&self, _rows: usize, classes: &BTreeMap<String, usize>) -> String {
        format!(
            "classification into {} classes ({})",
            classes.len(),
            class_counts(classes)
        )
    }
}

pub(crate) fn softmax(row: &[f32]) -> Vec<f32> {
    let max = row.iter().copied().fold(f32::NEG_INFINITY, f32::max);
    let exp: Vec<f32> = row.iter().map(|&x| (x - max).exp()).collect();
    let sum: f32 = exp.iter().sum();
    exp.iter().map(|e| e / sum).collect()
}

/// The index of the largest value (the first of equals; 0 for an empty or all-NaN row).
pub(crate) fn argmax(row: &[f32]) -> usize {
    row.iter()
        .enumerate()
        .fold((0, f32::NEG_INFINITY), |best, (i, &p)| {
            if p > best.1 { (i, p) } else { best }
        })
        .0
}
