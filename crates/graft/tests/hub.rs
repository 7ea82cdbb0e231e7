//! Hub ids (`org/name`, `org/name@revision`) resolved from a Hugging Face cache laid out as
//! `huggingface_hub` lays it out (`models--org--name/refs/<revision>`, `snapshots/<commit>/` whose
//! files link into `blobs/`), everywhere a model folder is accepted. No test needs the network:
//! `HF_HUB_OFFLINE` is set, and a model missing offline is an error saying what was looked for.

mod common;

use std::path::{Path, PathBuf};
use std::process::Output;

use common::{repo, write};

const COMMIT: &str = "0123456789abcdef0123456789abcdef01234567";
const OLDER: &str = "fedcba9876543210fedcba9876543210fedcba98";

/// A cache holding `acme/tiny-roberta` (the RoBERTa sequence-classifier golden folder) at
/// `main` (COMMIT) and at tag `v1` (OLDER), its files links into `blobs/`.
fn cache(dir: &Path) -> PathBuf {
    let source = repo().join("crates/graft-model/tests/golden/native_heads/roberta");
    let cache = dir.join("hub");
    let model = cache.join("models--acme--tiny-roberta");
    std::fs::create_dir_all(model.join("blobs")).unwrap();
    std::fs::create_dir_all(model.join("refs")).unwrap();
    for commit in [COMMIT, OLDER] {
        let snapshot = model.join("snapshots").join(commit);
        std::fs::create_dir_all(&snapshot).unwrap();
        for entry in std::fs::read_dir(&source).unwrap() {
            let file = entry.unwrap().path();
            let name = file.file_name().unwrap().to_str().unwrap().to_string();
            let blob = model.join("blobs").join(format!("{commit}-{name}"));
            std::fs::copy(&file, &blob).unwrap();
            std::os::unix::fs::symlink(
                Path::new("../../blobs").join(blob.file_name().unwrap()),
                snapshot.join(&name),
            )
            .unwrap();
        }
    }
    std::fs::write(model.join("refs/main"), COMMIT).unwrap();
    std::fs::write(model.join("refs/v1"), OLDER).unwrap();
    cache
}

/// `graft args` with the cache as `HF_HUB_CACHE` (or `HF_HOME/hub`), offline.
fn graft(cache: &Path, home: bool, args: &[&str]) -> Output {
    let mut command = common::command(args);
    command.env("HF_HUB_OFFLINE", "1");
    command.env_remove("HF_HUB_CACHE").env_remove("HF_HOME");
    if home {
        command.env("HF_HOME", cache.parent().unwrap());
    } else {
        command.env("HF_HUB_CACHE", cache);
    }
    command.output().unwrap()
}

fn stdout(out: &Output) -> String {
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8(out.stdout.clone()).unwrap()
}

#[test]
fn hub_ids_resolve_from_the_cache_everywhere_a_model_is_accepted() {
    let tmp = tempfile::tempdir().unwrap();
    let cache = cache(tmp.path());
    let texts = write(tmp.path(), "texts.txt", "a good coffee\nstale bread\n");
    let folder = repo().join("crates/graft-model/tests/golden/native_heads/roberta");
    let predict = |model: &str, home: bool| {
        stdout(&graft(
            &cache,
            home,
            &[
                "predict",
                "--model",
                model,
                "--input",
                texts.to_str().unwrap(),
            ],
        ))
    };
    let from_folder = predict(folder.to_str().unwrap(), false);
    assert_eq!(predict("acme/tiny-roberta", false), from_folder);
    assert_eq!(predict("acme/tiny-roberta", true), from_folder);
    assert_eq!(predict("acme/tiny-roberta@v1", false), from_folder);
    assert_eq!(
        predict(&format!("acme/tiny-roberta@{OLDER}"), false),
        from_folder
    );
    let inspected = stdout(&graft(&cache, false, &["inspect", "acme/tiny-roberta"]));
    assert!(inspected.contains("roberta"), "{inspected}");
    let embeddings = tmp.path().join("e.safetensors");
    stdout(&graft(
        &cache,
        false,
        &[
            "embed",
            "--model",
            "acme/tiny-roberta",
            "--input",
            texts.to_str().unwrap(),
            "--output",
            embeddings.to_str().unwrap(),
        ],
    ));
    assert!(embeddings.is_file());
    let data = write(
        tmp.path(),
        "data.csv",
        "review,label\ngood,pos\nbad,neg\nfine,pos\nawful,neg\n",
    );
    let config = write(
        tmp.path(),
        "c.toml",
        &format!(
            "[model]\nbackbone = \"acme/tiny-roberta\"\n\n[data]\nformat = \"csv\"\n\
             train = \"{d}\"\nvalid = \"{d}\"\ntext_column = \"review\"\nlabel_column = \"label\"\n\n\
             [output]\ndir = \"{}\"\n",
            tmp.path().join("run").display(),
            d = data.display()
        ),
    );
    let plan = stdout(&graft(
        &cache,
        false,
        &["train", config.to_str().unwrap(), "--dry-run"],
    ));
    assert!(plan.contains("head.layers.0.weight"), "{plan}");
}

#[test]
fn a_hub_id_missing_offline_says_what_was_looked_for_and_where() {
    let tmp = tempfile::tempdir().unwrap();
    let cache = cache(tmp.path());
    let texts = write(tmp.path(), "texts.txt", "a good coffee\n");
    let out = graft(
        &cache,
        false,
        &[
            "predict",
            "--model",
            "acme/missing",
            "--input",
            texts.to_str().unwrap(),
        ],
    );
    assert!(!out.status.success());
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(stderr.contains("acme/missing"), "{stderr}");
    assert!(
        stderr.contains("models--acme--missing/refs/main"),
        "{stderr}"
    );
    assert!(stderr.contains("HF_HUB_OFFLINE"), "{stderr}");
    assert!(!stderr.contains("panicked"), "{stderr}");
    // A revision the cache does not have is as missing.
    let out = graft(&cache, false, &["inspect", "acme/tiny-roberta@v2"]);
    assert!(!out.status.success());
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(stderr.contains("refs/v2"), "{stderr}");
}
