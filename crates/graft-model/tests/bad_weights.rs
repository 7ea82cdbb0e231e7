//! Broken model folders give errors that name the file and tensor, never a panic or a silently
//! wrong model.

mod common;

use std::path::Path;

use burn::tensor::Device;
use common::minilm_dir;
use graft_model::{ModelError, ModelFolder, bert};

/// A copy of the real folder's config and tokenizer, with `weights` as model.safetensors.
fn folder_with(weights: &[u8], config: Option<&str>) -> tempfile::TempDir {
    let dir = tempfile::tempdir().unwrap();
    let source = minilm_dir();
    let config_text = std::fs::read_to_string(source.join("config.json")).unwrap();
    std::fs::write(
        dir.path().join("config.json"),
        config.unwrap_or(&config_text),
    )
    .unwrap();
    std::fs::write(dir.path().join("model.safetensors"), weights).unwrap();
    dir
}

fn real_weights() -> Vec<u8> {
    std::fs::read(minilm_dir().join("model.safetensors")).unwrap()
}

fn load(dir: &Path) -> Result<(), ModelError> {
    bert::load(dir, &Device::flex()).map(|_| ())
}

/// Rewrites the real file without `drop` and with `replace` swapped in.
fn edited_weights(drop: &str, replace: Option<(&str, Vec<usize>)>) -> Vec<u8> {
    let bytes = real_weights();
    let file = safetensors::SafeTensors::deserialize(&bytes).unwrap();
    let replacement_data: Vec<u8>;
    let mut views = Vec::new();
    for (name, view) in file.tensors() {
        if name == drop {
            continue;
        }
        views.push((name, view));
    }
    if let Some((name, shape)) = replace {
        replacement_data = vec![0u8; shape.iter().product::<usize>() * 4];
        views.retain(|(n, _)| n != name);
        let view =
            safetensors::tensor::TensorView::new(safetensors::Dtype::F32, shape, &replacement_data)
                .unwrap();
        views.push((name.to_string(), view));
        return safetensors::serialize(views, None).unwrap();
    }
    safetensors::serialize(views, None).unwrap()
}

#[test]
fn truncated_file_names_the_file() {
    let bytes = real_weights();
    let dir = folder_with(&bytes[..bytes.len() / 2], None);
    let error = load(dir.path()).unwrap_err();
    assert!(
        matches!(error, ModelError::CorruptWeights { .. }),
        "{error}"
    );
    assert!(error.to_string().contains("model.safetensors"), "{error}");
}

#[test]
fn garbage_file_is_an_error() {
    let dir = folder_with(b"definitely not safetensors", None);
    let error = load(dir.path()).unwrap_err().to_string();
    assert!(
        error.contains("model.safetensors") && error.contains("corrupt"),
        "{error}"
    );
}

#[test]
fn missing_tensor_is_named() {
    let dir = folder_with(
        &edited_weights("encoder.layer.3.attention.self.key.bias", None),
        None,
    );
    let error = load(dir.path()).unwrap_err().to_string();
    assert!(
        error.contains("missing tensor(s) `encoder.layer.3.attention.self.key.bias`"),
        "{error}"
    );
}

#[test]
fn shape_mismatch_names_tensor_and_shapes() {
    let weights = edited_weights(
        "",
        Some(("encoder.layer.2.intermediate.dense.weight", vec![1000, 384])),
    );
    let dir = folder_with(&weights, None);
    let error = load(dir.path()).unwrap_err().to_string();
    assert!(
        error.contains("`encoder.layer.2.intermediate.dense.weight` has shape [1000, 384], expected [1536, 384]"),
        "{error}"
    );
}

#[test]
fn config_that_disagrees_with_the_weights_is_caught() {
    let config = std::fs::read_to_string(minilm_dir().join("config.json"))
        .unwrap()
        .replace("\"num_hidden_layers\": 6", "\"num_hidden_layers\": 7");
    let dir = folder_with(&real_weights(), Some(&config));
    let error = load(dir.path()).unwrap_err().to_string();
    assert!(error.contains("encoder.layer.6."), "{error}");
}

#[test]
fn missing_config_is_named() {
    let dir = tempfile::tempdir().unwrap();
    let error = ModelFolder::open(dir.path()).unwrap_err().to_string();
    assert!(
        error.contains("config.json") && error.contains("missing"),
        "{error}"
    );
    let error = ModelFolder::open(&dir.path().join("nope"))
        .unwrap_err()
        .to_string();
    assert!(error.contains("nope"), "{error}");
}

#[test]
fn unsupported_architecture_is_named() {
    let dir = tempfile::tempdir().unwrap();
    std::fs::write(dir.path().join("config.json"), r#"{"model_type": "gpt2"}"#).unwrap();
    let error = ModelFolder::open(dir.path()).unwrap_err().to_string();
    assert!(
        error.contains("gpt2") && error.contains("supported: bert"),
        "{error}"
    );
}

#[test]
fn prefixed_names_load_and_pooler_is_optional() {
    // `bert.`-prefixed names (as in BertForSequenceClassification checkpoints), without a pooler.
    let bytes = real_weights();
    let file = safetensors::SafeTensors::deserialize(&bytes).unwrap();
    let views: Vec<(String, _)> = file
        .tensors()
        .into_iter()
        .filter(|(name, _)| !name.starts_with("pooler."))
        .map(|(name, view)| (format!("bert.{name}"), view))
        .collect();
    let dir = folder_with(&safetensors::serialize(views, None).unwrap(), None);
    let (_, model) = bert::load(dir.path(), &Device::flex()).unwrap();
    assert!(model.pooler.is_none());
    assert_eq!(model.num_layers(), 6);
}
