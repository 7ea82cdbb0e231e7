//! Google's BERT release layout, read without TensorFlow: a random-weight `uncased_L-2_H-32_A-4`
//! checkpoint saved by TensorFlow 2.21's `tf.compat.v1.train.Saver` (with the pre-training heads
//! and `global_step` a real release also holds), made by `scripts/golden/make_tf_bert_goldens.py`,
//! converts to the transformers folder whose tokenizer gives `BertTokenizerFast`'s ids and whose
//! `BertModel` outputs (hidden states, pooler, mean pooling; single texts and a pair) match
//! transformers' on the same weights to 1e-5 (TensorFlow's own forward pass agreed with
//! transformers' to 9.5e-7). Truncated, corrupt and mislabelled bundles are errors naming the
//! file and the tensor. TF2 object-based bundles (`tests/golden/tf2/`, made by
//! `scripts/golden/make_tf2_goldens.py` with TensorFlow 2.21: a Keras 3 checkpoint, a Keras 2
//! one with Adam's slot variables, a SavedModel's `variables/`) resolve every key to the
//! variable's `full_name` through the object graph, tell the optimizer's state from the model's
//! weights, and read the weights as Keras saved them.

mod common;

use std::path::{Path, PathBuf};

use burn::tensor::{Device, Int, Tensor, TensorData};
use common::*;
use graft_data::TextTokenizer;
use graft_model::pooling::PoolingOptions;
use graft_model::tf_bundle::{TensorBundle, TfType};
use graft_model::tf_objects::{OBJECT_GRAPH, tracked_variables};
use graft_model::{
    Backbone, Inputs, ModelError, ModelFolder, Pooling, Preprocessing, google_release,
};

fn release() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("tests/golden/tf_bert/uncased_L-2_H-32_A-4")
}

fn json(path: &Path) -> serde_json::Value {
    serde_json::from_str(&std::fs::read_to_string(path).unwrap()).unwrap()
}

/// Every number of a nested array, in order.
fn nested_floats(value: &serde_json::Value) -> Vec<f32> {
    match value {
        serde_json::Value::Array(items) => items.iter().flat_map(nested_floats).collect(),
        number => vec![number.as_f64().expect("number") as f32],
    }
}

/// A copy of the release in a fresh folder (for damaging it).
fn copy_release(dir: &Path) -> PathBuf {
    let out = dir.join("uncased_L-2_H-32_A-4");
    std::fs::create_dir_all(&out).unwrap();
    for entry in std::fs::read_dir(release()).unwrap().flatten() {
        std::fs::copy(entry.path(), out.join(entry.file_name())).unwrap();
    }
    out
}

#[test]
fn the_bundle_lists_every_variable_with_its_type_and_shape() {
    let bundle = TensorBundle::open(&release().join("bert_model.ckpt")).unwrap();
    let tensors = bundle.tensors();
    assert_eq!(tensors.len(), 47);
    let kernel = &tensors["bert/encoder/layer_0/intermediate/dense/kernel"];
    assert_eq!(
        (kernel.dtype, kernel.shape.clone()),
        (TfType::F32, vec![32, 37])
    );
    let step = &tensors["global_step"];
    assert_eq!((step.dtype, step.shape.clone()), (TfType::I64, vec![]));
    assert_eq!(bundle.bytes("global_step").unwrap(), 1000i64.to_le_bytes());
    let (shape, values) = bundle.f32("bert/embeddings/word_embeddings").unwrap();
    assert_eq!(shape, [115, 32]);
    assert_eq!(values.len(), 115 * 32);
    let error = bundle.f32("global_step").unwrap_err().to_string();
    assert!(error.contains("`global_step` is int64"), "{error}");
}

/// The converted folder at `out` tokenizes the golden sentences as `BertTokenizerFast` and gives
/// transformers' hidden states, mean pooling and (`pooled`: its key, pooling, pooler) first-token
/// features to 1e-5.
fn check_against_transformers(out: &Path, golden: &serde_json::Value, pooled: (&str, bool)) {
    let folder = ModelFolder::open(out).unwrap();
    let Ok(Preprocessing::Text(text)) = folder.preprocessing() else {
        panic!("a text model")
    };
    let tokenizer = TextTokenizer::from_file(&text.tokenizer, 16, text.vocab_size).unwrap();
    #[allow(deprecated)]
    let device = Device::flex();
    for part in ["single", "pair"] {
        let g = &golden[part];
        let sentences = g["sentences"].as_array().unwrap();
        let tokens = if part == "pair" {
            let pairs: Vec<(&str, &str)> = sentences
                .iter()
                .map(|p| (p[0].as_str().unwrap(), p[1].as_str().unwrap()))
                .collect();
            tokenizer.tokenize_pairs(&pairs).unwrap()
        } else {
            let texts: Vec<&str> = sentences.iter().map(|s| s.as_str().unwrap()).collect();
            tokenizer.tokenize(&texts).unwrap()
        };
        // The ids `BertTokenizerFast` gives, lower-cased, accents stripped, pieces, [UNK].
        let ids = g["input_ids"].as_array().unwrap();
        let masks = g["attention_mask"].as_array().unwrap();
        for ((t, want), mask) in tokens.iter().zip(ids).zip(masks) {
            let n = ints(mask).iter().filter(|&&m| m == 1).count();
            let got: Vec<i64> = t.ids.iter().map(|&i| i as i64).collect();
            assert_eq!(got, ints(want)[..n], "{part}");
        }
        let [rows, seq] = [ids.len(), ids[0].as_array().unwrap().len()];
        let int = |key: &str| {
            let values: Vec<i64> = g[key].as_array().unwrap().iter().flat_map(ints).collect();
            Tensor::<2, Int>::from_data(TensorData::new(values, [rows, seq]), &device)
        };
        let inputs = || Inputs::Text {
            input_ids: int("input_ids"),
            token_type_ids: int("token_type_ids"),
            attention_mask: Some(int("attention_mask")),
        };
        let options = |pooling, use_pooler| PoolingOptions {
            pooling,
            use_pooler,
            normalize: false,
        };
        let flat = |key: &str| -> Vec<f32> { nested_floats(&g[key]) };
        let mean = options(Pooling::Mean, false);
        let backbone = Backbone::load(&folder, mean, false, &device).unwrap();
        let states = backbone.forward_tokens(inputs()).unwrap();
        let states: Vec<f32> = states.into_data().try_into_vec_as().unwrap();
        // Padded positions are compared too: transformers computes them as well.
        let diff = max_abs_diff(&states, &flat("last_hidden_state"));
        assert!(diff <= 1e-5, "{part} hidden states: {diff}");
        let mean: Vec<f32> = backbone
            .forward(inputs())
            .into_data()
            .try_into_vec_as()
            .unwrap();
        let diff = max_abs_diff(&mean, &flat("mean_pooled"));
        assert!(diff <= 1e-5, "{part} mean pooling: {diff}");
        let (key, use_pooler) = pooled;
        let first = Backbone::load(&folder, options(Pooling::Cls, use_pooler), false, &device);
        let first: Vec<f32> = first
            .unwrap()
            .forward(inputs())
            .into_data()
            .try_into_vec_as()
            .unwrap();
        let diff = max_abs_diff(&first, &flat(key));
        assert!(diff <= 1e-5, "{part} {key}: {diff}");
    }
}

#[test]
fn a_google_release_converts_to_what_transformers_computes() {
    let tmp = tempfile::tempdir().unwrap();
    let out = tmp.path().join("converted");
    let converted = google_release::convert(&release(), &out).unwrap();
    assert!(converted.lowercase);
    assert_eq!(converted.skipped, 8, "cls/* (7) and global_step");
    assert_eq!(converted.tensors, 47 - 8);
    assert_eq!(ModelFolder::open(&out).unwrap().architecture.name(), "bert");
    check_against_transformers(
        &out,
        &golden("tf_bert/goldens.json"),
        ("pooler_output", true),
    );
}

/// ELECTRA's release has no config: its sizes come from the tensors (two heads of 64 at a
/// hidden width of 128, the 64-wide embeddings projected up), and its generator, discriminator
/// head and step are left out.
#[test]
fn an_electra_release_converts_to_what_transformers_computes() {
    let tmp = tempfile::tempdir().unwrap();
    let dir = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("tests/golden/tf_electra");
    let golden = golden("tf_electra/goldens.json");
    let out = tmp.path().join("converted");
    let converted = google_release::convert(&dir.join("electra_tiny"), &out).unwrap();
    assert_eq!(
        converted.skipped,
        golden["skipped_variables"].as_array().unwrap().len()
    );
    let config = json(&out.join("config.json"));
    assert_eq!(config["model_type"], "electra");
    for (key, value) in golden["config"].as_object().unwrap() {
        assert_eq!(&config[key], value, "config {key}");
    }
    assert_eq!(
        ModelFolder::open(&out).unwrap().architecture.name(),
        "electra"
    );
    check_against_transformers(&out, &golden, ("first_token", false));
}

#[test]
fn damaged_bundles_are_errors_naming_the_file_and_the_tensor() {
    let tmp = tempfile::tempdir().unwrap();
    let message = |dir: &Path| -> String {
        match TensorBundle::open(&dir.join("bert_model.ckpt"))
            .and_then(|b| b.f32("bert/pooler/dense/kernel").map(|_| ()))
        {
            Err(e) => e.to_string(),
            Ok(()) => panic!("a damaged bundle was read"),
        }
    };
    let data = "bert_model.ckpt.data-00000-of-00001";
    let index = "bert_model.ckpt.index";
    let modify = |name: &str, file: &str, change: &dyn Fn(&mut Vec<u8>)| {
        let dir = copy_release(&tmp.path().join(name));
        let path = dir.join(file);
        let mut bytes = std::fs::read(&path).unwrap();
        change(&mut bytes);
        std::fs::write(&path, bytes).unwrap();
        dir
    };
    // The data shard cut short, one byte flipped, or missing.
    let dir = modify("short", data, &|b| b.truncate(b.len() / 2));
    let error = message(&dir);
    assert!(
        error.contains(data) && error.contains("`bert/pooler/dense/kernel`"),
        "{error}"
    );
    assert!(error.contains("truncated"), "{error}");
    let bundle = TensorBundle::open(&release().join("bert_model.ckpt")).unwrap();
    let _ = bundle;
    let dir = modify("flipped", data, &|b| {
        let n = b.len();
        b[n - 20] ^= 0x40; // inside the last tensors (global_step is the last 8 bytes)
    });
    let flipped_name = "global_step";
    let error = match TensorBundle::open(&dir.join("bert_model.ckpt")) {
        Ok(b) => {
            let bad: Vec<String> = b
                .tensors()
                .keys()
                .filter(|n| b.bytes(n).is_err())
                .cloned()
                .collect();
            assert_eq!(bad.len(), 1, "{bad:?}");
            assert_ne!(bad[0], flipped_name);
            b.bytes(&bad[0]).unwrap_err().to_string()
        }
        Err(e) => panic!("{e}"),
    };
    assert!(
        error.contains("fails its checksum") && error.contains(data),
        "{error}"
    );
    let dir = copy_release(&tmp.path().join("missing"));
    std::fs::remove_file(dir.join(data)).unwrap();
    let error = message(&dir);
    assert!(
        error.contains(data) && error.contains("missing checkpoint data shard"),
        "{error}"
    );
    // The index cut short, or damaged inside its entries.
    let dir = modify("short-index", index, &|b| b.truncate(b.len() - 10));
    let error = message(&dir);
    assert!(
        error.contains(index) && error.contains("table magic"),
        "{error}"
    );
    let dir = modify("bad-index", index, &|b| b[100] ^= 0x01);
    let error = message(&dir);
    assert!(
        error.contains(index) && error.contains("checksum"),
        "{error}"
    );
    // A release without its vocabulary.
    let dir = copy_release(&tmp.path().join("no-vocab"));
    std::fs::remove_file(dir.join("vocab.txt")).unwrap();
    let error = google_release::convert(&dir, &tmp.path().join("out")).unwrap_err();
    assert!(matches!(error, ModelError::MissingFile { .. }), "{error}");
    assert!(error.to_string().contains("vocab.txt"), "{error}");
}

/// Random bytes never panic the reader: every prefix and many corrupted copies of the index.
#[test]
fn the_index_reader_survives_fuzzing() {
    let tmp = tempfile::tempdir().unwrap();
    let original = std::fs::read(release().join("bert_model.ckpt.index")).unwrap();
    let path = tmp.path().join("fuzz.ckpt.index");
    let mut state = 0x2545_f491_4f6c_dd1du64;
    let mut next = || {
        state ^= state << 13;
        state ^= state >> 7;
        state ^= state << 17;
        state
    };
    for round in 0..400 {
        let mut bytes = original.clone();
        if round < 100 {
            bytes.truncate(original.len() * round / 100);
        } else {
            for _ in 0..1 + round % 8 {
                let at = (next() as usize) % bytes.len();
                bytes[at] = next() as u8;
            }
        }
        std::fs::write(&path, &bytes).unwrap();
        let _ = TensorBundle::open(&path).map(|b| {
            for name in b.tensors().keys() {
                let _ = b.bytes(name);
            }
        });
    }
}

#[test]
fn tf2_bundles_name_their_variables_through_the_object_graph() {
    let golden = golden("tf2/goldens.json");
    let root = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("tests/golden/tf2");
    for (part, prefix) in [
        ("checkpoint", "checkpoint/ckpt"),
        ("keras2_checkpoint", "keras2_checkpoint/ckpt"),
        ("saved_model", "saved_model/variables/variables"),
    ] {
        let bundle = TensorBundle::open(&root.join(prefix)).unwrap();
        let g = &golden[part];
        let listed: Vec<&str> = g["tensors"]
            .as_array()
            .unwrap()
            .iter()
            .map(|t| t["key"].as_str().unwrap())
            .collect();
        let keys: Vec<&str> = bundle.tensors().keys().map(String::as_str).collect();
        assert_eq!(keys, listed, "{part}");
        let graph = bundle.strings(OBJECT_GRAPH).unwrap();
        assert_eq!(graph.len(), 1);
        let tracked = tracked_variables(&bundle)
            .unwrap()
            .expect("an object graph");
        for variable in g["model_variables"].as_array().unwrap() {
            let key = variable["checkpoint_key"].as_str().unwrap();
            let found = &tracked[key];
            assert_eq!(
                found.full_name,
                variable["full_name"].as_str().unwrap(),
                "{part}"
            );
            assert!(!found.optimizer, "{part}: {key} is a weight of the model");
            let paths: Vec<&str> = variable["object_paths"]
                .as_array()
                .unwrap()
                .iter()
                .map(|p| p.as_str().unwrap())
                .collect();
            assert!(
                paths.contains(&found.path.as_str()),
                "{part}: {}",
                found.path
            );
            let (shape, values) = bundle.f32(key).unwrap();
            assert_eq!(
                shape,
                ints(&variable["shape"])
                    .iter()
                    .map(|&d| d as usize)
                    .collect::<Vec<_>>()
            );
            assert_eq!(values, floats(&variable["values"]), "{part}: {key}");
        }
        for other in g["other_variables"].as_array().unwrap() {
            let key = other["key"].as_str().unwrap();
            let found = &tracked[key];
            assert_eq!(
                found.full_name,
                other["full_name"].as_str().unwrap(),
                "{part}"
            );
            assert!(found.optimizer, "{part}: {key} is optimizer state");
        }
    }
    // A TF1 checkpoint has no object graph.
    let tf1 = TensorBundle::open(&release().join("bert_model.ckpt")).unwrap();
    assert!(tracked_variables(&tf1).unwrap().is_none());
}

#[test]
fn a_damaged_object_graph_is_an_error_naming_it() {
    let tmp = tempfile::tempdir().unwrap();
    let root = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("tests/golden/tf2/checkpoint");
    for entry in std::fs::read_dir(&root).unwrap().flatten() {
        std::fs::copy(entry.path(), tmp.path().join(entry.file_name())).unwrap();
    }
    // The graph is the last tensor written: flip a byte inside it.
    let data = tmp.path().join("ckpt.data-00000-of-00001");
    let mut bytes = std::fs::read(&data).unwrap();
    let n = bytes.len();
    bytes[n - 100] ^= 0x10;
    std::fs::write(&data, bytes).unwrap();
    let bundle = TensorBundle::open(&tmp.path().join("ckpt")).unwrap();
    let error = tracked_variables(&bundle).unwrap_err().to_string();
    assert!(
        error.contains(OBJECT_GRAPH) && error.contains("checksum") && error.contains("ckpt.data"),
        "{error}"
    );
}

/// A TF Hub BERT encoder SavedModel, written by TensorFlow Model Garden's own TF Hub exporter
/// (`export_tfhub_lib.export_model`, which made TF Hub's `bert_en_uncased_*` models) on random
/// weights (`scripts/golden/make_tf_hub_bert_goldens.py`): the folder converts to transformers'
/// `BertModel` (GELU's tanh approximation, as Model Garden computes it; lower-casing from the
/// SavedModel's `do_lower_case`), whose hidden states and pooler output are TensorFlow's
/// `sequence_output` and `pooled_output` of the same ids to 1e-5.
#[test]
fn a_tf_hub_bert_saved_model_converts_to_what_tensorflow_computes() {
    let root = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("tests/golden/tf_hub_bert");
    let saved_model = root.join("bert_en_uncased_L-2_H-32_A-4");
    let golden = json(&root.join("outputs.json"));
    let tmp = tempfile::tempdir().unwrap();
    let out = tmp.path().join("converted");
    let converted = google_release::convert(&saved_model, &out).unwrap();
    // 39 encoder tensors, as a Google release's BERT has; the `do_lower_case` flag is read.
    assert_eq!(converted.tensors, 39);
    assert!(converted.lowercase);
    let config = json(&out.join("config.json"));
    assert_eq!(config["hidden_act"], "gelu_new");
    assert_eq!(config["num_attention_heads"], 4);
    let folder = ModelFolder::open(&out).unwrap();
    #[allow(deprecated)]
    let device = Device::flex();
    let int = |key: &str| {
        let rows = golden[key].as_array().unwrap();
        let values: Vec<i64> = rows.iter().flat_map(ints).collect();
        Tensor::<2, Int>::from_data(TensorData::new(values, [rows.len(), 8]), &device)
    };
    let inputs = || Inputs::Text {
        input_ids: int("input_word_ids"),
        token_type_ids: int("input_type_ids"),
        attention_mask: Some(int("input_mask")),
    };
    let options = PoolingOptions {
        pooling: Pooling::Cls,
        use_pooler: true,
        normalize: false,
    };
    let backbone = Backbone::load(&folder, options, false, &device).unwrap();
    let states: Vec<f32> = backbone
        .forward_tokens(inputs())
        .unwrap()
        .into_data()
        .try_into_vec_as()
        .unwrap();
    let diff = max_abs_diff(&states, &floats(&golden["sequence_output"]));
    eprintln!("sequence_output: max abs diff {diff:e}");
    assert!(diff <= 1e-5, "sequence_output: {diff}");
    let pooled: Vec<f32> = backbone
        .forward(inputs())
        .into_data()
        .try_into_vec_as()
        .unwrap();
    let diff = max_abs_diff(&pooled, &floats(&golden["pooled_output"]));
    eprintln!("pooled_output: max abs diff {diff:e}");
    assert!(diff <= 1e-5, "pooled_output: {diff}");
    // The SavedModel folder itself is a model folder (converted once into the cache).
    assert_eq!(
        ModelFolder::open(&saved_model).unwrap().architecture.name(),
        "bert"
    );
}
