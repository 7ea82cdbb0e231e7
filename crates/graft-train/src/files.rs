//! Atomic file writes: a temporary file in the same folder, then a rename, so an interrupted run
//! never leaves a half-written artifact behind; and the one safetensors writer.

use std::path::Path;

use crate::error::TrainError;
pub use graft_model::weights::TensorBytes;

pub fn write_atomic(path: &Path, bytes: &[u8]) -> Result<(), TrainError> {
    graft_model::write_atomic(path, bytes).map_err(|source| TrainError::Io {
        path: path.to_path_buf(),
        source,
    })
}

/// Temporary files are created private (0600); artifacts get the usual 0644 (folders 0755).
pub fn make_shareable(path: &Path) -> Result<(), TrainError> {
    use std::os::unix::fs::PermissionsExt;
    let mode = if path.is_dir() { 0o755 } else { 0o644 };
    std::fs::set_permissions(path, std::fs::Permissions::from_mode(mode)).map_err(|source| {
        TrainError::Io {
            path: path.to_path_buf(),
            source,
        }
    })
}

pub fn write_json_atomic<T: serde::Serialize>(path: &Path, value: &T) -> Result<(), TrainError> {
    let mut text = serde_json::to_string_pretty(value).expect("serializable");
    text.push('\n');
    write_atomic(path, text.as_bytes())
}

/// Copies `from` to `to` atomically.
pub fn copy_atomic(from: &Path, to: &Path) -> Result<(), TrainError> {
    let bytes = std::fs::read(from).map_err(|source| TrainError::Io {
        path: from.to_path_buf(),
        source,
    })?;
    write_atomic(to, &bytes)
}

/// Writes tensors as one safetensors file, atomically: the one writer graft has (run weights,
/// exports, embeddings, feature shards, and `graft convert` through graft-model).
pub fn write_safetensors(
    path: &Path,
    tensors: &[TensorBytes],
    metadata: Option<std::collections::HashMap<String, String>>,
) -> Result<(), TrainError> {
    let bytes = graft_model::weights::serialize(tensors, metadata).map_err(|message| {
        TrainError::Write {
            path: path.to_path_buf(),
            message,
        }
    })?;
    write_atomic(path, &bytes)
}

/// The tensors of `module` in PyTorch layout (linear weights `[out, in]`, norms' `weight`/`bias`),
/// each under the name `rename` gives its path (enum variants left out); `None` leaves it out.
pub fn module_tensors<M: burn::module::Module>(
    module: &M,
    rename: impl Fn(&str) -> Option<String>,
) -> Result<Vec<TensorBytes>, TrainError> {
    use burn::store::{BurnToPyTorchAdapter, ModuleSnapshot};
    let mut out = Vec::new();
    for tensor in module.collect(None, Some(Box::new(BurnToPyTorchAdapter)), true) {
        let Some(name) = rename(&tensor.name) else {
            continue;
        };
        let bytes = tensor.to_bytes().map_err(|e| TrainError::Write {
            path: name.clone().into(),
            message: e.to_string(),
        })?;
        out.push(TensorBytes {
            name,
            shape: tensor.shape.as_slice().to_vec(),
            bytes: bytes.to_vec(),
            dtype: safetensors::Dtype::F32,
        });
    }
    Ok(out)
}

/// A new private folder beside `out` (same file system, so it can be renamed onto `out`) whose
/// name starts with `.graft-<what>-`: a whole artifact folder is built there, then published.
pub fn staging_dir(out: &Path, what: &str) -> Result<std::path::PathBuf, TrainError> {
    let parent = out
        .parent()
        .filter(|p| !p.as_os_str().is_empty())
        .unwrap_or(Path::new("."));
    std::fs::create_dir_all(parent).map_err(TrainError::io(parent))?;
    let staging = tempfile::Builder::new()
        .prefix(&format!(".graft-{what}-"))
        .tempdir_in(parent)
        .map_err(TrainError::io(parent))?;
    Ok(staging.keep())
}

/// Moves the finished folder `staging` to `out`, replacing an earlier folder there only once the
/// new one is whole.
pub fn publish_dir(staging: &Path, out: &Path) -> Result<(), TrainError> {
    for folder in walk(staging) {
        make_shareable(&folder)?;
    }
    if out.exists() {
        let name = out.file_name().unwrap_or_default().to_string_lossy();
        let old = out.with_file_name(format!(".{name}.graft-old"));
        let _ = std::fs::remove_dir_all(&old);
        std::fs::rename(out, &old).map_err(TrainError::io(out))?;
        std::fs::rename(staging, out).map_err(TrainError::io(out))?;
        let _ = std::fs::remove_dir_all(&old);
    } else {
        std::fs::rename(staging, out).map_err(TrainError::io(out))?;
    }
    Ok(())
}

/// `dir` and every folder below it.
fn walk(dir: &Path) -> Vec<std::path::PathBuf> {
    let mut folders = vec![dir.to_path_buf()];
    let mut i = 0;
    while i < folders.len() {
        if let Ok(entries) = std::fs::read_dir(&folders[i]) {
            folders.extend(entries.flatten().map(|e| e.path()).filter(|p| p.is_dir()));
        }
        i += 1;
    }
    folders
}
