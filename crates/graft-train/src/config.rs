//! The TOML run config: parsing, and the checks that span keys (unknown keys, wrong types, keys of
//! the other modality and impossible values are errors that name the file, the key and its
//! line). The sections' keys and defaults are in `config/sections.rs`. Relative paths are taken
//! from the current directory.

use std::path::{Path, PathBuf};

use graft_model::Pooling;
use serde::{Deserialize, Serialize};

use crate::error::TrainError;
mod sections;

pub use crate::loss::LossKind;
pub use crate::task::Task;
pub use sections::*;

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Config {
    pub model: ModelSection,
    pub data: DataSection,
    #[serde(default)]
    pub head: HeadSection,
    #[serde(default)]
    pub freeze: FreezeSection,
    #[serde(default)]
    pub train: TrainSection,
    #[serde(default)]
    pub loss: LossSection,
    /// Training-time image augmentation (vision models).
    #[serde(default)]
    pub augment: AugmentSection,
    /// LoRA adapters on the backbone instead of training its weights.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub lora: Option<LoraSection>,
    pub output: OutputSection,
    /// Experiment tracking (MLflow).
    #[serde(default, skip_serializing_if = "is_default")]
    pub track: TrackSection,
    /// The file the config was read from, named in errors about it.
    #[serde(skip)]
    pub source: PathBuf,
    /// Its text, to find the line of a key.
    #[serde(skip)]
    pub text: String,
}

impl Config {
    /// Reads and checks a config file.
    pub fn from_file(path: &Path) -> Result<Self, TrainError> {
        let text = std::fs::read_to_string(path).map_err(|source| TrainError::Io {
            path: path.to_path_buf(),
            source,
        })?;
        Self::parse(&text, path)
    }

    /// Parses config text; `origin` names it in errors.
    pub fn parse(text: &str, origin: &Path) -> Result<Self, TrainError> {
        let mut config: Self = toml::from_str(text).map_err(|e| TrainError::Config {
            path: origin.to_path_buf(),
            message: e.to_string().trim_end().to_string(),
        })?;
        config.source = origin.to_path_buf();
        config.text = text.to_string();
        let f = &mut config.freeze;
        if config.lora.is_some()
            && f.backbone.is_none()
            && f.layers.is_none()
            && f.patterns.is_empty()
        {
            // With LoRA the adapters are what trains; [freeze] only narrows them down.
            f.backbone = Some(false);
        }
        if config.data.task == Task::Embedding {
            // Embedding training tunes the backbone itself, unless [freeze] says otherwise.
            let f = &mut config.freeze;
            if f.backbone.is_none() && f.layers.is_none() && f.patterns.is_empty() {
                f.backbone = Some(false);
            }
            // SetFit's pairs are scored 1 and 0 for CosineSimilarityLoss.
            if config.data.contrastive_pairs.is_some() && config.loss.kind.is_none() {
                config.loss.kind = Some(LossKind::CosineSimilarity);
            }
        }
        config
            .resolve_columns()
            .and_then(|()| config.check_data_kind())
            .map_err(|(section, key, message)| config.key_error(section, key, &message))?;
        config.check().map_err(|message| TrainError::Config {
            path: origin.to_path_buf(),
            message,
        })?;
        Ok(config)
    }

    /// An error about `[section] key`, naming the config file and the key's line.
    pub fn key_error(&self, section: &str, key: &str, message: &str) -> TrainError {
        let line = line_of(&self.text, section, key)
            .map_or(String::new(), |line| format!("line {line}: "));
        TrainError::Config {
            path: self.source.clone(),
            message: format!("{line}[{section}] {key}: {message}"),
        }
    }

    fn check(&self) -> Result<(), String> {
        let t = &self.train;
        if t.epochs == 0 || t.batch_size == 0 || t.eval_batch_size == 0 {
            return Err("[train] epochs, batch_size and eval_batch_size must be positive".into());
        }
        if !(t.lr > 0.0 && t.lr.is_finite()) {
            return Err(format!(
                "[train] lr must be a positive number, found {}",
                t.lr
            ));
        }
        if t.weight_decay < 0.0 || !(0.0..1.0).contains(&t.momentum) {
            return Err("[train] weight_decay must be >= 0 and momentum in [0, 1)".into());
        }
        if !(0.0..1.0).contains(&self.head.dropout) {
            return Err(format!(
                "[head] dropout must be in [0, 1), found {}",
                self.head.dropout
            ));
        }
        match (self.head.kind, self.head.hidden.is_empty()) {
            (HeadKind::Mlp, true) => return Err("[head] kind = \"mlp\" needs hidden = [..]".into()),
            (HeadKind::Linear | HeadKind::Native | HeadKind::None, false) => {
                return Err("[head] hidden is only for kind = \"mlp\"".into());
            }
            _ => {}
        }
        if self.head.kind == HeadKind::Native {
            let m = &self.model;
            let given = [
                ("pooling", m.pooling.is_some()),
                ("pooler", m.pooler.is_some()),
                ("normalize", m.normalize == Some(true)),
            ];
            if let Some((key, _)) = given.iter().find(|(_, set)| *set) {
                return Err(format!(
                    "[model] {key} cannot be set with [head] kind = \"native\": the family's \
                     own head pools as transformers' sequence classifier does"
                ));
            }
        }
        if self.head.kind == HeadKind::None && self.data.task != Task::Embedding {
            return Err(
                "[head] kind = \"none\" is for task = \"embedding\", which tunes the encoder \
                 without a head"
                    .into(),
            );
        }
        if self.head.hidden.contains(&0) {
            return Err("[head] hidden widths must be positive".into());
        }
        if let Some(f) = self.data.valid_fraction {
            if !(f > 0.0 && f < 1.0) {
                return Err(format!(
                    "[data] valid_fraction must be in (0, 1), found {f}"
                ));
            }
            if self.data.valid.is_some() {
                return Err("[data] give either valid or valid_fraction, not both".into());
            }
        }
        if self.model.max_length == Some(0) {
            return Err("[model] max_length must be positive".into());
        }
        if self.model.pooler == Some(true) && self.model.pooling != Some(Pooling::Cls) {
            return Err("[model] pooler = true needs pooling = \"cls\"".into());
        }
        self.check_lora()?;
        self.check_training_control()
    }

    fn check_lora(&self) -> Result<(), String> {
        let Some(lora) = &self.lora else {
            return Ok(());
        };
        if lora.r == 0 {
            return Err("[lora] r must be positive".into());
        }
        if !(lora.alpha > 0.0 && lora.alpha.is_finite()) {
            return Err(format!(
                "[lora] alpha must be positive, found {}",
                lora.alpha
            ));
        }
        if !(0.0..1.0).contains(&lora.dropout) {
            return Err(format!(
                "[lora] dropout must be in [0, 1), found {}",
                lora.dropout
            ));
        }
        if lora.bias != "none" {
            return Err(format!(
                "[lora] bias = \"{}\": only \"none\" is supported (no bias trains)",
                lora.bias
            ));
        }
        if self.freeze.always_frozen() {
            return Err(
                "[lora] with [freeze] backbone = true and no unfreeze step: the adapters would \
                 never train"
                    .into(),
            );
        }
        for target in &lora.target_modules {
            regex::Regex::new(target)
                .map_err(|e| format!("[lora] target_modules: invalid regular expression: {e}"))?;
        }
        Ok(())
    }

    /// The column read as each example's label: none for embedding training whose loss takes no
    /// score (multiple negatives ranking, triplets).
    pub fn label_column(&self) -> Option<&str> {
        let scored = self.data.contrastive_pairs.is_some()
            || self.loss.kind_for(self.data.task) == LossKind::CosineSimilarity;
        (self.data.task != Task::Embedding || scored).then_some(self.data.label_column.as_str())
    }

    /// Whether the data are images (an image folder or an image column).
    pub fn is_vision(&self) -> bool {
        self.data.format == Format::ImageFolder || self.data.image_column.is_some()
    }

    /// `[data] columns = [text, pair]` as `text_column` and `text_pair`.
    fn resolve_columns(&mut self) -> Result<(), (&'static str, &'static str, String)> {
        let d = &mut self.data;
        // A CoNLL file has no column names: its words are read as the `tokens` column.
        if d.format == Format::Conll && d.text_column.is_empty() && d.columns.is_none() {
            d.text_column = "tokens".into();
        }
        let Some(columns) = d.columns.clone() else {
            return Ok(());
        };
        if !d.text_column.is_empty() || d.text_pair.is_some() {
            return Err((
                "data",
                "columns",
                "names the text columns already given by text_column / text_pair; keep one".into(),
            ));
        }
        if d.negative_column.is_some() && columns.len() == 3 {
            return Err((
                "data",
                "columns",
                "names the negative column already given by negative_column; keep one".into(),
            ));
        }
        match columns.as_slice() {
            [text] => d.text_column = text.clone(),
            [text, pair] => {
                d.text_column = text.clone();
                d.text_pair = Some(pair.clone());
            }
            [anchor, positive, negative] if d.task == Task::Embedding => {
                d.text_column = anchor.clone();
                d.text_pair = Some(positive.clone());
                d.negative_column = Some(negative.clone());
            }
            _ => {
                return Err((
                    "data",
                    "columns",
                    format!(
                        "must name one text column or two (a pair), or for task =                          \"embedding\" three (anchor, positive, negative), not {}",
                        columns.len()
                    ),
                ));
            }
        }
        Ok(())
    }

    /// Embedding training's columns and loss: pairs or triplets of texts (or SetFit's pairs made
    /// from classified texts), the loss that fits them, and no head.
    fn check_embedding(&self) -> Result<(), (&'static str, &'static str, String)> {
        let d = &self.data;
        if d.task != Task::Embedding {
            let only = [
                ("negative_column", d.negative_column.is_some()),
                ("contrastive_pairs", d.contrastive_pairs.is_some()),
                ("score_scale", d.score_scale.is_some()),
            ];
            if let Some((key, _)) = only.into_iter().find(|(_, given)| *given) {
                return Err((
                    "data",
                    key,
                    "is for embedding training (task = \"embedding\")".into(),
                ));
            }
            return Ok(());
        }
        if self.is_vision() {
            return Err((
                "data",
                "task",
                "embedding training is for text encoders (pairs or triplets of texts)".into(),
            ));
        }
        let headless = HeadSection {
            kind: HeadKind::None,
            ..HeadSection::default()
        };
        if self.head != HeadSection::default() && self.head != headless {
            return Err((
                "head",
                "",
                "embedding training tunes the encoder itself and grafts no head: leave out                  [head]"
                    .into(),
            ));
        }
        if d.score_scale.is_some_and(|s| !(s > 0.0 && s.is_finite())) {
            return Err(("data", "score_scale", "must be a positive number".into()));
        }
        let kind = self.loss.kind_for(d.task);
        let texts =
            1 + usize::from(d.text_pair.is_some()) + usize::from(d.negative_column.is_some());
        match d.contrastive_pairs {
            Some(0) => {
                return Err((
                    "data",
                    "contrastive_pairs",
                    "must be at least 1 (SetFit's default is 20)".into(),
                ));
            }
            Some(_) if d.text_pair.is_some() => {
                return Err((
                    "data",
                    "contrastive_pairs",
                    "makes pairs from single classified texts; the data already has a second \
                     text column"
                        .into(),
                ));
            }
            Some(_) if kind != LossKind::CosineSimilarity => {
                return Err((
                    "loss",
                    "kind",
                    "SetFit's pairs are scored 1 (same class) or 0: train them with \
                     \"cosine_similarity\""
                        .into(),
                ));
            }
            Some(_) => return Ok(()),
            None if d.text_pair.is_none() => {
                return Err((
                    "data",
                    "columns",
                    "embedding training reads pairs [anchor, positive] or triplets [anchor, \
                     positive, negative] (or classified texts with contrastive_pairs)"
                        .into(),
                ));
            }
            None => {}
        }
        if d.negative_column
            .as_ref()
            .is_some_and(|n| *n == d.text_column || Some(n) == d.text_pair.as_ref())
        {
            return Err((
                "data",
                "negative_column",
                "is also the anchor or the positive column".into(),
            ));
        }
        match (kind, texts) {
            (LossKind::CosineSimilarity, 3) => Err((
                "loss",
                "kind",
                "cosine_similarity scores pairs of texts; triplets train with \
                 \"multiple_negatives_ranking\" or \"triplet\""
                    .into(),
            )),
            (LossKind::Triplet, 2) => Err((
                "loss",
                "kind",
                "triplet needs each anchor's negative: [data] columns = [anchor, positive, \
                 negative]"
                    .into(),
            )),
            _ => Ok(()),
        }
    }

    /// Keys that belong to the other modality are refused, naming the key.
    fn check_data_kind(&self) -> Result<(), (&'static str, &'static str, String)> {
        let d = &self.data;
        if self.is_vision() {
            let text_only = [
                ("data", "text_column", !d.text_column.is_empty()),
                ("data", "text_pair", d.text_pair.is_some()),
                ("model", "pooling", self.model.pooling.is_some()),
                ("model", "normalize", self.model.normalize.is_some()),
                ("model", "max_length", self.model.max_length.is_some()),
                ("model", "pooler", self.model.pooler.is_some()),
                ("train", "group_by_length", self.train.group_by_length),
            ];
            if let Some((section, key, _)) = text_only.into_iter().find(|(_, _, given)| *given) {
                return Err((
                    section,
                    key,
                    "is for text data; this config reads images (an image folder or \
                     image_column)"
                        .into(),
                ));
            }
            if d.format != Format::ImageFolder && d.image_column.is_none() {
                return Err((
                    "data",
                    "image_column",
                    "CSV/JSONL/parquet image data needs it".into(),
                ));
            }
        } else {
            if d.text_column.is_empty() {
                return Err((
                    "data",
                    "text_column",
                    "is required (or image_column / format = \"image_folder\" for images)".into(),
                ));
            }
            let image_only = [
                ("augment", "", self.augment.is_active()),
                ("freeze", "train_batchnorm", self.freeze.train_batchnorm),
                ("model", "image_size", self.model.image_size.is_some()),
                ("model", "crop_pct", self.model.crop_pct.is_some()),
            ];
            if let Some((section, key, _)) = image_only.into_iter().find(|(_, _, given)| *given) {
                return Err((
                    section,
                    key,
                    "is for image data; this config reads text (text_column)".into(),
                ));
            }
        }
        let tokens = d.task == Task::TokenClassification;
        if d.format == Format::Conll && !tokens {
            return Err((
                "data",
                "task",
                "a CoNLL file holds tagged words: set task = \"token_classification\"".into(),
            ));
        }
        if d.label_all_subwords && !tokens {
            return Err((
                "data",
                "label_all_subwords",
                "is for token classification (task = \"token_classification\")".into(),
            ));
        }
        if tokens && d.text_pair.is_some() {
            return Err((
                "data",
                "text_pair",
                "token classification tags the words of one text, not pairs".into(),
            ));
        }
        self.check_embedding()?;
        if tokens && self.is_vision() {
            return Err((
                "data",
                "task",
                "token classification is for text (words and their tags)".into(),
            ));
        }
        if let Some(pair) = &d.text_pair {
            if *pair == d.text_column {
                return Err((
                    "data",
                    "text_pair",
                    format!("\"{pair}\" is also text_column: a pair takes two columns"),
                ));
            }
            if *pair == d.label_column {
                return Err((
                    "data",
                    "text_pair",
                    format!("\"{pair}\" is also the label column"),
                ));
            }
        }
        let input_column = d.image_column.as_deref().unwrap_or(&d.text_column);
        if !input_column.is_empty() && input_column == d.label_column {
            return Err((
                "data",
                "label_column",
                format!(
                    "\"{}\" is also the input column: the model would be shown its own labels",
                    d.label_column
                ),
            ));
        }
        if let Some([low, high]) = self.augment.crop_scale
            && !(low > 0.0 && low <= high && high <= 1.0)
        {
            return Err((
                "augment",
                "crop_scale",
                "must be [low, high] with 0 < low <= high <= 1".into(),
            ));
        }
        let jitter = [
            ("brightness", self.augment.brightness),
            ("contrast", self.augment.contrast),
            ("saturation", self.augment.saturation),
        ];
        if let Some((key, _)) = jitter.iter().find(|(_, j)| !(0.0..1.0).contains(j)) {
            return Err(("augment", key, "must be in [0, 1)".into()));
        }
        Ok(())
    }

    fn check_training_control(&self) -> Result<(), String> {
        let t = &self.train;
        let f = &self.freeze;
        let task = self.data.task;
        if f.backbone == Some(true) && (f.layers.is_some() || !f.patterns.is_empty()) {
            return Err(
                "[freeze] backbone = true freezes everything; drop it to use layers or patterns"
                    .into(),
            );
        }
        if f.layers == Some(0) {
            return Err(
                "[freeze] layers must be positive (use backbone = false to train it all)".into(),
            );
        }
        for pattern in &f.patterns {
            regex::Regex::new(pattern)
                .map_err(|e| format!("[freeze] patterns: invalid regular expression: {e}"))?;
        }
        let frozen_at_start = f.whole_backbone() || f.layers.is_some() || !f.patterns.is_empty();
        for step in &f.unfreeze {
            if step.epoch < 2 || step.epoch > t.epochs {
                return Err(format!(
                    "[freeze] unfreeze epoch {} must be in 2..={} (epochs)",
                    step.epoch, t.epochs
                ));
            }
            if !frozen_at_start {
                return Err("[freeze] unfreeze needs something frozen at the start".into());
            }
        }
        if f.unfreeze.windows(2).any(|w| w[0].epoch >= w[1].epoch) {
            return Err("[freeze] unfreeze steps must be in increasing epoch order".into());
        }
        let positive = |v: Option<f64>| v.is_none_or(|v| v > 0.0 && v.is_finite());
        if !positive(t.backbone_lr) || !positive(t.clip_grad_norm) {
            return Err("[train] backbone_lr and clip_grad_norm must be positive".into());
        }
        if let Some(decay) = t.layer_decay
            && !(decay > 0.0 && decay <= 1.0)
        {
            return Err(format!(
                "[train] layer_decay must be in (0, 1], found {decay}"
            ));
        }
        if t.warmup_steps.is_some() && t.warmup_ratio.is_some() {
            return Err("[train] give either warmup_steps or warmup_ratio, not both".into());
        }
        if t.warmup_ratio.is_some_and(|r| !(0.0..1.0).contains(&r)) {
            return Err("[train] warmup_ratio must be in [0, 1)".into());
        }
        if t.accumulate == 0 {
            return Err("[train] accumulate must be at least 1".into());
        }
        if t.devices == 0 {
            return Err("[train] devices must be at least 1".into());
        }
        if t.nesterov && (t.optimizer != OptimizerKind::Sgd || t.momentum <= 0.0) {
            return Err("[train] nesterov needs optimizer = \"sgd\" and momentum > 0".into());
        }
        if t.patience == Some(0) {
            return Err("[train] patience must be at least 1".into());
        }
        let logic = task.logic();
        let monitors: Vec<&str> = logic.metrics().iter().map(|m| m.name).collect();
        if !monitors.contains(&t.monitor.as_str()) {
            return Err(format!(
                "[train] monitor = \"{}\" is not a validation metric of {} (one of: {})",
                t.monitor,
                logic.problem_type(),
                monitors.join(", ")
            ));
        }
        let l = &self.loss;
        let kind = l.kind_for(task);
        if !logic.fits(kind) {
            return Err(format!(
                "[loss] kind = {kind:?} does not fit task = \"{}\"",
                logic.problem_type()
            ));
        }
        if !(0.0..1.0).contains(&l.label_smoothing) {
            return Err("[loss] label_smoothing must be in [0, 1)".into());
        }
        if l.label_smoothing > 0.0 && !logic.takes_label_smoothing() {
            let smoothed = Task::ALL
                .iter()
                .filter(|t| t.logic().takes_label_smoothing())
                .map(|t| format!("\"{}\"", t.logic().config_name()));
            return Err(format!(
                "[loss] label_smoothing is for task = {}",
                crate::task::one_of(smoothed)
            ));
        }
        if l.huber_delta.is_nan() || l.huber_delta <= 0.0 {
            return Err("[loss] huber_delta must be positive".into());
        }
        if !(l.scale > 0.0 && l.scale.is_finite()) {
            return Err("[loss] scale must be a positive number".into());
        }
        if !(l.margin >= 0.0 && l.margin.is_finite()) {
            return Err("[loss] margin must be a number >= 0".into());
        }
        match &l.class_weights {
            Some(_) if !logic.takes_class_weights() => {
                return Err("[loss] class_weights are for classification tasks".into());
            }
            Some(ClassWeights::Named(name)) if name != "balanced" => {
                return Err(format!(
                    "[loss] class_weights = \"{name}\": expected \"balanced\" or a list of numbers"
                ));
            }
            Some(ClassWeights::Explicit(w)) if w.iter().any(|&v| !(v >= 0.0 && v.is_finite())) => {
                return Err("[loss] class_weights must be non-negative numbers".into());
            }
            _ => {}
        }
        if !(self.head.threshold > 0.0 && self.head.threshold < 1.0) {
            return Err("[head] threshold must be in (0, 1)".into());
        }
        Ok(())
    }
}

/// The 1-based line of `key` in `[section]` of a TOML text (of the section header for an empty
/// key).
fn line_of(text: &str, section: &str, key: &str) -> Option<usize> {
    let mut current = String::new();
    for (i, line) in text.lines().enumerate() {
        let line = line.trim();
        if let Some(name) = line.strip_prefix('[').and_then(|l| l.strip_suffix(']')) {
            current = name.trim().to_string();
            if current == section && key.is_empty() {
                return Some(i + 1);
            }
            continue;
        }
        let assigned = line
            .split_once('=')
            .map(|(k, _)| k.trim().trim_matches('"'));
        if current == section && !key.is_empty() && assigned == Some(key) {
            return Some(i + 1);
        }
    }
    None
}

#[cfg(test)]
mod tests {
    use super::*;

    const MINIMAL: &str = r#"
[model]
backbone = "models/m"

[data]
format = "csv"
train = "t.csv"
text_column = "review"
label_column = "score"

[output]
dir = "runs/x"
"#;

    #[test]
    fn lora_trains_the_adapters_unless_freeze_says_otherwise() {
        let config = Config::parse(&format!("{MINIMAL}\n[lora]\n"), Path::new("c.toml")).unwrap();
        let lora = config.lora.as_ref().unwrap();
        assert_eq!((lora.r, lora.alpha, lora.bias.as_str()), (8, 8.0, "none"));
        assert_eq!(config.freeze.backbone, Some(false));
        assert!(!config.freeze.always_frozen());
        let layers = format!("{MINIMAL}\n[lora]\n[freeze]\nlayers = 2\n");
        let config = Config::parse(&layers, Path::new("c.toml")).unwrap();
        assert_eq!(config.freeze.backbone, None);
        let frozen = format!("{MINIMAL}\n[lora]\n[freeze]\nbackbone = true\n");
        let error = Config::parse(&frozen, Path::new("c.toml")).unwrap_err();
        assert!(error.to_string().contains("never train"), "{error}");
    }

    #[test]
    fn minimal_config_gets_defaults() {
        let config = Config::parse(MINIMAL, Path::new("c.toml")).unwrap();
        assert_eq!(config.train.epochs, 10);
        assert_eq!(config.train.optimizer, OptimizerKind::Adamw);
        assert_eq!(config.head.kind, HeadKind::Linear);
        assert!(config.freeze.always_frozen());
        assert_eq!(config.model.pooling, None);
    }

    #[test]
    fn unknown_key_names_the_key_and_line() {
        let text = MINIMAL.replace(
            "label_column = \"score\"",
            "label_column = \"score\"\nlable = 3",
        );
        let error = Config::parse(&text, Path::new("c.toml"))
            .unwrap_err()
            .to_string();
        assert!(error.contains("c.toml"), "{error}");
        assert!(error.contains("unknown field `lable`"), "{error}");
        assert!(error.contains("line 10"), "{error}");
    }

    #[test]
    fn keys_of_the_other_modality_name_key_and_line() {
        let text = MINIMAL.replace(
            "dir = \"runs/x\"",
            "dir = \"runs/x\"\n\n[augment]\nhorizontal_flip = true",
        );
        let error = Config::parse(&text, Path::new("c.toml"))
            .unwrap_err()
            .to_string();
        assert!(error.contains("c.toml: line 14: [augment]"), "{error}");
        let vision = MINIMAL
            .replace("text_column = \"review\"", "image_column = \"path\"")
            .replace(
                "backbone = \"models/m\"",
                "backbone = \"models/m\"\npooling = \"cls\"",
            );
        let error = Config::parse(&vision, Path::new("v.toml"))
            .unwrap_err()
            .to_string();
        assert!(
            error.contains("v.toml: line 4: [model] pooling: is for text data"),
            "{error}"
        );
        let vision = MINIMAL.replace(
            "text_column = \"review\"",
            "text_column = \"review\"\nimage_column = \"p\"",
        );
        let error = Config::parse(&vision, Path::new("v.toml"))
            .unwrap_err()
            .to_string();
        assert!(error.contains("line 8: [data] text_column"), "{error}");
    }

    #[test]
    fn bad_values_are_refused() {
        let text = MINIMAL.replace("[output]", "[train]\nlr = -1.0\n\n[output]");
        let error = Config::parse(&text, Path::new("c.toml"))
            .unwrap_err()
            .to_string();
        assert!(error.contains("lr must be a positive number"), "{error}");
        let text = MINIMAL.replace("[output]", "[head]\nkind = \"mlp\"\n\n[output]");
        assert!(Config::parse(&text, Path::new("c.toml")).is_err());
        let text = MINIMAL.replace(
            "backbone = \"models/m\"",
            "backbone = \"models/m\"\npooling = \"avg\"",
        );
        let error = Config::parse(&text, Path::new("c.toml"))
            .unwrap_err()
            .to_string();
        assert!(error.contains("unknown variant `avg`"), "{error}");
    }
}

#[cfg(test)]
mod shipped_configs {
    use super::*;

    /// Every config under `configs/` parses and passes the checks that need no files.
    #[test]
    fn every_shipped_config_parses() {
        let dir = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("../../configs");
        let mut seen = 0;
        for entry in std::fs::read_dir(&dir).unwrap() {
            let path = entry.unwrap().path();
            if path.extension().is_some_and(|e| e == "toml") {
                let text = std::fs::read_to_string(&path).unwrap();
                Config::parse(&text, &path).unwrap_or_else(|e| panic!("{}: {e}", path.display()));
                seen += 1;
            }
        }
        assert!(seen >= 6, "{seen} configs");
    }
}

fn is_default<T: Default + PartialEq>(value: &T) -> bool {
    *value == T::default()
}
