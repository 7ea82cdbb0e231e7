//! The one error type of graft-train; each message names the file, key, line or tensor.

use std::path::PathBuf;

#[derive(Debug, thiserror::Error)]
pub enum TrainError {
    #[error("{}: {source}", path.display())]
    Io {
        path: PathBuf,
        source: std::io::Error,
    },
    #[error("{}: {message}", path.display())]
    Config { path: PathBuf, message: String },
    #[error("{}: could not write: {message}", path.display())]
    Write { path: PathBuf, message: String },
    #[error("{}: does not exist", path.display())]
    NotFound { path: PathBuf },
    #[error("{}: not a graft run folder (no graft.json); train one with `graft train`", path.display())]
    NotARun { path: PathBuf },
    #[error("{}: not a graft run folder (no graft.json), nor a model folder (no config.json)", path.display())]
    NotAModel { path: PathBuf },
    #[error("backend: {0}")]
    Backend(String),
    #[error("{0}")]
    Unsupported(String),
    #[error(transparent)]
    Model(#[from] graft_model::ModelError),
    #[error(transparent)]
    Data(#[from] graft_data::DataError),
}
