//! The frozen-feature cache: a second run reuses every feature (no backbone forward), and changing
//! the data or max_length computes them again; a stale entry is never used.

use std::path::{Path, PathBuf};

use graft_train::config::CacheMode;
use graft_train::{Config, Silent, TrainOptions};

fn repo() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../..")
}

fn config(train: &Path, max_length: usize, cache: &Path, out: &Path) -> Config {
    let text = format!(
        r#"[model]
backbone = "{repo}/models/all-MiniLM-L6-v2"
max_length = {max_length}
[data]
format = "csv"
train = "{train}"
test = "{repo}/datasets/fine-foods-mini/test.csv"
text_column = "review"
label_column = "score"
valid_fraction = 0.25
[head]
dropout = 0.0
[train]
epochs = 2
backend = "flex"
cache_dir = "{cache}"
[output]
dir = "{out}"
"#,
        repo = repo().display(),
        train = train.display(),
        cache = cache.display(),
        out = out.display(),
    );
    Config::parse(&text, Path::new("test.toml")).unwrap()
}

/// Each run replaces the one before it in the same output folder.
fn replacing() -> TrainOptions {
    TrainOptions {
        replace: true,
        ..TrainOptions::default()
    }
}

#[test]
fn second_run_reuses_and_changes_recompute() {
    let tmp = tempfile::tempdir().unwrap();
    let cache = tmp.path().join("cache");
    let out = tmp.path().join("run");
    let train = repo().join("datasets/fine-foods-mini/train.csv");
    let all = 48 + 16; // train + valid, and the test file

    let first =
        graft_train::train(&config(&train, 64, &cache, &out), &replacing(), &Silent).unwrap();
    assert_eq!((first.cache.computed, first.cache.reused), (all, 0));

    // Same backbone, settings and texts: nothing is computed, and the results are identical.
    let second =
        graft_train::train(&config(&train, 64, &cache, &out), &replacing(), &Silent).unwrap();
    assert_eq!((second.cache.computed, second.cache.reused), (0, all));
    assert_eq!(first.test.as_ref().unwrap(), second.test.as_ref().unwrap());

    // A different max_length changes every feature.
    let third =
        graft_train::train(&config(&train, 32, &cache, &out), &replacing(), &Silent).unwrap();
    assert_eq!((third.cache.computed, third.cache.reused), (all, 0));

    // Editing one training text recomputes the split it lands in, and only that one.
    let edited = tmp.path().join("train.csv");
    let text = std::fs::read_to_string(&train).unwrap();
    let first_review = text.lines().nth(1).unwrap().to_string();
    std::fs::write(
        &edited,
        text.replacen(&first_review, &first_review.replacen(",", ",EDITED ", 1), 1),
    )
    .unwrap();
    let fourth =
        graft_train::train(&config(&edited, 64, &cache, &out), &replacing(), &Silent).unwrap();
    assert!(
        fourth.cache.computed > 0 && fourth.cache.computed < all,
        "{:?}",
        fourth.cache
    );
    assert_eq!(fourth.cache.computed + fourth.cache.reused, all);

    // rebuild recomputes everything even though the cache holds it.
    let mut rebuild = config(&train, 64, &cache, &out);
    rebuild.train.cache = CacheMode::Rebuild;
    let fifth = graft_train::train(&rebuild, &replacing(), &Silent).unwrap();
    assert_eq!((fifth.cache.computed, fifth.cache.reused), (all, 0));
}

#[test]
fn interrupted_pass_resumes_from_finished_shards_and_ignores_broken_ones() {
    let tmp = tempfile::tempdir().unwrap();
    let cache = tmp.path().join("cache");
    let out = tmp.path().join("run");
    let train = repo().join("datasets/fine-foods-mini/train.csv");
    let first =
        graft_train::train(&config(&train, 64, &cache, &out), &replacing(), &Silent).unwrap();
    assert_eq!(first.cache.reused, 0);
    // Simulate an interruption: one entry lost its shard, another's shard is half-written.
    let entries: Vec<PathBuf> = std::fs::read_dir(cache.join("features"))
        .unwrap()
        .map(|e| e.unwrap().path())
        .collect();
    assert_eq!(entries.len(), 3, "train, valid and test entries");
    std::fs::remove_file(entries[0].join("shard-00000.safetensors")).unwrap();
    std::fs::write(entries[1].join("shard-00000.safetensors"), b"truncated").unwrap();
    let second =
        graft_train::train(&config(&train, 64, &cache, &out), &replacing(), &Silent).unwrap();
    assert!(
        second.cache.computed > 0 && second.cache.reused > 0,
        "{:?}",
        second.cache
    );
    assert_eq!(first.test.unwrap(), second.test.unwrap());
}
