//! The `graft` binary used the way a person uses it: train on the small fine-foods slice, then
//! eval, predict, embed, export and inspect, and the bad inputs that must fail cleanly.

use std::path::Path;

mod common;

use common::{FINE_FOODS_MINI, fails, json, ok, repo, write};

fn config(out_dir: &Path, extra_data: &str, train: &str) -> String {
    format!(
        r#"[model]
backbone = "models/all-MiniLM-L6-v2"
max_length = 128

{FINE_FOODS_MINI}{extra_data}

[train]
epochs = 3
batch_size = 8
eval_batch_size = 16
lr = 1e-2
backend = "flex"
{train}

[output]
dir = "{}"
"#,
        out_dir.display()
    )
}

#[test]
fn train_then_eval_predict_export_inspect() {
    let tmp = tempfile::tempdir().unwrap();
    let run = tmp.path().join("run");
    let cfg = write(
        tmp.path(),
        "c.toml",
        &config(&run, "valid_fraction = 0.25", ""),
    );
    let stdout = ok(&["train", cfg.to_str().unwrap()]);
    assert!(
        stdout.contains("accuracy") && stdout.contains("confusion matrix"),
        "{stdout}"
    );

    for file in [
        "graft.json",
        "config.toml",
        "labels.json",
        "model.safetensors",
        "metrics.jsonl",
        "eval.json",
        "tokenizer.json",
        "config.json",
    ] {
        assert!(run.join(file).is_file(), "run folder lacks {file}");
    }
    let metrics = std::fs::read_to_string(run.join("metrics.jsonl")).unwrap();
    let lines: Vec<serde_json::Value> = metrics
        .lines()
        .map(|l| serde_json::from_str(l).unwrap())
        .collect();
    let epochs: Vec<&serde_json::Value> = lines.iter().filter(|l| l["kind"] == "epoch").collect();
    assert_eq!(epochs.len(), 3);
    for key in [
        "epoch",
        "train_loss",
        "valid_loss",
        "valid_accuracy",
        "valid_macro_f1",
        "lr",
    ] {
        assert!(epochs[2].get(key).is_some(), "metrics.jsonl lacks {key}");
    }
    // One line per optimizer step (48 examples, 25% held out, batch 8), with its learning rate.
    let steps: Vec<&serde_json::Value> = lines.iter().filter(|l| l["kind"] == "step").collect();
    assert_eq!(steps.len(), 3 * 36usize.div_ceil(8));
    assert!(steps.iter().all(|s| s["lr"].as_f64() == Some(1e-2)));
    assert_eq!(
        json(&run.join("labels.json")),
        serde_json::json!(["great", "other"])
    );
    assert_eq!(json(&run.join("eval.json"))["n"], 16);

    // eval: the report on stdout and as JSON.
    let report_path = tmp.path().join("report.json");
    let stdout = ok(&[
        "eval",
        "--model",
        run.to_str().unwrap(),
        "--data",
        "datasets/fine-foods-mini/test.csv",
        "--output",
        report_path.to_str().unwrap(),
        "--backend",
        "flex",
    ]);
    assert!(stdout.contains("macro-F1"), "{stdout}");
    let report = json(&report_path);
    for key in [
        "accuracy",
        "macro_f1",
        "per_class",
        "confusion_matrix",
        "labels",
        "n",
    ] {
        assert!(report.get(key).is_some(), "report lacks {key}");
    }
    let cm: u64 = report["confusion_matrix"]
        .as_array()
        .unwrap()
        .iter()
        .flat_map(|r| r.as_array().unwrap())
        .map(|v| v.as_u64().unwrap())
        .sum();
    assert_eq!(cm, 16);
    // The same run evaluated twice gives the same numbers as at the end of training.
    assert_eq!(report["accuracy"], json(&run.join("eval.json"))["accuracy"]);

    // predict: one JSON line per text, in order, probabilities summing to 1.
    let texts = write(
        tmp.path(),
        "texts.txt",
        "Absolutely delicious, will buy again!\nStale, broken and tasteless. Avoid.\nok\n",
    );
    let stdout = ok(&[
        "predict",
        "--model",
        run.to_str().unwrap(),
        "--input",
        texts.to_str().unwrap(),
        "--backend",
        "flex",
    ]);
    let predictions: Vec<serde_json::Value> = stdout
        .lines()
        .map(|l| serde_json::from_str(l).unwrap())
        .collect();
    assert_eq!(predictions.len(), 3);
    for p in &predictions {
        let probs = p["probabilities"].as_object().unwrap();
        let total: f64 = probs.values().map(|v| v.as_f64().unwrap()).sum();
        assert!((total - 1.0).abs() < 1e-5);
        assert!(probs.contains_key(p["label"].as_str().unwrap()));
    }
    let preds_path = tmp.path().join("preds.jsonl");
    ok(&[
        "predict",
        "--model",
        run.to_str().unwrap(),
        "--input",
        "datasets/fine-foods-mini/test.csv",
        "--column",
        "review",
        "--output",
        preds_path.to_str().unwrap(),
        "--backend",
        "flex",
    ]);
    assert_eq!(
        std::fs::read_to_string(&preds_path)
            .unwrap()
            .lines()
            .count(),
        16
    );

    // export: mean pooling + linear head is a sentence-transformers folder.
    let export = tmp.path().join("export");
    ok(&[
        "export",
        "--model",
        run.to_str().unwrap(),
        "--out",
        export.to_str().unwrap(),
    ]);
    let modules = json(&export.join("modules.json"));
    let types: Vec<&str> = modules
        .as_array()
        .unwrap()
        .iter()
        .map(|m| m["type"].as_str().unwrap())
        .collect();
    assert_eq!(
        types,
        [
            "sentence_transformers.models.Transformer",
            "sentence_transformers.models.Pooling",
            "sentence_transformers.models.Normalize",
            "sentence_transformers.models.Dense"
        ]
    );
    let dense = json(&export.join("3_Dense/config.json"));
    assert_eq!(
        (
            dense["in_features"].as_u64(),
            dense["out_features"].as_u64()
        ),
        (Some(384), Some(2))
    );
    let bytes = std::fs::read(export.join("3_Dense/model.safetensors")).unwrap();
    let file = safetensors::SafeTensors::deserialize(&bytes).unwrap();
    assert_eq!(file.tensor("linear.weight").unwrap().shape(), [2, 384]);
    let backbone_names = |path: &Path| {
        let bytes = std::fs::read(path).unwrap();
        let mut names: Vec<String> = safetensors::SafeTensors::deserialize(&bytes)
            .unwrap()
            .names()
            .into_iter()
            .map(str::to_string)
            .collect();
        names.sort();
        names
    };
    // Every upstream tensor but the `position_ids` buffer, which transformers rebuilds.
    let mut upstream = backbone_names(&repo().join("models/all-MiniLM-L6-v2/model.safetensors"));
    upstream.retain(|n| n != "embeddings.position_ids");
    assert_eq!(backbone_names(&export.join("model.safetensors")), upstream);
    assert_eq!(
        json(&export.join("labels.json")),
        serde_json::json!(["great", "other"])
    );

    // inspect: a model folder and a bare file.
    let stdout = ok(&["inspect", "models/all-MiniLM-L6-v2"]);
    assert!(
        stdout.contains("104 tensors, 22713216 parameters"),
        "{stdout}"
    );
    assert!(stdout.contains("architecture: bert"), "{stdout}");
    let stdout = ok(&["inspect", run.join("model.safetensors").to_str().unwrap()]);
    assert!(
        stdout.contains("head.layers.0.weight") && stdout.contains("bert (6 layers)"),
        "{stdout}"
    );
}

#[test]
fn embed_matches_the_sentence_transformers_golden() {
    let golden: serde_json::Value = serde_json::from_str(
        &std::fs::read_to_string(
            repo().join("crates/graft-model/tests/golden/minilm_embeddings.json"),
        )
        .unwrap(),
    )
    .unwrap();
    let cases: Vec<&serde_json::Value> = golden["cases"]
        .as_array()
        .unwrap()
        .iter()
        .filter(|c| {
            let text = c["text"].as_str().unwrap();
            !text.contains('\n') && !text.trim().is_empty() && text.len() < 300
        })
        .take(4)
        .collect();
    let tmp = tempfile::tempdir().unwrap();
    let lines: Vec<&str> = cases.iter().map(|c| c["text"].as_str().unwrap()).collect();
    let input = write(tmp.path(), "in.txt", &lines.join("\n"));
    let out = tmp.path().join("e.safetensors");
    // Defaults come from the folder's sentence-transformers files: mean pooling, normalized.
    let stdout = ok(&[
        "embed",
        "--model",
        "models/all-MiniLM-L6-v2",
        "--input",
        input.to_str().unwrap(),
        "--output",
        out.to_str().unwrap(),
        "--backend",
        "flex",
    ]);
    assert!(stdout.contains("mean pooling, normalized"), "{stdout}");
    let bytes = std::fs::read(&out).unwrap();
    let file = safetensors::SafeTensors::deserialize(&bytes).unwrap();
    let tensor = file.tensor("embeddings").unwrap();
    assert_eq!(tensor.shape(), [cases.len(), 384]);
    let values: Vec<f32> = tensor
        .data()
        .chunks(4)
        .map(|b| f32::from_le_bytes(b.try_into().unwrap()))
        .collect();
    for (i, case) in cases.iter().enumerate() {
        let expected: Vec<f32> = case["mean_normalized"]
            .as_array()
            .unwrap()
            .iter()
            .map(|v| v.as_f64().unwrap() as f32)
            .collect();
        let diff = values[i * 384..(i + 1) * 384]
            .iter()
            .zip(&expected)
            .map(|(a, b)| (a - b).abs())
            .fold(0.0f32, f32::max);
        assert!(diff <= 1e-5, "text {i}: max abs diff {diff}");
    }
}

#[test]
fn bad_inputs_fail_with_clear_errors() {
    let tmp = tempfile::tempdir().unwrap();
    let run = tmp.path().join("run");

    // Unknown config key: named with its line.
    let text = config(&run, "", "").replace("lr = 1e-2", "lr = 1e-2\nlearning_rate = 3");
    let cfg = write(tmp.path(), "unknown.toml", &text);
    let err = fails(&["train", cfg.to_str().unwrap()]);
    assert!(
        err.contains("unknown field `learning_rate`")
            && err.contains("line 18")
            && err.contains("unknown.toml"),
        "{err}"
    );

    // Missing column.
    let cfg = write(
        tmp.path(),
        "col.toml",
        &config(&run, "", "").replace("text_column = \"review\"", "text_column = \"body\""),
    );
    let err = fails(&["train", cfg.to_str().unwrap()]);
    assert!(
        err.contains("train.csv")
            && err.contains("no column `body`")
            && err.contains("product, review, score"),
        "{err}"
    );

    // Empty data file.
    let empty = write(tmp.path(), "empty.csv", "product,review,score\n");
    let cfg = write(
        tmp.path(),
        "empty.toml",
        &config(&run, "", "").replace(
            "datasets/fine-foods-mini/train.csv",
            empty.to_str().unwrap(),
        ),
    );
    let err = fails(&["train", cfg.to_str().unwrap()]);
    assert!(err.contains("empty.csv: the file has no examples"), "{err}");

    // A test label never seen in training.
    let test = write(
        tmp.path(),
        "test.csv",
        "product,review,score\nx,tasty,great\ny,meh,awful\n",
    );
    let cfg = write(
        tmp.path(),
        "label.toml",
        &config(&run, "", "").replace("datasets/fine-foods-mini/test.csv", test.to_str().unwrap()),
    );
    let err = fails(&["train", cfg.to_str().unwrap()]);
    assert!(
        err.contains("test.csv:3: label `awful` is not one of the training labels (great, other)"),
        "{err}"
    );

    // A class with no examples (from a labels file).
    let labels = write(tmp.path(), "labels.txt", "great\nother\nneutral\n");
    let cfg = write(
        tmp.path(),
        "class.toml",
        &config(&run, &format!("labels = \"{}\"", labels.display()), ""),
    );
    let err = fails(&["train", cfg.to_str().unwrap()]);
    assert!(
        err.contains("class `neutral` has no examples in datasets/fine-foods-mini/train.csv"),
        "{err}"
    );

    // A model folder without tokenizer.json.
    let model = tmp.path().join("model");
    std::fs::create_dir(&model).unwrap();
    std::fs::copy(
        repo().join("models/all-MiniLM-L6-v2/config.json"),
        model.join("config.json"),
    )
    .unwrap();
    std::os::unix::fs::symlink(
        repo().join("models/all-MiniLM-L6-v2/model.safetensors"),
        model.join("model.safetensors"),
    )
    .unwrap();
    let cfg = write(
        tmp.path(),
        "tok.toml",
        &config(&run, "", "").replace("models/all-MiniLM-L6-v2", model.to_str().unwrap()),
    );
    let err = fails(&["train", cfg.to_str().unwrap()]);
    assert!(err.contains("tokenizer.json"), "{err}");

    // A missing model folder, a run folder that is not one.
    let err = fails(&[
        "predict",
        "--model",
        tmp.path().to_str().unwrap(),
        "--input",
        "README.md",
        "--backend",
        "flex",
    ]);
    assert!(err.contains("not a graft run folder"), "{err}");
    let err = fails(&["inspect", "no/such/model.safetensors"]);
    assert!(err.contains("no/such/model.safetensors"), "{err}");

    // A CSV input without --column.
    let err = fails(&[
        "embed",
        "--model",
        "models/all-MiniLM-L6-v2",
        "--input",
        "datasets/fine-foods-mini/test.csv",
        "--output",
        tmp.path().join("e.safetensors").to_str().unwrap(),
        "--backend",
        "flex",
    ]);
    assert!(err.contains("--column"), "{err}");
    assert!(!run.exists(), "a failed run must not leave a run folder");
}

/// JSONL data, a validation file and an MLP head, exported as two Dense modules.
#[test]
fn jsonl_valid_file_and_mlp_head() {
    let tmp = tempfile::tempdir().unwrap();
    let to_jsonl = |csv_path: &str, name: &str| {
        let mut reader = csv::Reader::from_path(repo().join(csv_path)).unwrap();
        let mut out = String::new();
        for record in reader.records() {
            let record = record.unwrap();
            out += &serde_json::json!({"text": &record[1], "label": &record[2]}).to_string();
            out.push('\n');
        }
        write(tmp.path(), name, &out)
    };
    let train = to_jsonl("datasets/fine-foods-mini/train.csv", "train.jsonl");
    let valid = to_jsonl("datasets/fine-foods-mini/test.csv", "valid.jsonl");
    let run = tmp.path().join("run");
    let text = config(&run, &format!("valid = \"{}\"", valid.display()), "")
        .replace("format = \"csv\"", "format = \"jsonl\"")
        .replace(
            "datasets/fine-foods-mini/train.csv",
            train.to_str().unwrap(),
        )
        .replace("test = \"datasets/fine-foods-mini/test.csv\"\n", "")
        .replace("text_column = \"review\"", "text_column = \"text\"")
        .replace("label_column = \"score\"", "label_column = \"label\"")
        .replace(
            "[train]",
            "[head]\nkind = \"mlp\"\nhidden = [32]\n\n[train]",
        );
    let cfg = write(tmp.path(), "c.toml", &text);
    ok(&["train", cfg.to_str().unwrap()]);
    let manifest = json(&run.join("graft.json"));
    assert_eq!(manifest["head"]["hidden"], serde_json::json!([32]));
    assert!(
        !run.join("eval.json").exists(),
        "no test file, no eval.json"
    );
    // The validation file was used as is: 48 train and 16 valid examples.
    let report = tmp.path().join("r.json");
    ok(&[
        "eval",
        "--model",
        run.to_str().unwrap(),
        "--data",
        valid.to_str().unwrap(),
        "--output",
        report.to_str().unwrap(),
        "--backend",
        "flex",
    ]);
    assert_eq!(json(&report)["n"], 16);

    let export = tmp.path().join("export");
    ok(&[
        "export",
        "--model",
        run.to_str().unwrap(),
        "--out",
        export.to_str().unwrap(),
    ]);
    let first = json(&export.join("3_Dense/config.json"));
    let second = json(&export.join("4_Dense/config.json"));
    assert_eq!(
        first["activation_function"],
        "torch.nn.modules.activation.ReLU"
    );
    assert_eq!(
        (
            first["in_features"].as_u64(),
            first["out_features"].as_u64()
        ),
        (Some(384), Some(32))
    );
    assert_eq!(
        second["activation_function"],
        "torch.nn.modules.linear.Identity"
    );
    assert_eq!(
        (
            second["in_features"].as_u64(),
            second["out_features"].as_u64()
        ),
        (Some(32), Some(2))
    );
}
