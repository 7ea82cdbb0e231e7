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
        // A Google BERT release opens as the transformers folder it converts to.
        let resolved = crate::google_release::resolve(&resolved)?;
        // So does a Keras Applications model's weight file.
        let resolved = crate::keras_applications::resolve(&resolved)?;
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
        let weights = crate::shards::weights_file(dir)?;
        // Unreadable weights are reported by the loader, naming the weights file.
        if let Ok(index) = WeightsIndex::read(&weights) {
            check_config_sizes(&config_path, &config, &index)?;
        }
        Ok(Self {
            dir: dir.to_path_buf(),
            architecture,
            config,
            sentence_transformers,
            weights,
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

    /// The family's token classifier ([`crate::NativeHead::for_tokens`]); BERT's needs no pooler.
    pub fn token_head(&self) -> Result<Option<crate::NativeHead>, ModelError> {
        if let Some(native) = self.native_head()? {
            return Ok(Some(native.for_tokens()));
        }
        let bert = self.config.get("model_type").and_then(|v| v.as_str()) == Some("bert");
        Ok(bert.then(|| crate::NativeHead {
            model: "BertForTokenClassification".into(),
            prefix: "bert.".into(),
            pooling: crate::Pooling::Cls,
            use_pooler: false,
            transform: None,
            classifier: "classifier".into(),
        }))
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

/// `config.json` keys that count blocks (each has at least one tensor in the weights).
const COUNT_KEYS: [&str; 7] = [
    "num_hidden_layers",
    "n_layers",
    "num_layers",
    "depth",
    "depths",
    "num_stages",
    "num_hidden_groups",
];

/// `config.json` keys that size a tensor dimension, or a table built from one.
const SIZE_KEYS: [&str; 24] = [
    "hidden_size",
    "hidden_sizes",
    "intermediate_size",
    "vocab_size",
    "max_position_embeddings",
    "type_vocab_size",
    "embedding_size",
    "dim",
    "dims",
    "hidden_dim",
    "embed_dim",
    "num_features",
    "projection_dim",
    "pooler_hidden_size",
    "num_attention_heads",
    "n_heads",
    "num_heads",
    "position_buckets",
    "max_relative_positions",
    "relative_attention_num_buckets",
    "num_register_tokens",
    "image_size",
    "img_size",
    "patch_size",
];

/// `config.json` keys that divide another size (heads into the width, patches into the image):
/// zero is refused.
const DIVISOR_KEYS: [&str; 5] = [
    "patch_size",
    "num_attention_heads",
    "n_heads",
    "num_heads",
    "encoder_stride",
];

/// Sizes up to this are never refused, whatever the weights hold.
const SMALL_SIZE: u64 = 4096;

/// Refuses a `config.json` that describes a model far larger than its weights before any
/// architecture builds it (building initialises every parameter): a block count above the
/// number of tensors in the file, a size above both [`SMALL_SIZE`] and the element count of the
/// file's largest tensor, or a zero divisor. Keys are looked for at any depth (`model_args`,
/// `text_config`).
fn check_config_sizes(path: &Path, config: &Value, index: &WeightsIndex) -> Result<(), ModelError> {
    let tensors = index.tensors.len() as u64;
    let largest = index
        .tensors
        .values()
        .map(|t| t.numel() as u64)
        .max()
        .unwrap_or(0)
        .max(SMALL_SIZE);
    let mut pending: Vec<(&str, &Value)> = vec![("", config)];
    while let Some((key, value)) = pending.pop() {
        match value {
            Value::Object(map) => pending.extend(map.iter().map(|(k, v)| (k.as_str(), v))),
            // An array's items count under its key (`depths`, `dims`).
            Value::Array(items) => pending.extend(items.iter().map(|v| (key, v))),
            Value::Number(n) => {
                if DIVISOR_KEYS.contains(&key) && n.as_f64() == Some(0.0) {
                    return Err(ModelError::Config {
                        path: path.to_path_buf(),
                        message: format!("`{key}` must be positive, found 0"),
                    });
                }
                let bound = if COUNT_KEYS.contains(&key) {
                    tensors
                } else if SIZE_KEYS.contains(&key) {
                    largest
                } else {
                    continue;
                };
                // Negative and fractional values are left to the architecture's own checks.
                let too_big = match (n.as_u64(), n.as_f64()) {
                    (Some(v), _) => v > bound,
                    (None, Some(f)) => f > bound as f64,
                    _ => false,
                };
                if too_big {
                    return Err(ModelError::Config {
                        path: path.to_path_buf(),
                        message: format!(
                            "`{key}` = {n} describes a model larger than its weights ({tensors} \
                             tensors, the largest with {} elements)",
                            index.tensors.values().map(|t| t.numel()).max().unwrap_or(0)
                        ),
                    });
                }
            }
            _ => {}
        }
    }
    Ok(())
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
