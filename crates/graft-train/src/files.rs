//! Atomic file writes: a temporary file in the same folder, then a rename, so an interrupted run
//! never leaves a half-written artifact behind.

use std::path::Path;

use crate::TrainError;

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
