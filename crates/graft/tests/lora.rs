//! LoRA through the `graft` binary: the adapters `--dry-run` shows, exact resume, the PEFT adapter
//! and merged exports, and reading a PEFT adapter to predict or to continue training. The golden
//! adapter under `golden/lora` was exported by graft and loaded by PEFT once
//! (`scripts/golden/make_lora_goldens.py`); its `logits.json` holds PEFT's logits.

mod common;

use std::path::{Path, PathBuf};

use common::{FINE_FOODS_MINI, export, f32_tensors as tensors, fails, json, ok, write};

fn golden() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("tests/golden/lora")
}

fn lora_config(out_dir: &Path, epochs: usize, extra: &str) -> String {
    format!(
        r#"[model]
backbone = "models/all-MiniLM-L6-v2"
pooling = "cls"
pooler = true
normalize = false

{FINE_FOODS_MINI}
[lora]
r = 4
alpha = 8
target_modules = ["query", "value"]
dropout = 0.1
{extra}
[train]
epochs = {epochs}
batch_size = 8
lr = 2e-3
backend = "flex"

[output]
dir = "{}"
"#,
        out_dir.display()
    )
}

/// `graft export --merge` of `run` to `out`; what it said.
fn export_merged(run: &Path, out: &Path) -> String {
    ok(&[
        "export",
        "--merge",
        "--model",
        run.to_str().unwrap(),
        "--out",
        out.to_str().unwrap(),
    ])
}

fn max_diff(a: &[f32], b: &[f32]) -> f32 {
    assert_eq!(a.len(), b.len());
    a.iter()
        .zip(b)
        .map(|(x, y)| (x - y).abs())
        .fold(0.0, f32::max)
}

/// `graft predict` probabilities, in label order, for the `review` column of `input`.
fn probabilities(model: &Path, input: &Path, labels: &[&str]) -> Vec<Vec<f32>> {
    ok(&[
        "predict",
        "--model",
        model.to_str().unwrap(),
        "--input",
        input.to_str().unwrap(),
        "--column",
        "review",
    ])
    .lines()
    .map(|line| {
        let value: serde_json::Value = serde_json::from_str(line).unwrap();
        labels
            .iter()
            .map(|l| value["probabilities"][l].as_f64().unwrap() as f32)
            .collect()
    })
    .collect()
}

fn texts_csv(dir: &Path, texts: &[String]) -> PathBuf {
    let path = dir.join("texts.csv");
    let mut writer = csv::Writer::from_path(&path).unwrap();
    writer.write_record(["review"]).unwrap();
    for text in texts {
        writer.write_record([text]).unwrap();
    }
    writer.flush().unwrap();
    path
}

#[test]
fn peft_adapter_predicts_what_peft_computes() {
    let tmp = tempfile::tempdir().unwrap();
    let golden_logits = json(&golden().join("logits.json"));
    let texts: Vec<String> = golden_logits["texts"]
        .as_array()
        .unwrap()
        .iter()
        .map(|t| t.as_str().unwrap().to_string())
        .collect();
    let input = texts_csv(tmp.path(), &texts);
    let got = probabilities(&golden().join("adapter"), &input, &["great", "other"]);
    assert_eq!(got.len(), texts.len());
    // PEFT on the adapter, and transformers on graft's merged export of the same run.
    let expected = ["peft_logits", "merged_logits"]
        .iter()
        .flat_map(|key| golden_logits[key].as_array().unwrap().iter().enumerate());
    for (i, logits) in expected {
        let row = &got[i];
        let logits: Vec<f64> = logits
            .as_array()
            .unwrap()
            .iter()
            .map(|v| v.as_f64().unwrap())
            .collect();
        let top = logits.iter().cloned().fold(f64::MIN, f64::max);
        let sum: f64 = logits.iter().map(|l| (l - top).exp()).sum();
        let want: Vec<f32> = logits
            .iter()
            .map(|l| ((l - top).exp() / sum) as f32)
            .collect();
        let diff = max_diff(row, &want);
        assert!(diff <= 1e-5, "text {i}: graft {row:?}, Python {want:?}");
    }
}

#[test]
fn dry_run_shows_the_adapters_and_freeze_narrows_them() {
    let tmp = tempfile::tempdir().unwrap();
    let cfg = write(
        tmp.path(),
        "c.toml",
        &lora_config(&tmp.path().join("run"), 2, "\n[freeze]\nlayers = 3\n"),
    );
    let stdout = ok(&["train", cfg.to_str().unwrap(), "--dry-run"]);
    let line = |name: &str| {
        stdout
            .lines()
            .find(|l| l.starts_with(&format!("{name} ")))
            .unwrap_or_else(|| panic!("no line for {name} in:\n{stdout}"))
            .to_string()
    };
    // PEFT's names and layouts: lora_A [r, in], lora_B [out, r].
    let a = line("encoder.layer.4.attention.self.query.lora_A.weight");
    assert!(a.contains("[4, 384]") && a.contains("trainable"), "{a}");
    let b = line("encoder.layer.4.attention.self.value.lora_B.weight");
    assert!(b.contains("[384, 4]") && b.contains("trainable"), "{b}");
    // The base weights stay frozen; [freeze] layers = 3 (embeddings + layers 0-1) stops the
    // adapters of layers 0 and 1 too.
    assert!(line("encoder.layer.4.attention.self.query.weight").contains("frozen"));
    assert!(line("encoder.layer.1.attention.self.query.lora_A.weight").contains("frozen"));
    assert!(line("head.layers.0.weight").contains("trainable"));
    assert!(
        !stdout.contains("key.lora_A"),
        "only query and value are targeted"
    );
    // 4 layers x 2 modules x (4x384 + 384x4), plus the head's 384x2 + 2.
    assert!(
        stdout.contains(&format!("trainable parameters: {}", 4 * 2 * 3072 + 770)),
        "{stdout}"
    );

    // A target that matches nothing names the layers there are.
    let cfg = write(
        tmp.path(),
        "bad.toml",
        &lora_config(&tmp.path().join("run"), 2, "").replace(r#"["query", "value"]"#, r#"["qkv"]"#),
    );
    let stderr = fails(&["train", cfg.to_str().unwrap(), "--dry-run"]);
    assert!(
        stderr.contains("matches no linear layer") && stderr.contains("attention.self.query"),
        "{stderr}"
    );
    // A regular expression selects by full name.
    let cfg = write(
        tmp.path(),
        "regex.toml",
        &lora_config(&tmp.path().join("run"), 2, "").replace(
            r#"["query", "value"]"#,
            r#"['encoder\.layer\.5\..*\.dense']"#,
        ),
    );
    let stdout = ok(&["train", cfg.to_str().unwrap(), "--dry-run"]);
    let adapted: Vec<&str> = stdout
        .lines()
        .filter(|l| l.contains(".lora_A."))
        .map(|l| l.split_whitespace().next().unwrap())
        .collect();
    assert_eq!(
        adapted,
        [
            "encoder.layer.5.attention.output.dense.lora_A.weight",
            "encoder.layer.5.intermediate.dense.lora_A.weight",
            "encoder.layer.5.output.dense.lora_A.weight",
        ]
    );
    // Impossible values, and what PEFT's LoRA has and graft's does not, are refused, naming the
    // key.
    for (key, value) in [("dropout", "1.5"), ("bias", "\"all\""), ("r", "0")] {
        let cfg = write(
            tmp.path(),
            "unsupported.toml",
            &lora_config(&tmp.path().join("run"), 2, &format!("{key} = {value}\n"))
                .replace("r = 4\n", if key == "r" { "" } else { "r = 4\n" })
                .replace("dropout = 0.1\n", ""),
        );
        let stderr = fails(&["train", cfg.to_str().unwrap(), "--dry-run"]);
        assert!(stderr.contains(&format!("[lora] {key}")), "{stderr}");
    }
}

#[test]
fn lora_run_resumes_exactly_and_exports_as_adapter_and_merged() {
    let tmp = tempfile::tempdir().unwrap();
    let reference = tmp.path().join("reference");
    let cfg = write(tmp.path(), "a.toml", &lora_config(&reference, 2, ""));
    ok(&["train", cfg.to_str().unwrap()]);
    let manifest = json(&reference.join("graft.json"));
    assert_eq!(manifest["lora"]["r"], 4);
    assert_eq!(manifest["lora"]["modules"].as_array().unwrap().len(), 12);

    // One epoch, then resumed to two: the same adapters and metrics as the straight run.
    let run = tmp.path().join("resumed");
    let cfg = write(tmp.path(), "b.toml", &lora_config(&run, 1, ""));
    ok(&["train", cfg.to_str().unwrap()]);
    let cfg = write(tmp.path(), "b.toml", &lora_config(&run, 2, ""));
    ok(&["train", cfg.to_str().unwrap(), "--resume", "--force"]);
    assert_eq!(
        common::metrics_without_seconds(&reference),
        common::metrics_without_seconds(&run)
    );
    let (ra, rb) = (
        tensors(&reference.join("adapter_model.safetensors")),
        tensors(&run.join("adapter_model.safetensors")),
    );
    assert_eq!(ra.len(), 24);
    for (name, (_, values)) in &ra {
        assert_eq!(values, &rb[name].1, "{name}");
    }
    // Dropout on the adapters' input is seeded like every other: the resumed run above repeats it
    // exactly, and without it the same run ends elsewhere.
    let no_dropout = tmp.path().join("no-dropout");
    let cfg = write(
        tmp.path(),
        "c.toml",
        &lora_config(&no_dropout, 2, "").replace("dropout = 0.1", "dropout = 0.0"),
    );
    ok(&["train", cfg.to_str().unwrap()]);
    let other = tensors(&no_dropout.join("adapter_model.safetensors"));
    assert!(
        ra.iter()
            .any(|(name, (_, values))| values != &other[name].1)
    );
    // The adapters trained: B started at zero.
    let b = &ra["base_model.model.bert.encoder.layer.5.attention.self.value.lora_B.weight"];
    assert_eq!(b.0, [384, 4]);
    assert!(b.1.iter().any(|v| *v != 0.0));

    // The PEFT adapter folder predicts what the run predicts.
    let adapter = tmp.path().join("adapter");
    export(&reference, &adapter);
    let config = json(&adapter.join("adapter_config.json"));
    assert_eq!(config["peft_type"], "LORA");
    assert_eq!(config["task_type"], "SEQ_CLS");
    assert_eq!(config["r"], 4);
    assert_eq!(config["lora_alpha"], 8);
    assert_eq!(config["lora_dropout"], 0.1);
    assert_eq!(
        config["target_modules"],
        serde_json::json!(["query", "value"])
    );
    assert_eq!(config["modules_to_save"], serde_json::json!(["classifier"]));
    let base = PathBuf::from(config["base_model_name_or_path"].as_str().unwrap());
    assert!(base.join("config.json").is_file(), "{base:?}");
    let exported = tensors(&adapter.join("adapter_model.safetensors"));
    assert_eq!(exported["base_model.model.classifier.weight"].0, [2, 384]);
    let input = common::repo().join("datasets/fine-foods-mini/test.csv");
    let labels = ["great", "other"];
    let from_run = probabilities(&reference, &input, &labels);
    let from_adapter = probabilities(&adapter, &input, &labels);
    for (a, b) in from_run.iter().zip(&from_adapter) {
        assert!(max_diff(a, b) <= 1e-5, "run {a:?}, adapter {b:?}");
    }

    // The merged folder: W + (alpha / r)·B·A, in transformers' layout.
    let merged = tmp.path().join("merged");
    let said = export_merged(&reference, &merged);
    assert!(said.contains("BertForSequenceClassification"), "{said}");
    let weights = tensors(&merged.join("model.safetensors"));
    let base_weights = tensors(&common::repo().join("models/all-MiniLM-L6-v2/model.safetensors"));
    let name = "encoder.layer.2.attention.self.query";
    let (_, a) = &exported[&format!("base_model.model.bert.{name}.lora_A.weight")];
    let (_, b) = &exported[&format!("base_model.model.bert.{name}.lora_B.weight")];
    let (_, w) = &base_weights[&format!("{name}.weight")];
    let scale = 8.0 / 4.0;
    let expected: Vec<f32> = (0..384 * 384)
        .map(|i| {
            let (row, col) = (i / 384, i % 384);
            w[i] + scale
                * (0..4)
                    .map(|k| b[row * 4 + k] * a[k * 384 + col])
                    .sum::<f32>()
        })
        .collect();
    let (_, got) = &weights[&format!("bert.{name}.weight")];
    assert!(max_diff(got, &expected) <= 1e-6);
    assert!(max_diff(got, w) > 1e-4, "the merge changed nothing");
    assert!(!weights.keys().any(|k| k.contains("lora")));

    // --merge is for LoRA runs; an adapter needs the pooler head transformers' classifier has.
    let plain = tmp.path().join("plain");
    let cfg = write(
        tmp.path(),
        "plain.toml",
        &lora_config(&plain, 1, "").replace(
            "[lora]\nr = 4\nalpha = 8\ntarget_modules = [\"query\", \"value\"]\ndropout = 0.1\n",
            "",
        ),
    );
    ok(&["train", cfg.to_str().unwrap()]);
    let stderr = fails(&[
        "export",
        "--merge",
        "--model",
        plain.to_str().unwrap(),
        "--out",
        tmp.path().join("x").to_str().unwrap(),
    ]);
    assert!(stderr.contains("no LoRA adapters"), "{stderr}");
}

#[test]
fn training_continues_from_a_peft_adapter() {
    let tmp = tempfile::tempdir().unwrap();
    let run = tmp.path().join("run");
    let extra = format!("adapter = \"{}\"\n", golden().join("adapter").display());
    let cfg = write(
        tmp.path(),
        "c.toml",
        &lora_config(&run, 1, &extra)
            .replace("lr = 2e-3", "lr = 1e-12")
            .replace("pooling = \"cls\"\npooler = true\n", "pooling = \"mean\"\n"),
    );
    // The adapter's own rank and layers (query, value and attention.output.dense).
    let stdout = ok(&["train", cfg.to_str().unwrap(), "--dry-run"]);
    assert!(
        stdout.contains("encoder.layer.0.attention.output.dense.lora_A.weight"),
        "{stdout}"
    );
    ok(&["train", cfg.to_str().unwrap()]);
    let golden_tensors = tensors(&golden().join("adapter/adapter_model.safetensors"));
    let trained = tensors(&run.join("adapter_model.safetensors"));
    assert_eq!(trained.len(), 36);
    for (name, (shape, values)) in &trained {
        let (golden_shape, golden_values) = &golden_tensors[name];
        assert_eq!(shape, golden_shape, "{name}");
        assert!(max_diff(values, golden_values) <= 1e-6, "{name}");
    }
    // The head starts from the adapter's saved classifier (PEFT's modules_to_save).
    let model = tensors(&run.join("model.safetensors"));
    for part in ["weight", "bias"] {
        let saved = &golden_tensors[&format!("base_model.model.classifier.{part}")];
        let head = &model[&format!("head.layers.0.{part}")];
        assert_eq!(head.0, saved.0);
        assert!(max_diff(&head.1, &saved.1) <= 1e-6, "head {part}");
    }
    // A mean-pooled run has no transformers classifier to put an adapter on: merge it instead.
    let stderr = fails(&[
        "export",
        "--model",
        run.to_str().unwrap(),
        "--out",
        tmp.path().join("adapter").to_str().unwrap(),
    ]);
    assert!(stderr.contains("--merge"), "{stderr}");
    let said = export_merged(&run, &tmp.path().join("merged"));
    assert!(said.contains("sentence-transformers"), "{said}");
}

#[test]
fn other_text_families_train_with_lora_through_the_pipeline() {
    for (family, described, adapted) in [
        (
            "xlm-roberta",
            "xlm-roberta (2 layers)",
            "encoder.layer.1.attention.self.value.lora_B.weight",
        ),
        (
            "distilbert",
            "distilbert (2 layers)",
            "transformer.layer.1.attention.v_lin.lora_B.weight",
        ),
        (
            "electra",
            "electra (2 layers)",
            "encoder.layer.1.attention.self.value.lora_B.weight",
        ),
        (
            "mpnet",
            "mpnet (2 layers)",
            "encoder.layer.1.attention.attn.v.lora_B.weight",
        ),
        (
            "modernbert",
            "modernbert (4 layers)",
            "layers.3.attn.Wqkv.lora_B.weight",
        ),
        (
            "deberta-v3",
            "deberta-v2 (2 layers)",
            "encoder.layer.1.attention.self.value_proj.lora_B.weight",
        ),
    ] {
        let tmp = tempfile::tempdir().unwrap();
        let folder = common::repo()
            .join("crates/graft-model/tests/golden/text_families")
            .join(family);
        let said = ok(&["inspect", folder.to_str().unwrap()]);
        assert!(said.contains(described), "{said}");
        let run = tmp.path().join("run");
        let cfg = write(
            tmp.path(),
            "c.toml",
            &lora_config(&run, 2, "")
                .replace("models/all-MiniLM-L6-v2", folder.to_str().unwrap())
                .replace("pooling = \"cls\"\npooler = true\n", "pooling = \"mean\"\n")
                .replace(
                    "r = 4\nalpha = 8\ntarget_modules = [\"query\", \"value\"]\n",
                    "r = 2\n",
                ),
        );
        // The family's default targets: query and value in both layers (ModernBERT: the fused
        // Wqkv of its four).
        let stdout = ok(&["train", cfg.to_str().unwrap(), "--dry-run"]);
        assert_eq!(stdout.matches(".lora_A.weight").count(), 4, "{stdout}");
        assert!(stdout.contains(adapted), "{family}: {stdout}");
        ok(&["train", cfg.to_str().unwrap()]);
        assert_eq!(json(&run.join("graft.json"))["architecture"], described);
        let merged = tmp.path().join("merged");
        let said = export_merged(&run, &merged);
        assert!(said.contains("sentence-transformers"), "{said}");
        assert!(merged.join("tokenizer_config.json").is_file());
        assert!(merged.join("modules.json").is_file());
    }
}

/// A PEFT adapter made in Python for another family (`base_model.model.roberta.` keys, a
/// RoBERTa classification head graft does not use) continues training in graft.
#[test]
fn training_continues_from_a_peft_adapter_of_another_family() {
    let tmp = tempfile::tempdir().unwrap();
    let adapter = golden().join("roberta-adapter");
    let folder = common::repo().join("crates/graft-model/tests/golden/text_families/roberta");
    let run = tmp.path().join("run");
    let cfg = write(
        tmp.path(),
        "c.toml",
        &lora_config(&run, 1, &format!("adapter = \"{}\"\n", adapter.display()))
            .replace("models/all-MiniLM-L6-v2", folder.to_str().unwrap())
            .replace("pooling = \"cls\"\npooler = true\n", "pooling = \"mean\"\n")
            .replace("lr = 2e-3", "lr = 1e-12"),
    );
    let stdout = ok(&["train", cfg.to_str().unwrap(), "--dry-run"]);
    let a = stdout
        .lines()
        .find(|l| l.starts_with("encoder.layer.1.attention.self.query.lora_A.weight "))
        .unwrap_or_else(|| panic!("{stdout}"));
    assert!(a.contains("[2, 32]"), "the adapter's own rank: {a}");
    ok(&["train", cfg.to_str().unwrap()]);
    assert_eq!(json(&run.join("graft.json"))["lora"]["dropout"], 0.1);
    let python = tensors(&adapter.join("adapter_model.safetensors"));
    let trained = tensors(&run.join("adapter_model.safetensors"));
    assert_eq!(trained.len(), 8);
    for (name, (shape, values)) in &trained {
        let peft_name = name.replace("base_model.model.", "base_model.model.roberta.");
        let (python_shape, python_values) = &python[&peft_name];
        assert_eq!(shape, python_shape, "{name}");
        assert!(max_diff(values, python_values) <= 1e-6, "{name}");
    }
}

/// The Python-made RoBERTa adapter predicts through RoBERTa's own head (`classifier.dense`, tanh,
/// `classifier.out_proj`, all saved by `modules_to_save`) what PEFT computes, and a run with the
/// family's head continues from it with that saved head.
#[test]
fn a_peft_adapter_of_another_family_predicts_and_trains_through_its_own_head() {
    let tmp = tempfile::tempdir().unwrap();
    let adapter = golden().join("roberta-adapter");
    let rows = json(&adapter.join("probabilities.json"));
    let rows = rows.as_array().unwrap();
    let texts: Vec<String> = rows
        .iter()
        .map(|r| r["text"].as_str().unwrap().to_string())
        .collect();
    let input = texts_csv(tmp.path(), &texts);
    let got = probabilities(&adapter, &input, &["0", "1"]);
    for (row, want) in got.iter().zip(rows) {
        let want: Vec<f32> = want["probabilities"]
            .as_array()
            .unwrap()
            .iter()
            .map(|p| p.as_f64().unwrap() as f32)
            .collect();
        // PEFT's probabilities sit within 1e-3 of 1/2: compare closely.
        assert!(max_diff(row, &want) <= 1e-6, "graft {row:?}, PEFT {want:?}");
    }
    let folder = common::repo().join("crates/graft-model/tests/golden/text_families/roberta");
    let run = tmp.path().join("run");
    let cfg = write(
        tmp.path(),
        "c.toml",
        &lora_config(&run, 1, &format!("adapter = \"{}\"\n", adapter.display()))
            .replace("models/all-MiniLM-L6-v2", folder.to_str().unwrap())
            .replace(
                "pooling = \"cls\"\npooler = true\nnormalize = false\n",
                "\n[head]\nkind = \"native\"\n",
            ),
    );
    let out = common::graft(&["train", cfg.to_str().unwrap()]);
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(out.status.success(), "{stderr}");
    assert!(
        stderr.contains("the adapter's saved classifier"),
        "{stderr}"
    );
}
