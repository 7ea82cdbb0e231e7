//! Token-tagged sentences (named entities, PII tags): CoNLL files, and the word and tag lists of
//! JSONL/parquet rows. A sentence travels as a [`TextExample`] whose text is the JSON array of its
//! words and whose label is the JSON array of its tags, so splitting, screening and label sets
//! treat it as any other example; [`words_and_tags`] reads it back.
//!
//! Words are aligned with sub-word tokens as transformers' token-classification recipe does
//! (`run_ner.py`): the first token of each word carries the word's tag, the others are left out
//! of the loss, or with `all_subwords` carry it too (a `B-` tag as `I-` after the first).

use std::path::Path;

use serde_json::Value;

use crate::{DataError, TextExample};

/// Reads a CoNLL file: one token per line with its fields separated by whitespace (the word
/// first, the tag last, as CoNLL-2003's `word POS chunk NER` or WNUT's `word<TAB>tag`), a blank
/// line between sentences, `-DOCSTART-` lines skipped. A one-field file has words only. A line
/// with another number of fields than its sentence's first is an error naming it.
pub fn read_conll(path: &Path) -> Result<Vec<TextExample>, DataError> {
    let bytes = std::fs::read(path).map_err(|source| DataError::Io {
        path: path.to_path_buf(),
        source,
    })?;
    let content = String::from_utf8(bytes).map_err(|e| {
        let valid = &e.as_bytes()[..e.utf8_error().valid_up_to()];
        DataError::Parse {
            path: path.to_path_buf(),
            line: valid.iter().filter(|&&b| b == b'\n').count() + 1,
            message: "not UTF-8 text; is this a CoNLL file?".into(),
        }
    })?;
    let mut examples = Vec::new();
    let mut sentence = Sentence::default();
    for (index, raw) in content.lines().enumerate() {
        let line = index + 1;
        let fields: Vec<&str> = raw.split_whitespace().collect();
        if fields.is_empty() {
            examples.extend(sentence.finish());
            continue;
        }
        if fields[0] == "-DOCSTART-" {
            examples.extend(sentence.finish());
            continue;
        }
        if sentence.words.is_empty() {
            sentence.line = line;
            sentence.fields = fields.len();
        } else if fields.len() != sentence.fields {
            return Err(DataError::Parse {
                path: path.to_path_buf(),
                line,
                message: format!(
                    "{} fields where the sentence's first line (line {}) has {}; a CoNLL line \
                     is the word, then its other fields, then its tag",
                    fields.len(),
                    sentence.line,
                    sentence.fields
                ),
            });
        }
        sentence.words.push(fields[0].to_string());
        if fields.len() > 1 {
            sentence.tags.push(fields[fields.len() - 1].to_string());
        }
    }
    examples.extend(sentence.finish());
    if examples.is_empty() {
        return Err(DataError::Empty {
            path: path.to_path_buf(),
        });
    }
    Ok(examples)
}

#[derive(Default)]
struct Sentence {
    words: Vec<String>,
    tags: Vec<String>,
    line: usize,
    fields: usize,
}

impl Sentence {
    fn finish(&mut self) -> Option<TextExample> {
        if self.words.is_empty() {
            return None;
        }
        let words = std::mem::take(&mut self.words);
        let tags = std::mem::take(&mut self.tags);
        Some(TextExample {
            text: Value::from(words).to_string(),
            label: (!tags.is_empty()).then(|| Value::from(tags).to_string()),
            line: self.line,
            bytes: None,
            pair: None,
            negative: None,
        })
    }
}

/// A tagged example as it was read: its words, and its tags when it has a label.
pub fn words_and_tags(
    example: &TextExample,
    path: &Path,
) -> Result<(Vec<String>, Option<Vec<String>>), DataError> {
    let error = |message: String| DataError::Parse {
        path: path.to_path_buf(),
        line: example.line,
        message,
    };
    let words = string_list(&example.text).map_err(|found| {
        error(format!(
            "the words must be a list of strings (a JSON array, or a list column), found {found}"
        ))
    })?;
    let Some(label) = &example.label else {
        return Ok((words, None));
    };
    let tags = string_list(label).map_err(|found| {
        error(format!(
            "the tags must be a list with one tag per word, found {found}"
        ))
    })?;
    if tags.len() != words.len() {
        return Err(error(format!(
            "{} words and {} tags; every word needs exactly one tag",
            words.len(),
            tags.len()
        )));
    }
    Ok((words, Some(tags)))
}

/// A JSON array of strings (or numbers, as tag ids without names) as strings; otherwise what was
/// found, shortened, for the message.
fn string_list(text: &str) -> Result<Vec<String>, String> {
    let shown = || {
        let short: String = text.chars().take(60).collect();
        if short.len() < text.len() {
            format!("`{short}...`")
        } else {
            format!("`{short}`")
        }
    };
    let Ok(Value::Array(items)) = serde_json::from_str::<Value>(text) else {
        return Err(shown());
    };
    items
        .into_iter()
        .map(|item| match item {
            Value::String(s) => Ok(s),
            Value::Number(n) => Ok(n.to_string()),
            _ => Err(shown()),
        })
        .collect()
}

/// A labelled token of a tokenized sentence: its position, the word it belongs to, and whether
/// it is that word's first token (the one a prediction is read from).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct LabelledToken {
    pub position: usize,
    pub word: usize,
    pub first: bool,
}

/// The tokens that carry a tag, from each token's word (`None` for special tokens): every word's
/// first token, and with `all_subwords` its other tokens too. A word cut off by truncation has
/// none.
pub fn labelled_tokens(word_ids: &[Option<u32>], all_subwords: bool) -> Vec<LabelledToken> {
    let mut labelled = Vec::new();
    let mut previous = None;
    for (position, word) in word_ids.iter().enumerate() {
        let Some(word) = *word else {
            previous = None;
            continue;
        };
        let first = previous != Some(word);
        if first || all_subwords {
            labelled.push(LabelledToken {
                position,
                word: word as usize,
                first,
            });
        }
        previous = Some(word);
    }
    labelled
}

/// The tag a word's later token carries under `all_subwords`: `B-X` becomes `I-X` (transformers'
/// `b_to_i_label`), when the tag set has it.
pub fn inside_tag(tag: &str, tags: &[String]) -> Option<usize> {
    let inside = format!("I-{}", tag.strip_prefix("B-")?);
    tags.iter().position(|t| *t == inside)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn write(content: &str) -> (tempfile::TempDir, std::path::PathBuf) {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("a.conll");
        std::fs::write(&path, content).unwrap();
        (dir, path)
    }

    #[test]
    fn reads_conll_sentences_with_the_last_field_as_tag() {
        let (_d, path) = write(
            "-DOCSTART- -X- -X- O\n\nEU NNP B-NP B-ORG\nrejects VBZ B-VP O\n\n\nPeter NNP B-NP B-PER\n",
        );
        let examples = read_conll(&path).unwrap();
        assert_eq!(examples.len(), 2);
        let (words, tags) = words_and_tags(&examples[0], &path).unwrap();
        assert_eq!(words, ["EU", "rejects"]);
        assert_eq!(tags.unwrap(), ["B-ORG", "O"]);
        assert_eq!(examples[0].line, 3);
        assert_eq!(examples[1].line, 7);
        // WNUT's layout: word<TAB>tag, sentences broken by a line holding a tab.
        let (_d, path) = write("@user\tO\nParis\tB-loc\n\t\nok\tO\n");
        let examples = read_conll(&path).unwrap();
        assert_eq!(examples.len(), 2);
        assert_eq!(examples[0].label.as_deref(), Some(r#"["O","B-loc"]"#));
    }

    #[test]
    fn conll_errors_name_the_file_and_line() {
        let (_d, path) = write("EU NNP B-ORG\nrejects O\n");
        let message = read_conll(&path).unwrap_err().to_string();
        assert!(
            message.contains("a.conll:2:") && message.contains("2 fields"),
            "{message}"
        );
        let (_d, path) = write("\n\n");
        assert!(matches!(read_conll(&path), Err(DataError::Empty { .. })));
    }

    #[test]
    fn words_and_tags_of_different_lengths_are_refused() {
        let example = TextExample {
            text: r#"["a","b"]"#.into(),
            label: Some(r#"["O"]"#.into()),
            line: 4,
            bytes: None,
            pair: None,
            negative: None,
        };
        let message = words_and_tags(&example, Path::new("d.jsonl"))
            .unwrap_err()
            .to_string();
        assert_eq!(
            message,
            "d.jsonl:4: 2 words and 1 tags; every word needs exactly one tag"
        );
        let example = TextExample {
            text: "plain text".into(),
            ..example
        };
        let message = words_and_tags(&example, Path::new("d.jsonl"))
            .unwrap_err()
            .to_string();
        assert!(message.contains("list of strings"), "{message}");
    }

    #[test]
    fn first_subwords_carry_the_tags() {
        // [CLS] John Sch ##warz lives [SEP]
        let ids = [None, Some(0), Some(1), Some(1), Some(2), None];
        let first: Vec<(usize, usize)> = labelled_tokens(&ids, false)
            .iter()
            .map(|t| (t.position, t.word))
            .collect();
        assert_eq!(first, [(1, 0), (2, 1), (4, 2)]);
        let all = labelled_tokens(&ids, true);
        assert_eq!(all.len(), 4);
        assert!(!all[2].first && all[2].word == 1);
        let tags: Vec<String> = ["O", "B-PER", "I-PER"].map(String::from).to_vec();
        assert_eq!(inside_tag("B-PER", &tags), Some(2));
        assert_eq!(inside_tag("O", &tags), None);
    }
}
