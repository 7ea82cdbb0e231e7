//! The trained model: a text backbone with a head on top, and batched feature extraction that
//! tokenizes once and groups texts of similar length to cut padding.

use burn::module::Module;
use burn::tensor::{Device, Int, Tensor, TensorData};
use graft_data::{TextTokenizer, TokenBatch, tokenize::Tokens};
use graft_model::TextEncoder;

use crate::TrainError;
use crate::head::Head;
use crate::progress::Progress;

#[derive(Module, Debug)]
pub struct TextClassifier {
    pub encoder: TextEncoder,
    pub head: Head,
}

impl TextClassifier {
    pub fn forward(&self, batch: &TokenBatch, device: &Device) -> Tensor<2> {
        let (ids, types, mask) = batch.to_tensors(device);
        self.head.forward(self.encoder.forward(ids, types, mask))
    }
}

/// Tokenized texts, kept so that no epoch tokenizes again.
pub struct TokenizedTexts {
    pub tokens: Vec<Tokens>,
}

impl TokenizedTexts {
    pub fn new(tokenizer: &TextTokenizer, texts: &[&str]) -> Result<Self, TrainError> {
        Ok(Self {
            tokens: tokenizer.tokenize(texts)?,
        })
    }

    /// The texts at `indices`, in that order.
    pub fn subset(&self, indices: &[usize]) -> Self {
        Self {
            tokens: indices.iter().map(|&i| self.tokens[i].clone()).collect(),
        }
    }

    pub fn len(&self) -> usize {
        self.tokens.len()
    }

    pub fn is_empty(&self) -> bool {
        self.tokens.is_empty()
    }

    pub fn batch(&self, indices: &[usize]) -> TokenBatch {
        let rows: Vec<&Tokens> = indices.iter().map(|&i| &self.tokens[i]).collect();
        TokenBatch::pad(&rows)
    }

    /// Indices in batches of `batch_size`, each batch of texts of similar length (sorted by
    /// length), so little padding is computed.
    pub fn length_buckets(&self, batch_size: usize) -> Vec<Vec<usize>> {
        let mut order: Vec<usize> = (0..self.tokens.len()).collect();
        order.sort_by_key(|&i| self.tokens[i].ids.len());
        order.chunks(batch_size).map(<[usize]>::to_vec).collect()
    }

    /// How many token positions the batches compute, padding included.
    pub fn padded_positions(batches: &[Vec<usize>], tokens: &[Tokens]) -> usize {
        batches
            .iter()
            .map(|b| b.len() * b.iter().map(|&i| tokens[i].ids.len()).max().unwrap_or(0))
            .sum()
    }
}

/// Features `[n, hidden]` of every text, in input order, computed in length-sorted batches on
/// `device` without gradients.
pub fn extract_features(
    encoder: &TextEncoder,
    texts: &TokenizedTexts,
    batch_size: usize,
    device: &Device,
    progress: &dyn Progress,
) -> Tensor<2> {
    let buckets = texts.length_buckets(batch_size);
    let mut chunks = Vec::with_capacity(buckets.len());
    for bucket in &buckets {
        let batch = texts.batch(bucket);
        let (ids, types, mask) = batch.to_tensors(device);
        chunks.push(encoder.forward(ids, types, mask));
        progress.advance(bucket.len());
    }
    let sorted = Tensor::cat(chunks, 0);
    // Row k of `sorted` is text order[k]; put each text back at its own index.
    let order: Vec<usize> = buckets.concat();
    let mut position = vec![0i64; order.len()];
    for (k, &i) in order.iter().enumerate() {
        position[i] = k as i64;
    }
    let n = position.len();
    sorted.select(
        0,
        Tensor::<1, Int>::from_data(TensorData::new(position, [n]), device),
    )
}
