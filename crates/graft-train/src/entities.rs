//! Entities in tag sequences: the spans `seqeval` reads out of BIO/IOB2/IOBES tags (its default,
//! lenient mode: an `I-` tag after `O` starts an entity), its entity-level precision, recall and
//! F1 with a per-entity table, and a prediction's entities with their character offsets in the
//! text, grouped as transformers' token-classification pipeline does with
//! `aggregation_strategy="first"`.

use std::collections::{BTreeMap, BTreeSet};

use serde::{Deserialize, Serialize};

/// An entity: its type and the first and last positions (inclusive) of its tags.
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord)]
pub struct Span {
    pub entity: String,
    pub start: usize,
    pub end: usize,
}

/// A tag's prefix (`B`, `I`, `E`, `S`, `O`) and entity type, as seqeval splits it: the first
/// character, and what follows the first `-` (`_` when nothing does).
fn split_tag(tag: &str) -> (char, String) {
    let mut chars = tag.chars();
    let prefix = chars.next().unwrap_or('O');
    let rest = chars.as_str();
    let kind = rest.split_once('-').map_or(rest, |(_, kind)| kind);
    let kind = if kind.is_empty() { "_" } else { kind };
    (prefix, kind.to_string())
}

fn end_of_chunk(prev: char, tag: char, prev_kind: &str, kind: &str) -> bool {
    matches!(prev, 'E' | 'S')
        || (matches!(prev, 'B' | 'I') && matches!(tag, 'B' | 'S' | 'O'))
        || (prev != 'O' && prev != '.' && prev_kind != kind)
}

fn start_of_chunk(prev: char, tag: char, prev_kind: &str, kind: &str) -> bool {
    matches!(tag, 'B' | 'S')
        || (matches!(prev, 'E' | 'S' | 'O') && matches!(tag, 'E' | 'I'))
        || (tag != 'O' && tag != '.' && prev_kind != kind)
}

/// The entities of one tag sequence, as seqeval's `get_entities`.
pub fn spans(tags: &[impl AsRef<str>]) -> Vec<Span> {
    let mut spans = Vec::new();
    let (mut prev, mut prev_kind, mut begin) = ('O', String::new(), 0);
    let end = std::iter::once("O");
    for (i, tag) in tags.iter().map(AsRef::as_ref).chain(end).enumerate() {
        let (prefix, kind) = split_tag(tag);
        if end_of_chunk(prev, prefix, &prev_kind, &kind) {
            spans.push(Span {
                entity: prev_kind.clone(),
                start: begin,
                end: i - 1,
            });
        }
        if start_of_chunk(prev, prefix, &prev_kind, &kind) {
            begin = i;
        }
        prev = prefix;
        prev_kind = kind;
    }
    spans
}

/// One entity type's scores.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct EntityScores {
    pub entity: String,
    pub precision: f64,
    pub recall: f64,
    pub f1: f64,
    /// Entities of the type in the true tags.
    pub support: usize,
}

/// Entity-level scores of tagged sentences, as seqeval computes them (default mode, zero when a
/// ratio has nothing to divide), and the accuracy over every word's tag.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct EntityReport {
    pub sentences: usize,
    pub words: usize,
    /// Micro-averaged over all entities.
    pub precision: f64,
    pub recall: f64,
    pub f1: f64,
    pub accuracy: f64,
    pub macro_f1: f64,
    pub per_entity: Vec<EntityScores>,
}

fn ratio(a: usize, b: usize) -> f64 {
    if b == 0 { 0.0 } else { a as f64 / b as f64 }
}

fn f1(precision: f64, recall: f64) -> f64 {
    if precision + recall == 0.0 {
        0.0
    } else {
        2.0 * precision * recall / (precision + recall)
    }
}

impl EntityReport {
    /// Scores predicted tag sequences against true ones, sentence by sentence (seqeval joins the
    /// sentences with an `O` between them, so no entity spans two).
    pub fn new(truth: &[Vec<String>], predicted: &[Vec<String>]) -> Self {
        let joined = |sentences: &[Vec<String>]| -> Vec<String> {
            sentences
                .iter()
                .flat_map(|s| s.iter().cloned().chain(std::iter::once("O".to_string())))
                .collect()
        };
        let (t, p) = (joined(truth), joined(predicted));
        let true_spans: BTreeSet<Span> = spans(&t).into_iter().collect();
        let pred_spans: BTreeSet<Span> = spans(&p).into_iter().collect();
        let words: usize = truth.iter().map(Vec::len).sum();
        let correct_tags = truth
            .iter()
            .zip(predicted)
            .flat_map(|(t, p)| t.iter().zip(p))
            .filter(|(t, p)| t == p)
            .count();
        let hits = true_spans.intersection(&pred_spans).count();
        let (precision, recall) = (ratio(hits, pred_spans.len()), ratio(hits, true_spans.len()));
        let kinds: BTreeSet<&str> = true_spans
            .iter()
            .chain(&pred_spans)
            .map(|s| s.entity.as_str())
            .collect();
        let per_entity: Vec<EntityScores> = kinds
            .into_iter()
            .map(|kind| {
                let of = |set: &BTreeSet<Span>| -> BTreeSet<Span> {
                    set.iter().filter(|s| s.entity == kind).cloned().collect()
                };
                let (t, p) = (of(&true_spans), of(&pred_spans));
                let hits = t.intersection(&p).count();
                let (precision, recall) = (ratio(hits, p.len()), ratio(hits, t.len()));
                EntityScores {
                    entity: kind.to_string(),
                    precision,
                    recall,
                    f1: f1(precision, recall),
                    support: t.len(),
                }
            })
            .collect();
        let macro_f1 = if per_entity.is_empty() {
            0.0
        } else {
            per_entity.iter().map(|e| e.f1).sum::<f64>() / per_entity.len() as f64
        };
        Self {
            sentences: truth.len(),
            words,
            precision,
            recall,
            f1: f1(precision, recall),
            accuracy: ratio(correct_tags, words),
            macro_f1,
            per_entity,
        }
    }

    pub fn to_table(&self) -> String {
        let width = self
            .per_entity
            .iter()
            .map(|e| e.entity.len())
            .max()
            .unwrap_or(6)
            .max(9);
        let mut out = format!(
            "{} sentences, {} words  precision = {:.4}  recall = {:.4}  F1 = {:.4}  accuracy = {:.4}\n\n",
            self.sentences, self.words, self.precision, self.recall, self.f1, self.accuracy
        );
        out += &format!("{:>width$}  precision  recall      f1  support\n", "entity");
        for e in &self.per_entity {
            out += &format!(
                "{:>width$}  {:>9.4}  {:>6.4}  {:>6.4}  {:>7}\n",
                e.entity, e.precision, e.recall, e.f1, e.support
            );
        }
        out
    }
}

/// An entity found in a text, as transformers' pipeline reports it with
/// `aggregation_strategy="first"`: its type, the mean of its words' scores, its text and its
/// span in characters (`[start, end)`).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct FoundEntity {
    pub entity_group: String,
    pub score: f32,
    pub word: String,
    pub start: usize,
    pub end: usize,
}

/// A word of a text as the model read it: its tag (from its first token), that tag's
/// probability, and its span in characters.
#[derive(Debug, Clone)]
pub struct TaggedWord {
    pub tag: String,
    pub score: f32,
    pub start: usize,
    pub end: usize,
}

/// The entities of a text's tagged words, grouped as transformers' pipeline groups them: a word
/// joins the group before it when its type is the same and its tag is not `B-`; groups of `O`
/// are dropped. A tag without a `B-`/`I-` prefix is its own type. The text is sliced by
/// characters (transformers decodes the tokens instead, which lower-cases an uncased model's).
pub fn found_entities(text: &str, words: &[TaggedWord]) -> Vec<FoundEntity> {
    let chars: Vec<char> = text.chars().collect();
    let slice = |start: usize, end: usize| -> String {
        chars[start.min(chars.len())..end.min(chars.len())]
            .iter()
            .collect()
    };
    let split = |tag: &str| -> (bool, String) {
        match (tag.strip_prefix("B-"), tag.strip_prefix("I-")) {
            (Some(kind), _) => (true, kind.to_string()),
            (_, Some(kind)) => (false, kind.to_string()),
            _ => (false, tag.to_string()),
        }
    };
    let mut groups: Vec<(String, Vec<&TaggedWord>)> = Vec::new();
    for word in words {
        let (begins, kind) = split(&word.tag);
        match groups.last_mut() {
            Some((last, members)) if *last == kind && !begins => members.push(word),
            _ => groups.push((kind, vec![word])),
        }
    }
    groups
        .into_iter()
        .filter(|(kind, _)| kind != "O")
        .map(|(kind, members)| {
            let (start, end) = (members[0].start, members[members.len() - 1].end);
            FoundEntity {
                entity_group: kind,
                score: members.iter().map(|w| w.score).sum::<f32>() / members.len() as f32,
                word: slice(start, end),
                start,
                end,
            }
        })
        .collect()
}

/// The per-entity counts of tag sequences, for `graft init`'s description.
pub fn entity_counts(sentences: &[Vec<String>]) -> BTreeMap<String, usize> {
    let mut counts = BTreeMap::new();
    for sentence in sentences {
        for span in spans(sentence) {
            *counts.entry(span.entity).or_insert(0) += 1;
        }
    }
    counts
}

#[cfg(test)]
mod tests {
    use super::*;

    fn tags(s: &str) -> Vec<String> {
        s.split_whitespace().map(String::from).collect()
    }

    #[test]
    fn spans_as_seqeval_reads_them() {
        let found = spans(&tags("B-PER I-PER O I-LOC B-LOC B-LOC I-ORG O"));
        let found: Vec<(&str, usize, usize)> = found
            .iter()
            .map(|s| (s.entity.as_str(), s.start, s.end))
            .collect();
        assert_eq!(
            found,
            [
                ("PER", 0, 1),
                ("LOC", 3, 3),
                ("LOC", 4, 4),
                ("LOC", 5, 5),
                ("ORG", 6, 6)
            ]
        );
    }

    #[test]
    fn found_entities_carry_character_offsets() {
        let text = "Angela Merkel met Macron in Paris";
        let word = |tag: &str, start, end| TaggedWord {
            tag: tag.into(),
            score: 0.5,
            start,
            end,
        };
        let words = [
            word("B-PER", 0, 6),
            word("I-PER", 7, 13),
            word("O", 14, 17),
            word("I-PER", 18, 24),
            word("O", 25, 27),
            word("B-LOC", 28, 33),
        ];
        let found = found_entities(text, &words);
        let summary: Vec<(&str, &str, usize, usize)> = found
            .iter()
            .map(|e| (e.entity_group.as_str(), e.word.as_str(), e.start, e.end))
            .collect();
        assert_eq!(
            summary,
            [
                ("PER", "Angela Merkel", 0, 13),
                ("PER", "Macron", 18, 24),
                ("LOC", "Paris", 28, 33)
            ]
        );
    }
}
