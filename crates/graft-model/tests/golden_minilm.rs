//! all-MiniLM-L6-v2 against PyTorch: token ids must equal the HF tokenizer's, and pooled embeddings
//! must match transformers/sentence-transformers to 1e-5 on the CPU backends and 1e-3 on wgpu.

mod common;

use burn::tensor::{Device, Int, Tensor, TensorData};
use common::*;
use graft_data::{TextTokenizer, TokenBatch};
use graft_model::{Backbone, Inputs, ModelFolder, Pooling, PoolingOptions};

const CPU_TOLERANCE: f32 = 1e-5;
const WGPU_TOLERANCE: f32 = 1e-3;

fn encoder(device: &Device, pooling: Pooling, normalize: bool) -> Backbone {
    let folder = ModelFolder::open(&minilm_dir()).expect("model folder");
    let options = PoolingOptions {
        pooling,
        use_pooler: false,
        normalize,
    };
    Backbone::load(&folder, options, false, device).expect("weights load")
}

fn tokenizer() -> TextTokenizer {
    TextTokenizer::from_file(&minilm_dir().join("tokenizer.json"), 256, 30522).expect("tokenizer")
}

/// One text; `with_mask` passes an all-ones mask (the padded-batch path) instead of none.
fn embed_one(
    encoder: &Backbone,
    ids: &[i64],
    types: &[i64],
    device: &Device,
    with_mask: bool,
) -> Vec<f32> {
    let n = ids.len();
    let tensor =
        |v: &[i64]| Tensor::<2, Int>::from_data(TensorData::new(v.to_vec(), [1, n]), device);
    let out = encoder.forward(Inputs::Text {
        input_ids: tensor(ids),
        token_type_ids: tensor(types),
        attention_mask: with_mask.then(|| tensor(&vec![1; n])),
    });
    out.into_data().try_into_vec_as::<f32>().expect("f32")
}

/// Features of a padded batch, row-major, and their width.
fn embed_batch(encoder: &Backbone, batch: &TokenBatch, device: &Device) -> (Vec<f32>, usize) {
    let (ids, types, mask) = batch.to_tensors(device);
    let out = encoder.forward(Inputs::Text {
        input_ids: ids,
        token_type_ids: types,
        attention_mask: mask,
    });
    let [_, hidden] = out.dims();
    (out.into_data().try_into_vec_as::<f32>().unwrap(), hidden)
}

#[test]
fn token_ids_equal_the_hf_tokenizer() {
    let golden = golden("minilm_embeddings.json");
    let tokenizer = tokenizer();
    let cases = golden["cases"].as_array().unwrap();
    assert!(cases.len() >= 8);
    for case in cases {
        let text = case["text"].as_str().unwrap();
        let tokens = tokenizer.tokenize(&[text]).unwrap().remove(0);
        let ids: Vec<i64> = tokens.ids.iter().map(|&i| i as i64).collect();
        let types: Vec<i64> = tokens.type_ids.iter().map(|&i| i as i64).collect();
        assert_eq!(ids, ints(&case["input_ids"]), "ids of {text:?}");
        assert_eq!(types, ints(&case["token_type_ids"]), "type ids of {text:?}");
    }
}

/// Every pooling on every CPU backend, one text at a time.
#[test]
fn embeddings_match_pytorch_on_cpu_backends() {
    let golden = golden("minilm_embeddings.json");
    let cases = golden["cases"].as_array().unwrap();
    for (backend, device) in cpu_devices() {
        let variants = [
            (Pooling::Mean, false, "mean"),
            (Pooling::Mean, true, "mean_normalized"),
            (Pooling::Cls, false, "cls"),
            (Pooling::Max, false, "max"),
        ];
        for (pooling, normalize, key) in variants {
            let encoder = encoder(&device, pooling, normalize);
            let mut worst = 0.0f32;
            for case in cases {
                let got = embed_one(
                    &encoder,
                    &ints(&case["input_ids"]),
                    &ints(&case["token_type_ids"]),
                    &device,
                    // Both paths: no mask (flex) and an all-ones mask (ndarray).
                    backend == "ndarray",
                );
                let diff = max_abs_diff(&got, &floats(&case[key]));
                assert!(
                    diff <= CPU_TOLERANCE,
                    "{backend} {key}: max abs diff {diff} on {:?}",
                    case["text"].as_str().unwrap()
                );
                worst = worst.max(diff);
            }
            eprintln!("{backend} {key}: worst max abs diff {worst:e}");
        }
    }
}

/// One padded batch: padding must not leak into attention or pooling.
#[test]
fn padded_batch_matches_pytorch_on_cpu_backends() {
    let golden = golden("minilm_batch.json");
    let cases = golden["cases"].as_array().unwrap();
    let tokenizer = tokenizer();
    let texts: Vec<&str> = cases.iter().map(|c| c["text"].as_str().unwrap()).collect();
    let tokens = tokenizer.tokenize(&texts).unwrap();
    let batch = TokenBatch::pad(&tokens.iter().collect::<Vec<_>>());
    for (backend, device) in cpu_devices() {
        let encoder = encoder(&device, Pooling::Mean, true);
        let (out, hidden) = embed_batch(&encoder, &batch, &device);
        for (i, case) in cases.iter().enumerate() {
            let diff = max_abs_diff(
                &out[i * hidden..(i + 1) * hidden],
                &floats(&case["mean_normalized"]),
            );
            assert!(
                diff <= CPU_TOLERANCE,
                "{backend}: text {i}: max abs diff {diff}"
            );
        }
    }
}

/// wgpu (software Vulkan in CI): the short texts, as one padded batch, within 1e-3.
#[test]
fn embeddings_match_pytorch_on_wgpu() {
    let Some(device) = wgpu_device() else { return };
    let golden = golden("minilm_embeddings.json");
    let cases: Vec<&serde_json::Value> = golden["cases"]
        .as_array()
        .unwrap()
        .iter()
        .filter(|c| c["input_ids"].as_array().unwrap().len() <= 40)
        .collect();
    assert!(cases.len() >= 5);
    let tokenizer = tokenizer();
    let texts: Vec<&str> = cases.iter().map(|c| c["text"].as_str().unwrap()).collect();
    let tokens = tokenizer.tokenize(&texts).unwrap();
    let batch = TokenBatch::pad(&tokens.iter().collect::<Vec<_>>());
    for (pooling, normalize, key) in [
        (Pooling::Mean, true, "mean_normalized"),
        (Pooling::Cls, false, "cls"),
    ] {
        let encoder = encoder(&device, pooling, normalize);
        let (out, hidden) = embed_batch(&encoder, &batch, &device);
        let mut worst = 0.0f32;
        for (i, case) in cases.iter().enumerate() {
            let diff = max_abs_diff(&out[i * hidden..(i + 1) * hidden], &floats(&case[key]));
            assert!(
                diff <= WGPU_TOLERANCE,
                "wgpu {key}: text {i}: max abs diff {diff}"
            );
            worst = worst.max(diff);
        }
        eprintln!("wgpu {key}: worst max abs diff {worst:e}");
    }
}
