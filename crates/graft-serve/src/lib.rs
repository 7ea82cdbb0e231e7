//! graft-serve: one opened [`graft_train::Model`] behind HTTP. Routes follow Hugging Face's
//! text-embeddings-inference where they overlap (`POST /embed`, `POST /predict`, `GET /health`,
//! `GET /info`, `GET /metrics`, and `POST /rerank` for models that score pairs of texts), so its
//! clients work unchanged, plus OpenAI's
//! `POST /v1/embeddings`. Image models take base64 image files or a multipart upload. Requests from
//! all clients are batched together on the one thread that owns the model ([`batcher`]), within
//! an input count and optionally a token budget; a full queue answers 429, a body over the limit 413, input that
//! is not what a route takes 422 with a message. SIGTERM or Ctrl-C stops accepting and finishes
//! what was accepted.

mod batcher;
mod metrics;

use std::future::Future;
use std::net::SocketAddr;
use std::time::{Duration, Instant};

use axum::extract::rejection::JsonRejection;
use axum::extract::{DefaultBodyLimit, FromRequest, Multipart, Request, State};
use axum::http::StatusCode;
use axum::http::header::CONTENT_TYPE;
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use axum::{Json, Router};
use base64::Engine;
use graft_train::{Example, Model, Prediction, SourceKind};
use serde_json::{Value, json};

use crate::batcher::{Answer, Batcher, Batching, Refusal, Work};
use crate::metrics::Metrics;

/// Where and how the server runs.
#[derive(Debug, Clone)]
pub struct ServeOptions {
    /// The address to listen on (port 0: any free port; `ready` is told which).
    pub address: SocketAddr,
    /// Inputs in one model call at most, across requests.
    pub max_batch: usize,
    /// Padded tokens (inputs × the longest input's tokens) in one model call at most.
    pub max_batch_tokens: Option<usize>,
    /// How long a request waits for others to share its model call.
    pub max_wait: Duration,
    /// Requests waiting for the model at most; more get 429.
    pub queue: usize,
    /// Inputs in one request at most (more: 413).
    pub max_inputs: usize,
    /// Bytes in one request body at most (more: 413).
    pub max_body: usize,
}

impl Default for ServeOptions {
    fn default() -> Self {
        Self {
            address: SocketAddr::from(([127, 0, 0, 1], 8080)),
            max_batch: 32,
            max_batch_tokens: None,
            max_wait: Duration::from_millis(5),
            queue: 256,
            max_inputs: 256,
            max_body: 2 << 20,
        }
    }
}

#[derive(Debug, thiserror::Error)]
pub enum ServeError {
    #[error("cannot listen on {address}: {source}")]
    Listen {
        address: SocketAddr,
        source: std::io::Error,
    },
    #[error("the server failed: {0}")]
    Io(#[from] std::io::Error),
}

/// What every handler shares.
#[derive(Clone)]
struct Shared {
    batcher: Batcher,
    metrics: Metrics,
    info: Value,
    image: bool,
    max_inputs: usize,
    max_body: usize,
}

/// Serves `model` until SIGTERM or Ctrl-C; `ready` gets the address once it listens.
pub fn serve(
    model: Model,
    model_id: &str,
    options: &ServeOptions,
    ready: impl FnOnce(SocketAddr),
) -> Result<(), ServeError> {
    let source = model.source().clone();
    let task = model.task().cloned();
    let info = json!({
        "model_id": model_id,
        "model_kind": match source.kind {
            SourceKind::Run => "run",
            SourceKind::Adapter => "adapter",
            SourceKind::Pretrained => "pretrained",
        },
        "modality": format!("{:?}", source.modality).to_lowercase(),
        "task": task.as_ref().map(|t| t.task.logic().problem_type()),
        "labels": task.as_ref().map(|t| t.labels.clone()),
        "max_batch_size": options.max_batch,
        "max_batch_tokens": options.max_batch_tokens,
        "max_client_batch_size": options.max_inputs,
        "max_concurrent_requests": options.queue,
        "max_wait_ms": options.max_wait.as_millis() as u64,
        "version": env!("CARGO_PKG_VERSION"),
    });
    let metrics = Metrics::default();
    let batching = Batching {
        max_batch: options.max_batch.max(1),
        max_wait: options.max_wait,
        queue: options.queue,
        max_tokens: options.max_batch_tokens,
    };
    let (batcher, worker) = Batcher::start(model, batching, metrics.clone());
    let shared = Shared {
        batcher,
        metrics,
        info,
        image: source.modality == graft_model::Modality::Image,
        max_inputs: options.max_inputs.max(1),
        max_body: options.max_body,
    };
    let app = Router::new()
        .route("/health", get(|| async { "ok" }))
        .route("/info", get(model_info))
        .route("/metrics", get(metrics_text))
        .route("/embed", post(embed))
        .route("/predict", post(predict))
        .route("/rerank", post(rerank))
        .route("/v1/embeddings", post(openai_embeddings))
        .layer(DefaultBodyLimit::max(options.max_body))
        .with_state(shared);
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()?;
    let result = runtime.block_on(async {
        let listener = tokio::net::TcpListener::bind(options.address)
            .await
            .map_err(|source| ServeError::Listen {
                address: options.address,
                source,
            })?;
        ready(listener.local_addr()?);
        axum::serve(listener, app)
            .with_graceful_shutdown(stop_signal())
            .await?;
        Ok(())
    });
    // The router (and with it the last sender) is gone: the model thread ends.
    drop(runtime);
    let _ = worker.join();
    result
}

async fn stop_signal() {
    let terminate = async {
        match tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate()) {
            Ok(mut signal) => {
                signal.recv().await;
            }
            Err(_) => std::future::pending::<()>().await,
        }
    };
    tokio::select! {
        _ = terminate => {}
        _ = tokio::signal::ctrl_c() => {}
    }
}

/// An error answer, boxed (a response is large to carry through `Result`s).
type Refused = Box<Response>;

/// An error answer: TEI's `{"error", "error_type"}`.
fn refuse(status: StatusCode, kind: &str, message: impl Into<String>) -> Refused {
    let body = json!({"error": message.into(), "error_type": kind});
    Box::new((status, Json(body)).into_response())
}

/// A request body read as JSON, or the reason it is not (413 over the size limit, else 422).
fn body(request: Result<Json<Value>, JsonRejection>) -> Result<Value, Refused> {
    request.map(|Json(value)| value).map_err(|rejection| {
        let status = match rejection.status() {
            StatusCode::PAYLOAD_TOO_LARGE => StatusCode::PAYLOAD_TOO_LARGE,
            StatusCode::UNSUPPORTED_MEDIA_TYPE => StatusCode::UNSUPPORTED_MEDIA_TYPE,
            _ => StatusCode::UNPROCESSABLE_ENTITY,
        };
        refuse(status, "validation", rejection.body_text())
    })
}

/// What a request sends: JSON, or a multipart form whose file parts are images.
enum Payload {
    Json(Value),
    Form {
        files: Vec<(String, Vec<u8>)>,
        normalize: Option<bool>,
    },
}

/// The request's payload, or why it is refused (413 over the size limit, without reading a body
/// whose announced length is over it; else 422).
async fn payload(request: Request, max_body: usize) -> Result<Payload, Refused> {
    let announced = request
        .headers()
        .get(axum::http::header::CONTENT_LENGTH)
        .and_then(|value| value.to_str().ok()?.parse::<usize>().ok());
    if let Some(length) = announced.filter(|&length| length > max_body) {
        return Err(refuse(
            StatusCode::PAYLOAD_TOO_LARGE,
            "validation",
            format!("the body is {length} bytes; the limit is {max_body}"),
        ));
    }
    let multipart = request
        .headers()
        .get(CONTENT_TYPE)
        .and_then(|value| value.to_str().ok())
        .is_some_and(|value| value.starts_with("multipart/form-data"));
    if !multipart {
        return body(Json::<Value>::from_request(request, &()).await).map(Payload::Json);
    }
    let invalid = |status: StatusCode, message: String| refuse(status, "validation", message);
    let mut form = Multipart::from_request(request, &())
        .await
        .map_err(|r| invalid(r.status(), r.body_text()))?;
    let mut files = Vec::new();
    let mut normalize = None;
    // A bad field is answered once the whole form is read (at most the body limit): answering
    // mid-body would close the connection on a client still sending.
    let mut refusal = None;
    while let Some(field) = form
        .next_field()
        .await
        .map_err(|e| invalid(e.status(), e.body_text()))?
    {
        let name = field.name().unwrap_or_default().to_string();
        let file = field.file_name().map(str::to_string);
        let bytes = field
            .bytes()
            .await
            .map_err(|e| invalid(e.status(), e.body_text()))?;
        match (file, name.as_str()) {
            (Some(file), _) => files.push((file, bytes.to_vec())),
            (None, "normalize") => {
                let text = String::from_utf8_lossy(&bytes);
                match text.trim().parse() {
                    Ok(value) => normalize = Some(value),
                    Err(_) => {
                        refusal.get_or_insert_with(|| {
                            invalid(
                                StatusCode::UNPROCESSABLE_ENTITY,
                                format!("normalize: expected true or false, got {text:?}"),
                            )
                        });
                    }
                }
            }
            (None, other) => {
                refusal.get_or_insert_with(|| {
                    invalid(
                        StatusCode::UNPROCESSABLE_ENTITY,
                        format!("form field `{other}` is not a file (send images as file parts)"),
                    )
                });
            }
        }
    }
    if let Some(refusal) = refusal {
        return Err(refusal);
    }
    Ok(Payload::Form { files, normalize })
}

impl Shared {
    /// The images of a multipart form, one input each, named by their file names.
    fn files(&self, files: Vec<(String, Vec<u8>)>) -> Result<Vec<Example>, Refused> {
        if !self.image {
            return Err(refuse(
                StatusCode::UNSUPPORTED_MEDIA_TYPE,
                "validation",
                "multipart uploads are for image models; send this text model JSON",
            ));
        }
        if files.is_empty() {
            return Err(refuse(
                StatusCode::UNPROCESSABLE_ENTITY,
                "validation",
                "the form has no file parts",
            ));
        }
        self.check_count(files.len())?;
        Ok(files
            .into_iter()
            .map(|(name, bytes)| Example {
                bytes: Some(bytes.into()),
                ..Example::unlabelled(name)
            })
            .collect())
    }

    /// 413 when a request holds more inputs than allowed.
    fn check_count(&self, n: usize) -> Result<(), Refused> {
        if n > self.max_inputs {
            return Err(refuse(
                StatusCode::PAYLOAD_TOO_LARGE,
                "validation",
                format!(
                    "batch size {n} > maximum allowed batch size {}",
                    self.max_inputs
                ),
            ));
        }
        Ok(())
    }

    /// The model inputs of a request's `key` (a string or a list of strings; for an image model,
    /// base64-encoded image files).
    fn inputs(&self, request: &Value, key: &str) -> Result<Vec<Example>, Refused> {
        let invalid =
            |message: String| refuse(StatusCode::UNPROCESSABLE_ENTITY, "validation", message);
        // A pair of texts is a list of two strings (TEI's `[["a", "b"], ...]`).
        fn pair(value: &Value) -> Option<(&str, &str)> {
            match value.as_array()?.as_slice() {
                [a, b] => Some((a.as_str()?, b.as_str()?)),
                _ => None,
            }
        }
        if let Some(items) = request.get(key).and_then(Value::as_array)
            && items.first().is_some_and(Value::is_array)
            && !self.image
        {
            self.check_count(items.len())?;
            return items
                .iter()
                .enumerate()
                .map(|(i, item)| {
                    let (a, b) = pair(item).ok_or_else(|| {
                        invalid(format!(
                            "{key}[{i}]: expected a pair of strings, got {item}"
                        ))
                    })?;
                    if a.trim().is_empty() || b.trim().is_empty() {
                        return Err(invalid(format!("{key}[{i}]: a text of the pair is empty")));
                    }
                    Ok(Example::unlabelled_pair(a, b))
                })
                .collect();
        }
        let texts: Vec<&str> = match request.get(key) {
            Some(Value::String(text)) => vec![text.as_str()],
            Some(Value::Array(items)) => items
                .iter()
                .enumerate()
                .map(|(i, item)| {
                    item.as_str().ok_or_else(|| {
                        invalid(format!("{key}[{i}]: expected a string, got {item}"))
                    })
                })
                .collect::<Result<_, _>>()?,
            Some(other) => {
                return Err(invalid(format!(
                    "{key}: expected a string or a list of strings, got {other}"
                )));
            }
            None => return Err(invalid(format!("the request has no `{key}`"))),
        };
        if texts.is_empty() {
            return Err(invalid(format!("{key} is empty")));
        }
        self.check_count(texts.len())?;
        texts
            .iter()
            .enumerate()
            .map(|(i, text)| {
                if text.trim().is_empty() {
                    return Err(invalid(format!("{key}[{i}] is empty")));
                }
                if !self.image {
                    return Ok(Example::unlabelled(*text));
                }
                let bytes = base64::engine::general_purpose::STANDARD
                    .decode(text.trim())
                    .map_err(|e| invalid(format!("{key}[{i}]: not a base64 image: {e}")))?;
                Ok(Example {
                    bytes: Some(bytes.into()),
                    ..Example::unlabelled(format!("{key}[{i}]"))
                })
            })
            .collect()
    }

    async fn ask(&self, work: Work, inputs: Vec<Example>) -> Result<Answer, Refused> {
        self.batcher
            .ask(work, inputs)
            .await
            .map_err(|refusal| match refusal {
                Refusal::Busy => refuse(
                    StatusCode::TOO_MANY_REQUESTS,
                    "overloaded",
                    "the model's queue is full; retry later",
                ),
                Refusal::Failed(message) => {
                    refuse(StatusCode::UNPROCESSABLE_ENTITY, "backend", message)
                }
            })
    }

    async fn embeddings(
        &self,
        inputs: Vec<Example>,
        normalize: Option<bool>,
    ) -> Result<Vec<Vec<f32>>, Refused> {
        match self.ask(Work::Embed { normalize }, inputs).await? {
            Answer::Embeddings(rows) => Ok(rows),
            Answer::Predictions(_) => unreachable!("embeddings were asked"),
        }
    }

    async fn predictions(&self, inputs: Vec<Example>) -> Result<Vec<Prediction>, Refused> {
        match self.ask(Work::Predict, inputs).await? {
            Answer::Predictions(predictions) => Ok(predictions),
            Answer::Embeddings(_) => unreachable!("predictions were asked"),
        }
    }

    /// `work`'s answer or refusal, counted under `endpoint` with its time.
    async fn answer(
        &self,
        endpoint: &str,
        work: impl Future<Output = Result<Response, Refused>>,
    ) -> Response {
        let started = Instant::now();
        let response = work.await.unwrap_or_else(|refusal| *refusal);
        let seconds = started.elapsed().as_secs_f64();
        self.metrics
            .request(endpoint, response.status().as_u16(), seconds);
        response
    }
}

async fn model_info(State(shared): State<Shared>) -> Json<Value> {
    Json(shared.info.clone())
}

async fn metrics_text(State(shared): State<Shared>) -> String {
    shared.metrics.render()
}

/// TEI's `/embed`: `{"inputs": str | [str], "normalize": bool?}` → `[[f32]]`; image models also
/// take a multipart form of image files (and a `normalize` field).
async fn embed(State(shared): State<Shared>, request: Request) -> Response {
    let work = async {
        let (inputs, normalize) = match payload(request, shared.max_body).await? {
            Payload::Json(request) => (
                shared.inputs(&request, "inputs")?,
                request.get("normalize").and_then(Value::as_bool),
            ),
            Payload::Form { files, normalize } => (shared.files(files)?, normalize),
        };
        Ok(Json(shared.embeddings(inputs, normalize).await?).into_response())
    };
    shared.answer("/embed", work).await
}

/// OpenAI's `/v1/embeddings`: `{"input": str | [str], "model": str?}`.
async fn openai_embeddings(
    State(shared): State<Shared>,
    request: Result<Json<Value>, JsonRejection>,
) -> Response {
    let work = async {
        let request = body(request)?;
        let inputs = shared.inputs(&request, "input")?;
        let n = inputs.len();
        let data: Vec<Value> = shared
            .embeddings(inputs, None)
            .await?
            .into_iter()
            .enumerate()
            .map(|(index, embedding)| {
                json!({"object": "embedding", "embedding": embedding, "index": index})
            })
            .collect();
        let model = request
            .get("model")
            .cloned()
            .unwrap_or_else(|| shared.info["model_id"].clone());
        let usage = json!({"prompt_tokens": 0, "total_tokens": 0, "inputs": n});
        let body = json!({"object": "list", "data": data, "model": model, "usage": usage});
        Ok(Json(body).into_response())
    };
    shared.answer("/v1/embeddings", work).await
}

/// TEI's `/predict`: `{"inputs": str | [str]}` → `[{"label", "score"}]` for one input (every
/// label, highest first), a list of those for a list; image models also take a multipart form of
/// image files (a list, one per file).
async fn predict(State(shared): State<Shared>, request: Request) -> Response {
    let work = async {
        let (one, inputs) = match payload(request, shared.max_body).await? {
            Payload::Json(request) => (
                request.get("inputs").is_some_and(Value::is_string),
                shared.inputs(&request, "inputs")?,
            ),
            Payload::Form { files, .. } => (false, shared.files(files)?),
        };
        let predictions = shared.predictions(inputs).await?;
        let labels = &shared.info["labels"];
        let mut scored: Vec<Value> = predictions.iter().map(|p| scores(p, labels)).collect();
        let body = if one {
            scored.remove(0)
        } else {
            Value::Array(scored)
        };
        Ok(Json(body).into_response())
    };
    shared.answer("/predict", work).await
}

/// TEI's `/rerank`: `{"query": str, "texts": [str], "raw_scores": bool?, "return_text": bool?}`
/// → `[{"index", "score", "text"?}]`, highest score first. Each text is read with the query as a
/// pair. A model with one output is scored as TEI and sentence-transformers' CrossEncoder score
/// it, the sigmoid of that output (the output itself with `raw_scores`); a two-class classifier
/// by the probability of its second class.
async fn rerank(
    State(shared): State<Shared>,
    request: Result<Json<Value>, JsonRejection>,
) -> Response {
    let work = async {
        let request = body(request)?;
        let invalid =
            |message: String| refuse(StatusCode::UNPROCESSABLE_ENTITY, "validation", message);
        if shared.image {
            return Err(invalid("an image model does not rerank texts".into()));
        }
        let labels: Vec<String> = shared.info["labels"]
            .as_array()
            .map(|l| {
                l.iter()
                    .filter_map(Value::as_str)
                    .map(String::from)
                    .collect()
            })
            .unwrap_or_default();
        let regression = shared.info["task"] == "regression";
        let tagger = shared.info["task"] == "token_classification";
        if tagger || (!(regression && labels.len() == 1) && labels.len() != 2) {
            return Err(invalid(format!(
                "the model is not a re-ranker: it has {} outputs where a re-ranker has one \
                 score (or two classes)",
                labels.len()
            )));
        }
        let query = match request.get("query") {
            Some(Value::String(query)) if !query.trim().is_empty() => query.clone(),
            Some(Value::String(_)) => return Err(invalid("query is empty".into())),
            Some(other) => return Err(invalid(format!("query: expected a string, got {other}"))),
            None => return Err(invalid("the request has no `query`".into())),
        };
        let texts = shared.inputs(&request, "texts")?;
        let raw = request.get("raw_scores").and_then(Value::as_bool) == Some(true);
        let return_text = request.get("return_text").and_then(Value::as_bool) == Some(true);
        let pairs: Vec<Example> = texts
            .iter()
            .map(|text| Example::unlabelled_pair(query.as_str(), text.text.as_str()))
            .collect();
        let predictions = shared.predictions(pairs).await?;
        let mut ranked: Vec<(usize, f64)> = predictions
            .iter()
            .enumerate()
            .map(|(index, p)| {
                let score = match (&p.probabilities, p.value) {
                    (Some(probabilities), _) => probabilities
                        .get(&labels[1])
                        .and_then(Value::as_f64)
                        .unwrap_or(0.0),
                    (None, Some(value)) if raw => value,
                    (None, Some(value)) => 1.0 / (1.0 + (-value).exp()),
                    (None, None) => 0.0,
                };
                (index, score)
            })
            .collect();
        ranked.sort_by(|a, b| b.1.total_cmp(&a.1));
        let body: Vec<Value> = ranked
            .into_iter()
            .map(|(index, score)| {
                let mut entry = json!({"index": index, "score": score});
                if return_text {
                    entry["text"] = json!(texts[index].text);
                }
                entry
            })
            .collect();
        Ok(Json(Value::Array(body)).into_response())
    };
    shared.answer("/rerank", work).await
}

/// A prediction as TEI's scores: every label with its probability, highest first; a regression's
/// value under its target's name.
fn scores(prediction: &Prediction, labels: &Value) -> Value {
    // A token classifier: the text's entities, as transformers' token-classification pipeline
    // returns them.
    if let Some(entities) = &prediction.entities {
        return serde_json::to_value(entities).unwrap_or(Value::Null);
    }
    if let Some(probabilities) = &prediction.probabilities {
        let mut pairs: Vec<(&String, f64)> = probabilities
            .iter()
            .map(|(label, p)| (label, p.as_f64().unwrap_or(0.0)))
            .collect();
        pairs.sort_by(|a, b| b.1.total_cmp(&a.1));
        return Value::Array(
            pairs
                .into_iter()
                .map(|(label, score)| json!({"label": label, "score": score}))
                .collect(),
        );
    }
    let target = labels
        .get(0)
        .and_then(Value::as_str)
        .unwrap_or("value")
        .to_string();
    json!([{"label": target, "score": prediction.value}])
}
