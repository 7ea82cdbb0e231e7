//! The one thread that owns the model: requests queue up in a bounded channel (a full queue is
//! the caller's 429), and the thread takes them in dynamic batches, as many inputs as the batch
//! holds (in inputs, and in padded tokens when a token budget is set) or as arrive within the
//! wait, one model call per kind of request.

use std::sync::mpsc::{Receiver, RecvTimeoutError, SyncSender, TrySendError, sync_channel};
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

use graft_train::{EmbedOptions, Example, Model, Prediction, Silent};
use tokio::sync::oneshot;

use crate::metrics::Metrics;

/// What a request asks of the model.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Work {
    /// Embeddings, normalized or not (`None`: the folder's default).
    Embed {
        normalize: Option<bool>,
    },
    Predict,
}

/// A request's answer: one row per input, in order.
pub enum Answer {
    Embeddings(Vec<Vec<f32>>),
    Predictions(Vec<Prediction>),
}

struct Job {
    work: Work,
    inputs: Vec<Example>,
    reply: oneshot::Sender<Result<Answer, String>>,
}

/// How requests are batched.
#[derive(Debug, Clone, Copy)]
pub struct Batching {
    /// Inputs in one model call at most.
    pub max_batch: usize,
    /// How long the first request of a batch waits for others.
    pub max_wait: Duration,
    /// Requests waiting at most; more are refused.
    pub queue: usize,
    /// Padded tokens in one model call at most (inputs × the longest input's tokens), as
    /// text-embeddings-inference's `--max-batch-tokens`; a request over it runs alone.
    pub max_tokens: Option<usize>,
}

/// What a batch holds so far: inputs, and the longest input's tokens.
#[derive(Default, Clone, Copy)]
struct Load {
    inputs: usize,
    longest: usize,
}

impl Load {
    fn of(model: &Model, job: &Job, budget: Option<usize>) -> Self {
        let longest = budget
            .and_then(|_| model.token_lengths(&job.inputs))
            .and_then(|lengths| lengths.into_iter().max())
            .unwrap_or(0);
        Load {
            inputs: job.inputs.len(),
            longest,
        }
    }

    fn with(self, other: Load) -> Load {
        Load {
            inputs: self.inputs + other.inputs,
            longest: self.longest.max(other.longest),
        }
    }

    /// Whether a batch of this load stays within `batching`'s limits.
    fn fits(self, batching: &Batching) -> bool {
        self.inputs <= batching.max_batch
            && batching
                .max_tokens
                .is_none_or(|budget| self.inputs * self.longest <= budget)
    }
}

/// The sending side, shared by the request handlers.
#[derive(Clone)]
pub struct Batcher {
    jobs: SyncSender<Job>,
}

/// Why a request got no answer.
pub enum Refusal {
    /// The queue is full.
    Busy,
    /// The model failed on these inputs (the message says why).
    Failed(String),
}

impl Batcher {
    /// Starts the thread that owns `model`; it ends when every `Batcher` is dropped.
    pub fn start(model: Model, batching: Batching, metrics: Metrics) -> (Self, JoinHandle<()>) {
        let (jobs, queue) = sync_channel(batching.queue.max(1));
        let worker = std::thread::Builder::new()
            .name("graft-model".into())
            .spawn(move || run(model, queue, batching, metrics))
            .expect("the model thread starts");
        (Batcher { jobs }, worker)
    }

    /// Queues `inputs` and waits for their answer.
    pub async fn ask(&self, work: Work, inputs: Vec<Example>) -> Result<Answer, Refusal> {
        let (reply, answer) = oneshot::channel();
        match self.jobs.try_send(Job {
            work,
            inputs,
            reply,
        }) {
            Ok(()) => {}
            Err(TrySendError::Full(_)) => return Err(Refusal::Busy),
            Err(TrySendError::Disconnected(_)) => {
                return Err(Refusal::Failed("the model thread has stopped".into()));
            }
        }
        match answer.await {
            Ok(result) => result.map_err(Refusal::Failed),
            Err(_) => Err(Refusal::Failed("the model thread has stopped".into())),
        }
    }
}

fn run(model: Model, queue: Receiver<Job>, batching: Batching, metrics: Metrics) {
    // A job that did not fit the last batch opens the next one.
    let mut held: Option<(Job, Load)> = None;
    loop {
        let (first, first_load) = match held.take() {
            Some(held) => held,
            None => match queue.recv() {
                Ok(job) => {
                    let load = Load::of(&model, &job, batching.max_tokens);
                    (job, load)
                }
                Err(_) => break,
            },
        };
        // The batch: the first job, then whatever arrives within the wait and fits.
        let deadline = Instant::now() + batching.max_wait;
        let mut load = first_load;
        let mut batch = vec![first];
        while load.inputs < batching.max_batch {
            let left = deadline.saturating_duration_since(Instant::now());
            match queue.recv_timeout(left) {
                Ok(job) => {
                    let job_load = Load::of(&model, &job, batching.max_tokens);
                    if !load.with(job_load).fits(&batching) {
                        held = Some((job, job_load));
                        break;
                    }
                    load = load.with(job_load);
                    batch.push(job);
                }
                Err(RecvTimeoutError::Timeout | RecvTimeoutError::Disconnected) => break,
            }
        }
        // One model call per kind of work, the jobs' inputs one after another.
        while let Some(work) = batch.first().map(|job| job.work) {
            let (same, rest): (Vec<Job>, Vec<Job>) =
                batch.into_iter().partition(|job| job.work == work);
            batch = rest;
            answer(&model, work, same, batching.max_batch, &metrics);
        }
    }
}

fn answer(model: &Model, work: Work, jobs: Vec<Job>, max_batch: usize, metrics: &Metrics) {
    let inputs: Vec<Example> = jobs.iter().flat_map(|job| job.inputs.clone()).collect();
    metrics.batch(inputs.len());
    let rows = match work {
        Work::Embed { normalize } => {
            let options = EmbedOptions {
                normalize,
                batch_size: max_batch,
                ..EmbedOptions::default()
            };
            model.embed(&inputs, &options, &Silent).map(|e| {
                let rows: Vec<Vec<f32>> = e.values.chunks(e.width).map(<[f32]>::to_vec).collect();
                Answer::Embeddings(rows)
            })
        }
        Work::Predict => model
            .predict(&inputs, max_batch, &Silent)
            .map(Answer::Predictions),
    };
    match rows {
        Ok(Answer::Embeddings(mut rows)) => {
            for job in jobs.into_iter().rev() {
                let mine = rows.split_off(rows.len() - job.inputs.len());
                let _ = job.reply.send(Ok(Answer::Embeddings(mine)));
            }
        }
        Ok(Answer::Predictions(mut rows)) => {
            for job in jobs.into_iter().rev() {
                let mine = rows.split_off(rows.len() - job.inputs.len());
                let _ = job.reply.send(Ok(Answer::Predictions(mine)));
            }
        }
        // One request's bad input (an image that does not decode) must not fail the others
        // batched with it: each is answered on its own.
        Err(_) if jobs.len() > 1 => {
            for job in jobs {
                answer(model, work, vec![job], max_batch, metrics);
            }
        }
        Err(error) => {
            let message = error.to_string();
            for job in jobs {
                let _ = job.reply.send(Err(message.clone()));
            }
        }
    }
}
