//! A run's data, the same for every modality: the config's splits read by the modality's reader,
//! bad rows refused or skipped ([`crate::bad_rows`]), the label set (from the data or a labels
//! file), the seeded validation split, targets checked against the labels, regression
//! standardization, and the loss with its class weights.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

use graft_data::{LabelSet, TextExample, train_valid_split};

use crate::bad_rows::{Screen, SkippedRows, label_problem, row_problem};
use crate::config::{ClassWeights, Config};
use crate::error::{TrainError, TrainError as E};
use crate::loss::{
    LossKind, Targets, TaskLoss, TextTargets, balanced_class_weights, balanced_pos_weight,
};
use crate::modality::Encoded;
use crate::task::TaskSpec;
use crate::task::embedding::contrastive_pairs;

/// The data of a run, read by the modality and encoded for its task.
pub struct RunData {
    pub spec: TaskSpec,
    pub train: Vec<TextExample>,
    pub valid: Vec<TextExample>,
    pub test: Option<(PathBuf, Vec<TextExample>)>,
    /// Training targets (standardized for regression when the config says so).
    pub train_targets: Targets,
    pub valid_targets: Targets,
    /// Regression: the mean and standard deviation the targets were standardized with.
    pub standardization: Option<(f64, f64)>,
    /// Rows left out under `[data] bad_rows = "skip"`, per file.
    pub skipped: Vec<SkippedRows>,
}

impl RunData {
    /// Reads the config's splits with `read` (the modality's reader) and checks every label.
    pub fn read(
        config: &Config,
        read: impl Fn(&Path) -> Result<Vec<TextExample>, TrainError>,
    ) -> Result<Self, TrainError> {
        let d = &config.data;
        let task = d.task;
        let mut screen = Screen::new(d.bad_rows);
        // Rows are checked before the label set is made of them, so an empty label never
        // becomes a class.
        let mut read = |path: &Path| {
            let examples = read(path)?;
            screen.apply(path, examples, |e| row_problem(task, e))
        };
        let mut all_train = read(&d.train)?;
        let labels = task.logic().labels(&all_train, d)?;
        let spec = TaskSpec {
            task,
            labels,
            threshold: config.head.threshold,
            separator: d.label_separator.clone(),
        };
        let valid_file = d.valid.as_ref().map(|path| read(path)).transpose()?;
        let test_file = d.test.as_ref().map(|path| read(path)).transpose()?;
        // Labels outside the run's labels (a labels file's, or those of the training file).
        let mut known = |path: &Path, examples: Vec<TextExample>| {
            screen.apply(path, examples, |e| label_problem(&spec, e))
        };
        if d.labels.is_some() {
            all_train = known(&d.train, all_train)?;
        }
        let valid_file = match (&d.valid, valid_file) {
            (Some(path), Some(examples)) => Some(known(path, examples)?),
            _ => None,
        };
        let test = match (&d.test, test_file) {
            (Some(path), Some(examples)) => Some((path.clone(), known(path, examples)?)),
            _ => None,
        };
        let (train, valid) = match valid_file {
            Some(valid) => (all_train, valid),
            None => {
                if all_train.len() < 2 {
                    return Err(E::Config {
                        path: d.train.clone(),
                        message: format!(
                            "{} training example(s): holding out a validation split needs at \
                             least 2; add examples or give [data] valid",
                            all_train.len()
                        ),
                    });
                }
                let fraction = d.valid_fraction.unwrap_or(0.1);
                let (train_idx, valid_idx) =
                    train_valid_split(all_train.len(), fraction, config.train.seed);
                let pick = |idx: &[usize]| idx.iter().map(|&i| all_train[i].clone()).collect();
                (pick(&train_idx), pick(&valid_idx))
            }
        };
        let (train, valid, test) = match d.contrastive_pairs {
            Some(rounds) => {
                let seed = config.train.seed;
                let pairs = |examples: Vec<TextExample>, rounds, seed, path: &Path| {
                    contrastive_pairs(&examples, rounds, seed).map_err(|message| E::Config {
                        path: path.to_path_buf(),
                        message,
                    })
                };
                let valid_path = d.valid.as_deref().unwrap_or(&d.train);
                (
                    pairs(train, rounds, seed, &d.train)?,
                    pairs(valid, 1, seed.wrapping_add(1), valid_path)?,
                    match test {
                        Some((path, examples)) => {
                            let made = pairs(examples, 1, seed.wrapping_add(2), &path)?;
                            Some((path, made))
                        }
                        None => None,
                    },
                )
            }
            None => (train, valid, test),
        };
        let valid_path = d.valid.clone().unwrap_or_else(|| d.train.clone());
        let mut train_targets = spec.targets(&train, &d.train)?;
        let mut valid_targets = spec.targets(&valid, &valid_path)?;
        if let Some(scale) = d.score_scale {
            for targets in [&mut train_targets, &mut valid_targets] {
                if let Targets::Texts(TextTargets {
                    scores: Some(scores),
                    ..
                }) = targets
                {
                    scores
                        .iter_mut()
                        .for_each(|s| *s = (*s as f64 * scale) as f32);
                }
            }
        }
        if config.loss.kind_for(task) == LossKind::CosineSimilarity {
            check_cosine_scores(&train_targets, &train, &d.train)?;
            check_cosine_scores(&valid_targets, &valid, &valid_path)?;
        }
        if let Some((path, examples)) = &test {
            spec.targets(examples, path)?; // unknown labels fail before training
        }
        if let Targets::Classes(t) = &train_targets {
            let set = LabelSet::new(spec.labels.clone()).map_err(E::Unsupported)?;
            set.check_all_present(t, &d.train)?;
        }
        let standardization = if d.standardize {
            task.logic()
                .standardize(&mut train_targets, &mut valid_targets)
        } else {
            None
        };
        Ok(Self {
            spec,
            train,
            valid,
            test,
            train_targets,
            valid_targets,
            standardization,
            skipped: screen.into_skipped(),
        })
    }

    /// Token classification: the word targets aligned with the tokens of the encoded training
    /// and validation sentences (other tasks' targets are left as they are).
    pub fn align_targets(&mut self, train: &Encoded, valid: &Encoded, all_subwords: bool) {
        let labels = &self.spec.labels;
        let align = |targets: &mut Targets, encoded: &Encoded| {
            let words = std::mem::replace(targets, Targets::Values(Vec::new()));
            *targets = words.aligned(encoded.word_ids().unwrap_or_default(), all_subwords, labels);
        };
        align(&mut self.train_targets, train);
        align(&mut self.valid_targets, valid);
    }

    /// The validation metrics of raw outputs, in `metrics.jsonl`'s names.
    pub fn valid_metrics(&self, outputs: &[Vec<f32>]) -> BTreeMap<String, f64> {
        self.spec
            .report(outputs, &self.valid_targets, self.standardization)
            .as_metrics()
    }

    /// The loss of the config's task, with class weights resolved against the training targets.
    pub fn loss(&self, config: &Config) -> Result<TaskLoss, TrainError> {
        let l = &config.loss;
        let classes = self.spec.labels.len();
        let (mut weights, mut pos_weight) = (None, None);
        match (&l.class_weights, &self.train_targets) {
            (Some(ClassWeights::Explicit(w)), _) => {
                if w.len() != classes {
                    return Err(E::Config {
                        path: config.source.clone(),
                        message: format!(
                            "[loss] class_weights: {} weights given for {classes} classes ({})",
                            w.len(),
                            self.spec.labels.join(", ")
                        ),
                    });
                }
                weights = Some(w.iter().map(|&v| v as f32).collect());
            }
            (Some(ClassWeights::Named(_)), Targets::Classes(t)) => {
                weights = Some(balanced_class_weights(t, classes));
            }
            (Some(ClassWeights::Named(_)), Targets::Tokens(sentences)) => {
                let tokens: Vec<usize> = sentences.iter().flat_map(|s| s.classes.clone()).collect();
                weights = Some(balanced_class_weights(&tokens, classes));
            }
            (Some(ClassWeights::Named(_)), Targets::MultiLabel(rows)) => {
                pos_weight = Some(balanced_pos_weight(rows, classes));
            }
            _ => {}
        }
        Ok(TaskLoss {
            kind: l.kind_for(self.spec.task),
            weights,
            pos_weight,
            label_smoothing: l.label_smoothing,
            huber_delta: l.huber_delta,
            scale: l.scale,
            margin: l.margin,
        })
    }
}

/// CosineSimilarityLoss pulls each pair's cosine similarity towards its score: a score outside
/// [-1, 1] can never be reached, which is an error naming the line.
fn check_cosine_scores(
    targets: &Targets,
    examples: &[TextExample],
    source: &Path,
) -> Result<(), TrainError> {
    let Targets::Texts(TextTargets {
        scores: Some(scores),
        ..
    }) = targets
    else {
        return Ok(());
    };
    match scores.iter().position(|s| s.abs() > 1.0) {
        Some(i) => Err(E::Config {
            path: source.to_path_buf(),
            message: format!(
                "line {}: score {} is outside [-1, 1], the range of a cosine similarity, which \
                 cosine_similarity trains towards; scale the scores with [data] score_scale \
                 (STS-B's 0 to 5: 0.2)",
                examples[i].line, scores[i]
            ),
        }),
        None => Ok(()),
    }
}
