//! The `graft` command: a thin clap front end over graft-train. Each subcommand parses its
//! arguments, calls one library function and prints the result.

mod render;

use std::io::Write;
use std::path::PathBuf;
use std::process::ExitCode;

use anyhow::{Context, Result};
use clap::{Parser, Subcommand};
use graft_model::Pooling;
use graft_train::{Backend, Config, EmbedOptions, Resume, TextInput, TrainOptions, TrainPlan};

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
        /// With --resume: continue even though the config changed.
        #[arg(long, requires = "resume")]
        force: bool,
        /// Print every tensor as trainable or frozen, with counts, and exit without training.
        #[arg(long)]
        dry_run: bool,
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
        /// Text column (default: the one the run was trained on).
        #[arg(long)]
        column: Option<String>,
        /// Label column (default: the one the run was trained on).
        #[arg(long)]
        label_column: Option<String>,
        #[arg(long, default_value_t = 32)]
        batch_size: usize,
        #[arg(long, default_value = "auto")]
        backend: Backend,
    },
    /// Predict labels: one JSON line per input text, in order.
    Predict {
        #[arg(long)]
        model: PathBuf,
        /// A text file with one text per line, or CSV/JSONL with --column.
        #[arg(long)]
        input: PathBuf,
        #[arg(long)]
        output: Option<PathBuf>,
        #[arg(long)]
        column: Option<String>,
        #[arg(long, default_value_t = 32)]
        batch_size: usize,
        #[arg(long, default_value = "auto")]
        backend: Backend,
    },
    /// Embed texts with a pretrained model folder as it is.
    Embed {
        #[arg(long)]
        model: PathBuf,
        #[arg(long)]
        input: PathBuf,
        /// A .safetensors file with one f32 tensor `embeddings` [N, hidden].
        #[arg(long)]
        output: PathBuf,
        #[arg(long)]
        column: Option<String>,
        /// Default: the folder's sentence-transformers pooling, else mean.
        #[arg(long)]
        pooling: Option<Pooling>,
        /// L2-normalize (default: the folder's sentence-transformers setting).
        #[arg(long)]
        normalize: bool,
        #[arg(long)]
        max_length: Option<usize>,
        #[arg(long, default_value_t = 32)]
        batch_size: usize,
        #[arg(long, default_value = "auto")]
        backend: Backend,
    },
    /// Export a trained run as a transformers or sentence-transformers folder.
    Export {
        #[arg(long)]
        model: PathBuf,
        #[arg(long)]
        out: PathBuf,
    },
    /// List the tensors of a .safetensors file or a model folder.
    Inspect { path: PathBuf },
    /// Convert a PyTorch checkpoint (.pth/.pt, zip or legacy format) to safetensors, without
    /// executing any pickled code.
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

fn main() -> ExitCode {
    let cli = Cli::parse();
    match run(cli) {
        Ok(()) => ExitCode::SUCCESS,
        Err(error) => {
            eprintln!("error: {error:#}");
            ExitCode::FAILURE
        }
    }
}

fn run(cli: Cli) -> Result<()> {
    let renderer = Renderer::new();
    match cli.command {
        Command::Train {
            config,
            backend,
            resume,
            force,
            dry_run,
        } => {
            let parsed = Config::from_file(&config)?;
            if dry_run {
                let plan = graft_train::plan(&parsed)
                    .with_context(|| format!("planning {}", config.display()))?;
                print_plan(&plan);
                return Ok(());
            }
            let options = TrainOptions {
                backend,
                resume: match (resume, force) {
                    (false, _) => Resume::No,
                    (true, false) => Resume::Yes,
                    (true, true) => Resume::Force,
                },
            };
            let report = graft_train::train(&parsed, &options, &renderer)
                .with_context(|| format!("training {}", config.display()))?;
            renderer.clear();
            println!(
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
                println!("\ntest set\n{}", test.to_table());
            }
        }
        Command::Eval {
            model,
            data,
            output,
            column,
            label_column,
            batch_size,
            backend,
        } => {
            let input = TextInput { path: data, column };
            let report = graft_train::evaluate(
                &model,
                &input,
                label_column.as_deref(),
                batch_size,
                backend,
                &renderer,
            )?;
            renderer.clear();
            println!("{}", report.to_table());
            if let Some(path) = output {
                graft_train::files::write_json_atomic(&path, &report)?;
                println!("report written to {}", path.display());
            }
        }
        Command::Predict {
            model,
            input,
            output,
            column,
            batch_size,
            backend,
        } => {
            let input = TextInput {
                path: input,
                column,
            };
            let predictions = graft_train::predict(&model, &input, batch_size, backend, &renderer)?;
            renderer.clear();
            let mut lines = String::new();
            for p in &predictions {
                lines += &serde_json::to_string(p)?;
                lines.push('\n');
            }
            match output {
                Some(path) => {
                    graft_train::files::write_atomic(&path, lines.as_bytes())?;
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
            max_length,
            batch_size,
            backend,
        } => {
            let options = EmbedOptions {
                pooling,
                normalize: normalize.then_some(true),
                max_length,
                batch_size,
            };
            let input = TextInput {
                path: input,
                column,
            };
            let embeddings = graft_train::embed(&model, &input, &options, backend, &renderer)?;
            embeddings.save(&output)?;
            renderer.clear();
            println!(
                "{} embeddings of width {} ({} pooling{}) written to {}",
                embeddings.n,
                embeddings.hidden,
                embeddings.pooling,
                if embeddings.normalize {
                    ", normalized"
                } else {
                    ""
                },
                output.display()
            );
        }
        Command::Export { model, out } => {
            let layout = graft_train::export(&model, &out, &renderer)?;
            renderer.clear();
            println!(
                "exported {} as {layout} to {}",
                model.display(),
                out.display()
            );
        }
        Command::Inspect { path } => {
            let report = graft_train::inspect(&path)?;
            for (name, info) in &report.tensors {
                println!("{name:<60} {:<5} {:?}", info.dtype, info.shape);
            }
            println!(
                "\n{} tensors, {} parameters",
                report.tensors.len(),
                report.num_parameters
            );
            println!(
                "architecture: {}",
                report.architecture.as_deref().unwrap_or("unknown")
            );
        }
        Command::Convert {
            input,
            output,
            key_prefix,
        } => {
            let converted = graft_model::pth::convert(&input, &output, key_prefix.as_deref())?;
            println!(
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

fn print_plan(plan: &TrainPlan) {
    for t in &plan.tensors {
        let state = match (t.trainable, t.unfreezes_at) {
            (true, _) => format!("trainable  lr {:.2e}  wd {}", t.lr, t.weight_decay),
            (false, Some(epoch)) => {
                format!("frozen     (trains from epoch {epoch}, lr {:.2e})", t.lr)
            }
            (false, None) => "frozen".to_string(),
        };
        println!("{:<58} {:<14} {state}", t.name, format!("{:?}", t.shape));
    }
    println!(
        "\ntrainable parameters: {}\nfrozen parameters:    {}",
        plan.trainable_parameters, plan.frozen_parameters
    );
    for (epoch, trainable) in &plan.unfreeze {
        println!("from epoch {epoch}: {trainable} trainable parameters");
    }
    println!(
        "{} optimizer steps per epoch, {} in all; backbone features {}",
        plan.steps_per_epoch,
        plan.total_steps,
        if plan.feature_cache {
            "computed once (feature cache)"
        } else {
            "computed every step"
        }
    );
}

fn read_texts(data: PathBuf, column: Option<String>, limit: Option<usize>) -> Result<Vec<String>> {
    let input = TextInput { path: data, column };
    let mut texts = graft_train::read_input_texts(&input)?;
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
        } => {
            let texts = read_texts(data, column, None)?;
            let texts: Vec<&str> = texts.iter().map(String::as_str).collect();
            serde_json::to_value(bench::forward_throughput(
                &model, &texts, backend, batch, seq_len, repeats,
            )?)?
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
    let mut report = report;
    if let Some(rss) = graft_train::bench::peak_rss_bytes() {
        report["peak_rss_mib"] = serde_json::json!(rss as f64 / (1024.0 * 1024.0));
    }
    println!("{report}");
    Ok(())
}
