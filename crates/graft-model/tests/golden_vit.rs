//! Vision transformers against transformers and timm (`tests/golden/vit/`, made by
//! `scripts/golden/make_vit_goldens.py`): ViT, DeiT, DINOv2 and DINOv2 with registers from
//! transformers folders, and timm's ViT (token and average pooling), distilled DeiT and DINOv2 with
//! registers from timm folders, on random weights. The features the classifier reads and the
//! checkpoint's logits must match to 1e-5 on the CPU backends and 1e-3 on wgpu, at the trained
//! size and, where the golden has one, at another size (position embeddings resampled as the
//! folder's library resamples them).

mod common;

use std::path::PathBuf;

use burn::tensor::{Device, Tensor, TensorData};
use common::{cpu_devices, floats, max_abs_diff, wgpu_device};
use graft_model::{Backbone, Inputs, ModelFolder, PoolingOptions};

const FOLDERS: [(&str, &str); 8] = [
    ("vit", "vit (2 blocks, 32 wide, patch 8)"),
    ("deit", "deit (1 blocks, 32 wide, patch 8)"),
    ("dinov2", "dinov2 (2 blocks, 32 wide, patch 4)"),
    ("dinov2-reg", "dinov2 (1 blocks, 32 wide, patch 4)"),
    ("timm-vit", "vit (2 blocks, 32 wide, patch 8)"),
    ("timm-vit-avg", "vit (1 blocks, 32 wide, patch 8)"),
    ("timm-deit", "deit (1 blocks, 32 wide, patch 8)"),
    ("timm-dinov2-reg", "dinov2 (1 blocks, 32 wide, patch 4)"),
];

fn dir() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("tests/golden/vit")
}

/// The script's deterministic batch of two images at `side`.
fn pixels(side: usize, device: &Device) -> Tensor<4> {
    let n = 2 * 3 * side * side;
    let values: Vec<f32> = (0..n)
        .map(|i| ((0.37 * i as f64).sin() * 1.5) as f32)
        .collect();
    Tensor::from_data(TensorData::new(values, [2, 3, side, side]), device)
}

/// The worst difference of features and logits over every golden case on `device`.
fn worst_diff(name: &str, described: &str, device: &Device) -> f32 {
    let golden = common::golden(&format!("vit/{name}.json"));
    let folder = ModelFolder::open(&dir().join(name)).unwrap();
    assert_eq!(folder.architecture.name(), "vit");
    let backbone = Backbone::load(&folder, PoolingOptions::default(), true, device).unwrap();
    assert_eq!(backbone.architecture().describe(), described);
    let mut worst = 0.0f32;
    for case in golden["cases"].as_array().unwrap() {
        let side = case["side"].as_u64().unwrap() as usize;
        let features = backbone.forward(Inputs::Image(pixels(side, device)));
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
fn vision_transformers_match_transformers_and_timm_on_cpu_backends() {
    for (name, described) in FOLDERS {
        for (backend, device) in cpu_devices() {
            let worst = worst_diff(name, described, &device);
            eprintln!("{name} {backend}: worst max abs diff {worst:e}");
            assert!(worst <= 1e-5, "{name} {backend}: max abs diff {worst}");
        }
    }
}

#[test]
fn vision_transformers_match_on_wgpu() {
    let Some(device) = wgpu_device() else { return };
    let worst = worst_diff("dinov2", FOLDERS[2].1, &device);
    eprintln!("dinov2 wgpu: worst max abs diff {worst:e}");
    assert!(worst <= 1e-3, "dinov2 wgpu: max abs diff {worst}");
}
