//! Embedding training: the encoder itself is tuned, as sentence-transformers trains it, on pairs
//! (anchor, positive) or triplets (with a hard negative) under MultipleNegativesRankingLoss or
//! TripletLoss, or on scored pairs under CosineSimilarityLoss; SetFit's pairs are made here from
//! classified texts. Validation ranks each anchor against every positive and negative (recall@k,
//! MRR@10, NDCG@10, and the share of triplets whose positive is closer), or correlates the
//! cosine similarity of scored pairs with their scores (Spearman, Pearson).

use std::collections::{BTreeMap, HashMap};
use std::path::Path;

use graft_data::table::Column;
use graft_data::{TextExample, regression_values};
use rand::SeedableRng;
use rand::rngs::StdRng;
use rand::seq::SliceRandom;
use serde::{Deserialize, Serialize};

use super::{Detection, EvaluationPlot, Metric, Prediction, TaskLogic, TaskSpec, VALID_LOSS};
use crate::config::DataSection;
use crate::error::{TrainError, TrainError as E};
use crate::loss::{LossKind, Targets, TextTargets};
use crate::metrics::{Report, pearson, spearman};

/// The encoder, tuned to embed.
pub struct Embedding;

fn of(report: &Report) -> Option<&EmbeddingReport> {
    match report {
        Report::Embedding(r) => Some(r),
        _ => None,
    }
}

const METRICS: &[Metric] = &[
    VALID_LOSS,
    Metric::higher("valid_spearman_cosine", |r| {
        of(r).and_then(|r| r.spearman_cosine)
    }),
    Metric::higher("valid_pearson_cosine", |r| {
        of(r).and_then(|r| r.pearson_cosine)
    }),
    Metric::higher("valid_recall_at_1", |r| of(r).and_then(|r| r.recall_at_1)),
    Metric::higher("valid_recall_at_5", |r| of(r).and_then(|r| r.recall_at_5)),
    Metric::higher("valid_recall_at_10", |r| of(r).and_then(|r| r.recall_at_10)),
    Metric::higher("valid_mrr_at_10", |r| of(r).and_then(|r| r.mrr_at_10)),
    Metric::higher("valid_ndcg_at_10", |r| of(r).and_then(|r| r.ndcg_at_10)),
    Metric::higher("valid_triplet_accuracy", |r| {
        of(r).and_then(|r| r.triplet_accuracy)
    }),
];

impl TaskLogic for Embedding {
    fn config_name(&self) -> &'static str {
        "embedding"
    }

    fn problem_type(&self) -> &'static str {
        "embedding"
    }

    fn default_loss(&self) -> LossKind {
        LossKind::MultipleNegativesRanking
    }

    fn fits(&self, loss: LossKind) -> bool {
        matches!(
            loss,
            LossKind::MultipleNegativesRanking | LossKind::CosineSimilarity | LossKind::Triplet
        )
    }

    fn takes_label_smoothing(&self) -> bool {
        false
    }

    fn takes_class_weights(&self) -> bool {
        false
    }

    fn metrics(&self) -> &'static [Metric] {
        METRICS
    }

    fn headline(&self) -> &'static str {
        "valid_mrr_at_10"
    }

    fn outputs_noun(&self) -> &'static str {
        "scores"
    }

    fn has_label_set(&self) -> bool {
        false
    }

    fn label_lists(&self) -> bool {
        false
    }

    /// The score column, when the examples are scored pairs; nothing otherwise.
    fn labels(&self, train: &[TextExample], data: &DataSection) -> Result<Vec<String>, TrainError> {
        Ok(match train.first().and_then(|e| e.label.as_ref()) {
            Some(_) => vec![data.label_column.clone()],
            None => Vec::new(),
        })
    }

    /// Scores are read as numbers with the targets, naming the line of one that is not.
    fn row_problem(&self, _label: &str) -> Option<String> {
        None
    }

    fn label_problem(&self, _spec: &TaskSpec, _label: &str) -> Option<String> {
        None
    }

    fn targets(
        &self,
        spec: &TaskSpec,
        examples: &[TextExample],
        source: &Path,
    ) -> Result<Targets, TrainError> {
        let texts =
            |e: &TextExample| 1 + usize::from(e.pair.is_some()) + usize::from(e.negative.is_some());
        let m = examples.first().map_or(2, texts);
        if let Some(e) = examples.iter().find(|e| texts(e) != m || e.pair.is_none()) {
            return Err(E::Config {
                path: source.to_path_buf(),
                message: format!(
                    "line {}: embedding training reads every example as a pair or a triplet of \
                     texts, and this one has {} text(s)",
                    e.line,
                    texts(e)
                ),
            });
        }
        let scores = match spec.labels.is_empty() {
            true => None,
            false => Some(regression_values(examples, source)?),
        };
        Ok(Targets::Texts(TextTargets {
            examples: examples.len(),
            texts: m,
            scores,
        }))
    }

    fn report(
        &self,
        _spec: &TaskSpec,
        outputs: &[Vec<f32>],
        targets: &Targets,
        _standardization: Option<(f64, f64)>,
    ) -> Report {
        let Targets::Texts(targets) = targets else {
            unreachable!("embedding targets are texts")
        };
        Report::Embedding(EmbeddingReport::new(outputs, targets))
    }

    fn evaluation_plot(
        &self,
        _spec: &TaskSpec,
        _report: &Report,
        _outputs: &[Vec<f32>],
        _targets: &Targets,
    ) -> Option<EvaluationPlot> {
        None
    }

    /// An embedding model predicts no labels (`Model::predict` refuses it first).
    fn prediction(&self, _spec: &TaskSpec, _row: &[f32]) -> Prediction {
        Prediction::default()
    }

    fn detection_rank(&self) -> u8 {
        u8::MAX
    }

    /// A label column is never read as embedding training: that is chosen in the config.
    fn detect(&self, _column: &Column) -> Option<Detection> {
        None
    }

    fn describe(&self, rows: usize, _classes: &BTreeMap<String, usize>) -> String {
        format!("embedding training on {rows} rows")
    }
}

/// How well embeddings of pairs or triplets do. Scored pairs: the correlations of each pair's
/// cosine similarity with its score, as sentence-transformers' `EmbeddingSimilarityEvaluator`
/// gives them. Otherwise retrieval: every anchor queries the corpus of all distinct positives and
/// negatives by cosine similarity, its own positive the one relevant text (a tie ranks the text
/// found first in the data first); and with negatives, the share of triplets whose positive is
/// more similar than their negative (`TripletEvaluator`'s accuracy).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct EmbeddingReport {
    pub n: usize,
    #[serde(skip_serializing_if = "Option::is_none", default)]
    pub spearman_cosine: Option<f64>,
    #[serde(skip_serializing_if = "Option::is_none", default)]
    pub pearson_cosine: Option<f64>,
    /// The number of distinct texts the anchors are ranked against.
    #[serde(skip_serializing_if = "Option::is_none", default)]
    pub corpus: Option<usize>,
    #[serde(skip_serializing_if = "Option::is_none", default)]
    pub recall_at_1: Option<f64>,
    #[serde(skip_serializing_if = "Option::is_none", default)]
    pub recall_at_5: Option<f64>,
    #[serde(skip_serializing_if = "Option::is_none", default)]
    pub recall_at_10: Option<f64>,
    #[serde(skip_serializing_if = "Option::is_none", default)]
    pub mrr_at_10: Option<f64>,
    #[serde(skip_serializing_if = "Option::is_none", default)]
    pub ndcg_at_10: Option<f64>,
    #[serde(skip_serializing_if = "Option::is_none", default)]
    pub triplet_accuracy: Option<f64>,
}

/// Row `a · b / (|a| |b|)` in f64.
fn cosine(a: &[f32], b: &[f32]) -> f64 {
    let dot: f64 = a.iter().zip(b).map(|(&x, &y)| x as f64 * y as f64).sum();
    let norm = |v: &[f32]| v.iter().map(|&x| (x as f64).powi(2)).sum::<f64>().sqrt();
    dot / (norm(a) * norm(b)).max(1e-12)
}

impl EmbeddingReport {
    /// The report on embeddings `[n · texts][width]` (example-major) of the examples `targets`
    /// describes. Texts are told apart by their embeddings' rows: equal texts in the data are
    /// one corpus entry when their rows are equal.
    pub fn new(outputs: &[Vec<f32>], targets: &TextTargets) -> Self {
        let m = targets.texts;
        let n = outputs.len() / m.max(1);
        let row = |example: usize, text: usize| outputs[example * m + text].as_slice();
        let mut report = Self {
            n,
            spearman_cosine: None,
            pearson_cosine: None,
            corpus: None,
            recall_at_1: None,
            recall_at_5: None,
            recall_at_10: None,
            mrr_at_10: None,
            ndcg_at_10: None,
            triplet_accuracy: None,
        };
        if let Some(scores) = &targets.scores {
            let similarity: Vec<f64> = (0..n).map(|e| cosine(row(e, 0), row(e, 1))).collect();
            let gold: Vec<f64> = scores.iter().map(|&s| s as f64).collect();
            report.spearman_cosine = Some(spearman(&similarity, &gold));
            report.pearson_cosine = Some(pearson(&similarity, &gold));
            return report;
        }
        // The corpus: distinct positives and negatives, in the order the data gives them.
        let mut corpus: Vec<&[f32]> = Vec::new();
        let mut position: HashMap<Vec<u32>, usize> = HashMap::new();
        let mut relevant = Vec::with_capacity(n);
        for e in 0..n {
            for text in 1..m {
                let embedding = row(e, text);
                let key: Vec<u32> = embedding.iter().map(|x| x.to_bits()).collect();
                let at = *position.entry(key).or_insert_with(|| {
                    corpus.push(embedding);
                    corpus.len() - 1
                });
                if text == 1 {
                    relevant.push(at);
                }
            }
        }
        let (mut hits, mut reciprocal, mut gain) = ([0usize; 3], 0.0, 0.0);
        for (e, &own) in relevant.iter().enumerate() {
            let scores: Vec<f64> = corpus.iter().map(|doc| cosine(row(e, 0), doc)).collect();
            let target = scores[own];
            let rank = 1 + scores
                .iter()
                .enumerate()
                .filter(|&(i, &s)| s > target || (s == target && i < own))
                .count();
            for (k, hit) in [1, 5, 10].iter().zip(hits.iter_mut()) {
                *hit += usize::from(rank <= *k);
            }
            if rank <= 10 {
                reciprocal += 1.0 / rank as f64;
                gain += 1.0 / ((rank + 1) as f64).log2();
            }
        }
        let share = |count: f64| count / n.max(1) as f64;
        report.corpus = Some(corpus.len());
        report.recall_at_1 = Some(share(hits[0] as f64));
        report.recall_at_5 = Some(share(hits[1] as f64));
        report.recall_at_10 = Some(share(hits[2] as f64));
        report.mrr_at_10 = Some(share(reciprocal));
        report.ndcg_at_10 = Some(share(gain));
        if m == 3 {
            let closer = (0..n)
                .filter(|&e| cosine(row(e, 0), row(e, 1)) > cosine(row(e, 0), row(e, 2)))
                .count();
            report.triplet_accuracy = Some(share(closer as f64));
        }
        report
    }

    /// A plain-text report.
    pub fn to_table(&self) -> String {
        let mut out = format!("n = {}", self.n);
        let mut field = |name: &str, value: Option<f64>| {
            if let Some(value) = value {
                out += &format!("  {name} = {value:.4}");
            }
        };
        field("spearman (cosine)", self.spearman_cosine);
        field("pearson (cosine)", self.pearson_cosine);
        field("recall@1", self.recall_at_1);
        field("recall@5", self.recall_at_5);
        field("recall@10", self.recall_at_10);
        field("MRR@10", self.mrr_at_10);
        field("NDCG@10", self.ndcg_at_10);
        field("triplet accuracy", self.triplet_accuracy);
        if let Some(corpus) = self.corpus {
            out += &format!("\n(each anchor ranked against {corpus} distinct texts)");
        }
        out.push('\n');
        out
    }
}

/// SetFit's pairs from classified texts, as setfit 1.2's `ContrastiveDataset` makes them with
/// `num_iterations = rounds`: every pair of texts (a text with itself included), shuffled with
/// `seed`, split into those of one class (score 1) and of two classes (score 0); `rounds` times
/// as many of each as there are texts are taken by cycling through the two lists, and given
/// alternately (same class, other class). The pairs' lines are their first text's.
pub fn contrastive_pairs(
    examples: &[TextExample],
    rounds: usize,
    seed: u64,
) -> Result<Vec<TextExample>, String> {
    let class = |e: &TextExample| e.label.as_deref().unwrap_or("").trim().to_string();
    let classes: std::collections::BTreeSet<String> = examples.iter().map(class).collect();
    if classes.len() < 2 {
        return Err(format!(
            "contrastive pairs need texts of at least two classes, found {}",
            classes.len()
        ));
    }
    let n = examples.len();
    let mut candidates: Vec<(usize, usize)> =
        (0..n).flat_map(|i| (i..n).map(move |j| (i, j))).collect();
    candidates.shuffle(&mut StdRng::seed_from_u64(seed));
    let (same, other): (Vec<_>, Vec<_>) = candidates
        .into_iter()
        .partition(|&(i, j)| class(&examples[i]) == class(&examples[j]));
    let pair = |(i, j): (usize, usize), score: &str| TextExample {
        pair: Some(examples[j].text.clone()),
        label: Some(score.into()),
        ..examples[i].clone()
    };
    Ok(same
        .iter()
        .cycle()
        .zip(other.iter().cycle())
        .take(rounds * n)
        .flat_map(|(&s, &o)| [pair(s, "1"), pair(o, "0")])
        .collect())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn targets(n: usize, texts: usize) -> TextTargets {
        TextTargets {
            examples: n,
            texts,
            scores: None,
        }
    }

    /// Three anchors against their positives: ranks 1, 2 and 3 (the third anchor's positive is
    /// the least similar of three).
    #[test]
    fn retrieval_ranks_each_anchor_against_every_text() {
        let outputs = vec![
            vec![1.0, 0.0],
            vec![1.0, 0.1],
            vec![0.0, 1.0],
            vec![0.5, 1.0],
            vec![1.0, 1.0],
            vec![-1.0, 0.2],
        ];
        let r = EmbeddingReport::new(&outputs, &targets(3, 2));
        assert_eq!(r.corpus, Some(3));
        // anchor 0: own 1.0 (rank 1); anchor 1: [0, 1] vs [1, .1], [.5, 1], [-1, .2]: own rank 1;
        // anchor 2: [1, 1] vs cos: [1,.1] .77, [.5,1] .95, [-1,.2] -.55: own rank 3.
        assert_eq!(r.recall_at_1, Some(2.0 / 3.0));
        assert_eq!(r.recall_at_5, Some(1.0));
        let mrr = (1.0 + 1.0 + 1.0 / 3.0) / 3.0;
        assert!((r.mrr_at_10.unwrap() - mrr).abs() < 1e-12);
        let ndcg = (1.0 + 1.0 + 1.0 / 4f64.log2()) / 3.0;
        assert!((r.ndcg_at_10.unwrap() - ndcg).abs() < 1e-12);
        assert_eq!(r.triplet_accuracy, None);
    }

    #[test]
    fn scored_pairs_report_correlations_and_triplets_accuracy() {
        let outputs = vec![
            vec![1.0, 0.0],
            vec![1.0, 0.0],
            vec![1.0, 0.0],
            vec![0.0, 1.0],
            vec![1.0, 0.0],
            vec![1.0, 1.0],
        ];
        let scored = TextTargets {
            scores: Some(vec![5.0, 0.0, 2.5]),
            ..targets(3, 2)
        };
        let r = EmbeddingReport::new(&outputs, &scored);
        assert!((r.spearman_cosine.unwrap() - 1.0).abs() < 1e-12);
        assert_eq!(r.recall_at_1, None);
        let triplets = EmbeddingReport::new(&outputs, &targets(2, 3));
        // [1,0]: positive [1,0] beats negative [1,0]? equal, so not closer; [0,1]: [1,0] vs [1,1].
        assert_eq!(triplets.triplet_accuracy, Some(0.0));
    }

    #[test]
    fn contrastive_pairs_pair_each_text_with_its_class_and_another() {
        let example = |text: &str, label: &str| TextExample {
            label: Some(label.into()),
            ..TextExample::unlabelled(text)
        };
        let texts = [
            example("a1", "a"),
            example("a2", "a"),
            example("b1", "b"),
            example("c1", "c"),
        ];
        let pairs = contrastive_pairs(&texts, 3, 7).unwrap();
        assert_eq!(pairs.len(), 4 * 3 * 2);
        let class = |text: &str| texts.iter().find(|e| e.text == text).unwrap().label.clone();
        for pair in &pairs {
            let same = class(&pair.text) == class(pair.pair.as_deref().unwrap());
            assert_eq!(
                pair.label.as_deref(),
                Some(if same { "1" } else { "0" }),
                "{pair:?}"
            );
        }
        // A class of one text pairs it with itself.
        assert!(
            pairs
                .iter()
                .any(|p| p.text == "b1" && p.pair.as_deref() == Some("b1"))
        );
        assert_eq!(pairs, contrastive_pairs(&texts, 3, 7).unwrap());
        assert!(contrastive_pairs(&texts[..2], 1, 0).is_err());
    }
}
