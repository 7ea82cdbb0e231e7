//! The library surface a server uses: `graft_train::Model` opened once on a run folder (and on a
//! pretrained folder), then asked for predictions, an evaluation and embeddings of examples held in
//! memory, in several batches. Its answers are the `graft` commands' on the same rows.

use std::path::Path;

use graft_train::read_input;
use graft_train::{Backend, Input, Model, Silent};

mod common;

use common::{FINE_FOODS_MINI, ok, repo, write};

fn train_run(dir: &Path) -> std::path::PathBuf {
    let run = dir.join("run");
    let cfg = write(
        dir,
        "c.toml",
        &format!(
            "[model]\nbackbone = \"models/all-MiniLM-L6-v2\"\nmax_length = 128\n\n{FINE_FOODS_MINI}\
             \n[train]\nepochs = 2\nbatch_size = 8\nlr = 1e-2\nbackend = \"flex\"\n\n\
             [output]\ndir = \"{}\"\n",
            run.display()
        ),
    );
    ok(&["train", cfg.to_str().unwrap()]);
    run
}

fn flex() -> burn::tensor::Device {
    graft_train::select_device(Backend::Flex).unwrap().device
}

fn embeddings(path: &Path) -> Vec<f32> {
    let bytes = std::fs::read(path).unwrap();
    let file = safetensors::SafeTensors::deserialize(&bytes).unwrap();
    file.tensor("embeddings")
        .unwrap()
        .data()
        .chunks_exact(4)
        .map(|b| f32::from_le_bytes([b[0], b[1], b[2], b[3]]))
        .collect()
}

#[test]
fn a_run_opened_once_answers_batches_in_memory_as_the_commands_do() {
    let tmp = tempfile::tempdir().unwrap();
    let run = train_run(tmp.path());
    let test = repo().join("datasets/fine-foods-mini/test.csv");
    let input = Input {
        path: test.clone(),
        column: Some("review".into()),
        pair_column: None,
        negative_column: None,
    };
    let examples =
        read_input(graft_model::Modality::Text, &input, Some("score")).expect("test rows");
    assert!(examples.len() >= 10);

    // The command line: predict and eval on the file.
    let cli: Vec<serde_json::Value> = ok(&[
        "predict",
        "--model",
        run.to_str().unwrap(),
        "--input",
        test.to_str().unwrap(),
        "--column",
        "review",
        "--backend",
        "flex",
    ])
    .lines()
    .map(|l| serde_json::from_str(l).unwrap())
    .collect();
    let report_path = tmp.path().join("report.json");
    ok(&[
        "eval",
        "--model",
        run.to_str().unwrap(),
        "--data",
        test.to_str().unwrap(),
        "--output",
        report_path.to_str().unwrap(),
        "--backend",
        "flex",
    ]);
    let cli_report: serde_json::Value =
        serde_json::from_str(&std::fs::read_to_string(&report_path).unwrap()).unwrap();

    // The library: the run opened once, two batches of different sizes held in memory.
    let model = Model::open(&run, &flex()).unwrap();
    let (first, second) = examples.split_at(4);
    let mut predictions = model.predict(first, 3, &Silent).unwrap();
    predictions.extend(model.predict(second, 16, &Silent).unwrap());
    assert_eq!(predictions.len(), cli.len());
    for (i, (ours, theirs)) in predictions.iter().zip(&cli).enumerate() {
        let ours = serde_json::to_value(ours).unwrap();
        assert_eq!(ours["label"], theirs["label"], "row {i}");
        let probabilities = ours["probabilities"].as_object().unwrap();
        assert_eq!(
            probabilities.len(),
            theirs["probabilities"].as_object().unwrap().len()
        );
        for (label, p) in probabilities {
            let diff =
                (p.as_f64().unwrap() - theirs["probabilities"][label].as_f64().unwrap()).abs();
            assert!(diff <= 1e-5, "row {i} {label}: {diff}");
        }
    }

    let evaluation = model.evaluate(examples.clone(), &test, 5, &Silent).unwrap();
    let report = serde_json::to_value(&evaluation.report).unwrap();
    for key in ["accuracy", "macro_f1", "n"] {
        let (ours, theirs) = (&report[key], &cli_report[key]);
        assert!(!ours.is_null(), "the report lacks {key}: {report}");
        let close = match (ours.as_f64(), theirs.as_f64()) {
            (Some(a), Some(b)) => (a - b).abs() <= 1e-9,
            _ => ours == theirs,
        };
        assert!(close, "{key}: {ours} against graft eval's {theirs}");
    }

    // A pretrained folder: embeddings as `graft embed` writes them, and no classifier to predict
    // with (an error naming the folder, not a panic).
    let minilm = repo().join("models/all-MiniLM-L6-v2");
    let out = tmp.path().join("e.safetensors");
    ok(&[
        "embed",
        "--model",
        minilm.to_str().unwrap(),
        "--input",
        test.to_str().unwrap(),
        "--column",
        "review",
        "--output",
        out.to_str().unwrap(),
        "--backend",
        "flex",
    ]);
    let cli_embeddings = embeddings(&out);
    let pretrained = Model::open(&minilm, &flex()).unwrap();
    let options = graft_train::EmbedOptions {
        batch_size: 5,
        ..Default::default()
    };
    let ours = pretrained.embed(&examples, &options, &Silent).unwrap();
    assert_eq!(ours.values.len(), cli_embeddings.len());
    let worst = ours
        .values
        .iter()
        .zip(&cli_embeddings)
        .map(|(a, b)| (a - b).abs())
        .fold(0.0f32, f32::max);
    assert!(worst <= 1e-5, "embeddings differ by {worst}");
    let err = pretrained.predict(&examples, 8, &Silent).unwrap_err();
    assert!(
        err.to_string().contains("no classifier of its own"),
        "{err}"
    );
}
