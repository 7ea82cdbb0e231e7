//! Rows that must never reach training or evaluation silently: an empty text or image path, an
//! empty label where the task needs one (single-label classification, regression), a regression
//! target that is not a number, and a label outside the run's labels. Each stops the run with an
//! error naming its file and line (a parquet file's row) unless `[data] bad_rows = "skip"`, which
//! leaves such rows out and counts them per file. In multi-label data an empty field is a row
//! with no labels, which is valid.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

use graft_data::{DataError, TextExample};

use crate::config::BadRows;
use crate::error::TrainError;
use crate::task::{Task, TaskSpec};

/// How many skipped rows a summary shows by line.
const SHOWN: usize = 5;

/// The rows of one file that were left out, with why.
#[derive(Debug, Clone, PartialEq)]
pub struct SkippedRows {
    pub path: PathBuf,
    /// Line (a parquet file's row) and reason, in file order.
    pub rows: Vec<(usize, String)>,
}

impl SkippedRows {
    /// `skipped 3 bad rows of train.csv: line 4 (empty label), line 9 (empty text), ...`.
    pub fn summary(&self) -> String {
        let unit = if is_parquet(&self.path) {
            "row"
        } else {
            "line"
        };
        let mut shown: Vec<String> = self
            .rows
            .iter()
            .take(SHOWN)
            .map(|(line, why)| format!("{unit} {line} ({why})"))
            .collect();
        if self.rows.len() > SHOWN {
            shown.push(format!("and {} more", self.rows.len() - SHOWN));
        }
        format!(
            "skipped {} bad row{} of {}: {}",
            self.rows.len(),
            if self.rows.len() == 1 { "" } else { "s" },
            self.path.display(),
            shown.join(", ")
        )
    }
}

/// Applies one [`BadRows`] policy to every file of a run and keeps what it skipped.
#[derive(Debug)]
pub struct Screen {
    policy: BadRows,
    /// What a bad row's error tells the user to do.
    hint: &'static str,
    skipped: Vec<SkippedRows>,
}

impl Screen {
    /// For a run's data files, under the config's policy.
    pub fn new(policy: BadRows) -> Self {
        Self {
            policy,
            hint: "fix or remove the row, or set [data] bad_rows = \"skip\" to leave such rows out",
            skipped: Vec::new(),
        }
    }

    /// For the files given to eval, predict and embed, whose every row must be good (their
    /// outputs follow the file's rows).
    pub fn inputs() -> Self {
        Self {
            policy: BadRows::Error,
            hint: "fix or remove the row",
            skipped: Vec::new(),
        }
    }

    /// The examples of `path` that `problem` finds nothing wrong with. Under
    /// [`BadRows::Error`] the first bad row is an error naming the file and line.
    pub fn apply(
        &mut self,
        path: &Path,
        examples: Vec<TextExample>,
        problem: impl Fn(&TextExample) -> Option<String>,
    ) -> Result<Vec<TextExample>, TrainError> {
        let mut kept = Vec::with_capacity(examples.len());
        let mut skipped = Vec::new();
        for example in examples {
            match problem(&example) {
                None => kept.push(example),
                Some(why) if self.policy == BadRows::Skip => skipped.push((example.line, why)),
                Some(why) => return Err(bad_row(path, &example, &format!("{why}; {}", self.hint))),
            }
        }
        if !skipped.is_empty() {
            match self.skipped.iter_mut().find(|s| s.path == path) {
                Some(earlier) => earlier.rows.extend(skipped),
                None => self.skipped.push(SkippedRows {
                    path: path.to_path_buf(),
                    rows: skipped,
                }),
            }
        }
        Ok(kept)
    }

    pub fn into_skipped(self) -> Vec<SkippedRows> {
        self.skipped
    }
}

/// The count of skipped rows per file, as `graft.json` keeps it.
pub fn counts(skipped: &[SkippedRows]) -> BTreeMap<String, usize> {
    skipped
        .iter()
        .map(|s| (s.path.display().to_string(), s.rows.len()))
        .collect()
}

fn is_parquet(path: &Path) -> bool {
    path.extension().is_some_and(|e| e == "parquet")
}

fn bad_row(path: &Path, example: &TextExample, why: &str) -> TrainError {
    let row = if is_parquet(path) {
        format!("row {}: ", example.line)
    } else {
        String::new()
    };
    if example.line == 0 {
        return TrainError::Config {
            path: PathBuf::from(&example.text),
            message: why.to_string(),
        };
    }
    TrainError::Data(DataError::Parse {
        path: path.to_path_buf(),
        line: example.line,
        message: format!("{row}{why}"),
    })
}

/// An input nothing can be computed from: an empty text (either of a pair), or an empty image
/// path.
pub fn input_problem(example: &TextExample) -> Option<String> {
    if example.bytes.is_none() && example.text.trim().is_empty() {
        return Some("empty text".into());
    }
    if example
        .pair
        .as_ref()
        .is_some_and(|pair| pair.trim().is_empty())
    {
        return Some("empty second text of the pair".into());
    }
    example
        .negative
        .as_ref()
        .filter(|negative| negative.trim().is_empty())
        .map(|_| "empty negative text".into())
}

/// What is wrong with a labelled row of `task` before any label set is known: its input, or its
/// label as the task sees it (an empty label where the task needs one, a regression target that
/// is not a number).
pub fn row_problem(task: Task, example: &TextExample) -> Option<String> {
    if let Some(problem) = input_problem(example) {
        return Some(problem);
    }
    let label = example.label.as_deref().map(str::trim).unwrap_or("");
    task.logic().row_problem(label)
}

/// A label outside `spec`'s labels (classification, multi-label); regression has none.
pub fn label_problem(spec: &TaskSpec, example: &TextExample) -> Option<String> {
    let raw = example.label.as_deref().unwrap_or("");
    spec.logic().label_problem(spec, raw)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn row(text: &str, label: &str, line: usize) -> TextExample {
        TextExample {
            text: text.into(),
            label: Some(label.into()),
            line,
            bytes: None,
            pair: None,
            negative: None,
        }
    }

    #[test]
    fn empty_labels_are_bad_except_in_multi_label_data() {
        let empty = row("good tea", " ", 3);
        assert_eq!(
            row_problem(Task::Classification, &empty).as_deref(),
            Some("empty label")
        );
        assert_eq!(
            row_problem(Task::Regression, &empty).as_deref(),
            Some("empty label")
        );
        assert_eq!(row_problem(Task::MultiLabel, &empty), None);
        assert_eq!(
            row_problem(Task::MultiLabel, &row("  ", "a", 4)).as_deref(),
            Some("empty text")
        );
        assert!(
            row_problem(Task::Regression, &row("x", "nan", 5))
                .unwrap()
                .contains("not a finite number")
        );
        assert_eq!(row_problem(Task::Regression, &row("x", "2.5", 5)), None);
    }

    #[test]
    fn errors_name_file_line_and_the_way_on() {
        let mut screen = Screen::new(BadRows::Error);
        let rows = vec![row("a", "x", 2), row("b", "", 3)];
        let error = screen
            .apply(Path::new("train.csv"), rows, |e| {
                row_problem(Task::Classification, e)
            })
            .unwrap_err()
            .to_string();
        assert!(
            error.starts_with("train.csv:3: empty label; fix or remove the row"),
            "{error}"
        );
        assert!(error.contains("bad_rows = \"skip\""), "{error}");
        let mut screen = Screen::new(BadRows::Error);
        let error = screen
            .apply(Path::new("t.parquet"), vec![row("", "x", 7)], |e| {
                row_problem(Task::Classification, e)
            })
            .unwrap_err()
            .to_string();
        assert!(
            error.starts_with("t.parquet:7: row 7: empty text"),
            "{error}"
        );
    }

    #[test]
    fn skipping_keeps_the_rest_and_counts_per_file() {
        let mut screen = Screen::new(BadRows::Skip);
        let rows: Vec<TextExample> = (0..8)
            .map(|i| row("t", if i % 4 == 0 { "" } else { "a" }, i + 2))
            .collect();
        let kept = screen
            .apply(Path::new("train.csv"), rows, |e| {
                row_problem(Task::Classification, e)
            })
            .unwrap();
        assert_eq!(kept.len(), 6);
        let spec = TaskSpec {
            task: Task::Classification,
            labels: vec!["a".into(), "b".into()],
            threshold: 0.5,
            separator: "|".into(),
        };
        let kept = screen
            .apply(Path::new("train.csv"), vec![row("t", "c", 20)], |e| {
                label_problem(&spec, e)
            })
            .unwrap();
        assert!(kept.is_empty());
        let skipped = screen.into_skipped();
        assert_eq!(counts(&skipped).get("train.csv"), Some(&3));
        assert_eq!(
            skipped[0].summary(),
            "skipped 3 bad rows of train.csv: line 2 (empty label), line 6 (empty label), line \
             20 (label `c` is not one of the training labels (a, b))"
        );
    }

    #[test]
    fn multi_label_rows_with_unknown_labels() {
        let spec = TaskSpec {
            task: Task::MultiLabel,
            labels: vec!["a".into(), "b".into()],
            threshold: 0.5,
            separator: "|".into(),
        };
        assert_eq!(label_problem(&spec, &row("t", "a|b", 2)), None);
        assert_eq!(label_problem(&spec, &row("t", "", 2)), None);
        assert!(
            label_problem(&spec, &row("t", "a|zz", 2))
                .unwrap()
                .starts_with("label `zz`")
        );
    }
}
