//! Exports load in Python and give graft's logits. The goldens were made once: two small runs
//! (mean pooling + linear head, and CLS + pooler + linear head) were exported by graft and run
//! through sentence-transformers and transformers (see golden/export/README.md). Here the same runs are
//! rebuilt from the committed heads and the real backbone; graft's logits must match Python's, and
//! a fresh export must have the layout Python loaded.

use std::path::{Path, PathBuf};

use burn::tensor::Device;
use graft_data::TextExample;
use graft_train::{Model, Silent};

fn repo() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../..")
}

fn golden_dir(name: &str) -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR"))
        .join("tests/golden/export")
        .join(name)
}

/// A run folder: the backbone files and weights, plus the committed head and manifest.
fn rebuild_run(name: &str) -> tempfile::TempDir {
    let dir = tempfile::tempdir().unwrap();
    let backbone = repo().join("models/all-MiniLM-L6-v2");
    // The backbone's files a run folder keeps beside its weights.
    for file in [
        "config.json",
        "tokenizer.json",
        "tokenizer_config.json",
        "special_tokens_map.json",
        "vocab.txt",
    ] {
        if backbone.join(file).is_file() {
            std::fs::copy(backbone.join(file), dir.path().join(file)).unwrap();
        }
    }
    for file in ["graft.json", "labels.json"] {
        std::fs::copy(golden_dir(name).join(file), dir.path().join(file)).unwrap();
    }
    let backbone_bytes = std::fs::read(backbone.join("model.safetensors")).unwrap();
    let head_bytes = std::fs::read(golden_dir(name).join("head.safetensors")).unwrap();
    let backbone_file = safetensors::SafeTensors::deserialize(&backbone_bytes).unwrap();
    let head_file = safetensors::SafeTensors::deserialize(&head_bytes).unwrap();
    let views: Vec<_> = backbone_file
        .tensors()
        .into_iter()
        .chain(head_file.tensors())
        .collect();
    std::fs::write(
        dir.path().join("model.safetensors"),
        safetensors::serialize(views, None).unwrap(),
    )
    .unwrap();
    dir
}

fn golden(name: &str) -> serde_json::Value {
    serde_json::from_str(&std::fs::read_to_string(golden_dir(name).join("logits.json")).unwrap())
        .unwrap()
}

fn graft_logits(run: &Path, texts: &[&str]) -> Vec<Vec<f32>> {
    let model = Model::open(run, &Device::flex()).unwrap();
    let examples: Vec<TextExample> = texts.iter().map(|t| TextExample::unlabelled(*t)).collect();
    model.outputs(&examples, texts.len(), &Silent).unwrap()
}

fn check_logits(name: &str, tolerance: f32) -> tempfile::TempDir {
    let run = rebuild_run(name);
    let golden = golden(name);
    let texts: Vec<&str> = golden["texts"]
        .as_array()
        .unwrap()
        .iter()
        .map(|t| t.as_str().unwrap())
        .collect();
    let got = graft_logits(run.path(), &texts);
    let expected = golden["logits"].as_array().unwrap();
    assert_eq!(got.len(), expected.len());
    for (i, (row, want)) in got.iter().zip(expected).enumerate() {
        let want: Vec<f32> = want
            .as_array()
            .unwrap()
            .iter()
            .map(|v| v.as_f64().unwrap() as f32)
            .collect();
        let diff = row
            .iter()
            .zip(&want)
            .map(|(a, b)| (a - b).abs())
            .fold(0.0f32, f32::max);
        assert!(
            diff <= tolerance,
            "{name}: text {i}: max abs diff {diff} (graft {row:?}, python {want:?})"
        );
    }
    run
}

fn export(run: &Path) -> tempfile::TempDir {
    let out = tempfile::tempdir().unwrap();
    let status = std::process::Command::new(env!("CARGO_BIN_EXE_graft"))
        .args([
            "export",
            "--model",
            run.to_str().unwrap(),
            "--out",
            out.path().join("e").to_str().unwrap(),
        ])
        .status()
        .unwrap();
    assert!(status.success());
    out
}

fn tensor_names(path: &Path) -> Vec<String> {
    let bytes = std::fs::read(path).unwrap();
    let mut names: Vec<String> = safetensors::SafeTensors::deserialize(&bytes)
        .unwrap()
        .names()
        .into_iter()
        .map(str::to_string)
        .collect();
    names.sort();
    names
}

#[test]
fn sentence_transformers_export_matches_python() {
    let run = check_logits("mean-linear", 1e-5);
    let out = export(run.path());
    let e = out.path().join("e");
    let modules: serde_json::Value =
        serde_json::from_str(&std::fs::read_to_string(e.join("modules.json")).unwrap()).unwrap();
    assert_eq!(modules.as_array().unwrap().len(), 4);
    assert_eq!(
        tensor_names(&e.join("3_Dense/model.safetensors")),
        ["linear.bias", "linear.weight"]
    );
    // The exported head is the run's head, bit for bit.
    let head = std::fs::read(golden_dir("mean-linear").join("head.safetensors")).unwrap();
    let head = safetensors::SafeTensors::deserialize(&head).unwrap();
    let dense = std::fs::read(e.join("3_Dense/model.safetensors")).unwrap();
    let dense = safetensors::SafeTensors::deserialize(&dense).unwrap();
    assert_eq!(
        head.tensor("head.layers.0.weight").unwrap().data(),
        dense.tensor("linear.weight").unwrap().data()
    );
}

#[test]
fn transformers_export_matches_python() {
    let run = check_logits("cls-pooler-linear", 1e-5);
    let out = export(run.path());
    let e = out.path().join("e");
    let config: serde_json::Value =
        serde_json::from_str(&std::fs::read_to_string(e.join("config.json")).unwrap()).unwrap();
    assert_eq!(
        config["architectures"],
        serde_json::json!(["BertForSequenceClassification"])
    );
    assert_eq!(config["id2label"]["0"], "great");
    assert_eq!(config["label2id"]["other"], 1);
    let names = tensor_names(&e.join("model.safetensors"));
    assert!(
        names.contains(&"classifier.weight".to_string())
            && names.contains(&"bert.pooler.dense.weight".to_string())
    );
    assert!(
        names
            .iter()
            .all(|n| n.starts_with("bert.") || n.starts_with("classifier.")),
        "{names:?}"
    );
    assert!(e.join("tokenizer.json").is_file());
}
