//! Reading texts (and their labels) from CSV, JSONL, parquet, or plain text with one text per line.

use std::path::{Path, PathBuf};
use std::str::FromStr;

use serde_json::Value;

use crate::DataError;

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum DataFormat {
    Csv,
    Jsonl,
    Parquet,
    /// One text per line, no labels.
    Lines,
    /// Token-tagged sentences, one token per line (see [`crate::tagged`]).
    Conll,
}

impl DataFormat {
    /// Picks the format from the file extension: `.csv`, `.jsonl`/`.ndjson`, anything else is lines.
    pub fn from_extension(path: &Path) -> Self {
        match path.extension().and_then(|e| e.to_str()) {
            Some("csv") => Self::Csv,
            Some("jsonl") | Some("ndjson") => Self::Jsonl,
            Some("parquet") => Self::Parquet,
            Some("conll") => Self::Conll,
            _ => Self::Lines,
        }
    }
}

impl FromStr for DataFormat {
    type Err = String;

    fn from_str(s: &str) -> Result<Self, Self::Err> {
        match s {
            "csv" => Ok(Self::Csv),
            "jsonl" => Ok(Self::Jsonl),
            "parquet" => Ok(Self::Parquet),
            "lines" | "txt" => Ok(Self::Lines),
            "conll" => Ok(Self::Conll),
            other => Err(format!(
                "unknown format \"{other}\" (expected csv, jsonl, parquet, conll or lines)"
            )),
        }
    }
}

/// One example: the text, its label when a label column was asked for, and the line it came from
/// (1-based, counting the CSV header; a parquet file's row), for error messages.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TextExample {
    /// The text, or an image's path (for an image held in the file: `file#rowN`).
    pub text: String,
    pub label: Option<String>,
    pub line: usize,
    /// An encoded image held in the data file itself (a parquet binary column).
    pub bytes: Option<std::sync::Arc<[u8]>>,
    /// The second text of a pair (a hypothesis, a passage), read from the pair column.
    pub pair: Option<String>,
    /// A third text: an embedding triplet's negative (a passage that does not answer the first).
    pub negative: Option<String>,
}

impl TextExample {
    /// An example without a label or line (a text given directly, an image path).
    pub fn unlabelled(text: impl Into<String>) -> Self {
        Self {
            text: text.into(),
            label: None,
            line: 0,
            bytes: None,
            pair: None,
            negative: None,
        }
    }

    /// A pair of texts without a label or line.
    pub fn unlabelled_pair(text: impl Into<String>, pair: impl Into<String>) -> Self {
        Self {
            pair: Some(pair.into()),
            ..Self::unlabelled(text)
        }
    }
}

/// The columns examples are read from: the text, the second text of a pair, a triplet's third
/// text, the label.
#[derive(Debug, Clone, Copy, Default)]
pub struct Columns<'a> {
    pub text: &'a str,
    pub pair: Option<&'a str>,
    pub negative: Option<&'a str>,
    pub label: Option<&'a str>,
}

/// Reads every example of `path`. `label_column` is required to exist when given. An empty file
/// is an error.
pub fn read_texts(
    path: &Path,
    format: DataFormat,
    text_column: &str,
    label_column: Option<&str>,
) -> Result<Vec<TextExample>, DataError> {
    read_examples(
        path,
        format,
        Columns {
            text: text_column,
            label: label_column,
            ..Columns::default()
        },
    )
}

/// Reads every example of `path` from `columns` (with the pair column, pairs of texts). A column
/// asked for must exist; a plain text file has no columns, so no pairs. An empty file is an
/// error.
pub fn read_examples(
    path: &Path,
    format: DataFormat,
    columns: Columns,
) -> Result<Vec<TextExample>, DataError> {
    if !path.is_file() {
        return Err(DataError::NotFound {
            path: path.to_path_buf(),
        });
    }
    let examples = match format {
        DataFormat::Csv => read_csv(path, columns)?,
        DataFormat::Jsonl => read_jsonl(path, columns)?,
        DataFormat::Parquet => crate::parquet::read_parquet(path, columns)?,
        DataFormat::Lines if columns.pair.is_some() || columns.negative.is_some() => {
            return Err(DataError::Invalid(format!(
                "{}: a text file holds one text per line; pairs of texts need a .csv, .jsonl or \
                 .parquet file with two text columns",
                path.display()
            )));
        }
        DataFormat::Lines => read_lines(path)?,
        DataFormat::Conll if columns.pair.is_some() || columns.negative.is_some() => {
            return Err(DataError::Invalid(format!(
                "{}: a CoNLL file holds tagged words, not pairs of texts",
                path.display()
            )));
        }
        DataFormat::Conll => crate::tagged::read_conll(path)?,
    };
    if examples.is_empty() {
        return Err(DataError::Empty {
            path: path.to_path_buf(),
        });
    }
    Ok(examples)
}

fn io_error(path: &Path) -> impl Fn(std::io::Error) -> DataError + '_ {
    move |source| DataError::Io {
        path: path.to_path_buf(),
        source,
    }
}

fn read_csv(path: &Path, columns: Columns) -> Result<Vec<TextExample>, DataError> {
    let bytes = std::fs::read(path).map_err(io_error(path))?;
    let mut reader = csv::ReaderBuilder::new()
        .flexible(false)
        .from_reader(bytes.as_slice());
    let headers = reader.headers().map_err(|e| csv_error(path, e))?.clone();
    let found: Vec<String> = headers.iter().map(str::to_string).collect();
    let column_index = |column: &str| {
        let mut matching = headers.iter().enumerate().filter(|(_, h)| *h == column);
        let (index, _) = matching.next().ok_or_else(|| DataError::MissingColumn {
            path: path.to_path_buf(),
            column: column.to_string(),
            found: found.clone(),
        })?;
        if matching.next().is_some() {
            return Err(DataError::Parse {
                path: path.to_path_buf(),
                line: 1,
                message: format!(
                    "the header names column `{column}` more than once; rename one of them"
                ),
            });
        }
        Ok(index)
    };
    let text_index = column_index(columns.text)?;
    let pair_index = columns.pair.map(column_index).transpose()?;
    let negative_index = columns.negative.map(column_index).transpose()?;
    let label_index = columns.label.map(column_index).transpose()?;
    let mut examples = Vec::new();
    let mut lines = LineCounter::default();
    for record in reader.records() {
        let record = record.map_err(|e| csv_error(path, e))?;
        let line = record
            .position()
            .map_or(0, |p| lines.line_at(&bytes, p.byte() as usize));
        let field = |i: usize| record.get(i).unwrap_or_default().to_string();
        examples.push(TextExample {
            text: field(text_index),
            label: label_index.map(field),
            line,
            bytes: None,
            pair: pair_index.map(field),
            negative: negative_index.map(field),
        });
    }
    Ok(examples)
}

/// A record's line from its byte offset. csv's own line count puts a record after a CRLF line
/// end or a blank line on the line before it (rust-csv issues 395 and 208), so the line is
/// counted here: the line breaks before the record's first byte, past any line ends the offset
/// still points at. Records come in order, so each byte is counted once.
#[derive(Default)]
struct LineCounter {
    counted: usize,
    breaks: usize,
}

impl LineCounter {
    fn line_at(&mut self, bytes: &[u8], offset: usize) -> usize {
        let mut start = offset.min(bytes.len());
        while matches!(bytes.get(start), Some(b'\n' | b'\r')) {
            start += 1;
        }
        if start > self.counted {
            self.breaks += bytes[self.counted..start]
                .iter()
                .filter(|&&b| b == b'\n')
                .count();
            self.counted = start;
        }
        self.breaks + 1
    }
}

pub(crate) fn csv_error(path: &Path, error: csv::Error) -> DataError {
    let line = error.position().map_or(0, |p| p.line() as usize).max(1);
    let parse = |message: String| DataError::Parse {
        path: path.to_path_buf(),
        line,
        message,
    };
    match error.into_kind() {
        csv::ErrorKind::Io(source) => DataError::Io {
            path: path.to_path_buf(),
            source,
        },
        csv::ErrorKind::Utf8 { err, .. } => parse(format!(
            "not UTF-8 text (field {} has an invalid byte); is this a CSV file?",
            err.field() + 1
        )),
        csv::ErrorKind::UnequalLengths {
            expected_len, len, ..
        } => parse(format!(
            "a row with {len} fields where the header has {expected_len}"
        )),
        kind => parse(format!("invalid CSV: {kind:?}")),
    }
}

/// A file's text; bytes that are not UTF-8 are an error naming the line.
fn read_utf8(path: &Path) -> Result<String, DataError> {
    let bytes = std::fs::read(path).map_err(io_error(path))?;
    String::from_utf8(bytes).map_err(|e| {
        let valid = &e.as_bytes()[..e.utf8_error().valid_up_to()];
        DataError::Parse {
            path: path.to_path_buf(),
            line: valid.iter().filter(|&&b| b == b'\n').count() + 1,
            message: format!(
                "not UTF-8 text (an invalid byte at offset {}); is this a text file?",
                valid.len()
            ),
        }
    })
}

fn read_jsonl(path: &Path, columns: Columns) -> Result<Vec<TextExample>, DataError> {
    let content = read_utf8(path)?;
    let mut examples = Vec::new();
    for (index, raw) in content.lines().enumerate() {
        let line = index + 1;
        if raw.trim().is_empty() {
            continue;
        }
        let parse_error = |message: String| DataError::Parse {
            path: path.to_path_buf(),
            line,
            message,
        };
        let value: Value =
            serde_json::from_str(raw).map_err(|e| parse_error(format!("invalid JSON: {e}")))?;
        let object = value
            .as_object()
            .ok_or_else(|| parse_error("expected a JSON object".into()))?;
        let field = |column: &str| -> Result<String, DataError> {
            match object.get(column) {
                Some(Value::String(s)) => Ok(s.clone()),
                Some(Value::Number(n)) => Ok(n.to_string()),
                Some(Value::Bool(b)) => Ok(b.to_string()),
                // A label list (multi-label data) is kept as its JSON text.
                Some(array @ Value::Array(_)) => Ok(array.to_string()),
                // An empty field, which the reader's caller judges.
                Some(Value::Null) => Ok(String::new()),
                Some(other) => Err(parse_error(format!(
                    "field `{column}` must be a string or number, found {other}"
                ))),
                None => Err(DataError::MissingColumn {
                    path: PathBuf::from(format!("{}:{line}", path.display())),
                    column: column.to_string(),
                    found: object.keys().cloned().collect(),
                }),
            }
        };
        examples.push(TextExample {
            text: field(columns.text)?,
            label: columns.label.map(field).transpose()?,
            line,
            bytes: None,
            pair: columns.pair.map(field).transpose()?,
            negative: columns.negative.map(field).transpose()?,
        });
    }
    Ok(examples)
}

fn read_lines(path: &Path) -> Result<Vec<TextExample>, DataError> {
    let content = read_utf8(path)?;
    Ok(content
        .lines()
        .enumerate()
        .filter(|(_, text)| !text.trim().is_empty())
        .map(|(index, text)| TextExample {
            line: index + 1,
            ..TextExample::unlabelled(text)
        })
        .collect())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn write(name: &str, content: &str) -> (tempfile::TempDir, PathBuf) {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join(name);
        std::fs::write(&path, content).unwrap();
        (dir, path)
    }

    /// Windows line ends (what Python's csv module writes) and blank lines keep each row's line.
    #[test]
    fn csv_lines_count_crlf_line_ends_and_blank_lines() {
        let (_dir, path) = write(
            "crlf.csv",
            "text,label\r\na,x\r\n\"b\r\nc\",y\r\n\r\nd,z\r\ne,w\n",
        );
        let examples = read_texts(&path, DataFormat::Csv, "text", Some("label")).unwrap();
        let lines: Vec<usize> = examples.iter().map(|e| e.line).collect();
        assert_eq!(lines, [2, 3, 6, 7]);
        assert_eq!(examples[1].text, "b\r\nc");
    }

    #[test]
    fn reads_csv_with_quotes_and_line_numbers() {
        let (_d, path) = write(
            "a.csv",
            "id,review,score\n1,\"Good, \"\"very\"\" good\",great\n2,bad,other\n",
        );
        let examples = read_texts(&path, DataFormat::Csv, "review", Some("score")).unwrap();
        assert_eq!(examples.len(), 2);
        assert_eq!(examples[0].text, "Good, \"very\" good");
        assert_eq!(examples[0].label.as_deref(), Some("great"));
        assert_eq!(examples[1].line, 3);
    }

    #[test]
    fn missing_csv_column_names_file_and_columns() {
        let (_d, path) = write("a.csv", "text,label\nx,y\n");
        let error = read_texts(&path, DataFormat::Csv, "review", Some("label")).unwrap_err();
        let message = error.to_string();
        assert!(
            message.contains("a.csv")
                && message.contains("`review`")
                && message.contains("text, label"),
            "{message}"
        );
    }

    #[test]
    fn empty_file_is_an_error() {
        let (_d, path) = write("a.csv", "review,score\n");
        let error = read_texts(&path, DataFormat::Csv, "review", Some("score")).unwrap_err();
        assert!(matches!(error, DataError::Empty { .. }), "{error}");
    }

    #[test]
    fn a_csv_column_named_twice_is_refused() {
        let (_d, path) = write("a.csv", "text,label,text\nx,y,z\n");
        let error = read_texts(&path, DataFormat::Csv, "text", Some("label")).unwrap_err();
        assert_eq!(
            error.to_string(),
            format!(
                "{}:1: the header names column `text` more than once; rename one of them",
                path.display()
            )
        );
        // A repeated column that is not read does not matter.
        let (_d, path) = write("b.csv", "text,label,x,x\nt,y,1,2\n");
        assert!(read_texts(&path, DataFormat::Csv, "text", Some("label")).is_ok());
    }

    #[test]
    fn a_jsonl_null_is_an_empty_field() {
        let (_d, path) = write("a.jsonl", "{\"t\":\"hi\",\"y\":null}\n");
        let examples = read_texts(&path, DataFormat::Jsonl, "t", Some("y")).unwrap();
        assert_eq!(examples[0].label.as_deref(), Some(""));
    }

    #[test]
    fn reads_jsonl_and_reports_bad_lines() {
        let (_d, path) = write(
            "a.jsonl",
            "{\"t\":\"hi\",\"y\":1}\n\n{\"t\":\"yo\",\"y\":\"b\"}\n",
        );
        let examples = read_texts(&path, DataFormat::Jsonl, "t", Some("y")).unwrap();
        assert_eq!(examples[0].label.as_deref(), Some("1"));
        assert_eq!(examples[1].line, 3);
        let (_d, path) = write("b.jsonl", "{\"t\":\"hi\"}\nnot json\n");
        let error = read_texts(&path, DataFormat::Jsonl, "t", None).unwrap_err();
        assert!(error.to_string().contains("b.jsonl:2"), "{error}");
    }
}
