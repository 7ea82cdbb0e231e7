//! `graft serve` as a real process on 127.0.0.1: embeddings and predictions equal to `graft embed`
//! and `graft predict`'s, concurrent clients batched together, bad requests answered 4xx with a
//! message while the server stays up, a full queue answered 429, and SIGTERM finishing the
//! request it accepted. Every client loop is bounded in count and every wait in time.

use std::io::{BufRead, BufReader};
use std::path::Path;
use std::process::{Child, Stdio};
use std::sync::mpsc;
use std::time::{Duration, Instant};

use serde_json::{Value, json};

mod common;

use common::{command, ok, repo, write};

/// A `graft serve` process and the address it listens on.
struct Server {
    child: Child,
    address: String,
    /// The server's stderr lines after the address.
    log: mpsc::Receiver<String>,
}

impl Server {
    fn start(model: &Path, extra: &[&str]) -> Server {
        let model = model.to_str().unwrap();
        let mut args = vec![
            "serve",
            "--model",
            model,
            "--port",
            "0",
            "--backend",
            "flex",
        ];
        args.extend_from_slice(extra);
        let mut child = command(&args)
            .stdout(Stdio::null())
            .stderr(Stdio::piped())
            .spawn()
            .expect("graft serve starts");
        let stderr = child.stderr.take().unwrap();
        let (lines, log) = mpsc::channel();
        // Held from here on, so that a failed start still stops the process (`Drop`).
        let mut server = Server {
            child,
            address: String::new(),
            log,
        };
        std::thread::spawn(move || {
            for line in BufReader::new(stderr).lines().map_while(Result::ok) {
                if lines.send(line).is_err() {
                    break;
                }
            }
        });
        let deadline = Instant::now() + Duration::from_secs(120);
        loop {
            let left = deadline.saturating_duration_since(Instant::now());
            let line = server
                .log
                .recv_timeout(left)
                .expect("graft serve says where it listens");
            if let Some(address) = line.split(" on http://").nth(1) {
                assert!(address.starts_with("127.0.0.1:"), "{line}");
                server.address = address.trim().to_string();
                return server;
            }
        }
    }

    fn url(&self, path: &str) -> String {
        format!("http://{}{path}", self.address)
    }

    /// A POST of `body` as JSON: the status and the answer.
    fn post(&self, path: &str, body: &str) -> (u16, Value) {
        let request = ureq::post(&self.url(path))
            .timeout(Duration::from_secs(120))
            .set("content-type", "application/json");
        let response = match request.send_string(body) {
            Ok(response) => response,
            Err(ureq::Error::Status(_, response)) => response,
            Err(e) => panic!("POST {path}: {e}"),
        };
        let status = response.status();
        let text = response.into_string().unwrap();
        let value = serde_json::from_str(&text)
            .unwrap_or_else(|_| panic!("POST {path}: {status} and not JSON: {text}"));
        (status, value)
    }

    fn get(&self, path: &str) -> (u16, String) {
        let response = match ureq::get(&self.url(path))
            .timeout(Duration::from_secs(30))
            .call()
        {
            Ok(response) => response,
            Err(ureq::Error::Status(_, response)) => response,
            Err(e) => panic!("GET {path}: {e}"),
        };
        (response.status(), response.into_string().unwrap())
    }

    /// SIGTERM, then the exit status within a minute.
    fn terminate(&mut self) -> std::process::ExitStatus {
        let pid = self.child.id().to_string();
        let sent = std::process::Command::new("kill")
            .args(["-TERM", &pid])
            .status()
            .unwrap();
        assert!(sent.success());
        let deadline = Instant::now() + Duration::from_secs(60);
        loop {
            if let Some(status) = self.child.try_wait().unwrap() {
                return status;
            }
            assert!(
                Instant::now() < deadline,
                "graft serve did not stop on SIGTERM"
            );
            std::thread::sleep(Duration::from_millis(50));
        }
    }
}

impl Drop for Server {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

const TEXTS: [&str; 3] = [
    "This coffee is absolutely wonderful, rich and smooth.",
    "Stale and bitter; I threw the bag away.",
    "ok",
];

fn floats(value: &Value) -> Vec<f32> {
    value
        .as_array()
        .unwrap()
        .iter()
        .map(|v| v.as_f64().unwrap() as f32)
        .collect()
}

fn max_diff(a: &[f32], b: &[f32]) -> f32 {
    assert_eq!(a.len(), b.len());
    a.iter()
        .zip(b)
        .map(|(x, y)| (x - y).abs())
        .fold(0.0, f32::max)
}

/// `graft embed`'s rows for the texts.
fn embed_rows(model: &Path, dir: &Path) -> Vec<Vec<f32>> {
    let input = write(dir, "texts.txt", &TEXTS.join("\n"));
    let out = dir.join("e.safetensors");
    ok(&[
        "embed",
        "--model",
        model.to_str().unwrap(),
        "--input",
        input.to_str().unwrap(),
        "--output",
        out.to_str().unwrap(),
        "--backend",
        "flex",
    ]);
    let bytes = std::fs::read(&out).unwrap();
    let file = safetensors::SafeTensors::deserialize(&bytes).unwrap();
    let view = file.tensor("embeddings").unwrap();
    let width = view.shape()[1];
    let values: Vec<f32> = view
        .data()
        .chunks_exact(4)
        .map(|b| f32::from_le_bytes([b[0], b[1], b[2], b[3]]))
        .collect();
    values.chunks(width).map(<[f32]>::to_vec).collect()
}

#[test]
fn embeddings_and_predictions_are_the_commands_and_clients_share_batches() {
    let tmp = tempfile::tempdir().unwrap();
    let minilm = repo().join("models/all-MiniLM-L6-v2");
    let want = embed_rows(&minilm, tmp.path());
    let server = Server::start(&minilm, &["--max-wait-ms", "20"]);
    assert_eq!(server.get("/health"), (200, "ok".to_string()));
    let (status, info) = server.get("/info");
    assert_eq!(status, 200);
    let info: Value = serde_json::from_str(&info).unwrap();
    assert_eq!(info["modality"], "text", "{info}");

    let (status, rows) = server.post("/embed", &json!({"inputs": TEXTS}).to_string());
    assert_eq!(status, 200, "{rows}");
    let rows: Vec<Vec<f32>> = rows.as_array().unwrap().iter().map(floats).collect();
    for (row, want) in rows.iter().zip(&want) {
        assert!(max_diff(row, want) <= 1e-5, "{}", max_diff(row, want));
    }
    // One string gives one row.
    let (_, one) = server.post("/embed", &json!({"inputs": TEXTS[1]}).to_string());
    assert!(max_diff(&floats(&one[0]), &want[1]) <= 1e-5);
    // OpenAI's shape, the same numbers.
    let (status, openai) = server.post("/v1/embeddings", &json!({"input": TEXTS}).to_string());
    assert_eq!(status, 200, "{openai}");
    assert_eq!(openai["object"], "list");
    for (i, item) in openai["data"].as_array().unwrap().iter().enumerate() {
        assert_eq!(item["index"], i);
        assert!(max_diff(&floats(&item["embedding"]), &want[i]) <= 1e-5);
    }

    // Eight clients, four requests each, at once: every answer is the command's.
    let clients: Vec<_> = (0..8)
        .map(|c| {
            let url = server.url("/embed");
            let want = want.clone();
            std::thread::spawn(move || {
                for r in 0..4 {
                    let i = (c + r) % TEXTS.len();
                    let body = json!({"inputs": [TEXTS[i]]}).to_string();
                    let answer: Value = serde_json::from_str(
                        &ureq::post(&url)
                            .timeout(Duration::from_secs(120))
                            .set("content-type", "application/json")
                            .send_string(&body)
                            .unwrap()
                            .into_string()
                            .unwrap(),
                    )
                    .unwrap();
                    assert!(max_diff(&floats(&answer[0]), &want[i]) <= 1e-5);
                }
            })
        })
        .collect();
    for client in clients {
        client.join().unwrap();
    }
    let (_, metrics) = server.get("/metrics");
    let count = |name: &str| -> f64 {
        let line = metrics
            .lines()
            .find(|l| l.starts_with(name))
            .unwrap_or_else(|| panic!("no {name} in {metrics}"));
        line.rsplit(' ').next().unwrap().parse().unwrap()
    };
    assert_eq!(
        count("graft_requests_total{endpoint=\"/embed\",status=\"200\"}"),
        34.0
    );
    // Requests arriving together share model calls.
    assert!(count("graft_batches_total") < 35.0, "{metrics}");

    // A model without a classifier says so, and the server stays up.
    let (status, error) = server.post("/predict", &json!({"inputs": "hi"}).to_string());
    assert_eq!(status, 422, "{error}");
    assert!(
        error["error"].as_str().unwrap().contains("no classifier"),
        "{error}"
    );
    assert_eq!(server.get("/health").0, 200);
}

#[test]
fn predictions_are_graft_predicts() {
    let tmp = tempfile::tempdir().unwrap();
    let folder = repo().join("crates/graft-model/tests/golden/native_heads/bert");
    let input = write(tmp.path(), "texts.txt", &TEXTS.join("\n"));
    let want: Vec<Value> = ok(&[
        "predict",
        "--model",
        folder.to_str().unwrap(),
        "--input",
        input.to_str().unwrap(),
        "--backend",
        "flex",
    ])
    .lines()
    .map(|l| serde_json::from_str(l).unwrap())
    .collect();
    let server = Server::start(&folder, &[]);
    let (status, answer) = server.post("/predict", &json!({"inputs": TEXTS}).to_string());
    assert_eq!(status, 200, "{answer}");
    for (scores, want) in answer.as_array().unwrap().iter().zip(&want) {
        let scores = scores.as_array().unwrap();
        // Every label, highest first: the top one is graft predict's label.
        assert_eq!(scores[0]["label"], want["label"]);
        for pair in scores.windows(2) {
            assert!(pair[0]["score"].as_f64() >= pair[1]["score"].as_f64());
        }
        for score in scores {
            let label = score["label"].as_str().unwrap();
            let p = want["probabilities"][label].as_f64().unwrap();
            assert!((score["score"].as_f64().unwrap() - p).abs() <= 1e-5);
        }
    }
    // One string: one list of scores.
    let (_, one) = server.post("/predict", &json!({"inputs": TEXTS[0]}).to_string());
    assert_eq!(one[0]["label"], want[0]["label"]);
}

#[test]
fn image_models_take_base64_image_files() {
    use base64::Engine;
    let tmp = tempfile::tempdir().unwrap();
    let folder = repo().join("crates/graft-model/tests/golden/vit/timm-vit");
    let photos = repo().join("crates/graft-model/tests/golden/vision");
    let names = ["chelsea.png", "coffee.png"];
    let table = write(
        tmp.path(),
        "images.csv",
        &format!(
            "path\n{}\n",
            names
                .iter()
                .map(|n| photos.join(n).display().to_string())
                .collect::<Vec<_>>()
                .join("\n")
        ),
    );
    let want: Vec<Value> = ok(&[
        "predict",
        "--model",
        folder.to_str().unwrap(),
        "--input",
        table.to_str().unwrap(),
        "--column",
        "path",
        "--backend",
        "flex",
    ])
    .lines()
    .map(|l| serde_json::from_str(l).unwrap())
    .collect();
    let encoded: Vec<String> = names
        .iter()
        .map(|n| {
            base64::engine::general_purpose::STANDARD.encode(std::fs::read(photos.join(n)).unwrap())
        })
        .collect();
    // A long wait, so that requests sent together share a model call.
    let server = Server::start(&folder, &["--max-wait-ms", "300"]);
    let (status, answer) = server.post("/predict", &json!({"inputs": encoded}).to_string());
    assert_eq!(status, 200, "{answer}");
    for (scores, want) in answer.as_array().unwrap().iter().zip(&want) {
        assert_eq!(scores[0]["label"], want["label"]);
        for score in scores.as_array().unwrap() {
            let p = want["probabilities"][score["label"].as_str().unwrap()]
                .as_f64()
                .unwrap();
            assert!((score["score"].as_f64().unwrap() - p).abs() <= 1e-5);
        }
    }
    // Not base64, or not an image: 422 naming the input.
    let (status, error) = server.post("/predict", &json!({"inputs": ["%%%"]}).to_string());
    assert_eq!(status, 422, "{error}");
    assert!(
        error["error"].as_str().unwrap().contains("inputs[0]"),
        "{error}"
    );
    // An image that does not decode fails its own request, not the one batched with it.
    let not_an_image = base64::engine::general_purpose::STANDARD.encode(b"hello");
    let send = |inputs: Value| {
        let url = server.url("/predict");
        std::thread::spawn(move || {
            match ureq::post(&url)
                .timeout(Duration::from_secs(120))
                .set("content-type", "application/json")
                .send_string(&json!({ "inputs": inputs }).to_string())
            {
                Ok(response) => response.status(),
                Err(ureq::Error::Status(status, _)) => status,
                Err(e) => panic!("{e}"),
            }
        })
    };
    let bad = send(json!([not_an_image]));
    let good = send(json!([encoded[0]]));
    assert_eq!(bad.join().unwrap(), 422);
    assert_eq!(good.join().unwrap(), 200);
    // The same files as a multipart form: the same scores, one list per file.
    let files: Vec<(&str, Vec<u8>)> = names
        .iter()
        .map(|n| (*n, std::fs::read(photos.join(n)).unwrap()))
        .collect();
    let (status, form_answer) = post_form(&server, "/predict", &files, &[]);
    assert_eq!(status, 200, "{form_answer}");
    assert_eq!(form_answer, answer);
    // A form field that is not a file, and a form with no files: 422 with a message.
    let (status, error) = post_form(&server, "/predict", &files, &[("colour", "red")]);
    assert_eq!(status, 422, "{error}");
    assert!(
        error["error"].as_str().unwrap().contains("colour"),
        "{error}"
    );
    let (status, error) = post_form(&server, "/embed", &[], &[]);
    assert_eq!(status, 422, "{error}");
    assert_eq!(server.get("/health").0, 200);
}

/// A multipart/form-data POST of image `files` (name, bytes) and text `fields`.
fn post_form(
    server: &Server,
    path: &str,
    files: &[(&str, Vec<u8>)],
    fields: &[(&str, &str)],
) -> (u16, Value) {
    let boundary = "graft-test-boundary-7d1f";
    let mut body = Vec::new();
    for (name, value) in fields {
        body.extend_from_slice(
            format!(
                "--{boundary}\r\nContent-Disposition: form-data; name=\"{name}\"\r\n\r\n{value}\r\n"
            )
            .as_bytes(),
        );
    }
    for (name, bytes) in files {
        body.extend_from_slice(
            format!(
                "--{boundary}\r\nContent-Disposition: form-data; name=\"image\"; \
                 filename=\"{name}\"\r\nContent-Type: image/png\r\n\r\n"
            )
            .as_bytes(),
        );
        body.extend_from_slice(bytes);
        body.extend_from_slice(b"\r\n");
    }
    body.extend_from_slice(format!("--{boundary}--\r\n").as_bytes());
    let request = ureq::post(&server.url(path))
        .timeout(Duration::from_secs(120))
        .set(
            "content-type",
            &format!("multipart/form-data; boundary={boundary}"),
        );
    let response = match request.send_bytes(&body) {
        Ok(response) => response,
        Err(ureq::Error::Status(_, response)) => response,
        Err(e) => panic!("POST {path}: {e}"),
    };
    let status = response.status();
    let text = response.into_string().unwrap();
    (status, serde_json::from_str(&text).unwrap())
}

/// With `--max-batch-tokens`, requests that arrive together still split into model calls within
/// the budget (inputs × the longest input's tokens), and every answer is the command's; a text
/// model refuses multipart uploads with 415.
#[test]
fn a_token_budget_bounds_each_model_call() {
    let tmp = tempfile::tempdir().unwrap();
    let minilm = repo().join("models/all-MiniLM-L6-v2");
    let want = embed_rows(&minilm, tmp.path());
    // TEXTS[0] is 12 tokens with [CLS] and [SEP]: a budget of 30 holds two of them per call.
    let server = Server::start(
        &minilm,
        &["--max-wait-ms", "400", "--max-batch-tokens", "30"],
    );
    let (_, info) = server.get("/info");
    assert!(info.contains("\"max_batch_tokens\":30"), "{info}");
    let clients: Vec<_> = (0..6)
        .map(|_| {
            let url = server.url("/embed");
            std::thread::spawn(move || {
                let body = json!({"inputs": [TEXTS[0]]}).to_string();
                let text = ureq::post(&url)
                    .timeout(Duration::from_secs(120))
                    .set("content-type", "application/json")
                    .send_string(&body)
                    .unwrap()
                    .into_string()
                    .unwrap();
                floats(&serde_json::from_str::<Value>(&text).unwrap()[0])
            })
        })
        .collect();
    for client in clients {
        let row = client.join().unwrap();
        assert!(max_diff(&row, &want[0]) <= 1e-5);
    }
    let (_, metrics) = server.get("/metrics");
    let batches: f64 = metrics
        .lines()
        .find(|l| l.starts_with("graft_batches_total"))
        .and_then(|l| l.rsplit(' ').next())
        .unwrap()
        .parse()
        .unwrap();
    assert!(
        batches >= 3.0,
        "six inputs of 12 tokens in calls of 30: {metrics}"
    );
    let (status, error) = post_form(&server, "/embed", &[("a.png", vec![1, 2, 3])], &[]);
    assert_eq!(status, 415, "{error}");
}

#[test]
fn bad_requests_get_4xx_with_a_message_and_the_server_stays_up() {
    let minilm = repo().join("models/all-MiniLM-L6-v2");
    let server = Server::start(&minilm, &["--max-inputs", "4"]);
    let cases: [(&str, u16, &str); 6] = [
        ("{not json", 422, ""),
        (r#"{"inputs": 5}"#, 422, "inputs"),
        (r#"{"inputs": []}"#, 422, "empty"),
        (r#"{"inputs": ["fine", "  "]}"#, 422, "inputs[1]"),
        (r#"{"text": "where are the inputs"}"#, 422, "inputs"),
        (
            r#"{"inputs": ["a", "b", "c", "d", "e"]}"#,
            413,
            "batch size 5",
        ),
    ];
    for (body, status, says) in cases {
        let (got, error) = server.post("/embed", body);
        assert_eq!(got, status, "{body}: {error}");
        let message = error["error"].as_str().unwrap_or_default();
        assert!(
            !message.is_empty() && message.contains(says),
            "{body}: {error}"
        );
    }
    // A body over the size limit (2 MiB) is refused before it is read: the headers announce
    // 3 MB and the answer comes without a byte of the body sent. (Sending the body whole races
    // the server closing the connection after its answer.)
    {
        use std::io::{Read, Write};
        let mut stream = std::net::TcpStream::connect(&server.address).unwrap();
        stream
            .set_read_timeout(Some(Duration::from_secs(30)))
            .unwrap();
        write!(
            stream,
            "POST /embed HTTP/1.1\r\nHost: {}\r\nContent-Type: application/json\r\n\
             Content-Length: 3000000\r\n\r\n",
            server.address
        )
        .unwrap();
        let mut answer = [0u8; 64];
        let n = stream.read(&mut answer).unwrap();
        let answer = String::from_utf8_lossy(&answer[..n]);
        assert!(answer.starts_with("HTTP/1.1 413"), "{answer}");
    }
    // Not JSON at all.
    let wrong_type = ureq::post(&server.url("/embed"))
        .set("content-type", "text/plain")
        .send_string("hello");
    assert!(matches!(wrong_type, Err(ureq::Error::Status(415, _))));
    assert_eq!(server.get("/health").0, 200);
}

#[test]
fn a_full_queue_answers_429_and_sigterm_finishes_what_was_accepted() {
    let minilm = repo().join("models/all-MiniLM-L6-v2");
    let mut server = Server::start(
        &minilm,
        &["--queue", "1", "--max-batch", "8", "--max-wait-ms", "0"],
    );
    let long: Vec<String> = (0..64)
        .map(|i| format!("review number {i}: {}", TEXTS[i % 3]))
        .collect();
    let body = json!({"inputs": long}).to_string();
    let clients: Vec<_> = (0..12)
        .map(|_| {
            let (url, body) = (server.url("/embed"), body.clone());
            std::thread::spawn(move || {
                match ureq::post(&url)
                    .timeout(Duration::from_secs(300))
                    .set("content-type", "application/json")
                    .send_string(&body)
                {
                    Ok(response) => response.status(),
                    Err(ureq::Error::Status(status, _)) => status,
                    Err(e) => panic!("{e}"),
                }
            })
        })
        .collect();
    let statuses: Vec<u16> = clients.into_iter().map(|c| c.join().unwrap()).collect();
    assert!(
        statuses.iter().all(|s| [200, 429].contains(s)),
        "{statuses:?}"
    );
    assert!(
        statuses.contains(&200) && statuses.contains(&429),
        "{statuses:?}"
    );

    // SIGTERM while a request is being answered: it is answered, then the server exits 0.
    let (url, body) = (server.url("/embed"), body.clone());
    let in_flight = std::thread::spawn(move || {
        ureq::post(&url)
            .timeout(Duration::from_secs(300))
            .set("content-type", "application/json")
            .send_string(&body)
            .map(|r| r.status())
            .unwrap_or(0)
    });
    std::thread::sleep(Duration::from_millis(300));
    let status = server.terminate();
    assert_eq!(in_flight.join().unwrap(), 200);
    assert!(status.success(), "{status}");
    let said: Vec<String> = server.log.try_iter().collect();
    assert!(said.iter().any(|l| l.contains("stopped")), "{said:?}");
}

/// An STS cross-encoder (one output) on the small BERT folder, trained for a moment.
fn sts_run(dir: &Path) -> std::path::PathBuf {
    let run = dir.join("sts");
    let config = write(
        dir,
        "sts.toml",
        &format!(
            "[model]\nbackbone = \"{}\"\n\n[data]\nformat = \"csv\"\ntrain = \"datasets/stsb-mini/test.csv\"\n\
             columns = [\"sentence1\", \"sentence2\"]\nlabel_column = \"score\"\n\
             task = \"regression\"\n\n[head]\nkind = \"native\"\n\n[train]\nepochs = 1\n\
             batch_size = 16\nbackend = \"flex\"\n\n[output]\ndir = \"{}\"\n",
            repo()
                .join("crates/graft-model/tests/golden/native_heads/bert")
                .display(),
            run.display()
        ),
    );
    ok(&["train", config.to_str().unwrap()]);
    run
}

#[test]
fn rerank_scores_each_text_with_the_query_as_graft_predict_does() {
    let tmp = tempfile::tempdir().unwrap();
    let run = sts_run(tmp.path());
    let query = "A man is playing a guitar.";
    let texts = [
        "A man plays the guitar on a stage.",
        "The cat sleeps on the sofa.",
        "Someone is playing music.",
        "Stock markets fell sharply on Monday.",
    ];
    // graft predict on the same pairs: the run's regression values.
    let mut csv = String::from("sentence1,sentence2\n");
    for text in texts {
        csv.push_str(&format!("{query},{text}\n"));
    }
    let input = write(tmp.path(), "pairs.csv", &csv);
    let values: Vec<f64> = ok(&[
        "predict",
        "--model",
        run.to_str().unwrap(),
        "--input",
        input.to_str().unwrap(),
        "--backend",
        "flex",
    ])
    .lines()
    .map(|l| {
        serde_json::from_str::<Value>(l).unwrap()["value"]
            .as_f64()
            .unwrap()
    })
    .collect();

    let server = Server::start(&run, &[]);
    let request = json!({"query": query, "texts": texts, "return_text": true});
    let (status, ranked) = server.post("/rerank", &request.to_string());
    assert_eq!(status, 200, "{ranked}");
    let ranked = ranked.as_array().unwrap();
    assert_eq!(ranked.len(), texts.len());
    for pair in ranked.windows(2) {
        assert!(pair[0]["score"].as_f64() >= pair[1]["score"].as_f64());
    }
    for entry in ranked {
        let index = entry["index"].as_u64().unwrap() as usize;
        assert_eq!(entry["text"], texts[index]);
        // As TEI and sentence-transformers' CrossEncoder: the sigmoid of the one output.
        let want = 1.0 / (1.0 + (-values[index]).exp());
        let got = entry["score"].as_f64().unwrap();
        assert!((got - want).abs() <= 1e-5, "{index}: {got} where {want}");
    }
    let request = json!({"query": query, "texts": texts, "raw_scores": true});
    let (_, raw) = server.post("/rerank", &request.to_string());
    for entry in raw.as_array().unwrap() {
        let index = entry["index"].as_u64().unwrap() as usize;
        assert!((entry["score"].as_f64().unwrap() - values[index]).abs() <= 1e-5);
        assert!(entry.get("text").is_none());
    }
    // /predict takes the pairs themselves.
    let pairs: Vec<[&str; 2]> = texts.iter().map(|t| [query, *t]).collect();
    let (status, answer) = server.post("/predict", &json!({"inputs": pairs}).to_string());
    assert_eq!(status, 200, "{answer}");
    for (scores, value) in answer.as_array().unwrap().iter().zip(&values) {
        assert!((scores[0]["score"].as_f64().unwrap() - value).abs() <= 1e-5);
    }
    // Bad requests: 422 with a message, and the server stays up.
    for (body, says) in [
        (json!({"texts": texts}), "no `query`"),
        (json!({"query": "", "texts": texts}), "query is empty"),
        (json!({"query": query, "texts": []}), "texts is empty"),
        (json!({"query": query, "texts": [1]}), "expected a string"),
        (json!({"inputs": [[query]]}), "pair of strings"),
    ] {
        let path = if body.get("inputs").is_some() {
            "/predict"
        } else {
            "/rerank"
        };
        let (status, answer) = server.post(path, &body.to_string());
        assert_eq!(status, 422, "{body}: {answer}");
        assert!(answer["error"].as_str().unwrap().contains(says), "{answer}");
    }
    // A model trained on single texts is no re-ranker of pairs.
    let folder = repo().join("crates/graft-model/tests/golden/native_heads/bert");
    let classifier = Server::start(&folder, &[]);
    let (status, answer) = classifier.post(
        "/rerank",
        &json!({"query": query, "texts": texts}).to_string(),
    );
    assert_eq!(status, 422, "{answer}");
    assert!(
        answer["error"]
            .as_str()
            .unwrap()
            .contains("not a re-ranker"),
        "{answer}"
    );
}

#[test]
fn a_token_classifier_answers_with_the_entities_graft_predict_finds() {
    let tmp = tempfile::tempdir().unwrap();
    let folder = repo().join("crates/graft-model/tests/golden/token_heads/bert");
    let texts = [
        "Angela Merkel met Emmanuel Macron in Paris.",
        "The summit in Berlin ended on Friday.",
    ];
    let input = write(tmp.path(), "texts.txt", &texts.join("\n"));
    let want: Vec<Value> = ok(&[
        "predict",
        "--model",
        folder.to_str().unwrap(),
        "--input",
        input.to_str().unwrap(),
        "--backend",
        "flex",
    ])
    .lines()
    .map(|l| serde_json::from_str(l).unwrap())
    .collect();
    assert!(
        want.iter()
            .any(|p| !p["entities"].as_array().unwrap().is_empty())
    );
    let server = Server::start(&folder, &[]);
    let (status, answer) = server.post("/predict", &json!({"inputs": texts}).to_string());
    assert_eq!(status, 200, "{answer}");
    let answer = answer.as_array().unwrap();
    for (entities, want) in answer.iter().zip(&want) {
        let (entities, want) = (
            entities.as_array().unwrap(),
            want["entities"].as_array().unwrap(),
        );
        assert_eq!(entities.len(), want.len());
        for (e, w) in entities.iter().zip(want) {
            for key in ["entity_group", "word", "start", "end"] {
                assert_eq!(e[key], w[key]);
            }
            let diff = e["score"].as_f64().unwrap() - w["score"].as_f64().unwrap();
            assert!(diff.abs() <= 1e-7, "{diff}");
        }
    }
    // A tagger is no re-ranker.
    let (status, _) = server.post(
        "/rerank",
        &json!({"query": "who", "texts": ["Angela Merkel"]}).to_string(),
    );
    assert_eq!(status, 422);
}
