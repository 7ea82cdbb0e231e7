//! Embedding training (sentence-transformers' bi-encoders): all-MiniLM-L6-v2 tuned on SNLI
//! triplets with in-batch and hard negatives, and on scored STS-B pairs with CosineSimilarityLoss;
//! the run folder is a sentence-transformers model that `embed`, `eval`, `export` (the
//! sentence-transformers folder and ONNX) and a head's `[model] backbone` read as training left
//! it; SetFit's pairs made from classified texts; configs and data that do not fit are errors
//! naming the key or the line. The losses themselves are checked against sentence-transformers in
//! graft-train's unit tests, and the first optimizer steps by `scripts/check/first_steps.sh`.

mod common;

use std::path::{Path, PathBuf};

use common::{fails, json, ok, write};

/// The first `rows` rows of a CSV in the repository, written to `dir`.
fn head_of(dir: &Path, source: &str, rows: usize, name: &str) -> PathBuf {
    let text = std::fs::read_to_string(common::repo().join(source)).unwrap();
    let kept: Vec<&str> = text.lines().take(rows + 1).collect();
    write(dir, name, &(kept.join("\n") + "\n"))
}

fn config(dir: &Path, name: &str, data: &str, rest: &str) -> PathBuf {
    let out = dir.join(name);
    write(
        dir,
        &format!("{name}.toml"),
        &format!(
            r#"[model]
backbone = "models/all-MiniLM-L6-v2"
max_length = 64

[data]
format = "csv"
task = "embedding"
{data}

{rest}

[output]
dir = "{}"
"#,
            out.display()
        ),
    )
}

/// Trains `config`; what graft said on both streams.
fn train_saying(config: &Path) -> String {
    let out = common::graft(&["train", config.to_str().unwrap()]);
    let said =
        String::from_utf8_lossy(&out.stdout).to_string() + &String::from_utf8_lossy(&out.stderr);
    assert!(out.status.success(), "{said}");
    said
}

const TRAIN: &str = "[train]\nepochs = 1\nbatch_size = 8\nlr = 5e-5\nseed = 3";

/// `graft embed`'s rows of a file's column, read back from its safetensors output.
fn embed(model: &Path, input: &Path, column: &str, out: &Path) -> Vec<f32> {
    ok(&[
        "embed",
        "--model",
        model.to_str().unwrap(),
        "--input",
        input.to_str().unwrap(),
        "--column",
        column,
        "--output",
        out.to_str().unwrap(),
    ]);
    common::f32_tensors(out)
        .into_values()
        .next()
        .expect("an embeddings tensor")
        .1
}

fn max_diff(a: &[f32], b: &[f32]) -> f32 {
    assert_eq!(a.len(), b.len());
    a.iter()
        .zip(b)
        .map(|(x, y)| (x - y).abs())
        .fold(0.0, f32::max)
}

#[test]
fn triplets_tune_the_encoder_into_a_sentence_transformers_folder() {
    let tmp = tempfile::tempdir().unwrap();
    let dir = tmp.path();
    let train = head_of(dir, "datasets/snli-triplets/train.csv", 32, "train.csv");
    let test = head_of(dir, "datasets/snli-triplets/test.csv", 24, "test.csv");
    let data = format!(
        "train = \"{}\"\nvalid = \"{}\"\ntest = \"{}\"\ncolumns = [\"anchor\", \"positive\", \
         \"negative\"]",
        train.display(),
        test.display(),
        test.display()
    );
    let config = config(dir, "mnrl", &data, TRAIN);
    let said = ok(&["train", config.to_str().unwrap()]);
    let run = dir.join("mnrl");
    let manifest = json(&run.join("graft.json"));
    assert_eq!(manifest["task"], "embedding");
    assert_eq!(manifest["head"]["kind"], "none");
    assert_eq!(manifest["negative_column"], "negative");
    // Retrieval of each anchor's positive among every positive and negative, and triplets.
    let report = json(&run.join("eval.json"));
    assert_eq!(report["n"], 24);
    assert_eq!(report["corpus"], 48);
    for key in ["recall_at_1", "recall_at_10", "mrr_at_10", "ndcg_at_10"] {
        let value = report[key].as_f64().unwrap();
        assert!((0.0..=1.0).contains(&value), "{key} {value}");
    }
    assert!(
        report["triplet_accuracy"].as_f64().unwrap() > 0.5,
        "{report}"
    );
    assert!(said.contains("MRR@10"), "{said}");
    let epoch = common::metrics_without_seconds(&run)
        .into_iter()
        .find(|l| l.contains("\"kind\":\"epoch\""))
        .unwrap();
    assert!(epoch.contains("valid_mrr_at_10"), "{epoch}");

    // The run folder is a sentence-transformers folder: modules, and embeddings as trained
    // (mean pooling, normalized), which differ from the pretrained model's.
    let modules = json(&run.join("modules.json"));
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
            "sentence_transformers.models.Normalize"
        ]
    );
    let tuned = embed(&run, &test, "anchor", &dir.join("tuned.safetensors"));
    let pretrained = embed(
        &common::repo().join("models/all-MiniLM-L6-v2"),
        &test,
        "anchor",
        &dir.join("pretrained.safetensors"),
    );
    assert_eq!(tuned.len(), 24 * 384);
    assert!(
        max_diff(&tuned, &pretrained) > 1e-3,
        "training moved nothing"
    );
    let norm: f32 = tuned[..384].iter().map(|x| x * x).sum::<f32>().sqrt();
    assert!((norm - 1.0).abs() < 1e-5, "{norm}");

    // The export is the clean sentence-transformers folder; it embeds as the run does.
    let export = common::export(&run, &dir.join("export"));
    assert!(export.join("2_Normalize").is_dir());
    assert!(!export.join("labels.json").exists());
    let exported = embed(&export, &test, "anchor", &dir.join("exported.safetensors"));
    assert!(max_diff(&tuned, &exported) <= 1e-6);

    // ONNX gives the embeddings (checked by the export against graft's own on its inputs).
    let said = ok(&[
        "export",
        "--model",
        run.to_str().unwrap(),
        "--out",
        dir.join("onnx").to_str().unwrap(),
        "--format",
        "onnx",
    ]);
    assert!(said.contains("embeddings from token ids"), "{said}");
    let onnx_config = json(&dir.join("onnx/config.json"));
    assert!(onnx_config.get("problem_type").is_none(), "{onnx_config}");

    // `eval` scores a file as the run's test report did; `predict` has nothing to predict.
    let eval = ok(&[
        "eval",
        "--model",
        run.to_str().unwrap(),
        "--data",
        test.to_str().unwrap(),
        "--output",
        dir.join("eval.json").to_str().unwrap(),
    ]);
    assert!(eval.contains("triplet accuracy"), "{eval}");
    let again = json(&dir.join("eval.json"));
    for key in ["recall_at_1", "mrr_at_10", "triplet_accuracy"] {
        let (a, b) = (again[key].as_f64().unwrap(), report[key].as_f64().unwrap());
        assert!((a - b).abs() < 1e-9, "{key}: {a} against {b}");
    }
    let error = fails(&[
        "predict",
        "--model",
        run.to_str().unwrap(),
        "--input",
        test.to_str().unwrap(),
        "--column",
        "anchor",
    ]);
    assert!(error.contains("embedding model"), "{error}");
}

#[test]
fn scored_pairs_train_with_cosine_similarity_and_report_spearman() {
    let tmp = tempfile::tempdir().unwrap();
    let dir = tmp.path();
    // stsb-mini is written with Windows line ends: lines must still be named right.
    let train = head_of(dir, "datasets/stsb-mini/train.csv", 24, "train.csv");
    let test = head_of(dir, "datasets/stsb-mini/test.csv", 24, "test.csv");
    let data = |scale: &str| {
        format!(
            "train = \"{}\"\ntest = \"{}\"\ncolumns = [\"sentence1\", \"sentence2\"]\n\
             label_column = \"score\"\n{scale}",
            train.display(),
            test.display()
        )
    };
    let rest = format!("[loss]\nkind = \"cosine_similarity\"\n\n{TRAIN}");
    let unscaled = config(dir, "unscaled", &data(""), &rest);
    let error = fails(&["train", unscaled.to_str().unwrap()]);
    assert!(
        error.contains("train.csv: line 2: score 5 is outside [-1, 1]")
            && error.contains("score_scale"),
        "{error}"
    );
    let config = config(dir, "sts", &data("score_scale = 0.2"), &rest);
    ok(&["train", config.to_str().unwrap()]);
    let report = json(&dir.join("sts/eval.json"));
    let spearman = report["spearman_cosine"].as_f64().unwrap();
    assert!(spearman > 0.3, "{report}");
    assert!(report.get("recall_at_1").is_none(), "{report}");
    let manifest = json(&dir.join("sts/graft.json"));
    assert_eq!(manifest["labels"], serde_json::json!(["score"]));
}

/// SetFit's two steps: the body tuned on pairs drawn from classified reviews, then a head trained
/// on the body's embeddings, with the body's run folder as its backbone.
#[test]
fn setfit_pairs_tune_a_body_that_a_head_then_trains_on() {
    let tmp = tempfile::tempdir().unwrap();
    let dir = tmp.path();
    let data = "train = \"datasets/fine-foods-mini/train.csv\"\n\
                valid = \"datasets/fine-foods-mini/test.csv\"\n\
                text_column = \"review\"\nlabel_column = \"score\"\ncontrastive_pairs = 1";
    let body = config(
        dir,
        "body",
        data,
        "[train]\nepochs = 1\nbatch_size = 32\nlr = 2e-5",
    );
    let said = train_saying(&body);
    // One round: a same-class and an other-class pair per review.
    assert!(said.contains("data: 96 train, 32 valid"), "{said}");
    let manifest = json(&dir.join("body/graft.json"));
    assert_eq!(manifest["task"], "embedding");
    let head = write(
        dir,
        "head.toml",
        &format!(
            "[model]\nbackbone = \"{}\"\n\n{}\n[train]\nepochs = 20\nlr = 1e-2\n\n[output]\n\
             dir = \"{}\"\n",
            dir.join("body").display(),
            common::FINE_FOODS_MINI,
            dir.join("head").display()
        ),
    );
    let said = train_saying(&head);
    assert!(said.contains("backbone frozen"), "{said}");
    let report = json(&dir.join("head/eval.json"));
    assert!(report["accuracy"].as_f64().unwrap() > 0.5, "{report}");
}

#[test]
fn embedding_configs_and_data_that_do_not_fit_are_refused_by_name() {
    let tmp = tempfile::tempdir().unwrap();
    let dir = tmp.path();
    let triplets = "train = \"datasets/snli-triplets/test.csv\"";
    let cases: &[(&str, &str, &str)] = &[
        (
            "columns = [\"anchor\", \"positive\"]",
            "[loss]\nkind = \"triplet\"",
            "triplet needs each anchor's negative",
        ),
        (
            "columns = [\"anchor\", \"positive\", \"negative\"]",
            "[loss]\nkind = \"cosine_similarity\"",
            "cosine_similarity scores pairs of texts",
        ),
        (
            "columns = [\"anchor\", \"positive\"]",
            "[head]\nkind = \"mlp\"\nhidden = [8]",
            "grafts no head",
        ),
        (
            "text_column = \"anchor\"",
            "",
            "[data] columns: embedding training reads pairs",
        ),
        (
            "columns = [\"anchor\", \"positive\"]\ncontrastive_pairs = 4",
            "",
            "already has a second text column",
        ),
        (
            "columns = [\"anchor\", \"positive\", \"missing\"]",
            "",
            "missing",
        ),
        (
            "columns = [\"anchor\", \"positive\"]\nscore_scale = 0",
            "",
            "score_scale: must be a positive number",
        ),
    ];
    for (i, (data, rest, expected)) in cases.iter().enumerate() {
        let config = config(
            dir,
            &format!("case{i}"),
            &format!("{triplets}\n{data}"),
            rest,
        );
        let error = fails(&["train", config.to_str().unwrap()]);
        assert!(error.contains(expected), "case {i}: {error}");
    }
    // Keys of embedding training in another task.
    let classification = write(
        dir,
        "classify.toml",
        &format!(
            "[model]\nbackbone = \"models/all-MiniLM-L6-v2\"\n\n{}negative_column = \"x\"\n\n\
             [output]\ndir = \"{}\"\n",
            common::FINE_FOODS_MINI,
            dir.join("classify").display()
        ),
    );
    let error = fails(&["train", classification.to_str().unwrap()]);
    assert!(
        error.contains("negative_column: is for embedding training"),
        "{error}"
    );
    // An empty negative names its line.
    let bad = write(
        dir,
        "bad.csv",
        "anchor,positive,negative\na b,c d,e f\ng h,i j,\n",
    );
    let config = config(
        dir,
        "empty",
        &format!(
            "train = \"{}\"\nvalid = \"{}\"\ncolumns = [\"anchor\", \"positive\", \"negative\"]",
            bad.display(),
            bad.display()
        ),
        TRAIN,
    );
    let error = fails(&["train", config.to_str().unwrap()]);
    assert!(
        error.contains("bad.csv:3") && error.contains("empty"),
        "{error}"
    );
}
