//! Per-token hidden states against transformers: every text family's
//! `Architecture::forward_tokens` equals `last_hidden_state` at the non-padding positions of a
//! padded batch within 1e-5 on the CPU backends, also when the batch is padded to all 64
//! positions. Mean and first-token pooling of those states over the mask give
//! `forward_features`. The goldens (`tests/golden/tokens/`) are made by
//! `scripts/golden/make_token_goldens.py` from the committed family folders. Vision families
//! have no token states.

mod common;

use burn::tensor::{Device, Tensor};
use common::*;
use graft_data::TokenBatch;
use graft_data::tokenize::Tokens;
use graft_model::{Backbone, Inputs, ModelFolder, Pooling, PoolingOptions};

/// Each golden under `tests/golden/tokens` and the architecture graft detects in its folder.
const FAMILIES: [(&str, &str); 10] = [
    ("bert", "bert"),
    ("roberta", "roberta"),
    ("xlm-roberta", "roberta"),
    ("camembert", "roberta"),
    ("electra", "electra"),
    ("distilbert", "distilbert"),
    ("mpnet", "mpnet"),
    ("modernbert", "modernbert"),
    ("deberta-v3", "deberta-v2"),
    ("deberta-v2", "deberta-v2"),
];
const CPU_TOLERANCE: f32 = 1e-5;
/// Pooling the states by hand (f32 sums) against graft's pooling of the same states.
const POOLING_TOLERANCE: f32 = 1e-6;

fn options(pooling: Pooling) -> PoolingOptions {
    PoolingOptions {
        pooling,
        use_pooler: false,
        normalize: false,
    }
}

fn inputs(batch: &TokenBatch, device: &Device) -> Inputs {
    let (input_ids, token_type_ids, attention_mask) = batch.to_tensors(device);
    Inputs::Text {
        input_ids,
        token_type_ids,
        attention_mask,
    }
}

/// The `[batch, seq, hidden]` token states of a padded batch, row-major, and their dims.
fn token_states(
    backbone: &Backbone,
    batch: &TokenBatch,
    device: &Device,
) -> (Vec<f32>, [usize; 3]) {
    let states = backbone
        .forward_tokens(inputs(batch, device))
        .expect("a text family has token states");
    let dims = states.dims();
    (states.into_data().try_into_vec_as::<f32>().unwrap(), dims)
}

#[test]
fn token_states_match_transformers_on_cpu_backends() {
    for (family, architecture) in FAMILIES {
        let golden = golden(&format!("tokens/{family}.json"));
        let folder = text_family(golden["folder"].as_str().unwrap());
        assert_eq!(folder.architecture.name(), architecture, "{family}");
        let cases = golden["cases"].as_array().unwrap();
        let tokenizer = family_tokenizer(&folder);
        let texts = golden_texts(&golden);
        let tokens = tokenizer.tokenize(&texts).unwrap();
        for (case, t) in cases.iter().zip(&tokens) {
            let ids: Vec<i64> = t.ids.iter().map(|&i| i as i64).collect();
            assert_eq!(
                ids,
                ints(&case["input_ids"]),
                "{family}: ids of {}",
                case["text"]
            );
        }
        let rows: Vec<&Tokens> = tokens.iter().collect();
        let batch = TokenBatch::pad(&rows);
        assert!(batch.has_padding(), "{family}: the batch must be padded");
        let padded_64 = TokenBatch::pad_to_multiple(&rows, 64, 64);
        for (backend, device) in cpu_devices() {
            let mut worst = 0.0f32;
            let backbone = Backbone::load(&folder, options(Pooling::Mean), false, &device).unwrap();
            for batch in [&batch, &padded_64] {
                let (states, [_, seq, hidden]) = token_states(&backbone, batch, &device);
                assert_eq!(hidden, golden["hidden_size"].as_u64().unwrap() as usize);
                for (i, case) in cases.iter().enumerate() {
                    for (position, want) in case["last_hidden_state"]
                        .as_array()
                        .unwrap()
                        .iter()
                        .enumerate()
                    {
                        let start = (i * seq + position) * hidden;
                        let diff = max_abs_diff(&states[start..start + hidden], &floats(want));
                        worst = worst.max(diff);
                        assert!(
                            diff <= CPU_TOLERANCE,
                            "{family} {backend} (seq {seq}): text {i} token {position}: max abs \
                             diff {diff}"
                        );
                    }
                }
            }
            eprintln!("{family} {backend}: worst max abs diff {worst:e}");
        }
    }
}

/// `forward_features` is the token states pooled over the mask: their masked mean (by hand) and
/// their first row.
#[test]
fn pooled_token_states_are_the_features() {
    #[allow(deprecated)]
    let device = Device::flex();
    for (family, _) in FAMILIES {
        let golden = golden(&format!("tokens/{family}.json"));
        let folder = text_family(golden["folder"].as_str().unwrap());
        let tokens = family_tokenizer(&folder)
            .tokenize(&golden_texts(&golden))
            .unwrap();
        let batch = TokenBatch::pad(&tokens.iter().collect::<Vec<_>>());
        for pooling in [Pooling::Mean, Pooling::Cls] {
            let backbone = Backbone::load(&folder, options(pooling), false, &device).unwrap();
            let (states, [rows, seq, hidden]) = token_states(&backbone, &batch, &device);
            let (features, width) = features(&backbone, &batch, &device);
            assert_eq!(width, hidden, "{family}: token and feature widths");
            for row in 0..rows {
                let kept: Vec<usize> = (0..seq)
                    .filter(|&p| batch.attention_mask[row * seq + p] == 1)
                    .collect();
                let state = |p: usize| &states[(row * seq + p) * hidden..][..hidden];
                let want: Vec<f32> = match pooling {
                    Pooling::Mean => (0..hidden)
                        .map(|d| kept.iter().map(|&p| state(p)[d]).sum::<f32>() / kept.len() as f32)
                        .collect(),
                    _ => state(0).to_vec(),
                };
                let got = &features[row * width..(row + 1) * width];
                let diff = max_abs_diff(got, &want);
                assert!(
                    diff <= POOLING_TOLERANCE,
                    "{family} {pooling}: row {row}: max abs diff {diff}"
                );
            }
        }
    }
}

/// Vision families have no token states.
#[test]
fn vision_families_have_no_token_states() {
    let dir = std::path::PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("tests/golden/vit/deit");
    let folder = ModelFolder::open(&dir).unwrap();
    #[allow(deprecated)]
    let device = Device::flex();
    let backbone = Backbone::load(&folder, PoolingOptions::default(), false, &device).unwrap();
    let images = Tensor::<4>::zeros([1, 3, 8, 8], &device);
    assert!(backbone.forward_tokens(Inputs::Image(images)).is_none());
}
