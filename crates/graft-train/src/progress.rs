//! How the library reports progress without printing: the caller (the CLI) implements
//! [`Progress`] and renders it as it likes.

use std::collections::BTreeMap;

use serde::{Deserialize, Serialize};

/// One epoch's numbers, as written to `metrics.jsonl` (with `"kind": "epoch"`).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct EpochMetrics {
    pub epoch: usize,
    pub train_loss: f64,
    pub valid_loss: f64,
    /// The task's validation metrics: `valid_accuracy`, `valid_macro_f1`, `valid_mae`, ...
    #[serde(flatten)]
    pub valid: BTreeMap<String, f64>,
    /// The head's learning rate at the epoch's last step.
    pub lr: f64,
    /// Trainable tensor values during the epoch.
    pub trainable_parameters: usize,
    pub seconds: f64,
}

impl EpochMetrics {
    /// The task's main validation metric besides the loss, for one-line summaries.
    pub fn headline(&self) -> Option<(&str, f64)> {
        crate::task::headline_metrics().find_map(|k| self.valid.get(k).map(|&v| (k, v)))
    }
}

/// One optimizer step, as written to `metrics.jsonl` (with `"kind": "step"`).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct StepMetrics {
    pub step: usize,
    pub epoch: usize,
    /// The learning rate this step used, for the head.
    pub lr: f64,
    /// The learning rate of the top backbone block, when it differs from the head's.
    #[serde(skip_serializing_if = "Option::is_none", default)]
    pub backbone_lr: Option<f64>,
}

pub trait Progress {
    /// A stage with `total` steps begins (`total` may be 0 when unknown).
    fn stage(&self, _name: &str, _total: usize) {}
    /// `n` more steps of the current stage are done.
    fn advance(&self, _n: usize) {}
    /// The current stage is over.
    fn finish_stage(&self) {}
    /// Something worth telling the user.
    fn info(&self, _message: &str) {}
    /// An epoch finished.
    fn epoch(&self, _metrics: &EpochMetrics, _best: bool) {}
    /// The signal that asked the run to stop (`SIGINT`, `SIGTERM`), if one has; training stops
    /// before its next step and keeps the last complete checkpoint.
    fn interrupted(&self) -> Option<&'static str> {
        None
    }
}

/// Reports nothing.
pub struct Silent;

impl Progress for Silent {}
