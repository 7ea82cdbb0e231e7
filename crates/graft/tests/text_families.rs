//! Every text family through the one pipeline, on the small folders of
//! `crates/graft-model/tests/golden/text_families`: freezing by blocks and patterns with gradual
//! unfreezing and layer decay, training, evaluation, prediction, cached features and `embed`.

mod common;

use std::path::{Path, PathBuf};

use common::{graft, json, ok, write};

const FAMILIES: [&str; 8] = [
    "roberta",
    "xlm-roberta",
    "electra",
    "distilbert",
    "mpnet",
    "modernbert",
    "deberta-v3",
    "deberta-v2",
];

fn folder(family: &str) -> PathBuf {
    common::repo()
        .join("crates/graft-model/tests/golden/text_families")
        .join(family)
}

/// Twelve short reviews with three labels.
fn reviews(dir: &Path) -> PathBuf {
    let mut text = String::from("review,label\n");
    let words = ["great coffee", "stale bread", "fine tea", "awful chips"];
    for i in 0..12 {
        let label = ["positive", "negative", "neutral"][i % 3];
        text.push_str(&format!("{} number {i},{label}\n", words[i % 4]));
    }
    write(dir, "reviews.csv", &text)
}

fn config(backbone: &Path, data: &Path, out: &Path, freeze: &str, train: &str) -> String {
    format!(
        r#"[model]
backbone = "{}"

[data]
format = "csv"
train = "{data}"
valid = "{data}"
text_column = "review"
label_column = "label"

[freeze]
{freeze}

[train]
epochs = 2
batch_size = 4
lr = 1e-2
backend = "flex"
{train}

[output]
dir = "{}"
"#,
        backbone.display(),
        out.display(),
        data = data.display(),
    )
}

#[test]
fn every_family_freezes_unfreezes_trains_evaluates_and_predicts() {
    let tmp = tempfile::tempdir().unwrap();
    let data = reviews(tmp.path());
    for family in FAMILIES {
        let run = tmp.path().join(format!("{family}-run"));
        let cfg = write(
            tmp.path(),
            &format!("{family}.toml"),
            &config(
                &folder(family),
                &data,
                &run,
                "layers = 2\npatterns = [\".*\\\\.bias\"]\nunfreeze = [{ epoch = 2, layers = \"all\" }]",
                "layer_decay = 0.5",
            ),
        );
        let plan = ok(&["train", cfg.to_str().unwrap(), "--dry-run"]);
        let lines: Vec<&str> = plan.lines().filter(|l| l.contains('[')).collect();
        // Block 0 (the embeddings) is frozen by `layers`, the biases by the pattern, and the
        // whole backbone thaws at epoch 2; what trains has its learning rate decayed by block.
        assert!(lines[0].contains("frozen"), "{family}: {}", lines[0]);
        for line in &lines {
            let name = line.split_whitespace().next().unwrap();
            if name.ends_with(".bias") && !name.starts_with("head.") {
                assert!(line.contains("frozen"), "{family}: {line}");
            }
        }
        assert!(lines[0].contains("trains from epoch 2"), "{family}: {plan}");
        let trainable_lrs: std::collections::BTreeSet<&str> = lines
            .iter()
            .filter(|l| l.contains("trainable") && !l.starts_with("head."))
            .filter_map(|l| l.split("lr ").nth(1)?.split_whitespace().next())
            .collect();
        assert!(!trainable_lrs.is_empty(), "{family}: {plan}");
        assert!(!trainable_lrs.contains("1.00e-2"), "{family}: {plan}");
        ok(&["train", cfg.to_str().unwrap()]);
        let manifest = json(&run.join("graft.json"));
        assert!(
            manifest["architecture"]
                .as_str()
                .unwrap()
                .contains("layers"),
            "{manifest}"
        );
        let report = ok(&[
            "eval",
            "--model",
            run.to_str().unwrap(),
            "--data",
            data.to_str().unwrap(),
        ]);
        assert!(report.contains("accuracy"), "{family}: {report}");
        let predictions = common::predict_reviews(&run, &data);
        assert_eq!(predictions.len(), 12, "{family}");
        assert!(predictions.iter().all(|p| p["label"].is_string()));
    }
}

#[test]
fn every_family_caches_features_and_embeds() {
    let tmp = tempfile::tempdir().unwrap();
    let data = reviews(tmp.path());
    let cache = tmp.path().join("cache");
    for family in FAMILIES {
        let said = |run: &str| {
            let cfg = write(
                tmp.path(),
                &format!("{family}-{run}.toml"),
                &config(
                    &folder(family),
                    &data,
                    &tmp.path().join(format!("{family}-{run}")),
                    "backbone = true",
                    &format!("cache_dir = \"{}\"", cache.display()),
                ),
            );
            let out = graft(&["train", cfg.to_str().unwrap()]);
            assert!(out.status.success(), "{family}");
            String::from_utf8_lossy(&out.stderr).to_string()
        };
        // The valid file is the train file: its features are read back.
        let first = said("first");
        assert!(
            first.contains("features: 12 computed, 12 read"),
            "{family}: {first}"
        );
        let again = said("again");
        assert!(
            again.contains("features: 0 computed, 24 read"),
            "{family}: {again}"
        );
        let embeddings = tmp.path().join(format!("{family}.safetensors"));
        ok(&[
            "embed",
            "--model",
            folder(family).to_str().unwrap(),
            "--input",
            data.to_str().unwrap(),
            "--column",
            "review",
            "--output",
            embeddings.to_str().unwrap(),
        ]);
        let bytes = std::fs::read(&embeddings).unwrap();
        let file = safetensors::SafeTensors::deserialize(&bytes).unwrap();
        assert_eq!(file.tensor("embeddings").unwrap().shape(), [12, 32]);
    }
}
