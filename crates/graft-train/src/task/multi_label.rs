//! Multi-label classification: any number of labels per example (`a|b` fields or lists), a
//! sigmoid per label with a decision threshold, binary cross-entropy, micro/macro-F1 and Hamming
//! loss, one 2 x 2 confusion matrix per label.

use std::collections::BTreeMap;
use std::path::Path;

use graft_data::table::{Column, Value};
use graft_data::{LabelSet, TextExample, encode_multi_label, label_list, multi_label_set};

use super::{
    Detection, EvaluationPlot, Metric, Prediction, TaskLogic, TaskSpec, VALID_LOSS, present,
    sigmoid, unknown_label,
};
use crate::config::DataSection;
use crate::error::{TrainError, TrainError as E};
use crate::init::class_counts;
use crate::loss::{LossKind, Targets};
use crate::metrics::{MultiLabelReport, Report};
use crate::plots;

/// Any number of labels per example.
pub struct MultiLabel;

/// The multi-label report inside `report`.
fn of(report: &Report) -> Option<&MultiLabelReport> {
    match report {
        Report::MultiLabel(r) => Some(r),
        _ => None,
    }
}

const METRICS: &[Metric] = &[
    VALID_LOSS,
    Metric::higher("valid_micro_f1", |r| of(r).map(|r| r.micro_f1)),
    Metric::higher("valid_macro_f1", |r| of(r).map(|r| r.macro_f1)),
    Metric::lower("valid_hamming", |r| of(r).map(|r| r.hamming_loss)),
];

impl TaskLogic for MultiLabel {
    fn config_name(&self) -> &'static str {
        "multi_label"
    }

    fn problem_type(&self) -> &'static str {
        "multi_label_classification"
    }

    fn default_loss(&self) -> LossKind {
        LossKind::Bce
    }

    fn fits(&self, loss: LossKind) -> bool {
        loss == LossKind::Bce
    }

    fn takes_label_smoothing(&self) -> bool {
        false
    }

    fn takes_class_weights(&self) -> bool {
        true
    }

    fn metrics(&self) -> &'static [Metric] {
        METRICS
    }

    fn headline(&self) -> &'static str {
        "valid_micro_f1"
    }

    fn outputs_noun(&self) -> &'static str {
        "labels"
    }

    fn has_label_set(&self) -> bool {
        true
    }

    fn label_lists(&self) -> bool {
        true
    }

    fn labels(&self, train: &[TextExample], data: &DataSection) -> Result<Vec<String>, TrainError> {
        let set = match &data.labels {
            Some(path) => LabelSet::from_file(path)?,
            None => multi_label_set(train, &data.label_separator, &data.train)?,
        };
        Ok(set.names().to_vec())
    }

    fn row_problem(&self, _label: &str) -> Option<String> {
        None // an empty field is a row with no labels
    }

    fn label_problem(&self, spec: &TaskSpec, label: &str) -> Option<String> {
        match label_list(label, &spec.separator) {
            Err(message) => Some(message),
            Ok(list) => list
                .iter()
                .find(|l| !spec.labels.contains(l))
                .map(|l| unknown_label(spec, l)),
        }
    }

    fn targets(
        &self,
        spec: &TaskSpec,
        examples: &[TextExample],
        source: &Path,
    ) -> Result<Targets, TrainError> {
        let set = LabelSet::new(spec.labels.clone()).map_err(E::Unsupported)?;
        Ok(Targets::MultiLabel(encode_multi_label(
            &set,
            examples,
            &spec.separator,
            source,
        )?))
    }

    fn report(
        &self,
        spec: &TaskSpec,
        outputs: &[Vec<f32>],
        targets: &Targets,
        _standardization: Option<(f64, f64)>,
    ) -> Report {
        let Targets::MultiLabel(truth) = targets else {
            unreachable!("multi-label targets are label rows")
        };
        let predicted = outputs
            .iter()
            .map(|row| row.iter().map(|&x| on(spec, x)).collect())
            .collect::<Vec<Vec<bool>>>();
        Report::MultiLabel(MultiLabelReport::new(
            &spec.labels,
            truth,
            &predicted,
            spec.threshold,
        ))
    }

    fn evaluation_plot(
        &self,
        spec: &TaskSpec,
        report: &Report,
        outputs: &[Vec<f32>],
        targets: &Targets,
    ) -> Option<EvaluationPlot> {
        let (Some(r), Targets::MultiLabel(truth)) = (of(report), targets) else {
            return None;
        };
        let mut counts = vec![[[0usize; 2]; 2]; r.labels.len()];
        for (truth, row) in truth.iter().zip(outputs) {
            for (c, (&yes, &logit)) in truth.iter().zip(row).enumerate() {
                counts[c][usize::from(yes)][usize::from(on(spec, logit))] += 1;
            }
        }
        Some(EvaluationPlot {
            name: plots::CONFUSION_PLOT,
            image: plots::multi_label_plot(&r.labels, &counts),
        })
    }

    fn prediction(&self, spec: &TaskSpec, row: &[f32]) -> Prediction {
        let probabilities: Vec<f32> = row.iter().map(|&x| sigmoid(x)).collect();
        let on = spec.labels.iter().zip(row).filter(|(_, x)| on(spec, **x));
        Prediction {
            labels: Some(on.map(|(l, _)| l.clone()).collect()),
            probabilities: Some(spec.named(&probabilities)),
            ..Prediction::default()
        }
    }

    fn detection_rank(&self) -> u8 {
        1 // after token classification's tag lists
    }

    /// Lists, or text fields holding several `|`-separated labels.
    fn detect(&self, column: &Column) -> Option<Detection> {
        let present = present(column);
        if present.iter().any(|v| matches!(v, Value::List(_))) {
            return Some(Detection { separator: None });
        }
        let several = |v: &&Value| matches!(v, Value::Text(t) if t.split('|').filter(|p| !p.trim().is_empty()).count() > 1);
        present.iter().any(several).then_some(Detection {
            separator: Some("|"),
        })
    }

    fn describe(&self, _rows: usize, classes: &BTreeMap<String, usize>) -> String {
        format!(
            "multi-label over {} labels ({})",
            classes.len(),
            class_counts(classes)
        )
    }
}

/// Whether a label's logit is at or above the decision threshold.
fn on(spec: &TaskSpec, logit: f32) -> bool {
    sigmoid(logit) as f64 >= spec.threshold
}
