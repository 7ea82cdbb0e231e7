//! The label vocabulary: a fixed class order (from a labels file, or the sorted training labels)
//! and the checks that keep it honest (unknown labels, classes without examples).

use std::collections::BTreeSet;
use std::path::Path;

use crate::{DataError, TextExample};

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct LabelSet {
    names: Vec<String>,
}

impl LabelSet {
    pub fn new(names: Vec<String>) -> Result<Self, String> {
        if names.len() < 2 {
            return Err(format!("need at least two classes, found {}", names.len()));
        }
        let unique: BTreeSet<&String> = names.iter().collect();
        if unique.len() != names.len() {
            return Err("a label is listed twice".into());
        }
        Ok(Self { names })
    }

    /// The sorted distinct labels of the training examples.
    pub fn from_examples(examples: &[TextExample], source: &Path) -> Result<Self, DataError> {
        let names: BTreeSet<String> = examples.iter().filter_map(|e| e.label.clone()).collect();
        Self::new(names.into_iter().collect()).map_err(|message| DataError::Labels {
            path: source.to_path_buf(),
            message,
        })
    }

    /// A labels file: a JSON array of strings, or one label per line.
    pub fn from_file(path: &Path) -> Result<Self, DataError> {
        let text = std::fs::read_to_string(path).map_err(|source| DataError::Io {
            path: path.to_path_buf(),
            source,
        })?;
        let names: Vec<String> = if text.trim_start().starts_with('[') {
            serde_json::from_str(&text).map_err(|e| DataError::Labels {
                path: path.to_path_buf(),
                message: format!("expected a JSON array of strings: {e}"),
            })?
        } else {
            text.lines()
                .map(str::trim)
                .filter(|l| !l.is_empty())
                .map(str::to_string)
                .collect()
        };
        Self::new(names).map_err(|message| DataError::Labels {
            path: path.to_path_buf(),
            message,
        })
    }

    pub fn names(&self) -> &[String] {
        &self.names
    }

    pub fn len(&self) -> usize {
        self.names.len()
    }

    pub fn is_empty(&self) -> bool {
        self.names.is_empty()
    }

    pub fn index_of(&self, label: &str) -> Option<usize> {
        self.names.iter().position(|n| n == label)
    }

    /// Class indices of `examples`; a missing or unknown label is an error naming file and line.
    pub fn encode(&self, examples: &[TextExample], source: &Path) -> Result<Vec<usize>, DataError> {
        examples
            .iter()
            .map(|example| {
                let label = example.label.as_deref().unwrap_or("");
                self.index_of(label).ok_or_else(|| DataError::UnknownLabel {
                    path: source.to_path_buf(),
                    line: example.line,
                    label: label.to_string(),
                    known: self.names.clone(),
                })
            })
            .collect()
    }

    /// Every class must have at least one training example.
    pub fn check_all_present(&self, targets: &[usize], source: &Path) -> Result<(), DataError> {
        let mut counts = vec![0usize; self.len()];
        for &t in targets {
            counts[t] += 1;
        }
        match counts.iter().position(|&c| c == 0) {
            Some(empty) => Err(DataError::EmptyClass {
                path: source.to_path_buf(),
                label: self.names[empty].clone(),
            }),
            None => Ok(()),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::example;

    #[test]
    fn sorted_order_and_unknown_label_error() {
        let source = Path::new("train.csv");
        let set = LabelSet::from_examples(&[example("b", 2), example("a", 3)], source).unwrap();
        assert_eq!(set.names(), ["a", "b"]);
        let error = set
            .encode(&[example("a", 2), example("zzz", 7)], Path::new("test.csv"))
            .unwrap_err();
        assert_eq!(
            error.to_string(),
            "test.csv:7: label `zzz` is not one of the training labels (a, b)"
        );
    }

    #[test]
    fn empty_class_is_named() {
        let set = LabelSet::new(vec!["x".into(), "y".into(), "z".into()]).unwrap();
        let error = set
            .check_all_present(&[0, 0, 2], Path::new("train.csv"))
            .unwrap_err();
        assert_eq!(error.to_string(), "class `y` has no examples in train.csv");
    }

    #[test]
    fn a_single_class_is_refused() {
        assert!(LabelSet::from_examples(&[example("a", 2)], Path::new("t.csv")).is_err());
    }
}
