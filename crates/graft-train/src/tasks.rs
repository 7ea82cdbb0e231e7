//! The library's entry points, one per thing a user does: train, evaluate, predict, embed,
//! export and inspect.

use std::path::{Path, PathBuf};
use std::time::Instant;

use burn::module::Module;
use burn::tensor::{Device, Int, Tensor, TensorData, activation};
use graft_data::{DataFormat, LabelSet, TextExample, TextTokenizer, read_texts, train_valid_split};
use graft_model::bert::BertConfig;
use graft_model::text_encoder::PoolingOptions;
use graft_model::{ModelFolder, Pooling, TensorInfo, TextEncoder, WeightsIndex};
use serde::Serialize;

use crate::backend::{self, SelectedDevice};
use crate::classifier::{TextClassifier, TokenizedTexts, extract_features};
use crate::config::{Backend, CacheMode, Config, Format};
use crate::export::ExportLayout;
use crate::feature_cache::{self, CacheStats, FeatureCache};
use crate::files::{write_atomic, write_json_atomic};
use crate::fit::{Split, fit};
use crate::head::HeadSpec;
use crate::metrics::EvalReport;
use crate::progress::{EpochMetrics, Progress};
use crate::run_dir::{self, RunManifest};
use crate::{TrainError, TrainError as E};

/// What `train` did.
#[derive(Debug, Clone, Serialize)]
pub struct TrainReport {
    pub run_dir: PathBuf,
    pub device: String,
    pub history: Vec<EpochMetrics>,
    pub best_epoch: usize,
    pub test: Option<EvalReport>,
    pub feature_seconds: f64,
    /// Texts whose features were computed, and read back from the feature cache.
    pub cache: CacheStats,
    pub total_seconds: f64,
}

/// The pooling, normalization and max length a backbone is used with: the config's choice, else
/// the folder's sentence-transformers defaults, else mean / no normalization / max positions.
fn resolve_pooling(
    folder: &ModelFolder,
    bert: &BertConfig,
    pooling: Option<Pooling>,
    normalize: Option<bool>,
    max_length: Option<usize>,
    pooler: Option<bool>,
) -> Result<(PoolingOptions, usize), TrainError> {
    let st = folder.sentence_transformers.clone().unwrap_or_default();
    let pooling = pooling.or(st.pooling).unwrap_or(Pooling::Mean);
    let has_pooler = folder
        .weights_index()?
        .contains_any(&["pooler.dense.weight", "bert.pooler.dense.weight"]);
    let use_pooler = pooling == Pooling::Cls && pooler.unwrap_or(has_pooler);
    let max_length = max_length
        .or(st.max_seq_length)
        .unwrap_or(bert.max_position_embeddings);
    if max_length > bert.max_position_embeddings {
        return Err(E::Config {
            path: folder.config_path(),
            message: format!(
                "max_length {max_length} exceeds the model's max_position_embeddings {}",
                bert.max_position_embeddings
            ),
        });
    }
    let options = PoolingOptions {
        pooling,
        use_pooler,
        // sentence-transformers' Normalize belongs to its pooling recipe, not to the BERT pooler.
        normalize: normalize.unwrap_or(st.normalize && !use_pooler),
    };
    Ok((options, max_length))
}

fn data_format(format: Format) -> DataFormat {
    match format {
        Format::Csv => DataFormat::Csv,
        Format::Jsonl => DataFormat::Jsonl,
    }
}

fn texts(examples: &[TextExample]) -> Vec<&str> {
    examples.iter().map(|e| e.text.as_str()).collect()
}

fn pick<T: Clone>(items: &[T], indices: &[usize]) -> Vec<T> {
    indices.iter().map(|&i| items[i].clone()).collect()
}

fn rows(features: &Tensor<2>, indices: &[usize], device: &Device) -> Tensor<2> {
    let idx: Vec<i64> = indices.iter().map(|&i| i as i64).collect();
    let n = idx.len();
    features.clone().select(
        0,
        Tensor::<1, Int>::from_data(TensorData::new(idx, [n]), device),
    )
}

/// Trains a head (and, when unfrozen, the backbone) as `config` says, saves the run folder, and
/// evaluates on the test file if there is one. `backend` overrides the config's backend.
pub fn train(
    config: &Config,
    backend: Option<Backend>,
    progress: &dyn Progress,
) -> Result<TrainReport, TrainError> {
    let started = Instant::now();
    let SelectedDevice {
        device,
        description,
        ..
    } = backend::select(backend.unwrap_or(config.train.backend))?;
    progress.info(&format!("device: {description}"));
    // Head initialisation and dropout draw from the device's generator.
    device.seed(config.train.seed);

    // Model folder and how it is pooled.
    let folder = ModelFolder::open(&config.model.backbone)?;
    let bert_config = BertConfig::from_file(&folder.config_path())?;
    let m = &config.model;
    let (options, max_length) = resolve_pooling(
        &folder,
        &bert_config,
        m.pooling,
        m.normalize,
        m.max_length,
        m.pooler,
    )?;
    let tokenizer =
        TextTokenizer::from_file(&folder.tokenizer_path(), max_length, bert_config.vocab_size)?;

    // Data.
    let d = &config.data;
    let format = data_format(d.format);
    let read = |path: &Path| read_texts(path, format, &d.text_column, Some(&d.label_column));
    let all_train = read(&d.train)?;
    let labels = match &d.labels {
        Some(path) => LabelSet::from_file(path)?,
        None => LabelSet::from_examples(&all_train, &d.train)?,
    };
    let all_targets = labels.encode(&all_train, &d.train)?;
    let (train_examples, train_targets, valid_examples, valid_targets) = match &d.valid {
        Some(valid_path) => {
            let valid = read(valid_path)?;
            let valid_targets = labels.encode(&valid, valid_path)?;
            (all_train, all_targets, valid, valid_targets)
        }
        None => {
            let fraction = d.valid_fraction.unwrap_or(0.1);
            let (train_idx, valid_idx) =
                train_valid_split(all_train.len(), fraction, config.train.seed);
            (
                pick(&all_train, &train_idx),
                pick(&all_targets, &train_idx),
                pick(&all_train, &valid_idx),
                pick(&all_targets, &valid_idx),
            )
        }
    };
    labels.check_all_present(&train_targets, &d.train)?;
    let test = match &d.test {
        Some(path) => {
            let examples = read(path)?;
            let targets = labels.encode(&examples, path)?;
            Some((examples, targets))
        }
        None => None,
    };
    progress.info(&format!(
        "data: {} train, {} valid{}; classes: {}",
        train_examples.len(),
        valid_examples.len(),
        test.as_ref()
            .map_or(String::new(), |(t, _)| format!(", {} test", t.len())),
        labels.names().join(", ")
    ));

    let train_tokens = TokenizedTexts::new(&tokenizer, &texts(&train_examples))?;
    let valid_tokens = TokenizedTexts::new(&tokenizer, &texts(&valid_examples))?;
    let head_spec = HeadSpec::new(&config.head, bert_config.hidden_size, labels.len());
    let train_device = device.clone().autodiff();
    let use_cache = config.freeze.backbone && config.train.cache != CacheMode::Off;
    let eval_batch = config.train.eval_batch_size;

    let mut feature_seconds = 0.0;
    let mut cache_stats = CacheStats::default();
    let mut test_features = None;
    if config.train.cache == CacheMode::Auto && !config.freeze.backbone {
        progress.info("feature cache off: the backbone trains, so its features change every step");
    }
    let (model, history, best_epoch) = if use_cache {
        // The frozen backbone computes the same features every epoch: compute them once.
        let root = config
            .train
            .cache_dir
            .clone()
            .unwrap_or_else(feature_cache::default_root);
        let cache = FeatureCache::new(
            &root,
            &folder,
            options,
            max_length,
            config.train.cache == CacheMode::Rebuild,
        )?;
        progress.info(&format!(
            "backbone frozen: features computed once, cached in {}",
            root.display()
        ));
        let (_, encoder) = TextEncoder::load(&folder, options, &device)?;
        let feature_start = Instant::now();
        let test_count = test.as_ref().map_or(0, |(t, _)| t.len());
        progress.stage(
            "features",
            train_examples.len() + valid_examples.len() + test_count,
        );
        let mut lookup = |examples: &[TextExample], tokens: &TokenizedTexts| {
            let (features, stats) = cache.features(
                &encoder,
                &texts(examples),
                tokens,
                eval_batch,
                &device,
                progress,
            )?;
            cache_stats += stats;
            Ok::<_, TrainError>(features)
        };
        let train_x = lookup(&train_examples, &train_tokens)?;
        let valid_x = lookup(&valid_examples, &valid_tokens)?;
        if let Some((examples, _)) = &test {
            let tokens = TokenizedTexts::new(&tokenizer, &texts(examples))?;
            test_features = Some(lookup(examples, &tokens)?);
        }
        progress.finish_stage();
        feature_seconds = feature_start.elapsed().as_secs_f64();
        progress.info(&format!(
            "features: {} computed, {} read from the cache ({feature_seconds:.1}s)",
            cache_stats.computed, cache_stats.reused
        ));
        let outcome = fit(
            head_spec.init(config.train.seed, &train_device),
            |head, split, idx| match split {
                Split::Train => head.forward(rows(&train_x, idx, &device)),
                Split::Valid => head.forward(rows(&valid_x, idx, &device)),
            },
            &train_targets,
            &valid_targets,
            &config.train,
            &train_device,
            progress,
        );
        let model = TextClassifier {
            encoder,
            head: outcome.model,
        };
        (model, outcome.history, outcome.best_epoch)
    } else {
        let (_, encoder) = TextEncoder::load(&folder, options, &train_device)?;
        let encoder = if config.freeze.backbone {
            encoder.freeze()
        } else {
            encoder
        };
        let model = TextClassifier {
            encoder,
            head: head_spec.init(config.train.seed, &train_device),
        };
        let outcome = fit(
            model,
            |model, split, idx| match split {
                Split::Train => model.forward(&train_tokens.batch(idx), &train_device),
                Split::Valid => model.forward(&valid_tokens.batch(idx), &device),
            },
            &train_targets,
            &valid_targets,
            &config.train,
            &train_device,
            progress,
        );
        (outcome.model, outcome.history, outcome.best_epoch)
    };
    progress.info(&format!(
        "best epoch: {best_epoch} (lowest validation loss)"
    ));

    // Artifacts.
    let out = &config.output.dir;
    let manifest = RunManifest {
        graft_version: env!("CARGO_PKG_VERSION").into(),
        task: "single_label_classification".into(),
        architecture: folder.architecture.name().into(),
        labels: labels.names().to_vec(),
        pooling: options.pooling,
        use_pooler: options.use_pooler,
        normalize: options.normalize,
        max_length,
        head: head_spec,
        backbone_source: config.model.backbone.clone(),
        text_column: d.text_column.clone(),
        label_column: d.label_column.clone(),
        best_epoch: Some(best_epoch),
    };
    run_dir::save(out, &manifest, &model, &folder.dir)?;
    let resolved = toml::to_string_pretty(config).expect("config serializes");
    write_atomic(&out.join("config.toml"), resolved.as_bytes())?;
    let mut lines = String::new();
    for metrics in &history {
        lines += &serde_json::to_string(metrics).expect("serializable");
        lines.push('\n');
    }
    write_atomic(&out.join("metrics.jsonl"), lines.as_bytes())?;

    let test = match test {
        Some((examples, targets)) => {
            let probabilities = match test_features {
                Some(features) => probabilities_of(model.head.valid().forward(features)),
                None => {
                    let tokens = TokenizedTexts::new(&tokenizer, &texts(&examples))?;
                    progress.stage("test", examples.len());
                    let probabilities = classify(&model, &tokens, eval_batch, &device, progress);
                    progress.finish_stage();
                    probabilities
                }
            };
            let predicted = argmax_rows(&probabilities);
            let report = EvalReport::new(labels.names(), &targets, &predicted);
            write_json_atomic(&out.join("eval.json"), &report)?;
            Some(report)
        }
        None => None,
    };
    Ok(TrainReport {
        run_dir: out.clone(),
        device: description,
        history,
        best_epoch,
        test,
        feature_seconds,
        cache: cache_stats,
        total_seconds: started.elapsed().as_secs_f64(),
    })
}

/// Class probabilities `[n][classes]` for every text, in input order.
fn classify(
    model: &TextClassifier,
    tokens: &TokenizedTexts,
    batch_size: usize,
    device: &Device,
    progress: &dyn Progress,
) -> Vec<Vec<f32>> {
    let model = model.valid();
    let features = extract_features(&model.encoder, tokens, batch_size, device, progress);
    probabilities_of(model.head.forward(features))
}

/// Softmax of logits `[n, classes]`, as rows.
fn probabilities_of(logits: Tensor<2>) -> Vec<Vec<f32>> {
    let probabilities = activation::softmax(logits, 1);
    let [n, k] = probabilities.dims();
    let values: Vec<f32> = probabilities
        .into_data()
        .try_into_vec_as::<f32>()
        .expect("f32 data");
    (0..n)
        .map(|i| values[i * k..(i + 1) * k].to_vec())
        .collect()
}

fn argmax_rows(rows: &[Vec<f32>]) -> Vec<usize> {
    rows.iter()
        .map(|row| {
            row.iter()
                .enumerate()
                .fold((0, f32::NEG_INFINITY), |best, (i, &p)| {
                    if p > best.1 { (i, p) } else { best }
                })
                .0
        })
        .collect()
}

/// Where texts come from for `predict`, `eval` and `embed`.
#[derive(Debug, Clone)]
pub struct TextInput {
    pub path: PathBuf,
    /// The text column of a CSV/JSONL file; plain text files have one text per line.
    pub column: Option<String>,
}

impl TextInput {
    fn read(&self, label_column: Option<&str>) -> Result<Vec<TextExample>, TrainError> {
        let format = DataFormat::from_extension(&self.path);
        let column = match (format, &self.column) {
            (DataFormat::Lines, _) => "",
            (_, Some(column)) => column.as_str(),
            (_, None) => {
                return Err(E::Config {
                    path: self.path.clone(),
                    message: "a CSV/JSONL input needs --column to name the text column".into(),
                });
            }
        };
        Ok(read_texts(&self.path, format, column, label_column)?)
    }
}

/// The texts of an input file, in order.
pub fn read_input_texts(input: &TextInput) -> Result<Vec<String>, TrainError> {
    Ok(input.read(None)?.into_iter().map(|e| e.text).collect())
}

/// Loads a run folder on the chosen backend.
fn load_run(
    run_dir: &Path,
    backend: Backend,
    progress: &dyn Progress,
) -> Result<(run_dir::LoadedRun, Device), TrainError> {
    let selected = backend::select(backend)?;
    progress.info(&format!("device: {}", selected.description));
    let run = run_dir::load(run_dir, &selected.device)?;
    Ok((run, selected.device))
}

/// Scores a run on a labelled file (CSV/JSONL with the run's text and label columns unless
/// `input.column` names another text column).
pub fn evaluate(
    run_dir: &Path,
    input: &TextInput,
    label_column: Option<&str>,
    batch_size: usize,
    backend: Backend,
    progress: &dyn Progress,
) -> Result<EvalReport, TrainError> {
    let (run, device) = load_run(run_dir, backend, progress)?;
    let input = TextInput {
        path: input.path.clone(),
        column: input
            .column
            .clone()
            .or_else(|| Some(run.manifest.text_column.clone())),
    };
    let label_column = label_column.unwrap_or(&run.manifest.label_column);
    if DataFormat::from_extension(&input.path) == DataFormat::Lines {
        return Err(E::Config {
            path: input.path.clone(),
            message: "evaluation needs labels: give a .csv or .jsonl file".into(),
        });
    }
    let examples = input.read(Some(label_column))?;
    let labels = LabelSet::new(run.manifest.labels.clone()).map_err(E::Unsupported)?;
    let targets = labels.encode(&examples, &input.path)?;
    let tokens = TokenizedTexts::new(&run.tokenizer, &texts(&examples))?;
    progress.stage("evaluating", examples.len());
    let probabilities = classify(&run.model, &tokens, batch_size, &device, progress);
    progress.finish_stage();
    Ok(EvalReport::new(
        labels.names(),
        &targets,
        &argmax_rows(&probabilities),
    ))
}

/// One prediction: the top label and every label's probability (in label order).
#[derive(Debug, Clone, Serialize)]
pub struct Prediction {
    pub label: String,
    pub probabilities: serde_json::Map<String, serde_json::Value>,
}

pub fn predict(
    run_dir: &Path,
    input: &TextInput,
    batch_size: usize,
    backend: Backend,
    progress: &dyn Progress,
) -> Result<Vec<Prediction>, TrainError> {
    let (run, device) = load_run(run_dir, backend, progress)?;
    let examples = input.read(None)?;
    let tokens = TokenizedTexts::new(&run.tokenizer, &texts(&examples))?;
    progress.stage("predicting", examples.len());
    let probabilities = classify(&run.model, &tokens, batch_size, &device, progress);
    progress.finish_stage();
    let labels = &run.manifest.labels;
    Ok(probabilities
        .iter()
        .zip(argmax_rows(&probabilities))
        .map(|(row, top)| Prediction {
            label: labels[top].clone(),
            probabilities: labels
                .iter()
                .zip(row)
                .map(|(l, &p)| (l.clone(), serde_json::json!(p)))
                .collect(),
        })
        .collect())
}

/// How `embed` pools; `None` takes the model folder's defaults.
#[derive(Debug, Clone, Default)]
pub struct EmbedOptions {
    pub pooling: Option<Pooling>,
    pub normalize: Option<bool>,
    pub max_length: Option<usize>,
    pub batch_size: usize,
}

pub struct Embeddings {
    pub n: usize,
    pub hidden: usize,
    /// Row-major `[n, hidden]`.
    pub values: Vec<f32>,
    pub pooling: Pooling,
    pub normalize: bool,
}

/// Embeds texts with a pretrained model folder as it is (no head). CLS pooling here is the raw
/// `[CLS]` hidden state, as sentence-transformers defines it.
pub fn embed(
    model_dir: &Path,
    input: &TextInput,
    options: &EmbedOptions,
    backend: Backend,
    progress: &dyn Progress,
) -> Result<Embeddings, TrainError> {
    let selected = backend::select(backend)?;
    progress.info(&format!("device: {}", selected.description));
    let folder = ModelFolder::open(model_dir)?;
    let bert_config = BertConfig::from_file(&folder.config_path())?;
    let (pooling, max_length) = resolve_pooling(
        &folder,
        &bert_config,
        options.pooling,
        options.normalize,
        options.max_length,
        Some(false),
    )?;
    let tokenizer =
        TextTokenizer::from_file(&folder.tokenizer_path(), max_length, bert_config.vocab_size)?;
    let examples = input.read(None)?;
    let tokens = TokenizedTexts::new(&tokenizer, &texts(&examples))?;
    let (_, encoder) = TextEncoder::load(&folder, pooling, &selected.device)?;
    progress.stage("embedding", examples.len());
    let features = extract_features(
        &encoder,
        &tokens,
        options.batch_size.max(1),
        &selected.device,
        progress,
    );
    progress.finish_stage();
    let [n, hidden] = features.dims();
    let values = features
        .into_data()
        .try_into_vec_as::<f32>()
        .expect("f32 data");
    Ok(Embeddings {
        n,
        hidden,
        values,
        pooling: pooling.pooling,
        normalize: pooling.normalize,
    })
}

impl Embeddings {
    /// Writes one f32 tensor `embeddings` of shape `[n, hidden]`, atomically.
    pub fn save(&self, path: &Path) -> Result<(), TrainError> {
        let bytes: Vec<u8> = self.values.iter().flat_map(|v| v.to_le_bytes()).collect();
        let view = safetensors::tensor::TensorView::new(
            safetensors::Dtype::F32,
            vec![self.n, self.hidden],
            &bytes,
        )
        .expect("shape matches data");
        let metadata = std::collections::HashMap::from([
            ("pooling".to_string(), self.pooling.name().to_string()),
            ("normalize".to_string(), self.normalize.to_string()),
        ]);
        let serialized =
            safetensors::serialize([("embeddings", view)], Some(metadata)).map_err(|e| {
                E::Write {
                    path: path.to_path_buf(),
                    message: e.to_string(),
                }
            })?;
        write_atomic(path, &serialized)
    }
}

/// Writes the run's export folder; see [`crate::export`].
pub fn export(
    run_dir: &Path,
    out: &Path,
    progress: &dyn Progress,
) -> Result<ExportLayout, TrainError> {
    let (run, _) = load_run(run_dir, Backend::Flex, progress)?;
    crate::export::export(run_dir, &run, out)
}

/// What `inspect` shows about a weights file or a model folder.
#[derive(Debug, Clone, Serialize)]
pub struct InspectReport {
    pub path: PathBuf,
    pub architecture: Option<String>,
    pub tensors: Vec<(String, TensorInfo)>,
    pub num_parameters: usize,
}

pub fn inspect(path: &Path) -> Result<InspectReport, TrainError> {
    let (weights, architecture) = if path.is_dir() {
        let folder = ModelFolder::open(path)?;
        let architecture = match read_run_manifest(path) {
            Some(m) => format!(
                "{} + {:?} head ({} classes)",
                m.architecture,
                m.head.kind,
                m.labels.len()
            ),
            None => folder.architecture.name().to_string(),
        };
        (folder.weights_path(), Some(architecture))
    } else {
        (path.to_path_buf(), None)
    };
    let index = WeightsIndex::read(&weights)?;
    let architecture = architecture.or_else(|| guess_architecture(&index));
    Ok(InspectReport {
        path: weights,
        architecture,
        num_parameters: index.num_parameters(),
        tensors: index.tensors.into_iter().collect(),
    })
}

fn read_run_manifest(dir: &Path) -> Option<RunManifest> {
    run_dir::read_manifest(dir).ok()
}

/// A guess from tensor names alone, for a bare .safetensors file.
fn guess_architecture(index: &WeightsIndex) -> Option<String> {
    let has = |suffix: &str| index.tensors.keys().any(|k| k.ends_with(suffix));
    if has("attention.self.query.weight") && has("embeddings.word_embeddings.weight") {
        let layers = index
            .tensors
            .keys()
            .filter(|k| k.ends_with("attention.self.query.weight"))
            .count();
        Some(format!("bert ({layers} layers)"))
    } else {
        None
    }
}
