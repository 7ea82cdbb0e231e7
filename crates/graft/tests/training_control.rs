//! Training control through the `graft` binary: `--dry-run`, exact resume after SIGKILL, refusing
//! a changed config unless `--force`, and the multi-label and regression tasks through train, eval,
//! predict and export.

mod common;

use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use common::{
    FINE_FOODS_MINI, command, export, fails, json, latest_checkpoint, metrics_without_seconds, ok,
    predict_reviews, repo, write,
};

fn partial_config(out_dir: &Path, epochs: usize, lr: &str) -> String {
    format!(
        r#"[model]
backbone = "models/all-MiniLM-L6-v2"
max_length = 64

{FINE_FOODS_MINI}
[freeze]
layers = 5
unfreeze = [{{ epoch = 2, layers = "last:3" }}]

[train]
epochs = {epochs}
batch_size = 8
lr = {lr}
layer_decay = 0.8
schedule = "cosine"
warmup_ratio = 0.1
clip_grad_norm = 1.0
backend = "flex"

[output]
dir = "{}"
"#,
        out_dir.display()
    )
}

fn epoch_lines(run: &Path) -> Vec<serde_json::Value> {
    std::fs::read_to_string(run.join("metrics.jsonl"))
        .unwrap()
        .lines()
        .map(|l| serde_json::from_str::<serde_json::Value>(l).unwrap())
        .filter(|l| l["kind"] == "epoch")
        .collect()
}

#[test]
fn dry_run_lists_every_tensor_with_counts() {
    let tmp = tempfile::tempdir().unwrap();
    let cfg = write(
        tmp.path(),
        "c.toml",
        &partial_config(&tmp.path().join("run"), 3, "1e-3").replace(
            "layers = 5\n",
            "patterns = ['embeddings\\..*', 'encoder\\.layer\\.[0-3]\\..*']\n",
        ),
    );
    let stdout = ok(&["train", cfg.to_str().unwrap(), "--dry-run"]);
    let line = |name: &str| {
        stdout
            .lines()
            .find(|l| l.starts_with(&format!("{name} ")))
            .unwrap_or_else(|| panic!("no line for {name} in:\n{stdout}"))
            .to_string()
    };
    // Patterns match the upstream names `graft inspect` shows, in PyTorch layout.
    let frozen = line("encoder.layer.3.attention.self.query.weight");
    assert!(
        frozen.contains("frozen") && frozen.contains("trains from epoch 2"),
        "{frozen}"
    );
    assert!(line("embeddings.LayerNorm.weight").contains("frozen"));
    let trainable = line("encoder.layer.4.output.dense.weight");
    assert!(
        trainable.contains("trainable") && trainable.contains("[384, 1536]"),
        "{trainable}"
    );
    assert!(line("encoder.layer.4.output.dense.bias").contains("wd 0"));
    assert!(line("head.layers.0.weight").contains("lr 1.00e-3"));
    // 6 layers of 1,774,464 values each train from the start: layers 4 and 5, pooler and head.
    assert!(stdout.contains("trainable parameters: 3697538"), "{stdout}");
    assert!(
        stdout.contains("frozen parameters:    19016448"),
        "{stdout}"
    );
    assert!(!tmp.path().join("run").exists(), "a dry run must not train");
}

#[test]
fn killed_run_resumes_to_the_same_result_and_changed_config_is_refused() {
    let tmp = tempfile::tempdir().unwrap();
    let reference = tmp.path().join("reference");
    let cfg = write(tmp.path(), "a.toml", &partial_config(&reference, 4, "1e-3"));
    ok(&["train", cfg.to_str().unwrap()]);

    // The same run, killed with SIGKILL in the middle of epoch 2.
    let run = tmp.path().join("killed");
    let cfg = write(tmp.path(), "b.toml", &partial_config(&run, 4, "1e-3"));
    let mut child = command(&["train", cfg.to_str().unwrap()])
        .stdout(std::process::Stdio::null())
        .stderr(std::process::Stdio::null())
        .spawn()
        .unwrap();
    let started = Instant::now();
    while latest_checkpoint(&run).is_none() {
        assert!(
            child.try_wait().unwrap().is_none(),
            "the run ended before its first checkpoint"
        );
        assert!(
            started.elapsed() < Duration::from_secs(300),
            "no checkpoint after 300 s"
        );
        std::thread::sleep(Duration::from_millis(50));
    }
    std::thread::sleep(Duration::from_millis(700));
    child.kill().unwrap(); // SIGKILL
    child.wait().unwrap();
    let at_kill = latest_checkpoint(&run).unwrap();
    assert_ne!(
        at_kill, "epoch-0004",
        "the kill came too late to test anything"
    );
    assert!(!run.join("eval.json").exists());

    // A changed config is refused, naming what changed.
    let changed = write(tmp.path(), "b.toml", &partial_config(&run, 4, "2e-3"));
    let stderr = fails(&["train", changed.to_str().unwrap(), "--resume"]);
    assert!(
        stderr.contains("train.lr") && stderr.contains("--force"),
        "{stderr}"
    );

    let cfg = write(tmp.path(), "b.toml", &partial_config(&run, 4, "1e-3"));
    let stderr = String::from_utf8(
        command(&["train", cfg.to_str().unwrap(), "--resume"])
            .output()
            .unwrap()
            .stderr,
    )
    .unwrap();
    assert!(stderr.contains("resumed from"), "{stderr}");
    let (a, b) = (epoch_lines(&reference), epoch_lines(&run));
    assert_eq!(a.len(), 4);
    assert_eq!(b.len(), 4);
    let last = |lines: &[serde_json::Value], key: &str| lines[3][key].as_f64().unwrap();
    assert_eq!(last(&a, "valid_accuracy"), last(&b, "valid_accuracy"));
    assert!((last(&a, "valid_loss") - last(&b, "valid_loss")).abs() <= 1e-5);
    assert!((last(&a, "train_loss") - last(&b, "train_loss")).abs() <= 1e-5);
    // Every step's loss and learning rate, and every epoch's metrics, are the same.
    assert_eq!(
        metrics_without_seconds(&reference),
        metrics_without_seconds(&run)
    );
    let (ea, eb) = (
        json(&reference.join("eval.json")),
        json(&run.join("eval.json")),
    );
    assert_eq!(ea["accuracy"], eb["accuracy"]);
    assert_eq!(ea["confusion_matrix"], eb["confusion_matrix"]);

    // --force continues with the changed config (here: more epochs).
    let more = write(tmp.path(), "b.toml", &partial_config(&run, 5, "1e-3"));
    let out = command(&["train", more.to_str().unwrap(), "--resume", "--force"])
        .output()
        .unwrap();
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(out.status.success(), "{stderr}");
    assert!(stderr.contains("train.epochs"), "{stderr}");
    assert_eq!(epoch_lines(&run).len(), 5);
}

/// Real review texts with labels derived from them: the sentiment label, plus `long` (more than
/// 40 words) and `question` (contains `?`), written as `a|b` strings and as JSON arrays.
fn multi_label_data(dir: &Path) -> (PathBuf, PathBuf) {
    let convert = |name: &str| {
        let mut reader =
            csv::Reader::from_path(repo().join("datasets/fine-foods-mini").join(name)).unwrap();
        let mut lines = String::new();
        for (i, record) in reader.records().enumerate() {
            let record = record.unwrap();
            let (text, score) = (&record[1], &record[2]);
            let mut tags = vec![score.to_string()];
            if text.split_whitespace().count() > 40 {
                tags.push("long".into());
            }
            if text.contains('?') {
                tags.push("question".into());
            }
            let tags = if i % 2 == 0 {
                serde_json::json!(tags.join("|"))
            } else {
                serde_json::json!(tags)
            };
            lines += &serde_json::json!({ "review": text, "tags": tags }).to_string();
            lines.push('\n');
        }
        write(dir, &name.replace(".csv", ".jsonl"), &lines)
    };
    (convert("train.csv"), convert("test.csv"))
}

#[test]
fn multi_label_through_train_eval_predict_export() {
    let tmp = tempfile::tempdir().unwrap();
    let (train, test) = multi_label_data(tmp.path());
    let run = tmp.path().join("run");
    let cfg = write(
        tmp.path(),
        "ml.toml",
        &format!(
            r#"[model]
backbone = "models/all-MiniLM-L6-v2"
max_length = 64

[data]
format = "jsonl"
task = "multi_label"
train = "{}"
test = "{}"
text_column = "review"
label_column = "tags"

[loss]
class_weights = "balanced"

[train]
epochs = 4
batch_size = 8
lr = 1e-2
monitor = "valid_micro_f1"
backend = "flex"

[output]
dir = "{}"
"#,
            train.display(),
            test.display(),
            run.display()
        ),
    );
    let stdout = ok(&["train", cfg.to_str().unwrap()]);
    assert!(
        stdout.contains("micro-F1") && stdout.contains("Hamming"),
        "{stdout}"
    );
    let report = json(&run.join("eval.json"));
    assert_eq!(
        report["labels"],
        serde_json::json!(["great", "long", "other", "question"])
    );
    for key in ["micro_f1", "macro_f1", "hamming_loss", "per_label"] {
        assert!(report.get(key).is_some(), "eval.json lacks {key}");
    }
    let manifest = json(&run.join("graft.json"));
    assert_eq!(manifest["task"], "multi_label_classification");

    let eval_json = tmp.path().join("eval.json");
    let stdout = ok(&[
        "eval",
        "--model",
        run.to_str().unwrap(),
        "--data",
        test.to_str().unwrap(),
        "--output",
        eval_json.to_str().unwrap(),
    ]);
    assert!(stdout.contains("micro-F1"), "{stdout}");
    assert_eq!(json(&eval_json)["micro_f1"], report["micro_f1"]);
    // One 2 x 2 matrix per label: four panels in one row.
    let picture = image::open(run.join("confusion_matrix.png")).unwrap();
    assert!(picture.width() > 4 * 200, "{}", picture.width());

    let first = predict_reviews(&run, &test).remove(0);
    assert!(first["labels"].is_array(), "{first}");
    assert_eq!(first["probabilities"].as_object().unwrap().len(), 4);

    let export = export(&run, &tmp.path().join("export"));
    assert!(export.join("modules.json").is_file());
    assert_eq!(
        json(&export.join("labels.json")),
        serde_json::json!(["great", "long", "other", "question"])
    );
}

#[test]
fn regression_through_train_eval_predict_export() {
    let tmp = tempfile::tempdir().unwrap();
    // Target: the review's length in tens of words.
    let convert = |name: &str| {
        let mut reader =
            csv::Reader::from_path(repo().join("datasets/fine-foods-mini").join(name)).unwrap();
        let mut out = csv::Writer::from_path(tmp.path().join(name)).unwrap();
        out.write_record(["review", "length"]).unwrap();
        for record in reader.records() {
            let record = record.unwrap();
            let words = record[1].split_whitespace().count() as f64 / 10.0;
            out.write_record([&record[1], &words.to_string()]).unwrap();
        }
        out.flush().unwrap();
        tmp.path().join(name)
    };
    let (train, test) = (convert("train.csv"), convert("test.csv"));
    let run = tmp.path().join("run");
    let cfg = write(
        tmp.path(),
        "r.toml",
        &format!(
            r#"[model]
backbone = "models/all-MiniLM-L6-v2"
max_length = 64

[data]
format = "csv"
task = "regression"
train = "{train}"
valid = "{test}"
test = "{test}"
text_column = "review"
label_column = "length"

[loss]
kind = "huber"

[train]
epochs = 5
batch_size = 8
lr = 1e-2
monitor = "valid_mae"
backend = "flex"

[output]
dir = "{run}"
"#,
            train = train.display(),
            test = test.display(),
            run = run.display()
        ),
    );
    let stdout = ok(&["train", cfg.to_str().unwrap()]);
    assert!(stdout.contains("MAE") && stdout.contains("R²"), "{stdout}");
    // Training standardizes the targets; the saved model predicts raw values, so its MAE on the
    // validation file (here the test file) equals the best epoch's validation MAE.
    let lines = epoch_lines(&run);
    let best = json(&run.join("graft.json"))["best_epoch"]
        .as_u64()
        .unwrap() as usize;
    let valid_mae = lines[best - 1]["valid_mae"].as_f64().unwrap();
    let report = json(&run.join("eval.json"));
    assert!(
        (report["mae"].as_f64().unwrap() - valid_mae).abs() < 1e-4,
        "saved model MAE {} vs validation MAE {valid_mae}",
        report["mae"]
    );
    let stdout = ok(&[
        "eval",
        "--model",
        run.to_str().unwrap(),
        "--data",
        test.to_str().unwrap(),
    ]);
    assert!(stdout.contains("RMSE"), "{stdout}");
    assert_eq!(
        image::open(run.join("predicted_vs_true.png"))
            .unwrap()
            .width(),
        900
    );
    let values: Vec<f64> = predict_reviews(&run, &test)
        .iter()
        .map(|p| p["value"].as_f64().unwrap())
        .collect();
    let mean = values.iter().sum::<f64>() / values.len() as f64;
    assert!(mean > 1.0, "predictions look standardized (mean {mean})");
    let export = export(&run, &tmp.path().join("export"));
    assert!(export.join("modules.json").is_file());

    // A non-numeric target names the file and line; the run it would have replaced stays.
    std::fs::write(&train, "review,length\ngood,1.5\nbad,abc\n").unwrap();
    let stderr = fails(&["train", cfg.to_str().unwrap(), "--force"]);
    assert!(
        stderr.contains("train.csv:3") && stderr.contains("abc"),
        "{stderr}"
    );
    assert!(run.join("graft.json").is_file());
}

fn frozen_config(out_dir: &Path) -> String {
    format!(
        r#"[model]
backbone = "models/all-MiniLM-L6-v2"
max_length = 64

{FINE_FOODS_MINI}
[head]
dropout = 0.0

[train]
epochs = 2
batch_size = 7
lr = 0.01
clip_grad_norm = 1.0
backend = "flex"

[output]
dir = "{}"
"#,
        out_dir.display()
    )
}

/// `--devices 2` splits every batch in two and sums the gradients: the same losses as one device.
/// `--precision bf16` computes the features in bf16 (the log says so) and trains close to f32.
#[test]
fn devices_and_precision_from_the_command_line() {
    let dir = tempfile::tempdir().unwrap();
    let run = |name: &str, flags: &[&str]| {
        let out_dir = dir.path().join(name);
        let config = write(
            dir.path(),
            &format!("{name}.toml"),
            &frozen_config(&out_dir),
        );
        let mut args = vec!["train", config.to_str().unwrap()];
        args.extend_from_slice(flags);
        let out = command(&args).output().unwrap();
        let stderr = String::from_utf8_lossy(&out.stderr).to_string();
        assert!(out.status.success(), "graft {args:?} failed:\n{stderr}");
        let losses: Vec<(f64, f64)> = epoch_lines(&out_dir)
            .iter()
            .map(|l| {
                (
                    l["train_loss"].as_f64().unwrap(),
                    l["valid_loss"].as_f64().unwrap(),
                )
            })
            .collect();
        (losses, stderr)
    };
    let (one, _) = run("one", &[]);
    let (two, log) = run("two", &["--devices", "2"]);
    assert!(
        log.contains("data parallel: each batch split over 2 devices"),
        "{log}"
    );
    for ((a, b), (c, d)) in one.iter().zip(&two) {
        assert!(
            (a - c).abs() < 1e-6 && (b - d).abs() < 1e-6,
            "{one:?} vs {two:?}"
        );
    }
    let (half, log) = run("bf16", &["--precision", "bf16"]);
    assert!(log.contains("precision: bf16"), "{log}");
    for ((a, b), (c, d)) in one.iter().zip(&half) {
        assert!(
            (a - c).abs() < 0.05 && (b - d).abs() < 0.05,
            "{one:?} vs {half:?}"
        );
    }
    assert_ne!(one, half, "bf16 features should not be f32's");
}

/// A trainable backbone is trained: after one epoch every weight of the trainable encoder layers
/// has moved from the pretrained one, and every weight of the frozen layers has not. (Moving the
/// backbone to the autodiff device once left it outside autodiff: only the head learned, and the
/// run said nothing.)
#[test]
fn the_trainable_part_of_the_backbone_is_trained_and_the_frozen_part_is_not() {
    let tmp = tempfile::tempdir().unwrap();
    let run = tmp.path().join("run");
    let text = partial_config(&run, 1, "1e-3")
        .replace("unfreeze = [{ epoch = 2, layers = \"last:3\" }]\n", "");
    let config = write(tmp.path(), "c.toml", &text);
    ok(&["train", config.to_str().unwrap()]);
    let pretrained = common::f32_tensors(&repo().join("models/all-MiniLM-L6-v2/model.safetensors"));
    let trained = common::f32_tensors(&run.join("model.safetensors"));
    // layers = 5: the embeddings and encoder layers 0-3 frozen, layers 4-5 trained.
    let (mut moved, mut kept) = (0, 0);
    for (name, (_, before)) in &pretrained {
        let Some((_, after)) = trained.get(name) else {
            continue;
        };
        let changed = before.iter().zip(after).any(|(a, b)| a != b);
        if name.starts_with("encoder.layer.4.") || name.starts_with("encoder.layer.5.") {
            assert!(changed, "{name} was to be trained and did not move");
            moved += 1;
        } else if name.starts_with("embeddings.") || name.starts_with("encoder.layer.") {
            assert!(!changed, "{name} is frozen and moved");
            kept += 1;
        }
    }
    assert_eq!((moved, kept), (32, 69));
}
