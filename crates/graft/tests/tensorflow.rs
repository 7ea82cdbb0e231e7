//! TensorFlow checkpoints through the commands: `graft inspect` lists a bundle's variables (a TF2
//! checkpoint's or SavedModel's by the names its object graph gives them),
//! `graft convert` writes a Google BERT release as a transformers folder, and `--model` and
//! `[model] backbone` take the release folder itself (converted once into graft's cache), so it
//! embeds and trains as any model folder. The numerics are checked against transformers in
//! graft-model's `tf_checkpoints.rs`. Keras files (`.keras`, `.weights.h5`, `.h5`) are listed by
//! `inspect`, converted by `convert`, and train and export as any model folder (their numerics
//! against Keras' in graft-model's `keras_files.rs`).

mod common;

use std::path::{Path, PathBuf};

use common::{fails, ok, write};

/// `graft embed` of a text file with `model`: the embeddings written to `out`.
fn embed_texts(model: &Path, texts: &Path, out: &Path) -> Vec<f32> {
    ok(&[
        "embed",
        "--model",
        model.to_str().unwrap(),
        "--input",
        texts.to_str().unwrap(),
        "--output",
        out.to_str().unwrap(),
    ]);
    common::f32_tensors(out).into_values().next().unwrap().1
}

fn release() -> PathBuf {
    common::repo().join("crates/graft-model/tests/golden/tf_bert/uncased_L-2_H-32_A-4")
}

#[test]
fn inspect_and_convert_read_a_google_release() {
    let tmp = tempfile::tempdir().unwrap();
    let index = release().join("bert_model.ckpt.index");
    let listed = ok(&["inspect", index.to_str().unwrap()]);
    assert!(
        listed.contains("bert/encoder/layer_1/attention/self/query/kernel")
            && listed.contains("[32, 32]")
            && listed.contains("global_step")
            && listed.contains("int64"),
        "{listed}"
    );
    assert!(listed.contains("47 tensors"), "{listed}");
    assert!(listed.contains("Google BERT"), "{listed}");

    let out = tmp.path().join("converted");
    let said = ok(&[
        "convert",
        release().to_str().unwrap(),
        out.to_str().unwrap(),
    ]);
    assert!(
        said.contains("39 tensors") && said.contains("8 checkpoint tensors left out"),
        "{said}"
    );
    for file in [
        "config.json",
        "model.safetensors",
        "tokenizer.json",
        "vocab.txt",
    ] {
        assert!(out.join(file).is_file(), "{file}");
    }
    let config = common::json(&out.join("config.json"));
    assert_eq!(config["architectures"][0], "BertModel");
    assert_eq!(config["hidden_size"], 32);
    // A second conversion into the same folder is refused, leaving it as it was.
    let error = fails(&[
        "convert",
        release().to_str().unwrap(),
        out.to_str().unwrap(),
    ]);
    assert!(error.contains("already exists"), "{error}");
}

#[test]
fn a_release_folder_embeds_and_trains_as_a_model_folder() {
    let tmp = tempfile::tempdir().unwrap();
    let dir = tmp.path();
    let texts = write(dir, "texts.txt", "Hello, world!\nThe coffee was good.\n");
    let embed = |model: &Path, name: &str| embed_texts(model, &texts, &dir.join(name));
    let converted = dir.join("converted");
    ok(&[
        "convert",
        release().to_str().unwrap(),
        converted.to_str().unwrap(),
    ]);
    let direct = embed(&release(), "direct.safetensors");
    let from_index = embed(
        &release().join("bert_model.ckpt.index"),
        "index.safetensors",
    );
    let from_converted = embed(&converted, "converted.safetensors");
    assert_eq!(direct.len(), 2 * 32);
    assert_eq!(direct, from_converted);
    assert_eq!(direct, from_index);

    let config = write(
        dir,
        "train.toml",
        &format!(
            "[model]\nbackbone = \"{}\"\n\n{}\n[train]\nepochs = 2\n\n[output]\ndir = \"{}\"\n",
            release().display(),
            common::FINE_FOODS_MINI,
            dir.join("run").display()
        ),
    );
    ok(&["train", config.to_str().unwrap()]);
    assert!(dir.join("run/eval.json").is_file());
}

#[test]
fn a_tf_hub_bert_saved_model_inspects_converts_and_embeds() {
    let tmp = tempfile::tempdir().unwrap();
    let dir = tmp.path();
    let saved_model = common::repo()
        .join("crates/graft-model/tests/golden/tf_hub_bert/bert_en_uncased_L-2_H-32_A-4");
    let listed = ok(&["inspect", saved_model.to_str().unwrap()]);
    assert!(
        listed.contains("transformer/layer_1/self_attention/query/kernel")
            && listed.contains("[32, 4, 8]"),
        "{listed}"
    );
    assert!(listed.contains("TF Hub BERT encoder"), "{listed}");
    let converted = dir.join("converted");
    let said = ok(&[
        "convert",
        saved_model.to_str().unwrap(),
        converted.to_str().unwrap(),
    ]);
    assert!(said.contains("39 tensors"), "{said}");
    let texts = write(dir, "texts.txt", "Hello, world!\nThe coffee was good.\n");
    let embed = |model: &Path, name: &str| embed_texts(model, &texts, &dir.join(name));
    assert_eq!(
        embed(&saved_model, "direct.safetensors"),
        embed(&converted, "converted.safetensors")
    );
}

#[test]
fn inspect_names_tf2_variables_and_marks_optimizer_state() {
    let root = common::repo().join("crates/graft-model/tests/golden/tf2");
    let keras2 = ok(&[
        "inspect",
        root.join("keras2_checkpoint/ckpt").to_str().unwrap(),
    ]);
    assert!(
        keras2
            .contains("dense/kernel  model/layer_with_weights-0/kernel/.ATTRIBUTES/VARIABLE_VALUE"),
        "{keras2}"
    );
    assert!(
        keras2.contains("Adam/dense/kernel/m (optimizer state)"),
        "{keras2}"
    );
    // 3·4 + 4 + 4 + 4 + 4·2 + 2 weights; Adam's moments are not counted.
    assert!(keras2.contains("34 parameters"), "{keras2}");
    let saved = ok(&["inspect", root.join("saved_model").to_str().unwrap()]);
    assert!(
        saved.contains("sequential/norm/gamma  _layers/2/gamma/.ATTRIBUTES/VARIABLE_VALUE"),
        "{saved}"
    );
    assert!(
        saved.contains("TensorFlow 2 object-based checkpoint"),
        "{saved}"
    );
}

/// One epoch of a new head on the Fashion-MNIST slice with `backbone`, into the run folder `run`.
fn train_on_fashion_mnist(backbone: &Path, run: &Path) {
    train_on_fashion_mnist_with(backbone, run, "");
}

/// [`train_on_fashion_mnist`] with more `[model]` settings.
fn train_on_fashion_mnist_with(backbone: &Path, run: &Path, model: &str) {
    let root = common::repo().join("datasets/fashion-mnist-mini");
    let config = write(
        run.parent().unwrap(),
        &format!("{}.toml", run.file_name().unwrap().to_string_lossy()),
        &format!(
            "[model]\nbackbone = \"{}\"\n{model}\n[data]\nformat = \"image_folder\"\ntrain = \"{}\"\n\
             test = \"{}\"\nvalid_fraction = 0.1\n\n[train]\nepochs = 1\nbatch_size = 32\n\n\
             [output]\ndir = \"{}\"\n",
            backbone.display(),
            root.join("train").display(),
            root.join("test").display(),
            run.display()
        ),
    );
    ok(&["train", config.to_str().unwrap()]);
}

fn keras_file(name: &str) -> PathBuf {
    common::repo()
        .join("crates/graft-model/tests/golden/keras")
        .join(name)
}

#[test]
fn keras_files_inspect_convert_and_train() {
    let tmp = tempfile::tempdir().unwrap();
    let dir = tmp.path();
    let listed = ok(&["inspect", keras_file("resnet_tiny.h5").to_str().unwrap()]);
    assert!(
        listed.contains("conv1_conv/kernel:0") && listed.contains("[7, 7, 3, 64]"),
        "{listed}"
    );
    assert!(listed.contains("Keras 2 model (HDF5)"), "{listed}");
    let listed = ok(&["inspect", keras_file("resnet_tiny.keras").to_str().unwrap()]);
    assert!(listed.contains("conv1_bn/3"), "{listed}");
    assert!(
        listed.contains("Keras resnet (stages [2, 1, 1, 1]"),
        "{listed}"
    );

    let converted = dir.join("converted");
    let said = ok(&[
        "convert",
        keras_file("resnet_tiny_weights_tf_dim_ordering_tf_kernels.h5")
            .to_str()
            .unwrap(),
        converted.to_str().unwrap(),
    ]);
    assert!(
        said.contains("5 classes") && said.contains("transformers"),
        "{said}"
    );
    // transformers' ResNet folder, which graft reads as well.
    let config = common::json(&converted.join("config.json"));
    assert_eq!(config["architectures"][0], "ResNetForImageClassification");
    assert_eq!(config["downsample_in_bottleneck"], true);
    assert_eq!(config["depths"], serde_json::json!([2, 1, 1, 1]));
    let texts = ok(&["inspect", converted.to_str().unwrap()]);
    assert!(texts.contains("resnet50"), "{texts}");

    // `[model] backbone` takes the Keras file itself; the run exports as transformers'
    // ResNetForImageClassification, the one PyTorch ResNet with the stride on the 1x1.
    train_on_fashion_mnist(&keras_file("resnet_tiny.keras"), &dir.join("run"));
    let out = common::export(&dir.join("run"), &dir.join("export"));
    let exported = common::json(&out.join("config.json"));
    assert_eq!(exported["architectures"][0], "ResNetForImageClassification");
    assert_eq!(exported["downsample_in_bottleneck"], true);
    assert_eq!(exported["depths"], serde_json::json!([2, 1, 1, 1]));
    assert_eq!(
        exported["hidden_sizes"],
        serde_json::json!([16, 32, 32, 64])
    );
    assert_eq!(exported["id2label"].as_object().unwrap().len(), 10);
    let tensors = common::f32_tensors(&out.join("model.safetensors"));
    assert_eq!(
        tensors["resnet.encoder.stages.1.layers.0.layer.0.convolution.weight"].0,
        [8, 16, 1, 1]
    );
    assert_eq!(tensors["classifier.1.weight"].0, [10, 64]);
    let processor = common::json(&out.join("preprocessor_config.json"));
    assert!((processor["image_std"][0].as_f64().unwrap() - 1.0 / 255.0).abs() < 1e-7);

    // A Keras MobileNetV3 (Keras 2's names, without its top) trains; without its hidden layer
    // it is no library's MobileNetV3, so it exports to ONNX only, and says so.
    let listed = ok(&[
        "inspect",
        keras_file("mobilenet_v3_small_notop.h5").to_str().unwrap(),
    ]);
    assert!(
        listed.contains("expanded_conv_1/expand/BatchNorm/gamma:0")
            && listed.contains("Keras mobilenet_v3_small (0 classes)"),
        "{listed}"
    );
    let run = dir.join("mobilenet");
    train_on_fashion_mnist(&keras_file("mobilenet_v3_small_notop.h5"), &run);
    let error = fails(&[
        "export",
        "--model",
        run.to_str().unwrap(),
        "--out",
        dir.join("mobilenet-export").to_str().unwrap(),
    ]);
    assert!(error.contains("no hidden layer"), "{error}");
    let said = ok(&[
        "export",
        "--model",
        run.to_str().unwrap(),
        "--out",
        dir.join("mobilenet-onnx").to_str().unwrap(),
        "--format",
        "onnx",
    ]);
    assert!(said.contains("ONNX"), "{said}");

    // A Keras EfficientNet (built for ImageNet without its top, narrowed) lists its layers,
    // trains at 64 px, and has no library's EfficientNet-B0 widths, so it exports to ONNX only.
    let listed = ok(&[
        "inspect",
        keras_file("efficientnet_b0_notop.keras").to_str().unwrap(),
    ]);
    assert!(
        listed.contains("Keras efficientnet_b0 (narrowed: stem 8, head 320) (0 classes)"),
        "{listed}"
    );
    let run = dir.join("efficientnet");
    train_on_fashion_mnist_with(
        &keras_file("efficientnet_b0_notop.keras"),
        &run,
        "image_size = 64\n",
    );
    let error = fails(&[
        "export",
        "--model",
        run.to_str().unwrap(),
        "--out",
        dir.join("efficientnet-export").to_str().unwrap(),
    ]);
    assert!(error.contains("not EfficientNet-B0's"), "{error}");
    let said = ok(&[
        "export",
        "--model",
        run.to_str().unwrap(),
        "--out",
        dir.join("efficientnet-onnx").to_str().unwrap(),
        "--format",
        "onnx",
    ]);
    assert!(said.contains("ONNX"), "{said}");
}
