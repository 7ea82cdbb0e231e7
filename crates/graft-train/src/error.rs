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
    #[error(
        "the {what} became {value} at epoch {epoch}, step {step} (learning rate {lr:.3e}): lower \
         [train] lr, or set [train] clip_grad_norm; nothing of epoch {epoch} was saved{kept}"
    )]
    Diverged {
        what: &'static str,
        value: String,
        epoch: usize,
        step: usize,
        lr: f64,
        /// Which checkpoint is kept, for the message.
        kept: String,
    },
    #[error("stopped by {signal}{kept}")]
    Interrupted {
        signal: &'static str,
        /// Which checkpoint is kept and how to continue, for the message.
        kept: String,
        /// Whether resuming the run continues it (the CLI names its flag).
        resumable: bool,
    },
    /// Resuming a run that has no checkpoint.
    #[error("{}: no checkpoint to resume from; start the run afresh instead", path.display())]
    NothingToResume { path: PathBuf },
    /// Resuming a run whose config has changed since it started.
    #[error(
        "{}: the config changed since this run started ({}); resume anyway, or train into a new \
         output folder",
        path.display(),
        keys.join(", ")
    )]
    ConfigChanged { path: PathBuf, keys: Vec<String> },
    /// A table given as input without the column to read.
    #[error("{}: a CSV/JSONL/parquet input needs the name of its text column", path.display())]
    NeedsColumn { path: PathBuf },
    #[error(
        "{}: in use by another graft run (pid {pid}); wait for it to finish, or choose another \
         [output] dir",
        path.display()
    )]
    InUse { path: PathBuf, pid: String },
    /// A folder that already holds a run or an export, which is never replaced unasked.
    #[error("{}: already holds {holds}; {ways}", path.display())]
    Occupied {
        path: PathBuf,
        /// What is there: `a finished run (best epoch 3, valid_accuracy 0.871)`.
        holds: String,
        /// The ways on, in the library's words (the CLI adds its flags).
        ways: String,
    },
    #[error("backend: {0}")]
    Backend(String),
    /// A cache filled by sharded workers lacks shards (missing, unreadable or of the wrong shape).
    #[error(
        "the sharded feature cache lacks {} of {total} shards (missing, unreadable or of the \
         wrong shape): {}; run the workers that compute them, or compute them in this run",
        files.len(),
        files.join(", ")
    )]
    ShardsMissing { files: Vec<String>, total: usize },
    #[error("{0}")]
    Unsupported(String),
    #[error(transparent)]
    Model(#[from] graft_model::ModelError),
    #[error(transparent)]
    Data(#[from] graft_data::DataError),
}

impl TrainError {
    /// Maps an I/O error on `path` to [`TrainError::Io`] naming it.
    pub(crate) fn io(path: &std::path::Path) -> impl Fn(std::io::Error) -> TrainError + '_ {
        move |source| TrainError::Io {
            path: path.to_path_buf(),
            source,
        }
    }
}
