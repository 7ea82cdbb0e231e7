//! Opening a model folder and detecting what it holds. This is the one place that reads a folder
//! before an architecture does: `config.json` (a transformers `model_type`/`architectures`, graft's
//! vision config, or a timm config with `architecture` and `pretrained_cfg`) picks the registered
//! architecture, and sentence-transformers files (`modules.json`, `1_Pooling/config.json`,
//! `sentence_bert_config.json`) give the default pooling, normalization and max length.

use std::path::{Path, PathBuf};

use serde_json::Value;

use crate::backbone::{ArchitectureId, Preprocessing};
use crate::{ModelError, Pooling, WeightsIndex};

/// What a sentence-transformers folder says about how it embeds texts.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct SentenceTransformerDefaults {
    pub pooling: Option<Pooling>,
    pub normalize: bool,
    pub max_seq_length: Option<usize>,
}

/// A model folder: `config.json`, `model.safetensors` and, for text, `tokenizer.json`.
#[derive(Debug, Clone)]
pub struct ModelFolder {
    pub dir: PathBuf,
    pub architecture: ArchitectureId,
    /// `config.json` as read.
    pub config: Value,
    pub sentence_transformers: Option<SentenceTransformerDefaults>,
    /// The weights file to load: `model.safetensors`, or the gathered copy of the folder's
    /// shards or `pytorch_model.bin` (see [`crate::shards`]).
    pub weights: PathBuf,
}

impl ModelFolder {
    /// Opens `dir` and detects its architecture; a missing folder or `config.json` is an error.
    pub fn open(dir: &Path) -> Result<Self, ModelError> {
        let resolved = crate::hub::resolve(dir)?;
        let dir = resolved.as_path();
        if !dir.exists() {
            return Err(ModelError::NotFound {
                path: dir.to_path_buf(),
            });
        }
        if !dir.is_dir() {
            return Err(ModelError::MissingFile {
                path: dir.to_path_buf(),
                what: "model folder (this is a file)",
            });
        }
        let config_path = dir.join("config.json");
        let config = read_json(&config_path, "config.json")?;
        let architecture =
            ArchitectureId::detect(&config).ok_or_else(|| ModelError::UnsupportedArchitecture {
                path: config_path.clone(),
                found: describe(&config),
            })?;
        let sentence_transformers = read_sentence_transformers(dir)?;
        Ok(Self {
            dir: dir.to_path_buf(),
            architecture,
            config,
            sentence_transformers,
            weights: crate::shards::weights_file(dir)?,
        })
    }

    /// The preprocessing the folder's architecture and config ask for.
    pub fn preprocessing(&self) -> Result<Preprocessing, ModelError> {
        self.architecture.preprocessing(self)
    }

    /// The family's own sequence-classification head, if graft can build it.
    pub fn native_head(&self) -> Result<Option<crate::NativeHead>, ModelError> {
        self.architecture.native_head(self)
    }

    pub fn config_path(&self) -> PathBuf {
        self.dir.join("config.json")
    }

    pub fn weights_path(&self) -> PathBuf {
        self.weights.clone()
    }

    pub fn tokenizer_path(&self) -> PathBuf {
        self.dir.join("tokenizer.json")
    }

    pub fn weights_index(&self) -> Result<WeightsIndex, ModelError> {
        WeightsIndex::read(&self.weights_path())
    }
}

pub(crate) fn read_json(path: &Path, what: &'static str) -> Result<Value, ModelError> {
    if !path.is_file() {
        return Err(ModelError::MissingFile {
            path: path.to_path_buf(),
            what,
        });
    }
    let text = std::fs::read_to_string(path).map_err(|source| ModelError::Io {
        path: path.to_path_buf(),
        source,
    })?;
    serde_json::from_str(&text).map_err(|e| ModelError::Config {
        path: path.to_path_buf(),
        message: e.to_string(),
    })
}

fn describe(config: &Value) -> String {
    let field = |key: &str| config.get(key).and_then(Value::as_str);
    let found = match (field("model_type"), field("architecture")) {
        (Some(t), _) => format!("model_type \"{t}\""),
        (None, Some(a)) => format!("architecture \"{a}\""),
        (None, None) => "no model_type or architecture".into(),
    };
    format!("{found} (supported: {})", ArchitectureId::names())
}

fn read_sentence_transformers(
    dir: &Path,
) -> Result<Option<SentenceTransformerDefaults>, ModelError> {
    let modules_path = dir.join("modules.json");
    if !modules_path.is_file() {
        return Ok(None);
    }
    let modules = read_json(&modules_path, "modules.json")?;
    let modules = modules.as_array().cloned().unwrap_or_default();
    let module_of = |suffix: &str| {
        modules.iter().find(|m| {
            m.get("type")
                .and_then(Value::as_str)
                .is_some_and(|t| t.ends_with(suffix))
        })
    };
    let mut defaults = SentenceTransformerDefaults {
        normalize: module_of(".Normalize").is_some(),
        ..Default::default()
    };
    if let Some(pooling) = module_of(".Pooling") {
        let sub = pooling.get("path").and_then(Value::as_str).unwrap_or("");
        let path = dir.join(sub).join("config.json");
        let config = read_json(&path, "pooling config")?;
        let flag = |key: &str| config.get(key).and_then(Value::as_bool).unwrap_or(false);
        defaults.pooling = if flag("pooling_mode_mean_tokens") {
            Some(Pooling::Mean)
        } else if flag("pooling_mode_cls_token") {
            Some(Pooling::Cls)
        } else if flag("pooling_mode_max_tokens") {
            Some(Pooling::Max)
        } else {
            return Err(ModelError::Config {
                path,
                message: "no supported pooling mode (mean, cls or max) is enabled".into(),
            });
        };
    }
    let st_config = dir.join("sentence_bert_config.json");
    if st_config.is_file() {
        let config = read_json(&st_config, "sentence_bert_config.json")?;
        defaults.max_seq_length = config
            .get("max_seq_length")
            .and_then(Value::as_u64)
            .map(|n| n as usize);
    }
    Ok(Some(defaults))
}
