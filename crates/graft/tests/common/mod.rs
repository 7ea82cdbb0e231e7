//! Helpers shared by the CLI tests: run the `graft` binary from the repository root with a
//! throwaway feature cache, and small file helpers.
#![allow(dead_code)]

use std::path::{Path, PathBuf};
use std::process::{Command, Output};

/// The `[data]` section of the configs that train on the small fine-foods slice.
pub const FINE_FOODS_MINI: &str = r#"[data]
format = "csv"
train = "datasets/fine-foods-mini/train.csv"
test = "datasets/fine-foods-mini/test.csv"
text_column = "review"
label_column = "score"
"#;

pub fn repo() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../..")
}

pub fn graft(args: &[&str]) -> Output {
    command(args).output().expect("graft runs")
}

/// The `graft` command with `args`, not yet run.
pub fn command(args: &[&str]) -> Command {
    // The feature cache goes to a throwaway folder, not the user's.
    let cache = std::env::temp_dir().join(format!("graft-test-cache-{}", std::process::id()));
    let mut command = Command::new(env!("CARGO_BIN_EXE_graft"));
    // No test reaches the network: a Hub id not in the cache is an error, not a download.
    command
        .args(args)
        .current_dir(repo())
        .env("GRAFT_CACHE_DIR", cache)
        .env("HF_HUB_OFFLINE", "1");
    command
}

pub fn ok(args: &[&str]) -> String {
    let out = graft(args);
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(out.status.success(), "graft {args:?} failed:\n{stderr}");
    String::from_utf8(out.stdout).unwrap()
}

/// Runs a command that must fail; returns its stderr, which must not be a panic.
pub fn fails(args: &[&str]) -> String {
    let out = graft(args);
    let stderr = String::from_utf8_lossy(&out.stderr).to_string();
    assert!(!out.status.success(), "graft {args:?} should fail");
    assert!(
        !stderr.contains("panicked"),
        "graft {args:?} panicked:\n{stderr}"
    );
    assert!(stderr.contains("error: "), "{stderr}");
    stderr
}

pub fn write(dir: &Path, name: &str, text: &str) -> PathBuf {
    let path = dir.join(name);
    std::fs::write(&path, text).unwrap();
    path
}

pub fn json(path: &Path) -> serde_json::Value {
    serde_json::from_str(&std::fs::read_to_string(path).unwrap()).unwrap()
}

/// Exports `run` to `out` and returns `out`.
pub fn export(run: &Path, out: &Path) -> PathBuf {
    export_saying(run, out);
    out.to_path_buf()
}

/// Exports `run` to `out`; what graft said.
pub fn export_saying(run: &Path, out: &Path) -> String {
    ok(&[
        "export",
        "--model",
        run.to_str().unwrap(),
        "--out",
        out.to_str().unwrap(),
    ])
}

/// `graft predict` on a file's `review` column, one JSON value per line.
pub fn predict_reviews(run: &Path, input: &Path) -> Vec<serde_json::Value> {
    predict_reviews_on(run, input, "auto")
}

/// [`predict_reviews`] on a backend.
pub fn predict_reviews_on(run: &Path, input: &Path, backend: &str) -> Vec<serde_json::Value> {
    predict_column(run, input, "review", backend)
}

/// `graft predict` on a file's `column`, one JSON value per line.
pub fn predict_column(
    model: &Path,
    input: &Path,
    column: &str,
    backend: &str,
) -> Vec<serde_json::Value> {
    ok(&[
        "predict",
        "--model",
        model.to_str().unwrap(),
        "--input",
        input.to_str().unwrap(),
        "--column",
        column,
        "--backend",
        backend,
    ])
    .lines()
    .map(|l| serde_json::from_str(l).unwrap())
    .collect()
}

/// A Lite0 model folder converted from the fetched .pth with `graft convert`.
pub fn lite0_folder(dir: &Path) -> PathBuf {
    let folder = dir.join("lite0");
    std::fs::create_dir_all(&folder).unwrap();
    let pth = repo().join("models/efficientnet-lite0/efficientnet-lite0-57934424.pth");
    assert!(pth.is_file(), "run scripts/fetch-models.sh");
    let stdout = ok(&[
        "convert",
        pth.to_str().unwrap(),
        folder.join("model.safetensors").to_str().unwrap(),
    ]);
    assert!(stdout.contains("296 tensors"), "{stdout}");
    std::fs::copy(
        repo().join("models/efficientnet-lite0/config.json"),
        folder.join("config.json"),
    )
    .unwrap();
    folder
}

/// The name of a run folder's last complete checkpoint, if it has one.
pub fn latest_checkpoint(run: &Path) -> Option<String> {
    std::fs::read_to_string(run.join("checkpoints/latest")).ok()
}

/// A run's `metrics.jsonl` lines without their timings, to compare two runs step for step.
pub fn metrics_without_seconds(run: &Path) -> Vec<String> {
    std::fs::read_to_string(run.join("metrics.jsonl"))
        .unwrap()
        .lines()
        .map(|l| {
            let mut v: serde_json::Value = serde_json::from_str(l).unwrap();
            v.as_object_mut().unwrap().remove("seconds");
            v.to_string()
        })
        .collect()
}

/// Reads every f32 tensor of a safetensors file, by name: its shape and values.
pub fn f32_tensors(path: &Path) -> std::collections::BTreeMap<String, (Vec<usize>, Vec<f32>)> {
    let bytes = std::fs::read(path).unwrap();
    let file = safetensors::SafeTensors::deserialize(&bytes).unwrap();
    file.tensors()
        .into_iter()
        .filter(|(_, view)| view.dtype() == safetensors::Dtype::F32)
        .map(|(name, view)| {
            let values = view
                .data()
                .chunks_exact(4)
                .map(|b| f32::from_le_bytes([b[0], b[1], b[2], b[3]]))
                .collect();
            (name, (view.shape().to_vec(), values))
        })
        .collect()
}
