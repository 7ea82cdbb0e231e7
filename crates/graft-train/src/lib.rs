//! graft-train: everything between a config and the artifacts of a run.
//!
//! [`train`] is the one place that wires things together: config → data + model → training →
//! run folder (and a test evaluation). [`evaluate`], [`predict`], [`embed`], [`export`] and
//! [`inspect`] work on what it leaves behind, or on a pretrained folder. Nothing here prints; progress
//! goes through [`Progress`].

pub mod backend;
pub mod bench;
pub mod checkpoint;
pub mod classifier;
pub mod config;
pub mod export;
pub mod feature_cache;
pub mod files;
pub mod fit;
pub mod freezing;
pub mod head;
pub mod loss;
pub mod metrics;
pub mod progress;
pub mod run_dir;
pub mod schedule;
mod tasks;
pub mod vision_tasks;

use std::path::PathBuf;

pub use backend::SelectedDevice;
pub use config::{Backend, Config};
pub use export::ExportLayout;
pub use fit::Resume;
pub use metrics::{EvalReport, MultiLabelReport, RegressionReport, Report};
pub use progress::{EpochMetrics, Progress, Silent, StepMetrics};
pub use tasks::{
    EmbedOptions, Embeddings, InspectReport, Prediction, TextInput, TrainOptions, TrainPlan,
    TrainReport, embed, evaluate, export, inspect, plan, predict, read_input_texts, train,
};

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
    #[error("{}: not a graft run folder (no graft.json); train one with `graft train`", path.display())]
    NotARun { path: PathBuf },
    #[error("backend: {0}")]
    Backend(String),
    #[error("{0}")]
    Unsupported(String),
    #[error(transparent)]
    Model(#[from] graft_model::ModelError),
    #[error(transparent)]
    Data(#[from] graft_data::DataError),
}
