//! Keras weight files, read without TensorFlow: a random-weight ResNet built by Keras' own
//! ResNet v1 code (`keras.src.applications.resnet`, the code of `ResNet50`, with narrow stages so
//! the files stay small), saved by Keras 3.15 as `.keras` and `.weights.h5` and by tf-keras 2.21
//! as a Keras 2 `.h5` model and a Keras 2 weights file (the layout of Keras Applications'
//! published weights) (`scripts/golden/make_keras_goldens.py`). Every layout reads the same
//! layers; each converts to graft's ResNet with Keras' numerics (stride on the first 1x1
//! convolution, convolution biases, BatchNorm epsilon 1.001e-5, caffe preprocessing), whose
//! features and logits match Keras' own on the same photo to 1e-5; so does Keras'
//! MobileNetV3Small (TensorFlow's padding), with its top (Keras 3) and without (tf-keras), and
//! Keras' EfficientNet at B0's depths (its own input normalization). The ResNet50/101/152,
//! MobileNetV3Small/Large and EfficientNetB0/B3 layer lists map whole. Damaged files are errors naming the file and the group or dataset.

mod common;

use std::path::{Path, PathBuf};

use burn::tensor::{Device, Tensor, TensorData};
use common::*;
use graft_data::image::load_rgb;
use graft_model::keras::{KerasFile, KerasFormat, KerasLayer, KerasWeight};
use graft_model::pooling::PoolingOptions;
use graft_model::{Backbone, Inputs, ModelError, ModelFolder, Preprocessing, keras_applications};

fn keras_golden(name: &str) -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR"))
        .join("tests/golden/keras")
        .join(name)
}

const FILES: [(&str, KerasFormat); 5] = [
    ("resnet_tiny.keras", KerasFormat::Keras3Archive),
    // As Keras 3.0 to 3.5 wrote it: no layer names in its weights, so they come from its config.
    ("resnet_tiny_keras35.keras", KerasFormat::Keras3Archive),
    ("resnet_tiny.weights.h5", KerasFormat::Keras3Weights),
    ("resnet_tiny.h5", KerasFormat::Keras2Model),
    (
        "resnet_tiny_weights_tf_dim_ordering_tf_kernels.h5",
        KerasFormat::Keras2Weights,
    ),
];

#[test]
fn every_keras_layout_reads_the_same_layers() {
    let reference = KerasFile::open(&keras_golden(FILES[0].0)).unwrap();
    assert_eq!(reference.model_name(), Some("resnet_tiny"));
    // Stem, 5 blocks of 3 (+ a shortcut in each stage's first), 4 shortcuts, the classifier:
    // each a convolution and its BatchNorm.
    assert_eq!(reference.layers.len(), 2 * (1 + 5 * 3 + 4) + 1);
    let stem = reference.layer("conv1_conv").unwrap();
    assert_eq!(stem.weights[0].shape, [7, 7, 3, 64]);
    assert_eq!(stem.weights[1].shape, [64]);
    assert_eq!(reference.layer("conv1_bn").unwrap().weights.len(), 4);
    for (name, format) in FILES {
        let file = KerasFile::open(&keras_golden(name)).unwrap();
        assert_eq!(file.format, format, "{name}");
        assert!(!file.auto_names, "{name}");
        let mut names: Vec<&str> = file.layers.iter().map(|l| l.name.as_str()).collect();
        let mut want: Vec<&str> = reference.layers.iter().map(|l| l.name.as_str()).collect();
        names.sort();
        want.sort();
        assert_eq!(names, want, "{name}");
        for layer in &reference.layers {
            let other = file.layer(&layer.name).unwrap();
            assert_eq!(
                other.weights.len(),
                layer.weights.len(),
                "{name} {}",
                layer.name
            );
            for (a, b) in other.weights.iter().zip(&layer.weights) {
                assert_eq!(a.shape, b.shape, "{name} {}", a.path);
                assert_eq!(a.values, b.values, "{name} {}", a.path);
            }
        }
    }
    // Keras 2 names its weights; Keras 3 numbers them.
    let keras2 = KerasFile::open(&keras_golden("resnet_tiny.h5")).unwrap();
    let names: Vec<&str> = keras2
        .layer("conv1_bn")
        .unwrap()
        .weights
        .iter()
        .map(|w| w.name.as_str())
        .collect();
    assert_eq!(
        names,
        [
            "conv1_bn/gamma:0",
            "conv1_bn/beta:0",
            "conv1_bn/moving_mean:0",
            "conv1_bn/moving_variance:0"
        ]
    );
    assert_eq!(keras2.model_name(), Some("resnet_tiny"));
}

/// The photo as the converted folder preprocesses it, `[1, 3, s, s]`.
fn photo(folder: &ModelFolder, device: &Device) -> (Vec<f32>, Tensor<4>) {
    let Preprocessing::Image(transform) = folder.preprocessing().unwrap() else {
        panic!("an image model")
    };
    let image = load_rgb(
        &PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("tests/golden/vision/chelsea_32.png"),
    )
    .unwrap();
    let values = transform.apply(&image);
    let size = transform.image_size;
    let tensor = Tensor::from_data(TensorData::new(values.clone(), [1, 3, size, size]), device);
    (values, tensor)
}

#[test]
fn keras_resnets_match_keras_outputs() {
    let golden = golden("keras/resnet_tiny.json");
    let keras_input = floats(&golden["preprocessed_bgr_nhwc"]);
    let want_features = floats(&golden["features"]);
    let want_logits = floats(&golden["logits"]);
    let size = 32;
    // Keras' BGR caffe input, as graft's RGB channels first.
    let mut rgb = vec![0f32; 3 * size * size];
    for c in 0..3 {
        for y in 0..size {
            for x in 0..size {
                rgb[(c * size + y) * size + x] = keras_input[(y * size + x) * 3 + (2 - c)];
            }
        }
    }
    for (name, format) in FILES {
        let out = tempfile::tempdir().unwrap();
        let dir = out.path().join("converted");
        let converted = keras_applications::convert(&keras_golden(name), &dir).unwrap();
        assert_eq!(converted.classes, 5, "{name}");
        let folder = ModelFolder::open(&dir).unwrap();
        assert_eq!(folder.architecture.name(), "resnet");
        for (backend, device) in cpu_devices() {
            // A whole model knows its input size; a weights file has Keras' default, 224.
            let (values, photo) = photo(&folder, &device);
            if matches!(
                format,
                KerasFormat::Keras3Weights | KerasFormat::Keras2Weights
            ) {
                assert_eq!(values.len(), 3 * 224 * 224);
            } else {
                // graft's RGB input in [0, 1] normalized by the folder is Keras' caffe input.
                let worst = max_abs_diff(&values, &rgb);
                assert!(
                    worst <= 2e-5,
                    "{name} {backend}: input differs by {worst:e}"
                );
                drop(photo);
            }
            let image =
                Tensor::from_data(TensorData::new(rgb.clone(), [1, 3, size, size]), &device);
            let (features, logits) = features_and_logits(&folder, image, &device);
            let (df, dl) = (
                max_abs_diff(&features, &want_features),
                max_abs_diff(&logits, &want_logits),
            );
            eprintln!("{name} {backend}: features {df:e}, logits {dl:e}");
            assert!(df <= 1e-5 && dl <= 1e-5, "{name} {backend}: {df:e} {dl:e}");
        }
    }
    // A Keras file opens as a model folder by itself (converted into graft's cache).
    let folder = ModelFolder::open(&keras_golden("resnet_tiny.keras")).unwrap();
    assert_eq!(folder.architecture.name(), "resnet");
    assert!(folder.dir.starts_with(graft_model::shards::cache_root()));
}

/// Keras' MobileNetV3Small (alpha 0.35) with its top as Keras 3 saves it, and without its top as
/// tf-keras saves it (Keras 2's `Conv/BatchNorm`-style names): TensorFlow's padding (Keras'
/// `correct_pad` where the model has no input size), the model's own rescaling, the top's 1x1
/// convolutions as linear layers.
#[test]
fn keras_mobilenet_v3_matches_keras_outputs() {
    let golden = golden("keras/mobilenet_v3_small.json");
    for (name, want, with_top) in [
        (
            "mobilenet_v3_small.keras",
            floats(&golden["features"]),
            true,
        ),
        (
            "mobilenet_v3_small_notop.h5",
            floats(&golden["notop_features"]),
            false,
        ),
    ] {
        let out = tempfile::tempdir().unwrap();
        let dir = out.path().join("converted");
        let converted = keras_applications::convert(&keras_golden(name), &dir).unwrap();
        assert_eq!(converted.model, "mobilenet_v3_small", "{name}");
        let folder = ModelFolder::open(&dir).unwrap();
        assert_eq!(folder.architecture.name(), "mobilenet_v3");
        // Saved without its top, the model was built without an input size (Keras' default for
        // MobileNetV3): its stride-2 depthwise convolutions pad by `correct_pad` at every size,
        // which on the 40x40 image's odd inner sizes is not TensorFlow's "same".
        assert_eq!(
            folder.config["padding"],
            if with_top { "same" } else { "keras_unsized" },
            "{name}"
        );
        for (backend, device) in cpu_devices() {
            if !with_top {
                assert_odd_size_matches(&folder, &golden, &format!("{name} {backend}"), &device);
            }
            let image = photo_at(&folder, 32, &device);
            let top = with_top.then(|| floats(&golden["logits"]));
            let label = format!("{name} {backend}");
            assert_matches_keras(&folder, image, &want, top.as_deref(), &label, &device);
        }
    }
}

/// Keras' EfficientNet (its own builder at B0's depths, width 0.25): built for ImageNet weights
/// and saved by Keras 3 without its top; built without them (its `Normalization` layer holding
/// other statistics) and saved by tf-keras with a 5-class top; and as tf-keras' weights-only
/// file of the ImageNet build. Each converts to graft's EfficientNet with TensorFlow's padding,
/// BatchNorm epsilon 1e-3 and the model's own input scaling as mean and std (the ImageNet build's
/// extra rescaling read from its config, or, in a weights-only file, from its normalization
/// statistics being the ImageNet weights'); features and logits match Keras' to 1e-5.
#[test]
fn keras_efficientnet_matches_keras_outputs() {
    let golden = golden("keras/efficientnet_b0.json");
    for (name, key, with_top, imagenet) in [
        ("efficientnet_b0_notop.keras", "notop_features", false, true),
        ("efficientnet_b0.h5", "features", true, false),
        (
            "efficientnet_b0_notop_weights.h5",
            "weights_features",
            false,
            true,
        ),
    ] {
        let out = tempfile::tempdir().unwrap();
        let dir = out.path().join("converted");
        let converted = keras_applications::convert(&keras_golden(name), &dir).unwrap();
        assert_eq!(
            converted.model, "efficientnet_b0 (narrowed: stem 8, head 320)",
            "{name}"
        );
        let folder = ModelFolder::open(&dir).unwrap();
        assert_eq!(folder.architecture.name(), "efficientnet");
        assert_eq!(folder.config["batch_norm_eps"], 1e-3);
        // The ImageNet build's input scaling is ImageNet's standard deviations.
        let std = folder.config["std"][0].as_f64().unwrap();
        assert_eq!((std - 0.229).abs() < 1e-6, imagenet, "{name}: std {std}");
        let want = floats(&golden[key]);
        // Built without an input size, Keras pads its stride-2 layers by `correct_pad` at every
        // size: on the 40x40 image the odd sizes inside differ from TensorFlow's "same".
        let no_size = name.contains("notop");
        assert_eq!(
            folder.config["padding"],
            if no_size { "keras_unsized" } else { "same" },
            "{name}"
        );
        for (backend, device) in cpu_devices() {
            if name.ends_with(".keras") {
                assert_odd_size_matches(&folder, &golden, &format!("{name} {backend}"), &device);
            }
            let image = photo_at(&folder, 32, &device);
            let top = with_top.then(|| floats(&golden["logits"]));
            let label = format!("{name} {backend}");
            assert_matches_keras(&folder, image, &want, top.as_deref(), &label, &device);
        }
    }
}

/// The folder's features of `image` and its own classifier's logits are Keras' (`logits`: `None`
/// for a model without its top, which must then have no classifier) to 1e-5.
fn assert_matches_keras(
    folder: &ModelFolder,
    image: Tensor<4>,
    features: &[f32],
    logits: Option<&[f32]>,
    label: &str,
    device: &Device,
) {
    let model = Backbone::load(folder, PoolingOptions::default(), true, device).unwrap();
    let got = model.forward(Inputs::Image(image));
    let values = got.clone().into_data().try_into_vec_as::<f32>().unwrap();
    let diff = max_abs_diff(&values, features);
    eprintln!("{label}: features {diff:e}");
    assert!(diff <= 1e-5, "{label}: features differ by {diff:e}");
    let classifier = model.architecture().classifier();
    assert_eq!(classifier.is_some(), logits.is_some(), "{label}");
    if let (Some(classifier), Some(logits)) = (classifier, logits) {
        let got = classifier
            .forward(got)
            .into_data()
            .try_into_vec_as::<f32>()
            .unwrap();
        let diff = max_abs_diff(&got, logits);
        assert!(diff <= 1e-5, "{label}: logits differ by {diff:e}");
    }
}

/// The folder's features of the golden's 40x40 image (`odd_input_nhwc`, odd sizes inside) are
/// Keras' (`odd_notop_features`) to 1e-5.
fn assert_odd_size_matches(
    folder: &ModelFolder,
    golden: &serde_json::Value,
    label: &str,
    device: &Device,
) {
    let got = features_of_nhwc(folder, &golden["odd_input_nhwc"], 40, device);
    let diff = max_abs_diff(&got, &floats(&golden["odd_notop_features"]));
    eprintln!("{label}: features at 40x40 {diff:e}");
    assert!(diff <= 1e-5, "{label}: 40x40 differs by {diff:e}");
}

/// The pooled features of an NHWC image of 0-255 values, scaled by the folder's mean and std.
fn features_of_nhwc(
    folder: &ModelFolder,
    pixels: &serde_json::Value,
    side: usize,
    device: &Device,
) -> Vec<f32> {
    let Preprocessing::Image(transform) = folder.preprocessing().unwrap() else {
        panic!("an image model")
    };
    let nhwc = floats(pixels);
    let mut nchw = vec![0f32; nhwc.len()];
    for (i, value) in nhwc.iter().enumerate() {
        let (c, pixel) = (i % 3, i / 3);
        nchw[c * side * side + pixel] = (value / 255.0 - transform.mean[c]) / transform.std[c];
    }
    let image = Tensor::from_data(TensorData::new(nchw, [1, 3, side, side]), device);
    let model = Backbone::load(folder, PoolingOptions::default(), false, device).unwrap();
    model
        .forward(Inputs::Image(image))
        .into_data()
        .try_into_vec_as::<f32>()
        .unwrap()
}

/// The photo at `side` (a weights-only file has no input size; Keras ran it at 32).
fn photo_at(folder: &ModelFolder, side: usize, device: &Device) -> Tensor<4> {
    let Preprocessing::Image(mut transform) = folder.preprocessing().unwrap() else {
        panic!("an image model")
    };
    transform.image_size = side;
    let image = load_rgb(
        &PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("tests/golden/vision/chelsea_32.png"),
    )
    .unwrap();
    let values = transform.apply(&image);
    Tensor::from_data(TensorData::new(values, [1, 3, side, side]), device)
}

/// A folder's pooled features of `image` and its own classifier's logits.
fn features_and_logits(
    folder: &ModelFolder,
    image: Tensor<4>,
    device: &Device,
) -> (Vec<f32>, Vec<f32>) {
    let model = Backbone::load(folder, PoolingOptions::default(), true, device).unwrap();
    let features = model.forward(Inputs::Image(image));
    let logits = model
        .architecture()
        .classifier()
        .unwrap()
        .forward(features.clone())
        .into_data()
        .try_into_vec_as::<f32>()
        .unwrap();
    (
        features.into_data().try_into_vec_as::<f32>().unwrap(),
        logits,
    )
}

/// A Keras file of zero weights with the given layers (names and shapes).
fn synthetic(layers: &serde_json::Value) -> KerasFile {
    let layers = layers
        .as_array()
        .unwrap()
        .iter()
        .map(|layer| KerasLayer {
            name: layer["name"].as_str().unwrap().to_string(),
            weights: layer["shapes"]
                .as_array()
                .unwrap()
                .iter()
                .enumerate()
                .map(|(i, shape)| {
                    let shape: Vec<usize> = shape
                        .as_array()
                        .unwrap()
                        .iter()
                        .map(|d| d.as_u64().unwrap() as usize)
                        .collect();
                    KerasWeight {
                        name: i.to_string(),
                        path: format!("layers/x/vars/{i}"),
                        values: vec![0.0; shape.iter().product()],
                        shape,
                    }
                })
                .collect(),
        })
        .collect();
    KerasFile {
        path: PathBuf::from("synthetic.weights.h5"),
        format: KerasFormat::Keras3Weights,
        model_config: None,
        layers,
        auto_names: false,
    }
}

#[test]
fn keras_resnet_and_mobilenet_layer_lists_map_whole() {
    let lists = golden("keras/resnet_layers.json");
    for (name, depth, blocks) in [
        ("resnet50", 50, 16),
        ("resnet101", 101, 33),
        ("resnet152", 152, 50),
    ] {
        let file = synthetic(&lists[name]);
        let (tensors, config, converted) = keras_applications::convert_layers(&file).unwrap();
        assert_eq!(converted.model, name);
        assert_eq!(config["depth"], depth);
        assert_eq!(config["num_classes"], 1000);
        assert!(config.get("stage_blocks").is_none());
        assert_eq!(config["stride_in_1x1"], true);
        // Every convolution with its BatchNorm (5 tensors), plus the classifier's 2.
        assert_eq!(tensors.len(), 5 * (1 + 3 * blocks + 4) + 2, "{name}");
        let conv1 = tensors
            .iter()
            .find(|t| t.name == "layer1.0.conv1.weight")
            .unwrap();
        assert_eq!(conv1.shape, [64, 64, 1, 1]);
        let fc = tensors.iter().find(|t| t.name == "fc.weight").unwrap();
        assert_eq!(fc.shape, [1000, 2048]);
    }
    // As many tensors as torchvision's `mobilenet_v3_small` / `_large` state dicts hold besides
    // `num_batches_tracked` (210, 266; 4 fewer without the classifier's two layers).
    for (name, variant, tensors) in [
        ("mobilenet_v3_small", "small", 210),
        ("mobilenet_v3_large", "large", 266),
        ("mobilenet_v3_large_notop", "large", 262),
    ] {
        let file = synthetic(&lists[name]);
        let (converted, config, summary) = keras_applications::convert_layers(&file).unwrap();
        assert_eq!(config["variant"], variant, "{name}");
        assert_eq!(summary.tensors, converted.len());
        assert_eq!(converted.len(), tensors, "{name}");
        let classes = if name.ends_with("notop") { 0 } else { 1000 };
        assert_eq!(config["num_classes"], classes, "{name}");
    }
    // Layers known only by Keras' automatic keys (a .weights.h5 from before Keras 3.6) are
    // refused with what to do.
    let mut auto = synthetic(&serde_json::json!([{"name": "conv2d", "shapes": [[3, 3, 3, 8]]}]));
    auto.auto_names = true;
    let error = keras_applications::convert_layers(&auto).err().unwrap();
    assert!(error.to_string().contains("before 3.6"), "{error}");
    // A layer the map does not know is refused by name, not dropped.
    let mut list = lists["resnet50"].clone();
    list.as_array_mut()
        .unwrap()
        .push(serde_json::json!({"name": "extra_dense", "shapes": [[4, 4]]}));
    let error = keras_applications::convert_layers(&synthetic(&list))
        .err()
        .unwrap();
    assert!(error.to_string().contains("extra_dense"), "{error}");
    // Keras' EfficientNetB0 (with its top) and B3 (without) map onto as many tensors as
    // torchvision's state dicts hold besides `num_batches_tracked`, under their names.
    let lists = golden("keras/efficientnet_layers.json");
    for (name, model, tensors, classes) in [
        ("efficientnetb0", "efficientnet_b0", 311, 1000),
        ("efficientnetb3_notop", "efficientnet_b3", 494, 0),
    ] {
        let (converted, config, summary) =
            keras_applications::convert_layers(&synthetic(&lists[name])).unwrap();
        assert_eq!(summary.model, model, "{name}");
        assert_eq!(converted.len(), tensors, "{name}");
        assert_eq!(config["num_classes"], classes, "{name}");
        assert!(
            converted
                .iter()
                .any(|t| t.name == "features.1.0.block.1.fc1.weight")
        );
    }
    // `graft convert` writes Keras' EfficientNetB0 with its top (taken as built at its fixed
    // size) and MobileNetV3Small at alpha 1.0 with its top (unsized, at 224: a multiple of 32)
    // as timm's TensorFlow ports, in timm's names; a narrowed one as graft's folder.
    let dir = tempfile::tempdir().unwrap();
    // The list's top was made with the golden's 64-wide hidden layer; Keras' is 1024 wide.
    let mut mobilenet = golden("keras/resnet_layers.json")["mobilenet_v3_small"].clone();
    for layer in mobilenet.as_array_mut().unwrap() {
        match layer["name"].as_str() {
            Some("conv_2") => layer["shapes"] = serde_json::json!([[1, 1, 576, 1024], [1024]]),
            Some("logits") => layer["shapes"] = serde_json::json!([[1, 1, 1024, 1000], [1000]]),
            _ => {}
        }
    }
    for (list, name, architecture, conv_head) in [
        (
            &lists["efficientnetb0"],
            "efficientnet",
            "tf_efficientnet_b0",
            [1280, 320, 1, 1],
        ),
        (
            &mobilenet,
            "mobilenet",
            "tf_mobilenetv3_small_100",
            [1024, 576, 1, 1],
        ),
    ] {
        let out = dir.path().join(name);
        let converted = keras_applications::convert_file(&synthetic(list), &out).unwrap();
        assert_eq!(converted.layout, "timm", "{name}");
        let config: serde_json::Value =
            serde_json::from_str(&std::fs::read_to_string(out.join("config.json")).unwrap())
                .unwrap();
        assert_eq!(config["architecture"], architecture);
        assert_eq!(config["num_classes"], 1000);
        let index = graft_model::WeightsIndex::read(&out.join("model.safetensors")).unwrap();
        assert_eq!(index.tensors["conv_head.weight"].shape, conv_head, "{name}");
        assert_eq!(index.tensors["classifier.weight"].shape[0], 1000, "{name}");
        assert!(
            index.tensors.contains_key("bn1.num_batches_tracked"),
            "{name}"
        );
        assert!(
            index.tensors.contains_key("blocks.0.0.conv_dw.weight"),
            "{name}"
        );
    }
    // A Keras model graft does not map names what it is.
    let other = synthetic(&serde_json::json!([{"name": "dense", "shapes": [[4, 2], [2]]}]));
    let error = keras_applications::convert_layers(&other).err().unwrap();
    assert!(
        matches!(error, ModelError::UnsupportedArchitecture { .. }),
        "{error}"
    );
    assert!(error.to_string().contains("ResNet50"), "{error}");
}

fn damaged(dir: &Path, name: &str, change: impl FnOnce(&mut Vec<u8>)) -> PathBuf {
    let mut bytes = std::fs::read(keras_golden(name)).unwrap();
    change(&mut bytes);
    let path = dir.join(name);
    std::fs::write(&path, bytes).unwrap();
    path
}

fn error_of(path: &Path) -> String {
    let Err(error) = KerasFile::open(path) else {
        panic!("{} opened", path.display())
    };
    let error = error.to_string();
    assert!(error.contains(&path.display().to_string()), "{error}");
    error
}

#[test]
fn damaged_keras_files_are_clear_errors() {
    let dir = tempfile::tempdir().unwrap();
    for (name, _) in FILES {
        let len = std::fs::metadata(keras_golden(name)).unwrap().len() as usize;
        for keep in [0, 8, 100, 2000, len / 2, len - 100] {
            let path = damaged(dir.path(), name, |b| b.truncate(keep));
            let error = error_of(&path);
            eprintln!("{name} cut at {keep}: {error}");
        }
    }
    // A layer group renamed (in the first place its name is stored as a C string, so either
    // `layer_names` or the group's link no longer names the other).
    let path = damaged(dir.path(), "resnet_tiny.h5", |bytes| {
        let needle = b"conv3_block1_2_bn\0";
        let at = bytes
            .windows(needle.len())
            .position(|w| w == needle)
            .unwrap();
        bytes[at + 15..at + 17].copy_from_slice(b"XX");
    });
    let error = error_of(&path);
    assert!(error.contains("conv3_block1_2_"), "{error}");
    assert!(error.contains("group"), "{error}");
    // An archive without its weights.
    let archive = dir.path().join("no_weights.keras");
    {
        let file = std::fs::File::create(&archive).unwrap();
        let mut zip = zip::ZipWriter::new(file);
        zip.start_file("config.json", zip::write::SimpleFileOptions::default())
            .unwrap();
        std::io::Write::write_all(&mut zip, b"{}").unwrap();
        zip.finish().unwrap();
    }
    let error = error_of(&archive);
    assert!(error.contains("model.weights.h5"), "{error}");
    // Not a Keras file at all.
    let text = dir.path().join("notes.h5");
    std::fs::write(&text, "plain text").unwrap();
    assert!(error_of(&text).contains("neither an HDF5 file nor a .keras archive"));
}

/// transformers' own ResNet folders (`scripts/golden/make_transformers_resnet_goldens.py`:
/// `ResNetForImageClassification` of random weights, stride on the 3x3 as microsoft/resnet-50,
/// and on the 1x1 with `downsample_in_bottleneck`), the layout `graft convert` writes Keras
/// ResNets in: through their own `preprocessor_config.json`, graft's features and logits are
/// transformers' to 1e-5.
#[test]
fn transformers_resnet_folders_match_transformers() {
    let outputs = golden("transformers_resnet/outputs.json");
    for name in ["v1_5", "stride_in_1x1"] {
        let dir = PathBuf::from(env!("CARGO_MANIFEST_DIR"))
            .join("tests/golden/transformers_resnet")
            .join(name);
        let folder = ModelFolder::open(&dir).unwrap();
        assert_eq!(folder.architecture.name(), "resnet");
        for (backend, device) in cpu_devices() {
            let (_, image) = photo(&folder, &device);
            let (features, logits) = features_and_logits(&folder, image, &device);
            let df = max_abs_diff(&features, &floats(&outputs[name]["features"]));
            let dl = max_abs_diff(&logits, &floats(&outputs[name]["logits"]));
            eprintln!("{name} {backend}: features {df:e}, logits {dl:e}");
            assert!(df <= 1e-5 && dl <= 1e-5, "{name} {backend}: {df:e} {dl:e}");
        }
    }
}
