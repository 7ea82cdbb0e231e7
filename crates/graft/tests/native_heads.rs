//! The text families' own classification heads (`[head] kind = "native"`) through the `graft`
//! binary: a transformers `<Family>ForSequenceClassification` folder predicts what transformers
//! computes (goldens from `scripts/golden/make_native_head_goldens.py`), a native run exports as
//! that class with transformers' exact tensor names and shapes and predicts the same from the
//! export, and a LoRA run with a native head exports as a PEFT adapter that predicts the same.

mod common;

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

use common::{export_saying as export, fails, json, ok, write};

const FAMILIES: [&str; 10] = [
    "bert",
    "roberta",
    "xlm-roberta",
    "camembert",
    "electra",
    "distilbert",
    "mpnet",
    "modernbert",
    "deberta-v3",
    "deberta-v2",
];

fn golden() -> PathBuf {
    common::repo().join("crates/graft-model/tests/golden/native_heads")
}

/// The golden texts as a CSV with a `review` and a `label` column (labels in turn).
fn texts_csv(dir: &Path) -> (PathBuf, Vec<String>) {
    let golden = json(&golden().join("roberta.json"));
    let texts: Vec<String> = golden["cases"]
        .as_array()
        .unwrap()
        .iter()
        .map(|c| c["text"].as_str().unwrap().to_string())
        .collect();
    let path = dir.join("texts.csv");
    let mut writer = csv::Writer::from_path(&path).unwrap();
    writer.write_record(["review", "label"]).unwrap();
    let labels = ["negative", "neutral", "positive"];
    for round in 0..2 {
        for (i, text) in texts.iter().enumerate() {
            writer
                .write_record([text, labels[(i + round) % 3]])
                .unwrap();
        }
    }
    writer.flush().unwrap();
    (path, texts)
}

/// `graft predict` probabilities of every row, by label.
fn probabilities(model: &Path, input: &Path) -> Vec<BTreeMap<String, f64>> {
    probabilities_on(model, input, "flex")
}

fn probabilities_on(model: &Path, input: &Path, backend: &str) -> Vec<BTreeMap<String, f64>> {
    common::predict_reviews_on(model, input, backend)
        .into_iter()
        .map(|value| {
            value["probabilities"]
                .as_object()
                .unwrap()
                .iter()
                .map(|(label, p)| (label.clone(), p.as_f64().unwrap()))
                .collect()
        })
        .collect()
}

fn softmax(logits: &[f64]) -> Vec<f64> {
    let max = logits.iter().copied().fold(f64::MIN, f64::max);
    let exp: Vec<f64> = logits.iter().map(|l| (l - max).exp()).collect();
    let sum: f64 = exp.iter().sum();
    exp.iter().map(|e| e / sum).collect()
}

/// Names and shapes of a safetensors file's tensors.
fn shapes(path: &Path) -> BTreeMap<String, Vec<usize>> {
    let bytes = std::fs::read(path).unwrap();
    let file = safetensors::SafeTensors::deserialize(&bytes).unwrap();
    file.tensors()
        .into_iter()
        .map(|(name, view)| (name, view.shape().to_vec()))
        .collect()
}

fn max_diff(a: &[BTreeMap<String, f64>], b: &[BTreeMap<String, f64>]) -> f64 {
    assert_eq!(a.len(), b.len());
    a.iter()
        .zip(b)
        .flat_map(|(x, y)| x.iter().map(move |(label, p)| (p - y[label]).abs()))
        .fold(0.0, f64::max)
}

/// Within 1e-5 on the CPU backends; wgpu (software Vulkan in CI) within 1e-3 on one family.
#[test]
fn sequence_classifier_folders_predict_what_transformers_computes() {
    let tmp = tempfile::tempdir().unwrap();
    let (input, texts) = texts_csv(tmp.path());
    let cpu = FAMILIES
        .iter()
        .flat_map(|f| [(*f, "flex", 1e-5), (*f, "ndarray", 1e-5)]);
    let wgpu = std::env::var_os("GRAFT_SKIP_WGPU")
        .is_none()
        .then_some(("roberta", "wgpu", 1e-3));
    for (family, backend, tolerance) in cpu.chain(wgpu) {
        let golden_run = json(&golden().join(format!("{family}.json")));
        let labels: Vec<String> = golden_run["labels"]
            .as_array()
            .unwrap()
            .iter()
            .map(|l| l.as_str().unwrap().to_string())
            .collect();
        let predicted = probabilities_on(&golden().join(family), &input, backend);
        let mut worst = 0.0f64;
        for (i, case) in golden_run["cases"].as_array().unwrap().iter().enumerate() {
            assert_eq!(case["text"].as_str().unwrap(), texts[i]);
            let logits: Vec<f64> = case["logits"]
                .as_array()
                .unwrap()
                .iter()
                .map(|v| v.as_f64().unwrap())
                .collect();
            let expected = softmax(&logits);
            // Every row of the file repeats a golden text; each is predicted alike.
            for row in [i, i + texts.len()] {
                for (label, p) in labels.iter().zip(&expected) {
                    worst = worst.max((predicted[row][label] - p).abs());
                }
                // Log-probability differences are logit differences: compare those too.
                let log = |l: &str| predicted[row][l].ln();
                let found = log(&labels[2]) - log(&labels[0]);
                worst = worst.max((found - (logits[2] - logits[0])).abs());
            }
        }
        assert!(
            worst <= tolerance,
            "{family} on {backend}: max abs diff {worst}"
        );
        eprintln!("{family} {backend}: worst max abs diff {worst:e}");
    }
}

fn native_config(backbone: &Path, input: &Path, out: &Path, extra: &str) -> String {
    format!(
        r#"[model]
backbone = "{}"

[head]
kind = "native"
dropout = 0.1

[data]
format = "csv"
train = "{input}"
valid = "{input}"
text_column = "review"
label_column = "label"
{extra}
[train]
epochs = 2
batch_size = 4
lr = 1e-2
backend = "flex"

[output]
dir = "{}"
"#,
        backbone.display(),
        out.display(),
        input = input.display(),
    )
}

/// Every family trains its own head, exports as transformers' class with exactly the tensors
/// transformers saves for it, and the export predicts what the run predicts.
#[test]
fn native_runs_export_as_the_family_sequence_classifier() {
    let tmp = tempfile::tempdir().unwrap();
    let (input, _) = texts_csv(tmp.path());
    for family in FAMILIES {
        let folder = golden().join(family);
        let run = tmp.path().join(format!("{family}-run"));
        let cfg = write(
            tmp.path(),
            &format!("{family}.toml"),
            &native_config(&folder, &input, &run, ""),
        );
        let plan = ok(&["train", cfg.to_str().unwrap(), "--dry-run"]);
        ok(&["train", cfg.to_str().unwrap()]);
        let manifest = json(&run.join("graft.json"));
        let native = &manifest["head"]["native"];
        let model = json(&folder.join("config.json"))["architectures"][0].clone();
        assert_eq!(native["model"], model, "{family}");
        if family != "bert" {
            // The transform trains with the head, frozen backbone or not.
            assert!(plan.contains("head.transform.dense.weight"), "{plan}");
        }
        let out = tmp.path().join(format!("{family}-export"));
        let said = export(&run, &out);
        assert!(said.contains(model.as_str().unwrap()), "{said}");
        assert_eq!(
            shapes(&out.join("model.safetensors")),
            shapes(&folder.join("model.safetensors")),
            "{family}: the export's tensors are not transformers' own"
        );
        let config = json(&out.join("config.json"));
        assert_eq!(config["architectures"][0], model);
        assert_eq!(config["problem_type"], "single_label_classification");
        assert_eq!(config["id2label"]["2"], "positive");
        let from_run = probabilities(&run, &input);
        let from_export = probabilities(&out, &input);
        let diff = max_diff(&from_run, &from_export);
        assert!(
            diff <= 1e-6,
            "{family}: export differs from the run by {diff}"
        );
    }
}

/// A LoRA run with the family's head exports as a PEFT SEQ_CLS adapter that saves the whole head
/// (`modules_to_save`) and predicts what the run predicts.
#[test]
fn lora_runs_with_native_heads_export_as_peft_adapters() {
    let tmp = tempfile::tempdir().unwrap();
    let (input, _) = texts_csv(tmp.path());
    for (family, prefix, modules) in [
        ("roberta", "roberta.", vec!["classifier"]),
        (
            "distilbert",
            "distilbert.",
            vec!["pre_classifier", "classifier"],
        ),
        ("modernbert", "model.", vec!["head", "classifier"]),
        ("deberta-v3", "deberta.", vec!["pooler", "classifier"]),
    ] {
        let folder = golden().join(family);
        let run = tmp.path().join(format!("{family}-lora"));
        let cfg = write(
            tmp.path(),
            &format!("{family}-lora.toml"),
            &native_config(&folder, &input, &run, "\n[lora]\nr = 2\n"),
        );
        ok(&["train", cfg.to_str().unwrap()]);
        let adapter = tmp.path().join(format!("{family}-adapter"));
        let said = export(&run, &adapter);
        assert!(said.contains("PEFT"), "{said}");
        let config = json(&adapter.join("adapter_config.json"));
        assert_eq!(config["modules_to_save"], serde_json::json!(modules));
        let saved = shapes(&adapter.join("adapter_model.safetensors"));
        // The factors sit where PEFT puts them in the family's sequence classifier.
        let factors: Vec<&String> = saved.keys().filter(|k| k.contains(".lora_")).collect();
        assert!(!factors.is_empty());
        for name in factors {
            assert!(
                name.starts_with(&format!("base_model.model.{prefix}")),
                "{family}: {name}"
            );
        }
        for module in &modules {
            let prefix = format!("base_model.model.{module}.");
            assert!(
                saved.keys().any(|k| k.starts_with(&prefix)),
                "{family}: nothing saved under {prefix}: {saved:?}"
            );
        }
        let diff = max_diff(
            &probabilities(&run, &input),
            &probabilities(&adapter, &input),
        );
        assert!(
            diff <= 1e-5,
            "{family}: adapter differs from the run by {diff}"
        );
    }
}

#[test]
fn native_heads_refuse_what_they_cannot_be() {
    let tmp = tempfile::tempdir().unwrap();
    let (input, _) = texts_csv(tmp.path());
    let run = tmp.path().join("run");
    let folder = golden().join("roberta");
    let cfg = write(
        tmp.path(),
        "pooling.toml",
        &native_config(&folder, &input, &run, "")
            .replace("[model]\n", "[model]\npooling = \"mean\"\n"),
    );
    let stderr = fails(&["train", cfg.to_str().unwrap(), "--dry-run"]);
    assert!(stderr.contains("pooling cannot be set"), "{stderr}");
    // A base model folder has the family's head but no trained classifier to predict with.
    let base = common::repo().join("crates/graft-model/tests/golden/text_families/roberta");
    let stderr = fails(&[
        "predict",
        "--model",
        base.to_str().unwrap(),
        "--input",
        input.to_str().unwrap(),
        "--column",
        "review",
    ]);
    assert!(stderr.contains("no classifier of its own"), "{stderr}");
}

/// `problem_type` travels with the export: a multi-label native run's export predicts label sets
/// (sigmoid probabilities), as the run does.
#[test]
fn multi_label_native_runs_predict_label_sets_from_the_export() {
    let tmp = tempfile::tempdir().unwrap();
    let (_, texts) = texts_csv(tmp.path());
    let mut rows = String::from("review,tags\n");
    for (i, text) in texts.iter().enumerate() {
        let tags = ["sweet|salty", "salty", "sweet|bitter"][i % 3];
        rows.push_str(&format!("\"{}\",{tags}\n", text.replace('"', "\"\"")));
    }
    let data = write(tmp.path(), "tags.csv", &rows);
    let run = tmp.path().join("run");
    let cfg = write(
        tmp.path(),
        "ml.toml",
        &native_config(&golden().join("electra"), &data, &run, "").replace(
            "label_column = \"label\"",
            "label_column = \"tags\"\ntask = \"multi_label\"",
        ),
    );
    ok(&["train", cfg.to_str().unwrap()]);
    let out = tmp.path().join("export");
    export(&run, &out);
    assert_eq!(
        json(&out.join("config.json"))["problem_type"],
        "multi_label_classification"
    );
    let from_run = common::predict_reviews(&run, &data);
    let from_export = common::predict_reviews(&out, &data);
    for (a, b) in from_run.iter().zip(&from_export) {
        assert!(a["labels"].is_array(), "{a}");
        assert_eq!(a["labels"], b["labels"]);
        for (label, p) in a["probabilities"].as_object().unwrap() {
            let q = b["probabilities"][label].as_f64().unwrap();
            assert!(
                (p.as_f64().unwrap() - q).abs() <= 1e-6,
                "{label}: {p} vs {q}"
            );
        }
    }
}
