//! The TOML run config: its schema (unknown keys are errors that name the key and line), defaults,
//! and checks. Relative paths are taken from the current directory.

use std::path::{Path, PathBuf};

use graft_model::Pooling;
use serde::{Deserialize, Serialize};

use crate::error::TrainError;
pub use crate::loss::LossKind;
pub use crate::task::Task;

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
    pub output: OutputSection,
    /// The file the config was read from, named in errors about it.
    #[serde(skip)]
    pub source: PathBuf,
    /// Its text, to find the line of a key.
    #[serde(skip)]
    pub text: String,
}

/// Random image transforms while training, drawn from the run's seed (vision models).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, Default)]
#[serde(deny_unknown_fields)]
pub struct AugmentSection {
    /// Random resized crop: the range of the crop's area fraction, e.g. `[0.08, 1.0]`.
    pub crop_scale: Option<[f64; 2]>,
    #[serde(default)]
    pub horizontal_flip: bool,
    /// Colour jitter: each factor is drawn from `[1 - s, 1 + s]`.
    #[serde(default)]
    pub brightness: f32,
    #[serde(default)]
    pub contrast: f32,
    #[serde(default)]
    pub saturation: f32,
}

impl AugmentSection {
    pub fn is_active(&self) -> bool {
        self.crop_scale.is_some()
            || self.horizontal_flip
            || self.brightness > 0.0
            || self.contrast > 0.0
            || self.saturation > 0.0
    }
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ModelSection {
    /// A Hugging Face model folder.
    pub backbone: PathBuf,
    /// Defaults to the folder's sentence-transformers pooling, else mean.
    pub pooling: Option<Pooling>,
    /// L2-normalize the pooled features; defaults to the folder's sentence-transformers setting.
    pub normalize: Option<bool>,
    /// Defaults to the folder's `max_seq_length`, else the model's maximum positions.
    pub max_length: Option<usize>,
    /// With `pooling = "cls"`: use the pretrained pooler (dense + tanh). Defaults to true when the
    /// checkpoint has one, as `BertForSequenceClassification`.
    pub pooler: Option<bool>,
    /// Vision: the input size (default: the model folder's `image_size`).
    pub image_size: Option<usize>,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Format {
    Csv,
    Jsonl,
    /// `train`/`valid`/`test` are folders of `<class>/<image>` (vision).
    #[serde(rename = "image_folder")]
    ImageFolder,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct DataSection {
    pub format: Format,
    pub train: PathBuf,
    pub test: Option<PathBuf>,
    /// A validation file; otherwise `valid_fraction` of train is held out.
    pub valid: Option<PathBuf>,
    pub valid_fraction: Option<f64>,
    /// Text models: the column with the text.
    #[serde(default)]
    pub text_column: String,
    /// Vision models with CSV/JSONL data: the column with the image path (relative to the file).
    pub image_column: Option<String>,
    #[serde(default = "default_label_column")]
    pub label_column: String,
    /// A file fixing the class order (JSON array or one label per line); default: sorted labels.
    pub labels: Option<PathBuf>,
    #[serde(default)]
    pub task: Task,
    /// Multi-label: what separates labels in a field (`a|b`); a JSON array also works.
    #[serde(default = "default_separator")]
    pub label_separator: String,
    /// Regression: train on standardized targets (the model still predicts raw values).
    #[serde(default = "yes")]
    pub standardize: bool,
}

fn default_label_column() -> String {
    "label".into()
}

fn default_separator() -> String {
    "|".into()
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, Default)]
#[serde(rename_all = "lowercase")]
pub enum HeadKind {
    #[default]
    Linear,
    Mlp,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct HeadSection {
    #[serde(default)]
    pub kind: HeadKind,
    /// Hidden layer widths of an MLP head.
    #[serde(default)]
    pub hidden: Vec<usize>,
    /// Dropout before each layer of the head, during training.
    #[serde(default = "default_head_dropout")]
    pub dropout: f64,
    /// Multi-label: a label is predicted when its probability reaches this.
    #[serde(default = "default_threshold")]
    pub threshold: f64,
}

fn default_threshold() -> f64 {
    0.5
}

fn default_head_dropout() -> f64 {
    0.1
}

impl Default for HeadSection {
    fn default() -> Self {
        Self {
            kind: HeadKind::Linear,
            hidden: Vec::new(),
            dropout: default_head_dropout(),
            threshold: default_threshold(),
        }
    }
}

/// What of the backbone is frozen (no gradients, no weight decay, dropout and normalization
/// statistics as in inference) and when parts of it thaw.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, Default)]
#[serde(deny_unknown_fields)]
pub struct FreezeSection {
    /// Freeze the whole backbone. The default when neither `layers` nor `patterns` is given.
    pub backbone: Option<bool>,
    /// Freeze the first N blocks: for BERT the embeddings count as a block, so `layers = 4` is
    /// the embeddings plus encoder layers 0 to 2.
    pub layers: Option<usize>,
    /// Freeze tensors whose upstream name (as `graft inspect` shows it) fully matches one of these
    /// regular expressions, e.g. `"encoder\\.layer\\.[0-3]\\..*"`.
    #[serde(default)]
    pub patterns: Vec<String>,
    /// Gradual unfreezing: at the start of `epoch`, make `layers` trainable ("all", or "last:N"
    /// for the last N blocks).
    #[serde(default)]
    pub unfreeze: Vec<UnfreezeStep>,
    /// Vision: keep BatchNorm layers training (weights and running statistics) inside frozen
    /// blocks, as fastai does by default. Off: frozen BatchNorm uses its running statistics
    /// unchanged.
    #[serde(default)]
    pub train_batchnorm: bool,
}

impl FreezeSection {
    /// Whether the whole backbone is frozen at the start.
    pub fn whole_backbone(&self) -> bool {
        self.backbone
            .unwrap_or(self.layers.is_none() && self.patterns.is_empty())
    }

    /// Whether the whole backbone stays frozen for the whole run.
    pub fn always_frozen(&self) -> bool {
        self.whole_backbone() && self.unfreeze.is_empty() && !self.train_batchnorm
    }
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct UnfreezeStep {
    /// 1-based epoch at whose start the blocks become trainable.
    pub epoch: usize,
    pub layers: BlockSelection,
}

/// Which backbone blocks an unfreeze step thaws.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum BlockSelection {
    All,
    Last(usize),
}

impl std::str::FromStr for BlockSelection {
    type Err = String;

    fn from_str(s: &str) -> Result<Self, Self::Err> {
        if s == "all" {
            return Ok(Self::All);
        }
        s.strip_prefix("last:")
            .and_then(|n| n.parse().ok())
            .filter(|&n: &usize| n > 0)
            .map(Self::Last)
            .ok_or_else(|| format!("layers = \"{s}\": expected \"all\" or \"last:N\" with N > 0"))
    }
}

impl std::fmt::Display for BlockSelection {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Self::All => write!(f, "all"),
            Self::Last(n) => write!(f, "last:{n}"),
        }
    }
}

impl Serialize for BlockSelection {
    fn serialize<S: serde::Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
        serializer.serialize_str(&self.to_string())
    }
}

impl<'de> Deserialize<'de> for BlockSelection {
    fn deserialize<D: serde::Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        let text = String::deserialize(deserializer)?;
        text.parse().map_err(serde::de::Error::custom)
    }
}

fn yes() -> bool {
    true
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum OptimizerKind {
    Adamw,
    Adam,
    Sgd,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, Default)]
#[serde(rename_all = "lowercase")]
pub enum Backend {
    #[default]
    Auto,
    Wgpu,
    Flex,
    Ndarray,
}

impl std::str::FromStr for Backend {
    type Err = String;

    fn from_str(s: &str) -> Result<Self, Self::Err> {
        match s {
            "auto" => Ok(Self::Auto),
            "wgpu" => Ok(Self::Wgpu),
            "flex" => Ok(Self::Flex),
            "ndarray" => Ok(Self::Ndarray),
            other => Err(format!(
                "unknown backend \"{other}\" (expected auto, wgpu, flex or ndarray)"
            )),
        }
    }
}

/// Whether a frozen backbone's features are computed once, stored on disk, and reused for every
/// epoch and every later run with the same backbone, settings and texts.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, Default)]
#[serde(rename_all = "lowercase")]
pub enum CacheMode {
    /// On when the whole backbone is frozen; off (with a message) when it trains.
    #[default]
    Auto,
    /// Run the backbone for every batch of every epoch.
    Off,
    /// Recompute the features and overwrite what the cache holds for them.
    Rebuild,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct TrainSection {
    #[serde(default = "default_epochs")]
    pub epochs: usize,
    #[serde(default = "default_batch_size")]
    pub batch_size: usize,
    /// Batch size for embedding and evaluation (no gradients).
    #[serde(default = "default_eval_batch_size")]
    pub eval_batch_size: usize,
    #[serde(default = "default_lr")]
    pub lr: f64,
    #[serde(default = "default_optimizer")]
    pub optimizer: OptimizerKind,
    #[serde(default = "default_weight_decay")]
    pub weight_decay: f64,
    /// SGD momentum.
    #[serde(default)]
    pub momentum: f64,
    /// SGD: Nesterov momentum.
    #[serde(default)]
    pub nesterov: bool,
    /// Apply weight decay to biases and normalization weights too (off by default, as in
    /// transformers and timm).
    #[serde(default)]
    pub decay_norm_and_bias: bool,
    /// Learning rate of the trainable backbone tensors (default: `lr`).
    pub backbone_lr: Option<f64>,
    /// timm's layer-wise decay: block i of n gets `lr * layer_decay^(n - i)`, the head `lr`;
    /// with `backbone_lr` too, `backbone_lr * layer_decay^(n - 1 - i)`.
    pub layer_decay: Option<f64>,
    #[serde(default)]
    pub schedule: Schedule,
    /// Linear warmup from 0, in optimizer steps, or as a fraction of all steps.
    pub warmup_steps: Option<usize>,
    pub warmup_ratio: Option<f64>,
    /// Clip gradients to this global L2 norm (PyTorch's `clip_grad_norm_`).
    pub clip_grad_norm: Option<f64>,
    /// Batch texts of similar length together while training (shuffled windows of 50 batches,
    /// each sorted by length): less padding, faster epochs.
    #[serde(default)]
    pub group_by_length: bool,
    /// Micro-batches whose mean gradient makes one optimizer step.
    #[serde(default = "default_accumulate")]
    pub accumulate: usize,
    /// The validation metric that picks the best epoch (and drives early stopping): `valid_loss`
    /// (the default), or a metric of the task such as `valid_accuracy`, `valid_macro_f1`,
    /// `valid_micro_f1`, `valid_hamming`, `valid_mae`, `valid_rmse` or `valid_r2`.
    #[serde(default = "default_monitor")]
    pub monitor: String,
    /// Stop when the monitored metric has not improved for this many epochs.
    pub patience: Option<usize>,
    /// The least change that counts as an improvement.
    #[serde(default)]
    pub min_delta: f64,
    /// Write a checkpoint after every epoch (needed for `--resume`).
    #[serde(default = "yes")]
    pub checkpoints: bool,
    #[serde(default = "default_seed")]
    pub seed: u64,
    #[serde(default)]
    pub backend: Backend,
    #[serde(default)]
    pub cache: CacheMode,
    /// Where the feature cache lives (default: `$GRAFT_CACHE_DIR`, else `~/.cache/graft`).
    #[serde(default)]
    pub cache_dir: Option<PathBuf>,
}

fn default_epochs() -> usize {
    10
}
fn default_accumulate() -> usize {
    1
}
fn default_monitor() -> String {
    "valid_loss".into()
}
fn default_batch_size() -> usize {
    32
}
fn default_eval_batch_size() -> usize {
    32
}
fn default_lr() -> f64 {
    1e-3
}
fn default_optimizer() -> OptimizerKind {
    OptimizerKind::Adamw
}
fn default_weight_decay() -> f64 {
    0.01
}
fn default_seed() -> u64 {
    42
}

impl Default for TrainSection {
    fn default() -> Self {
        Self {
            epochs: default_epochs(),
            batch_size: default_batch_size(),
            eval_batch_size: default_eval_batch_size(),
            lr: default_lr(),
            optimizer: default_optimizer(),
            weight_decay: default_weight_decay(),
            momentum: 0.0,
            nesterov: false,
            decay_norm_and_bias: false,
            backbone_lr: None,
            layer_decay: None,
            schedule: Schedule::Constant,
            warmup_steps: None,
            warmup_ratio: None,
            clip_grad_norm: None,
            group_by_length: false,
            accumulate: 1,
            monitor: default_monitor(),
            patience: None,
            min_delta: 0.0,
            checkpoints: true,
            seed: default_seed(),
            backend: Backend::Auto,
            cache: CacheMode::Auto,
            cache_dir: None,
        }
    }
}

/// How the learning rate moves over the optimizer steps (after any warmup).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, Default)]
#[serde(rename_all = "snake_case")]
pub enum Schedule {
    #[default]
    Constant,
    /// Linear decay to 0 (transformers' `get_linear_schedule_with_warmup`).
    Linear,
    /// Half-cosine decay to 0 (transformers' `get_cosine_schedule_with_warmup`).
    Cosine,
    /// PyTorch's `OneCycleLR` (cosine, `pct_start` = `warmup_ratio` or 0.3, div 25, final div 1e4).
    OneCycle,
}

/// Per-class loss weights: `"balanced"` (n / (classes * count), scikit-learn's) or one per class.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(untagged)]
pub enum ClassWeights {
    Named(String),
    Explicit(Vec<f64>),
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct LossSection {
    /// Default: cross_entropy, bce or mse by task.
    pub kind: Option<LossKind>,
    /// Huber's delta.
    #[serde(default = "default_huber_delta")]
    pub huber_delta: f64,
    /// Classification: PyTorch's `label_smoothing`.
    #[serde(default)]
    pub label_smoothing: f64,
    /// Classification: weights per class. Multi-label: `"balanced"` sets BCE's `pos_weight` to
    /// negatives/positives per label; a list weights each label's loss.
    pub class_weights: Option<ClassWeights>,
}

fn default_huber_delta() -> f64 {
    1.0
}

impl Default for LossSection {
    fn default() -> Self {
        Self {
            kind: None,
            huber_delta: default_huber_delta(),
            label_smoothing: 0.0,
            class_weights: None,
        }
    }
}

impl LossSection {
    pub fn kind_for(&self, task: Task) -> LossKind {
        self.kind.unwrap_or(task.default_loss())
    }
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct OutputSection {
    pub dir: PathBuf,
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
        config
            .check_data_kind()
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
            (HeadKind::Linear, false) => {
                return Err("[head] hidden is only for kind = \"mlp\"".into());
            }
            _ => {}
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
        self.check_training_control()
    }

    /// Whether the data are images (an image folder or an image column).
    pub fn is_vision(&self) -> bool {
        self.data.format == Format::ImageFolder || self.data.image_column.is_some()
    }

    /// Keys that belong to the other modality are refused, naming the key.
    fn check_data_kind(&self) -> Result<(), (&'static str, &'static str, String)> {
        let d = &self.data;
        if self.is_vision() {
            let text_only = [
                ("data", "text_column", !d.text_column.is_empty()),
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
                    "CSV/JSONL image data needs it".into(),
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
            ];
            if let Some((section, key, _)) = image_only.into_iter().find(|(_, _, given)| *given) {
                return Err((
                    section,
                    key,
                    "is for image data; this config reads text (text_column)".into(),
                ));
            }
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
        if t.nesterov && (t.optimizer != OptimizerKind::Sgd || t.momentum <= 0.0) {
            return Err("[train] nesterov needs optimizer = \"sgd\" and momentum > 0".into());
        }
        if t.patience == Some(0) {
            return Err("[train] patience must be at least 1".into());
        }
        if !task.monitors().contains(&t.monitor.as_str()) {
            return Err(format!(
                "[train] monitor = \"{}\" is not a validation metric of {} (one of: {})",
                t.monitor,
                task.name(),
                task.monitors().join(", ")
            ));
        }
        let l = &self.loss;
        let kind = l.kind_for(task);
        if !task.fits(kind) {
            return Err(format!(
                "[loss] kind = {kind:?} does not fit task = \"{}\"",
                task.name()
            ));
        }
        if !(0.0..1.0).contains(&l.label_smoothing) {
            return Err("[loss] label_smoothing must be in [0, 1)".into());
        }
        if l.label_smoothing > 0.0 && task != Task::Classification {
            return Err("[loss] label_smoothing is for task = \"classification\"".into());
        }
        if l.huber_delta.is_nan() || l.huber_delta <= 0.0 {
            return Err("[loss] huber_delta must be positive".into());
        }
        match &l.class_weights {
            Some(_) if task == Task::Regression => {
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
