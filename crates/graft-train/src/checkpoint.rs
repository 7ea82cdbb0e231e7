//! Per-epoch checkpoints for exact resume.
//!
//! ```text
//! checkpoints/latest              name of the newest complete checkpoint (written last)
//! checkpoints/epoch-0003/model.bpk       every tensor of the model being trained
//! checkpoints/epoch-0003/optimizer.bpk   optimizer state (moments, momentum) by parameter id
//! checkpoints/epoch-0003/state.json      epoch, optimizer step, history, early-stopping state,
//!                                        the freeze state and the config the run started with
//! checkpoints/best-0002.bpk       the model of the best epoch so far
//! ```
//! A checkpoint folder is built under a temporary name and renamed; `latest` is replaced
//! atomically only after that, and older files are deleted only after `latest` moved on. A run
//! killed at any moment resumes from the last complete epoch. Shuffling and dropout are seeded
//! from the run's seed and the epoch, so the resumed epochs repeat exactly what the lost ones did.

use std::path::{Path, PathBuf};

use burn::module::Module;
use burn::optim::{ModuleOptimizer, OptimizerRecord};
use burn::tensor::Bytes;
use serde::{Deserialize, Serialize};

use crate::error::TrainError;
use crate::files::write_atomic;
use crate::progress::EpochMetrics;

pub const DIR: &str = "checkpoints";
const LATEST: &str = "latest";

/// Everything but tensors that a resumed run needs.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct CheckpointState {
    /// The last completed epoch.
    pub epoch: usize,
    /// Optimizer steps taken (the schedule's position).
    pub global_step: usize,
    pub history: Vec<EpochMetrics>,
    /// The lines of `metrics.jsonl` so far, verbatim (numbers are not re-parsed).
    pub metrics_lines: Vec<String>,
    pub best_epoch: usize,
    /// The best monitored value, as the bits of an f64 so it survives exactly.
    pub best_value_bits: u64,
    /// The best model's file, beside the checkpoint folders.
    pub best_file: String,
    /// Frozen tensor names at the end of `epoch` (informational; the schedule recomputes it).
    pub frozen: Vec<String>,
    /// The resolved config the run was started with, as TOML.
    pub config: String,
    /// f16's loss scale at the end of `epoch`.
    #[serde(default)]
    pub loss_scaler: Option<crate::precision::LossScaler>,
}

fn record_error(path: &Path) -> impl Fn(burn::store::RecordError) -> TrainError + '_ {
    move |e| TrainError::Write {
        path: path.to_path_buf(),
        message: e.to_string(),
    }
}

pub fn model_bytes<M: Module>(model: &M, path: &Path) -> Result<Vec<u8>, TrainError> {
    let bytes = model
        .clone()
        .into_record()
        .into_bytes()
        .map_err(record_error(path))?;
    Ok(bytes.to_vec())
}

/// Loads the tensors of a model file into `model` (same structure; ids kept from the file).
pub fn load_model<M: Module>(model: M, path: &Path) -> Result<M, TrainError> {
    let bytes = std::fs::read(path).map_err(TrainError::io(path))?;
    let corrupt = |e: burn::store::RecordError| TrainError::Config {
        path: path.to_path_buf(),
        message: format!("unreadable checkpoint: {e}"),
    };
    let record =
        burn::store::ModuleRecord::from_bytes(Bytes::from_bytes_vec(bytes)).map_err(corrupt)?;
    model.try_load_record(record).map_err(corrupt)
}

pub struct Checkpoints {
    pub dir: PathBuf,
}

impl Checkpoints {
    pub fn in_run(run_dir: &Path) -> Self {
        Self {
            dir: run_dir.join(DIR),
        }
    }

    /// The newest complete checkpoint, if any.
    pub fn latest(&self) -> Result<Option<PathBuf>, TrainError> {
        let pointer = self.dir.join(LATEST);
        if !pointer.is_file() {
            return Ok(None);
        }
        let name = std::fs::read_to_string(&pointer).map_err(TrainError::io(&pointer))?;
        let folder = self.dir.join(name.trim());
        if !folder.join("state.json").is_file() {
            return Err(TrainError::Config {
                path: pointer,
                message: format!(
                    "points to {}, which is not a complete checkpoint",
                    folder.display()
                ),
            });
        }
        Ok(Some(folder))
    }

    pub fn read_state(folder: &Path) -> Result<CheckpointState, TrainError> {
        let path = folder.join("state.json");
        let text = std::fs::read_to_string(&path).map_err(TrainError::io(&path))?;
        serde_json::from_str(&text).map_err(|e| TrainError::Config {
            path,
            message: format!("unreadable checkpoint state: {e}"),
        })
    }

    /// Writes the best model so far, before the checkpoint that names it.
    pub fn save_best<M: Module>(&self, model: &M, epoch: usize) -> Result<String, TrainError> {
        let name = format!("best-{epoch:04}.bpk");
        let path = self.dir.join(&name);
        write_atomic(&path, &model_bytes(model, &path)?)?;
        Ok(name)
    }

    /// Writes the checkpoint of a finished epoch, then points `latest` at it and removes what
    /// it supersedes.
    pub fn save<M: Module>(
        &self,
        model: &M,
        optimizer: &ModuleOptimizer,
        state: &CheckpointState,
    ) -> Result<(), TrainError> {
        let name = format!("epoch-{:04}", state.epoch);
        let staging = self.dir.join(format!(".{name}.partial"));
        let _ = std::fs::remove_dir_all(&staging);
        let staged = (|| {
            std::fs::create_dir_all(&staging).map_err(TrainError::io(&staging))?;
            let model_path = staging.join("model.bpk");
            write_atomic(&model_path, &model_bytes(model, &model_path)?)?;
            let optim_path = staging.join("optimizer.bpk");
            let optim = optimizer
                .to_record()
                .into_bytes()
                .map_err(record_error(&optim_path))?;
            write_atomic(&optim_path, &optim)?;
            let mut text = serde_json::to_string_pretty(state).expect("serializable");
            text.push('\n');
            write_atomic(&staging.join("state.json"), text.as_bytes())
        })();
        if let Err(error) = staged {
            // A full disk: free what the half-written checkpoint took; the last one stays.
            let _ = std::fs::remove_dir_all(&staging);
            return Err(error);
        }
        let folder = self.dir.join(&name);
        if folder.exists() {
            std::fs::remove_dir_all(&folder).map_err(TrainError::io(&folder))?;
        }
        std::fs::rename(&staging, &folder).map_err(TrainError::io(&folder))?;
        write_atomic(&self.dir.join(LATEST), name.as_bytes())?;
        // Only now is everything else unreferenced.
        if let Ok(entries) = std::fs::read_dir(&self.dir) {
            for entry in entries.flatten() {
                let file = entry.file_name().to_string_lossy().to_string();
                let stale = (file.starts_with("epoch-") && file != name)
                    || (file.starts_with("best-") && file != state.best_file)
                    || file.ends_with(".partial");
                if stale {
                    let path = entry.path();
                    let _ = if path.is_dir() {
                        std::fs::remove_dir_all(path)
                    } else {
                        std::fs::remove_file(path)
                    };
                }
            }
        }
        Ok(())
    }

    pub fn load_optimizer(
        folder: &Path,
        optimizer: ModuleOptimizer,
    ) -> Result<ModuleOptimizer, TrainError> {
        let path = folder.join("optimizer.bpk");
        let bytes = std::fs::read(&path).map_err(TrainError::io(&path))?;
        let record = OptimizerRecord::from_bytes(Bytes::from_bytes_vec(bytes)).map_err(|e| {
            TrainError::Config {
                path: path.clone(),
                message: format!("unreadable optimizer state: {e}"),
            }
        })?;
        Ok(optimizer.load_record(record))
    }
}

/// The config keys whose values differ between two TOML texts, as `section.key` paths.
pub fn changed_keys(before: &str, after: &str) -> Vec<String> {
    fn flatten(prefix: &str, value: &toml::Value, out: &mut Vec<(String, String)>) {
        match value {
            toml::Value::Table(table) => {
                for (key, v) in table {
                    let path = if prefix.is_empty() {
                        key.clone()
                    } else {
                        format!("{prefix}.{key}")
                    };
                    flatten(&path, v, out);
                }
            }
            other => out.push((prefix.to_string(), other.to_string())),
        }
    }
    let parse = |text: &str| {
        let mut out = Vec::new();
        if let Ok(value) = text.parse::<toml::Table>() {
            flatten("", &toml::Value::Table(value), &mut out);
        }
        out.into_iter()
            .collect::<std::collections::BTreeMap<_, _>>()
    };
    let (a, b) = (parse(before), parse(after));
    let mut keys: Vec<String> = a
        .keys()
        .chain(b.keys())
        .filter(|k| a.get(*k) != b.get(*k))
        .cloned()
        .collect();
    keys.sort();
    keys.dedup();
    keys
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn changed_keys_names_sections() {
        let a = "[train]\nlr = 0.1\nepochs = 3\n[model]\nbackbone = \"m\"\n";
        let b = "[train]\nlr = 0.2\nepochs = 3\n[model]\nbackbone = \"m\"\npooling = \"cls\"\n";
        assert_eq!(changed_keys(a, b), ["model.pooling", "train.lr"]);
        assert!(changed_keys(a, a).is_empty());
    }
}
