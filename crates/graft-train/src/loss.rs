//! The losses of each task, with PyTorch's semantics: cross-entropy with class weights and label
//! smoothing, binary cross-entropy with logits (`pos_weight` or per-label weights), MSE and Huber;
//! and for embedding training, sentence-transformers' MultipleNegativesRankingLoss, its
//! CosineSimilarityLoss and its TripletLoss.
//!
//! Each loss is split into a sum over examples and the denominator of its mean, so that a batch
//! split into micro-batches (gradient accumulation) adds up to exactly the loss of the whole batch.

use burn::tensor::{Device, Tensor, TensorData, activation};

use graft_data::tagged::LabelledToken;
use serde::{Deserialize, Serialize};

/// The loss a head trains with.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum LossKind {
    CrossEntropy,
    Bce,
    Mse,
    Huber,
    /// In-batch negatives: each anchor's similarity to every positive (and hard negative) of the
    /// batch, scaled, under cross-entropy with its own positive as the class.
    MultipleNegativesRanking,
    /// The squared difference between the cosine similarity of a pair and its score.
    CosineSimilarity,
    /// `max(|a - p| - |a - n| + margin, 0)` with Euclidean distances.
    Triplet,
}

/// What the examples should come out as.
#[derive(Debug, Clone, PartialEq)]
pub enum Targets {
    /// One class index per example.
    Classes(Vec<usize>),
    /// One 0/1 row per example.
    MultiLabel(Vec<Vec<bool>>),
    /// One number per example (already standardized when the run standardizes).
    Values(Vec<f32>),
    /// Token classification as read: one class per word of each sentence.
    Words(Vec<Vec<usize>>),
    /// Token classification once tokenized: each sentence's labelled tokens and their classes.
    Tokens(Vec<SentenceTargets>),
    /// Embedding training: each example is `texts` texts (anchor, positive, negative) whose
    /// embeddings are consecutive output rows, and for a similarity loss, a score per pair.
    Texts(TextTargets),
}

/// Embedding examples: how many texts each has, and the pairs' scores where the data gives them.
#[derive(Debug, Clone, PartialEq)]
pub struct TextTargets {
    pub examples: usize,
    pub texts: usize,
    pub scores: Option<Vec<f32>>,
}

/// A tokenized sentence's labelled tokens (in position order) and the class of each.
#[derive(Debug, Clone, PartialEq)]
pub struct SentenceTargets {
    pub tokens: Vec<LabelledToken>,
    pub classes: Vec<usize>,
}

impl SentenceTargets {
    /// The classes of the words the model reads (their first tokens), in order.
    pub fn word_classes(&self) -> impl Iterator<Item = usize> + '_ {
        self.tokens
            .iter()
            .zip(&self.classes)
            .filter(|(t, _)| t.first)
            .map(|(_, &c)| c)
    }
}

impl Targets {
    pub fn len(&self) -> usize {
        match self {
            Self::Classes(t) => t.len(),
            Self::MultiLabel(t) => t.len(),
            Self::Values(t) => t.len(),
            Self::Words(t) => t.len(),
            Self::Tokens(t) => t.len(),
            Self::Texts(t) => t.examples,
        }
    }

    /// Word targets aligned with each sentence's tokens (`word_ids`, one per token, `None` for
    /// special tokens): the first token of each word carries its class, and with `all_subwords`
    /// the others too, a `B-` class as its `I-` class where `labels` has one. Other targets are
    /// returned unchanged.
    pub fn aligned(
        self,
        word_ids: &[Vec<Option<u32>>],
        all_subwords: bool,
        labels: &[String],
    ) -> Self {
        let Self::Words(sentences) = self else {
            return self;
        };
        assert_eq!(
            sentences.len(),
            word_ids.len(),
            "every tagged sentence is encoded as words"
        );
        let inside: Vec<usize> = labels
            .iter()
            .enumerate()
            .map(|(c, tag)| graft_data::tagged::inside_tag(tag, labels).unwrap_or(c))
            .collect();
        Self::Tokens(
            sentences
                .iter()
                .zip(word_ids)
                .map(|(words, ids)| {
                    let tokens = graft_data::tagged::labelled_tokens(ids, all_subwords);
                    let classes = tokens
                        .iter()
                        .map(|t| {
                            let class = words[t.word];
                            if t.first { class } else { inside[class] }
                        })
                        .collect();
                    SentenceTargets { tokens, classes }
                })
                .collect(),
        )
    }

    /// The labelled tokens' classes of the sentences at `indices`, in order.
    fn token_classes(sentences: &[SentenceTargets], indices: &[usize]) -> Vec<usize> {
        indices
            .iter()
            .flat_map(|&i| sentences[i].classes.iter().copied())
            .collect()
    }

    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }
}

#[derive(Debug, Clone)]
pub struct TaskLoss {
    pub kind: LossKind,
    /// Cross-entropy: weight per class. BCE: weight per label.
    pub weights: Option<Vec<f32>>,
    /// BCE: weight of the positive term per label.
    pub pos_weight: Option<Vec<f32>>,
    pub label_smoothing: f64,
    pub huber_delta: f64,
    /// MultipleNegativesRankingLoss: what the cosine similarities are multiplied by.
    pub scale: f64,
    /// TripletLoss: the margin between the positive's distance and the negative's.
    pub margin: f64,
}

fn matrix(values: Vec<f32>, rows: usize, cols: usize, device: &Device) -> Tensor<2> {
    Tensor::from_data(TensorData::new(values, [rows, cols]), device)
}

impl TaskLoss {
    /// The denominator of the mean over the examples `indices`.
    pub fn weight(&self, targets: &Targets, indices: &[usize]) -> f64 {
        match targets {
            Targets::Classes(t) => match &self.weights {
                Some(w) => indices.iter().map(|&i| w[t[i]] as f64).sum(),
                None => indices.len() as f64,
            },
            Targets::MultiLabel(t) => {
                let labels = indices.first().map_or(0, |&i| t[i].len());
                (indices.len() * labels) as f64
            }
            Targets::Values(_) | Targets::Texts(_) => indices.len() as f64,
            Targets::Tokens(sentences) => {
                let classes = Targets::token_classes(sentences, indices);
                match &self.weights {
                    Some(w) => classes.iter().map(|&c| w[c] as f64).sum(),
                    None => classes.len() as f64,
                }
            }
            Targets::Words(_) => unreachable!("word targets are aligned with tokens first"),
        }
    }

    /// The summed loss of `outputs` (`[n, k]`, rows for `indices`): divide by [`Self::weight`]
    /// over the same examples (or a larger batch they are part of) for the mean.
    pub fn sum(&self, outputs: Tensor<2>, targets: &Targets, indices: &[usize]) -> Tensor<1> {
        let device = outputs.device();
        let [n, k] = outputs.dims();
        match targets {
            Targets::Classes(t) => {
                let classes: Vec<usize> = indices.iter().map(|&i| t[i]).collect();
                self.cross_entropy_sum(outputs, &classes)
            }
            // One row per labelled token of the sentences, in order (transformers' -100 tokens
            // are not among the rows).
            Targets::Tokens(sentences) => {
                let classes = Targets::token_classes(sentences, indices);
                assert_eq!(classes.len(), n, "one output row per labelled token");
                self.cross_entropy_sum(outputs, &classes)
            }
            Targets::Words(_) => unreachable!("word targets are aligned with tokens first"),
            Targets::MultiLabel(t) => {
                let mut y = vec![0f32; n * k];
                for (row, &i) in indices.iter().enumerate() {
                    for (c, &on) in t[i].iter().enumerate() {
                        y[row * k + c] = if on { 1.0 } else { 0.0 };
                    }
                }
                let y = matrix(y, n, k, &device);
                // log(1 + e^-x), computed stably as max(-x, 0) + log1p(e^-|x|).
                let softplus_neg = outputs.clone().neg().clamp_min(0.0)
                    + outputs.clone().abs().neg().exp().log1p();
                let positive = match &self.pos_weight {
                    // 1 + (pos_weight - 1)·y
                    Some(p) => {
                        let p = matrix(p.iter().map(|v| v - 1.0).collect(), 1, k, &device);
                        y.clone() * p + 1.0
                    }
                    None => y.ones_like(),
                };
                let mut loss = (y.neg() + 1.0) * outputs + positive * softplus_neg;
                if let Some(w) = &self.weights {
                    loss = loss * matrix(w.clone(), 1, k, &device);
                }
                loss.sum()
            }
            Targets::Texts(t) => self.embedding_sum(outputs, t, indices),
            Targets::Values(t) => {
                let y: Vec<f32> = indices.iter().map(|&i| t[i]).collect();
                let diff = outputs - matrix(y, n, 1, &device);
                match self.kind {
                    LossKind::Huber => {
                        let delta = self.huber_delta;
                        let abs = diff.clone().abs();
                        let quadratic = diff.powi_scalar(2) * 0.5;
                        let linear = (abs.clone() - 0.5 * delta) * delta;
                        quadratic.mask_where(abs.greater_elem(delta), linear).sum()
                    }
                    _ => diff.powi_scalar(2).sum(),
                }
            }
        }
    }

    /// An embedding loss of `outputs`, `[n · texts, width]` (example-major: the texts of an
    /// example are consecutive rows), summed over the `n` examples at `indices`.
    fn embedding_sum(
        &self,
        outputs: Tensor<2>,
        targets: &TextTargets,
        indices: &[usize],
    ) -> Tensor<1> {
        let device = outputs.device();
        let [rows, width] = outputs.dims();
        let m = targets.texts;
        let n = indices.len();
        assert_eq!(rows, n * m, "one output row per text of each example");
        let by_example = outputs.reshape([n, m, width]);
        let text = |j: usize| {
            by_example
                .clone()
                .slice([0..n, j..j + 1, 0..width])
                .reshape([n, width])
        };
        match self.kind {
            LossKind::MultipleNegativesRanking => {
                let anchors = unit_rows(text(0));
                let candidates = unit_rows(Tensor::cat((1..m).map(text).collect(), 0));
                let scores = anchors.matmul(candidates.transpose()) * self.scale;
                let own: Vec<usize> = (0..n).collect();
                self.cross_entropy_sum(scores, &own)
            }
            LossKind::CosineSimilarity => {
                let scores = targets
                    .scores
                    .as_ref()
                    .expect("a similarity loss has a score per pair");
                let y: Vec<f32> = indices.iter().map(|&i| scores[i]).collect();
                let cosine = (unit_rows(text(0)) * unit_rows(text(1))).sum_dim(1);
                (cosine - matrix(y, n, 1, &device)).powi_scalar(2).sum()
            }
            LossKind::Triplet => {
                // torch's `vector_norm(a - b)`; the floor keeps the gradient of equal rows finite.
                let distance = |a: Tensor<2>, b: Tensor<2>| {
                    (a - b).powi_scalar(2).sum_dim(1).clamp_min(1e-30).sqrt()
                };
                let (anchor, positive, negative) = (text(0), text(1), text(2));
                let hinge =
                    distance(anchor.clone(), positive) - distance(anchor, negative) + self.margin;
                hinge.clamp_min(0.0).sum()
            }
            other => unreachable!("{other:?} is not an embedding loss"),
        }
    }

    /// Cross-entropy of `outputs` (`[n, k]`) against one class per row, summed over the rows.
    fn cross_entropy_sum(&self, outputs: Tensor<2>, classes: &[usize]) -> Tensor<1> {
        let device = outputs.device();
        let [n, k] = outputs.dims();
        let mut one_hot = vec![0f32; n * k];
        let mut row_weight = vec![1f32; n];
        for (row, &class) in classes.iter().enumerate() {
            one_hot[row * k + class] = 1.0;
            if let Some(w) = &self.weights {
                row_weight[row] = w[class];
            }
        }
        let log_p = activation::log_softmax(outputs, 1);
        let eps = self.label_smoothing;
        // PyTorch: (1-ε)·w_y·(-log p_y) + ε/C·Σ_c w_c·(-log p_c), summed over examples.
        let target_term = (log_p.clone() * matrix(one_hot, n, k, &device)).sum_dim(1)
            * matrix(row_weight, n, 1, &device);
        let mut total = target_term.sum().neg() * (1.0 - eps);
        if eps > 0.0 {
            let class_weight = self.weights.clone().unwrap_or_else(|| vec![1.0; k]);
            let smooth = (log_p * matrix(class_weight, 1, k, &device)).sum();
            total = total - smooth * (eps / k as f64);
        }
        total
    }

    /// The mean loss over `indices` (the tests' reference for the summed losses).
    #[cfg(test)]
    pub fn mean(&self, outputs: Tensor<2>, targets: &Targets, indices: &[usize]) -> Tensor<1> {
        let weight = self.weight(targets, indices).max(f64::MIN_POSITIVE);
        self.sum(outputs, targets, indices) / weight
    }
}

/// Each row divided by its L2 norm (at least 1e-12, as torch's `normalize` in
/// sentence-transformers' `cos_sim`).
fn unit_rows(x: Tensor<2>) -> Tensor<2> {
    let norm = x.clone().powi_scalar(2).sum_dim(1).sqrt().clamp_min(1e-12);
    x / norm
}

/// scikit-learn's "balanced" weights, `n / (classes · count)`; a class without examples gets 0.
pub fn balanced_class_weights(targets: &[usize], classes: usize) -> Vec<f32> {
    let mut counts = vec![0usize; classes];
    for &t in targets {
        counts[t] += 1;
    }
    counts
        .iter()
        .map(|&c| {
            if c == 0 {
                0.0
            } else {
                (targets.len() as f64 / (classes * c) as f64) as f32
            }
        })
        .collect()
}

/// For multi-label "balanced": `pos_weight` = negatives / positives per label (1 without positives).
pub fn balanced_pos_weight(rows: &[Vec<bool>], labels: usize) -> Vec<f32> {
    (0..labels)
        .map(|c| {
            let positives = rows.iter().filter(|r| r[c]).count();
            if positives == 0 {
                1.0
            } else {
                ((rows.len() - positives) as f64 / positives as f64) as f32
            }
        })
        .collect()
}
