//! graft-train: everything between a config and the artifacts of a run, for every backbone.
//!
//! [`train`] is the one place that wires things together: config → data + model → training →
//! run folder (and a test evaluation). [`evaluate`], [`predict`], [`embed`], [`export`] and
//! [`inspect`] work on what it leaves behind, or on a pretrained folder. There is one path for
//! all of them ([`pipeline`]): the modality (text, images) sits behind [`modality`], the task
//! behind [`task`], and the architecture behind graft-model's `Backbone`, so nothing here names an
//! architecture and adding one does not touch this crate. Nothing here prints; progress goes
//! through [`Progress`].

pub mod backend;
pub mod bad_rows;
pub mod bench;
pub mod checkpoint;
pub mod classifier;
pub mod config;
pub mod data;
mod error;
pub mod export;
pub mod feature_cache;
pub mod files;
pub mod fit;
pub mod freezing;
pub mod head;
pub mod init;
pub mod inspect;
pub mod lora;
pub mod loss;
pub mod metrics;
pub mod modality;
pub mod model;
pub mod pipeline;
pub mod plots;
pub mod progress;
pub mod run_dir;
pub mod schedule;
pub mod task;
pub mod tracking;

use std::path::Path;

pub use backend::SelectedDevice;
pub use config::{Backend, Config};
pub use fit::Resume;
pub use inspect::{InspectReport, inspect};
pub use metrics::{EvalReport, MultiLabelReport, RegressionReport, Report};
pub use modality::Input;
pub use model::{Example, Model, ModelSource, SourceKind};
pub use pipeline::{
    EmbedOptions, Embeddings, Evaluation, TrainOptions, TrainPlan, TrainReport, embed, evaluate,
    plan, predict, train,
};
pub use progress::{EpochMetrics, Progress, Silent, StepMetrics};
pub use task::{Prediction, Task};

/// Writes the export of a run folder to `out` (`merge`: a LoRA run's adapters folded into the
/// weights; `replace`: replace what is at `out`); see [`export`](mod@export).
pub fn export(
    run_dir: &Path,
    out: &Path,
    merge: bool,
    replace: bool,
) -> Result<String, TrainError> {
    export::export(run_dir, out, merge, replace)
}

pub use error::TrainError;
