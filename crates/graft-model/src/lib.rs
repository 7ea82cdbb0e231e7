//! graft-model: everything an architecture is, and nothing about training.
//!
//! Architectures live here so that the rest of graft never names one: [`folder`] opens a model
//! folder and detects which registered architecture it holds, and [`backbone`] defines the one
//! interface each implements (build and load, forward to features, parameter names and blocks,
//! preprocessing, export layouts) and the registry that lists them. Each architecture is one file
//! with its config (mirroring the upstream `config.json`), its burn modules (named after the
//! upstream tensor tree, so the name mapping stays short) and its impl of that interface.
//! Shared pieces (pooling, weight checks, graft's vision config) have their own modules.

pub mod adapters;
pub mod backbone;
pub mod bert;
pub mod converted;
pub mod convnext;
pub mod deberta;
pub mod distilbert;
pub mod efficientnet;
pub mod efficientnet_b;
pub mod electra;
pub mod folder;
pub mod google_release;
pub mod hub;
pub mod keras;
pub mod keras_applications;
pub mod mobilenetv3;
pub mod modernbert;
pub mod mpnet;
pub mod native_head;
pub mod pooling;
pub mod pth;
pub mod resnet;
pub mod roberta;
pub mod shards;
pub mod tf_bundle;
pub mod tf_objects;
pub mod vision;
pub mod vit;
pub mod weights;

use std::path::PathBuf;

pub use backbone::{
    Architecture, ArchitectureId, Backbone, ExportFormat, ExportTarget, ImageTransform, Inputs,
    Modality, Naming, Preprocessing, TextTransform, cast_floats,
};
pub use folder::{ModelFolder, SentenceTransformerDefaults};
pub use native_head::{HeadTransform, NativeHead, TransformSpec};
pub use pooling::{Pooling, PoolingOptions, l2_normalize};
pub use weights::{TensorInfo, WeightsIndex};

/// Everything that can go wrong reading a model; each message names the file and, where there is
/// one, the tensor.
#[derive(Debug, thiserror::Error)]
pub enum ModelError {
    #[error("{}: {source}", path.display())]
    Io {
        path: PathBuf,
        source: std::io::Error,
    },
    #[error("{}: does not exist", path.display())]
    NotFound { path: PathBuf },
    #[error(
        "{id}: no folder by that name, and as a Hugging Face Hub id it is not in the cache ({}): {why}",
        looked.display()
    )]
    NotInCache {
        id: String,
        looked: PathBuf,
        why: String,
    },
    #[error("{}: missing {what}", path.display())]
    MissingFile { path: PathBuf, what: &'static str },
    #[error("{}: invalid config: {message}", path.display())]
    Config { path: PathBuf, message: String },
    #[error("{}: unreadable or corrupt weights: {message}", path.display())]
    CorruptWeights { path: PathBuf, message: String },
    #[error(
        "{}: tensor `{tensor}` has shape {found:?}, expected {expected:?}",
        path.display()
    )]
    ShapeMismatch {
        path: PathBuf,
        tensor: String,
        expected: Vec<usize>,
        found: Vec<usize>,
    },
    #[error(
        "{}: missing tensor(s) {} (the file has {available} tensors; run `graft inspect` on it)",
        path.display(),
        name_list(names)
    )]
    MissingTensors {
        path: PathBuf,
        names: Vec<String>,
        available: usize,
    },
    #[error("{}: unsupported architecture: {found}", path.display())]
    UnsupportedArchitecture { path: PathBuf, found: String },
    #[error("{}: {message}", path.display())]
    Unsupported { path: PathBuf, message: String },
}

/// Reads a JSON config file and checks it with `check`; errors name the file.
pub(crate) fn read_config<T: serde::de::DeserializeOwned>(
    path: &std::path::Path,
    check: impl Fn(&T) -> Result<(), String>,
) -> Result<T, ModelError> {
    let invalid = |message: String| ModelError::Config {
        path: path.to_path_buf(),
        message,
    };
    let text = std::fs::read_to_string(path).map_err(|source| ModelError::Io {
        path: path.to_path_buf(),
        source,
    })?;
    let config: T = serde_json::from_str(&text).map_err(|e| invalid(e.to_string()))?;
    check(&config).map_err(invalid)?;
    Ok(config)
}

/// Writes `bytes` to `path` atomically: a temporary file in the same folder, synced, then renamed
/// (made 0644). An interrupted write leaves the previous file, or none.
pub fn write_atomic(path: &std::path::Path, bytes: &[u8]) -> std::io::Result<()> {
    use std::io::Write;
    use std::os::unix::fs::PermissionsExt;
    let dir = path
        .parent()
        .filter(|p| !p.as_os_str().is_empty())
        .unwrap_or(std::path::Path::new("."));
    std::fs::create_dir_all(dir)?;
    let mut file = tempfile::NamedTempFile::new_in(dir)?;
    file.write_all(bytes)?;
    file.as_file().sync_all()?;
    file.persist(path).map_err(|e| e.error)?;
    std::fs::set_permissions(path, std::fs::Permissions::from_mode(0o644))
}

/// At most five names, then how many more.
fn name_list(names: &[String]) -> String {
    let mut shown: Vec<String> = names.iter().take(5).map(|n| format!("`{n}`")).collect();
    if names.len() > 5 {
        shown.push(format!("and {} more", names.len() - 5));
    }
    shown.join(", ")
}
