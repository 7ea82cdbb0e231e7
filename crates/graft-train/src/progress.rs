//! How the library reports progress without printing: the caller (the CLI) implements
//! [`Progress`] and renders it as it likes.

use serde::{Deserialize, Serialize};

/// One epoch's numbers, as written to `metrics.jsonl`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct EpochMetrics {
    pub epoch: usize,
    pub train_loss: f64,
    pub valid_loss: f64,
    pub valid_accuracy: f64,
    pub lr: f64,
    pub seconds: f64,
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
}

/// Reports nothing.
pub struct Silent;

impl Progress for Silent {}
