//! `graft init` then `graft train` with no editing, on the bundled data sets (CSV, image folders,
//! and the same data as parquet files written by pyarrow), with the run's pictures; the task
//! detected from the data; and the refusals.

mod common;

use std::path::{Path, PathBuf};

use common::{command, repo};

fn parquet(name: &str) -> String {
    repo()
        .join("crates/graft-data/tests/data/parquet")
        .join(name)
        .to_string_lossy()
        .to_string()
}

fn absolute(relative: &str) -> String {
    repo().join(relative).to_string_lossy().to_string()
}

/// Runs graft in `dir` (so the config's `runs/...` lands there); its stdout, or a failure with
/// stderr.
fn graft_in(dir: &Path, args: &[&str]) -> String {
    let out = command(args).current_dir(dir).output().unwrap();
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(out.status.success(), "graft {args:?} failed:\n{stderr}");
    String::from_utf8(out.stdout).unwrap()
}

fn fails_in(dir: &Path, args: &[&str]) -> String {
    let out = command(args).current_dir(dir).output().unwrap();
    let stderr = String::from_utf8_lossy(&out.stderr).to_string();
    assert!(!out.status.success(), "graft {args:?} should fail");
    assert!(
        stderr.contains("error: ") && !stderr.contains("panicked"),
        "{stderr}"
    );
    stderr
}

/// `graft init` with `args` into `dir/graft.toml`; what it said and the config text.
fn init(dir: &Path, args: &[&str]) -> (String, String) {
    let out = dir.join("graft.toml");
    let mut all = vec!["init", "--out", out.to_str().unwrap()];
    all.extend_from_slice(args);
    let said = graft_in(dir, &all);
    (said, std::fs::read_to_string(out).unwrap())
}

fn png_size(path: &Path) -> (u32, u32) {
    let image = image::open(path).unwrap_or_else(|e| panic!("{}: {e}", path.display()));
    (image.width(), image.height())
}

/// Trains the written config in `dir` and returns the run folder.
fn train(dir: &Path) -> PathBuf {
    let said = graft_in(dir, &["train", "graft.toml"]);
    assert!(said.contains("best epoch"), "{said}");
    let runs: Vec<PathBuf> = std::fs::read_dir(dir.join("runs"))
        .unwrap()
        .map(|e| e.unwrap().path())
        .collect();
    assert_eq!(runs.len(), 1, "{runs:?}");
    let run = runs[0].clone();
    assert_eq!(png_size(&run.join("training.png")), (1400, 950));
    run
}

#[test]
fn csv_text_data_trains_with_no_editing_and_draws_its_pictures() {
    let tmp = tempfile::tempdir().unwrap();
    let (said, config) = init(
        tmp.path(),
        &[
            "--model",
            &absolute("models/all-MiniLM-L6-v2"),
            "--train",
            &absolute("datasets/fine-foods-mini/train.csv"),
            "--test",
            &absolute("datasets/fine-foods-mini/test.csv"),
        ],
    );
    assert!(
        said.contains("text_column: `review`") && said.contains("classification into 2 classes"),
        "{said}"
    );
    for line in [
        "format = \"csv\"",
        "text_column = \"review\"",
        "label_column = \"score\"",
        "task = \"classification\"",
        "dir = \"runs/train\"",
    ] {
        assert!(config.contains(line), "{line} in\n{config}");
    }
    let run = train(tmp.path());
    let eval = common::json(&run.join("eval.json"));
    assert_eq!(eval["n"], 16);
    let (width, height) = png_size(&run.join("confusion_matrix.png"));
    assert!(width > 200 && height > 200, "{width}x{height}");
}

#[test]
fn image_folders_train_with_no_editing() {
    let tmp = tempfile::tempdir().unwrap();
    let lite0 = common::lite0_folder(tmp.path());
    let (said, config) = init(
        tmp.path(),
        &[
            "--model",
            lite0.to_str().unwrap(),
            "--train",
            &absolute("datasets/fashion-mnist-mini/train"),
            "--test",
            &absolute("datasets/fashion-mnist-mini/test"),
        ],
    );
    assert!(said.contains("classification into 10 classes"), "{said}");
    assert!(config.contains("format = \"image_folder\""), "{config}");
    // 28 px images and a 224 px model: a size near the images' is proposed, not set.
    assert!(
        said.contains("images: about 28 px, much smaller than the model's 224 px input")
            && config.contains("# image_size = 32 "),
        "{said}\n{config}"
    );
    let run = train(tmp.path());
    assert!(run.join("confusion_matrix.png").is_file());
}

#[test]
fn parquet_text_data_trains_evaluates_and_predicts() {
    let tmp = tempfile::tempdir().unwrap();
    let (_, config) = init(
        tmp.path(),
        &[
            "--model",
            &absolute("models/all-MiniLM-L6-v2"),
            "--train",
            &parquet("fine_foods_mini_train.parquet"),
        ],
    );
    assert!(
        config.contains("format = \"parquet\"") && config.contains("text_column = \"review\""),
        "{config}"
    );
    let run = train(tmp.path());
    let run_arg = run.to_str().unwrap();
    let test = parquet("fine_foods_mini_test.parquet");
    let plot = tmp.path().join("cm.png");
    let said = graft_in(
        tmp.path(),
        &[
            "eval",
            "--model",
            run_arg,
            "--data",
            &test,
            "--plot",
            plot.to_str().unwrap(),
        ],
    );
    assert!(
        said.contains("accuracy") && said.contains("cm.png"),
        "{said}"
    );
    assert!(png_size(&plot).0 > 200);
    let predictions = graft_in(
        tmp.path(),
        &[
            "predict", "--model", run_arg, "--input", &test, "--column", "review",
        ],
    );
    assert_eq!(predictions.lines().count(), 16);
}

#[test]
fn parquet_images_with_class_labels_train_and_predict() {
    let tmp = tempfile::tempdir().unwrap();
    let lite0 = common::lite0_folder(tmp.path());
    let (said, config) = init(
        tmp.path(),
        &[
            "--model",
            lite0.to_str().unwrap(),
            "--train",
            &parquet("fashion_mnist_mini_train.parquet"),
            "--test",
            &parquet("fashion_mnist_mini_test.parquet"),
        ],
    );
    assert!(
        config.contains("image_column = \"image\"") && said.contains("ankle-boot: 12"),
        "{said}\n{config}"
    );
    // The images' sizes are read from the bytes the parquet file holds, too.
    assert!(said.contains("images: about 28 px"), "{said}");
    let run = train(tmp.path());
    let eval = common::json(&run.join("eval.json"));
    assert_eq!(eval["labels"][0], "ankle-boot");
    let predictions = graft_in(
        tmp.path(),
        &[
            "predict",
            "--model",
            run.to_str().unwrap(),
            "--input",
            &parquet("fashion_mnist_mini_test.parquet"),
        ],
    );
    let first: serde_json::Value =
        serde_json::from_str(predictions.lines().next().unwrap()).unwrap();
    assert!(
        first["input"]
            .as_str()
            .unwrap()
            .ends_with("fashion_mnist_mini_test.parquet#row1"),
        "{first}"
    );
}

#[test]
fn the_task_comes_from_the_labels() {
    let tmp = tempfile::tempdir().unwrap();
    let texts = [
        "good tea",
        "bad coffee",
        "fine tea",
        "cold coffee",
        "hot tea",
        "ok",
    ];
    let write = |name: &str, rows: &dyn Fn(usize, &str) -> String, header: &str| {
        let mut text = header.to_string();
        for (i, t) in texts.iter().enumerate() {
            text += &rows(i, t);
        }
        common::write(tmp.path(), name, &text)
    };
    let minilm = absolute("models/all-MiniLM-L6-v2");
    let cases: Vec<(PathBuf, &str, &str)> = vec![
        (
            write(
                "tags.csv",
                &|i, t| format!("{t},{}\n", ["a|b", "b", "c|a", "a"][i % 4]),
                "sentence,tags\n",
            ),
            "task = \"multi_label\"",
            "label_separator = \"|\"",
        ),
        (
            write(
                "lists.jsonl",
                &|i, t| {
                    format!(
                        "{{\"text\":\"{t}\",\"labels\":{}}}\n",
                        ["[\"x\"]", "[\"x\",\"y\"]", "[]"][i % 3]
                    )
                },
                "",
            ),
            "task = \"multi_label\"",
            "label_column = \"labels\"",
        ),
        (
            write(
                "prices.csv",
                &|i, t| format!("{i},{t},{}.25\n", i * 3),
                "id,description,price\n",
            ),
            "task = \"regression\"",
            "text_column = \"description\"",
        ),
        (
            write(
                "stars.csv",
                &|i, t| format!("{t},{}\n", i % 5 + 1),
                "comment,stars\n",
            ),
            "task = \"classification\"",
            "label_column = \"stars\"",
        ),
    ];
    for (data, task, other) in cases {
        let out = tmp.path().join("graft.toml");
        let _ = std::fs::remove_file(&out);
        let (_, config) = init(
            tmp.path(),
            &["--model", &minilm, "--train", data.to_str().unwrap()],
        );
        assert!(
            config.contains(task) && config.contains(other),
            "{}: {task}, {other} in\n{config}",
            data.display()
        );
    }
    // The regression config trains as written.
    let (_, _) = init(
        tmp.path(),
        &[
            "--force",
            "--model",
            &minilm,
            "--train",
            tmp.path().join("prices.csv").to_str().unwrap(),
        ],
    );
    let run = train(tmp.path());
    assert_eq!(common::json(&run.join("graft.json"))["task"], "regression");
}

#[test]
fn init_refusals_name_what_is_wrong() {
    let tmp = tempfile::tempdir().unwrap();
    let minilm = absolute("models/all-MiniLM-L6-v2");
    let out = tmp.path().join("graft.toml");
    let out = out.to_str().unwrap();
    let train = absolute("datasets/fine-foods-mini/train.csv");
    graft_in(
        tmp.path(),
        &["init", "--model", &minilm, "--train", &train, "--out", out],
    );
    let stderr = fails_in(
        tmp.path(),
        &["init", "--model", &minilm, "--train", &train, "--out", out],
    );
    assert!(
        stderr.contains("already exists") && stderr.contains("--force"),
        "{stderr}"
    );

    let folder = absolute("datasets/fashion-mnist-mini/train");
    let stderr = fails_in(
        tmp.path(),
        &[
            "init", "--force", "--model", &minilm, "--train", &folder, "--out", out,
        ],
    );
    assert!(stderr.contains("model reads text"), "{stderr}");

    let one = common::write(tmp.path(), "one.csv", "text,label\nhello,a\nworld,a\n");
    let stderr = fails_in(
        tmp.path(),
        &[
            "init",
            "--force",
            "--model",
            &minilm,
            "--train",
            one.to_str().unwrap(),
            "--out",
            out,
        ],
    );
    assert!(
        stderr.contains("one.csv")
            && stderr.contains("label column")
            && stderr.contains("text, label"),
        "{stderr}"
    );
    let stderr = fails_in(
        tmp.path(),
        &[
            "init",
            "--force",
            "--model",
            &absolute("models/efficientnet-lite0"),
            "--train",
            &folder,
            "--out",
            out,
        ],
    );
    assert!(stderr.contains("graft convert"), "{stderr}");
    let help = String::from_utf8(command(&["--help"]).output().unwrap().stdout).unwrap();
    assert!(help.contains("init"), "{help}");
}
