//! A first look at a data file's columns (CSV, JSONL, parquet): their names and the kind of
//! their values, so that a starter config can name the text, image and label columns and the
//! task without the user saying which.

use std::path::Path;

use crate::parquet::Cell;
use crate::text::csv_error;
use crate::{DataError, DataFormat};

/// One value, classified.
#[derive(Debug, Clone, PartialEq)]
pub enum Value {
    Text(String),
    Number(f64),
    /// A list of labels (a JSON array, a parquet list).
    List(Vec<String>),
    /// Encoded bytes (a parquet image column).
    Bytes,
    Missing,
}

impl Value {
    /// Classifies a field as read from a file: a JSON array is a list, a number a number.
    pub fn classify(raw: &str) -> Self {
        let trimmed = raw.trim();
        if trimmed.starts_with('[')
            && let Ok(items) = serde_json::from_str::<Vec<serde_json::Value>>(trimmed)
        {
            return Self::List(
                items
                    .into_iter()
                    .map(|v| match v {
                        serde_json::Value::String(s) => s,
                        other => other.to_string(),
                    })
                    .collect(),
            );
        }
        match trimmed.parse::<f64>() {
            Ok(number) if number.is_finite() => Self::Number(number),
            _ => Self::Text(raw.to_string()),
        }
    }
}

#[derive(Debug, Clone, PartialEq)]
pub struct Column {
    pub name: String,
    pub values: Vec<Value>,
}

/// Up to `limit` rows of every column of `path`.
pub fn columns(path: &Path, format: DataFormat, limit: usize) -> Result<Vec<Column>, DataError> {
    if !path.is_file() {
        return Err(DataError::NotFound {
            path: path.to_path_buf(),
        });
    }
    let columns = match format {
        DataFormat::Parquet => crate::parquet::read_columns(path, limit)?
            .into_iter()
            .map(|(name, cells)| Column {
                name,
                values: cells
                    .into_iter()
                    .map(|cell| match cell {
                        Some(Cell::Text(text)) => Value::classify(&text),
                        Some(Cell::Bytes(_)) => Value::Bytes,
                        None => Value::Missing,
                    })
                    .collect(),
            })
            .collect(),
        DataFormat::Csv => {
            let mut reader = csv::Reader::from_path(path).map_err(|e| csv_error(path, e))?;
            let mut columns: Vec<Column> = reader
                .headers()
                .map_err(|e| csv_error(path, e))?
                .iter()
                .map(|name| Column {
                    name: name.to_string(),
                    values: Vec::new(),
                })
                .collect();
            for record in reader.records().take(limit) {
                let record = record.map_err(|e| csv_error(path, e))?;
                for (column, field) in columns.iter_mut().zip(record.iter()) {
                    column.values.push(Value::classify(field));
                }
            }
            columns
        }
        DataFormat::Jsonl => {
            let examples = std::fs::read_to_string(path).map_err(|source| DataError::Io {
                path: path.to_path_buf(),
                source,
            })?;
            let mut columns: Vec<Column> = Vec::new();
            let rows = examples
                .lines()
                .filter(|l| !l.trim().is_empty())
                .take(limit);
            for (index, line) in rows.enumerate() {
                let object: serde_json::Map<String, serde_json::Value> = serde_json::from_str(line)
                    .map_err(|e| DataError::Parse {
                        path: path.to_path_buf(),
                        line: index + 1,
                        message: format!("expected a JSON object: {e}"),
                    })?;
                for (name, value) in object {
                    let position = match columns.iter().position(|c| c.name == name) {
                        Some(i) => i,
                        None => {
                            columns.push(Column {
                                name,
                                values: vec![Value::Missing; index],
                            });
                            columns.len() - 1
                        }
                    };
                    let column = &mut columns[position];
                    column.values.resize(index, Value::Missing);
                    column.values.push(match value {
                        serde_json::Value::String(s) => Value::classify(&s),
                        serde_json::Value::Null | serde_json::Value::Object(_) => Value::Missing,
                        other => Value::classify(&other.to_string()),
                    });
                }
            }
            columns
        }
        // A CoNLL file's sentences as JSON data's would be: a `tokens` and a `tags` list column.
        DataFormat::Conll => {
            let sentences = crate::tagged::read_conll(path)?;
            let sentences = &sentences[..sentences.len().min(limit)];
            let mut columns = vec![Column {
                name: "tokens".into(),
                values: sentences.iter().map(|e| Value::classify(&e.text)).collect(),
            }];
            if sentences.iter().all(|e| e.label.is_some()) {
                columns.push(Column {
                    name: "tags".into(),
                    values: sentences
                        .iter()
                        .map(|e| Value::classify(e.label.as_deref().unwrap_or_default()))
                        .collect(),
                });
            }
            columns
        }
        DataFormat::Lines => vec![Column {
            name: String::new(),
            values: crate::read_texts(path, format, "", None)?
                .into_iter()
                .take(limit)
                .map(|e| Value::Text(e.text))
                .collect(),
        }],
    };
    if columns.iter().all(|c| c.values.is_empty()) {
        return Err(DataError::Empty {
            path: path.to_path_buf(),
        });
    }
    Ok(columns)
}
