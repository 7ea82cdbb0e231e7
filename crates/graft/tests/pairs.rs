//! Pairs of texts (cross-encoders): every family encodes a pair as its tokenizer's pair template
//! (`[CLS] a [SEP] b [SEP]` with token types 0 then 1, `<s> a </s></s> b </s>`), truncated longest
//! first, and its `...ForSequenceClassification` scores the pair as transformers does (goldens from
//! `scripts/golden/make_pair_goldens.py`). A run trains on a pair column, predicts and evaluates
//! pairs (STS regression reports Pearson and Spearman), exports as a transformers sequence
//! classifier and as ONNX, and mixing pairs with single texts is an error.

mod common;

use std::path::{Path, PathBuf};

use common::{fails, json, ok, write};

fn golden() -> PathBuf {
    common::repo().join("crates/graft-model/tests/golden/native_heads")
}

fn softmax(logits: &[f64]) -> Vec<f64> {
    let max = logits.iter().copied().fold(f64::MIN, f64::max);
    let exp: Vec<f64> = logits.iter().map(|l| (l - max).exp()).collect();
    let sum: f64 = exp.iter().sum();
    exp.iter().map(|e| e / sum).collect()
}

/// The golden pairs as a CSV with `sentence1`, `sentence2` (and a `label` column).
fn pairs_csv(dir: &Path, cases: &[serde_json::Value]) -> PathBuf {
    let path = dir.join("pairs.csv");
    let mut writer = csv::Writer::from_path(&path).unwrap();
    writer
        .write_record(["sentence1", "sentence2", "label"])
        .unwrap();
    for (i, case) in cases.iter().enumerate() {
        let labels = ["negative", "neutral", "positive"];
        writer
            .write_record([
                case["text"].as_str().unwrap(),
                case["pair"].as_str().unwrap(),
                labels[i % 3],
            ])
            .unwrap();
    }
    writer.flush().unwrap();
    path
}

#[test]
fn every_family_scores_a_pair_as_transformers_does() {
    let goldens = json(&golden().join("pairs.json"));
    let families = goldens["families"].as_object().unwrap();
    assert_eq!(families.len(), 10);
    let tmp = tempfile::tempdir().unwrap();
    for (family, golden_family) in families {
        let cases = golden_family["cases"].as_array().unwrap();
        let csv = pairs_csv(tmp.path(), cases);
        let model = golden().join(family);
        let out = ok(&[
            "predict",
            "--model",
            model.to_str().unwrap(),
            "--input",
            csv.to_str().unwrap(),
            "--column",
            "sentence1",
            "--pair-column",
            "sentence2",
            "--backend",
            "flex",
        ]);
        let labels: Vec<&str> = golden_family["labels"]
            .as_array()
            .unwrap()
            .iter()
            .map(|l| l.as_str().unwrap())
            .collect();
        let rows: Vec<serde_json::Value> = out
            .lines()
            .map(|l| serde_json::from_str(l).unwrap())
            .collect();
        assert_eq!(rows.len(), cases.len(), "{family}");
        for (row, case) in rows.iter().zip(cases) {
            let logits: Vec<f64> = case["logits"]
                .as_array()
                .unwrap()
                .iter()
                .map(|v| v.as_f64().unwrap())
                .collect();
            let expected = softmax(&logits);
            for (label, p) in labels.iter().zip(expected) {
                let got = row["probabilities"][label].as_f64().unwrap();
                assert!(
                    (got - p).abs() <= 1e-5,
                    "{family}: {:?} / {:?}: {label} {got} where transformers gives {p}",
                    case["text"],
                    case["pair"]
                );
            }
        }
    }
}

#[test]
fn pair_tokens_are_the_tokenizers_pair_template_truncated_longest_first() {
    let goldens = json(&golden().join("pairs.json"));
    for (family, golden_family) in goldens["families"].as_object().unwrap() {
        let tokenizer = graft_data::TextTokenizer::from_file(
            &golden().join(family).join("tokenizer.json"),
            64,
            usize::MAX,
        )
        .unwrap();
        let cases = golden_family["cases"].as_array().unwrap();
        let pairs: Vec<(&str, &str)> = cases
            .iter()
            .map(|c| (c["text"].as_str().unwrap(), c["pair"].as_str().unwrap()))
            .collect();
        let tokens = tokenizer.tokenize_pairs(&pairs).unwrap();
        for (tokens, case) in tokens.iter().zip(cases) {
            let ids: Vec<u32> = case["input_ids"]
                .as_array()
                .unwrap()
                .iter()
                .map(|v| v.as_u64().unwrap() as u32)
                .collect();
            assert_eq!(tokens.ids, ids, "{family}: {}", case["pair"]);
            let types: Vec<u32> = case["token_type_ids"]
                .as_array()
                .unwrap()
                .iter()
                .map(|v| v.as_u64().unwrap() as u32)
                .collect();
            assert_eq!(tokens.type_ids, types, "{family}: {}", case["pair"]);
        }
    }
}

/// The first `n` rows of a data set's file, as a CSV in `dir`.
fn head(dir: &Path, file: &str, n: usize, name: &str) -> PathBuf {
    let text = std::fs::read_to_string(common::repo().join(file)).unwrap();
    let mut reader = csv::Reader::from_reader(text.as_bytes());
    let path = dir.join(name);
    let mut writer = csv::Writer::from_path(&path).unwrap();
    writer.write_record(reader.headers().unwrap()).unwrap();
    for record in reader.records().take(n) {
        writer.write_record(&record.unwrap()).unwrap();
    }
    writer.flush().unwrap();
    path
}

/// A run of `data` (a `[data]` section without the format) on the small BERT folder.
fn train_run(dir: &Path, name: &str, data: &str, head: &str) -> PathBuf {
    let run = dir.join(name);
    let config = write(
        dir,
        &format!("{name}.toml"),
        &format!(
            "[model]\nbackbone = \"{}\"\n\n[data]\nformat = \"csv\"\n{data}\n\n[head]\n{head}\n\n\
             [train]\nepochs = 2\nbatch_size = 8\nlr = 1e-3\nbackend = \"flex\"\n\n\
             [output]\ndir = \"{}\"\n",
            golden().join("bert").display(),
            run.display()
        ),
    );
    ok(&["train", config.to_str().unwrap()]);
    run
}

#[test]
fn a_pair_run_trains_predicts_evaluates_and_exports_as_a_cross_encoder() {
    let tmp = tempfile::tempdir().unwrap();
    let train = head(tmp.path(), "datasets/snli-mini/train.csv", 48, "train.csv");
    let test = head(tmp.path(), "datasets/snli-mini/test.csv", 24, "test.csv");
    let run = train_run(
        tmp.path(),
        "nli",
        &format!(
            "train = \"{}\"\ntest = \"{}\"\ncolumns = [\"premise\", \"hypothesis\"]\n\
             label_column = \"label\"",
            train.display(),
            test.display()
        ),
        "kind = \"native\"",
    );
    let manifest = json(&run.join("graft.json"));
    assert_eq!(manifest["input_column"], "premise");
    assert_eq!(manifest["pair_column"], "hypothesis");

    // predict and eval read the run's two columns by default.
    let predict = |model: &Path, extra: &[&str]| -> Vec<serde_json::Value> {
        let mut args = vec![
            "predict",
            "--model",
            model.to_str().unwrap(),
            "--input",
            test.to_str().unwrap(),
            "--backend",
            "flex",
        ];
        args.extend_from_slice(extra);
        ok(&args)
            .lines()
            .map(|l| serde_json::from_str(l).unwrap())
            .collect()
    };
    let from_run = predict(&run, &[]);
    assert_eq!(from_run.len(), 24);
    let report = tmp.path().join("report.json");
    ok(&[
        "eval",
        "--model",
        run.to_str().unwrap(),
        "--data",
        test.to_str().unwrap(),
        "--output",
        report.to_str().unwrap(),
        "--backend",
        "flex",
    ]);
    let accuracy = json(&report)["accuracy"].as_f64().unwrap();
    assert!((0.0..=1.0).contains(&accuracy));

    // The transformers export is a cross-encoder folder: it scores the same pairs the same.
    let export = tmp.path().join("export");
    ok(&[
        "export",
        "--model",
        run.to_str().unwrap(),
        "--out",
        export.to_str().unwrap(),
    ]);
    let config = json(&export.join("config.json"));
    assert_eq!(config["architectures"][0], "BertForSequenceClassification");
    let from_export = predict(
        &export,
        &["--column", "premise", "--pair-column", "hypothesis"],
    );
    for (a, b) in from_run.iter().zip(&from_export) {
        assert_eq!(a["label"], b["label"]);
        for label in ["contradiction", "entailment", "neutral"] {
            let (p, q) = (
                a["probabilities"][label].as_f64().unwrap(),
                b["probabilities"][label].as_f64().unwrap(),
            );
            assert!(
                (p - q).abs() < 1e-5,
                "{label}: {p} from the run, {q} exported"
            );
        }
    }
    // And as ONNX, checked against the run as every ONNX export is.
    let said = ok(&[
        "export",
        "--model",
        run.to_str().unwrap(),
        "--out",
        tmp.path().join("onnx").to_str().unwrap(),
        "--format",
        "onnx",
    ]);
    assert!(said.contains("checked on inputs"), "{said}");

    // A pair run given single texts, and a single-text model given pairs, refuse.
    let lines = write(tmp.path(), "lines.txt", "A dog runs.\nA cat sleeps.\n");
    let stderr = fails(&[
        "predict",
        "--model",
        run.to_str().unwrap(),
        "--input",
        lines.to_str().unwrap(),
    ]);
    assert!(stderr.contains("pairs"), "{stderr}");
}

#[test]
fn an_sts_run_reports_pearson_and_spearman() {
    let tmp = tempfile::tempdir().unwrap();
    let train = head(tmp.path(), "datasets/stsb-mini/train.csv", 48, "train.csv");
    let test = head(tmp.path(), "datasets/stsb-mini/test.csv", 24, "test.csv");
    let run = train_run(
        tmp.path(),
        "sts",
        &format!(
            "train = \"{}\"\ntest = \"{}\"\ntext_column = \"sentence1\"\n\
             text_pair = \"sentence2\"\nlabel_column = \"score\"\ntask = \"regression\"",
            train.display(),
            test.display()
        ),
        "kind = \"native\"",
    );
    let report = json(&run.join("eval.json"));
    for key in ["pearson", "spearman"] {
        let value = report[key].as_f64().unwrap();
        assert!((-1.0..=1.0).contains(&value), "{key} = {value}");
    }
    let metrics = std::fs::read_to_string(run.join("metrics.jsonl")).unwrap();
    assert!(metrics.contains("valid_spearman"), "{metrics}");
}

#[test]
fn bad_pair_data_is_an_error_naming_the_file_line_and_column() {
    let tmp = tempfile::tempdir().unwrap();
    let minilm = common::repo().join("models/all-MiniLM-L6-v2");
    let config = |data: &str| {
        write(
            tmp.path(),
            "c.toml",
            &format!(
                "[model]\nbackbone = \"{}\"\n\n[data]\nformat = \"csv\"\n{data}\n\n[train]\n\
                 epochs = 1\nbackend = \"flex\"\n\n[output]\ndir = \"{}\"\n",
                minilm.display(),
                tmp.path().join("run").display()
            ),
        )
    };
    let csv = write(
        tmp.path(),
        "p.csv",
        "premise,hypothesis,label\nA dog runs.,An animal moves.,entailment\nA cat sleeps.,,neutral\n",
    );
    // The pair column is not in the file.
    let c = config(&format!(
        "train = \"{}\"\ntext_column = \"premise\"\ntext_pair = \"second\"",
        csv.display()
    ));
    let stderr = fails(&["train", c.to_str().unwrap()]);
    assert!(
        stderr.contains("p.csv") && stderr.contains("`second`") && stderr.contains("hypothesis"),
        "{stderr}"
    );
    // An empty second text names its line.
    let c = config(&format!(
        "train = \"{}\"\ncolumns = [\"premise\", \"hypothesis\"]",
        csv.display()
    ));
    let stderr = fails(&["train", c.to_str().unwrap()]);
    assert!(
        stderr.contains("p.csv") && stderr.contains("3") && stderr.contains("second text"),
        "{stderr}"
    );
    // columns with text_column, and a pair column that is the text column.
    let c = config(&format!(
        "train = \"{}\"\ntext_column = \"premise\"\ncolumns = [\"premise\", \"hypothesis\"]",
        csv.display()
    ));
    let stderr = fails(&["train", c.to_str().unwrap()]);
    assert!(stderr.contains("[data] columns"), "{stderr}");
    let c = config(&format!(
        "train = \"{}\"\ntext_column = \"premise\"\ntext_pair = \"premise\"",
        csv.display()
    ));
    let stderr = fails(&["train", c.to_str().unwrap()]);
    assert!(stderr.contains("[data] text_pair"), "{stderr}");
}

#[test]
fn init_detects_pair_columns_and_proposes_the_native_head() {
    let tmp = tempfile::tempdir().unwrap();
    let out = tmp.path().join("graft.toml");
    ok(&[
        "init",
        "--model",
        "models/all-MiniLM-L6-v2",
        "--train",
        "datasets/snli-mini/train.csv",
        "--out",
        out.to_str().unwrap(),
    ]);
    let text = std::fs::read_to_string(&out).unwrap();
    assert!(text.contains("text_column = \"premise\""), "{text}");
    assert!(text.contains("text_pair = \"hypothesis\""), "{text}");
    assert!(text.contains("label_column = \"label\""), "{text}");
    assert!(text.contains("kind = \"native\""), "{text}");
}
