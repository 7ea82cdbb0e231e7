//! The server's counters, written in Prometheus' text format for `GET /metrics`.

use std::collections::BTreeMap;
use std::fmt::Write;
use std::sync::{Arc, Mutex};

/// Request counts and latencies by endpoint and status, batch sizes.
#[derive(Clone, Default)]
pub struct Metrics {
    inner: Arc<Mutex<Counts>>,
}

#[derive(Default)]
struct Counts {
    /// (endpoint, status) → requests.
    requests: BTreeMap<(String, u16), u64>,
    /// endpoint → (seconds, requests answered).
    latency: BTreeMap<String, (f64, u64)>,
    batches: u64,
    batch_inputs: u64,
}

impl Metrics {
    fn counts(&self) -> std::sync::MutexGuard<'_, Counts> {
        self.inner.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// One request to `endpoint`, answered with `status` after `seconds`.
    pub fn request(&self, endpoint: &str, status: u16, seconds: f64) {
        let mut counts = self.counts();
        *counts
            .requests
            .entry((endpoint.to_string(), status))
            .or_default() += 1;
        let latency = counts.latency.entry(endpoint.to_string()).or_default();
        latency.0 += seconds;
        latency.1 += 1;
    }

    /// One model call over `inputs` inputs.
    pub fn batch(&self, inputs: usize) {
        let mut counts = self.counts();
        counts.batches += 1;
        counts.batch_inputs += inputs as u64;
    }

    /// The Prometheus text exposition.
    pub fn render(&self) -> String {
        let counts = self.counts();
        let mut out = String::new();
        out.push_str("# HELP graft_requests_total Requests answered, by endpoint and status.\n");
        out.push_str("# TYPE graft_requests_total counter\n");
        for ((endpoint, status), n) in &counts.requests {
            let _ = writeln!(
                out,
                "graft_requests_total{{endpoint=\"{endpoint}\",status=\"{status}\"}} {n}"
            );
        }
        out.push_str("# HELP graft_request_duration_seconds Time to answer, by endpoint.\n");
        out.push_str("# TYPE graft_request_duration_seconds summary\n");
        for (endpoint, (seconds, n)) in &counts.latency {
            let _ = writeln!(
                out,
                "graft_request_duration_seconds_sum{{endpoint=\"{endpoint}\"}} {seconds}"
            );
            let _ = writeln!(
                out,
                "graft_request_duration_seconds_count{{endpoint=\"{endpoint}\"}} {n}"
            );
        }
        out.push_str("# HELP graft_batches_total Model calls.\n");
        out.push_str("# TYPE graft_batches_total counter\n");
        let _ = writeln!(out, "graft_batches_total {}", counts.batches);
        out.push_str("# HELP graft_batch_inputs_total Inputs over all model calls.\n");
        out.push_str("# TYPE graft_batch_inputs_total counter\n");
        let _ = writeln!(out, "graft_batch_inputs_total {}", counts.batch_inputs);
        out
    }
}
