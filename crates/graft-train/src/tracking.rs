//! Experiment tracking with MLflow, through its REST API (no Python): the resolved config as
//! params, `metrics.jsonl` as metrics while the run trains (per step: `lr`, `backbone_lr`; per
//! epoch, at step = epoch: losses, validation metrics, seconds), the test metrics, and the run
//! folder's files as artifacts when the server stores them (else their path as a tag).
//!
//! Off unless `[track] mlflow` or `MLFLOW_TRACKING_URI` names a server. A server that is down or
//! answers with an error costs a warning, never the run: tracking stops and training goes on.
//! `mlflow.json` in the run folder remembers the MLflow run, so `--resume` continues it.

use std::cell::{Cell, RefCell};
use std::path::{Path, PathBuf};
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use serde::{Deserialize, Serialize};
use serde_json::{Value, json};

use crate::config::Config;
use crate::files::write_json_atomic;
use crate::metrics::Report;
use crate::progress::{EpochMetrics, Progress};

/// The run folder's record of its MLflow run.
pub const RECORD: &str = "mlflow.json";

/// MLflow's limits per `log-batch` request.
const MAX_METRICS: usize = 1000;
const MAX_PARAMS: usize = 100;
/// Longest param value MLflow stores.
const MAX_PARAM_VALUE: usize = 6000;

#[derive(Debug, Clone, Serialize, Deserialize)]
struct Record {
    tracking_uri: String,
    experiment_id: String,
    run_id: String,
    /// Lines of `metrics.jsonl` already logged.
    logged_lines: usize,
}

/// The tracking server's address: the config's, else `MLFLOW_TRACKING_URI` when it is http(s).
pub fn tracking_uri(config: &Config) -> Option<String> {
    let from_env = || {
        std::env::var("MLFLOW_TRACKING_URI")
            .ok()
            .filter(|u| u.starts_with("http://") || u.starts_with("https://"))
    };
    config
        .track
        .mlflow
        .clone()
        .or_else(from_env)
        .map(|u| u.trim_end_matches('/').to_string())
}

fn now_ms() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| d.as_millis() as u64)
}

/// A client of one MLflow run.
struct Client {
    base: String,
    agent: ureq::Agent,
    token: Option<String>,
}

impl Client {
    fn new(base: &str) -> Self {
        Self {
            base: base.to_string(),
            agent: ureq::AgentBuilder::new()
                .timeout_connect(Duration::from_secs(5))
                .timeout_read(Duration::from_secs(60))
                .timeout_write(Duration::from_secs(300))
                .build(),
            token: std::env::var("MLFLOW_TRACKING_TOKEN").ok(),
        }
    }

    fn request(&self, method: &str, path: &str) -> ureq::Request {
        let request = self.agent.request(method, &format!("{}{path}", self.base));
        match &self.token {
            Some(token) => request.set("Authorization", &format!("Bearer {token}")),
            None => request,
        }
    }

    fn answer(result: Result<ureq::Response, ureq::Error>) -> Result<Value, String> {
        match result {
            Ok(response) => {
                let text = response.into_string().map_err(|e| e.to_string())?;
                Ok(serde_json::from_str(&text).unwrap_or(Value::Null))
            }
            Err(ureq::Error::Status(code, response)) => {
                let body = response.into_string().unwrap_or_default();
                Err(format!("HTTP {code}: {}", body.trim()))
            }
            Err(e) => Err(e.to_string()),
        }
    }

    fn post(&self, path: &str, body: &Value) -> Result<Value, String> {
        Self::answer(
            self.request("POST", path)
                .set("Content-Type", "application/json")
                .send_string(&body.to_string()),
        )
    }

    fn experiment_id(&self, name: &str) -> Result<String, String> {
        let found = Self::answer(
            self.request("GET", "/api/2.0/mlflow/experiments/get-by-name")
                .query("experiment_name", name)
                .call(),
        );
        let id = match found {
            Ok(answer) => answer["experiment"]["experiment_id"].clone(),
            Err(message) if message.contains("RESOURCE_DOES_NOT_EXIST") => self.post(
                "/api/2.0/mlflow/experiments/create",
                &json!({ "name": name }),
            )?["experiment_id"]
                .clone(),
            Err(message) => return Err(message),
        };
        id.as_str()
            .map(str::to_string)
            .ok_or_else(|| format!("no experiment id in the answer for `{name}`"))
    }

    fn log_batch(&self, run_id: &str, metrics: &[Value], params: &[Value]) -> Result<(), String> {
        for chunk in metrics.chunks(MAX_METRICS) {
            self.post(
                "/api/2.0/mlflow/runs/log-batch",
                &json!({ "run_id": run_id, "metrics": chunk }),
            )?;
        }
        for chunk in params.chunks(MAX_PARAMS) {
            self.post(
                "/api/2.0/mlflow/runs/log-batch",
                &json!({ "run_id": run_id, "params": chunk }),
            )?;
        }
        Ok(())
    }

    fn set_status(&self, run_id: &str, status: &str) -> Result<(), String> {
        let mut body = json!({ "run_id": run_id, "status": status });
        if status != "RUNNING" {
            body["end_time"] = json!(now_ms());
        }
        self.post("/api/2.0/mlflow/runs/update", &body).map(drop)
    }
}

/// The config as MLflow params: `section.key` = value, nested tables dotted, lists as TOML.
fn params(config: &Config) -> Vec<Value> {
    fn flatten(prefix: &str, value: &toml::Value, out: &mut Vec<(String, String)>) {
        match value {
            toml::Value::Table(table) => {
                for (key, value) in table {
                    let name = if prefix.is_empty() {
                        key.clone()
                    } else {
                        format!("{prefix}.{key}")
                    };
                    flatten(&name, value, out);
                }
            }
            toml::Value::String(s) => out.push((prefix.to_string(), s.clone())),
            other => out.push((prefix.to_string(), other.to_string())),
        }
    }
    let mut pairs = Vec::new();
    if let Ok(value) = toml::Value::try_from(config) {
        flatten("", &value, &mut pairs);
    }
    pairs
        .into_iter()
        .map(|(key, value)| {
            let value: String = value.chars().take(MAX_PARAM_VALUE).collect();
            json!({ "key": key, "value": value })
        })
        .collect()
}

fn metric(key: &str, value: f64, step: usize, timestamp: u64) -> Option<Value> {
    value
        .is_finite()
        .then(|| json!({ "key": key, "value": value, "timestamp": timestamp, "step": step }))
}

/// `metrics.jsonl` lines as MLflow metrics.
fn line_metrics(lines: &[&str]) -> Vec<Value> {
    let timestamp = now_ms();
    let mut out = Vec::new();
    for line in lines {
        let Ok(Value::Object(object)) = serde_json::from_str::<Value>(line) else {
            continue;
        };
        let number = |key: &str| object.get(key).and_then(Value::as_f64);
        match object.get("kind").and_then(Value::as_str) {
            Some("step") => {
                let step = number("step").unwrap_or(0.0) as usize;
                for key in ["lr", "backbone_lr"] {
                    out.extend(number(key).and_then(|v| metric(key, v, step, timestamp)));
                }
            }
            Some("epoch") => {
                let epoch = number("epoch").unwrap_or(0.0) as usize;
                for (key, value) in &object {
                    let name = match key.as_str() {
                        "kind" | "epoch" | "lr" => continue,
                        "seconds" => "epoch_seconds",
                        other => other,
                    };
                    if let Some(v) = value.as_f64() {
                        out.extend(metric(name, v, epoch, timestamp));
                    }
                }
            }
            _ => {}
        }
    }
    out
}

/// One tracked training run. Every failure is reported once through `progress` and turns
/// tracking off.
pub struct Tracker {
    client: Client,
    record: RefCell<Option<Record>>,
    run_dir: PathBuf,
    /// Whether this run has finished an epoch (until then `metrics.jsonl` may be an earlier
    /// run's).
    trained: Cell<bool>,
}

impl Tracker {
    /// Starts (or, resuming, continues) the MLflow run of `config`, whose files are written in
    /// `run_dir` (the output folder, or the folder a replacing run is built in), or `None` when
    /// tracking is off or the server cannot be reached.
    pub fn start(
        config: &Config,
        run_dir: &Path,
        resuming: bool,
        progress: &dyn Progress,
    ) -> Option<Self> {
        let uri = tracking_uri(config)?;
        let run_dir = run_dir.to_path_buf();
        let client = Client::new(&uri);
        let previous = resuming
            .then(|| std::fs::read_to_string(run_dir.join(RECORD)).ok())
            .flatten()
            .and_then(|text| serde_json::from_str::<Record>(&text).ok())
            .filter(|r| r.tracking_uri == uri);
        let started = match previous {
            Some(record) => client
                .set_status(&record.run_id, "RUNNING")
                .map(|()| record),
            None => Self::create(&client, config, &uri),
        };
        match started {
            Ok(record) => {
                progress.info(&format!(
                    "tracking: MLflow run {} in experiment {} at {uri}",
                    record.run_id, record.experiment_id
                ));
                let tracker = Self {
                    client,
                    record: RefCell::new(Some(record)),
                    run_dir,
                    trained: Cell::new(false),
                };
                tracker.save_record(progress);
                Some(tracker)
            }
            Err(message) => {
                progress.info(&format!(
                    "warning: MLflow tracking at {uri} is off for this run: {message}"
                ));
                None
            }
        }
    }

    fn create(client: &Client, config: &Config, uri: &str) -> Result<Record, String> {
        let experiment = config
            .track
            .experiment
            .clone()
            .or_else(|| std::env::var("MLFLOW_EXPERIMENT_NAME").ok())
            .unwrap_or_else(|| "Default".into());
        let experiment_id = client.experiment_id(&experiment)?;
        let run_name = config.track.run_name.clone().unwrap_or_else(|| {
            config
                .output
                .dir
                .file_name()
                .map_or("graft".into(), |n| n.to_string_lossy().to_string())
        });
        let run_dir = std::path::absolute(&config.output.dir).unwrap_or(config.output.dir.clone());
        let answer = client.post(
            "/api/2.0/mlflow/runs/create",
            &json!({
                "experiment_id": experiment_id,
                "run_name": run_name,
                "start_time": now_ms(),
                "tags": [
                    { "key": "mlflow.source.name", "value": "graft" },
                    { "key": "graft.version", "value": env!("CARGO_PKG_VERSION") },
                    { "key": "graft.run_dir", "value": run_dir.to_string_lossy() },
                ],
            }),
        )?;
        let run_id = answer["run"]["info"]["run_id"]
            .as_str()
            .ok_or("no run id in the answer to runs/create")?
            .to_string();
        client.log_batch(&run_id, &[], &params(config))?;
        Ok(Record {
            tracking_uri: uri.to_string(),
            experiment_id,
            run_id,
            logged_lines: 0,
        })
    }

    fn save_record(&self, progress: &dyn Progress) {
        let write = |record: &Record| {
            std::fs::create_dir_all(&self.run_dir).map_err(|source| crate::TrainError::Io {
                path: self.run_dir.clone(),
                source,
            })?;
            write_json_atomic(&self.run_dir.join(RECORD), record)
        };
        if let Some(record) = self.record.borrow().as_ref()
            && let Err(e) = write(record)
        {
            progress.info(&format!("warning: {e}"));
        }
    }

    /// Runs `call` with the run id; a failure warns and turns tracking off.
    fn with_run(
        &self,
        progress: &dyn Progress,
        call: impl FnOnce(&Client, &str) -> Result<(), String>,
    ) {
        let run_id = match self.record.borrow().as_ref() {
            Some(record) => record.run_id.clone(),
            None => return,
        };
        if let Err(message) = call(&self.client, &run_id) {
            progress.info(&format!(
                "warning: MLflow tracking stopped ({}): {message}",
                self.client.base
            ));
            self.record.replace(None);
        }
    }

    /// Logs the lines of `metrics.jsonl` not logged yet (after an epoch of this run).
    pub fn sync_metrics(&self, progress: &dyn Progress) {
        self.trained.set(true);
        let Ok(text) = std::fs::read_to_string(self.run_dir.join("metrics.jsonl")) else {
            return;
        };
        let lines: Vec<&str> = text.lines().filter(|l| !l.trim().is_empty()).collect();
        let logged = self.record.borrow().as_ref().map_or(0, |r| r.logged_lines);
        if lines.len() <= logged {
            return;
        }
        self.with_run(progress, |client, run_id| {
            client.log_batch(run_id, &line_metrics(&lines[logged..]), &[])
        });
        if let Some(record) = self.record.borrow_mut().as_mut() {
            record.logged_lines = lines.len();
        }
        self.save_record(progress);
    }

    /// Ends the run: the remaining metrics, the test metrics (`test_*`), the artifacts and the
    /// status.
    pub fn finish(&self, test: Option<&Report>, succeeded: bool, progress: &dyn Progress) {
        if self.trained.get() {
            self.sync_metrics(progress);
        }
        if let Some(report) = test {
            let timestamp = now_ms();
            let metrics: Vec<Value> = report
                .as_metrics()
                .iter()
                .filter_map(|(k, &v)| metric(&k.replacen("valid_", "test_", 1), v, 0, timestamp))
                .collect();
            self.with_run(progress, |client, run_id| {
                client.log_batch(run_id, &metrics, &[])
            });
        }
        if succeeded {
            self.with_run(progress, |client, run_id| {
                self.upload_artifacts(client, run_id)
            });
        }
        let status = if succeeded { "FINISHED" } else { "FAILED" };
        self.with_run(progress, |client, run_id| client.set_status(run_id, status));
    }

    /// Uploads the run folder's files (not its checkpoints) through the server's artifact proxy
    /// (`mlflow-artifacts:` URIs); other stores keep the `graft.run_dir` tag only.
    fn upload_artifacts(&self, client: &Client, run_id: &str) -> Result<(), String> {
        let answer = Client::answer(
            client
                .request("GET", "/api/2.0/mlflow/runs/get")
                .query("run_id", run_id)
                .call(),
        )?;
        let uri = answer["run"]["info"]["artifact_uri"]
            .as_str()
            .unwrap_or_default();
        let Some(root) = uri.strip_prefix("mlflow-artifacts:") else {
            return Ok(());
        };
        // `mlflow-artifacts:/1/<run>/artifacts`, or with a host: `mlflow-artifacts://h:p/1/...`.
        let root = match root.strip_prefix("//") {
            Some(rest) => rest.split_once('/').map_or("", |(_, path)| path),
            None => root.trim_start_matches('/'),
        };
        let mut files: Vec<PathBuf> = std::fs::read_dir(&self.run_dir)
            .map_err(|e| format!("{}: {e}", self.run_dir.display()))?
            .flatten()
            .map(|e| e.path())
            .filter(|p| p.is_file() && !is_temporary(p))
            .collect();
        files.sort();
        for file in files {
            let name = file
                .file_name()
                .unwrap_or_default()
                .to_string_lossy()
                .to_string();
            let bytes = std::fs::read(&file).map_err(|e| format!("{}: {e}", file.display()))?;
            Client::answer(
                client
                    .request(
                        "PUT",
                        &format!("/api/2.0/mlflow-artifacts/artifacts/{root}/{name}"),
                    )
                    .send_bytes(&bytes),
            )
            .map_err(|e| format!("uploading {name}: {e}"))?;
        }
        Ok(())
    }
}

fn is_temporary(path: &Path) -> bool {
    path.file_name()
        .and_then(|n| n.to_str())
        .is_some_and(|n| n.starts_with('.') || n.ends_with(".tmp"))
}

/// Progress that also logs each finished epoch's metrics to the tracker.
pub struct Tracked<'a> {
    pub inner: &'a dyn Progress,
    pub tracker: Option<&'a Tracker>,
}

impl Progress for Tracked<'_> {
    fn stage(&self, name: &str, total: usize) {
        self.inner.stage(name, total)
    }
    fn advance(&self, n: usize) {
        self.inner.advance(n)
    }
    fn finish_stage(&self) {
        self.inner.finish_stage()
    }
    fn info(&self, message: &str) {
        self.inner.info(message)
    }
    fn interrupted(&self) -> Option<&'static str> {
        self.inner.interrupted()
    }
    fn epoch(&self, metrics: &EpochMetrics, best: bool) {
        self.inner.epoch(metrics, best);
        if let Some(tracker) = self.tracker {
            tracker.sync_metrics(self.inner);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn metrics_lines_become_mlflow_metrics() {
        let lines = [
            r#"{"kind":"step","step":3,"epoch":1,"lr":0.001,"backbone_lr":0.0001}"#,
            r#"{"kind":"epoch","epoch":2,"train_loss":0.5,"valid_loss":0.25,"valid_accuracy":0.9,"lr":0.001,"trainable_parameters":10,"seconds":1.5}"#,
            r#"{"kind":"epoch","epoch":3,"train_loss":NaN}"#,
        ];
        let metrics = line_metrics(&lines);
        let find = |key: &str| metrics.iter().find(|m| m["key"] == key).cloned().unwrap();
        assert_eq!(find("lr")["step"], 3);
        assert_eq!(find("backbone_lr")["value"], 0.0001);
        assert_eq!(find("valid_accuracy")["step"], 2);
        assert_eq!(find("epoch_seconds")["value"], 1.5);
        assert_eq!(metrics.len(), 7, "{metrics:?}");
    }
}
