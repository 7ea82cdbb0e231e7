//! Nothing silent: bad rows (an empty text, an empty or unknown label, a null) stop `train`,
//! `eval` and `predict` naming the file and line or parquet row, unless `[data] bad_rows =
//! "skip"`, which says what it skipped and keeps the count in `graft.json`; a finished run or an
//! export is never replaced unasked, and a replacement that dies leaves the earlier one intact.
//! Small files made here from the fine-foods slice, on the frozen MiniLM with a shared cache.

mod common;

use std::path::{Path, PathBuf};

use common::*;

/// A frozen-backbone config training on `train` (a CSV with `review`, `score`), with `data`
/// lines added to its `[data]` section.
fn config(dir: &Path, name: &str, train: &Path, data: &str, out: &Path) -> PathBuf {
    write(
        dir,
        name,
        &format!(
            r#"[model]
backbone = "models/all-MiniLM-L6-v2"
max_length = 64

[data]
format = "{format}"
train = "{train}"
text_column = "review"
label_column = "score"
valid_fraction = 0.25
{data}

[freeze]
backbone = true

[train]
epochs = 2
batch_size = 8
backend = "flex"
cache_dir = "{cache}"

[output]
dir = "{out}"
"#,
            format = train.extension().unwrap().to_str().unwrap(),
            train = train.display(),
            cache = dir.join("cache").display(),
            out = out.display(),
        ),
    )
}

/// The fine-foods slice's rows, with `edit` applied to the lines after the header.
fn mini_csv(dir: &Path, name: &str, edit: impl Fn(usize, &str) -> String) -> PathBuf {
    let text = std::fs::read_to_string(repo().join("datasets/fine-foods-mini/train.csv")).unwrap();
    let mut lines = text.lines();
    let mut out = format!("{}\n", lines.next().unwrap());
    for (i, line) in lines.enumerate() {
        out += &edit(i + 2, line);
        out.push('\n');
    }
    write(dir, name, &out)
}

/// `line` with its last field (the label) replaced.
fn with_label(line: &str, label: &str) -> String {
    let (rest, _) = line.rsplit_once(',').unwrap();
    format!("{rest},{label}")
}

#[test]
fn bad_rows_are_errors_naming_file_and_line() {
    let tmp = tempfile::tempdir().unwrap();
    let run = tmp.path().join("run");

    // An empty label in single-label classification: it would have become a class "".
    let train = mini_csv(tmp.path(), "empty-label.csv", |n, line| {
        if n == 5 {
            with_label(line, "")
        } else {
            line.into()
        }
    });
    let cfg = config(tmp.path(), "a.toml", &train, "", &run);
    let err = fails(&["train", cfg.to_str().unwrap()]);
    assert!(
        err.contains(&format!("{}:5: empty label", train.display()))
            && err.contains("bad_rows = \"skip\""),
        "{err}"
    );
    assert!(!run.exists(), "a refused run leaves no folder");

    // An empty text (a quoted empty field).
    let train = mini_csv(tmp.path(), "empty-text.csv", |n, line| {
        if n == 7 {
            let (product, _) = line.split_once(',').unwrap();
            let (_, label) = line.rsplit_once(',').unwrap();
            format!("{product},\"  \",{label}")
        } else {
            line.into()
        }
    });
    let cfg = config(tmp.path(), "b.toml", &train, "", &run);
    let err = fails(&["train", cfg.to_str().unwrap()]);
    assert!(
        err.contains(&format!("{}:7: empty text", train.display())),
        "{err}"
    );

    // JSONL: a null label; regression: an empty target.
    let jsonl = write(
        tmp.path(),
        "rows.jsonl",
        "{\"review\": \"good\", \"score\": \"great\"}\n{\"review\": \"bad\", \"score\": null}\n",
    );
    let cfg = config(tmp.path(), "c.toml", &jsonl, "", &run);
    let err = fails(&["train", cfg.to_str().unwrap()]);
    assert!(
        err.contains(&format!("{}:2: empty label", jsonl.display())),
        "{err}"
    );
    let numbers = write(tmp.path(), "numbers.csv", "review,score\na,1\nb,\nc,3\n");
    let cfg = config(
        tmp.path(),
        "d.toml",
        &numbers,
        "task = \"regression\"",
        &run,
    );
    let err = fails(&["train", cfg.to_str().unwrap()]);
    assert!(
        err.contains(&format!("{}:3: empty label", numbers.display())),
        "{err}"
    );

    // A label outside the labels file.
    let labels = write(tmp.path(), "labels.txt", "great\nother\n");
    let train = mini_csv(tmp.path(), "unknown.csv", |n, line| {
        if n == 9 {
            with_label(line, "meh")
        } else {
            line.into()
        }
    });
    let cfg = config(
        tmp.path(),
        "e.toml",
        &train,
        &format!("labels = \"{}\"", labels.display()),
        &run,
    );
    let err = fails(&["train", cfg.to_str().unwrap()]);
    assert!(
        err.contains(&format!(
            "{}:9: label `meh` is not one of the training labels (great, other)",
            train.display()
        )),
        "{err}"
    );

    // The label column is the text column; a column named twice.
    let cfg = config(tmp.path(), "f.toml", &numbers, "", &run);
    let text = std::fs::read_to_string(&cfg)
        .unwrap()
        .replace("label_column = \"score\"", "label_column = \"review\"");
    std::fs::write(&cfg, text).unwrap();
    let err = fails(&["train", cfg.to_str().unwrap()]);
    assert!(
        err.contains("[data] label_column: \"review\" is also the input column"),
        "{err}"
    );
    let twice = write(tmp.path(), "twice.csv", "review,score,review\na,great,b\n");
    let cfg = config(tmp.path(), "g.toml", &twice, "", &run);
    let err = fails(&["train", cfg.to_str().unwrap()]);
    assert!(
        err.contains(&format!(
            "{}:1: the header names column `review` more than once",
            twice.display()
        )),
        "{err}"
    );
    assert!(!run.exists());
}

#[test]
fn skipped_rows_are_counted_then_runs_and_exports_are_never_replaced_unasked() {
    let tmp = tempfile::tempdir().unwrap();
    let run = tmp.path().join("run");
    // Two bad rows, skipped; a multi-label-style empty field would be a bad row here.
    let train = mini_csv(tmp.path(), "train.csv", |n, line| match n {
        4 => with_label(line, ""),
        11 => {
            let (product, _) = line.split_once(',').unwrap();
            let (_, label) = line.rsplit_once(',').unwrap();
            format!("{product},,{label}")
        }
        _ => line.into(),
    });
    let cfg = config(tmp.path(), "a.toml", &train, "bad_rows = \"skip\"", &run);
    let out = command(&["train", cfg.to_str().unwrap()]).output().unwrap();
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(out.status.success(), "{stderr}");
    assert!(
        stderr.contains(&format!(
            "skipped 2 bad rows of {}: line 4 (empty label), line 11 (empty text)",
            train.display()
        )),
        "{stderr}"
    );
    let manifest = json(&run.join("graft.json"));
    assert_eq!(manifest["skipped_rows"][train.display().to_string()], 2);
    assert_eq!(
        json(&run.join("labels.json")),
        serde_json::json!(["great", "other"])
    );
    let model = std::fs::read(run.join("model.safetensors")).unwrap();
    let best = manifest["best_epoch"].as_u64().unwrap();

    // Evaluating and predicting on files with bad rows: errors naming the row.
    let err = fails(&[
        "eval",
        "--model",
        run.to_str().unwrap(),
        "--data",
        train.to_str().unwrap(),
        "--backend",
        "flex",
    ]);
    assert!(
        err.contains(&format!(
            "{}:4: empty label; fix or remove the row",
            train.display()
        )),
        "{err}"
    );
    let nulls = repo().join("crates/graft-data/tests/data/parquet/null_text.parquet");
    let err = fails(&[
        "predict",
        "--model",
        run.to_str().unwrap(),
        "--input",
        nulls.to_str().unwrap(),
        "--column",
        "text",
        "--backend",
        "flex",
    ]);
    assert!(
        err.contains("null_text.parquet:3: row 3: empty text"),
        "{err}"
    );

    // Training again into the finished run is refused, naming it and the ways on.
    let err = fails(&["train", cfg.to_str().unwrap()]);
    assert!(
        err.contains(&format!(
            "{}: already holds a finished run (best epoch {best}, valid_accuracy ",
            run.display()
        )) && err.contains("--force replaces it"),
        "{err}"
    );
    assert_eq!(std::fs::read(run.join("model.safetensors")).unwrap(), model);

    // --force replaces it, once the new run is whole: here without the bad rows' second file
    // entry, so the manifest says nothing was skipped.
    let clean = mini_csv(tmp.path(), "clean.csv", |_, line| line.into());
    let cfg = config(tmp.path(), "b.toml", &clean, "", &run);
    let said = ok(&["train", cfg.to_str().unwrap(), "--force"]);
    assert!(
        said.contains(&format!("run saved to {}", run.display())),
        "{said}"
    );
    assert!(json(&run.join("graft.json")).get("skipped_rows").is_none());
    assert!(!tmp.path().join(".run.graft-new").exists());

    // Exports: an existing one is refused, --force replaces it.
    let export_dir = export(&run, &tmp.path().join("export"));
    let err = fails(&[
        "export",
        "--model",
        run.to_str().unwrap(),
        "--out",
        export_dir.to_str().unwrap(),
    ]);
    assert!(
        err.contains("already holds files") && err.contains("graft export --force"),
        "{err}"
    );
    ok(&[
        "export",
        "--model",
        run.to_str().unwrap(),
        "--out",
        export_dir.to_str().unwrap(),
        "--force",
    ]);
    assert!(export_dir.join("config.json").is_file());
}
