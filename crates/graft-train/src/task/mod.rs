//! The one interface every task implements, and the registry that lists them.
//!
//! A task file (`classification.rs`, `multi_label.rs`, `regression.rs`,
//! `token_classification.rs`, `embedding.rs`) holds a unit struct and
//! its [`TaskLogic`]: its names, its losses, its validation metrics, its labels and targets, the
//! row problems it refuses, its report, evaluation plot and predictions, and what `graft init`
//! recognises as it. [`Task`] is the identifier configs and `graft.json` name; [`Task::logic`]
//! maps it to its logic, so adding a task is its file, its variant and one line below. Nothing
//! outside this module decides by task.

pub mod classification;
pub mod embedding;
pub mod multi_label;
pub mod regression;
pub mod token_classification;

use std::collections::BTreeMap;
use std::path::Path;

use graft_data::TextExample;
use graft_data::table::{Column, Value};
use serde::{Deserialize, Serialize};

use crate::config::DataSection;
use crate::error::{TrainError, TrainError as E};
use crate::loss::{LossKind, Targets};
use crate::metrics::Report;

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
    /// One tag per word of a sentence (named entities).
    TokenClassification,
    /// No head: the encoder itself is tuned on pairs or triplets of texts.
    Embedding,
}

/// Lists every task once: [`Task::ALL`] and the [`Task::logic`] dispatch.
macro_rules! registry {
    ($($variant:ident => $logic:expr),* $(,)?) => {
        impl Task {
            /// Every task, in the registry's order.
            pub const ALL: &'static [Task] = &[$(Task::$variant),*];

            /// What the task decides.
            pub fn logic(self) -> &'static dyn TaskLogic {
                match self {
                    $(Task::$variant => &$logic),*
                }
            }
        }
    };
}

registry! {
    Classification => classification::Classification,
    MultiLabel => multi_label::MultiLabel,
    Regression => regression::Regression,
    TokenClassification => token_classification::TokenClassification,
    Embedding => embedding::Embedding,
}

impl Task {
    /// The task whose `problem_type` is `name` (as `graft.json` stores it).
    pub fn named(name: &str) -> Result<Self, TrainError> {
        Self::ALL
            .iter()
            .copied()
            .find(|t| t.logic().problem_type() == name)
            .ok_or_else(|| E::Unsupported(format!("unknown task `{name}` in graft.json")))
    }
}

/// A task as `graft.json` spells it: transformers' `problem_type`.
pub mod as_problem_type {
    use serde::{Deserialize, Deserializer, Serializer};

    use super::Task;

    pub fn serialize<S: Serializer>(task: &Task, serializer: S) -> Result<S::Ok, S::Error> {
        serializer.serialize_str(task.logic().problem_type())
    }

    pub fn deserialize<'de, D: Deserializer<'de>>(deserializer: D) -> Result<Task, D::Error> {
        let name = String::deserialize(deserializer)?;
        Task::named(&name).map_err(|_| {
            serde::de::Error::custom(format!(
                "unknown task `{name}` (one of {})",
                super::problem_types()
            ))
        })
    }
}

/// Everything a task decides. Implemented by one unit struct per task file.
pub trait TaskLogic: Sync {
    /// Its name in a config (`[data] task`), as serde spells the [`Task`] variant.
    fn config_name(&self) -> &'static str;
    /// transformers' `problem_type` for it, also the task `graft.json` stores.
    fn problem_type(&self) -> &'static str;

    /// The loss used when `[loss] kind` is not given.
    fn default_loss(&self) -> LossKind;
    /// Whether `[loss] kind = loss` trains it.
    fn fits(&self, loss: LossKind) -> bool;
    /// Whether `[loss] label_smoothing` applies.
    fn takes_label_smoothing(&self) -> bool;
    /// Whether `[loss] class_weights` applies.
    fn takes_class_weights(&self) -> bool;

    /// Its validation metrics, [`VALID_LOSS`] first (the default `[train] monitor`); the others
    /// are read from its report.
    fn metrics(&self) -> &'static [Metric];
    /// The metric a one-line epoch summary shows beside the loss.
    fn headline(&self) -> &'static str;

    /// What the outputs are called in logs: classes, labels or the target.
    fn outputs_noun(&self) -> &'static str;
    /// Whether its outputs are named labels (classes, tags) rather than a value.
    fn has_label_set(&self) -> bool;
    /// Whether a row's label is a list (`a|b`): `graft.json` then keeps the decision threshold
    /// and the separator.
    fn label_lists(&self) -> bool;
    /// The run's output names: from the labels file, else from the (screened) training rows.
    fn labels(&self, train: &[TextExample], data: &DataSection) -> Result<Vec<String>, TrainError>;
    /// What is wrong with a row's label (trimmed) before any label set is known.
    fn row_problem(&self, label: &str) -> Option<String>;
    /// What is wrong with a row's raw label given the run's labels (one it does not know).
    fn label_problem(&self, spec: &TaskSpec, label: &str) -> Option<String>;

    /// Raw targets of `examples` (read from `source`); unknown labels are errors naming the line.
    fn targets(
        &self,
        spec: &TaskSpec,
        examples: &[TextExample],
        source: &Path,
    ) -> Result<Targets, TrainError>;
    /// Standardizes the training and validation targets in place, returning the mean and
    /// standard deviation used, if the task trains on standardized targets.
    fn standardize(&self, _train: &mut Targets, _valid: &mut Targets) -> Option<(f64, f64)> {
        None
    }
    /// The report on raw outputs `[n][k]` against its raw targets; `standardization` maps the
    /// outputs and targets of a standardized run back to raw values.
    fn report(
        &self,
        spec: &TaskSpec,
        outputs: &[Vec<f32>],
        targets: &Targets,
        standardization: Option<(f64, f64)>,
    ) -> Report;
    /// The evaluation's picture, if it has one.
    fn evaluation_plot(
        &self,
        spec: &TaskSpec,
        report: &Report,
        outputs: &[Vec<f32>],
        targets: &Targets,
    ) -> Option<EvaluationPlot>;
    /// One raw output row as a prediction.
    fn prediction(&self, spec: &TaskSpec, row: &[f32]) -> Prediction;

    /// When `graft init` tries it: lower first, so the most specific tasks come before the one
    /// that takes any column.
    fn detection_rank(&self) -> u8;
    /// Whether `graft init` reads a label column as this task, and how its fields separate.
    fn detect(&self, column: &Column) -> Option<Detection>;
    /// `graft init`'s description of the detected data: `rows` rows, `classes` counted.
    fn describe(&self, rows: usize, classes: &BTreeMap<String, usize>) -> String;
}

/// A validation metric: its `metrics.jsonl` name, its direction, and how a report holds it.
#[derive(Clone, Copy)]
pub struct Metric {
    pub name: &'static str,
    pub higher_is_better: bool,
    /// Its value in a report of its task (`None` in any other report, and for the loss).
    pub read: fn(&Report) -> Option<f64>,
}

impl Metric {
    pub const fn higher(name: &'static str, read: fn(&Report) -> Option<f64>) -> Self {
        Self {
            name,
            higher_is_better: true,
            read,
        }
    }

    pub const fn lower(name: &'static str, read: fn(&Report) -> Option<f64>) -> Self {
        Self {
            name,
            higher_is_better: false,
            read,
        }
    }
}

/// The mean loss on the validation split: every task's first metric, computed by training.
pub const VALID_LOSS: Metric = Metric::lower("valid_loss", |_| None);

/// Whether a larger value of the metric is better.
pub fn higher_is_better(metric: &str) -> bool {
    Task::ALL
        .iter()
        .flat_map(|t| t.logic().metrics())
        .find(|m| m.name == metric)
        .is_some_and(|m| m.higher_is_better)
}

/// Every task's headline metric, in the registry's order.
pub fn headline_metrics() -> impl Iterator<Item = &'static str> {
    Task::ALL.iter().map(|t| t.logic().headline())
}

/// What `graft init` reads a label column as, and how its fields separate labels: the first task
/// by detection rank that detects it (classification takes any column).
pub fn detect(column: &Column) -> (Task, Option<&'static str>) {
    detection_order()
        .into_iter()
        .find_map(|t| t.logic().detect(column).map(|d| (t, d.separator)))
        .unwrap_or((Task::default(), None))
}

/// The tasks in the order `graft init` tries them.
fn detection_order() -> Vec<Task> {
    let mut tasks = Task::ALL.to_vec();
    tasks.sort_by_key(|t| t.logic().detection_rank());
    tasks
}

/// `a, b or c`: the `problem_type` of every task, for messages.
pub fn problem_types() -> String {
    one_of(
        Task::ALL
            .iter()
            .map(|t| t.logic().problem_type().to_string()),
    )
}

/// `a, b or c`.
pub fn one_of(names: impl IntoIterator<Item = String>) -> String {
    let mut names: Vec<String> = names.into_iter().collect();
    match names.pop() {
        None => String::new(),
        Some(last) if names.is_empty() => last,
        Some(last) => format!("{} or {last}", names.join(", ")),
    }
}

/// What `graft init` found a label column to be.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Detection {
    /// What separates the labels of a field (`a|b`), when they are not lists.
    pub separator: Option<&'static str>,
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
    pub fn logic(&self) -> &'static dyn TaskLogic {
        self.task.logic()
    }

    /// Raw targets of `examples` (read from `source`); unknown labels are errors naming the line.
    pub fn targets(&self, examples: &[TextExample], source: &Path) -> Result<Targets, TrainError> {
        self.logic().targets(self, examples, source)
    }

    /// The report on raw outputs `[n][k]` against raw targets; `standardization` maps outputs
    /// and targets of a standardized regression back to raw values.
    pub fn report(
        &self,
        outputs: &[Vec<f32>],
        targets: &Targets,
        standardization: Option<(f64, f64)>,
    ) -> Report {
        self.logic().report(self, outputs, targets, standardization)
    }

    /// The evaluation's picture: the confusion matrix of a classification (multi-label: one 2 x 2
    /// matrix per label), predicted against true values of a regression.
    pub fn evaluation_plot(
        &self,
        report: &Report,
        outputs: &[Vec<f32>],
        targets: &Targets,
    ) -> Option<EvaluationPlot> {
        self.logic().evaluation_plot(self, report, outputs, targets)
    }

    /// Raw outputs as predictions.
    pub fn predictions(&self, outputs: &[Vec<f32>]) -> Vec<Prediction> {
        outputs
            .iter()
            .map(|row| self.logic().prediction(self, row))
            .collect()
    }

    /// Each label's probability, by name.
    fn named(&self, probabilities: &[f32]) -> serde_json::Map<String, serde_json::Value> {
        self.labels
            .iter()
            .zip(probabilities)
            .map(|(l, &p)| (l.clone(), serde_json::json!(p)))
            .collect()
    }
}

/// One prediction. Classification: the top `label` and every label's probability. Multi-label:
/// the `labels` at or above the threshold and every label's probability. Regression: `value`.
/// Token classification: the `entities` found in the text.
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
    /// Token classification: the text's entities with their character offsets.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub entities: Option<Vec<crate::entities::FoundEntity>>,
}

/// An evaluation's picture and its file name; drawing can fail (the message says why).
pub struct EvaluationPlot {
    pub name: &'static str,
    pub image: Result<image::RgbImage, String>,
}

/// The message for a label outside `spec`'s labels.
fn unknown_label(spec: &TaskSpec, label: &str) -> String {
    format!(
        "label `{label}` is not one of the training labels ({})",
        spec.labels.join(", ")
    )
}

/// The values of a column that are there.
fn present(column: &Column) -> Vec<&Value> {
    column
        .values
        .iter()
        .filter(|v| !matches!(v, Value::Missing))
        .collect()
}

fn sigmoid(x: f32) -> f32 {
    1.0 / (1.0 + (-x).exp())
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::metrics::{EvalReport, MultiLabelReport, RegressionReport};

    /// graft.json keeps the task as transformers' `problem_type`; anything else is refused.
    #[test]
    fn graft_json_spells_tasks_as_problem_types() {
        #[derive(serde::Serialize, serde::Deserialize)]
        struct Manifest {
            #[serde(with = "as_problem_type")]
            task: Task,
        }
        for task in Task::ALL {
            let text = serde_json::to_string(&Manifest { task: *task }).unwrap();
            assert!(text.contains(task.logic().problem_type()), "{text}");
            assert_eq!(serde_json::from_str::<Manifest>(&text).unwrap().task, *task);
        }
        let error = serde_json::from_str::<Manifest>(r#"{"task": "ranking"}"#)
            .err()
            .unwrap()
            .to_string();
        assert!(error.contains("unknown task `ranking`"), "{error}");
    }

    #[test]
    fn config_names_are_serdes_and_names_round_trip() {
        for &task in Task::ALL {
            let logic = task.logic();
            assert_eq!(
                serde_json::to_value(task).unwrap(),
                serde_json::json!(logic.config_name())
            );
            assert_eq!(Task::named(logic.problem_type()).unwrap(), task);
        }
        assert_eq!(
            problem_types(),
            "single_label_classification, multi_label_classification, regression, \
             token_classification or embedding"
        );
        assert!(Task::named("ranking").is_err());
    }

    #[test]
    fn every_task_monitors_its_loss_first_and_fits_its_default_loss() {
        for &task in Task::ALL {
            let logic = task.logic();
            assert_eq!(logic.metrics()[0].name, "valid_loss");
            assert!(logic.fits(logic.default_loss()));
            assert!(logic.metrics().iter().any(|m| m.name == logic.headline()));
        }
        assert!(!higher_is_better("valid_loss"));
        assert!(!higher_is_better("valid_hamming"));
        assert!(higher_is_better("valid_macro_f1"));
        assert!(higher_is_better("valid_r2"));
        assert!(!higher_is_better("valid_nothing"));
    }

    #[test]
    fn reports_give_their_tasks_metrics() {
        let labels: Vec<String> = ["a", "b"].map(String::from).to_vec();
        let classes = Report::Classification(EvalReport::new(&labels, &[0, 1], &[0, 0]));
        let multi = Report::MultiLabel(MultiLabelReport::new(
            &labels,
            &[vec![true, false]],
            &[vec![true, true]],
            0.5,
        ));
        let values = Report::Regression(RegressionReport::new(&[1.0, 2.0], &[1.0, 3.0]));
        let names = |r: &Report| r.as_metrics().into_keys().collect::<Vec<_>>();
        assert_eq!(names(&classes), ["valid_accuracy", "valid_macro_f1"]);
        assert_eq!(
            names(&multi),
            ["valid_hamming", "valid_macro_f1", "valid_micro_f1"]
        );
        assert_eq!(
            names(&values),
            [
                "valid_mae",
                "valid_pearson",
                "valid_r2",
                "valid_rmse",
                "valid_spearman"
            ]
        );
        assert_eq!(classes.as_metrics()["valid_accuracy"], 0.5);
        assert_eq!(values.as_metrics()["valid_mae"], 0.5);
    }

    #[test]
    fn init_tries_lists_then_numbers_then_classes() {
        assert_eq!(
            detection_order(),
            [
                Task::TokenClassification,
                Task::MultiLabel,
                Task::Regression,
                Task::Classification,
                Task::Embedding
            ]
        );
        assert_eq!(
            one_of(Task::ALL.iter().map(|t| t.logic().config_name().into())),
            "classification, multi_label, regression, token_classification or embedding"
        );
    }

    #[test]
    fn predictions_per_task() {
        let spec = |task| TaskSpec {
            task,
            labels: vec!["a".into(), "b".into()],
            threshold: 0.5,
            separator: "|".into(),
        };
        let outputs = vec![vec![-1.0, 2.0]];
        let p = &spec(Task::Classification).predictions(&outputs)[0];
        assert_eq!(p.label.as_deref(), Some("b"));
        let p = &spec(Task::MultiLabel).predictions(&outputs)[0];
        assert_eq!(p.labels.as_deref(), Some(&["b".to_string()][..]));
        let p = &spec(Task::Regression).predictions(&outputs)[0];
        assert_eq!(p.value, Some(-1.0));
    }
}
