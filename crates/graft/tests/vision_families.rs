//! Vision transformers, ConvNeXt and MobileNetV3 through the pipeline, on the small folders of
//! `crates/graft-model/tests/golden/{vit,convnext,mobilenet_v3}` (transformers, timm and
//! torchvision, random weights):
//! freezing by
//! blocks with gradual unfreezing and layer decay (position embeddings resampled inside training
//! where the run's size differs from the checkpoint's grid), training, prediction, and export in
//! the folder's library's names: exactly the tensors that library saves for the class, and
//! predictions from the export equal to the run's.

mod common;

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

use common::{export_saying, json, ok, repo, write};

/// Golden folder, the run's image size, and the class the export should name.
const FOLDERS: [(&str, usize, &str); 14] = [
    ("vit", 32, "ViTForImageClassification"),
    ("deit", 32, "DeiTForImageClassification"),
    ("dinov2", 48, "Dinov2ForImageClassification"),
    (
        "dinov2-reg",
        48,
        "Dinov2WithRegistersForImageClassification",
    ),
    ("timm-vit", 32, "vit_small_patch16_224"),
    // At another size than its folder's 32: the export tells timm to build it at 48.
    ("timm-vit-avg", 48, "vit_small_patch16_224"),
    ("timm-deit", 32, "deit_tiny_distilled_patch16_224"),
    ("timm-dinov2-reg", 32, "vit_small_patch14_reg4_dinov2"),
    ("convnext", 32, "ConvNextForImageClassification"),
    ("timm-convnext", 32, "convnext_atto"),
    ("timm-convnext-t", 32, "convnext_tiny"),
    ("timm-small", 32, "mobilenetv3_small_100"),
    ("timm-tf-small", 32, "tf_mobilenetv3_small_100"),
    ("tv-large", 32, "mobilenet_v3_large"),
];

fn golden(name: &str) -> PathBuf {
    let group = if name.contains("convnext") {
        "convnext"
    } else if name.ends_with("small") || name.ends_with("large") {
        "mobilenet_v3"
    } else {
        "vit"
    };
    repo()
        .join("crates/graft-model/tests/golden")
        .join(group)
        .join(name)
}

/// Three Fashion-MNIST classes of the bundled slice, as a CSV of paths and labels.
fn images(dir: &Path) -> PathBuf {
    let root = repo().join("datasets/fashion-mnist-mini/train");
    let mut rows = vec!["path,label".to_string()];
    for class in ["bag", "sandal", "trouser"] {
        let mut files: Vec<PathBuf> = std::fs::read_dir(root.join(class))
            .unwrap()
            .map(|e| e.unwrap().path())
            .collect();
        files.sort();
        for file in files.iter().take(6) {
            rows.push(format!("{},{class}", file.display()));
        }
    }
    write(dir, "images.csv", &(rows.join("\n") + "\n"))
}

fn shapes(path: &Path) -> BTreeMap<String, Vec<usize>> {
    let bytes = std::fs::read(path).unwrap();
    let file = safetensors::SafeTensors::deserialize(&bytes).unwrap();
    file.tensors()
        .into_iter()
        .map(|(name, view)| (name, view.shape().to_vec()))
        .collect()
}

/// `graft predict` on the `path` column, one JSON value per image.
fn predictions(model: &Path, input: &Path) -> Vec<serde_json::Value> {
    common::predict_column(model, input, "path", "auto")
}

fn probabilities(model: &Path, input: &Path) -> Vec<BTreeMap<String, f64>> {
    predictions(model, input)
        .into_iter()
        .map(|value| {
            value["probabilities"]
                .as_object()
                .unwrap()
                .iter()
                .map(|(k, v)| (k.clone(), v.as_f64().unwrap()))
                .collect()
        })
        .collect()
}

#[test]
fn vision_families_train_and_export_in_their_library_names() {
    let tmp = tempfile::tempdir().unwrap();
    let table = images(tmp.path());
    for (name, size, model) in FOLDERS {
        let run = tmp.path().join(format!("{name}-run"));
        let cfg = write(
            tmp.path(),
            &format!("{name}.toml"),
            &format!(
                r#"[model]
backbone = "{}"
image_size = {size}

[data]
format = "csv"
train = "{}"
valid = "{}"
image_column = "path"
label_column = "label"

[freeze]
layers = 1
unfreeze = [{{ epoch = 2, layers = "all" }}]

[train]
epochs = 2
batch_size = 6
lr = 1e-3
layer_decay = 0.7
backend = "flex"

[output]
dir = "{}"
"#,
                golden(name).display(),
                table.display(),
                table.display(),
                run.display()
            ),
        );
        let plan = ok(&["train", cfg.to_str().unwrap(), "--dry-run"]);
        let first = plan.lines().next().unwrap();
        assert!(first.contains("frozen"), "{name}: {plan}");
        assert!(first.contains("trains from epoch 2"), "{name}: {plan}");
        ok(&["train", cfg.to_str().unwrap()]);
        let out = tmp.path().join(format!("{name}-export"));
        let said = export_saying(&run, &out);
        assert!(said.contains(model), "{name}: {said}");
        assert_eq!(
            shapes(&out.join("model.safetensors")),
            shapes(&golden(name).join("model.safetensors")),
            "{name}: the export's tensors are not its library's own"
        );
        if !out.join("config.json").is_file() {
            // A torchvision export is a state dict and export.json, not a model folder.
            assert!(out.join("export.json").is_file(), "{name}");
            continue;
        }
        let from_run = probabilities(&run, &table);
        let from_export = probabilities(&out, &table);
        let diff = from_run
            .iter()
            .zip(&from_export)
            .flat_map(|(a, b)| a.iter().map(move |(k, p)| (p - b[k]).abs()))
            .fold(0.0, f64::max);
        assert!(
            diff <= 1e-5,
            "{name}: export differs from the run by {diff}"
        );
        if name.starts_with("timm") {
            let config = json(&out.join("config.json"));
            assert_eq!(config["architecture"], model);
            assert!(config["model_args"].is_object(), "{name}");
            if name.starts_with("timm-vit") {
                // timm builds the ViT at the run's size and resamples the position embeddings.
                assert_eq!(
                    config["model_args"]["img_size"],
                    serde_json::json!([size, size]),
                    "{name}"
                );
            }
            // At a size other than the folder's, the crop keeps the folder's share of the image
            // (timm's rule: resize to floor(size / crop_pct)), and the export says so.
            let folder = json(&golden(name).join("config.json"));
            let crop_pct = folder["pretrained_cfg"]["crop_pct"].as_f64().unwrap();
            let cfg = &config["pretrained_cfg"];
            assert_eq!(cfg["crop_pct"].as_f64(), Some(crop_pct), "{name}");
            assert_eq!(
                cfg["input_size"],
                serde_json::json!([3, size, size]),
                "{name}"
            );
            let manifest = json(&run.join("graft.json"));
            assert_eq!(
                manifest["resize_shorter"].as_f64(),
                Some((size as f64 / crop_pct).floor()),
                "{name}"
            );
        }
    }
}

#[test]
fn a_transformers_vit_folder_predicts_with_its_own_classifier() {
    let tmp = tempfile::tempdir().unwrap();
    let table = images(tmp.path());
    let predictions = predictions(&golden("vit"), &table);
    assert_eq!(predictions.len(), 18);
    for p in &predictions {
        let label = p["label"].as_str().unwrap();
        assert!(["cat", "dog", "fish"].contains(&label), "{p}");
    }
}

/// CLIP's image tower trains on its pooled output, `embed` writes the projected image embedding,
/// and a run has no export (transformers' CLIP classifier reads other features).
#[test]
fn clip_trains_embeds_its_projection_and_refuses_an_export() {
    let tmp = tempfile::tempdir().unwrap();
    let table = images(tmp.path());
    let folder = repo().join("crates/graft-model/tests/golden/vit/clip-full");
    let embeddings = tmp.path().join("clip.safetensors");
    ok(&[
        "embed",
        "--model",
        folder.to_str().unwrap(),
        "--input",
        table.to_str().unwrap(),
        "--column",
        "path",
        "--output",
        embeddings.to_str().unwrap(),
    ]);
    let bytes = std::fs::read(&embeddings).unwrap();
    let file = safetensors::SafeTensors::deserialize(&bytes).unwrap();
    assert_eq!(file.tensor("embeddings").unwrap().shape(), [18, 16]);
    let run = tmp.path().join("run");
    let cfg = write(
        tmp.path(),
        "clip.toml",
        &format!(
            "[model]\nbackbone = \"{}\"\nimage_size = 32\n\n[data]\nformat = \"csv\"\n\
             train = \"{t}\"\nvalid = \"{t}\"\nimage_column = \"path\"\nlabel_column = \"label\"\n\n\
             [train]\nepochs = 1\nbatch_size = 6\nbackend = \"flex\"\n\n[output]\ndir = \"{}\"\n",
            folder.display(),
            run.display(),
            t = table.display()
        ),
    );
    ok(&["train", cfg.to_str().unwrap()]);
    assert_eq!(json(&run.join("graft.json"))["head"]["input"], 32);
    let stderr = common::fails(&[
        "export",
        "--model",
        run.to_str().unwrap(),
        "--out",
        tmp.path().join("out").to_str().unwrap(),
    ]);
    assert!(stderr.contains("no export layout"), "{stderr}");
}
