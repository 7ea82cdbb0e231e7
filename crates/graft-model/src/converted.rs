//! Where converted models go: a model graft reads in another framework's format (a Google BERT
//! release, a Keras file) converts once into a model folder in graft's cache, keyed by its
//! contents, or on request into a new folder the user names. Both are built in a staging folder
//! beside their destination and renamed into place, so an interrupted conversion leaves nothing
//! half-written.

use std::path::{Path, PathBuf};

use sha2::{Digest, Sha256};

use crate::ModelError;

fn io(path: &Path) -> impl FnOnce(std::io::Error) -> ModelError + use<> {
    let path = path.to_path_buf();
    move |source| ModelError::Io { path, source }
}

/// The cache folder of a conversion keyed by `key` (the source's bytes, in pieces), converted by
/// `convert` into an empty folder on first use.
pub fn cached<'a, T>(
    key: impl IntoIterator<Item = &'a [u8]>,
    convert: impl FnOnce(&Path) -> Result<T, ModelError>,
) -> Result<PathBuf, ModelError> {
    let mut hasher = Sha256::new();
    for piece in key {
        hasher.update(piece);
    }
    let hex: String = hasher
        .finalize()
        .iter()
        .take(12)
        .map(|b| format!("{b:02x}"))
        .collect();
    let out = crate::shards::cache_root().join("converted").join(hex);
    if !out.join("model.safetensors").is_file() {
        let parent = out.parent().expect("a cache folder");
        std::fs::create_dir_all(parent).map_err(io(parent))?;
        let staging = tempfile::tempdir_in(parent).map_err(io(parent))?;
        convert(staging.path())?;
        let staged = staging.keep();
        if std::fs::rename(&staged, &out).is_err() {
            // Another process converted it first.
            let _ = std::fs::remove_dir_all(&staged);
        }
    }
    Ok(out)
}

/// Runs `convert` into a staging folder and renames it to `out`. An `out` that holds anything
/// is refused.
pub fn into_new_folder<T>(
    out: &Path,
    convert: impl FnOnce(&Path) -> Result<T, ModelError>,
) -> Result<T, ModelError> {
    let occupied = std::fs::read_dir(out).is_ok_and(|mut entries| entries.next().is_some());
    if occupied || out.is_file() {
        return Err(ModelError::Config {
            path: out.to_path_buf(),
            message: "already exists: convert into a new folder".into(),
        });
    }
    let parent = out
        .parent()
        .filter(|p| !p.as_os_str().is_empty())
        .unwrap_or(Path::new("."));
    std::fs::create_dir_all(parent).map_err(io(parent))?;
    let staging = tempfile::tempdir_in(parent).map_err(io(parent))?;
    let converted = convert(staging.path())?;
    if out.exists() {
        std::fs::remove_dir(out).map_err(io(out))?;
    }
    std::fs::rename(staging.keep(), out).map_err(io(out))?;
    Ok(converted)
}
