//! Vision backbones against PyTorch (`tests/golden/vision/`, made by `scripts/golden/vision.py`):
//! the legacy-format EfficientNet-Lite0 checkpoint converted without executing pickled code
//! (strided views included), Lite0's ImageNet logits on two photos, and torchvision's ResNet
//! layout and numerics on deterministic synthetic weights.

use std::collections::HashMap;
use std::path::{Path, PathBuf};

use burn::tensor::{Device, Tensor, TensorData};
use graft_data::image::{ImageTransform, load_rgb};
use graft_model::backbone::Network;
use graft_model::{Backbone, Inputs, ModelFolder, PoolingOptions, Preprocessing};
use graft_model::{WeightsIndex, pth};
use serde_json::Value;

fn repo() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../..")
}

fn golden_dir() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("tests/golden/vision")
}

fn golden(name: &str) -> Value {
    serde_json::from_str(&std::fs::read_to_string(golden_dir().join(name)).unwrap()).unwrap()
}

fn lite0_pth() -> PathBuf {
    repo().join("models/efficientnet-lite0/efficientnet-lite0-57934424.pth")
}

/// The Lite0 model folder: the fetched config and the converted checkpoint, in a temp folder.
fn lite0_folder() -> tempfile::TempDir {
    let dir = tempfile::tempdir().unwrap();
    let pth = lite0_pth();
    assert!(pth.is_file(), "run scripts/fetch-models.sh");
    pth::convert(&pth, &dir.path().join("model.safetensors"), None).unwrap();
    std::fs::copy(
        repo().join("models/efficientnet-lite0/config.json"),
        dir.path().join("config.json"),
    )
    .unwrap();
    dir
}

fn floats(v: &Value) -> Vec<f64> {
    match v {
        Value::Array(items) => items.iter().flat_map(floats).collect(),
        Value::Number(n) => vec![n.as_f64().unwrap()],
        other => panic!("not numeric: {other}"),
    }
}

#[test]
fn legacy_pth_converts_with_strided_views_gathered() {
    let dir = tempfile::tempdir().unwrap();
    let out = dir.path().join("lite0.safetensors");
    let converted = pth::convert(&lite0_pth(), &out, None).unwrap();
    let facts = golden("effnet_lite0_pth.json");
    assert_eq!(
        converted.tensors,
        facts["num_entries"].as_u64().unwrap() as usize
    );
    let bytes = std::fs::read(&out).unwrap();
    let file = safetensors::SafeTensors::deserialize(&bytes).unwrap();
    let mut checked = 0;
    for entry in facts["entries"].as_array().unwrap() {
        let name = entry["name"].as_str().unwrap();
        let tensor = file.tensor(name).unwrap();
        let shape: Vec<usize> = entry["shape"]
            .as_array()
            .unwrap()
            .iter()
            .map(|d| d.as_u64().unwrap() as usize)
            .collect();
        assert_eq!(tensor.shape(), shape.as_slice(), "{name}");
        if entry.get("first6").is_none() {
            continue; // num_batches_tracked
        }
        let values: Vec<f32> = tensor
            .data()
            .chunks_exact(4)
            .map(|b| f32::from_le_bytes([b[0], b[1], b[2], b[3]]))
            .collect();
        // The reference values are float32; compared as float32, they must be equal bit for bit.
        let want6: Vec<f32> = floats(&entry["first6"]).iter().map(|&v| v as f32).collect();
        assert_eq!(&values[..6], want6.as_slice(), "{name}: first values");
        let sum: f64 = values.iter().map(|&v| v as f64).sum();
        let want = entry["sum"].as_f64().unwrap();
        assert!(
            (sum - want).abs() <= 1e-9 * want.abs().max(1.0),
            "{name}: sum {sum} != {want}"
        );
        checked += 1;
    }
    assert_eq!(checked, 247, "every float tensor compared");
    let index = WeightsIndex::read(&out).unwrap();
    assert_eq!(index.tensors["_conv_stem.weight"].shape, [32, 3, 3, 3]);
}

#[test]
fn unexpected_pth_structure_is_a_clear_error() {
    let dir = tempfile::tempdir().unwrap();
    let bogus = dir.path().join("bogus.pth");
    std::fs::write(&bogus, b"this is not a checkpoint").unwrap();
    let error = pth::convert(&bogus, &dir.path().join("x.safetensors"), None)
        .unwrap_err()
        .to_string();
    assert!(error.contains("bogus.pth"), "{error}");
    let error = pth::convert(
        &lite0_pth(),
        &dir.path().join("x.safetensors"),
        Some("encoder"),
    )
    .unwrap_err()
    .to_string();
    assert!(
        error.contains("no tensor name starts with `encoder.`"),
        "{error}"
    );
}

fn lite0_preprocess() -> ImageTransform {
    ImageTransform {
        image_size: 224,
        resize_shorter: None,
        squash_before_crop: false,
        mean: [127.0 / 255.0; 3],
        std: [128.0 / 255.0; 3],
        interpolation: graft_data::image::Interpolation::Bicubic,
        crop_pct: None,
        crop_offset: graft_data::image::CropOffset::RoundHalfEven,
        crops_below: None,
    }
}

fn image_tensor(path: &Path, preprocess: &ImageTransform, device: &Device) -> Tensor<4> {
    let values = preprocess.apply(&load_rgb(path).unwrap());
    let size = preprocess.image_size;
    Tensor::from_data(TensorData::new(values, [1, 3, size, size]), device)
}

/// A vision model folder's backbone with its own classifier.
fn load(dir: &Path, device: &Device) -> Backbone {
    let folder = ModelFolder::open(dir).unwrap();
    Backbone::load(&folder, PoolingOptions::default(), true, device).unwrap()
}

fn logits(model: &Backbone, image: Tensor<4>) -> Vec<f32> {
    let classifier = model.architecture().classifier().expect("a classifier");
    classifier
        .forward(model.forward(Inputs::Image(image)))
        .into_data()
        .try_into_vec_as::<f32>()
        .unwrap()
}

fn argmax(values: &[f32]) -> usize {
    (0..values.len())
        .max_by(|&a, &b| values[a].total_cmp(&values[b]))
        .unwrap()
}

fn check_lite0_logits(device: &Device, tolerance: f64) {
    let folder = lite0_folder();
    let model = load(folder.path(), device);
    let reference = golden("effnet_lite0.json");
    for photo in ["chelsea", "coffee"] {
        // The very pixels PyTorch saw (its bicubic 224x224 resize).
        let input = image_tensor(
            &golden_dir().join(format!("{photo}_224.png")),
            &lite0_preprocess(),
            device,
        );
        let got = logits(&model, input);
        let want = floats(&reference["images"][photo]["logits_f32"]);
        let worst = got
            .iter()
            .zip(&want)
            .map(|(a, b)| (*a as f64 - b).abs())
            .fold(0.0, f64::max);
        eprintln!("{photo}: max abs diff {worst:e} on {device:?}");
        assert!(worst <= tolerance, "{photo}: max abs diff {worst:e}");
    }
}

#[test]
fn efficientnet_lite0_matches_pytorch_on_cpu() {
    #[allow(deprecated)]
    check_lite0_logits(&Device::flex(), 1e-4);
    #[allow(deprecated)]
    check_lite0_logits(&Device::ndarray(), 1e-4);
}

#[test]
fn efficientnet_lite0_matches_pytorch_on_wgpu() {
    let Ok(device) = Device::wgpu_options().init() else {
        eprintln!("no wgpu adapter; skipped");
        return;
    };
    check_lite0_logits(&device, 1e-3);
}

#[test]
fn efficientnet_lite0_names_the_photos() {
    #[allow(deprecated)]
    let device = Device::flex();
    let folder = lite0_folder();
    let model = load(folder.path(), &device);
    let Preprocessing::Image(transform) = ModelFolder::open(folder.path())
        .unwrap()
        .preprocessing()
        .unwrap()
    else {
        panic!("an image model")
    };
    assert_eq!(transform.image_size, 224);
    // graft's own decoding and resize of the original photos.
    for (photo, class) in [("chelsea", 285), ("coffee", 967)] {
        let input = image_tensor(
            &golden_dir().join(format!("{photo}.png")),
            &lite0_preprocess(),
            &device,
        );
        assert_eq!(argmax(&logits(&model, input)), class, "{photo}");
    }
}

/// The synthetic weights of `resnet.json`'s formula, by tensor kind.
fn synthetic(kind: &str, t: usize, shape: &[usize]) -> Vec<f32> {
    let n: usize = shape.iter().product();
    let t = t as f64;
    let fan_in = n as f64 / shape[0] as f64;
    (0..n)
        .map(|i| {
            let i = i as f64;
            let v = match kind {
                "weight" => (0.5 * (0.37 * i + 1.3 * t).sin()) / fan_in.sqrt(),
                "linear_bias" => 0.01 * (i + t).sin(),
                "bn_weight" => 1.0 + 0.1 * (0.37 * i + 1.3 * t).sin(),
                "bn_bias" => 0.1 * (0.37 * i + 1.3 * t).cos(),
                "bn_running_mean" => 0.05 * (0.11 * i + t).sin(),
                "bn_running_var" => 1.0 + 0.2 * (1.0 + (0.23 * i + t).sin()),
                other => panic!("unknown kind {other}"),
            };
            v as f32
        })
        .collect()
}

#[test]
fn resnet_layouts_and_numerics_match_torchvision() {
    #[allow(deprecated)]
    let device = Device::flex();
    let reference = golden("resnet.json");
    let input: Vec<f32> = (0..2 * 3 * 64 * 64)
        .map(|i| (0.05 * i as f64).sin() as f32)
        .collect();
    for (name, depth) in [("resnet18", 18), ("resnet34", 34), ("resnet50", 50)] {
        let entry = &reference["models"][name];
        // Write the torchvision state dict (names, shapes, values) as a model folder.
        let dir = tempfile::tempdir().unwrap();
        let mut data: Vec<(String, Vec<usize>, Vec<u8>)> = Vec::new();
        for tensor in entry["tensors"].as_array().unwrap() {
            let shape: Vec<usize> = tensor["shape"]
                .as_array()
                .unwrap()
                .iter()
                .map(|d| d.as_u64().unwrap() as usize)
                .collect();
            let values = synthetic(
                tensor["kind"].as_str().unwrap(),
                tensor["t"].as_u64().unwrap() as usize,
                &shape,
            );
            let bytes = values.iter().flat_map(|v| v.to_le_bytes()).collect();
            data.push((tensor["name"].as_str().unwrap().to_string(), shape, bytes));
        }
        let views: HashMap<String, safetensors::tensor::TensorView> = data
            .iter()
            .map(|(n, s, b)| {
                let view =
                    safetensors::tensor::TensorView::new(safetensors::Dtype::F32, s.clone(), b)
                        .unwrap();
                (n.clone(), view)
            })
            .collect();
        std::fs::write(
            dir.path().join("model.safetensors"),
            safetensors::serialize(views, None).unwrap(),
        )
        .unwrap();
        std::fs::write(
            dir.path().join("config.json"),
            format!(
                r#"{{"architecture": "resnet", "depth": {depth}, "num_classes": 10,
                    "image_size": 64, "mean": [0.485, 0.456, 0.406], "std": [0.229, 0.224, 0.225]}}"#
            ),
        )
        .unwrap();
        let model = load(dir.path(), &device);
        let x = Tensor::<4>::from_data(TensorData::new(input.clone(), [2, 3, 64, 64]), &device);
        // Each stage's output: the early ones depend strongly on the input, so a mirrored kernel
        // or a wrong padding shows here.
        let Network::ResNet(resnet) = &model.network else {
            panic!("a ResNet config gave another model")
        };
        let stages = resnet.stages(x.clone());
        for (stage, output) in ["stem", "layer1", "layer2", "layer3", "layer4"]
            .iter()
            .zip(stages)
        {
            let want = &entry["activations"][stage];
            let values = output.into_data().try_into_vec_as::<f32>().unwrap();
            let sum: f64 = values.iter().map(|&v| v as f64).sum();
            let want_sum = want["sum"].as_f64().unwrap();
            assert!(
                (sum - want_sum).abs() <= 1e-5 * want_sum.abs(),
                "{name} {stage}: sum {sum} != {want_sum}"
            );
            for (a, b) in values.iter().zip(floats(&want["first8"])) {
                assert!((*a as f64 - b).abs() <= 1e-5, "{name} {stage}: {a} != {b}");
            }
        }
        let got = logits(&model, x);
        let want = floats(&entry["logits_f32"]);
        let worst = got
            .iter()
            .zip(&want)
            .map(|(a, b)| (*a as f64 - b).abs())
            .fold(0.0, f64::max);
        // The synthetic logits vary little with the input (see the golden README), so the
        // tolerance is near float32 noise.
        eprintln!("{name}: logits max abs diff {worst:e}");
        assert!(worst <= 2e-6, "{name}: max abs diff {worst:e}");
    }
}

/// graft's preprocessing against transformers' image processors (`golden/vision/processors.json`,
/// `scripts/golden/make_processor_goldens.py`): the processor's config read as a folder's
/// `preprocessor_config.json`, then the bundled photo resized, cropped and normalized. With an
/// identity resize the tensors are equal (up to the JSON's 7 decimals); after real resizes they
/// differ by the resampling filters (the `image` crate's against PIL's and torchvision's), by the
/// amounts this test prints and bounds.
#[test]
fn preprocessing_follows_transformers_image_processors() {
    let golden = golden("processors.json");
    for case in golden["cases"].as_array().unwrap() {
        let name = case["name"].as_str().unwrap();
        let dir = tempfile::tempdir().unwrap();
        std::fs::write(
            dir.path().join("preprocessor_config.json"),
            case["config"].to_string(),
        )
        .unwrap();
        let t = graft_model::vision::processor_transform(dir.path(), 224).unwrap();
        assert_eq!(t.image_size, 32, "{name}");
        let preprocess = t;
        let image = load_rgb(&golden_dir().join(case["image"].as_str().unwrap())).unwrap();
        let ours = preprocess.apply(&image);
        let theirs = floats(&case["pixel_values"]);
        let diffs: Vec<f64> = ours
            .iter()
            .zip(&theirs)
            .map(|(a, b)| (*a as f64 - b).abs())
            .collect();
        let max = diffs.iter().copied().fold(0.0, f64::max);
        let mean = diffs.iter().sum::<f64>() / diffs.len() as f64;
        eprintln!("{name}: max abs diff {max:.2e}, mean {mean:.2e} (normalized units)");
        let bound = if name == "identity" { 1e-6 } else { 0.05 };
        assert!(max <= bound, "{name}: max abs diff {max}");
        if name != "identity" {
            assert!(mean <= 0.005, "{name}: mean abs diff {mean}");
        }
    }
}
