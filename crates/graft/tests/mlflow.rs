//! MLflow tracking against a real `mlflow server` on localhost (started here; `scripts/setup.sh`
//! installs MLflow into a virtual environment and `scripts/test.sh` sets `GRAFT_MLFLOW`; `.ci/run` sets
//! `GRAFT_CI=1`, so CI runs it). Elsewhere, without MLflow, the test says why it is
//! skipped. A server that is down costs a warning, never the run.

mod common;

use std::net::TcpListener;
use std::os::unix::process::CommandExt;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use common::{command, repo};
use serde_json::{Value, json};

fn mlflow_binary() -> Option<PathBuf> {
    let default = std::env::var_os("HOME")
        .map(|home| PathBuf::from(home).join(".cache/graft-mlflow-venv/bin/mlflow"));
    std::env::var_os("GRAFT_MLFLOW")
        .map(PathBuf::from)
        .into_iter()
        .chain(default)
        .find(|p| p.is_file())
}

fn free_port() -> u16 {
    TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port()
}

struct Server {
    child: Child,
    uri: String,
    _dir: tempfile::TempDir,
}

impl Drop for Server {
    /// Stops the server and what it started (uvicorn, its job runner and queue consumers), which
    /// would otherwise outlive the tests: the server leads a process group of its own.
    fn drop(&mut self) {
        let group = format!("-{}", self.child.id());
        let _ = Command::new("kill").args(["-TERM", "--", &group]).status();
        let started = Instant::now();
        while started.elapsed() < Duration::from_secs(10) {
            if let Ok(Some(_)) = self.child.try_wait() {
                break;
            }
            std::thread::sleep(Duration::from_millis(100));
        }
        let _ = Command::new("kill").args(["-KILL", "--", &group]).status();
        let _ = self.child.wait();
    }
}

fn start_server() -> Result<Server, String> {
    let binary = mlflow_binary().ok_or("no mlflow (set GRAFT_MLFLOW, or run scripts/setup.sh)")?;
    let dir = tempfile::tempdir().unwrap();
    let port = free_port();
    let log = std::fs::File::create(dir.path().join("server.log")).unwrap();
    let child = Command::new(&binary)
        .args([
            "server",
            "--host",
            "127.0.0.1",
            "--port",
            &port.to_string(),
            "--workers",
            "1",
        ])
        .arg("--backend-store-uri")
        .arg(format!(
            "sqlite:///{}",
            dir.path().join("mlflow.db").display()
        ))
        .arg("--artifacts-destination")
        .arg(dir.path().join("artifacts"))
        .stdout(Stdio::null())
        .stderr(log)
        .process_group(0)
        .spawn()
        .map_err(|e| format!("{}: {e}", binary.display()))?;
    let mut server = Server {
        child,
        uri: format!("http://127.0.0.1:{port}"),
        _dir: dir,
    };
    let started = Instant::now();
    while started.elapsed() < Duration::from_secs(180) {
        if ureq::get(&format!("{}/health", server.uri)).call().is_ok() {
            return Ok(server);
        }
        if let Ok(Some(status)) = server.child.try_wait() {
            let log =
                std::fs::read_to_string(server._dir.path().join("server.log")).unwrap_or_default();
            return Err(format!("mlflow server exited with {status}: {log}"));
        }
        std::thread::sleep(Duration::from_millis(300));
    }
    Err("mlflow server did not answer within 180 s".into())
}

fn get(server: &Server, path: &str, query: &[(&str, &str)]) -> Value {
    let mut request = ureq::get(&format!("{}{path}", server.uri));
    for (k, v) in query {
        request = request.query(k, v);
    }
    serde_json::from_str(&request.call().unwrap().into_string().unwrap()).unwrap()
}

fn post(server: &Server, path: &str, body: Value) -> Value {
    let answer = ureq::post(&format!("{}{path}", server.uri))
        .set("Content-Type", "application/json")
        .send_string(&body.to_string())
        .unwrap();
    serde_json::from_str(&answer.into_string().unwrap()).unwrap()
}

/// The MLflow runs of an experiment.
fn runs_of(server: &Server, experiment: &str) -> Vec<Value> {
    let answer = post(
        server,
        "/api/2.0/mlflow/runs/search",
        json!({ "experiment_ids": [experiment] }),
    );
    answer["runs"].as_array().cloned().unwrap_or_default()
}

fn config(dir: &Path, epochs: usize, track: &str) -> PathBuf {
    let text = format!(
        r#"[model]
backbone = "{}"

[data]
format = "csv"
train = "{}"
test = "{}"
text_column = "review"
label_column = "score"
valid_fraction = 0.25

[freeze]
backbone = true

[train]
epochs = {epochs}
batch_size = 16
lr = 1e-3
seed = 7

[output]
dir = "{}"
{track}
"#,
        repo().join("models/all-MiniLM-L6-v2").display(),
        repo().join("datasets/fine-foods-mini/train.csv").display(),
        repo().join("datasets/fine-foods-mini/test.csv").display(),
        dir.join("tracked-run").display(),
    );
    common::write(dir, "graft.toml", &text)
}

/// Runs `graft train` with `args`; stdout and stderr together.
fn train(args: &[&str], env: &[(&str, &str)]) -> String {
    let mut all = vec!["train"];
    all.extend_from_slice(args);
    let mut command = command(&all);
    command.env_remove("MLFLOW_TRACKING_URI");
    for (k, v) in env {
        command.env(k, v);
    }
    let out = command.output().unwrap();
    let text = format!(
        "{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(out.status.success(), "graft {all:?} failed:\n{text}");
    text
}

fn history(server: &Server, run_id: &str, key: &str) -> Vec<(u64, f64)> {
    get(
        server,
        "/api/2.0/mlflow/metrics/get-history",
        &[("run_id", run_id), ("metric_key", key)],
    )["metrics"]
        .as_array()
        .cloned()
        .unwrap_or_default()
        .iter()
        .map(|m| (m["step"].as_u64().unwrap(), m["value"].as_f64().unwrap()))
        .collect()
}

#[test]
fn a_tracked_run_logs_params_metrics_and_artifacts_and_resumes_into_the_same_run() {
    let server = match start_server() {
        Ok(server) => server,
        Err(why) if std::env::var("GRAFT_CI").as_deref() == Ok("1") => {
            panic!("GRAFT_CI=1 (CI runs this test) but {why}")
        }
        Err(why) => {
            eprintln!("skipped: {why}");
            return;
        }
    };
    let tmp = tempfile::tempdir().unwrap();
    let track = format!(
        "[track]\nmlflow = \"{}\"\nexperiment = \"graft-tests\"\n",
        server.uri
    );
    let path = config(tmp.path(), 3, &track);
    let said = train(&[path.to_str().unwrap()], &[]);
    assert!(said.contains("tracking: MLflow run"), "{said}");

    let experiment = get(
        &server,
        "/api/2.0/mlflow/experiments/get-by-name",
        &[("experiment_name", "graft-tests")],
    )["experiment"]["experiment_id"]
        .as_str()
        .unwrap()
        .to_string();
    let runs = runs_of(&server, &experiment);
    assert_eq!(runs.len(), 1);
    let run = &runs[0];
    let run_id = run["info"]["run_id"].as_str().unwrap().to_string();
    assert_eq!(run["info"]["status"], "FINISHED");
    assert_eq!(run["info"]["run_name"], "tracked-run");
    let params: Vec<(String, String)> = run["data"]["params"]
        .as_array()
        .unwrap()
        .iter()
        .map(|p| {
            (
                p["key"].as_str().unwrap().into(),
                p["value"].as_str().unwrap().into(),
            )
        })
        .collect();
    let param = |key: &str| {
        params
            .iter()
            .find(|(k, _)| k == key)
            .map(|(_, v)| v.clone())
    };
    assert_eq!(param("train.epochs").as_deref(), Some("3"));
    assert_eq!(param("data.text_column").as_deref(), Some("review"));
    assert_eq!(param("train.lr").as_deref(), Some("0.001"));

    // Per epoch at step = epoch, per optimizer step for the learning rate, the test at the end.
    let run_dir = tmp.path().join("tracked-run");
    let lines = std::fs::read_to_string(run_dir.join("metrics.jsonl")).unwrap();
    let steps = lines
        .lines()
        .filter(|l| l.contains("\"kind\":\"step\""))
        .count();
    let train_loss = history(&server, &run_id, "train_loss");
    assert_eq!(
        train_loss.iter().map(|m| m.0).collect::<Vec<_>>(),
        [1, 2, 3]
    );
    assert_eq!(history(&server, &run_id, "lr").len(), steps);
    assert_eq!(history(&server, &run_id, "valid_accuracy").len(), 3);
    let eval = common::json(&run_dir.join("eval.json"));
    let test_accuracy = history(&server, &run_id, "test_accuracy");
    assert!((test_accuracy[0].1 - eval["accuracy"].as_f64().unwrap()).abs() < 1e-9);

    let files: Vec<String> = get(
        &server,
        "/api/2.0/mlflow/artifacts/list",
        &[("run_id", &run_id)],
    )["files"]
        .as_array()
        .unwrap()
        .iter()
        .map(|f| f["path"].as_str().unwrap().to_string())
        .collect();
    for name in [
        "graft.json",
        "model.safetensors",
        "metrics.jsonl",
        "training.png",
        "eval.json",
        "confusion_matrix.png",
    ] {
        assert!(files.iter().any(|f| f == name), "{name} in {files:?}");
    }
    assert!(
        !files.iter().any(|f| f.starts_with("checkpoints")),
        "{files:?}"
    );

    // Resuming for two more epochs continues the same MLflow run, each epoch logged once.
    let path = config(tmp.path(), 5, &track);
    let said = train(&["--resume", "--force", path.to_str().unwrap()], &[]);
    assert!(said.contains(&run_id), "{said}");
    let train_loss = history(&server, &run_id, "train_loss");
    assert_eq!(
        train_loss.iter().map(|m| m.0).collect::<Vec<_>>(),
        [1, 2, 3, 4, 5]
    );
    assert_eq!(runs_of(&server, &experiment).len(), 1);
}

#[test]
fn a_tracking_server_that_is_down_costs_a_warning_not_the_run() {
    let tmp = tempfile::tempdir().unwrap();
    let path = config(tmp.path(), 1, "");
    let uri = format!("http://127.0.0.1:{}", free_port());
    let said = train(&[path.to_str().unwrap()], &[("MLFLOW_TRACKING_URI", &uri)]);
    assert!(
        said.contains(&format!("warning: MLflow tracking at {uri} is off")),
        "{said}"
    );
    assert!(tmp.path().join("tracked-run/graft.json").is_file());
    assert!(!tmp.path().join("tracked-run/mlflow.json").exists());
}
