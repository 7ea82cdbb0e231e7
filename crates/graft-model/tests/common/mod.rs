//! Shared helpers for the model tests: the real all-MiniLM-L6-v2 folder, the small text-family
//! folders, goldens and comparisons.

#![allow(dead_code)]

use std::path::PathBuf;

use burn::tensor::Device;
use graft_data::{TextTokenizer, TokenBatch};
use graft_model::{Backbone, Inputs, ModelFolder, Pooling, PoolingOptions, Preprocessing};

/// The model folder `scripts/fetch-models.sh` fills.
pub fn minilm_dir() -> PathBuf {
    let dir = std::env::var_os("GRAFT_MINILM_DIR").map_or_else(
        || PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../../models/all-MiniLM-L6-v2"),
        PathBuf::from,
    );
    assert!(
        dir.join("model.safetensors").is_file(),
        "{} has no model.safetensors: run scripts/fetch-models.sh first",
        dir.display()
    );
    dir
}

pub fn golden(name: &str) -> serde_json::Value {
    let path = PathBuf::from(env!("CARGO_MANIFEST_DIR"))
        .join("tests/golden")
        .join(name);
    let text = std::fs::read_to_string(&path).unwrap_or_else(|e| panic!("{}: {e}", path.display()));
    serde_json::from_str(&text).expect("golden JSON")
}

pub fn floats(value: &serde_json::Value) -> Vec<f32> {
    value
        .as_array()
        .expect("array")
        .iter()
        .map(|v| v.as_f64().expect("number") as f32)
        .collect()
}

pub fn ints(value: &serde_json::Value) -> Vec<i64> {
    value
        .as_array()
        .expect("array")
        .iter()
        .map(|v| v.as_i64().expect("integer"))
        .collect()
}

pub fn max_abs_diff(a: &[f32], b: &[f32]) -> f32 {
    assert_eq!(a.len(), b.len(), "lengths differ");
    a.iter()
        .zip(b)
        .map(|(x, y)| (x - y).abs())
        .fold(0.0, f32::max)
}

/// The CPU backends every fidelity test runs on.
#[allow(deprecated)]
pub fn cpu_devices() -> Vec<(&'static str, Device)> {
    vec![("flex", Device::flex()), ("ndarray", Device::ndarray())]
}

/// The wgpu device (software Vulkan in CI). Set GRAFT_SKIP_WGPU=1 only on a machine without any
/// Vulkan driver; CI installs one and runs these tests.
pub fn wgpu_device() -> Option<Device> {
    if std::env::var_os("GRAFT_SKIP_WGPU").is_some() {
        eprintln!("GRAFT_SKIP_WGPU is set: skipping the wgpu check");
        return None;
    }
    // Starting wgpu twice in one process is an error: the tests of a file share one device.
    static DEVICE: std::sync::OnceLock<Result<Device, String>> = std::sync::OnceLock::new();
    match DEVICE.get_or_init(|| Device::wgpu_options().init().map_err(|e| e.to_string())) {
        Ok(device) => Some(device.clone()),
        Err(e) => {
            panic!("wgpu did not start ({e}); install mesa-vulkan-drivers or set GRAFT_SKIP_WGPU=1")
        }
    }
}

/// A small text-family folder under `tests/golden` (`text_families/roberta`,
/// `text_variants/mpnet-pad0`).
pub fn text_family(path: &str) -> ModelFolder {
    let dir = PathBuf::from(env!("CARGO_MANIFEST_DIR"))
        .join("tests/golden")
        .join(path);
    ModelFolder::open(&dir).expect("model folder")
}

/// The folder's tokenizer at the length its positions allow (64 for the golden families, 128
/// for `text_variants/mpnet-pad0`).
pub fn family_tokenizer(folder: &ModelFolder) -> TextTokenizer {
    let Ok(Preprocessing::Text(text)) = folder.preprocessing() else {
        panic!("a text model");
    };
    TextTokenizer::from_file(&text.tokenizer, text.max_positions, text.vocab_size).unwrap()
}

/// The texts of a golden's cases, in order.
pub fn golden_texts(golden: &serde_json::Value) -> Vec<&str> {
    golden["cases"]
        .as_array()
        .unwrap()
        .iter()
        .map(|c| c["text"].as_str().unwrap())
        .collect()
}

/// The poolings the goldens hold: golden key and graft's options.
pub fn poolings(has_pooler: bool) -> Vec<(&'static str, PoolingOptions)> {
    let options = |pooling, use_pooler| PoolingOptions {
        pooling,
        use_pooler,
        normalize: false,
    };
    let mut all = vec![
        ("mean", options(Pooling::Mean, false)),
        ("cls", options(Pooling::Cls, false)),
    ];
    if has_pooler {
        all.push(("pooler", options(Pooling::Cls, true)));
    }
    all
}

/// Features `[batch, width]` of a padded batch, row-major, and the width.
pub fn features(backbone: &Backbone, batch: &TokenBatch, device: &Device) -> (Vec<f32>, usize) {
    let (ids, types, mask) = batch.to_tensors(device);
    let out = backbone.forward(Inputs::Text {
        input_ids: ids,
        token_type_ids: types,
        attention_mask: mask,
    });
    let [_, width] = out.dims();
    (out.into_data().try_into_vec_as::<f32>().unwrap(), width)
}
