//! Measurements behind BENCHMARKS.md: backbone forward throughput on a full batch, and what
//! length bucketing saves when embedding a real data set. Timings are medians of repeated runs
//! after a warm-up; nothing here asserts a speed.

use std::path::Path;
use std::time::Instant;

use burn::tensor::Device;
use graft_data::{TextExample, tokenize::Tokens};
use graft_model::{Backbone, ModelFolder, Pooling};
use serde::Serialize;

use crate::backend;
use crate::classifier::extract_features;
use crate::config::Backend;
use crate::error::TrainError;
use crate::modality::{Encoded, FeatureChoices, Preparation};
use crate::progress::Silent;

#[derive(Debug, Clone, Serialize)]
pub struct ForwardBench {
    pub backend: String,
    pub device: String,
    pub batch: usize,
    pub seq_len: usize,
    pub seconds: Vec<f64>,
    pub median_seconds: f64,
    pub sequences_per_second: f64,
}

#[derive(Debug, Clone, Serialize)]
pub struct BucketingBench {
    pub backend: String,
    pub texts: usize,
    pub batch: usize,
    pub max_length: usize,
    /// Token positions computed, padding included.
    pub positions_in_file_order: usize,
    pub positions_bucketed: usize,
    pub seconds_in_file_order: f64,
    pub seconds_bucketed: f64,
}

fn median(values: &[f64]) -> f64 {
    let mut sorted = values.to_vec();
    sorted.sort_by(f64::total_cmp);
    let mid = sorted.len() / 2;
    if sorted.len() % 2 == 1 {
        sorted[mid]
    } else {
        (sorted[mid - 1] + sorted[mid]) / 2.0
    }
}

/// A text model folder's backbone (mean pooling, normalized) and `texts` tokenized for it.
fn load(
    model_dir: &Path,
    texts: &[&str],
    max_length: usize,
    device: &Device,
) -> Result<(Backbone, Encoded), TrainError> {
    let folder = ModelFolder::open(model_dir)?;
    let choices = FeatureChoices {
        pooling: Some(Pooling::Mean),
        normalize: Some(true),
        max_length: Some(max_length),
        pooler: Some(false),
        image_size: None,
    };
    let preparation = Preparation::resolve(&folder, &choices, model_dir)?;
    let backbone = Backbone::load(&folder, preparation.pooling(), false, device)?;
    let examples: Vec<TextExample> = texts.iter().map(|t| TextExample::unlabelled(*t)).collect();
    let encoded = preparation.encoder(&folder)?.encode(&examples)?;
    Ok((backbone, encoded))
}

/// Token positions the batches compute, padding included.
fn padded_positions(batches: &[Vec<usize>], tokens: &[Tokens]) -> usize {
    batches
        .iter()
        .map(|b| b.len() * b.iter().map(|&i| tokens[i].ids.len()).max().unwrap_or(0))
        .sum()
}

pub fn forward_throughput(
    model_dir: &Path,
    texts: &[&str],
    backend: Backend,
    batch: usize,
    seq_len: usize,
    repeats: usize,
) -> Result<ForwardBench, TrainError> {
    let selected = backend::select(backend)?;
    let (backbone, encoded) = load(model_dir, texts, seq_len, &selected.device)?;
    let Encoded::Text(tokens) = &encoded else {
        return Err(TrainError::Unsupported(
            "the forward bench is for text models".into(),
        ));
    };
    let full: Vec<usize> = (0..tokens.len())
        .filter(|&i| tokens[i].ids.len() == seq_len)
        .take(batch)
        .collect();
    if full.len() < batch {
        return Err(TrainError::Unsupported(format!(
            "only {} texts fill {seq_len} tokens; {batch} are needed",
            full.len()
        )));
    }
    let inputs = encoded.batch(&full, None, &selected.device);
    let run = || {
        let out = backbone.forward(inputs.clone());
        // Reading back waits for the work to finish (wgpu runs asynchronously).
        let _ = out.into_data();
    };
    run();
    let seconds: Vec<f64> = (0..repeats.max(1))
        .map(|_| {
            let start = Instant::now();
            run();
            start.elapsed().as_secs_f64()
        })
        .collect();
    let median_seconds = median(&seconds);
    Ok(ForwardBench {
        backend: format!("{backend:?}").to_lowercase(),
        device: selected.description,
        batch,
        seq_len,
        sequences_per_second: batch as f64 / median_seconds,
        median_seconds,
        seconds,
    })
}

/// Embeds `texts` twice: in file order (each batch padded to its longest text) and in
/// length-sorted batches, as graft does.
pub fn bucketing(
    model_dir: &Path,
    texts: &[&str],
    backend: Backend,
    batch: usize,
    max_length: usize,
) -> Result<BucketingBench, TrainError> {
    let selected = backend::select(backend)?;
    let device = &selected.device;
    let (backbone, encoded) = load(model_dir, texts, max_length, device)?;
    let Encoded::Text(tokens) = &encoded else {
        return Err(TrainError::Unsupported(
            "the bucketing bench is for text models".into(),
        ));
    };
    let all: Vec<usize> = (0..tokens.len()).collect();
    let in_order: Vec<Vec<usize>> = all.chunks(batch).map(<[usize]>::to_vec).collect();
    let bucketed = encoded.buckets(&all, batch);

    let start = Instant::now();
    for indices in &in_order {
        let _ = backbone
            .forward(encoded.batch(indices, None, device))
            .into_data();
    }
    let seconds_in_file_order = start.elapsed().as_secs_f64();
    let start = Instant::now();
    let _ = extract_features(&backbone, &encoded, None, batch, device, &Silent).into_data();
    let seconds_bucketed = start.elapsed().as_secs_f64();
    Ok(BucketingBench {
        backend: format!("{backend:?}").to_lowercase(),
        texts: texts.len(),
        batch,
        max_length,
        positions_in_file_order: padded_positions(&in_order, tokens),
        positions_bucketed: padded_positions(&bucketed, tokens),
        seconds_in_file_order,
        seconds_bucketed,
    })
}

/// The process's peak resident memory (VmHWM), where /proc tells it.
pub fn peak_rss_bytes() -> Option<u64> {
    let status = std::fs::read_to_string("/proc/self/status").ok()?;
    let line = status.lines().find(|l| l.starts_with("VmHWM:"))?;
    let kib: u64 = line.split_whitespace().nth(1)?.parse().ok()?;
    Some(kib * 1024)
}
