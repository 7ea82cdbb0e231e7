//! Token classification (named entities): every family's `...ForTokenClassification` tags
//! pre-split words and raw text as transformers does (goldens from
//! `scripts/golden/make_token_head_goldens.py`: token ids, each token's word, logits, and the
//! pipeline's entities with `aggregation_strategy="first"`), entity scores are seqeval's, and a
//! run trains on CoNLL and JSONL data, evaluates, predicts entities with character offsets and
//! exports a folder that opens as the family's token classifier. Bad data names file and line.

mod common;

use std::path::{Path, PathBuf};

use common::{fails, json, ok, write};
use graft_train::{EntityReport, Model};

fn golden() -> PathBuf {
    common::repo().join("crates/graft-model/tests/golden/token_heads")
}

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

fn strings(value: &serde_json::Value) -> Vec<String> {
    value
        .as_array()
        .unwrap()
        .iter()
        .map(|v| v.as_str().unwrap().to_string())
        .collect()
}

fn max_diff(a: &[Vec<f32>], b: &serde_json::Value) -> f64 {
    let b = b.as_array().unwrap();
    assert_eq!(a.len(), b.len());
    a.iter()
        .zip(b)
        .flat_map(|(x, y)| {
            let y = y.as_array().unwrap();
            assert_eq!(x.len(), y.len());
            x.iter()
                .zip(y)
                .map(|(x, y)| (*x as f64 - y.as_f64().unwrap()).abs())
        })
        .fold(0.0, f64::max)
}

/// `graft predict` on the flex backend, one JSON object per input.
fn predict(model: &Path, input: &Path) -> Vec<serde_json::Value> {
    ok(&[
        "predict",
        "--model",
        model.to_str().unwrap(),
        "--input",
        input.to_str().unwrap(),
        "--backend",
        "flex",
    ])
    .lines()
    .map(|l| serde_json::from_str(l).unwrap())
    .collect()
}

#[allow(deprecated)]
fn flex() -> burn::tensor::Device {
    burn::tensor::Device::flex()
}

/// A copy of a golden folder whose texts are truncated at `max_length` tokens (a
/// sentence-transformers `max_seq_length`, which graft reads as the default length).
fn truncating_copy(family: &str, max_length: u64, dir: &Path) -> PathBuf {
    let copy = dir.join(family);
    std::fs::create_dir_all(&copy).unwrap();
    for entry in std::fs::read_dir(golden().join(family)).unwrap() {
        let entry = entry.unwrap();
        std::fs::copy(entry.path(), copy.join(entry.file_name())).unwrap();
    }
    write(&copy, "modules.json", "[]");
    write(
        &copy,
        "sentence_bert_config.json",
        &format!("{{\"max_seq_length\": {max_length}}}"),
    );
    copy
}

#[test]
fn every_family_tags_split_words_as_transformers_does() {
    let tmp = tempfile::tempdir().unwrap();
    for family in FAMILIES {
        let golden_family = json(&golden().join(format!("{family}.json")));
        let max_length = golden_family["max_length"].as_u64().unwrap();
        let folder = truncating_copy(family, max_length, tmp.path());
        let model = Model::open(&folder, &flex()).unwrap();
        assert_eq!(
            model.task().unwrap().task,
            graft_train::Task::TokenClassification
        );
        let cases = golden_family["words"].as_array().unwrap();
        let sentences: Vec<Vec<String>> = cases.iter().map(|c| strings(&c["words"])).collect();
        // One sentence at a time, and all of them as one padded batch.
        for batch_size in [1, 4] {
            let outputs = model.token_logits(&sentences, batch_size).unwrap();
            for (case, out) in cases.iter().zip(&outputs) {
                let ids: Vec<u32> = case["input_ids"]
                    .as_array()
                    .unwrap()
                    .iter()
                    .map(|v| v.as_u64().unwrap() as u32)
                    .collect();
                assert_eq!(out.ids, ids, "{family}: {:?}", case["words"]);
                let word_ids: Vec<Option<u32>> = case["word_ids"]
                    .as_array()
                    .unwrap()
                    .iter()
                    .map(|v| v.as_u64().map(|w| w as u32))
                    .collect();
                assert_eq!(out.word_ids, word_ids, "{family}");
                let diff = max_diff(&out.logits, &case["logits"]);
                assert!(diff <= 1e-5, "{family} batch {batch_size}: {diff}");
            }
        }
    }
}

#[test]
fn every_family_finds_the_pipelines_entities_in_raw_text() {
    let tmp = tempfile::tempdir().unwrap();
    for family in FAMILIES {
        let golden_family = json(&golden().join(format!("{family}.json")));
        let cases = golden_family["raw"].as_array().unwrap();
        let texts: Vec<String> = cases
            .iter()
            .map(|c| c["text"].as_str().unwrap().to_string())
            .collect();
        let input = write(tmp.path(), "texts.txt", &(texts.join("\n") + "\n"));
        let predictions = predict(&golden().join(family), &input);
        assert_eq!(predictions.len(), cases.len());
        for (case, prediction) in cases.iter().zip(&predictions) {
            let expected = case["pipeline_first"].as_array().unwrap();
            let found = prediction["entities"].as_array().unwrap();
            assert_eq!(
                found.len(),
                expected.len(),
                "{family}: {found:?} {expected:?}"
            );
            for (f, e) in found.iter().zip(expected) {
                assert_eq!(f["entity_group"], e["entity_group"], "{family}");
                assert_eq!(f["start"], e["start"], "{family}");
                assert_eq!(f["end"], e["end"], "{family}");
                let text = case["text"].as_str().unwrap();
                let (start, end) = (
                    f["start"].as_u64().unwrap() as usize,
                    f["end"].as_u64().unwrap() as usize,
                );
                let slice: String = text.chars().skip(start).take(end - start).collect();
                assert_eq!(f["word"].as_str().unwrap(), slice, "{family}");
                let diff = (f["score"].as_f64().unwrap() - e["score"].as_f64().unwrap()).abs();
                assert!(diff <= 1e-5, "{family}: score {diff}");
            }
        }
    }
}

#[test]
fn entity_scores_are_seqevals() {
    let goldens = json(&golden().join("seqeval.json"));
    let cases = goldens["cases"].as_array().unwrap();
    assert!(cases.len() >= 8);
    for case in cases {
        let sentences = |key: &str| -> Vec<Vec<String>> {
            case[key].as_array().unwrap().iter().map(strings).collect()
        };
        let report = EntityReport::new(&sentences("y_true"), &sentences("y_pred"));
        let name = case["name"].as_str().unwrap_or("case");
        let close = |a: f64, b: &serde_json::Value, what: &str| {
            let b = b.as_f64().unwrap();
            assert!((a - b).abs() <= 1e-12, "{name} {what}: {a} against {b}");
        };
        close(report.precision, &case["precision"], "precision");
        close(report.recall, &case["recall"], "recall");
        close(report.f1, &case["f1"], "f1");
        close(report.accuracy, &case["accuracy"], "accuracy");
        let table = case["report"].as_object().unwrap();
        for scores in &report.per_entity {
            let expected = &table[&scores.entity];
            close(scores.precision, &expected["precision"], "entity precision");
            close(scores.recall, &expected["recall"], "entity recall");
            close(scores.f1, &expected["f1-score"], "entity f1");
            assert_eq!(
                scores.support as u64,
                expected["support"].as_u64().unwrap(),
                "{name}"
            );
        }
        let types = table.keys().filter(|k| !k.contains(" avg")).count();
        assert_eq!(report.per_entity.len(), types, "{name}");
    }
}

/// The first `n` sentences of a CoNLL file.
fn conll_head(source: &str, n: usize, dir: &Path, name: &str) -> PathBuf {
    let text = std::fs::read_to_string(common::repo().join(source)).unwrap();
    let sentences: Vec<&str> = text
        .split("\n\n")
        .filter(|s| !s.trim().is_empty())
        .collect();
    write(dir, name, &(sentences[..n].join("\n\n") + "\n"))
}

fn train_config(dir: &Path, name: &str, data: &str, head: &str, epochs: usize) -> PathBuf {
    let run = dir.join(name);
    write(
        dir,
        &format!("{name}.toml"),
        &format!(
            "[model]\nbackbone = \"{}\"\n\n[data]\n{data}\ntask = \"token_classification\"\n\n\
             [head]\n{head}\n\n[freeze]\nbackbone = false\n\n\
             [train]\nepochs = {epochs}\nbatch_size = 8\nlr = 5e-4\nbackend = \"flex\"\n\n\
             [output]\ndir = \"{}\"\n",
            golden().join("bert").display(),
            run.display()
        ),
    )
}

#[test]
fn a_conll_run_trains_evaluates_predicts_entities_and_exports_a_token_classifier() {
    let tmp = tempfile::tempdir().unwrap();
    let train = conll_head(
        "datasets/conll2003-sample/train.conll",
        40,
        tmp.path(),
        "train.conll",
    );
    let test = conll_head(
        "datasets/conll2003-sample/test.conll",
        12,
        tmp.path(),
        "test.conll",
    );
    let config = train_config(
        tmp.path(),
        "ner",
        &format!(
            "format = \"conll\"\ntrain = \"{}\"\ntest = \"{}\"",
            train.display(),
            test.display()
        ),
        "kind = \"linear\"",
        2,
    );
    ok(&["train", config.to_str().unwrap()]);
    let run = tmp.path().join("ner");
    let manifest = json(&run.join("graft.json"));
    assert_eq!(manifest["task"], "token_classification");
    let tags = strings(&manifest["labels"]);
    assert!(tags.contains(&"B-LOC".to_string()) && tags.contains(&"O".to_string()));
    let metrics = std::fs::read_to_string(run.join("metrics.jsonl")).unwrap();
    assert!(metrics.contains("\"valid_f1\""), "{metrics}");
    let test_report = json(&run.join("eval.json"));
    for key in ["precision", "recall", "f1", "accuracy"] {
        let value = test_report[key].as_f64().unwrap();
        assert!((0.0..=1.0).contains(&value), "{key}: {value}");
    }
    assert_eq!(test_report["sentences"], 12);

    // eval on the test file gives the run's own test report.
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
    assert_eq!(json(&report), test_report);

    // predict finds entities in raw text, with offsets into it.
    let input = write(
        tmp.path(),
        "raw.txt",
        "Japan beat Syria in Tokyo on Friday .\nNothing here\n",
    );
    let from_run = predict(&run, &input);
    assert_eq!(from_run.len(), 2);
    for entity in from_run[0]["entities"].as_array().unwrap() {
        let (start, end) = (
            entity["start"].as_u64().unwrap(),
            entity["end"].as_u64().unwrap(),
        );
        let text = "Japan beat Syria in Tokyo on Friday .";
        assert_eq!(entity["word"], text[start as usize..end as usize]);
    }

    // The export is transformers' BertForTokenClassification: no pooler, no problem_type, the
    // tags as id2label; opened again, it tags as the run does.
    let export = tmp.path().join("export");
    ok(&[
        "export",
        "--model",
        run.to_str().unwrap(),
        "--out",
        export.to_str().unwrap(),
    ]);
    let config = json(&export.join("config.json"));
    assert_eq!(config["architectures"][0], "BertForTokenClassification");
    assert!(config.get("problem_type").is_none(), "{config}");
    assert_eq!(config["id2label"]["0"], tags[0].as_str());
    let tensors = common::f32_tensors(&export.join("model.safetensors"));
    assert!(tensors.contains_key("classifier.weight"));
    assert!(tensors.contains_key("bert.embeddings.word_embeddings.weight"));
    assert!(!tensors.keys().any(|k| k.contains("pooler")));
    assert_eq!(predict(&export, &input), from_run);
    let sentences = vec![vec!["EU".to_string(), "rejects".into(), "German".into()]];
    let a = Model::open(&run, &flex())
        .unwrap()
        .token_logits(&sentences, 2)
        .unwrap();
    let b = Model::open(&export, &flex())
        .unwrap()
        .token_logits(&sentences, 2)
        .unwrap();
    assert_eq!(a[0].ids, b[0].ids);
    assert!(
        a[0].logits
            .iter()
            .flatten()
            .zip(b[0].logits.iter().flatten())
            .all(|(x, y)| (x - y).abs() <= 1e-5)
    );
    // ONNX export is refused with a reason, not a wrong graph.
    let stderr = fails(&[
        "export",
        "--model",
        run.to_str().unwrap(),
        "--out",
        tmp.path().join("onnx").to_str().unwrap(),
        "--format",
        "onnx",
    ]);
    assert!(stderr.contains("ForTokenClassification"), "{stderr}");
}

#[test]
fn a_jsonl_run_reads_token_and_tag_lists_and_labels_every_subword_on_request() {
    let tmp = tempfile::tempdir().unwrap();
    let source =
        std::fs::read_to_string(common::repo().join("datasets/wnut16-mini/train.jsonl")).unwrap();
    let lines: Vec<&str> = source.lines().collect();
    let train = write(tmp.path(), "train.jsonl", &(lines[..48].join("\n") + "\n"));
    let config = train_config(
        tmp.path(),
        "wnut",
        &format!(
            "format = \"jsonl\"\ntrain = \"{}\"\ntext_column = \"tokens\"\nlabel_column = \
             \"tags\"\nlabel_all_subwords = true",
            train.display()
        ),
        "kind = \"native\"",
        1,
    );
    let stdout = ok(&["train", config.to_str().unwrap()]);
    let run = tmp.path().join("wnut");
    let manifest = json(&run.join("graft.json"));
    assert_eq!(
        manifest["head"]["native"]["model"],
        "BertForTokenClassification"
    );
    assert!(
        json(&run.join("graft.json"))["labels"]
            .as_array()
            .unwrap()
            .iter()
            .any(|t| t == "B-facility")
    );
    drop(stdout);
}

/// datasets' CoNLL-2003 layout: `tokens` and `ner_tags`, the tags as class ids that the file's
/// metadata names (a Sequence of ClassLabel).
#[test]
fn a_parquet_run_names_tag_ids_from_the_class_label_metadata() {
    let tmp = tempfile::tempdir().unwrap();
    let parquet = common::repo().join("crates/graft-data/tests/data/parquet/ner_mini.parquet");
    let config = train_config(
        tmp.path(),
        "parquet",
        &format!(
            "format = \"parquet\"\ntrain = \"{}\"\ntext_column = \"tokens\"\nlabel_column = \
             \"ner_tags\"",
            parquet.display()
        ),
        "kind = \"linear\"",
        1,
    );
    ok(&["train", config.to_str().unwrap()]);
    let tags = strings(&json(&tmp.path().join("parquet/graft.json"))["labels"]);
    // The names present in the 40 sentences, sorted; no bare ids.
    assert!(tags.contains(&"B-PER".to_string()) && tags.contains(&"O".to_string()));
    assert!(tags.iter().all(|t| t.parse::<usize>().is_err()), "{tags:?}");
    let report = tmp.path().join("report.json");
    ok(&[
        "eval",
        "--model",
        tmp.path().join("parquet").to_str().unwrap(),
        "--data",
        parquet.to_str().unwrap(),
        "--output",
        report.to_str().unwrap(),
        "--backend",
        "flex",
    ]);
    assert_eq!(json(&report)["sentences"], 40);
}

/// LoRA adapters on a token classifier train, predict, and export merged (a PEFT adapter folder
/// is refused, saying so).
#[test]
fn a_lora_token_run_exports_merged() {
    let tmp = tempfile::tempdir().unwrap();
    let train = conll_head(
        "datasets/conll2003-sample/train.conll",
        24,
        tmp.path(),
        "train.conll",
    );
    let config = train_config(
        tmp.path(),
        "lora",
        &format!("format = \"conll\"\ntrain = \"{}\"", train.display()),
        "kind = \"native\"\n\n[lora]\nr = 4\nalpha = 16\ntarget_modules = [\"query\", \"value\"]",
        1,
    );
    ok(&["train", config.to_str().unwrap()]);
    let run = tmp.path().join("lora");
    let input = write(tmp.path(), "raw.txt", "Japan beat Syria in Tokyo .\n");
    let from_run = predict(&run, &input);
    let stderr = fails(&[
        "export",
        "--model",
        run.to_str().unwrap(),
        "--out",
        tmp.path().join("adapter").to_str().unwrap(),
    ]);
    assert!(stderr.contains("merged"), "{stderr}");
    let merged = tmp.path().join("merged");
    ok(&[
        "export",
        "--merge",
        "--model",
        run.to_str().unwrap(),
        "--out",
        merged.to_str().unwrap(),
    ]);
    assert_eq!(
        json(&merged.join("config.json"))["architectures"][0],
        "BertForTokenClassification"
    );
    assert_eq!(predict(&merged, &input), from_run);
}

#[test]
fn bad_token_data_names_the_file_and_line() {
    let tmp = tempfile::tempdir().unwrap();
    let run = |name: &str, data: &str| -> String {
        let config = train_config(tmp.path(), name, data, "kind = \"linear\"", 1);
        fails(&["train", config.to_str().unwrap()])
    };
    // Tokens and tags of different lengths.
    let jsonl = write(
        tmp.path(),
        "uneven.jsonl",
        "{\"tokens\": [\"EU\", \"rejects\"], \"tags\": [\"B-ORG\", \"O\"]}\n\
         {\"tokens\": [\"Peter\", \"Blackburn\"], \"tags\": [\"B-PER\"]}\n",
    );
    let stderr = run(
        "uneven",
        &format!(
            "format = \"jsonl\"\ntrain = \"{}\"\ntext_column = \"tokens\"\nlabel_column = \"tags\"",
            jsonl.display()
        ),
    );
    assert!(
        stderr.contains("uneven.jsonl:2") && stderr.contains("2 words and 1 tags"),
        "{stderr}"
    );
    // A test tag the training data does not have.
    let train = write(
        tmp.path(),
        "t.conll",
        "EU B-ORG\nrejects O\n\nPeter B-PER\nsaid O\n",
    );
    let test = write(tmp.path(), "u.conll", "EU B-ORG\n\nParis B-LOC\n");
    let stderr = run(
        "unknown",
        &format!(
            "format = \"conll\"\ntrain = \"{}\"\ntest = \"{}\"\nvalid = \"{}\"",
            train.display(),
            test.display(),
            train.display()
        ),
    );
    assert!(
        stderr.contains("u.conll:3") && stderr.contains("B-LOC"),
        "{stderr}"
    );
    // A CoNLL line with a missing field.
    let broken = write(tmp.path(), "b.conll", "EU NNP B-ORG\nrejects O\n");
    let stderr = run(
        "broken",
        &format!("format = \"conll\"\ntrain = \"{}\"", broken.display()),
    );
    assert!(stderr.contains("b.conll:2"), "{stderr}");
    // A CoNLL file under another task.
    let config = write(
        tmp.path(),
        "wrong.toml",
        &format!(
            "[model]\nbackbone = \"{}\"\n\n[data]\nformat = \"conll\"\ntrain = \"{}\"\n\n\
             [output]\ndir = \"{}\"\n",
            golden().join("bert").display(),
            train.display(),
            tmp.path().join("wrong").display()
        ),
    );
    let stderr = fails(&["train", config.to_str().unwrap()]);
    assert!(stderr.contains("token_classification"), "{stderr}");
}

#[test]
fn init_detects_tagged_words() {
    let tmp = tempfile::tempdir().unwrap();
    let model = golden().join("bert");
    for (train, format) in [
        ("datasets/conll2003-sample/train.conll", "conll"),
        ("datasets/wnut16-mini/train.jsonl", "jsonl"),
    ] {
        let out = tmp.path().join(format!("{format}.toml"));
        ok(&[
            "init",
            "--model",
            model.to_str().unwrap(),
            "--train",
            train,
            "--out",
            out.to_str().unwrap(),
        ]);
        let text = std::fs::read_to_string(&out).unwrap();
        assert!(text.contains("task = \"token_classification\""), "{text}");
        assert!(text.contains(&format!("format = \"{format}\"")), "{text}");
        assert!(text.contains("kind = \"native\""), "{text}");
        assert!(text.contains("backbone = false"), "{text}");
        if format == "jsonl" {
            assert!(text.contains("text_column = \"tokens\""), "{text}");
            assert!(text.contains("label_column = \"tags\""), "{text}");
        }
    }
}
