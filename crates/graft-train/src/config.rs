//! The TOML run config: its schema (unknown keys are errors that name the key and line), defaults,
//! and checks. Relative paths are taken from the current directory.

use std::path::{Path, PathBuf};

use graft_model::Pooling;
use serde::{Deserialize, Serialize};

use crate::TrainError;

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
    pub output: OutputSection,
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
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Format {
    Csv,
    Jsonl,
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
    pub text_column: String,
    pub label_column: String,
    /// A file fixing the class order (JSON array or one label per line); default: sorted labels.
    pub labels: Option<PathBuf>,
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
        }
    }
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct FreezeSection {
    /// Freeze the whole backbone (weights, dropout and any normalization statistics).
    #[serde(default = "yes")]
    pub backbone: bool,
}

fn yes() -> bool {
    true
}

impl Default for FreezeSection {
    fn default() -> Self {
        Self { backbone: true }
    }
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
            seed: default_seed(),
            backend: Backend::Auto,
            cache: CacheMode::Auto,
            cache_dir: None,
        }
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
        let config: Self = toml::from_str(text).map_err(|e| TrainError::Config {
            path: origin.to_path_buf(),
            message: e.to_string().trim_end().to_string(),
        })?;
        config.check().map_err(|message| TrainError::Config {
            path: origin.to_path_buf(),
            message,
        })?;
        Ok(config)
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
        Ok(())
    }
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
        assert!(config.freeze.backbone);
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
