//! `graft_train::Model` on its own, with no binary: pretrained `...ForSequenceClassification`
//! folders of every text family predict transformers' logits (the native-head goldens), a
//! sentence-transformers folder embeds as sentence-transformers does (all-MiniLM-L6-v2's goldens),
//! and evaluation scores in-memory examples and names a bad one's origin and line.

use std::path::{Path, PathBuf};

use burn::tensor::Device;
use graft_data::TextExample;
use graft_train::{EmbedOptions, Model, Silent};
use serde_json::Value;

fn golden_dir() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../graft-model/tests/golden")
}

fn read_json(path: &Path) -> Value {
    serde_json::from_str(&std::fs::read_to_string(path).unwrap()).unwrap()
}

fn flex() -> Device {
    graft_train::select_device(graft_train::Backend::Flex)
        .unwrap()
        .device
}

fn floats(value: &Value) -> Vec<f32> {
    value
        .as_array()
        .unwrap()
        .iter()
        .map(|v| v.as_f64().unwrap() as f32)
        .collect()
}

fn max_diff(a: &[f32], b: &[f32]) -> f32 {
    assert_eq!(a.len(), b.len());
    a.iter()
        .zip(b)
        .map(|(x, y)| (x - y).abs())
        .fold(0.0, f32::max)
}

const FAMILIES: &[&str] = &[
    "bert",
    "camembert",
    "deberta-v2",
    "deberta-v3",
    "distilbert",
    "electra",
    "modernbert",
    "mpnet",
    "roberta",
    "xlm-roberta",
];

#[test]
fn pretrained_classifiers_predict_transformers_logits_in_memory() {
    let device = flex();
    for family in FAMILIES {
        let golden = read_json(&golden_dir().join(format!("native_heads/{family}.json")));
        let model = Model::open(&golden_dir().join("native_heads").join(family), &device).unwrap();
        let cases = golden["cases"].as_array().unwrap();
        let examples: Vec<TextExample> = cases
            .iter()
            .map(|c| TextExample::unlabelled(c["text"].as_str().unwrap()))
            .collect();
        // Two batches of different sizes, from the one opened model.
        let (first, second) = examples.split_at(2);
        let mut outputs = model.outputs(first, 2, &Silent).unwrap();
        outputs.extend(model.outputs(second, 3, &Silent).unwrap());
        let mut worst = 0.0f32;
        for (ours, case) in outputs.iter().zip(cases) {
            worst = worst.max(max_diff(ours, &floats(&case["logits"])));
        }
        eprintln!("{family}: logits max abs diff {worst:e}");
        assert!(worst <= 1e-5, "{family}: {worst}");
        // Predictions name transformers' id2label classes.
        let labels = &model.task().unwrap().labels;
        let predictions = model.predict(&examples, 4, &Silent).unwrap();
        assert_eq!(predictions.len(), examples.len());
        for p in &predictions {
            assert!(labels.contains(p.label.as_ref().unwrap()), "{family}");
        }
    }
}

#[test]
fn a_sentence_transformers_folder_embeds_as_sentence_transformers() {
    let folder = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../../models/all-MiniLM-L6-v2");
    let golden = read_json(&golden_dir().join("minilm_embeddings.json"));
    let model = Model::open(&folder, &flex()).unwrap();
    let cases = golden["cases"].as_array().unwrap();
    let examples: Vec<TextExample> = cases
        .iter()
        .map(|c| TextExample::unlabelled(c["text"].as_str().unwrap()))
        .collect();
    let options = EmbedOptions {
        batch_size: 4,
        ..Default::default()
    };
    let embeddings = model.embed(&examples, &options, &Silent).unwrap();
    assert!(embeddings.normalize, "the folder's Normalize module");
    let rows: Vec<&[f32]> = embeddings.values.chunks(embeddings.width).collect();
    let mut worst = 0.0f32;
    for (row, case) in rows.iter().zip(cases) {
        worst = worst.max(max_diff(row, &floats(&case["mean_normalized"])));
    }
    eprintln!("all-MiniLM-L6-v2: embeddings max abs diff {worst:e}");
    assert!(worst <= 1e-5, "{worst}");
}

#[test]
fn evaluation_scores_examples_in_memory_and_names_a_bad_one() {
    let family = "bert";
    let golden = read_json(&golden_dir().join(format!("native_heads/{family}.json")));
    let model = Model::open(&golden_dir().join("native_heads").join(family), &flex()).unwrap();
    let labels = model.task().unwrap().labels.clone();
    // Labelled with the class transformers' logits pick: accuracy 1.
    let examples: Vec<TextExample> = golden["cases"]
        .as_array()
        .unwrap()
        .iter()
        .enumerate()
        .map(|(i, c)| {
            let logits = floats(&c["logits"]);
            let top = (0..logits.len())
                .max_by(|&a, &b| logits[a].total_cmp(&logits[b]))
                .unwrap();
            TextExample {
                label: Some(labels[top].clone()),
                line: i + 2,
                ..TextExample::unlabelled(c["text"].as_str().unwrap())
            }
        })
        .collect();
    let origin = Path::new("reviews held in memory");
    let evaluation = model
        .evaluate(examples.clone(), origin, 4, &Silent)
        .unwrap();
    let report = serde_json::to_value(&evaluation.report).unwrap();
    assert_eq!(report["accuracy"].as_f64(), Some(1.0), "{report}");
    // A label the model does not know is an error naming the origin and the line.
    let mut bad = examples;
    bad[1].label = Some("excellent".into());
    let Err(err) = model.evaluate(bad, origin, 4, &Silent) else {
        panic!("an unknown label was scored");
    };
    let err = err.to_string();
    assert!(
        err.contains("reviews held in memory:3") && err.contains("excellent"),
        "{err}"
    );
}

/// Outputs and embeddings run a window of `WINDOW` examples at a time: across a window's edge
/// the rows stay in input order and equal each example run on its own, and the embeddings file
/// written a window at a time holds what `Embeddings::save` writes.
#[test]
fn windows_keep_order_and_values_across_their_edge() {
    let family = "bert";
    let golden = read_json(&golden_dir().join(format!("native_heads/{family}.json")));
    let model = Model::open(&golden_dir().join("native_heads").join(family), &flex()).unwrap();
    let texts: Vec<String> = golden["cases"]
        .as_array()
        .unwrap()
        .iter()
        .map(|c| c["text"].as_str().unwrap().to_string())
        .collect();
    let n = graft_train::WINDOW + 3;
    let examples: Vec<TextExample> = (0..n)
        .map(|i| TextExample::unlabelled(texts[i % texts.len()].clone()))
        .collect();
    let outputs = model.outputs(&examples, 64, &Silent).unwrap();
    assert_eq!(outputs.len(), n);
    let alone = model.outputs(&examples[..texts.len()], 1, &Silent).unwrap();
    for (i, row) in outputs.iter().enumerate().skip(n - 2 * texts.len()) {
        assert!(max_diff(row, &alone[i % texts.len()]) <= 1e-5, "row {i}");
    }
    let options = EmbedOptions {
        batch_size: 64,
        ..EmbedOptions::default()
    };
    let embeddings = model.embed(&examples, &options, &Silent).unwrap();
    assert_eq!(embeddings.values.len(), n * embeddings.width);
    let dir = tempfile::tempdir().unwrap();
    let (saved, streamed) = (dir.path().join("saved.st"), dir.path().join("streamed.st"));
    embeddings.save(&saved).unwrap();
    let mut file = None;
    model
        .embed_windows(&examples, &options, &Silent, |shape, first, rows| {
            let file = match &mut file {
                Some(file) => file,
                None => file.insert(graft_train::EmbeddingsFile::create(&streamed, shape)?),
            };
            file.write_rows(first, rows)
        })
        .unwrap();
    file.unwrap().finish().unwrap();
    let read = |path: &Path| {
        let bytes = std::fs::read(path).unwrap();
        let (_, metadata) = safetensors::SafeTensors::read_metadata(&bytes).unwrap();
        let tensors = safetensors::SafeTensors::deserialize(&bytes).unwrap();
        let view = tensors.tensor("embeddings").unwrap();
        (
            view.shape().to_vec(),
            view.data().to_vec(),
            metadata.metadata().clone(),
        )
    };
    assert_eq!(read(&streamed), read(&saved));
}
