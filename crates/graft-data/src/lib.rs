//! graft-data: reading labelled data, the label vocabulary, and tokenization into padded batches.
//!
//! Nothing here knows about models or training: [`text`] reads CSV/JSONL/parquet/plain-text files into
//! examples, [`labels`] fixes the class order and checks labels against it, [`tokenize`] turns
//! texts into id tensors with the model's `tokenizer.json`, [`targets`] reads multi-label lists
//! and regression values, [`table`] takes a first look at a file's columns (for `graft init`),
//! [`tagged`] reads token-tagged sentences (CoNLL) and aligns their words with sub-word tokens.

pub mod guard;
pub mod image;
pub mod labels;
pub mod parquet;
pub mod resample;
pub mod split;
pub mod table;
pub mod tagged;
pub mod targets;
pub mod text;
pub mod tokenize;

use std::path::PathBuf;

pub use labels::LabelSet;
pub use split::train_valid_split;
pub use targets::{encode_multi_label, label_list, multi_label_set, regression_values};
pub use text::{Columns, DataFormat, TextExample, read_examples, read_texts};
pub use tokenize::{TextTokenizer, TokenBatch};

/// Everything that can go wrong reading data; each message names the file and, where there is
/// one, the line, column or label.
#[derive(Debug, thiserror::Error)]
pub enum DataError {
    #[error("{}: {source}", path.display())]
    Io {
        path: PathBuf,
        source: std::io::Error,
    },
    #[error("{}: file not found", path.display())]
    NotFound { path: PathBuf },
    #[error("{}:{line}: {message}", path.display())]
    Parse {
        path: PathBuf,
        line: usize,
        message: String,
    },
    #[error("{}: no column `{column}` (found: {})", path.display(), found.join(", "))]
    MissingColumn {
        path: PathBuf,
        column: String,
        found: Vec<String>,
    },
    #[error("{}: the file has no examples", path.display())]
    Empty { path: PathBuf },
    #[error("{}: label `{label}` is not one of the training labels ({})", location(path, *line), known.join(", "))]
    UnknownLabel {
        path: PathBuf,
        line: usize,
        label: String,
        known: Vec<String>,
    },
    #[error("class `{label}` has no examples in {}", path.display())]
    EmptyClass { path: PathBuf, label: String },
    #[error("{}: {message}", path.display())]
    Labels { path: PathBuf, message: String },
    #[error("{}: cannot load tokenizer: {message}", path.display())]
    Tokenizer { path: PathBuf, message: String },
    #[error(
        "tokenizer produced id {id}, outside the model's vocabulary of {vocab_size}: tokenizer.json and the weights do not match"
    )]
    TokenOutOfVocab { id: u32, vocab_size: usize },
    #[error("{}: unreadable parquet file: {message}", path.display())]
    Parquet { path: PathBuf, message: String },
    #[error("{}: unreadable image: {message}", path.display())]
    Image { path: PathBuf, message: String },
    #[error("{0}")]
    Invalid(String),
}

/// `file:line`, or the file alone when there is no line (an image folder).
fn location(path: &std::path::Path, line: usize) -> String {
    if line == 0 {
        path.display().to_string()
    } else {
        format!("{}:{line}", path.display())
    }
}

/// A labelled example for unit tests.
#[cfg(test)]
pub(crate) fn example(label: &str, line: usize) -> TextExample {
    TextExample {
        text: "t".into(),
        label: Some(label.into()),
        line,
        bytes: None,
        pair: None,
        negative: None,
    }
}
