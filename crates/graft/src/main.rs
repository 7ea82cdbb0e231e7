//! The `graft` command: a thin clap front end over graft-train. Each subcommand parses its
//! arguments, calls one library function and prints the result.

mod infer;
mod render;

use std::io::Write;
use std::path::PathBuf;
use std::process::ExitCode;

use anyhow::{Context, Result};
use clap::{Parser, Subcommand};
use graft_model::Pooling;
use graft_train::{
    Backend, Config, EmbedOptions, Input, Precision, Resume, TrainOptions, TrainPlan,
};

use crate::infer::Compute;
use crate::render::Renderer;

#[derive(Parser)]
#[command(
    name = "graft",
    version,
    about = "Fine-tune open pretrained models on your own data"
)]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

/// What `graft export` writes.
#[derive(Clone, Copy, Debug, clap::ValueEnum)]
enum ExportFormat {
    Native,
    Onnx,
}

#[derive(Subcommand)]
enum Command {
    /// Train from a TOML config, then evaluate on its test file.
    Train {
        config: PathBuf,
        /// Overrides the config's `train.backend`.
        #[arg(long)]
        backend: Option<Backend>,
        /// Continue from the output folder's last complete checkpoint.
        #[arg(long)]
        resume: bool,
        /// Replace a run already in the output folder (it stays until the new one is whole);
        /// with --resume: continue even though the config changed.
        #[arg(long)]
        force: bool,
        /// Print every tensor as trainable or frozen, with counts, and exit without training.
        #[arg(long)]
        dry_run: bool,
        /// Overrides the config's `train.precision` (f32, f16 or bf16).
        #[arg(long)]
        precision: Option<Precision>,
        /// Overrides the config's `train.devices`: split each batch over this many devices.
        #[arg(long, value_parser = clap::value_parser!(u64).range(1..))]
        devices: Option<u64>,
        /// Compute the features that `graft features --shard` workers left missing from the
        /// cache, instead of refusing to train.
        #[arg(long)]
        compute_missing: bool,
    },
    /// One worker's share of a frozen-backbone config's feature pass, into its cache: run N of
    /// them (a Kubernetes Indexed Job, a Slurm array, or N processes), then `graft train` on the
    /// same config trains the head on the cached features.
    Features {
        config: PathBuf,
        /// I/N (0-based), `auto` (a Slurm array task) or `auto/N` (a Kubernetes Indexed Job's
        /// JOB_COMPLETION_INDEX).
        #[arg(long, default_value = "0/1")]
        shard: String,
        /// Overrides the config's `train.backend`.
        #[arg(long)]
        backend: Option<Backend>,
    },
    /// Score a trained run on labelled data: accuracy, macro-F1, per-class report, confusion matrix.
    Eval {
        #[arg(long)]
        model: PathBuf,
        #[arg(long)]
        data: PathBuf,
        /// Write the report as JSON here.
        #[arg(long)]
        output: Option<PathBuf>,
        /// Where to draw the confusion matrix (regression: predicted against true values)
        /// [default: confusion_matrix.png or predicted_vs_true.png in the run folder].
        #[arg(long)]
        plot: Option<PathBuf>,
        /// Text column (default: the one the run was trained on).
        #[arg(long)]
        column: Option<String>,
        /// Pairs of texts: the column of the second text (default: the run's).
        #[arg(long)]
        pair_column: Option<String>,
        /// Embedding triplets: the column of the negative text (default: the run's).
        #[arg(long)]
        negative_column: Option<String>,
        /// Label column (default: the one the run was trained on).
        #[arg(long)]
        label_column: Option<String>,
        #[arg(long, default_value_t = 32, value_parser = clap::value_parser!(u64).range(1..))]
        batch_size: u64,
        #[arg(long, default_value = "auto")]
        backend: Backend,
        /// Float type of the backbone's pass: f32, f16 or bf16 (the outputs are f32).
        #[arg(long, default_value = "f32")]
        precision: Precision,
    },
    /// Predict labels: one JSON line per input text, in order.
    Predict {
        #[arg(long)]
        model: PathBuf,
        /// A text file with one text per line, or CSV/JSONL/parquet with --column.
        #[arg(long)]
        input: PathBuf,
        #[arg(long)]
        output: Option<PathBuf>,
        #[arg(long)]
        column: Option<String>,
        /// Pairs of texts: the column of the second text (default: the run's).
        #[arg(long)]
        pair_column: Option<String>,
        #[arg(long, default_value_t = 32, value_parser = clap::value_parser!(u64).range(1..))]
        batch_size: u64,
        #[arg(long, default_value = "auto")]
        backend: Backend,
        /// Float type of the backbone's pass: f32, f16 or bf16 (the outputs are f32).
        #[arg(long, default_value = "f32")]
        precision: Precision,
    },
    /// Serve a run, a PEFT adapter or a model folder over HTTP: text-embeddings-inference's
    /// POST /embed and /predict, GET /health, /info and /metrics, and OpenAI's
    /// POST /v1/embeddings; requests are batched together; SIGTERM finishes what was accepted.
    Serve {
        #[arg(long)]
        model: PathBuf,
        #[arg(long, default_value = "127.0.0.1")]
        host: std::net::IpAddr,
        /// 0: any free port (the address is printed).
        #[arg(long, default_value_t = 8080)]
        port: u16,
        #[arg(long, default_value = "auto")]
        backend: Backend,
        /// Float type of the backbone's pass: f32, f16 or bf16 (the outputs are f32).
        #[arg(long, default_value = "f32")]
        precision: Precision,
        /// Inputs in one model call at most, across requests.
        #[arg(long, default_value_t = 32, value_parser = clap::value_parser!(u64).range(1..))]
        max_batch: u64,
        /// Padded tokens in one model call at most (inputs × the longest input's tokens), as
        /// text-embeddings-inference's; a request over it runs alone.
        #[arg(long, value_parser = clap::value_parser!(u64).range(1..))]
        max_batch_tokens: Option<u64>,
        /// How long a request waits for others to share its model call.
        #[arg(long, default_value_t = 5)]
        max_wait_ms: u64,
        /// Requests waiting for the model at most; more are answered 429.
        #[arg(long, default_value_t = 256, value_parser = clap::value_parser!(u64).range(1..))]
        queue: u64,
        /// Inputs in one request at most; more are answered 413.
        #[arg(long, default_value_t = 256, value_parser = clap::value_parser!(u64).range(1..))]
        max_inputs: u64,
    },
    /// Embed texts with a pretrained model folder as it is.
    Embed {
        #[arg(long)]
        model: PathBuf,
        #[arg(long)]
        input: PathBuf,
        /// A .safetensors file with one f32 tensor `embeddings` [N, hidden]; with --shard, a
        /// folder for the shard's file and `manifest.json`.
        #[arg(long)]
        output: PathBuf,
        /// Embed only the I-th of N contiguous slices of the inputs (0-based; `auto` or
        /// `auto/N` read a Slurm array task or a Kubernetes Indexed Job), for N workers.
        #[arg(long)]
        shard: Option<String>,
        #[arg(long)]
        column: Option<String>,
        /// Default: the folder's sentence-transformers pooling, else mean.
        #[arg(long)]
        pooling: Option<Pooling>,
        /// L2-normalize (default: the folder's sentence-transformers setting).
        #[arg(long, overrides_with = "no_normalize")]
        normalize: bool,
        /// Do not L2-normalize, even if the folder's sentence-transformers setting does.
        #[arg(long, overrides_with = "normalize")]
        no_normalize: bool,
        #[arg(long)]
        max_length: Option<usize>,
        #[arg(long, default_value_t = 32, value_parser = clap::value_parser!(u64).range(1..))]
        batch_size: u64,
        #[arg(long, default_value = "auto")]
        backend: Backend,
        /// Float type of the backbone's pass: f32, f16 or bf16 (the outputs are f32).
        #[arg(long, default_value = "f32")]
        precision: Precision,
    },
    /// Export a trained run as a transformers, sentence-transformers, timm or torchvision folder, or a LoRA run as a PEFT adapter folder; with --format onnx, a run or a model folder as an ONNX model.
    Export {
        #[arg(long)]
        model: PathBuf,
        #[arg(long)]
        out: PathBuf,
        /// `native`: the folder the family's Python library loads; `onnx`: `model.onnx` (logits
        /// and features, variable batch and sequence length) with the tokenizer and labels.
        #[arg(long, value_enum, default_value = "native")]
        format: ExportFormat,
        /// For a LoRA run: fold the adapters into the weights and write the plain folder
        /// (without it, a LoRA run exports as a PEFT adapter folder).
        #[arg(long)]
        merge: bool,
        /// Replace what is already at --out (it stays until the new export is whole).
        #[arg(long)]
        force: bool,
    },
    /// Write a commented starter config from a model and a data file: the text or image and
    /// label columns and the task are detected from the data.
    Init {
        /// A model folder or a Hugging Face Hub id (`org/name`, `timm/name`).
        #[arg(long)]
        model: String,
        /// The training data: a CSV, JSONL or parquet file, or an image folder.
        #[arg(long)]
        train: PathBuf,
        /// A held-out test file.
        #[arg(long)]
        test: Option<PathBuf>,
        #[arg(long, default_value = "graft.toml")]
        out: PathBuf,
        /// Replace an existing file.
        #[arg(long)]
        force: bool,
    },
    /// List the tensors of a .safetensors file, a model folder, a TensorFlow checkpoint or
    /// SavedModel, or a Keras file (.keras, .weights.h5, .h5).
    Inspect { path: PathBuf },
    /// Convert a PyTorch checkpoint (.pth/.pt, zip or legacy format) to safetensors, without
    /// executing any pickled code; a Google BERT or ELECTRA TensorFlow release (a folder with a
    /// checkpoint, vocab.txt and, for BERT, bert_config.json) or a TF Hub BERT encoder
    /// SavedModel folder to the transformers folder OUTPUT;
    /// or a Keras Applications ResNet (.keras, .weights.h5, .h5) to a transformers ResNet
    /// folder OUTPUT, an EfficientNetB0-B7 or MobileNetV3 to timm's TensorFlow port of it where
    /// one exists, else to a graft vision folder.
    Convert {
        input: PathBuf,
        output: PathBuf,
        /// Take only the tensors under this prefix (e.g. `state_dict` or `model`) and strip it;
        /// by default a `state_dict`, `model_state_dict`, `model` or `module` wrapper is removed.
        #[arg(long)]
        key_prefix: Option<String>,
    },
    /// Measure speed (see BENCHMARKS.md); prints one JSON object.
    Bench {
        #[command(subcommand)]
        what: BenchCommand,
    },
}

#[derive(Subcommand)]
enum BenchCommand {
    /// Backbone forward throughput on one full [batch, seq-len] batch of real texts.
    Forward {
        #[arg(long)]
        model: PathBuf,
        /// CSV/JSONL with --column, or one text per line.
        #[arg(long)]
        data: PathBuf,
        #[arg(long)]
        column: Option<String>,
        #[arg(long, default_value = "flex")]
        backend: Backend,
        #[arg(long, default_value_t = 32)]
        batch: usize,
        #[arg(long, default_value_t = 128)]
        seq_len: usize,
        #[arg(long, default_value_t = 5)]
        repeats: usize,
        /// Float type of the pass: f32, f16 or bf16.
        #[arg(long, default_value = "f32")]
        precision: Precision,
        /// CPU threads (default: one per core). The references get the same count.
        #[arg(long)]
        threads: Option<usize>,
        /// A Python with torch, sentence-transformers and onnxruntime: also time the same batch
        /// on PyTorch and ONNX Runtime and report the three side by side.
        #[arg(long, value_name = "PYTHON")]
        compare: Option<PathBuf>,
    },
    /// Embedding a data set in file order against length-bucketed batches.
    Bucketing {
        #[arg(long)]
        model: PathBuf,
        #[arg(long)]
        data: PathBuf,
        #[arg(long)]
        column: Option<String>,
        #[arg(long, default_value = "flex")]
        backend: Backend,
        #[arg(long, default_value_t = 32)]
        batch: usize,
        #[arg(long, default_value_t = 256)]
        max_length: usize,
        /// Use only the first N texts.
        #[arg(long)]
        limit: Option<usize>,
    },
}

/// Exit codes: 0 success, 1 a failed run or bad input, 2 a usage error (clap's), 130 and 143 a
/// training run stopped by SIGINT or SIGTERM.
fn main() -> ExitCode {
    let cli = Cli::parse();
    // A panic inside a dependency on a malformed file is reported as a clear error naming the
    // file; only other panics (bugs) print the panic message.
    let report = std::panic::take_hook();
    std::panic::set_hook(Box::new(move |info| {
        if !graft_data::guard::active() {
            report(info)
        }
    }));
    graft_train::prepare_headless_runtime();
    graft_train::prefer_quick_autotune();
    match run(cli) {
        Ok(()) => ExitCode::SUCCESS,
        // A closed pipe (`graft predict ... | head -1`) is the reader's choice, not a failure.
        Err(error) if is_broken_pipe(&error) => ExitCode::SUCCESS,
        Err(error) => {
            eprintln!("error: {}", describe(&error));
            // A run stopped by SIGINT or SIGTERM exits as the signal would have (130, 143).
            let signal = error.chain().find_map(|cause| match cause.downcast_ref() {
                Some(graft_train::TrainError::Interrupted { signal, .. }) => Some(*signal),
                _ => None,
            });
            signal.map_or(ExitCode::FAILURE, |s| {
                ExitCode::from(render::signal_status(s))
            })
        }
    }
}

fn is_broken_pipe(error: &anyhow::Error) -> bool {
    error.chain().any(|cause| {
        cause
            .downcast_ref::<std::io::Error>()
            .is_some_and(|e| e.kind() == std::io::ErrorKind::BrokenPipe)
    })
}

/// The error and its causes, each cause shown once (library errors already quote their source).
fn describe(error: &anyhow::Error) -> String {
    let mut text = String::new();
    for cause in error.chain() {
        let message = cause.to_string();
        if !text.contains(&message) {
            if !text.is_empty() {
                text.push_str(": ");
            }
            text.push_str(&message);
        }
    }
    text
}

/// The library names the ways on in its own words; the command line adds the flags that take
/// them (`occupied`: this command's for a folder that is already taken).
fn with_flags(error: graft_train::TrainError, occupied: &str) -> anyhow::Error {
    use graft_train::TrainError as E;
    let flags = match &error {
        E::Occupied { .. } => occupied,
        E::Interrupted {
            resumable: true, ..
        } => "graft train --resume continues it",
        E::NothingToResume { .. } => "train without --resume",
        E::ConfigChanged { .. } => "graft train --resume --force resumes anyway",
        E::NeedsColumn { .. } => "--column names it",
        E::ShardsMissing { .. } => {
            "the `graft features CONFIG --shard I/N` workers compute them; graft train \
             --compute-missing computes them here"
        }
        _ => return error.into(),
    };
    WithFlags {
        flags: flags.to_string(),
        error,
    }
    .into()
}

/// A library error with the flags that answer it; the error stays in the chain (the exit status
/// of a stopped run is read from it).
#[derive(Debug)]
struct WithFlags {
    error: graft_train::TrainError,
    flags: String,
}

impl std::fmt::Display for WithFlags {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{} ({})", self.error, self.flags)
    }
}

impl std::error::Error for WithFlags {
    fn source(&self) -> Option<&(dyn std::error::Error + 'static)> {
        Some(&self.error)
    }
}

/// Prints a line to stdout; a closed pipe ends the command quietly (see `main`).
macro_rules! say {
    ($($arg:tt)*) => {
        writeln!(std::io::stdout(), $($arg)*)?
    };
}

fn run(cli: Cli) -> Result<()> {
    let mut renderer = Renderer::new();
    if matches!(
        cli.command,
        Command::Train { dry_run: false, .. } | Command::Features { .. }
    ) {
        renderer.catch_signals()?;
    }
    match cli.command {
        Command::Train {
            config,
            backend,
            resume,
            force,
            dry_run,
            precision,
            devices,
            compute_missing,
        } => {
            let mut parsed = Config::from_file(&config)?;
            if let Some(precision) = precision {
                parsed.train.precision = precision;
            }
            if let Some(devices) = devices {
                parsed.train.devices = devices as usize;
            }
            if dry_run {
                let plan = graft_train::plan(&parsed)
                    .with_context(|| format!("planning {}", config.display()))?;
                print_plan(&plan)?;
                return Ok(());
            }
            let options = TrainOptions {
                backend,
                resume: match (resume, force) {
                    (false, _) => Resume::No,
                    (true, false) => Resume::Yes,
                    (true, true) => Resume::Force,
                },
                replace: force && !resume,
                compute_missing,
            };
            let report = graft_train::train(&parsed, &options, &renderer)
                .map_err(|e| {
                    with_flags(
                        e,
                        "graft train --force replaces it; --resume continues an unfinished run",
                    )
                })
                .with_context(|| format!("training {}", config.display()))?;
            renderer.clear();
            say!(
                "run saved to {} (best epoch {}{}, {:.1}s total, {:.1}s computing features)",
                report.run_dir.display(),
                report.best_epoch,
                if report.stopped_early {
                    ", stopped early"
                } else {
                    ""
                },
                report.total_seconds,
                report.feature_seconds
            );
            if let Some(test) = &report.test {
                say!("\ntest set\n{}", test.to_table());
            }
        }
        Command::Init {
            model,
            train,
            test,
            out,
            force,
        } => {
            if out.exists() && !force {
                anyhow::bail!(
                    "{} already exists; pass --force to replace it",
                    out.display()
                );
            }
            let starter =
                graft_train::starter_config(&graft_train::InitRequest { model, train, test })?;
            graft_train::write_atomic(&out, starter.text.as_bytes())?;
            for line in &starter.summary {
                say!("{line}");
            }
            say!(
                "wrote {}; train with: graft train {}",
                out.display(),
                out.display()
            );
        }
        Command::Features {
            config,
            shard,
            backend,
        } => {
            let parsed = Config::from_file(&config)?;
            let shard = graft_train::Shard::parse(&shard, |name| std::env::var(name).ok())
                .map_err(|e| anyhow::anyhow!("--shard {e}"))?;
            let report = graft_train::compute_features(&parsed, shard, backend, &renderer)
                .map_err(|e| with_flags(e, ""))
                .with_context(|| format!("computing the features of {}", config.display()))?;
            renderer.clear();
            say!(
                "shard {}: {} features computed, {} already cached, under {}",
                report.shard,
                report.computed,
                report.reused,
                report.cache_dir.display()
            );
        }
        Command::Eval {
            model,
            data,
            output,
            plot,
            column,
            pair_column,
            negative_column,
            label_column,
            batch_size,
            backend,
            precision,
        } => {
            let input = Input {
                path: data,
                column,
                pair_column,
                negative_column,
            };
            let evaluation = infer::evaluate(
                &model,
                &input,
                label_column.as_deref(),
                batch_size as usize,
                Compute { backend, precision },
                &renderer,
            )
            .map_err(|e| with_flags(e, ""))?;
            renderer.clear();
            let report = &evaluation.report;
            say!("{}", report.to_table());
            if let Some(path) = output {
                graft_train::write_json_atomic(&path, report)?;
                say!("report written to {}", path.display());
            }
            if let Some(drawn) = evaluation.plot {
                let path = plot.unwrap_or_else(|| model.join(drawn.name));
                let image = drawn.image.map_err(anyhow::Error::msg)?;
                graft_train::save_png(&path, &image)?;
                say!("plot written to {}", path.display());
            }
        }
        Command::Serve {
            model,
            host,
            port,
            backend,
            max_batch,
            max_batch_tokens,
            max_wait_ms,
            queue,
            max_inputs,
            precision,
        } => {
            graft_train::ModelSource::identify(&model).map_err(|e| with_flags(e, ""))?;
            let opened = Compute { backend, precision }
                .open(&model, &renderer)
                .map_err(|e| with_flags(e, ""))?;
            let options = graft_serve::ServeOptions {
                address: std::net::SocketAddr::new(host, port),
                max_batch: max_batch as usize,
                max_batch_tokens: max_batch_tokens.map(|t| t as usize),
                max_wait: std::time::Duration::from_millis(max_wait_ms),
                queue: queue as usize,
                max_inputs: max_inputs as usize,
                ..Default::default()
            };
            let id = model.display().to_string();
            graft_serve::serve(opened, &id, &options, |address| {
                eprintln!("serving {id} on http://{address}");
            })?;
            eprintln!("stopped");
        }
        Command::Predict {
            model,
            input,
            output,
            column,
            pair_column,
            batch_size,
            backend,
            precision,
        } => {
            let input = Input {
                path: input,
                column,
                pair_column,
                negative_column: None,
            };
            let compute = Compute { backend, precision };
            let predictions =
                infer::predict(&model, &input, batch_size as usize, compute, &renderer)
                    .map_err(|e| with_flags(e, ""))?;
            renderer.clear();
            let mut lines = String::new();
            for p in &predictions {
                lines += &serde_json::to_string(p)?;
                lines.push('\n');
            }
            match output {
                Some(path) => {
                    graft_train::write_atomic(&path, lines.as_bytes())?;
                    eprintln!(
                        "{} predictions written to {}",
                        predictions.len(),
                        path.display()
                    );
                }
                None => std::io::stdout().write_all(lines.as_bytes())?,
            }
        }
        Command::Embed {
            model,
            input,
            output,
            column,
            pooling,
            normalize,
            no_normalize,
            max_length,
            batch_size,
            backend,
            precision,
            shard,
        } => {
            let shard = shard
                .map(|spec| graft_train::Shard::parse(&spec, |name| std::env::var(name).ok()))
                .transpose()
                .map_err(|e| anyhow::anyhow!("--shard {e}"))?;
            let options = EmbedOptions {
                pooling,
                normalize: match (normalize, no_normalize) {
                    (true, _) => Some(true),
                    (_, true) => Some(false),
                    _ => None,
                },
                max_length,
                batch_size: batch_size as usize,
            };
            let input = Input {
                path: input,
                column,
                pair_column: None,
                negative_column: None,
            };
            let compute = Compute { backend, precision };
            let embeddings =
                infer::embed(&model, &input, &options, compute, &output, shard, &renderer)
                    .map_err(|e| with_flags(e, ""))?;
            renderer.clear();
            say!(
                "{} embeddings of width {} ({} pooling{}) written to {}",
                embeddings.n,
                embeddings.width,
                embeddings
                    .pooling
                    .map_or("the architecture's".to_string(), |p| p.to_string()),
                if embeddings.normalize {
                    ", normalized"
                } else {
                    ""
                },
                output.display()
            );
        }
        Command::Export {
            model,
            out,
            format,
            merge,
            force,
        } => {
            let layout = match format {
                ExportFormat::Native => graft_train::export(&model, &out, merge, force),
                ExportFormat::Onnx if merge => Err(graft_train::TrainError::Unsupported(
                    "an ONNX export always has a LoRA run's adapters folded in; leave out --merge"
                        .into(),
                )),
                ExportFormat::Onnx => graft_train::export_onnx(&model, &out, force),
            }
            .map_err(|e| with_flags(e, "graft export --force replaces it"))?;
            renderer.clear();
            say!(
                "exported {} as {layout} to {}",
                model.display(),
                out.display()
            );
        }
        Command::Inspect { path } => {
            let report = graft_train::inspect(&path)?;
            for (name, info) in &report.tensors {
                say!("{name:<60} {:<5} {:?}", info.dtype, info.shape);
            }
            say!(
                "\n{} tensors, {} parameters",
                report.tensors.len(),
                report.num_parameters
            );
            say!(
                "architecture: {}",
                report.architecture.as_deref().unwrap_or("unknown")
            );
        }
        Command::Convert {
            input,
            output,
            key_prefix: None,
        } if graft_model::google_release::release_dir(&input).is_some() => {
            let dir = graft_model::google_release::release_dir(&input).unwrap_or(input);
            let converted = graft_model::google_release::convert(&dir, &output)?;
            say!(
                "{} tensors ({} parameters) written to {} as a transformers folder \
                 ({} checkpoint tensors left out: pre-training heads, optimizer state, the step; \
                 text {}lower-cased)",
                converted.tensors,
                converted.parameters,
                output.display(),
                converted.skipped,
                if converted.lowercase { "" } else { "not " }
            );
        }
        Command::Convert {
            input,
            output,
            key_prefix: None,
        } if graft_model::keras::is_keras_file(&input) => {
            let converted = graft_model::keras_applications::convert(&input, &output)?;
            say!(
                "Keras {} ({} classes): {} tensors ({} parameters) written to {} as a {} folder \
                 (Keras' numerics and preprocessing kept)",
                converted.model,
                converted.classes,
                converted.tensors,
                converted.parameters,
                output.display(),
                match converted.layout {
                    "transformers" => "transformers ResNet",
                    "timm" => "timm",
                    _ => "graft vision",
                }
            );
        }
        Command::Convert {
            input,
            output,
            key_prefix,
        } => {
            let converted = graft_model::pth::convert(&input, &output, key_prefix.as_deref())?;
            say!(
                "{} tensors ({} parameters) written to {}{}",
                converted.tensors,
                converted.parameters,
                output.display(),
                converted
                    .stripped_prefix
                    .map_or(String::new(), |p| format!(" (prefix `{p}` removed)"))
            );
        }
        Command::Bench { what } => bench(what)?,
    }
    Ok(())
}

fn print_plan(plan: &TrainPlan) -> Result<()> {
    for t in &plan.tensors {
        let state = match (t.trainable, t.unfreezes_at) {
            (true, _) => format!("trainable  lr {:.2e}  wd {}", t.lr, t.weight_decay),
            (false, Some(epoch)) => {
                format!("frozen     (trains from epoch {epoch}, lr {:.2e})", t.lr)
            }
            (false, None) => "frozen".to_string(),
        };
        say!("{:<58} {:<14} {state}", t.name, format!("{:?}", t.shape));
    }
    say!(
        "\ntrainable parameters: {}\nfrozen parameters:    {}",
        plan.trainable_parameters,
        plan.frozen_parameters
    );
    for (epoch, trainable) in &plan.unfreeze {
        say!("from epoch {epoch}: {trainable} trainable parameters");
    }
    say!(
        "{} optimizer steps per epoch, {} in all; backbone features {}",
        plan.steps_per_epoch,
        plan.total_steps,
        if plan.feature_cache {
            "computed once (feature cache)"
        } else {
            "computed every step"
        }
    );
    Ok(())
}

fn read_texts(data: PathBuf, column: Option<String>, limit: Option<usize>) -> Result<Vec<String>> {
    let input = Input {
        path: data,
        column,
        pair_column: None,
        negative_column: None,
    };
    let mut texts: Vec<String> =
        graft_train::read_input(graft_model::Modality::Text, &input, None)?
            .into_iter()
            .map(|e| e.text)
            .collect();
    if let Some(limit) = limit {
        texts.truncate(limit);
    }
    Ok(texts)
}

fn bench(what: BenchCommand) -> Result<()> {
    use graft_train::bench;
    let report = match what {
        BenchCommand::Forward {
            model,
            data,
            column,
            backend,
            batch,
            seq_len,
            repeats,
            precision,
            threads,
            compare,
        } => {
            if let Some(threads) = threads {
                graft_train::bench::set_threads(threads)?;
            }
            let texts = read_texts(data.clone(), column.clone(), None)?;
            let texts: Vec<&str> = texts.iter().map(String::as_str).collect();
            let graft = bench::forward_throughput(
                &model, &texts, backend, batch, seq_len, repeats, precision,
            )?;
            let Some(python) = compare else {
                return report(serde_json::to_value(graft)?);
            };
            let run = bench::ReferenceRun {
                python,
                model,
                data,
                column: column.unwrap_or_else(|| "text".into()),
                batch,
                seq_len,
                repeats,
                threads: graft_train::bench::threads(),
            };
            let side_by_side = bench::compare_forward(graft, &run)?;
            eprintln!("{}", side_by_side.table());
            serde_json::to_value(side_by_side)?
        }
        BenchCommand::Bucketing {
            model,
            data,
            column,
            backend,
            batch,
            max_length,
            limit,
        } => {
            let texts = read_texts(data, column, limit)?;
            let texts: Vec<&str> = texts.iter().map(String::as_str).collect();
            serde_json::to_value(bench::bucketing(
                &model, &texts, backend, batch, max_length,
            )?)?
        }
    };
    self::report(report)
}

/// Prints a bench report with this process's peak memory.
fn report(mut report: serde_json::Value) -> Result<()> {
    if let Some(rss) = graft_train::bench::peak_rss_bytes() {
        report["peak_rss_mib"] = serde_json::json!(rss as f64 / (1024.0 * 1024.0));
    }
    say!("{report}");
    Ok(())
}
