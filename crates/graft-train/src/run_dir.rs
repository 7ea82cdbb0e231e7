//! The run folder: what a training run leaves behind and what `eval`, `predict` and `export` read,
//! the same for every backbone and modality.
//!
//! ```text
//! graft.json          the one manifest: task, labels, head shape, columns, and the text or image
//!                     part (pooling and max length, or the image transform)
//! config.toml         the resolved config the run used
//! labels.json         output names in logit order
//! model.safetensors   the backbone in its folder's names + `head.layers.N.{weight,bias}` ([out, in])
//! adapter_model.safetensors   a LoRA run's adapters, in PEFT's names (the model file holds the
//!                     backbone with them merged)
//! config.json, tokenizer.json, ...   copied from the backbone folder
//! metrics.jsonl, eval.json
//! ```
//! The backbone files make the folder a self-contained model folder.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

use burn::store::{FloatCastAdapter, ModuleAdapter, PyTorchToBurnAdapter, SafetensorsStore};
use burn::tensor::{DType, Device};
use graft_model::{Backbone, ModelFolder, WeightsIndex, weights};
use serde::{Deserialize, Serialize};

use crate::checkpoint::Checkpoints;
use crate::classifier::Classifier;
use crate::error::TrainError;
use crate::files::{
    TensorBytes, copy_atomic, module_tensors, write_json_atomic, write_safetensors,
};
use crate::head::{Head, HeadSpec};
use crate::lora::LoraSpec;
use crate::modality::{Encoder, Preparation};
use crate::progress::EpochMetrics;
use crate::task::{Task, TaskSpec};

/// Backbone files copied into a run folder (and into exports) when present.
pub const BACKBONE_FILES: &[&str] = &[
    "config.json",
    "tokenizer.json",
    "tokenizer_config.json",
    "special_tokens_map.json",
    "vocab.txt",
    "preprocessor_config.json",
];

pub const MANIFEST: &str = "graft.json";
pub const WEIGHTS: &str = "model.safetensors";

/// What `graft.json` holds.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct RunManifest {
    pub graft_version: String,
    #[serde(with = "crate::task::as_problem_type")]
    pub task: Task,
    /// The backbone, as its architecture describes itself (`bert (6 layers)`).
    pub architecture: String,
    pub labels: Vec<String>,
    pub head: HeadSpec,
    pub backbone_source: PathBuf,
    /// The data columns the run was trained on, the defaults for `graft eval`: the text or
    /// image-path column (none for an image folder) and the label column.
    pub input_column: Option<String>,
    /// A run on pairs of texts: the column of the second text.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub pair_column: Option<String>,
    /// An embedding run on triplets: the column of the third text.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub negative_column: Option<String>,
    pub label_column: String,
    pub best_epoch: Option<usize>,
    /// Multi-label: the decision threshold on each label's probability.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub threshold: Option<f64>,
    /// Multi-label: how label lists are separated in the data.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub label_separator: Option<String>,
    /// `"modality": "text"` with pooling and max length, or `"image"` with the transform.
    #[serde(flatten)]
    pub preparation: Preparation,
    /// A LoRA run's adapters (kept in PEFT's layout in `adapter_model.safetensors`; the model
    /// file holds the merged backbone).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub lora: Option<LoraSpec>,
    /// Rows left out of each data file under `[data] bad_rows = "skip"`.
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub skipped_rows: BTreeMap<String, usize>,
}

impl RunManifest {
    pub fn task_spec(&self) -> Result<TaskSpec, TrainError> {
        Ok(TaskSpec {
            task: self.task,
            labels: self.labels.clone(),
            threshold: self.threshold.unwrap_or(0.5),
            separator: self.label_separator.clone().unwrap_or_else(|| "|".into()),
        })
    }
}

/// `num_batches_tracked` for every BatchNorm among `tensors` (PyTorch's strict loading wants them).
pub fn batches_tracked(tensors: &[TensorBytes]) -> Vec<TensorBytes> {
    tensors
        .iter()
        .filter_map(|t| t.name.strip_suffix(".running_mean"))
        .map(|stem| TensorBytes {
            name: format!("{stem}.num_batches_tracked"),
            shape: vec![],
            bytes: 0i64.to_le_bytes().to_vec(),
            dtype: safetensors::Dtype::I64,
        })
        .collect()
}

/// The tensors of a backbone under `names` (a path inside its architecture to a name), each
/// behind `prefix`.
pub fn backbone_tensors(
    backbone: &Backbone,
    prefix: &str,
    names: impl Fn(&str) -> String,
) -> Result<Vec<TensorBytes>, TrainError> {
    let mut tensors = module_tensors(backbone, |path| {
        Backbone::inner_path(path).map(|inner| format!("{prefix}{}", names(inner)))
    })?;
    let tracked = batches_tracked(&tensors);
    tensors.extend(tracked);
    Ok(tensors)
}

/// Writes the model and its description into `dir` (each file atomically).
pub fn save(
    dir: &Path,
    manifest: &RunManifest,
    model: &Classifier,
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
    let backbone = &model.backbone;
    let mut tensors = backbone_tensors(backbone, "", |path| backbone.file_name(path))?;
    tensors.extend(module_tensors(&model.head, |path| {
        Some(format!("head.{path}"))
    })?);
    write_safetensors(&dir.join(WEIGHTS), &tensors, None)?;
    write_json_atomic(&dir.join("labels.json"), &manifest.labels)?;
    write_json_atomic(&dir.join(MANIFEST), manifest)
}

/// A run folder loaded for inference.
pub struct LoadedRun {
    pub manifest: RunManifest,
    pub folder: ModelFolder,
    pub model: Classifier,
    pub encoder: Encoder,
}

/// Whether `dir` holds a graft run (a `graft.json`).
pub fn is_run(dir: &Path) -> bool {
    dir.join(MANIFEST).is_file()
}

/// What `dir` holds that a new training run there would replace: a finished run, named by its
/// best epoch and headline metric, or an unfinished one by its last checkpoint.
pub fn existing_run(dir: &Path) -> Option<String> {
    if is_run(dir) {
        let Some(best) = read_manifest(dir).ok().and_then(|m| m.best_epoch) else {
            return Some("a finished run".into());
        };
        let headline = std::fs::read_to_string(dir.join("metrics.jsonl"))
            .ok()
            .and_then(|text| {
                text.lines()
                    .filter_map(|line| {
                        let mut line: serde_json::Value = serde_json::from_str(line).ok()?;
                        let kind = line.as_object_mut()?.remove("kind")?;
                        (kind == "epoch").then_some(())?;
                        serde_json::from_value::<EpochMetrics>(line).ok()
                    })
                    .find(|m| m.epoch == best)
            })
            .and_then(|m| {
                m.headline()
                    .map(|(name, value)| format!(", {name} {value:.4}"))
            })
            .unwrap_or_default();
        return Some(format!("a finished run (best epoch {best}{headline})"));
    }
    match Checkpoints::in_run(dir).latest() {
        Ok(None) => None,
        Ok(Some(latest)) => Some(match Checkpoints::read_state(&latest) {
            Ok(state) => format!("an unfinished run (last checkpoint: epoch {})", state.epoch),
            Err(_) => "an unfinished run".into(),
        }),
        Err(_) => Some("an unfinished run".into()),
    }
}

pub fn read_manifest(dir: &Path) -> Result<RunManifest, TrainError> {
    if !dir.exists() {
        return Err(TrainError::NotFound {
            path: dir.to_path_buf(),
        });
    }
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
    let backbone = Backbone::load(&folder, manifest.preparation.pooling(), false, device)?;
    let head = load_head(&manifest.head, &folder.weights_path(), device)?;
    let mut encoder = manifest.preparation.encoder(&folder)?;
    if manifest.task == crate::task::Task::TokenClassification {
        encoder = encoder.for_words();
    }
    Ok(LoadedRun {
        manifest,
        folder,
        model: Classifier { backbone, head },
        encoder,
    })
}

pub(crate) fn load_head(spec: &HeadSpec, path: &Path, device: &Device) -> Result<Head, TrainError> {
    let index = WeightsIndex::read(path)?;
    let mut head = spec.init(0, device); // every value is then loaded
    let expected = weights::expected_tensors(&head, |p| format!("head.{p}"));
    weights::check_expected(path, &index, &expected, &[])?;
    let mut store = SafetensorsStore::from_file(path)
        .with_from_adapter(PyTorchToBurnAdapter.chain(FloatCastAdapter::to(DType::F32)))
        .with_key_remapping(r"^head\.(.+)$", "$1")
        .allow_partial(true);
    weights::apply(&mut head, &mut store, path)?;
    Ok(head)
}

/// The lock file that marks a run folder in use by a training run.
pub const LOCK: &str = ".graft.lock";

/// A run folder held by this process (see [`lock`]); dropping it releases the folder.
pub struct RunLock {
    _file: std::fs::File,
    dir: PathBuf,
    /// Whether taking the lock created the folder.
    created: bool,
}

impl RunLock {
    /// After a failed run: removes the folder again if taking the lock created it and nothing
    /// but `bookkeeping` files were written into it, so a run that fails early leaves no folder.
    pub fn discard_if_unused(self, bookkeeping: &[&str]) {
        if !self.created {
            return;
        }
        let unused = std::fs::read_dir(&self.dir).is_ok_and(|entries| {
            entries.flatten().all(|e| {
                let name = e.file_name();
                name == LOCK || bookkeeping.iter().any(|b| name == *b)
            })
        });
        if unused {
            let _ = std::fs::remove_dir_all(&self.dir);
        }
    }
}

/// Holds `dir` until the returned lock is dropped: an advisory lock on `dir/.graft.lock`, which
/// holds the owner's pid. The system releases it when the process ends, however it ends, so a
/// killed run leaves nothing stuck. A folder locked by another process is an error naming that
/// process.
pub fn lock(dir: &Path) -> Result<RunLock, TrainError> {
    use std::io::{Read, Seek, Write};
    let io = |source| TrainError::Io {
        path: dir.join(LOCK),
        source,
    };
    let created = !dir.exists();
    std::fs::create_dir_all(dir).map_err(io)?;
    let path = dir.join(LOCK);
    let mut file = std::fs::OpenOptions::new()
        .read(true)
        .write(true)
        .create(true)
        .truncate(false)
        .open(&path)
        .map_err(io)?;
    match file.try_lock() {
        Ok(()) => {
            file.set_len(0).map_err(io)?;
            file.rewind().map_err(io)?;
            writeln!(file, "{}", std::process::id()).map_err(io)?;
            Ok(RunLock {
                _file: file,
                dir: dir.to_path_buf(),
                created,
            })
        }
        Err(std::fs::TryLockError::WouldBlock) => {
            let mut pid = String::new();
            let _ = file.read_to_string(&mut pid);
            Err(TrainError::InUse {
                path: dir.to_path_buf(),
                pid: match pid.trim() {
                    "" => "unknown".into(),
                    pid => pid.to_string(),
                },
            })
        }
        Err(std::fs::TryLockError::Error(source)) => Err(io(source)),
    }
}
