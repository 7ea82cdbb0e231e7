//! Token classification (named entities, PII tags): one tag per word of a sentence, read from the
//! first token of each word (transformers' recipe), softmax and cross-entropy over the tags of
//! every labelled token, and seqeval's entity-level precision, recall and F1 with a per-entity
//! table. A sentence's words and tags are lists (a CoNLL file, or JSONL/parquet list columns).

use std::collections::BTreeMap;
use std::path::Path;

use graft_data::TextExample;
use graft_data::table::{Column, Value};
use graft_data::tagged::words_and_tags;

use super::classification::{argmax, softmax};
use super::{
    Detection, EvaluationPlot, Metric, Prediction, TaskLogic, TaskSpec, VALID_LOSS, present,
};
use crate::config::DataSection;
use crate::entities::{EntityReport, entity_counts};
use crate::error::{TrainError, TrainError as E};
use crate::loss::{LossKind, Targets};
use crate::metrics::Report;

/// One tag per word.
pub struct TokenClassification;

/// The entity report inside `report`.
fn of(report: &Report) -> Option<&EntityReport> {
    match report {
        Report::Entities(r) => Some(r),
        _ => None,
    }
}

const METRICS: &[Metric] = &[
    VALID_LOSS,
    Metric::higher("valid_f1", |r| of(r).map(|r| r.f1)),
    Metric::higher("valid_precision", |r| of(r).map(|r| r.precision)),
    Metric::higher("valid_recall", |r| of(r).map(|r| r.recall)),
    Metric::higher("valid_tag_accuracy", |r| of(r).map(|r| r.accuracy)),
];

/// The tags of a row's label field (a JSON list), without the words.
fn tags_of(label: &str) -> Option<Vec<String>> {
    match Value::classify(label) {
        Value::List(tags) => Some(tags),
        _ => None,
    }
}

/// Whether a tag reads as an entity tag: `O`, or a `B-`/`I-`/`E-`/`S-` prefix and a type.
fn is_tag(tag: &str) -> bool {
    tag == "O"
        || tag
            .split_once('-')
            .is_some_and(|(p, kind)| matches!(p, "B" | "I" | "E" | "S") && !kind.is_empty())
}

impl TaskLogic for TokenClassification {
    fn config_name(&self) -> &'static str {
        "token_classification"
    }

    fn problem_type(&self) -> &'static str {
        "token_classification"
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
        "valid_f1"
    }

    fn outputs_noun(&self) -> &'static str {
        "tags"
    }

    fn has_label_set(&self) -> bool {
        true
    }

    fn label_lists(&self) -> bool {
        false
    }

    /// The labels file's tags, else every tag of the training sentences, sorted (as
    /// transformers' `run_ner.py` orders them).
    fn labels(&self, train: &[TextExample], data: &DataSection) -> Result<Vec<String>, TrainError> {
        if let Some(path) = &data.labels {
            return Ok(graft_data::LabelSet::from_file(path)?.names().to_vec());
        }
        let mut tags = std::collections::BTreeSet::new();
        for example in train {
            if let (_, Some(sentence)) = words_and_tags(example, &data.train)? {
                tags.extend(sentence);
            }
        }
        if tags.is_empty() {
            return Err(E::Config {
                path: data.train.clone(),
                message: "no tags: token classification needs a tag for every word".into(),
            });
        }
        Ok(tags.into_iter().collect())
    }

    fn row_problem(&self, label: &str) -> Option<String> {
        match tags_of(label) {
            None => Some("the tags are not a list".into()),
            Some(tags) if tags.is_empty() => Some("a sentence without words".into()),
            Some(tags) => tags
                .iter()
                .any(|t| t.trim().is_empty())
                .then(|| "an empty tag".into()),
        }
    }

    fn label_problem(&self, spec: &TaskSpec, label: &str) -> Option<String> {
        let tags = tags_of(label)?;
        let unknown = tags.iter().find(|t| !spec.labels.contains(t))?;
        Some(format!(
            "tag `{unknown}` is not one of the training tags ({})",
            spec.labels.join(", ")
        ))
    }

    fn targets(
        &self,
        spec: &TaskSpec,
        examples: &[TextExample],
        source: &Path,
    ) -> Result<Targets, TrainError> {
        let mut sentences = Vec::with_capacity(examples.len());
        for example in examples {
            let (words, tags) = words_and_tags(example, source)?;
            let tags = tags.ok_or_else(|| E::Config {
                path: source.to_path_buf(),
                message: format!("line {}: the sentence has no tags", example.line),
            })?;
            debug_assert_eq!(words.len(), tags.len());
            let classes = tags
                .iter()
                .map(|tag| {
                    spec.labels.iter().position(|l| l == tag).ok_or_else(|| {
                        graft_data::DataError::UnknownLabel {
                            path: source.to_path_buf(),
                            line: example.line,
                            label: tag.clone(),
                            known: spec.labels.clone(),
                        }
                    })
                })
                .collect::<Result<Vec<usize>, _>>()?;
            sentences.push(classes);
        }
        Ok(Targets::Words(sentences))
    }

    /// `outputs` holds one row per labelled token of every sentence, in order; each word's
    /// prediction is its first token's.
    fn report(
        &self,
        spec: &TaskSpec,
        outputs: &[Vec<f32>],
        targets: &Targets,
        _standardization: Option<(f64, f64)>,
    ) -> Report {
        let Targets::Tokens(sentences) = targets else {
            unreachable!("token classification is reported on aligned targets")
        };
        let mut rows = outputs.iter();
        let (mut truth, mut predicted) = (Vec::new(), Vec::new());
        for sentence in sentences {
            let (mut t, mut p) = (Vec::new(), Vec::new());
            for (token, &class) in sentence.tokens.iter().zip(&sentence.classes) {
                let row = rows.next().expect("one output row per labelled token");
                if token.first {
                    t.push(spec.labels[class].clone());
                    p.push(spec.labels[argmax(row)].clone());
                }
            }
            truth.push(t);
            predicted.push(p);
        }
        Report::Entities(EntityReport::new(&truth, &predicted))
    }

    fn evaluation_plot(
        &self,
        _spec: &TaskSpec,
        _report: &Report,
        _outputs: &[Vec<f32>],
        _targets: &Targets,
    ) -> Option<EvaluationPlot> {
        None
    }

    /// One token's row: its tag and every tag's probability.
    fn prediction(&self, spec: &TaskSpec, row: &[f32]) -> Prediction {
        let probabilities = softmax(row);
        Prediction {
            label: Some(spec.labels[argmax(&probabilities)].clone()),
            probabilities: Some(spec.named(&probabilities)),
            ..Prediction::default()
        }
    }

    /// Before multi-label, which takes any list.
    fn detection_rank(&self) -> u8 {
        0
    }

    /// Lists of tags: every value a list, and nearly every item `O` or `B-`/`I-` and a type.
    fn detect(&self, column: &Column) -> Option<Detection> {
        let present = present(column);
        let lists: Vec<&Vec<String>> = present
            .iter()
            .filter_map(|v| match v {
                Value::List(items) => Some(items),
                _ => None,
            })
            .collect();
        if lists.is_empty() || lists.len() < present.len() {
            return None;
        }
        let items: Vec<&String> = lists.iter().flat_map(|l| l.iter()).collect();
        let tags = items.iter().filter(|t| is_tag(t)).count();
        (tags * 10 >= items.len() * 9 && items.iter().any(|t| *t != "O"))
            .then_some(Detection { separator: None })
    }

    fn describe(&self, rows: usize, entities: &BTreeMap<String, usize>) -> String {
        format!(
            "token classification of {rows} tagged sentences (entities: {})",
            crate::init::class_counts(entities)
        )
    }
}

/// The entity counts of tag lists, for `graft init`.
pub fn entities_of(column: &Column) -> BTreeMap<String, usize> {
    let sentences: Vec<Vec<String>> = column
        .values
        .iter()
        .filter_map(|v| match v {
            Value::List(items) => Some(items.clone()),
            _ => None,
        })
        .collect();
    entity_counts(&sentences)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn tag_lists_are_detected_before_label_lists() {
        let column = |values: Vec<Vec<&str>>| Column {
            name: "tags".into(),
            values: values
                .into_iter()
                .map(|v| Value::List(v.into_iter().map(String::from).collect()))
                .collect(),
        };
        let tags = column(vec![vec!["B-PER", "I-PER", "O"], vec!["O", "B-LOC"]]);
        assert!(TokenClassification.detect(&tags).is_some());
        let labels = column(vec![vec!["sports", "news"], vec!["tech"]]);
        assert!(TokenClassification.detect(&labels).is_none());
        let all_outside = column(vec![vec!["O", "O"]]);
        assert!(TokenClassification.detect(&all_outside).is_none());
    }

    #[test]
    fn rows_without_tag_lists_are_refused() {
        let logic = TokenClassification;
        assert_eq!(
            logic.row_problem("B-PER").as_deref(),
            Some("the tags are not a list")
        );
        assert_eq!(
            logic.row_problem("[]").as_deref(),
            Some("a sentence without words")
        );
        assert_eq!(
            logic.row_problem(r#"["O",""]"#).as_deref(),
            Some("an empty tag")
        );
        assert_eq!(logic.row_problem(r#"["O","B-PER"]"#), None);
        let spec = TaskSpec {
            task: super::super::Task::TokenClassification,
            labels: vec!["B-PER".into(), "O".into()],
            threshold: 0.5,
            separator: "|".into(),
        };
        assert_eq!(
            logic.label_problem(&spec, r#"["O","B-LOC"]"#).as_deref(),
            Some("tag `B-LOC` is not one of the training tags (B-PER, O)")
        );
    }
}
