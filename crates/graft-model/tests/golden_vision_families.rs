//! Vision transformers, ConvNeXt, MobileNetV3 and EfficientNet against transformers, timm and
//! torchvision, on
//! random weights: `tests/golden/vit/` (`scripts/golden/make_vit_goldens.py`: ViT, DeiT, DINOv2,
//! DINOv2 with registers and CLIP's image tower, alone and in a whole CLIP folder, from
//! transformers folders; timm's ViT with token and average pooling, distilled DeiT and DINOv2 with
//! registers from timm folders), `tests/golden/convnext/` (`scripts/golden/make_convnext_goldens.py`:
//! transformers' ConvNeXt, timm's convnext_atto with its 1x1-convolution MLP and convnext_tiny's
//! layout) and `tests/golden/mobilenet_v3/` (`scripts/golden/make_mobilenetv3_goldens.py`: timm's
//! small and its TensorFlow port tf_mobilenetv3_small_100, torchvision's large, float16 weights) and `tests/golden/efficientnet/`
//! (`scripts/golden/make_efficientnet_goldens.py`: timm's efficientnet_b1 and tf_efficientnet_b0
//! and torchvision's efficientnet_b2 at their real depths, narrowed, float16 weights). The features the classifier reads, CLIP's
//! projected embedding and the checkpoint's logits must match to 1e-5 on the CPU backends and 1e-3
//! on wgpu, at the trained size and at another size (vision transformers: position embeddings
//! resampled as the folder's library resamples them). The same families on configs off their
//! defaults (`tests/golden/vision_variants/`) match or are refused, never silently wrong.

mod common;

use std::path::PathBuf;

use burn::tensor::{Device, FloatDType, Tensor, TensorData};
use common::{cpu_devices, floats, max_abs_diff, wgpu_device};
use graft_model::{Backbone, Inputs, ModelFolder, PoolingOptions, cast_floats};

/// Golden group, folder, and how graft describes the model.
const FOLDERS: [(&str, &str, &str); 19] = [
    ("vit", "vit", "vit (2 blocks, 32 wide, patch 8)"),
    ("vit", "deit", "deit (1 blocks, 32 wide, patch 8)"),
    ("vit", "dinov2", "dinov2 (2 blocks, 32 wide, patch 4)"),
    ("vit", "dinov2-reg", "dinov2 (1 blocks, 32 wide, patch 4)"),
    ("vit", "timm-vit", "vit (2 blocks, 32 wide, patch 8)"),
    ("vit", "timm-vit-avg", "vit (1 blocks, 32 wide, patch 8)"),
    ("vit", "timm-deit", "deit (1 blocks, 32 wide, patch 8)"),
    (
        "vit",
        "timm-dinov2-reg",
        "dinov2 (1 blocks, 32 wide, patch 4)",
    ),
    ("vit", "clip", "clip (2 blocks, 32 wide, patch 8)"),
    ("vit", "clip-full", "clip (2 blocks, 32 wide, patch 8)"),
    (
        "convnext",
        "convnext",
        "convnext (dims [8, 16, 24, 32], depths [1, 1, 2, 1])",
    ),
    (
        "convnext",
        "timm-convnext",
        "convnext (dims [8, 16, 24, 32], depths [1, 1, 2, 1])",
    ),
    (
        "convnext",
        "timm-convnext-t",
        "convnext (dims [8, 16, 24, 32], depths [1, 1, 1, 1])",
    ),
    (
        "mobilenet_v3",
        "timm-small",
        "mobilenet_v3 (small, 11 blocks)",
    ),
    (
        "mobilenet_v3",
        "tv-large",
        "mobilenet_v3 (large, 15 blocks)",
    ),
    ("efficientnet", "timm-b1", "efficientnet (b1, 23 blocks)"),
    ("efficientnet", "timm-tf-b0", "efficientnet (b0, 16 blocks)"),
    ("efficientnet", "tv-b2", "efficientnet (b2, 23 blocks)"),
    (
        "mobilenet_v3",
        "timm-tf-small",
        "mobilenet_v3 (small, 11 blocks)",
    ),
];

/// How far the backbones cast to f16 and bf16 may land from the f32 goldens (measured worst:
/// text f16 1.9e-3, bf16 1.6e-2; vision f16 2.8e-3, bf16 1.5e-2; RoBERTa f16 on wgpu 6.5e-4).
const HALF_TOLERANCE: f32 = 5e-3;
const BF16_TOLERANCE: f32 = 3e-2;
/// The tolerances of the goldens whose outputs follow their input through every block (weights
/// scaled so the signal neither dies out nor explodes: EfficientNet's and MobileNetV3's) are
/// this many times the others' (measured worst: f16 8.3e-3, bf16 1.3e-1 on timm-tf-small's
/// features of up to 2.3; EfficientNet's bf16 7.7e-2 on features up to 0.58; tv-large's f16
/// 6.1e-3 over 15 blocks).
const LIVE_HALF_FACTOR: f32 = 6.0;

fn dir(group: &str) -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR"))
        .join("tests/golden")
        .join(group)
}

/// The script's deterministic batch of two images at `side`.
fn pixels(side: usize, device: &Device) -> Tensor<4> {
    let n = 2 * 3 * side * side;
    let values: Vec<f32> = (0..n)
        .map(|i| ((0.37 * i as f64).sin() * 1.5) as f32)
        .collect();
    Tensor::from_data(TensorData::new(values, [2, 3, side, side]), device)
}

/// A golden folder's backbone, or why graft refuses it.
fn load(group: &str, name: &str, device: &Device) -> Result<Backbone, String> {
    let golden = common::golden(&format!("{group}/{name}.json"));
    let folder = ModelFolder::open(&dir(group).join(name)).map_err(|e| e.to_string())?;
    // The variants say which family they are; the other groups are named after theirs.
    let family = golden["architecture"].as_str().unwrap_or(group);
    assert_eq!(folder.architecture.name(), family);
    Backbone::load(&folder, PoolingOptions::default(), true, device).map_err(|e| e.to_string())
}

/// The worst difference of features and logits over every golden case on `device`.
fn worst_diff(group: &str, name: &str, described: &str, device: &Device) -> f32 {
    worst_diff_in(group, name, described, device, FloatDType::F32)
}

/// [`worst_diff`] with the backbone cast to `dtype` (the outputs read back as f32).
fn worst_diff_in(
    group: &str,
    name: &str,
    described: &str,
    device: &Device,
    dtype: FloatDType,
) -> f32 {
    let golden = common::golden(&format!("{group}/{name}.json"));
    let backbone = cast_floats(&load(group, name, device).unwrap(), dtype);
    assert_eq!(backbone.architecture().describe(), described);
    let mut worst = 0.0f32;
    for case in golden["cases"].as_array().unwrap() {
        let side = case["side"].as_u64().unwrap() as usize;
        let features = backbone.forward(Inputs::Image(pixels(side, device)));
        if !case["embedding"].is_null() {
            // What `embed` writes (CLIP: the projected image embedding).
            let mut embedder = backbone.clone();
            embedder.embedding = true;
            let got = embedder.forward(Inputs::Image(pixels(side, device)));
            assert_eq!(got.dims()[1], embedder.feature_size());
            let got = got.into_data().try_into_vec_as::<f32>().unwrap();
            let want: Vec<f32> = case["embedding"]
                .as_array()
                .unwrap()
                .iter()
                .flat_map(floats)
                .collect();
            worst = worst.max(max_abs_diff(&got, &want));
        }
        let want: Vec<f32> = case["features"]
            .as_array()
            .unwrap()
            .iter()
            .flat_map(floats)
            .collect();
        let got = features
            .clone()
            .into_data()
            .try_into_vec_as::<f32>()
            .unwrap();
        worst = worst.max(max_abs_diff(&got, &want));
        match (
            backbone.architecture().classifier(),
            case["logits"].is_null(),
        ) {
            (Some(classifier), false) => {
                let logits = classifier.forward(features);
                let got = logits.into_data().try_into_vec_as::<f32>().unwrap();
                let want: Vec<f32> = case["logits"]
                    .as_array()
                    .unwrap()
                    .iter()
                    .flat_map(floats)
                    .collect();
                worst = worst.max(max_abs_diff(&got, &want));
            }
            (None, true) => {}
            (classifier, _) => panic!(
                "{name}: classifier {} but golden logits {}",
                classifier.is_some(),
                !case["logits"].is_null()
            ),
        }
    }
    worst
}

#[test]
fn vision_transformers_and_convnext_match_transformers_and_timm_on_cpu_backends() {
    for (group, name, described) in FOLDERS {
        for (backend, device) in cpu_devices() {
            let worst = worst_diff(group, name, described, &device);
            eprintln!("{name} {backend}: worst max abs diff {worst:e}");
            assert!(worst <= 1e-5, "{name} {backend}: max abs diff {worst}");
        }
    }
}

/// `tests/golden/vision_variants/` (`scripts/golden/make_vision_variant_goldens.py`): each family
/// on configs that differ from the shipped ones (epsilons, activations, layer scale, biases,
/// pooling, class and register tokens, widths, sizes). graft matches each to 1e-5 or refuses it
/// with an error; it never loads one and computes something else. Those made to match must load.
#[test]
fn configs_off_the_defaults_match_or_are_refused() {
    let group = "vision_variants";
    let mut names: Vec<String> = std::fs::read_dir(dir(group))
        .unwrap()
        .flatten()
        .filter_map(|e| {
            let name = e.file_name().to_string_lossy().to_string();
            name.strip_suffix(".json").map(str::to_string)
        })
        .collect();
    names.sort();
    assert_eq!(names.len(), 18);
    for name in &names {
        let golden = common::golden(&format!("{group}/{name}.json"));
        for (backend, device) in cpu_devices() {
            match load(group, name, &device) {
                Ok(_) => {
                    let described = golden["describe"].as_str().unwrap();
                    let worst = worst_diff(group, name, described, &device);
                    eprintln!("{name} {backend}: worst max abs diff {worst:e}");
                    assert!(worst <= 1e-5, "{name} {backend}: max abs diff {worst}");
                }
                Err(error) => {
                    eprintln!("{name}: refused: {error}");
                    assert_ne!(golden["expect"], "match", "{name}: {error}");
                }
            }
        }
    }
}

#[test]
fn vision_transformers_match_on_wgpu() {
    let Some(device) = wgpu_device() else { return };
    for (group, name, described) in [FOLDERS[2], FOLDERS[8], FOLDERS[11], FOLDERS[16]] {
        let worst = worst_diff(group, name, described, &device);
        eprintln!("{name} wgpu: worst max abs diff {worst:e}");
        assert!(worst <= 1e-3, "{name} wgpu: max abs diff {worst}");
    }
}

/// Every folder with its backbone cast to f16 and bf16 (what `--precision` does) stays within
/// the stated distance of timm's and transformers' f32 outputs on flex.
#[test]
fn half_precision_stays_near_the_f32_goldens() {
    #[allow(deprecated)]
    let device = Device::flex();
    for (dtype, tolerance) in [
        (FloatDType::F16, HALF_TOLERANCE),
        (FloatDType::BF16, BF16_TOLERANCE),
    ] {
        let mut worst = 0.0f32;
        for (group, name, described) in FOLDERS {
            let diff = worst_diff_in(group, name, described, &device, dtype);
            eprintln!("{name} {dtype:?}: max abs diff {diff:e}");
            let tolerance = if group == "efficientnet" || group == "mobilenet_v3" {
                tolerance * LIVE_HALF_FACTOR
            } else {
                tolerance
            };
            assert!(diff <= tolerance, "{name} {dtype:?}: max abs diff {diff}");
            worst = worst.max(diff);
        }
        eprintln!("{dtype:?}: worst max abs diff {worst:e}");
    }
}
