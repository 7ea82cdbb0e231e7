//! Measurements behind BENCHMARKS.md: backbone forward throughput on a full batch, and what
//! length bucketing saves when embedding a real data set. Timings are medians of repeated runs
//! after a warm-up; nothing here asserts a speed.

use std::path::Path;
use std::time::Instant;

use burn::tensor::Device;
use graft_data::{TextExample, TokenBatch, tokenize::Tokens};
use graft_model::{Backbone, ModelFolder, Pooling};
use serde::Serialize;

use crate::backend;
use crate::classifier::extract_features;
use crate::config::{Backend, Precision};
use crate::error::TrainError;
use crate::modality::{Encoded, FeatureChoices, Preparation, sequence_multiple};
use crate::progress::Silent;

#[derive(Debug, Clone, Serialize)]
pub struct ForwardBench {
    pub backend: String,
    pub device: String,
    /// The float type of the pass (f32, f16 or bf16).
    pub precision: String,
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
        ..FeatureChoices::default()
    };
    let preparation = Preparation::resolve(&folder, &choices, model_dir)?;
    let backbone = Backbone::load(&folder, preparation.pooling(), false, device)?;
    let examples: Vec<TextExample> = texts.iter().map(|t| TextExample::unlabelled(*t)).collect();
    let encoded = preparation.encoder(&folder)?.encode(&examples)?;
    Ok((backbone, encoded))
}

/// Token positions the batches compute on `device`, padding included.
fn padded_positions(
    batches: &[Vec<usize>],
    tokens: &[Tokens],
    max_length: usize,
    device: &Device,
) -> usize {
    let multiple = sequence_multiple(device);
    batches
        .iter()
        .map(|b| {
            let longest = b.iter().map(|&i| tokens[i].ids.len()).max().unwrap_or(0);
            b.len() * TokenBatch::padded_length(longest, multiple, max_length)
        })
        .sum()
}

pub fn forward_throughput(
    model_dir: &Path,
    texts: &[&str],
    backend: Backend,
    batch: usize,
    seq_len: usize,
    repeats: usize,
    precision: Precision,
) -> Result<ForwardBench, TrainError> {
    let selected = backend::select(backend)?;
    crate::precision::check_supported(&selected.device, precision)?;
    let (backbone, encoded) = load(model_dir, texts, seq_len, &selected.device)?;
    let backbone = crate::precision::cast_model(&backbone, precision);
    let Encoded::Text { tokens, .. } = &encoded else {
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
        precision: precision.to_string(),
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
    let Encoded::Text { tokens, .. } = &encoded else {
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
        positions_in_file_order: padded_positions(&in_order, tokens, max_length, device),
        positions_bucketed: padded_positions(&bucketed, tokens, max_length, device),
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

/// CPU threads the kernels use (rayon's global pool).
pub fn threads() -> usize {
    graft_kernels::threads()
}

/// Sets the CPU thread count; call before any tensor work.
pub fn set_threads(threads: usize) -> Result<(), TrainError> {
    graft_kernels::set_threads(threads).map_err(TrainError::Unsupported)
}

/// The reference script, shipped inside the binary so `graft bench forward --compare` works
/// from anywhere.
const REFERENCE_SCRIPT: &str = include_str!("../../../scripts/bench/reference_forward.py");

/// The same forward bench on PyTorch and ONNX Runtime, through `python`.
#[derive(Debug, Clone)]
pub struct ReferenceRun {
    pub python: std::path::PathBuf,
    pub model: std::path::PathBuf,
    pub data: std::path::PathBuf,
    pub column: String,
    pub batch: usize,
    pub seq_len: usize,
    pub repeats: usize,
    pub threads: usize,
}

/// graft, PyTorch and ONNX Runtime on one batch, measured one after the other in one run.
#[derive(Debug, Clone, Serialize)]
pub struct SideBySide {
    pub graft: ForwardBench,
    pub pytorch: serde_json::Value,
    pub onnxruntime: serde_json::Value,
    pub graft_over_pytorch: f64,
    pub graft_over_onnxruntime: f64,
}

impl SideBySide {
    /// A small table of sequences per second and ratios.
    pub fn table(&self) -> String {
        let (torch, ort) = (rate(&self.pytorch), rate(&self.onnxruntime));
        let graft = self.graft.sequences_per_second;
        format!(
            "batch {} x {} tokens\n\
             {:<14} {:>10} {:>12}\n\
             {:<14} {:>10.2} {:>12.2}\n\
             {:<14} {:>10.2} {:>12.2}\n\
             {:<14} {:>10.2} {:>12}",
            self.graft.batch,
            self.graft.seq_len,
            "runtime",
            "seq/s",
            "graft ÷ it",
            "pytorch",
            torch,
            graft / torch,
            "onnxruntime",
            ort,
            graft / ort,
            format!("graft {}", self.graft.backend),
            graft,
            "",
        )
    }
}

/// A reference report's sequences per second (NaN when it has none).
fn rate(report: &serde_json::Value) -> f64 {
    report["sequences_per_second"].as_f64().unwrap_or(f64::NAN)
}

/// Runs the reference script for PyTorch and ONNX Runtime after graft's measurement.
pub fn compare_forward(graft: ForwardBench, run: &ReferenceRun) -> Result<SideBySide, TrainError> {
    let temp = std::env::temp_dir();
    let scratch = tempfile::tempdir().map_err(TrainError::io(&temp))?;
    let script = scratch.path().join("reference_forward.py");
    std::fs::write(&script, REFERENCE_SCRIPT).map_err(TrainError::io(&script))?;
    let measure = |runtime: &str| -> Result<serde_json::Value, TrainError> {
        let output = std::process::Command::new(&run.python)
            .arg(&script)
            .arg(runtime)
            .arg("--model")
            .arg(&run.model)
            .arg("--data")
            .arg(&run.data)
            .args(["--column", &run.column])
            .args(["--batch", &run.batch.to_string()])
            .args(["--seq-len", &run.seq_len.to_string()])
            .args(["--repeats", &run.repeats.to_string()])
            .args(["--threads", &run.threads.to_string()])
            .arg("--onnx-cache")
            .arg(scratch.path())
            .stderr(std::process::Stdio::inherit())
            .output()
            .map_err(|e| {
                TrainError::Unsupported(format!("cannot run {}: {e}", run.python.display()))
            })?;
        let stdout = String::from_utf8_lossy(&output.stdout);
        let last = stdout.lines().rev().find(|l| l.starts_with('{'));
        match (output.status.success(), last) {
            (true, Some(line)) => serde_json::from_str(line).map_err(|e| {
                TrainError::Unsupported(format!("the {runtime} reference printed {line:?}: {e}"))
            }),
            _ => Err(TrainError::Unsupported(format!(
                "the {runtime} reference failed ({}) with {}",
                output.status,
                run.python.display()
            ))),
        }
    };
    let pytorch = measure("torch")?;
    let onnxruntime = measure("onnxruntime")?;
    Ok(SideBySide {
        graft_over_pytorch: graft.sequences_per_second / rate(&pytorch),
        graft_over_onnxruntime: graft.sequences_per_second / rate(&onnxruntime),
        graft,
        pytorch,
        onnxruntime,
    })
}
