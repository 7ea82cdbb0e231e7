//! Reading examples from Apache Parquet files, as Hugging Face datasets publishes them, with the
//! `parquet` crate's Arrow reader. Only the asked-for columns are read.
//!
//! Text columns may be string, large-string, string-view or dictionary-encoded strings; labels
//! may be integers, strings, booleans or floats, and a list column holds a multi-label field
//! (kept as its JSON text, as a JSONL array is). Integer labels of a datasets `ClassLabel` (or a
//! list of them) are named from the file's `huggingface` metadata, as `datasets` shows them. An
//! image column may be binary (the encoded file) or datasets' `Image` struct (`{bytes, path}`);
//! its bytes travel with the example. Rows count from 1 in error messages.

use std::fs::File;
use std::path::Path;
use std::sync::Arc;

use arrow_array::cast::AsArray;
use arrow_array::types::{
    Float32Type, Float64Type, Int8Type, Int16Type, Int32Type, Int64Type, UInt8Type, UInt16Type,
    UInt32Type, UInt64Type,
};
use arrow_array::{Array, ArrayRef};
use arrow_schema::DataType;
use parquet::arrow::ProjectionMask;
use parquet::arrow::arrow_reader::ParquetRecordBatchReaderBuilder;

use crate::{Columns, DataError, TextExample};

/// One cell, as graft uses it.
pub enum Cell {
    Text(String),
    Bytes(Vec<u8>),
}

/// The examples of a parquet file: `text_column` (text, an image path or image bytes) and
/// `label_column` when given.
pub fn read_parquet(path: &Path, columns: Columns) -> Result<Vec<TextExample>, DataError> {
    guarded(path, || read_rows(path, columns))
}

/// Runs a read, turning a panic inside the parquet reader (a corrupt file it does not check)
/// into an error naming the file.
fn guarded<T>(path: &Path, read: impl FnOnce() -> Result<T, DataError>) -> Result<T, DataError> {
    crate::guard::catch(read).unwrap_or_else(|detail| {
        Err(DataError::Parquet {
            path: path.to_path_buf(),
            message: format!("the parquet reader failed on this file (is it corrupt?) {detail}")
                .trim_end()
                .to_string(),
        })
    })
}

/// The Arrow reader of a parquet file, before any column is chosen.
fn open(path: &Path) -> Result<ParquetRecordBatchReaderBuilder<File>, DataError> {
    let file = File::open(path).map_err(|source| DataError::Io {
        path: path.to_path_buf(),
        source,
    })?;
    ParquetRecordBatchReaderBuilder::try_new(file).map_err(|e| DataError::Parquet {
        path: path.to_path_buf(),
        message: e.to_string(),
    })
}

fn read_rows(path: &Path, columns: Columns) -> Result<Vec<TextExample>, DataError> {
    let (text_column, label_column) = (columns.text, columns.label);
    let invalid = |message: String| DataError::Parquet {
        path: path.to_path_buf(),
        message,
    };
    let builder = open(path)?;
    let fields: Vec<String> = builder
        .schema()
        .fields()
        .iter()
        .map(|f| f.name().clone())
        .collect();
    let index =
        |column: &str| {
            let index = fields.iter().position(|f| f == column).ok_or_else(|| {
                DataError::MissingColumn {
                    path: path.to_path_buf(),
                    column: column.to_string(),
                    found: fields.clone(),
                }
            })?;
            if fields.iter().filter(|f| *f == column).count() > 1 {
                return Err(invalid(format!(
                    "the schema names column `{column}` more than once"
                )));
            }
            Ok(index)
        };
    let class_names = label_column.and_then(|c| class_label_names(builder.schema().metadata(), c));
    let text_index = index(text_column)?;
    let label_index = label_column.map(index).transpose()?;
    let pair_index = columns.pair.map(index).transpose()?;
    let negative_index = columns.negative.map(index).transpose()?;
    let mut roots = vec![text_index];
    roots.extend(label_index);
    roots.extend(pair_index);
    roots.extend(negative_index);
    let mask = ProjectionMask::roots(builder.parquet_schema(), roots.iter().copied());
    let reader = builder
        .with_projection(mask)
        .build()
        .map_err(|e| invalid(e.to_string()))?;

    let mut examples = Vec::new();
    for batch in reader {
        let batch = batch.map_err(|e| invalid(e.to_string()))?;
        let column = |name: &str| {
            batch
                .column_by_name(name)
                .cloned()
                .ok_or_else(|| invalid(format!("column `{name}` missing from a row group")))
        };
        let texts = column(text_column)?;
        let labels = label_column.map(column).transpose()?;
        let pairs = columns.pair.map(column).transpose()?;
        let negatives = columns.negative.map(column).transpose()?;
        for row in 0..batch.num_rows() {
            let line = examples.len() + 1;
            // A null is an empty field, which the reader's caller judges.
            let at = |array: &ArrayRef, name: &str| {
                if array.is_null(row) {
                    return Ok(Cell::Text(String::new()));
                }
                cell(array, row).map_err(|message| DataError::Parse {
                    path: path.to_path_buf(),
                    line,
                    message: format!("row {line}, column `{name}`: {message}"),
                })
            };
            let (text, bytes) = match at(&texts, text_column)? {
                Cell::Text(text) => (text, None),
                Cell::Bytes(bytes) => (
                    format!("{}#row{line}", path.display()),
                    Some(Arc::<[u8]>::from(bytes)),
                ),
            };
            let label = match (&labels, label_column) {
                (Some(array), Some(name)) => match at(array, name)? {
                    Cell::Text(label) => Some(match &class_names {
                        Some(names) => {
                            name_classes(&label, names).map_err(|message| DataError::Parse {
                                path: path.to_path_buf(),
                                line,
                                message: format!("row {line}, column `{name}`: {message}"),
                            })?
                        }
                        None => label,
                    }),
                    Cell::Bytes(_) => {
                        return Err(DataError::Parse {
                            path: path.to_path_buf(),
                            line,
                            message: format!("row {line}: label column `{name}` holds bytes"),
                        });
                    }
                },
                _ => None,
            };
            let second_text =
                |array: &Option<ArrayRef>, name: Option<&str>, role: &str| match (array, name) {
                    (Some(array), Some(name)) => match at(array, name)? {
                        Cell::Text(text) => Ok(Some(text)),
                        Cell::Bytes(_) => Err(DataError::Parse {
                            path: path.to_path_buf(),
                            line,
                            message: format!("row {line}: {role} column `{name}` holds bytes"),
                        }),
                    },
                    _ => Ok(None),
                };
            let pair = second_text(&pairs, columns.pair, "pair")?;
            let negative = second_text(&negatives, columns.negative, "negative")?;
            examples.push(TextExample {
                text,
                label,
                line,
                bytes,
                pair,
                negative,
            });
        }
    }
    Ok(examples)
}

/// The value at `row` of `array`; nulls and unsupported types are errors.
fn cell(array: &ArrayRef, row: usize) -> Result<Cell, String> {
    if array.is_null(row) {
        return Err("empty (null)".into());
    }
    macro_rules! number {
        ($t:ty) => {
            Cell::Text(array.as_primitive::<$t>().value(row).to_string())
        };
    }
    Ok(match array.data_type() {
        DataType::Utf8 => Cell::Text(array.as_string::<i32>().value(row).to_string()),
        DataType::LargeUtf8 => Cell::Text(array.as_string::<i64>().value(row).to_string()),
        DataType::Utf8View => Cell::Text(array.as_string_view().value(row).to_string()),
        DataType::Binary => Cell::Bytes(array.as_binary::<i32>().value(row).to_vec()),
        DataType::LargeBinary => Cell::Bytes(array.as_binary::<i64>().value(row).to_vec()),
        DataType::BinaryView => Cell::Bytes(array.as_binary_view().value(row).to_vec()),
        DataType::Boolean => Cell::Text(array.as_boolean().value(row).to_string()),
        DataType::Int8 => number!(Int8Type),
        DataType::Int16 => number!(Int16Type),
        DataType::Int32 => number!(Int32Type),
        DataType::Int64 => number!(Int64Type),
        DataType::UInt8 => number!(UInt8Type),
        DataType::UInt16 => number!(UInt16Type),
        DataType::UInt32 => number!(UInt32Type),
        DataType::UInt64 => number!(UInt64Type),
        DataType::Float32 => number!(Float32Type),
        DataType::Float64 => number!(Float64Type),
        DataType::Dictionary(_, _) => {
            let dictionary = array.as_any_dictionary();
            let key = dictionary.normalized_keys()[row];
            cell(dictionary.values(), key)?
        }
        DataType::List(_) => list(&array.as_list::<i32>().value(row))?,
        DataType::LargeList(_) => list(&array.as_list::<i64>().value(row))?,
        DataType::FixedSizeList(_, _) => list(&array.as_fixed_size_list().value(row))?,
        // Hugging Face datasets' `Image` feature: the encoded file, or a path when not embedded.
        DataType::Struct(_) => {
            let image = array.as_struct();
            let part = |name: &str| image.column_by_name(name).filter(|c| !c.is_null(row));
            match (part("bytes"), part("path")) {
                (Some(bytes), _) => cell(bytes, row)?,
                (None, Some(path)) => cell(path, row)?,
                (None, None) => {
                    return Err(
                        "a struct column must be an image with `bytes` or `path` (datasets' Image)"
                            .into(),
                    );
                }
            }
        }
        other => return Err(format!("unsupported column type {other}")),
    })
}

/// A list cell (a multi-label field) as JSON text: strings quoted, numbers bare.
fn list(values: &ArrayRef) -> Result<Cell, String> {
    let numeric = values.data_type().is_numeric();
    let items = (0..values.len())
        .map(|i| match cell(values, i)? {
            Cell::Text(text) if numeric => Ok(serde_json::Value::from(
                serde_json::from_str::<serde_json::Number>(&text).map_err(|e| e.to_string())?,
            )),
            Cell::Text(text) => Ok(serde_json::Value::String(text)),
            Cell::Bytes(_) => Err("a list of bytes is not a label list".to_string()),
        })
        .collect::<Result<Vec<_>, String>>()?;
    Ok(Cell::Text(serde_json::Value::Array(items).to_string()))
}

/// The class names of `column` when the file's `huggingface` metadata (written by `datasets`)
/// declares it a `ClassLabel`, or a list (`Sequence`/`List`) of one.
fn class_label_names(metadata: &arrow_schema::Metadata, column: &str) -> Option<Vec<String>> {
    let info: serde_json::Value = serde_json::from_str(metadata.get("huggingface")?).ok()?;
    let feature = info.get("info")?.get("features")?.get(column)?;
    let class_label = match feature {
        serde_json::Value::Array(items) => items.first()?,
        object if object.get("_type")?.as_str()? == "ClassLabel" => object,
        object => object.get("feature")?,
    };
    if class_label.get("_type")?.as_str()? != "ClassLabel" {
        return None;
    }
    serde_json::from_value(class_label.get("names")?.clone()).ok()
}

/// A class id (or a JSON list of them) replaced by its name.
fn name_classes(label: &str, names: &[String]) -> Result<String, String> {
    let name = |id: &str| {
        id.trim()
            .parse::<usize>()
            .ok()
            .and_then(|i| names.get(i))
            .cloned()
            .ok_or_else(|| {
                format!(
                    "class id {id} is not one of the {} ClassLabel names in the file's metadata",
                    names.len()
                )
            })
    };
    if label.starts_with('[') {
        let ids: Vec<serde_json::Value> = serde_json::from_str(label).map_err(|e| e.to_string())?;
        let named = ids
            .iter()
            .map(|id| name(&id.to_string()))
            .collect::<Result<Vec<_>, _>>()?;
        return Ok(serde_json::to_string(&named).expect("strings serialize"));
    }
    name(label)
}

/// A column's name and its cells.
pub type NamedCells = (String, Vec<Option<Cell>>);

/// Up to `limit` rows of every column of a parquet file, for a first look at the data (`None`:
/// a null or a type graft does not read). Class ids are named as in [`read_parquet`].
pub fn read_columns(path: &Path, limit: usize) -> Result<Vec<NamedCells>, DataError> {
    guarded(path, || read_all_columns(path, limit))
}

fn read_all_columns(path: &Path, limit: usize) -> Result<Vec<NamedCells>, DataError> {
    let invalid = |message: String| DataError::Parquet {
        path: path.to_path_buf(),
        message,
    };
    let builder = open(path)?;
    let metadata = builder.schema().metadata().clone();
    let mut columns: Vec<NamedCells> = builder
        .schema()
        .fields()
        .iter()
        .map(|f| (f.name().clone(), Vec::new()))
        .collect();
    let reader = builder
        .with_batch_size(limit.clamp(1, 1024))
        .build()
        .map_err(|e| invalid(e.to_string()))?;
    let mut rows = 0;
    for batch in reader {
        let batch = batch.map_err(|e| invalid(e.to_string()))?;
        let take = batch.num_rows().min(limit - rows);
        for (name, values) in &mut columns {
            let names = class_label_names(&metadata, name);
            let Some(array) = batch.column_by_name(name) else {
                continue;
            };
            values.extend((0..take).map(|row| match cell(array, row).ok()? {
                Cell::Text(text) => Some(Cell::Text(match &names {
                    Some(names) => name_classes(&text, names).unwrap_or(text),
                    None => text,
                })),
                bytes => Some(bytes),
            }));
        }
        rows += take;
        if rows >= limit {
            break;
        }
    }
    Ok(columns)
}
