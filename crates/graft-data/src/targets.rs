//! Targets other than one class per example: label lists for multi-label data (`a|b|c`, or a JSON
//! array in the file) and numbers for regression, each checked with file:line errors.

use std::collections::BTreeSet;
use std::path::Path;

use crate::{DataError, LabelSet, TextExample};

/// The labels of one multi-label field: a JSON array of strings (`["a","b"]`), or names split on
/// `separator` (`a|b`). Blanks are dropped; an empty field means no labels.
pub fn label_list(raw: &str, separator: &str) -> Result<Vec<String>, String> {
    let raw = raw.trim();
    if raw.starts_with('[') {
        let values: Vec<serde_json::Value> =
            serde_json::from_str(raw).map_err(|e| format!("invalid label list {raw}: {e}"))?;
        return values
            .into_iter()
            .map(|v| match v {
                serde_json::Value::String(s) => Ok(s.trim().to_string()),
                serde_json::Value::Number(n) => Ok(n.to_string()),
                other => Err(format!("a label must be a string, found {other}")),
            })
            .filter(|l| l.as_ref().map_or(true, |l| !l.is_empty()))
            .collect();
    }
    Ok(raw
        .split(separator)
        .map(str::trim)
        .filter(|l| !l.is_empty())
        .map(str::to_string)
        .collect())
}

fn parse_error(source: &Path, line: usize, message: String) -> DataError {
    DataError::Parse {
        path: source.to_path_buf(),
        line,
        message,
    }
}

fn lists(
    examples: &[TextExample],
    separator: &str,
    source: &Path,
) -> Result<Vec<Vec<String>>, DataError> {
    examples
        .iter()
        .map(|e| {
            label_list(e.label.as_deref().unwrap_or(""), separator)
                .map_err(|m| parse_error(source, e.line, m))
        })
        .collect()
}

/// The sorted distinct labels of multi-label training examples.
pub fn multi_label_set(
    examples: &[TextExample],
    separator: &str,
    source: &Path,
) -> Result<LabelSet, DataError> {
    let names: BTreeSet<String> = lists(examples, separator, source)?
        .into_iter()
        .flatten()
        .collect();
    LabelSet::new(names.into_iter().collect()).map_err(|message| DataError::Labels {
        path: source.to_path_buf(),
        message,
    })
}

/// One row of 0/1 per example, a column per label of `labels`; an unknown label is an error
/// naming the file and line.
pub fn encode_multi_label(
    labels: &LabelSet,
    examples: &[TextExample],
    separator: &str,
    source: &Path,
) -> Result<Vec<Vec<bool>>, DataError> {
    let lists = lists(examples, separator, source)?;
    examples
        .iter()
        .zip(lists)
        .map(|(example, list)| {
            let mut row = vec![false; labels.len()];
            for label in list {
                let index = labels
                    .index_of(&label)
                    .ok_or_else(|| DataError::UnknownLabel {
                        path: source.to_path_buf(),
                        line: example.line,
                        label: label.clone(),
                        known: labels.names().to_vec(),
                    })?;
                row[index] = true;
            }
            Ok(row)
        })
        .collect()
}

/// The number in each example's label field; anything else is an error naming file and line.
pub fn regression_values(examples: &[TextExample], source: &Path) -> Result<Vec<f32>, DataError> {
    examples
        .iter()
        .map(|e| {
            let raw = e.label.as_deref().unwrap_or("").trim();
            match raw.parse::<f64>() {
                Ok(v) if v.is_finite() => Ok(v as f32),
                _ => Err(parse_error(
                    source,
                    e.line,
                    format!("regression target `{raw}` is not a finite number"),
                )),
            }
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::example;

    #[test]
    fn lists_from_separators_and_json_arrays() {
        assert_eq!(label_list("a| b |", "|").unwrap(), ["a", "b"]);
        assert_eq!(label_list(r#"["x","y z"]"#, "|").unwrap(), ["x", "y z"]);
        assert!(label_list("", "|").unwrap().is_empty());
        assert!(label_list("[1, {}]", "|").is_err());
    }

    #[test]
    fn multi_label_rows_and_unknown_labels() {
        let source = Path::new("train.csv");
        let train = [example("b|a", 2), example("c", 3), example("", 4)];
        let set = multi_label_set(&train, "|", source).unwrap();
        assert_eq!(set.names(), ["a", "b", "c"]);
        let rows = encode_multi_label(&set, &train, "|", source).unwrap();
        assert_eq!(rows[0], [true, true, false]);
        assert_eq!(rows[2], [false, false, false]);
        let error = encode_multi_label(&set, &[example("a|q", 9)], "|", Path::new("t.csv"))
            .unwrap_err()
            .to_string();
        assert!(error.starts_with("t.csv:9: label `q`"), "{error}");
    }

    #[test]
    fn regression_values_name_bad_lines() {
        let source = Path::new("r.csv");
        let values = regression_values(&[example("1.5", 2), example(" -2 ", 3)], source).unwrap();
        assert_eq!(values, [1.5, -2.0]);
        let error = regression_values(&[example("abc", 5)], source).unwrap_err();
        assert!(
            error
                .to_string()
                .starts_with("r.csv:5: regression target `abc`")
        );
        assert!(regression_values(&[example("nan", 5)], source).is_err());
    }
}
