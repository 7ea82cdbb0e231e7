//! The trained model: any backbone with a head on top, and batched feature extraction in the
//! order the modality prefers (texts of similar length together, to cut padding).

use burn::module::Module;
use burn::tensor::{Device, Int, Tensor, TensorData};
use graft_model::Backbone;

use crate::head::Head;
use crate::loss::{SentenceTargets, Targets};
use crate::modality::Encoded;
use crate::progress::Progress;

#[derive(Module, Debug)]
pub struct Classifier {
    pub backbone: Backbone,
    pub head: Head,
}

impl Classifier {
    /// Outputs `[batch, k]` for the examples at `indices`; `augment` transforms training images.
    pub fn forward(
        &self,
        data: &Encoded,
        indices: &[usize],
        augment: Option<crate::modality::EpochAugment>,
        device: &Device,
    ) -> Tensor<2> {
        self.head
            .forward(self.backbone.forward(data.batch(indices, augment, device)))
    }

    /// Embedding training: the embeddings `[n · texts, width]` of every text of the examples at
    /// `indices`, whose texts are consecutive in `data` ([`crate::modality::each_text`]).
    pub fn forward_texts(
        &self,
        data: &Encoded,
        indices: &[usize],
        texts: usize,
        device: &Device,
    ) -> Tensor<2> {
        let rows: Vec<usize> = indices
            .iter()
            .flat_map(|&i| i * texts..(i + 1) * texts)
            .collect();
        self.forward(data, &rows, None, device)
    }

    /// Token classification: outputs `[tokens, k]`, one row per labelled token of the sentences
    /// at `indices`, in order (the head runs on every token's last hidden state).
    pub fn forward_tokens(
        &self,
        data: &Encoded,
        indices: &[usize],
        sentences: &[SentenceTargets],
        device: &Device,
    ) -> Tensor<2> {
        let states = self
            .backbone
            .forward_tokens(data.batch(indices, None, device))
            .expect("token classification runs on a text backbone");
        let [batch, seq, _] = states.dims();
        let logits = self.head.forward(states);
        let k = logits.dims()[2];
        let rows: Vec<i64> = indices
            .iter()
            .enumerate()
            .flat_map(|(row, &i)| {
                sentences[i]
                    .tokens
                    .iter()
                    .map(move |t| (row * seq + t.position) as i64)
            })
            .collect();
        let n = rows.len();
        logits.reshape([batch * seq, k]).select(
            0,
            Tensor::<1, Int>::from_data(TensorData::new(rows, [n]), device),
        )
    }
}

/// Features `[n, width]` (f32) of the examples at `indices` (all of them when `None`), in that
/// order, computed in the modality's batches on `device` without gradients.
pub fn extract_features(
    backbone: &Backbone,
    data: &Encoded,
    indices: Option<&[usize]>,
    batch_size: usize,
    device: &Device,
    progress: &dyn Progress,
) -> Tensor<2> {
    let all: Vec<usize>;
    let indices = match indices {
        Some(indices) => indices,
        None => {
            all = (0..data.len()).collect();
            &all
        }
    };
    if indices.is_empty() {
        return Tensor::zeros([0, backbone.feature_size()], device);
    }
    let buckets = data.buckets(indices, batch_size.max(1));
    let mut chunks = Vec::with_capacity(buckets.len());
    for bucket in &buckets {
        chunks.push(backbone.forward(data.batch(bucket, None, device)));
        progress.advance(bucket.len());
    }
    // Features are f32 whatever type the backbone computes in.
    let sorted = crate::precision::to_f32(Tensor::cat(chunks, 0));
    // Row k of `sorted` is example order[k]; put each back at its own position.
    let order: Vec<usize> = buckets.concat();
    let place: std::collections::HashMap<usize, usize> =
        order.iter().enumerate().map(|(k, &i)| (i, k)).collect();
    let position: Vec<i64> = indices.iter().map(|i| place[i] as i64).collect();
    let n = position.len();
    if order == indices {
        return sorted;
    }
    sorted.select(
        0,
        Tensor::<1, Int>::from_data(TensorData::new(position, [n]), device),
    )
}

/// Token classification: one output row per labelled token of every sentence, in order, run in
/// batches of `batch_size` in inference mode.
pub fn token_rows(
    model: &Classifier,
    data: &Encoded,
    targets: &Targets,
    batch_size: usize,
    device: &Device,
) -> Vec<Vec<f32>> {
    let Targets::Tokens(sentences) = targets else {
        return Vec::new();
    };
    let model = model.valid();
    let indices: Vec<usize> = (0..data.len()).collect();
    let mut rows = Vec::new();
    for batch in indices.chunks(batch_size.max(1)) {
        let outputs = model.forward_tokens(data, batch, sentences, device);
        rows.extend(rows_of(crate::precision::to_f32(outputs)));
    }
    rows
}

/// Rows of a `[n, k]` tensor, read back to the host.
pub fn rows_of(tensor: Tensor<2>) -> Vec<Vec<f32>> {
    let [_, k] = tensor.dims();
    let values: Vec<f32> = tensor
        .into_data()
        .try_into_vec_as::<f32>()
        .expect("f32 data");
    values.chunks(k.max(1)).map(<[f32]>::to_vec).collect()
}

/// The rows of `features` at `indices`.
pub fn select_rows(features: &Tensor<2>, indices: &[usize], device: &Device) -> Tensor<2> {
    let idx: Vec<i64> = indices.iter().map(|&i| i as i64).collect();
    let n = idx.len();
    features.clone().select(
        0,
        Tensor::<1, Int>::from_data(TensorData::new(idx, [n]), device),
    )
}
