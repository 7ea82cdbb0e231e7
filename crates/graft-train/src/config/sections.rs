//! The sections of the TOML run config: their keys, defaults (as transformers, timm and PyTorch
//! have them) and documentation. The parent module parses and checks the whole.

use std::path::PathBuf;

use graft_model::Pooling;
use serde::{Deserialize, Serialize};

use super::{LossKind, Task};

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
    /// Vision: the input size (default: the model folder's `image_size`). At another size the
    /// resize keeps the folder's crop share, as timm and transformers do.
    pub image_size: Option<usize>,
    /// Vision: the share of the resized image the center crop keeps (timm's `crop_pct`;
    /// default: the folder's).
    pub crop_pct: Option<f64>,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Format {
    Csv,
    Jsonl,
    /// Apache Parquet, as Hugging Face datasets publishes data; an image column may hold the
    /// encoded images themselves (binary, or datasets' `Image` struct).
    Parquet,
    /// `train`/`valid`/`test` are folders of `<class>/<image>` (vision).
    #[serde(rename = "image_folder")]
    ImageFolder,
    /// Token-tagged sentences, one `word ... tag` line per token, blank lines between sentences
    /// (CoNLL-2003, WNUT): token classification.
    Conll,
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
    /// Pairs of texts (NLI, paraphrase, STS, re-ranking): the column with the second text,
    /// encoded with the first as one input, as a cross-encoder reads them.
    pub text_pair: Option<String>,
    /// `[first, second]`: the text and pair columns in one key (or `[text]`); embedding
    /// training also takes `[anchor, positive, negative]`.
    pub columns: Option<Vec<String>>,
    /// Embedding training on triplets: the column of each anchor's negative (a hard negative).
    pub negative_column: Option<String>,
    /// Embedding training from classified texts, as SetFit does (its `num_iterations`): this
    /// many pairs of one class (score 1) and as many of two classes (score 0) per text, drawn
    /// from every pair of texts, for `[loss] kind = "cosine_similarity"`.
    pub contrastive_pairs: Option<usize>,
    /// Embedding training on scored pairs: what the scores are multiplied by before the loss
    /// compares them with cosine similarities (STS-B's 0 to 5: 0.2).
    pub score_scale: Option<f64>,
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
    /// What a bad row (an empty text, an empty or unknown label) does: stop the run naming it
    /// (the default), or be skipped and counted.
    #[serde(default)]
    pub bad_rows: BadRows,
    /// Token classification: every token of a word carries its tag (a `B-` tag as `I-` after
    /// the first), not only the first (transformers' `label_all_tokens`). Predictions and scores
    /// read each word's first token either way.
    #[serde(default)]
    pub label_all_subwords: bool,
}

/// What to do with a row that cannot be trained or evaluated on as it is.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, Default)]
#[serde(rename_all = "lowercase")]
pub enum BadRows {
    /// Stop with an error naming the file and line.
    #[default]
    Error,
    /// Leave the row out; the run says how many rows of each file it skipped, and where.
    Skip,
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
    /// The family's own sequence-classification head, as transformers'
    /// `<Family>ForSequenceClassification` has it (text families).
    Native,
    /// No head: embedding training's runs, whose outputs are the encoder's embeddings.
    None,
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

/// The float type a model computes in (its weights stay f32 where it trains).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, Default)]
#[serde(rename_all = "lowercase")]
pub enum Precision {
    #[default]
    F32,
    F16,
    Bf16,
}

impl std::str::FromStr for Precision {
    type Err = String;

    fn from_str(s: &str) -> Result<Self, Self::Err> {
        match s {
            "f32" => Ok(Self::F32),
            "f16" => Ok(Self::F16),
            "bf16" => Ok(Self::Bf16),
            other => Err(format!(
                "unknown precision \"{other}\" (expected f32, f16 or bf16)"
            )),
        }
    }
}

impl std::fmt::Display for Precision {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(match self {
            Self::F32 => "f32",
            Self::F16 => "f16",
            Self::Bf16 => "bf16",
        })
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
    /// The float type of the forward and backward passes: `f32`, or `f16`/`bf16` with f32
    /// master weights (and dynamic loss scaling for `f16`), as PyTorch's autocast does.
    #[serde(default)]
    pub precision: Precision,
    /// Devices each batch is split over (data parallel): gradients are summed on the first.
    #[serde(default = "one")]
    pub devices: usize,
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
fn one() -> usize {
    1
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
            precision: Precision::F32,
            devices: 1,
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
    /// Embedding training, multiple_negatives_ranking: the similarities' scale (1/temperature).
    #[serde(default = "default_scale")]
    pub scale: f64,
    /// Embedding training, triplet: the margin between the distances to the positive and to
    /// the negative.
    #[serde(default = "default_margin")]
    pub margin: f64,
}

fn default_huber_delta() -> f64 {
    1.0
}

fn default_scale() -> f64 {
    20.0
}

fn default_margin() -> f64 {
    5.0
}

impl Default for LossSection {
    fn default() -> Self {
        Self {
            kind: None,
            huber_delta: default_huber_delta(),
            label_smoothing: 0.0,
            class_weights: None,
            scale: default_scale(),
            margin: default_margin(),
        }
    }
}

impl LossSection {
    pub fn kind_for(&self, task: Task) -> LossKind {
        self.kind.unwrap_or(task.logic().default_loss())
    }
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct OutputSection {
    pub dir: PathBuf,
}

/// Experiment tracking, off unless asked for.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, Default)]
#[serde(deny_unknown_fields)]
pub struct TrackSection {
    /// An MLflow tracking server (`http://host:5000`); default: `MLFLOW_TRACKING_URI` when it is
    /// an http(s) address.
    pub mlflow: Option<String>,
    /// The MLflow experiment (created when missing); default: `MLFLOW_EXPERIMENT_NAME`, else
    /// MLflow's `Default`.
    pub experiment: Option<String>,
    /// The run's name; default: the output folder's name.
    pub run_name: Option<String>,
}

/// LoRA adapters on the backbone's linear layers (PEFT's `LoraConfig`): the backbone stays frozen,
/// each targeted weight W gains a trainable `(alpha / r)·B·A`, and the head trains as PEFT's
/// `modules_to_save`. `[freeze]` then selects among the adapters (by block or name).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct LoraSection {
    /// The rank of A `[r, in]` and B `[out, r]`.
    #[serde(default = "default_lora_r")]
    pub r: usize,
    /// The scale numerator: the update is `(alpha / r)·B·A`.
    #[serde(default = "default_lora_alpha")]
    pub alpha: f64,
    /// Dropout on the adapters' input while training (PEFT's `lora_dropout`): each adapted layer
    /// computes `W·x + B·A·dropout(x)·alpha/r`.
    #[serde(default)]
    pub dropout: f64,
    /// Which linear layers get adapters, as PEFT matches them: a plain name matches a module
    /// whose upstream name ends in `.name` (`query`, `value`, `dense`); anything else is a regular
    /// expression that must match the whole module name (`encoder\.layer\.[3-5]\..*\.query`).
    /// Defaults to PEFT's choice for the architecture (BERT: `query`, `value`).
    #[serde(default)]
    pub target_modules: Vec<String>,
    /// Which biases train: only "none" (PEFT's default) is supported.
    #[serde(default = "default_lora_bias")]
    pub bias: String,
    /// Start from this PEFT LoRA adapter folder (`adapter_config.json` and
    /// `adapter_model.safetensors`) instead of new adapters; r, alpha and the targets are its own.
    pub adapter: Option<PathBuf>,
}

fn default_lora_r() -> usize {
    8
}

fn default_lora_alpha() -> f64 {
    8.0
}

fn default_lora_bias() -> String {
    "none".into()
}

impl LoraSection {
    /// The section that takes everything from a PEFT adapter folder.
    pub fn from_adapter(dir: PathBuf) -> Self {
        Self {
            r: default_lora_r(),
            alpha: default_lora_alpha(),
            dropout: 0.0,
            target_modules: Vec::new(),
            bias: default_lora_bias(),
            adapter: Some(dir),
        }
    }
}
