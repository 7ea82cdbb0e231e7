//! Weights that are not one `model.safetensors`: a sharded `model.safetensors.index.json` and a
//! `pytorch_model.bin` (read without running pickled code) load the same model. Its own test
//! binary, because it points `GRAFT_CACHE_DIR` at a temporary folder.

mod common;

use burn::tensor::Device;
use common::*;
use graft_data::TokenBatch;
use graft_model::{Backbone, ModelFolder};

/// The mean features of the golden texts as one padded batch, from a folder.
fn batch_means(folder: &ModelFolder) -> (Vec<f32>, usize) {
    let golden = golden("text_families/roberta.json");
    let texts = golden_texts(&golden);
    let tokens = family_tokenizer(folder).tokenize(&texts).unwrap();
    let batch = TokenBatch::pad(&tokens.iter().collect::<Vec<_>>());
    #[allow(deprecated)]
    let device = Device::flex();
    let (_, options) = poolings(false).remove(0);
    let backbone = Backbone::load(folder, options, false, &device).unwrap();
    features(&backbone, &batch, &device)
}

/// A folder with `config.json`, `tokenizer.json` and the given weight files.
fn folder_with(files: &[(&str, Vec<u8>)]) -> tempfile::TempDir {
    let source = text_family("text_families/roberta");
    let dir = tempfile::tempdir().unwrap();
    for file in ["config.json", "tokenizer.json"] {
        std::fs::copy(source.dir.join(file), dir.path().join(file)).unwrap();
    }
    for (name, bytes) in files {
        std::fs::write(dir.path().join(name), bytes).unwrap();
    }
    dir
}

/// Weights as a sharded `model.safetensors.index.json` or as `pytorch_model.bin` (read without
/// running pickled code) load the same model as `model.safetensors`.
#[test]
fn sharded_and_pytorch_weights_load_the_same_model() {
    let cache = tempfile::tempdir().unwrap();
    // SAFETY: set before any other thread of this test reads the environment.
    unsafe { std::env::set_var("GRAFT_CACHE_DIR", cache.path()) };
    let source = text_family("text_families/roberta");
    let (want, width) = batch_means(&source);

    let bytes = std::fs::read(source.dir.join("model.safetensors")).unwrap();
    let file = safetensors::SafeTensors::deserialize(&bytes).unwrap();
    let mut names: Vec<String> = file.names().into_iter().map(str::to_string).collect();
    names.sort();
    let (first, second) = names.split_at(names.len() / 2);
    let shard = |part: &[String]| {
        let views: Vec<_> = part
            .iter()
            .map(|n| (n.clone(), file.tensor(n).unwrap()))
            .collect();
        safetensors::serialize(views, None).unwrap()
    };
    let weight_map: serde_json::Map<String, serde_json::Value> = first
        .iter()
        .map(|n| (n.clone(), "model-00001-of-00002.safetensors".into()))
        .chain(
            second
                .iter()
                .map(|n| (n.clone(), "model-00002-of-00002.safetensors".into())),
        )
        .collect();
    let index = serde_json::json!({"metadata": {}, "weight_map": weight_map});
    let sharded = folder_with(&[
        ("model-00001-of-00002.safetensors", shard(first)),
        ("model-00002-of-00002.safetensors", shard(second)),
        (
            "model.safetensors.index.json",
            serde_json::to_vec(&index).unwrap(),
        ),
    ]);
    let pytorch = folder_with(&[(
        "pytorch_model.bin",
        std::fs::read(source.dir.join("pytorch_model.bin")).unwrap(),
    )]);
    for dir in [&sharded, &pytorch] {
        let folder = ModelFolder::open(dir.path()).unwrap();
        assert!(folder.weights_path().starts_with(cache.path()));
        let (got, got_width) = batch_means(&folder);
        assert_eq!(got_width, width);
        assert_eq!(got, want, "{}", dir.path().display());
        // The second open reuses the gathered file.
        assert_eq!(
            ModelFolder::open(dir.path()).unwrap().weights_path(),
            folder.weights_path()
        );
    }

    // A shard the index names but the folder lacks is an error naming it.
    let broken = folder_with(&[(
        "model.safetensors.index.json",
        serde_json::to_vec(&index).unwrap(),
    )]);
    let error = ModelFolder::open(broken.path()).unwrap_err().to_string();
    assert!(
        error.contains("model-00001-of-00002.safetensors"),
        "{error}"
    );
}
