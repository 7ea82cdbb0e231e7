//! graft-train: everything between a config and the artifacts of a run, for every backbone.
//!
//! [`train`] is the one place that wires things together: config → data + model → training →
//! run folder (and a test evaluation). [`Model`] opens what it leaves behind, a PEFT adapter or a
//! pretrained folder once, and predicts, evaluates and embeds examples held in memory;
//! [`export`] and [`inspect`] work on a run folder. The modality (text, images) sits behind the
//! preparation of inputs, the task behind one trait with a file per task, and the architecture
//! behind graft-model's `Backbone`, so nothing here names an architecture and adding one does not
//! touch this crate. The modules are private: this page is the surface (plus the TOML [`config`]
//! and the [`bench`] harness). Nothing here prints; progress goes through [`Progress`].
//!
//! ```no_run
//! use graft_train::{Backend, Example, Model, Silent, select_device};
//!
//! let device = select_device(Backend::Flex)?.device;
//! let model = Model::open("runs/fine-foods".as_ref(), &device)?;
//! let texts = [Example::unlabelled("Rich and smooth."), Example::unlabelled("Stale.")];
//! for prediction in model.predict(&texts, 32, &Silent)? {
//!     println!("{:?} {:?}", prediction.label, prediction.probabilities);
//! }
//! # Ok::<(), graft_train::TrainError>(())
//! ```

pub mod bench;
pub mod config;

mod backend;
mod bad_rows;
mod checkpoint;
mod classifier;
mod data;
mod entities;
mod error;
mod export;
mod feature_cache;
mod files;
mod fit;
mod freezing;
mod head;
mod init;
mod inspect;
mod lora;
mod loss;
mod metrics;
mod modality;
mod model;
mod plots;
mod precision;
mod progress;
mod run_dir;
mod schedule;
mod task;
mod tracking;
mod train;

#[cfg(test)]
mod tests;

use std::path::Path;

pub use backend::{
    SelectedDevice, prefer_quick_autotune, prepare_headless_runtime, select as select_device,
};
pub use config::{Backend, Config, Precision};
pub use entities::{EntityReport, EntityScores, FoundEntity};
pub use feature_cache::Shard;
pub use files::{write_atomic, write_json_atomic};
pub use fit::Resume;
pub use init::{InitRequest, starter_config};
pub use inspect::{InspectReport, inspect};
pub use metrics::{EvalReport, MultiLabelReport, RegressionReport, Report};
pub use modality::{Input, read_input};
pub use model::{
    EmbedOptions, EmbeddingShards, Embeddings, EmbeddingsFile, Evaluation, Example, Model,
    ModelSource, SourceKind, TokenLogits, WINDOW, check_batch_size,
};
pub use plots::save_png;
pub use progress::{EpochMetrics, Progress, Silent, StepMetrics};
pub use task::{EvaluationPlot, Prediction, Task, TaskSpec};
pub use train::{
    FeaturesReport, TrainOptions, TrainPlan, TrainReport, compute_features, plan, train,
};

/// Writes a run folder, an adapter or a pretrained folder as an ONNX folder at `out`
/// (`model.onnx` with the tokenizer or image settings and the labels); `replace`: replace what
/// is at `out`.
pub fn export_onnx(
    path: &std::path::Path,
    out: &std::path::Path,
    replace: bool,
) -> Result<String, TrainError> {
    export::export_onnx(path, out, replace)
}

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
