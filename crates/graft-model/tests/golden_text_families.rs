//! The text families beyond BERT against transformers: small random-weight RoBERTa (byte-level
//! BPE), XLM-RoBERTa (Unigram), ELECTRA (narrow embeddings projected up), DistilBERT (WordPiece)
//! MPNet (relative attention bias), ModernBERT (rotary, GeGLU, local windows) and DeBERTa-v3 and
//! -v2 (disentangled attention, in v3's and v2's settings) folders made by
//! `scripts/golden/make_text_family_goldens.py`, and CamemBERT from its sequence-classifier folder
//! (`scripts/golden/make_native_head_goldens.py`). Token ids must equal the
//! `tokenizers` library's (and transformers' `AutoTokenizer`'s, checked when they were made), and
//! mean, first-token and (where the family has one) pooler features of single texts and of one
//! padded batch must match to 1e-5 on the CPU backends and 1e-3 on wgpu, and so must the short
//! texts padded to all 64 positions. Texts longer than the 64 positions are truncated. The same
//! holds for `tests/golden/text_variants/` (`scripts/golden/make_text_variant_goldens.py`): every
//! family on a config that differs from the shipped ones in each field it reads (pad ids and the
//! positions after them, MPNet with `pad_token_id` 0 and `[UNK]` = 1, bucket counts, activations,
//! epsilons, head sizes, attention layouts).

mod common;

use burn::tensor::{Device, FloatDType, Int, Tensor, TensorData};
use common::*;
use graft_data::TokenBatch;
use graft_data::tokenize::Tokens;
use graft_model::{Backbone, Inputs, ModelFolder, cast_floats};

/// Each family's folder under `tests/golden`, the architecture graft detects, and whether it has
/// a pooler: the families as shipped configs have them, then configs that differ from those in
/// each field the family reads (`text_variants/README.md`).
const FAMILIES: [(&str, &str, bool); 17] = [
    ("text_families/roberta", "roberta", true),
    ("text_families/xlm-roberta", "roberta", true),
    ("text_families/electra", "electra", false),
    ("text_families/distilbert", "distilbert", false),
    ("text_families/mpnet", "mpnet", true),
    ("text_families/modernbert", "modernbert", false),
    ("text_families/deberta-v3", "deberta-v2", false),
    ("text_families/deberta-v2", "deberta-v2", false),
    ("text_variants/mpnet-pad0", "mpnet", true),
    ("text_variants/mpnet-buckets48", "mpnet", true),
    ("text_variants/bert-variant", "bert", true),
    ("text_variants/roberta-variant", "roberta", true),
    ("text_variants/electra-variant", "electra", false),
    ("text_variants/distilbert-variant", "distilbert", false),
    ("text_variants/modernbert-variant", "modernbert", false),
    ("text_variants/deberta-variant", "deberta-v2", false),
    ("text_variants/deberta-p2c", "deberta-v2", false),
];
const CPU_TOLERANCE: f32 = 1e-5;
const WGPU_TOLERANCE: f32 = 1e-3;
/// How far the backbones cast to f16 and bf16 may land from the f32 goldens (measured worst:
/// text f16 1.9e-3, bf16 1.6e-2; vision f16 2.8e-3, bf16 1.5e-2; RoBERTa f16 on wgpu 6.5e-4).
const HALF_TOLERANCE: f32 = 5e-3;
const BF16_TOLERANCE: f32 = 3e-2;

#[test]
fn token_ids_equal_the_tokenizers_library() {
    for (family, architecture, _) in FAMILIES {
        let golden = golden(&format!("{family}.json"));
        let folder = text_family(family);
        assert_eq!(folder.architecture.name(), architecture);
        let tokenizer = family_tokenizer(&folder);
        for case in golden["cases"].as_array().unwrap() {
            let text = case["text"].as_str().unwrap();
            let tokens = tokenizer.tokenize(&[text]).unwrap().remove(0);
            let ids: Vec<i64> = tokens.ids.iter().map(|&i| i as i64).collect();
            assert_eq!(ids, ints(&case["input_ids"]), "{family}: ids of {text:?}");
            let types: Vec<i64> = tokens.type_ids.iter().map(|&i| i as i64).collect();
            assert_eq!(types, ints(&case["token_type_ids"]), "{family}: {text:?}");
        }
    }
}

#[test]
fn features_match_transformers_on_cpu_backends() {
    for (family, _, has_pooler) in FAMILIES {
        let golden = golden(&format!("{family}.json"));
        let cases = golden["cases"].as_array().unwrap();
        let folder = text_family(family);
        let tokenizer = family_tokenizer(&folder);
        let texts: Vec<&str> = cases.iter().map(|c| c["text"].as_str().unwrap()).collect();
        let tokens = tokenizer.tokenize(&texts).unwrap();
        for (backend, device) in cpu_devices() {
            let mut worst = 0.0f32;
            for (key, options) in poolings(has_pooler) {
                let backbone = Backbone::load(&folder, options, false, &device).unwrap();
                // Each text alone, with no mask.
                for (i, (case, t)) in cases.iter().zip(&tokens).enumerate() {
                    let n = t.ids.len();
                    let tensor = |v: Vec<i64>| {
                        Tensor::<2, Int>::from_data(TensorData::new(v, [1, n]), &device)
                    };
                    let out = backbone.forward(Inputs::Text {
                        input_ids: tensor(t.ids.iter().map(|&i| i as i64).collect()),
                        token_type_ids: tensor(t.type_ids.iter().map(|&i| i as i64).collect()),
                        attention_mask: None,
                    });
                    let out = out.into_data().try_into_vec_as::<f32>().unwrap();
                    let diff = max_abs_diff(&out, &floats(&case[key]));
                    worst = worst.max(diff);
                    assert!(
                        diff <= CPU_TOLERANCE,
                        "{family} {backend} {key}: text {i}: max abs diff {diff}"
                    );
                }
                // All of them as one padded batch.
                let batch = TokenBatch::pad(&tokens.iter().collect::<Vec<_>>());
                assert!(batch.has_padding());
                let (out, width) = features(&backbone, &batch, &device);
                for (i, want) in golden["batch"][key].as_array().unwrap().iter().enumerate() {
                    let diff = max_abs_diff(&out[i * width..(i + 1) * width], &floats(want));
                    worst = worst.max(diff);
                    assert!(
                        diff <= CPU_TOLERANCE,
                        "{family} {backend} {key}: batch row {i}: max abs diff {diff}"
                    );
                }
                // The short texts padded to all 64 positions, as graft pads batches to multiples
                // of 32 on wgpu: the padding must not reach their features.
                let short: Vec<usize> = (0..tokens.len())
                    .filter(|&i| tokens[i].ids.len() <= 32)
                    .collect();
                assert!(short.len() > 1, "{family}: too few short texts");
                let rows: Vec<&Tokens> = short.iter().map(|&i| &tokens[i]).collect();
                let batch = TokenBatch::pad_to_multiple(&rows, 64, 64);
                assert_eq!(batch.seq_len, 64);
                let (out, width) = features(&backbone, &batch, &device);
                for (row, &i) in short.iter().enumerate() {
                    let got = &out[row * width..(row + 1) * width];
                    let diff = max_abs_diff(got, &floats(&cases[i][key]));
                    worst = worst.max(diff);
                    assert!(
                        diff <= CPU_TOLERANCE,
                        "{family} {backend} {key}: text {i} padded to 64: max abs diff {diff}"
                    );
                }
            }
            eprintln!("{family} {backend}: worst max abs diff {worst:e}");
        }
    }
}

/// wgpu (software Vulkan in CI): RoBERTa's padded batch and MPNet's with `[UNK]` = 1 inside texts
/// (position ids from the ids, not the mask), every pooling, within 1e-3.
#[test]
fn features_match_transformers_on_wgpu() {
    let Some(device) = wgpu_device() else { return };
    for family in ["text_families/roberta", "text_variants/mpnet-pad0"] {
        let golden = golden(&format!("{family}.json"));
        let folder = text_family(family);
        let tokenizer = family_tokenizer(&folder);
        let texts = golden_texts(&golden);
        let tokens = tokenizer.tokenize(&texts).unwrap();
        let batch = TokenBatch::pad(&tokens.iter().collect::<Vec<_>>());
        for (key, options) in poolings(true) {
            let backbone = Backbone::load(&folder, options, false, &device).unwrap();
            let (out, width) = features(&backbone, &batch, &device);
            let mut worst = 0.0f32;
            for (i, want) in golden["batch"][key].as_array().unwrap().iter().enumerate() {
                let diff = max_abs_diff(&out[i * width..(i + 1) * width], &floats(want));
                assert!(
                    diff <= WGPU_TOLERANCE,
                    "{family} wgpu {key}: row {i}: max abs diff {diff}"
                );
                worst = worst.max(diff);
            }
            eprintln!("{family} wgpu {key}: worst max abs diff {worst:e}");
        }
    }
}

/// ModernBERT's `config.json` as transformers 4 wrote it (`global_attn_every_n_layers`,
/// `global_rope_theta`, `local_rope_theta`) gives the same model as transformers 5's
/// (`layer_types`, `rope_parameters`).
#[test]
fn older_modernbert_config_gives_the_same_features() {
    let golden = golden("text_families/modernbert.json");
    let current = text_family("text_families/modernbert");
    let dir = tempfile::tempdir().unwrap();
    for file in ["model.safetensors", "tokenizer.json"] {
        std::fs::copy(current.dir.join(file), dir.path().join(file)).unwrap();
    }
    let mut config = current.config.clone();
    let object = config.as_object_mut().unwrap();
    object.remove("layer_types");
    object.remove("rope_parameters");
    object.insert("global_attn_every_n_layers".into(), 3.into());
    object.insert("global_rope_theta".into(), 160000.0.into());
    object.insert("local_rope_theta".into(), 10000.0.into());
    std::fs::write(
        dir.path().join("config.json"),
        serde_json::to_string(&config).unwrap(),
    )
    .unwrap();
    let older = ModelFolder::open(dir.path()).unwrap();
    let tokenizer = family_tokenizer(&older);
    let texts = golden_texts(&golden);
    let tokens = tokenizer.tokenize(&texts).unwrap();
    let batch = TokenBatch::pad(&tokens.iter().collect::<Vec<_>>());
    #[allow(deprecated)]
    let device = Device::flex();
    let (_, options) = poolings(false).remove(0);
    let backbone = Backbone::load(&older, options, false, &device).unwrap();
    let (out, width) = features(&backbone, &batch, &device);
    for (i, want) in golden["batch"]["mean"]
        .as_array()
        .unwrap()
        .iter()
        .enumerate()
    {
        let diff = max_abs_diff(&out[i * width..(i + 1) * width], &floats(want));
        assert!(diff <= CPU_TOLERANCE, "row {i}: max abs diff {diff}");
    }
}

/// CamemBERT (`model_type` `camembert`, RoBERTa's network with a SentencePiece vocabulary),
/// from the `CamembertForSequenceClassification` folder of
/// `scripts/golden/make_native_head_goldens.py`: its ids and mean-pooled features.
#[test]
fn camembert_matches_transformers_on_cpu_backends() {
    let dir = std::path::PathBuf::from(env!("CARGO_MANIFEST_DIR"))
        .join("tests/golden/native_heads/camembert");
    let folder = ModelFolder::open(&dir).unwrap();
    assert_eq!(folder.architecture.name(), "roberta");
    let golden = golden("native_heads/camembert.json");
    let cases = golden["cases"].as_array().unwrap();
    let tokenizer = family_tokenizer(&folder);
    for (backend, device) in cpu_devices() {
        let backbone = Backbone::load(&folder, poolings(false)[0].1, false, &device).unwrap();
        assert_eq!(backbone.architecture().describe(), "camembert (1 layers)");
        for case in cases {
            let text = case["text"].as_str().unwrap();
            let tokens = tokenizer.tokenize(&[text]).unwrap();
            let ids: Vec<i64> = tokens[0].ids.iter().map(|&i| i as i64).collect();
            assert_eq!(ids, ints(&case["input_ids"]), "ids of {text:?}");
            let (out, _) = features(&backbone, &TokenBatch::pad(&[&tokens[0]]), &device);
            let diff = max_abs_diff(&out, &floats(&case["mean"]));
            assert!(
                diff <= CPU_TOLERANCE,
                "{backend}: {text:?}: max abs diff {diff}"
            );
        }
    }
}

/// Every family with its backbone cast to f16 and bf16 (what `--precision` does): the padded
/// batch's features, every pooling, stay within the stated distance of transformers' f32 ones on
/// flex.
#[test]
fn half_precision_stays_near_the_f32_goldens() {
    #[allow(deprecated)]
    let device = Device::flex();
    for (dtype, tolerance) in [
        (FloatDType::F16, HALF_TOLERANCE),
        (FloatDType::BF16, BF16_TOLERANCE),
    ] {
        let mut worst = 0.0f32;
        for (family, _, has_pooler) in FAMILIES {
            let golden = golden(&format!("{family}.json"));
            let folder = text_family(family);
            let tokenizer = family_tokenizer(&folder);
            let tokens = tokenizer.tokenize(&golden_texts(&golden)).unwrap();
            let batch = TokenBatch::pad(&tokens.iter().collect::<Vec<_>>());
            for (key, options) in poolings(has_pooler) {
                let backbone = Backbone::load(&folder, options, false, &device).unwrap();
                let backbone = cast_floats(&backbone, dtype);
                let (out, width) = features(&backbone, &batch, &device);
                for (i, want) in golden["batch"][key].as_array().unwrap().iter().enumerate() {
                    let diff = max_abs_diff(&out[i * width..(i + 1) * width], &floats(want));
                    assert!(
                        diff <= tolerance,
                        "{family} {dtype:?} {key}: batch row {i}: max abs diff {diff}"
                    );
                    worst = worst.max(diff);
                }
            }
        }
        eprintln!("{dtype:?}: worst max abs diff {worst:e}");
    }
}

/// f16 on wgpu (software Vulkan in CI): RoBERTa's padded batch, mean pooled, within the f16
/// tolerance of transformers' f32 features.
#[test]
fn half_precision_runs_on_wgpu() {
    let Some(device) = wgpu_device() else { return };
    assert!(
        device.supports_dtype(FloatDType::F16),
        "wgpu's Vulkan adapter should offer f16 arithmetic"
    );
    let family = "text_families/roberta";
    let golden = golden(&format!("{family}.json"));
    let folder = text_family(family);
    let tokens = family_tokenizer(&folder)
        .tokenize(&golden_texts(&golden))
        .unwrap();
    let batch = TokenBatch::pad(&tokens.iter().collect::<Vec<_>>());
    let (key, options) = poolings(false).remove(0);
    let backbone = Backbone::load(&folder, options, false, &device).unwrap();
    let backbone = cast_floats(&backbone, FloatDType::F16);
    let (out, width) = features(&backbone, &batch, &device);
    let mut worst = 0.0f32;
    for (i, want) in golden["batch"][key].as_array().unwrap().iter().enumerate() {
        worst = worst.max(max_abs_diff(
            &out[i * width..(i + 1) * width],
            &floats(want),
        ));
    }
    eprintln!("{family} wgpu F16: max abs diff {worst:e}");
    assert!(worst <= HALF_TOLERANCE, "max abs diff {worst}");
}
