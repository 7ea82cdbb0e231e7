//! Vision through the `graft` binary, on the real EfficientNet-Lite0 weights and the committed
//! Fashion-MNIST slice: convert, train, eval (CPU and wgpu), predict, embed, export and inspect;
//! frozen BatchNorm statistics; and the bad inputs that must fail cleanly.

mod common;

use std::path::{Path, PathBuf};

use common::{fails, json, lite0_folder, ok, repo, write};

fn vision_config(model: &Path, train: &Path, out: &Path, extra: &str) -> String {
    format!(
        r#"[model]
backbone = "{}"
image_size = 64

[data]
format = "image_folder"
train = "{}"
test = "datasets/fashion-mnist-mini/test"
valid_fraction = 0.2

[train]
epochs = 3
batch_size = 16
lr = 1e-2
backend = "flex"
{extra}

[output]
dir = "{}"
"#,
        model.display(),
        train.display(),
        out.display()
    )
}

fn mini_train() -> PathBuf {
    repo().join("datasets/fashion-mnist-mini/train")
}

fn tensors(path: &Path) -> Vec<(String, Vec<usize>, Vec<u8>)> {
    let bytes = std::fs::read(path).unwrap();
    let file = safetensors::SafeTensors::deserialize(&bytes).unwrap();
    let mut out: Vec<_> = file
        .tensors()
        .into_iter()
        .map(|(name, view)| (name, view.shape().to_vec(), view.data().to_vec()))
        .collect();
    out.sort();
    out
}

#[test]
fn vision_train_eval_predict_embed_export_inspect() {
    let tmp = tempfile::tempdir().unwrap();
    let model = lite0_folder(tmp.path());
    let run = tmp.path().join("run");
    let cfg = write(
        tmp.path(),
        "v.toml",
        &vision_config(&model, &mini_train(), &run, ""),
    );
    let stdout = ok(&["train", cfg.to_str().unwrap()]);
    assert!(stdout.contains("confusion matrix"), "{stdout}");
    let report = json(&run.join("eval.json"));
    assert_eq!(report["n"], 50);
    let accuracy = report["accuracy"].as_f64().unwrap();
    assert!(
        accuracy > 0.4,
        "a head on ImageNet features should beat chance (0.1): {accuracy}"
    );
    assert_eq!(json(&run.join("graft.json"))["modality"], "image");

    // eval on the CPU and on wgpu (software Vulkan here) agree.
    let test = repo().join("datasets/fashion-mnist-mini/test");
    let eval = |backend: &str| {
        let out = tmp.path().join(format!("eval-{backend}.json"));
        ok(&[
            "eval",
            "--model",
            run.to_str().unwrap(),
            "--data",
            test.to_str().unwrap(),
            "--backend",
            backend,
            "--output",
            out.to_str().unwrap(),
        ]);
        json(&out)
    };
    // Training runs on wgpu too (features and head on the software Vulkan device).
    let wgpu_run = tmp.path().join("wgpu-run");
    let cfg = write(
        tmp.path(),
        "w.toml",
        &vision_config(&model, &mini_train(), &wgpu_run, "")
            .replace("backend = \"flex\"", "backend = \"wgpu\"")
            .replace("epochs = 3", "epochs = 2"),
    );
    ok(&["train", cfg.to_str().unwrap()]);
    let wgpu_accuracy = json(&wgpu_run.join("eval.json"))["accuracy"]
        .as_f64()
        .unwrap();
    assert!(wgpu_accuracy > 0.4, "wgpu training: {wgpu_accuracy}");

    let flex = eval("flex");
    assert_eq!(flex["accuracy"], report["accuracy"]);
    let wgpu = eval("wgpu");
    let diff = (wgpu["accuracy"].as_f64().unwrap() - accuracy).abs();
    assert!(diff <= 0.04, "wgpu accuracy differs by {diff}");

    // predict on a plain folder of images: one line per image, with its path.
    let stdout = ok(&[
        "predict",
        "--model",
        run.to_str().unwrap(),
        "--input",
        test.join("bag").to_str().unwrap(),
    ]);
    let lines: Vec<serde_json::Value> = stdout
        .lines()
        .map(|l| serde_json::from_str(l).unwrap())
        .collect();
    assert_eq!(lines.len(), 5);
    assert!(lines[0]["input"].as_str().unwrap().ends_with(".png"));
    assert_eq!(lines[0]["probabilities"].as_object().unwrap().len(), 10);

    // The pretrained folder's own ImageNet classifier names scikit-image's photos.
    let photos = repo().join("crates/graft-model/tests/golden/vision");
    for (photo, class) in [("chelsea.png", "285"), ("coffee.png", "967")] {
        let stdout = ok(&[
            "predict",
            "--model",
            model.to_str().unwrap(),
            "--input",
            photos.join(photo).to_str().unwrap(),
        ]);
        let prediction: serde_json::Value = serde_json::from_str(stdout.trim()).unwrap();
        assert_eq!(prediction["label"], class, "{photo}");
    }

    // embed: pooled features of each image.
    let embeddings = tmp.path().join("e.safetensors");
    ok(&[
        "embed",
        "--model",
        model.to_str().unwrap(),
        "--input",
        test.join("bag").to_str().unwrap(),
        "--output",
        embeddings.to_str().unwrap(),
    ]);
    assert_eq!(tensors(&embeddings)[0].1, [5, 1280]);

    // export in timm's names with the new head as the classifier.
    let export = tmp.path().join("export");
    let stdout = ok(&[
        "export",
        "--model",
        run.to_str().unwrap(),
        "--out",
        export.to_str().unwrap(),
    ]);
    assert!(stdout.contains("timm"), "{stdout}");
    let exported = tensors(&export.join("model.safetensors"));
    let shape_of = |name: &str| {
        exported
            .iter()
            .find(|t| t.0 == name)
            .unwrap_or_else(|| panic!("export lacks {name}"))
            .1
            .clone()
    };
    // Exactly timm's state dict: every name, shape and dtype (made with timm, see the golden file).
    let timm: serde_json::Value = serde_json::from_str(
        &std::fs::read_to_string(
            repo().join("crates/graft/tests/golden/timm_tf_efficientnet_lite0_keys.json"),
        )
        .unwrap(),
    )
    .unwrap();
    let mut want: Vec<(String, Vec<usize>)> = timm["tensors"]
        .as_array()
        .unwrap()
        .iter()
        .map(|t| {
            let shape = t[1]
                .as_array()
                .unwrap()
                .iter()
                .map(|d| d.as_u64().unwrap() as usize);
            (t[0].as_str().unwrap().to_string(), shape.collect())
        })
        .collect();
    want.sort();
    let got: Vec<(String, Vec<usize>)> = exported
        .iter()
        .map(|t| (t.0.clone(), t.1.clone()))
        .collect();
    assert_eq!(
        got, want,
        "the export is not timm's tf_efficientnet_lite0 layout"
    );
    assert_eq!(shape_of("classifier.weight"), [10, 1280]);
    assert_eq!(shape_of("blocks.0.0.conv_dw.weight"), [32, 1, 3, 3]);
    assert_eq!(shape_of("blocks.6.0.conv_pwl.weight"), [320, 1152, 1, 1]);
    assert_eq!(shape_of("bn2.num_batches_tracked"), Vec::<usize>::new());
    assert!(
        json(&export.join("export.json"))["model"]
            .as_str()
            .unwrap()
            .contains("tf_efficientnet_lite0")
    );

    let stdout = ok(&["inspect", model.to_str().unwrap()]);
    assert!(stdout.contains("efficientnet_lite (lite0)"), "{stdout}");

    // The timm export is itself a timm folder (config.json with pretrained_cfg, timm's names)
    // that graft reads: its own classifier predicts what the run predicts, its classes named by
    // `label_names`.
    let predicted = |model: &Path| -> Vec<String> {
        ok(&[
            "predict",
            "--model",
            model.to_str().unwrap(),
            "--input",
            test.join("bag").to_str().unwrap(),
        ])
        .lines()
        .map(|l| {
            let p: serde_json::Value = serde_json::from_str(l).unwrap();
            p["label"].as_str().unwrap().to_string()
        })
        .collect()
    };
    assert_eq!(predicted(&run), predicted(&export));
    let stdout = ok(&["inspect", export.to_str().unwrap()]);
    assert!(
        stdout.contains("efficientnet_lite (lite0), 64px, 10 classes"),
        "{stdout}"
    );
}

/// Running statistics of every BatchNorm in a weights file.
fn running_stats(path: &Path) -> Vec<(String, Vec<u8>)> {
    tensors(path)
        .into_iter()
        .filter(|t| t.0.ends_with("running_mean") || t.0.ends_with("running_var"))
        .map(|t| (t.0, t.2))
        .collect()
}

#[test]
fn frozen_batchnorm_keeps_its_statistics_unless_told_to_train() {
    let tmp = tempfile::tempdir().unwrap();
    let model = lite0_folder(tmp.path());
    let original = running_stats(&model.join("model.safetensors"));
    assert_eq!(original.len(), 98);
    // Augmentation makes every batch run through the (frozen) backbone while training.
    let augment = "\n[augment]\nhorizontal_flip = true\ncrop_scale = [0.5, 1.0]\n";
    let run = tmp.path().join("frozen");
    let cfg = write(
        tmp.path(),
        "f.toml",
        &(vision_config(&model, &mini_train(), &run, "epochs = 1").replace("epochs = 3\n", "")
            + augment),
    );
    ok(&["train", cfg.to_str().unwrap()]);
    assert_eq!(running_stats(&run.join("model.safetensors")), original);

    // fastai's default: BatchNorm keeps training inside the frozen backbone.
    let run = tmp.path().join("train-bn");
    let cfg = write(
        tmp.path(),
        "b.toml",
        &(vision_config(&model, &mini_train(), &run, "epochs = 1")
            .replace("epochs = 3\n", "")
            .replace("[output]", "[freeze]\ntrain_batchnorm = true\n\n[output]")
            + augment),
    );
    let stdout = ok(&["train", cfg.to_str().unwrap(), "--dry-run"]);
    assert!(
        stdout.contains("_bn0.weight") || stdout.contains("bn0.weight"),
        "{stdout}"
    );
    ok(&["train", cfg.to_str().unwrap()]);
    let trained = running_stats(&run.join("model.safetensors"));
    let changed = trained
        .iter()
        .zip(&original)
        .filter(|(a, b)| a.1 != b.1)
        .count();
    assert!(changed > 90, "only {changed} of 98 statistics moved");
    let weights =
        |path: &Path, name: &str| tensors(path).into_iter().find(|t| t.0 == name).unwrap().2;
    assert_eq!(
        weights(&run.join("model.safetensors"), "_conv_stem.weight"),
        weights(&model.join("model.safetensors"), "_conv_stem.weight"),
        "convolutions stay frozen"
    );
}

#[test]
fn bad_image_data_fails_with_clear_errors() {
    let tmp = tempfile::tempdir().unwrap();
    let model = lite0_folder(tmp.path());
    let data = tmp.path().join("data");
    for class in ["a", "b"] {
        std::fs::create_dir_all(data.join(class)).unwrap();
    }
    let copy_any = |class: &str| {
        let source = std::fs::read_dir(mini_train().join("bag"))
            .unwrap()
            .next()
            .unwrap()
            .unwrap()
            .path();
        std::fs::copy(source, data.join(class).join("1.png")).unwrap();
    };
    copy_any("a");
    copy_any("b");
    std::fs::write(data.join("b").join("broken.png"), b"\x89PNG\r\n\x1a\nnope").unwrap();
    let cfg = write(
        tmp.path(),
        "c.toml",
        &vision_config(&model, &data, &tmp.path().join("run"), "")
            .replace("test = \"datasets/fashion-mnist-mini/test\"\n", ""),
    );
    let stderr = fails(&["train", cfg.to_str().unwrap()]);
    assert!(stderr.contains("broken.png"), "{stderr}");

    std::fs::remove_file(data.join("b").join("broken.png")).unwrap();
    std::fs::create_dir_all(data.join("c")).unwrap();
    let stderr = fails(&["train", cfg.to_str().unwrap()]);
    assert!(stderr.contains("class `c` has no examples"), "{stderr}");

    // A .pth that is not a checkpoint.
    let bogus = write(tmp.path(), "bogus.pth", "not a checkpoint");
    let stderr = fails(&[
        "convert",
        bogus.to_str().unwrap(),
        "/dev/null/x.safetensors",
    ]);
    assert!(stderr.contains("bogus.pth"), "{stderr}");

    // Weights whose stem takes another number of channels than the architecture's RGB input.
    let folder = tmp.path().join("gray");
    std::fs::create_dir_all(&folder).unwrap();
    std::fs::copy(model.join("config.json"), folder.join("config.json")).unwrap();
    let original = std::fs::read(model.join("model.safetensors")).unwrap();
    let file = safetensors::SafeTensors::deserialize(&original).unwrap();
    let mut data: Vec<(String, Vec<usize>, Vec<u8>, safetensors::Dtype)> = file
        .tensors()
        .into_iter()
        .map(|(n, v)| (n, v.shape().to_vec(), v.data().to_vec(), v.dtype()))
        .collect();
    for t in &mut data {
        if t.0 == "_conv_stem.weight" {
            t.1 = vec![32, 1, 3, 3];
            t.2.truncate(32 * 9 * 4);
        }
    }
    let views: Vec<(String, safetensors::tensor::TensorView)> = data
        .iter()
        .map(|(n, s, b, d)| {
            (
                n.clone(),
                safetensors::tensor::TensorView::new(*d, s.clone(), b).unwrap(),
            )
        })
        .collect();
    std::fs::write(
        folder.join("model.safetensors"),
        safetensors::serialize(views, None).unwrap(),
    )
    .unwrap();
    let photo = repo().join("crates/graft-model/tests/golden/vision/coffee.png");
    let stderr = fails(&[
        "predict",
        "--model",
        folder.to_str().unwrap(),
        "--input",
        photo.to_str().unwrap(),
    ]);
    assert!(
        stderr.contains("_conv_stem.weight") && stderr.contains("[32, 1, 3, 3]"),
        "{stderr}"
    );
}

#[test]
fn image_paths_from_a_csv() {
    let tmp = tempfile::tempdir().unwrap();
    let model = lite0_folder(tmp.path());
    let mut csv = String::from("path,label\n");
    for class in ["bag", "trouser"] {
        for entry in std::fs::read_dir(mini_train().join(class)).unwrap().take(6) {
            let path = entry.unwrap().path();
            let file = path.file_name().unwrap().to_string_lossy().to_string();
            std::fs::copy(&path, tmp.path().join(&file)).unwrap();
            csv += &format!("{file},{class}\n");
        }
    }
    let table = write(tmp.path(), "images.csv", &csv);
    let run = tmp.path().join("run");
    let cfg = write(
        tmp.path(),
        "c.toml",
        &format!(
            r#"[model]
backbone = "{}"
image_size = 64

[data]
format = "csv"
train = "{}"
image_column = "path"
label_column = "label"
valid_fraction = 0.25

[train]
epochs = 2
batch_size = 4
backend = "flex"

[output]
dir = "{}"
"#,
            model.display(),
            table.display(),
            run.display()
        ),
    );
    ok(&["train", cfg.to_str().unwrap()]);
    assert_eq!(
        json(&run.join("labels.json")),
        serde_json::json!(["bag", "trouser"])
    );
}

#[test]
fn resnet_run_exports_in_torchvision_names() {
    let tmp = tempfile::tempdir().unwrap();
    // A ResNet-18 folder in torchvision's names and shapes (the values do not matter here).
    let reference: serde_json::Value = serde_json::from_str(
        &std::fs::read_to_string(repo().join("crates/graft-model/tests/golden/vision/resnet.json"))
            .unwrap(),
    )
    .unwrap();
    let torchvision: Vec<(String, Vec<usize>)> = reference["models"]["resnet18"]["tensors"]
        .as_array()
        .unwrap()
        .iter()
        .map(|t| {
            let shape = t["shape"]
                .as_array()
                .unwrap()
                .iter()
                .map(|d| d.as_u64().unwrap() as usize);
            (t["name"].as_str().unwrap().to_string(), shape.collect())
        })
        .collect();
    let data: Vec<(String, Vec<usize>, Vec<u8>)> = torchvision
        .iter()
        .map(|(name, shape)| {
            let n: usize = shape.iter().product();
            let value: f32 = if name.ends_with("running_var") || name.ends_with("bn1.weight") {
                1.0
            } else {
                0.01
            };
            (name.clone(), shape.clone(), value.to_le_bytes().repeat(n))
        })
        .collect();
    let views: Vec<(String, safetensors::tensor::TensorView)> = data
        .iter()
        .map(|(n, s, b)| {
            let view = safetensors::tensor::TensorView::new(safetensors::Dtype::F32, s.clone(), b)
                .unwrap();
            (n.clone(), view)
        })
        .collect();
    let model = tmp.path().join("resnet18");
    std::fs::create_dir_all(&model).unwrap();
    std::fs::write(
        model.join("model.safetensors"),
        safetensors::serialize(views, None).unwrap(),
    )
    .unwrap();
    write(
        &model,
        "config.json",
        r#"{"architecture": "resnet", "depth": 18, "num_classes": 10, "image_size": 64,
            "mean": [0.485, 0.456, 0.406], "std": [0.229, 0.224, 0.225]}"#,
    );
    let run = tmp.path().join("run");
    let cfg = write(
        tmp.path(),
        "r.toml",
        &vision_config(&model, &mini_train(), &run, "").replace("epochs = 3", "epochs = 1"),
    );
    ok(&["train", cfg.to_str().unwrap()]);
    let export = tmp.path().join("export");
    let stdout = ok(&[
        "export",
        "--model",
        run.to_str().unwrap(),
        "--out",
        export.to_str().unwrap(),
    ]);
    assert!(stdout.contains("torchvision"), "{stdout}");
    let exported = tensors(&export.join("model.safetensors"));
    let (counters, named): (Vec<_>, Vec<_>) = exported
        .into_iter()
        .partition(|t| t.0.ends_with("num_batches_tracked"));
    let mut got: Vec<(String, Vec<usize>)> = named.into_iter().map(|t| (t.0, t.1)).collect();
    let mut want = torchvision;
    got.sort();
    want.sort();
    assert_eq!(got, want, "the export is not torchvision's resnet18 layout");
    assert_eq!(counters.len(), 20, "one num_batches_tracked per BatchNorm");
}
