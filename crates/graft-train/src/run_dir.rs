//! The run folder: what a training run leaves behind and what `eval`, `predict` and `export` read.
//!
//! ```text
//! graft.json          what the model is: labels, pooling, max length, head shape
//! config.toml         the resolved config the run used
//! labels.json         class names in logit order
//! model.safetensors   backbone in upstream names + `head.layers.N.{weight,bias}` ([out, in])
//! config.json, tokenizer.json, ...   copied from the backbone folder
//! metrics.jsonl, eval.json
//! ```
//! The backbone files make the folder a self-contained Hugging Face model folder.

use std::path::{Path, PathBuf};

use burn::module::Module;
use burn::store::{
    BurnToPyTorchAdapter, FloatCastAdapter, KeyRemapper, ModuleAdapter, PyTorchToBurnAdapter,
    SafetensorsStore,
};
use burn::tensor::{DType, Device};
use graft_data::TextTokenizer;
use graft_model::text_encoder::PoolingOptions;
use graft_model::{ModelFolder, Pooling, TextEncoder, WeightsIndex, bert, weights};
use serde::{Deserialize, Serialize};

use crate::TrainError;
use crate::classifier::TextClassifier;
use crate::files::{copy_atomic, make_shareable, write_json_atomic};
use crate::head::{Head, HeadSpec};

/// Backbone files copied into a run folder (and into exports) when present.
pub const BACKBONE_FILES: &[&str] = &[
    "config.json",
    "tokenizer.json",
    "tokenizer_config.json",
    "special_tokens_map.json",
    "vocab.txt",
];

pub const MANIFEST: &str = "graft.json";
pub const WEIGHTS: &str = "model.safetensors";

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct RunManifest {
    pub graft_version: String,
    pub task: String,
    pub architecture: String,
    pub labels: Vec<String>,
    pub pooling: Pooling,
    pub use_pooler: bool,
    pub normalize: bool,
    pub max_length: usize,
    pub head: HeadSpec,
    pub backbone_source: PathBuf,
    /// The data columns the run was trained on, the defaults for `graft eval`.
    pub text_column: String,
    pub label_column: String,
    pub best_epoch: Option<usize>,
    /// Multi-label: the decision threshold on each label's probability.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub threshold: Option<f64>,
    /// Multi-label: how label lists are separated in the data.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub label_separator: Option<String>,
}

impl RunManifest {
    pub fn pooling_options(&self) -> PoolingOptions {
        PoolingOptions {
            pooling: self.pooling,
            use_pooler: self.use_pooler,
            normalize: self.normalize,
        }
    }
}

/// Writes the model and its description into `dir` (each file atomically).
pub fn save(
    dir: &Path,
    manifest: &RunManifest,
    model: &TextClassifier,
    backbone_dir: &Path,
) -> Result<(), TrainError> {
    std::fs::create_dir_all(dir).map_err(|source| TrainError::Io {
        path: dir.to_path_buf(),
        source,
    })?;
    for name in BACKBONE_FILES {
        let from = backbone_dir.join(name);
        if from.is_file() {
            copy_atomic(&from, &dir.join(name))?;
        }
    }
    save_weights(model, &dir.join(WEIGHTS), "encoder.bert.", "")?;
    write_json_atomic(&dir.join("labels.json"), &manifest.labels)?;
    write_json_atomic(&dir.join(MANIFEST), manifest)
}

/// Saves every tensor of `model` in PyTorch layout: the encoder (found under `module_prefix`)
/// under upstream names with `upstream_prefix`, the rest under its own path. Atomic.
pub fn save_weights<M: Module>(
    model: &M,
    path: &Path,
    module_prefix: &str,
    upstream_prefix: &str,
) -> Result<(), TrainError> {
    save_with(
        model,
        path,
        bert::save_remapper(module_prefix, upstream_prefix),
    )
}

/// Saves `module` in PyTorch layout with names from `remapper`. Atomic (burn-store writes a
/// temporary file, then renames it).
pub fn save_with<M: Module>(
    module: &M,
    path: &Path,
    remapper: KeyRemapper,
) -> Result<(), TrainError> {
    use burn::store::ModuleSnapshot;
    let mut store = SafetensorsStore::from_file(path)
        .with_to_adapter(BurnToPyTorchAdapter)
        .remap(remapper)
        .skip_enum_variants(true)
        .overwrite(true);
    module
        .save_into(&mut store)
        .map_err(|e| TrainError::Write {
            path: path.to_path_buf(),
            message: e.to_string(),
        })?;
    make_shareable(path)
}

/// A run folder loaded for inference.
pub struct LoadedRun {
    pub manifest: RunManifest,
    pub model: TextClassifier,
    pub tokenizer: TextTokenizer,
}

pub fn read_manifest(dir: &Path) -> Result<RunManifest, TrainError> {
    let path = dir.join(MANIFEST);
    if !path.is_file() {
        return Err(TrainError::NotARun {
            path: dir.to_path_buf(),
        });
    }
    let text = std::fs::read_to_string(&path).map_err(|source| TrainError::Io {
        path: path.clone(),
        source,
    })?;
    serde_json::from_str(&text).map_err(|e| TrainError::Config {
        path,
        message: e.to_string(),
    })
}

pub fn load(dir: &Path, device: &Device) -> Result<LoadedRun, TrainError> {
    let manifest = read_manifest(dir)?;
    let folder = ModelFolder::open(dir)?;
    let (config, encoder) = TextEncoder::load(&folder, manifest.pooling_options(), device)?;
    let weights_path = dir.join(WEIGHTS);
    let index = WeightsIndex::read(&weights_path)?;
    let head = load_head(&manifest.head, &weights_path, &index, device)?;
    let tokenizer = TextTokenizer::from_file(
        &folder.tokenizer_path(),
        manifest.max_length,
        config.vocab_size,
    )?;
    Ok(LoadedRun {
        manifest,
        model: TextClassifier { encoder, head },
        tokenizer,
    })
}

pub(crate) fn load_head(
    spec: &HeadSpec,
    path: &Path,
    index: &WeightsIndex,
    device: &Device,
) -> Result<Head, TrainError> {
    let mut head = spec.init(0, device); // every value is then loaded
    let expected = weights::expected_tensors(&head, |p| format!("head.{p}"));
    weights::check_expected(path, index, &expected, &[])?;
    let mut store = SafetensorsStore::from_file(path)
        .with_from_adapter(PyTorchToBurnAdapter.chain(FloatCastAdapter::to(DType::F32)))
        .with_key_remapping(r"^head\.(.+)$", "$1")
        .allow_partial(true);
    weights::apply(&mut head, &mut store, path)?;
    Ok(head)
}
