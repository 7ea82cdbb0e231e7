//! What one pipeline for every backbone gives images that only text had (multi-label, standardized
//! regression, the on-disk feature cache, labels files in `--dry-run`), and the command-line
//! behaviour every command shares: usage errors, closed pipes, error wording, a quiet device probe.

mod common;

use std::path::{Path, PathBuf};
use std::process::Stdio;

use common::{command, fails, graft, json, lite0_folder, ok, repo, write};

const CLASSES: [&str; 10] = [
    "ankle-boot",
    "bag",
    "coat",
    "dress",
    "pullover",
    "sandal",
    "shirt",
    "sneaker",
    "t-shirt",
    "trouser",
];

/// A CSV of the Fashion-MNIST slice's training images with a multi-label `tags` column (the class
/// and its group) and a numeric `value` column (the class index).
fn image_table(dir: &Path) -> PathBuf {
    let root = repo().join("datasets/fashion-mnist-mini/train");
    let mut rows = vec!["path,tags,value".to_string()];
    for (index, class) in CLASSES.iter().enumerate() {
        let group = match *class {
            "ankle-boot" | "sandal" | "sneaker" => "shoe",
            "coat" | "pullover" | "shirt" | "t-shirt" | "dress" => "top",
            _ => "other",
        };
        let mut files: Vec<PathBuf> = std::fs::read_dir(root.join(class))
            .unwrap()
            .map(|e| e.unwrap().path())
            .collect();
        files.sort();
        for file in files {
            rows.push(format!("{},{class}|{group},{index}", file.display()));
        }
    }
    write(dir, "images.csv", &(rows.join("\n") + "\n"))
}

fn image_config(model: &Path, table: &Path, out: &Path, data: &str, extra: &str) -> String {
    format!(
        r#"[model]
backbone = "{}"
image_size = 64

[data]
format = "csv"
train = "{}"
image_column = "path"
valid_fraction = 0.2
{data}

[train]
epochs = 2
batch_size = 16
lr = 1e-2
backend = "flex"
{extra}

[output]
dir = "{}"
"#,
        model.display(),
        table.display(),
        out.display()
    )
}

#[test]
fn images_train_multi_label_and_standardized_regression() {
    let tmp = tempfile::tempdir().unwrap();
    let model = lite0_folder(tmp.path());
    let table = image_table(tmp.path());

    // Multi-label: train, eval and predict through the same path as text.
    let run = tmp.path().join("tags");
    let data = "task = \"multi_label\"\nlabel_column = \"tags\"\ntest = \"images.csv\"";
    let cfg = write(
        tmp.path(),
        "tags.toml",
        &image_config(
            &model,
            &table,
            &run,
            &data.replace("images.csv", table.to_str().unwrap()),
            "",
        ),
    );
    ok(&["train", cfg.to_str().unwrap()]);
    let report = json(&run.join("eval.json"));
    assert!(report["micro_f1"].as_f64().unwrap() > 0.3, "{report}");
    assert_eq!(report["per_label"].as_array().unwrap().len(), 13);
    let stdout = ok(&[
        "predict",
        "--model",
        run.to_str().unwrap(),
        "--input",
        table.to_str().unwrap(),
        "--column",
        "path",
    ]);
    let first: serde_json::Value = serde_json::from_str(stdout.lines().next().unwrap()).unwrap();
    assert!(first["labels"].is_array(), "{first}");
    assert_eq!(first["probabilities"].as_object().unwrap().len(), 13);

    // --dry-run reads the labels file: two more labels than the data has give a wider head.
    let mut labels: Vec<String> = CLASSES.iter().map(|c| c.to_string()).collect();
    labels.extend(["other", "shoe", "top", "extra-1", "extra-2"].map(String::from));
    let labels_file = write(tmp.path(), "labels.txt", &labels.join("\n"));
    let cfg = write(
        tmp.path(),
        "plan.toml",
        &image_config(
            &model,
            &table,
            &run,
            &format!(
                "task = \"multi_label\"\nlabel_column = \"tags\"\nlabels = \"{}\"",
                labels_file.display()
            ),
            "",
        ),
    );
    let plan = ok(&["train", cfg.to_str().unwrap(), "--dry-run"]);
    let head = plan
        .lines()
        .find(|l| l.starts_with("head.layers.0.weight"))
        .unwrap();
    assert!(head.contains("[15, 1280]"), "{head}");

    // Regression trains on standardized targets (mean 0, std 1) and predicts raw values.
    let first_loss = |standardize: bool| {
        let run = tmp.path().join(format!("value-{standardize}"));
        let data =
            format!("task = \"regression\"\nlabel_column = \"value\"\nstandardize = {standardize}");
        let cfg = write(
            tmp.path(),
            &format!("value-{standardize}.toml"),
            &image_config(&model, &table, &run, &data, "").replace("epochs = 2", "epochs = 10"),
        );
        ok(&["train", cfg.to_str().unwrap()]);
        let metrics = std::fs::read_to_string(run.join("metrics.jsonl")).unwrap();
        let epoch: serde_json::Value = metrics
            .lines()
            .map(|l| serde_json::from_str::<serde_json::Value>(l).unwrap())
            .find(|l| l["kind"] == "epoch")
            .unwrap();
        (run, epoch["train_loss"].as_f64().unwrap())
    };
    let (standardized_run, standardized) = first_loss(true);
    let (_, raw) = first_loss(false);
    // Targets 0..9 have variance ~8 and mean square ~28: standardized to variance 1, the first
    // epoch's loss is far below the raw targets' (both include the untrained head's own spread).
    assert!(
        raw > standardized + 15.0,
        "first-epoch losses: standardized {standardized}, raw {raw}"
    );
    let stdout = ok(&[
        "predict",
        "--model",
        standardized_run.to_str().unwrap(),
        "--input",
        table.to_str().unwrap(),
        "--column",
        "path",
    ]);
    let values: Vec<f64> = stdout
        .lines()
        .map(|l| {
            serde_json::from_str::<serde_json::Value>(l).unwrap()["value"]
                .as_f64()
                .unwrap()
        })
        .collect();
    let mean = values.iter().sum::<f64>() / values.len() as f64;
    assert!(
        (2.0..7.0).contains(&mean),
        "predictions are not on the raw scale: mean {mean}"
    );
}

#[test]
fn image_features_are_cached_on_disk() {
    let tmp = tempfile::tempdir().unwrap();
    let model = lite0_folder(tmp.path());
    let cache = tmp.path().join("cache");
    let run = tmp.path().join("run");
    let train = |mode: &str, size: usize| {
        let cfg = write(
            tmp.path(),
            "c.toml",
            &format!(
                r#"[model]
backbone = "{}"
image_size = {size}
[data]
format = "image_folder"
train = "datasets/fashion-mnist-mini/train"
test = "datasets/fashion-mnist-mini/test"
[train]
epochs = 1
backend = "flex"
cache = "{mode}"
cache_dir = "{}"
[output]
dir = "{}"
"#,
                model.display(),
                cache.display(),
                run.display()
            ),
        );
        // Each run replaces the one before it in the same folder.
        let out = graft(&["train", cfg.to_str().unwrap(), "--force"]);
        let stderr = String::from_utf8_lossy(&out.stderr).to_string();
        assert!(out.status.success(), "{stderr}");
        let line = stderr
            .lines()
            .find(|l| l.starts_with("features: "))
            .unwrap_or_else(|| panic!("no features line:\n{stderr}"))
            .to_string();
        (line, json(&run.join("eval.json"))["accuracy"].clone())
    };
    let (first, accuracy) = train("auto", 64);
    assert!(
        first.starts_with("features: 170 computed, 0 read"),
        "{first}"
    );
    let (second, again) = train("auto", 64);
    assert!(
        second.starts_with("features: 0 computed, 170 read"),
        "{second}"
    );
    assert_eq!(accuracy, again);
    // The preprocessing is part of the key: another input size computes every feature.
    let (resized, _) = train("auto", 72);
    assert!(
        resized.starts_with("features: 170 computed, 0 read"),
        "{resized}"
    );
    let (rebuilt, _) = train("rebuild", 64);
    assert!(rebuilt.starts_with("features: 170 computed"), "{rebuilt}");
}

#[test]
fn usage_errors_exit_2_and_bad_input_exits_1() {
    for args in [
        vec![
            "eval",
            "--model",
            "r",
            "--data",
            "d.csv",
            "--batch-size",
            "0",
        ],
        vec![
            "predict",
            "--model",
            "r",
            "--input",
            "i.txt",
            "--batch-size",
            "0",
        ],
        vec!["train", "c.toml", "--no-such-flag"],
    ] {
        let out = graft(&args);
        assert_eq!(out.status.code(), Some(2), "{args:?}");
    }
    let out = graft(&["train", "no-such-config.toml"]);
    assert_eq!(out.status.code(), Some(1));
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert_eq!(
        stderr.matches("No such file or directory").count(),
        1,
        "{stderr}"
    );
    assert!(stderr.contains("no-such-config.toml"), "{stderr}");
    let stderr = fails(&["predict", "--model", "/nonexistent", "--input", "x.txt"]);
    assert!(stderr.contains("/nonexistent: does not exist"), "{stderr}");
}

#[test]
fn a_closed_pipe_ends_quietly() {
    let mut child = command(&["inspect", "models/all-MiniLM-L6-v2"])
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    // Close the reading end before graft writes anything, as `| head -0` would.
    drop(child.stdout.take());
    let out = child.wait_with_output().unwrap();
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(out.status.success(), "{:?}: {stderr}", out.status);
    assert!(!stderr.contains("panicked"), "{stderr}");
}

#[test]
fn one_row_training_file_is_a_clear_error() {
    let tmp = tempfile::tempdir().unwrap();
    let data = write(tmp.path(), "one.csv", "review,score\nlovely tea,4.5\n");
    let cfg = write(
        tmp.path(),
        "one.toml",
        &format!(
            r#"[model]
backbone = "models/all-MiniLM-L6-v2"
[data]
format = "csv"
task = "regression"
train = "{}"
text_column = "review"
label_column = "score"
[output]
dir = "{}"
"#,
            data.display(),
            tmp.path().join("run").display()
        ),
    );
    let stderr = fails(&["train", cfg.to_str().unwrap()]);
    assert!(
        stderr.contains("one.csv") && stderr.contains("at least 2"),
        "{stderr}"
    );
}

/// A copy of the MiniLM folder with `config` patched.
fn minilm_with(dir: &Path, patch: impl Fn(&mut serde_json::Value)) -> PathBuf {
    let source = repo().join("models/all-MiniLM-L6-v2");
    let folder = dir.join("minilm");
    std::fs::create_dir_all(&folder).unwrap();
    for entry in std::fs::read_dir(&source).unwrap() {
        let path = entry.unwrap().path();
        std::os::unix::fs::symlink(&path, folder.join(path.file_name().unwrap())).unwrap();
    }
    let mut config = json(&source.join("config.json"));
    patch(&mut config);
    std::fs::remove_file(folder.join("config.json")).unwrap();
    std::fs::write(folder.join("config.json"), config.to_string()).unwrap();
    folder
}

fn norms(path: &Path) -> Vec<f32> {
    let bytes = std::fs::read(path).unwrap();
    let file = safetensors::SafeTensors::deserialize(&bytes).unwrap();
    let view = file.tensor("embeddings").unwrap();
    let width = view.shape()[1];
    let values: Vec<f32> = view
        .data()
        .chunks_exact(4)
        .map(|b| f32::from_le_bytes([b[0], b[1], b[2], b[3]]))
        .collect();
    values
        .chunks(width)
        .map(|row| row.iter().map(|v| v * v).sum::<f32>().sqrt())
        .collect()
}

#[test]
fn embed_normalization_can_be_turned_off_and_weights_are_checked_first() {
    let tmp = tempfile::tempdir().unwrap();
    let input = write(
        tmp.path(),
        "texts.txt",
        "Great tea.\nThe box arrived crushed.\n",
    );
    let embed = |model: &Path, extra: &[&str]| {
        let out = tmp.path().join("e.safetensors");
        let mut args = vec![
            "embed",
            "--model",
            model.to_str().unwrap(),
            "--input",
            input.to_str().unwrap(),
            "--output",
            out.to_str().unwrap(),
            "--backend",
            "flex",
        ];
        args.extend(extra);
        ok(&args);
        norms(&out)
    };
    let minilm = repo().join("models/all-MiniLM-L6-v2");
    for norm in embed(&minilm, &[]) {
        assert!((norm - 1.0).abs() < 1e-5, "normalized by default: {norm}");
    }
    for norm in embed(&minilm, &["--no-normalize"]) {
        assert!((norm - 1.0).abs() > 1e-2, "--no-normalize: {norm}");
    }

    // A config.json whose vocab_size disagrees with the weights is named, with the tensor.
    let folder = minilm_with(tmp.path(), |c| c["vocab_size"] = 1000.into());
    let stderr = fails(&[
        "embed",
        "--model",
        folder.to_str().unwrap(),
        "--input",
        input.to_str().unwrap(),
        "--output",
        tmp.path().join("x.safetensors").to_str().unwrap(),
    ]);
    assert!(
        stderr.contains("embeddings.word_embeddings.weight")
            && stderr.contains("[30522, 384]")
            && stderr.contains("[1000, 384]"),
        "{stderr}"
    );
    assert!(!stderr.contains("tokenizer"), "{stderr}");
}

#[test]
fn error_wording_and_a_quiet_device_probe() {
    let tmp = tempfile::tempdir().unwrap();
    // A PNG renamed to .csv.
    let fake = tmp.path().join("reviews.csv");
    std::fs::copy(
        repo().join("crates/graft-model/tests/golden/vision/chelsea.png"),
        &fake,
    )
    .unwrap();
    let stderr = fails(&[
        "embed",
        "--model",
        "models/all-MiniLM-L6-v2",
        "--input",
        fake.to_str().unwrap(),
        "--column",
        "review",
        "--output",
        tmp.path().join("e.safetensors").to_str().unwrap(),
    ]);
    assert!(stderr.contains("reviews.csv:1: not UTF-8 text"), "{stderr}");
    assert!(!stderr.contains("Utf8Error"), "{stderr}");

    // Without a desktop session, probing for a GPU prints no `error:` lines when nothing is wrong.
    let input = write(tmp.path(), "t.txt", "Great tea.\n");
    let out = command(&[
        "embed",
        "--model",
        "models/all-MiniLM-L6-v2",
        "--input",
        input.to_str().unwrap(),
        "--output",
        tmp.path().join("e.safetensors").to_str().unwrap(),
    ])
    .env_remove("XDG_RUNTIME_DIR")
    .output()
    .unwrap();
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(out.status.success(), "{stderr}");
    assert!(!stderr.lines().any(|l| l.starts_with("error:")), "{stderr}");

    // Text keys in an image config name the key and its line.
    let cfg = write(
        tmp.path(),
        "v.toml",
        "[model]\nbackbone = \"models/efficientnet-lite0\"\npooling = \"mean\"\n[data]\nformat = \"image_folder\"\ntrain = \"datasets/fashion-mnist-mini/train\"\n[output]\ndir = \"x\"\n",
    );
    let stderr = fails(&["train", cfg.to_str().unwrap(), "--dry-run"]);
    assert!(
        stderr.contains("v.toml: line 3: [model] pooling: is for text data"),
        "{stderr}"
    );
}

#[test]
fn image_size_is_checked_after_it_overrides_the_folder() {
    let tmp = tempfile::tempdir().unwrap();
    let model = lite0_folder(tmp.path());
    let cfg = write(
        tmp.path(),
        "s.toml",
        &format!(
            "[model]\nbackbone = \"{}\"\nimage_size = 16\n[data]\nformat = \"image_folder\"\ntrain = \"datasets/fashion-mnist-mini/train\"\n[output]\ndir = \"x\"\n",
            model.display()
        ),
    );
    let stderr = fails(&["train", cfg.to_str().unwrap(), "--dry-run"]);
    assert!(stderr.contains("image_size 16 is too small"), "{stderr}");
}
