//! The library's entry points, one per thing a user does: train, evaluate, predict, embed,
//! export and inspect.

use std::path::{Path, PathBuf};
use std::time::Instant;

use burn::module::Module;
use burn::tensor::{Device, Int, Tensor, TensorData};
use graft_data::{
    DataFormat, LabelSet, TextExample, TextTokenizer, encode_multi_label, multi_label_set,
    read_texts, regression_values, train_valid_split,
};
use graft_model::bert::BertConfig;
use graft_model::text_encoder::PoolingOptions;
use graft_model::{ModelFolder, Pooling, TensorInfo, TextEncoder, WeightsIndex};
use serde::Serialize;

use crate::backend::{self, SelectedDevice};
use crate::classifier::{TextClassifier, TokenizedTexts, extract_features};
use crate::config::{Backend, CacheMode, ClassWeights, Config, Format, Task};
use crate::feature_cache::{self, CacheStats, FeatureCache};
use crate::files::{write_atomic, write_json_atomic};
use crate::fit::{FitSpec, Resume, Split, fit, lr_groups, steps_per_epoch};
use crate::freezing::{BertClassifierLayout, HeadOnly, ParamTable, stable_ids};
use crate::head::HeadSpec;
use crate::loss::{Targets, TaskLoss, balanced_class_weights, balanced_pos_weight};
use crate::metrics::{EvalReport, MultiLabelReport, RegressionReport, Report};
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
    pub stopped_early: bool,
    pub test: Option<Report>,
    pub feature_seconds: f64,
    /// Texts whose features were computed, and read back from the feature cache.
    pub cache: CacheStats,
    pub total_seconds: f64,
}

/// How `train` runs, besides the config.
#[derive(Debug, Clone, Default)]
pub struct TrainOptions {
    /// Overrides the config's backend.
    pub backend: Option<Backend>,
    pub resume: Resume,
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
        Format::ImageFolder => DataFormat::Lines,
    }
}

fn texts(examples: &[TextExample]) -> Vec<&str> {
    examples.iter().map(|e| e.text.as_str()).collect()
}

fn pick<T: Clone>(items: &[T], indices: &[usize]) -> Vec<T> {
    indices.iter().map(|&i| items[i].clone()).collect()
}

pub(crate) fn rows(features: &Tensor<2>, indices: &[usize], device: &Device) -> Tensor<2> {
    let idx: Vec<i64> = indices.iter().map(|&i| i as i64).collect();
    let n = idx.len();
    features.clone().select(
        0,
        Tensor::<1, Int>::from_data(TensorData::new(idx, [n]), device),
    )
}

/// The data of a run, read and encoded for its task.
struct RunData {
    /// Output names: classes, labels, or the regression target's column.
    labels: Vec<String>,
    train: Vec<TextExample>,
    valid: Vec<TextExample>,
    test: Option<(PathBuf, Vec<TextExample>)>,
    /// Training targets (standardized for regression when the config says so).
    train_targets: Targets,
    valid_targets: Targets,
    /// Regression: the mean and standard deviation the targets were standardized with.
    standardization: Option<(f64, f64)>,
}

impl RunData {
    fn read(config: &Config) -> Result<Self, TrainError> {
        let d = &config.data;
        let format = data_format(d.format);
        let read = |path: &Path| read_texts(path, format, &d.text_column, Some(&d.label_column));
        let all_train = read(&d.train)?;
        let labels = match d.task {
            Task::Regression => vec![d.label_column.clone()],
            _ => match &d.labels {
                Some(path) => LabelSet::from_file(path)?.names().to_vec(),
                None if d.task == Task::MultiLabel => {
                    multi_label_set(&all_train, &d.label_separator, &d.train)?
                        .names()
                        .to_vec()
                }
                None => LabelSet::from_examples(&all_train, &d.train)?
                    .names()
                    .to_vec(),
            },
        };
        let (train, valid) = match &d.valid {
            Some(valid_path) => (all_train, read(valid_path)?),
            None => {
                let fraction = d.valid_fraction.unwrap_or(0.1);
                let (train_idx, valid_idx) =
                    train_valid_split(all_train.len(), fraction, config.train.seed);
                (pick(&all_train, &train_idx), pick(&all_train, &valid_idx))
            }
        };
        let valid_path = d.valid.clone().unwrap_or_else(|| d.train.clone());
        let test = match &d.test {
            Some(path) => Some((path.clone(), read(path)?)),
            None => None,
        };
        let mut data = Self {
            labels,
            train_targets: Targets::Values(Vec::new()),
            valid_targets: Targets::Values(Vec::new()),
            train,
            valid,
            test,
            standardization: None,
        };
        data.train_targets = data.encode(config, &data.train, &d.train)?;
        data.valid_targets = data.encode(config, &data.valid, &valid_path)?;
        if let Some((path, examples)) = &data.test {
            data.encode(config, examples, path)?; // unknown labels fail before training
        }
        if let Targets::Classes(t) = &data.train_targets {
            let set = LabelSet::new(data.labels.clone()).map_err(E::Unsupported)?;
            set.check_all_present(t, &d.train)?;
        }
        if d.task == Task::Regression
            && d.standardize
            && let Targets::Values(values) = &mut data.train_targets
        {
            let n = values.len().max(1) as f64;
            let mean = values.iter().map(|&v| v as f64).sum::<f64>() / n;
            let var = values
                .iter()
                .map(|&v| (v as f64 - mean).powi(2))
                .sum::<f64>()
                / n;
            let std = if var > 0.0 { var.sqrt() } else { 1.0 };
            let standardize = |v: &mut f32| *v = ((*v as f64 - mean) / std) as f32;
            values.iter_mut().for_each(standardize);
            if let Targets::Values(valid) = &mut data.valid_targets {
                valid.iter_mut().for_each(standardize);
            }
            data.standardization = Some((mean, std));
        }
        Ok(data)
    }

    /// Raw targets of `examples` (read from `source`).
    fn encode(
        &self,
        config: &Config,
        examples: &[TextExample],
        source: &Path,
    ) -> Result<Targets, TrainError> {
        encode_targets(
            config.data.task,
            &self.labels,
            &config.data.label_separator,
            examples,
            source,
        )
    }
}

pub(crate) fn encode_targets(
    task: Task,
    labels: &[String],
    separator: &str,
    examples: &[TextExample],
    source: &Path,
) -> Result<Targets, TrainError> {
    let set = || LabelSet::new(labels.to_vec()).map_err(E::Unsupported);
    Ok(match task {
        Task::Classification => Targets::Classes(set()?.encode(examples, source)?),
        Task::MultiLabel => {
            Targets::MultiLabel(encode_multi_label(&set()?, examples, separator, source)?)
        }
        Task::Regression => Targets::Values(regression_values(examples, source)?),
    })
}

/// The task's report on raw model outputs `[n][k]` against raw targets.
pub(crate) fn report_of(
    task: Task,
    labels: &[String],
    threshold: f64,
    outputs: &[Vec<f32>],
    targets: &Targets,
    standardization: Option<(f64, f64)>,
) -> Report {
    match (task, targets) {
        (Task::MultiLabel, Targets::MultiLabel(t)) => {
            let predicted = multi_label_decisions(outputs, threshold);
            Report::MultiLabel(MultiLabelReport::new(labels, t, &predicted, threshold))
        }
        (Task::Regression, Targets::Values(t)) => {
            let (mean, std) = standardization.unwrap_or((0.0, 1.0));
            let targets: Vec<f64> = t.iter().map(|&v| v as f64 * std + mean).collect();
            let predicted: Vec<f64> = outputs.iter().map(|o| o[0] as f64 * std + mean).collect();
            Report::Regression(RegressionReport::new(&targets, &predicted))
        }
        (_, Targets::Classes(t)) => {
            Report::Classification(EvalReport::new(labels, t, &argmax_rows(outputs)))
        }
        _ => unreachable!("targets are encoded for the run's task"),
    }
}

fn sigmoid(x: f32) -> f32 {
    1.0 / (1.0 + (-x).exp())
}

fn multi_label_decisions(outputs: &[Vec<f32>], threshold: f64) -> Vec<Vec<bool>> {
    outputs
        .iter()
        .map(|row| {
            row.iter()
                .map(|&x| sigmoid(x) as f64 >= threshold)
                .collect()
        })
        .collect()
}

/// The loss of the config's task, with class weights resolved against the training targets.
pub(crate) fn task_loss_for(
    config: &Config,
    labels: &[String],
    train_targets: &Targets,
) -> Result<TaskLoss, TrainError> {
    let l = &config.loss;
    let classes = labels.len();
    let (mut weights, mut pos_weight) = (None, None);
    match (&l.class_weights, train_targets) {
        (Some(ClassWeights::Explicit(w)), _) => {
            if w.len() != classes {
                return Err(E::Config {
                    path: PathBuf::from("[loss] class_weights"),
                    message: format!(
                        "{} weights given for {classes} classes ({})",
                        w.len(),
                        labels.join(", ")
                    ),
                });
            }
            weights = Some(w.iter().map(|&v| v as f32).collect());
        }
        (Some(ClassWeights::Named(_)), Targets::Classes(t)) => {
            weights = Some(balanced_class_weights(t, classes));
        }
        (Some(ClassWeights::Named(_)), Targets::MultiLabel(rows)) => {
            pos_weight = Some(balanced_pos_weight(rows, classes));
        }
        _ => {}
    }
    Ok(TaskLoss {
        kind: l.kind_for(config.data.task),
        weights,
        pos_weight,
        label_smoothing: l.label_smoothing,
        huber_delta: l.huber_delta,
    })
}

/// The model folder, pooling and tokenizer a config trains on.
struct Backbone {
    folder: ModelFolder,
    bert: BertConfig,
    options: PoolingOptions,
    max_length: usize,
}

impl Backbone {
    fn open(config: &Config) -> Result<Self, TrainError> {
        let folder = ModelFolder::open(&config.model.backbone)?;
        let bert = BertConfig::from_file(&folder.config_path())?;
        let m = &config.model;
        let (options, max_length) = resolve_pooling(
            &folder,
            &bert,
            m.pooling,
            m.normalize,
            m.max_length,
            m.pooler,
        )?;
        Ok(Self {
            folder,
            bert,
            options,
            max_length,
        })
    }

    fn tokenizer(&self) -> Result<TextTokenizer, TrainError> {
        Ok(TextTokenizer::from_file(
            &self.folder.tokenizer_path(),
            self.max_length,
            self.bert.vocab_size,
        )?)
    }

    fn layout(&self) -> BertClassifierLayout {
        BertClassifierLayout {
            num_layers: self.bert.num_hidden_layers,
        }
    }
}

/// What `graft train --dry-run` shows: every tensor, trainable or frozen at the start, and how
/// the freeze schedule changes that.
#[derive(Debug, Clone, Serialize)]
pub struct TrainPlan {
    pub tensors: Vec<PlannedTensor>,
    pub trainable_parameters: usize,
    pub frozen_parameters: usize,
    /// For each unfreeze step: the epoch, and the trainable parameters from then on.
    pub unfreeze: Vec<(usize, usize)>,
    /// Whether the backbone's features are computed once and cached.
    pub feature_cache: bool,
    pub steps_per_epoch: usize,
    pub total_steps: usize,
}

#[derive(Debug, Clone, Serialize)]
pub struct PlannedTensor {
    pub name: String,
    pub shape: Vec<usize>,
    pub trainable: bool,
    /// The peak learning rate while trainable.
    pub lr: f64,
    pub weight_decay: f64,
    /// The epoch from which a frozen tensor trains, if it ever does.
    pub unfreezes_at: Option<usize>,
}

/// Builds the model a config describes and reports what would train, without training.
pub fn plan(config: &Config) -> Result<TrainPlan, TrainError> {
    if config.is_vision() {
        return crate::vision_tasks::plan(config);
    }
    let backbone = Backbone::open(config)?;
    let data = RunData::read(config)?;
    #[allow(deprecated)]
    let device = Device::flex();
    let (_, encoder) = TextEncoder::load(&backbone.folder, backbone.options, &device)?;
    let head = HeadSpec::new(&config.head, backbone.bert.hidden_size, data.labels.len())
        .init(config.train.seed, &device);
    let model = stable_ids(TextClassifier { encoder, head });
    let table = ParamTable::of(&model, &backbone.layout());
    let feature_cache = config.freeze.always_frozen() && config.train.cache != CacheMode::Off;
    plan_of(config, &table, data.train.len(), feature_cache)
}

/// The plan for a model's parameter table.
pub(crate) fn plan_of(
    config: &Config,
    table: &ParamTable,
    n_train: usize,
    feature_cache: bool,
) -> Result<TrainPlan, TrainError> {
    let at = |epoch| {
        table
            .frozen_at(&config.freeze, epoch)
            .map_err(|message| E::Config {
                path: PathBuf::from("[freeze]"),
                message,
            })
    };
    let start = at(1)?;
    let later: Vec<(usize, crate::freezing::FreezeState)> = config
        .freeze
        .unfreeze
        .iter()
        .map(|s| Ok((s.epoch, at(s.epoch)?)))
        .collect::<Result<_, TrainError>>()?;
    let mut peak = std::collections::HashMap::new();
    for (ids, lr) in lr_groups(&config.train, table) {
        for id in ids {
            peak.insert(id, lr);
        }
    }
    let t = &config.train;
    let tensors: Vec<PlannedTensor> = table
        .tensors
        .iter()
        .map(|e| PlannedTensor {
            name: e.name.clone(),
            shape: e.shape.clone(),
            trainable: !start.is_frozen(&e.id),
            lr: peak.get(&e.id).copied().unwrap_or(t.lr),
            weight_decay: if e.is_bias_or_norm() && !t.decay_norm_and_bias {
                0.0
            } else {
                t.weight_decay
            },
            unfreezes_at: start
                .is_frozen(&e.id)
                .then(|| {
                    later
                        .iter()
                        .find(|(_, s)| !s.is_frozen(&e.id))
                        .map(|(epoch, _)| *epoch)
                })
                .flatten(),
        })
        .collect();
    let count = |state: &crate::freezing::FreezeState| -> usize {
        table
            .tensors
            .iter()
            .filter(|e| !state.is_frozen(&e.id))
            .map(|e| e.numel())
            .sum()
    };
    let total: usize = table.tensors.iter().map(|e| e.numel()).sum();
    let trainable = count(&start);
    let steps = steps_per_epoch(n_train, t);
    Ok(TrainPlan {
        tensors,
        trainable_parameters: trainable,
        frozen_parameters: total - trainable,
        unfreeze: later.iter().map(|(e, s)| (*e, count(s))).collect(),
        feature_cache,
        steps_per_epoch: steps,
        total_steps: steps * t.epochs,
    })
}

fn fit_spec<'a>(
    config: &'a Config,
    loss: &'a TaskLoss,
    data: &'a RunData,
    metrics: &'a crate::fit::MetricsFn<'a>,
    describe: &'a dyn crate::freezing::Describe,
    lengths: &'a [usize],
    resume: Resume,
) -> FitSpec<'a> {
    FitSpec {
        train: &config.train,
        freeze: &config.freeze,
        loss,
        train_targets: &data.train_targets,
        valid_targets: &data.valid_targets,
        metrics,
        describe,
        run_dir: &config.output.dir,
        lengths: Some(lengths),
        config_text: toml::to_string_pretty(config).expect("config serializes"),
        resume,
    }
}

/// Trains a head (and, where the config unfreezes it, the backbone), saves the run folder, and
/// evaluates on the test file if there is one.
pub fn train(
    config: &Config,
    options: &TrainOptions,
    progress: &dyn Progress,
) -> Result<TrainReport, TrainError> {
    if config.is_vision() {
        return crate::vision_tasks::train(config, options, progress);
    }
    let started = Instant::now();
    let SelectedDevice {
        device,
        description,
        ..
    } = backend::select(options.backend.unwrap_or(config.train.backend))?;
    progress.info(&format!("device: {description}"));
    device.seed(config.train.seed);

    let backbone = Backbone::open(config)?;
    let Backbone {
        folder,
        bert: bert_config,
        options: pooling,
        max_length,
    } = &backbone;
    let (pooling, max_length) = (*pooling, *max_length);
    let tokenizer = backbone.tokenizer()?;
    let task = config.data.task;
    let data = RunData::read(config)?;
    progress.info(&format!(
        "data: {} train, {} valid{}; {}: {}",
        data.train.len(),
        data.valid.len(),
        data.test
            .as_ref()
            .map_or(String::new(), |(_, t)| format!(", {} test", t.len())),
        match task {
            Task::Classification => "classes",
            Task::MultiLabel => "labels",
            Task::Regression => "target",
        },
        data.labels.join(", ")
    ));
    let loss = task_loss_for(config, &data.labels, &data.train_targets)?;
    let threshold = config.head.threshold;
    let labels = data.labels.clone();
    let standardization = data.standardization;
    let valid_targets = data.valid_targets.clone();
    let metrics = move |outputs: &[Vec<f32>]| {
        report_of(
            task,
            &labels,
            threshold,
            outputs,
            &valid_targets,
            standardization,
        )
        .as_metrics()
    };

    let train_tokens = TokenizedTexts::new(&tokenizer, &texts(&data.train))?;
    let valid_tokens = TokenizedTexts::new(&tokenizer, &texts(&data.valid))?;
    let head_spec = HeadSpec::new(&config.head, bert_config.hidden_size, data.labels.len());
    let train_device = device.clone().autodiff();
    let use_cache = config.freeze.always_frozen() && config.train.cache != CacheMode::Off;
    let eval_batch = config.train.eval_batch_size;
    let out = &config.output.dir;
    std::fs::create_dir_all(out).map_err(|source| E::Io {
        path: out.clone(),
        source,
    })?;
    let lengths: Vec<usize> = train_tokens.tokens.iter().map(|t| t.ids.len()).collect();
    let spec = |describe| {
        fit_spec(
            config,
            &loss,
            &data,
            &metrics,
            describe,
            &lengths,
            options.resume,
        )
    };
    let mut feature_seconds = 0.0;
    let mut cache_stats = CacheStats::default();
    let mut test_features = None;
    if config.train.cache == CacheMode::Auto && !config.freeze.always_frozen() {
        progress.info("feature cache off: the backbone trains, so its features change");
    }
    let (mut model, outcome_history, best_epoch, stopped_early) = if use_cache {
        // The frozen backbone computes the same features every epoch: compute them once.
        let root = config
            .train
            .cache_dir
            .clone()
            .unwrap_or_else(feature_cache::default_root);
        let cache = FeatureCache::new(
            &root,
            folder,
            pooling,
            max_length,
            config.train.cache == CacheMode::Rebuild,
        )?;
        progress.info(&format!(
            "backbone frozen: features computed once, cached in {}",
            root.display()
        ));
        let (_, encoder) = TextEncoder::load(folder, pooling, &device)?;
        let feature_start = Instant::now();
        let test_count = data.test.as_ref().map_or(0, |(_, t)| t.len());
        progress.stage("features", data.train.len() + data.valid.len() + test_count);
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
        let train_x = lookup(&data.train, &train_tokens)?;
        let valid_x = lookup(&data.valid, &valid_tokens)?;
        if let Some((_, examples)) = &data.test {
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
                Split::Train { .. } => head.forward(rows(&train_x, idx, &device)),
                Split::Valid => head.forward(rows(&valid_x, idx, &device)),
            },
            &spec(&HeadOnly),
            &train_device,
            progress,
        )?;
        let model = TextClassifier {
            encoder,
            head: outcome.model,
        };
        (
            model,
            outcome.history,
            outcome.best_epoch,
            outcome.stopped_early,
        )
    } else {
        let (_, encoder) = TextEncoder::load(folder, pooling, &train_device)?;
        let model = TextClassifier {
            encoder,
            head: head_spec.init(config.train.seed, &train_device),
        };
        let layout = backbone.layout();
        let outcome = fit(
            model,
            |model, split, idx| match split {
                Split::Train { .. } => model.forward(&train_tokens.batch(idx), &train_device),
                Split::Valid => model.forward(&valid_tokens.batch(idx), &device),
            },
            &spec(&layout),
            &train_device,
            progress,
        )?;
        (
            outcome.model,
            outcome.history,
            outcome.best_epoch,
            outcome.stopped_early,
        )
    };
    let history = outcome_history;
    progress.info(&format!(
        "best epoch: {best_epoch} (by {})",
        config.train.monitor
    ));
    if let Some((mean, std)) = standardization {
        // The saved model predicts raw values: fold the standardization into the last layer.
        model.head = model.head.rescale_output(std, mean);
    }

    // Artifacts.
    let d = &config.data;
    let manifest = RunManifest {
        graft_version: env!("CARGO_PKG_VERSION").into(),
        task: task.name().into(),
        architecture: folder.architecture.name().into(),
        labels: data.labels.clone(),
        pooling: pooling.pooling,
        use_pooler: pooling.use_pooler,
        normalize: pooling.normalize,
        max_length,
        head: head_spec,
        backbone_source: config.model.backbone.clone(),
        text_column: d.text_column.clone(),
        label_column: d.label_column.clone(),
        best_epoch: Some(best_epoch),
        threshold: (task == Task::MultiLabel).then_some(threshold),
        label_separator: (task == Task::MultiLabel).then(|| d.label_separator.clone()),
    };
    run_dir::save(out, &manifest, &model, &folder.dir)?;
    let resolved = toml::to_string_pretty(config).expect("config serializes");
    write_atomic(&out.join("config.toml"), resolved.as_bytes())?;

    let test = match &data.test {
        Some((path, examples)) => {
            let targets = data.encode(config, examples, path)?;
            let outputs = match test_features {
                Some(features) => rows_of(model.head.valid().forward(features)),
                None => {
                    let tokens = TokenizedTexts::new(&tokenizer, &texts(examples))?;
                    progress.stage("test", examples.len());
                    let outputs = outputs_of(&model, &tokens, eval_batch, &device, progress);
                    progress.finish_stage();
                    outputs
                }
            };
            let report = report_of(task, &data.labels, threshold, &outputs, &targets, None);
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
        stopped_early,
        test,
        feature_seconds,
        cache: cache_stats,
        total_seconds: started.elapsed().as_secs_f64(),
    })
}

/// Raw outputs `[n][k]` for every text, in input order.
fn outputs_of(
    model: &TextClassifier,
    tokens: &TokenizedTexts,
    batch_size: usize,
    device: &Device,
    progress: &dyn Progress,
) -> Vec<Vec<f32>> {
    let model = model.valid();
    let features = extract_features(&model.encoder, tokens, batch_size, device, progress);
    rows_of(model.head.forward(features))
}

pub(crate) fn rows_of(tensor: Tensor<2>) -> Vec<Vec<f32>> {
    let [_, k] = tensor.dims();
    let values: Vec<f32> = tensor
        .into_data()
        .try_into_vec_as::<f32>()
        .expect("f32 data");
    values.chunks(k.max(1)).map(<[f32]>::to_vec).collect()
}

fn softmax_row(row: &[f32]) -> Vec<f32> {
    let max = row.iter().copied().fold(f32::NEG_INFINITY, f32::max);
    let exp: Vec<f32> = row.iter().map(|&x| (x - max).exp()).collect();
    let sum: f32 = exp.iter().sum();
    exp.iter().map(|e| e / sum).collect()
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

/// The task a run was trained for, from its manifest.
fn run_task(manifest: &RunManifest) -> Result<Task, TrainError> {
    task_named(&manifest.task)
}

/// A task from its name in `graft.json`.
pub(crate) fn task_named(name: &str) -> Result<Task, TrainError> {
    [Task::Classification, Task::MultiLabel, Task::Regression]
        .into_iter()
        .find(|t| t.name() == name)
        .ok_or_else(|| E::Unsupported(format!("unknown task `{name}` in graft.json")))
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
) -> Result<Report, TrainError> {
    if crate::vision_tasks::is_image_run(run_dir) {
        return crate::vision_tasks::evaluate(
            run_dir,
            &input.path,
            input.column.as_deref(),
            label_column,
            batch_size,
            backend,
            progress,
        );
    }
    let (run, device) = load_run(run_dir, backend, progress)?;
    let task = run_task(&run.manifest)?;
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
    let separator = run.manifest.label_separator.as_deref().unwrap_or("|");
    let targets = encode_targets(
        task,
        &run.manifest.labels,
        separator,
        &examples,
        &input.path,
    )?;
    let tokens = TokenizedTexts::new(&run.tokenizer, &texts(&examples))?;
    progress.stage("evaluating", examples.len());
    let outputs = outputs_of(&run.model, &tokens, batch_size, &device, progress);
    progress.finish_stage();
    let threshold = run.manifest.threshold.unwrap_or(0.5);
    Ok(report_of(
        task,
        &run.manifest.labels,
        threshold,
        &outputs,
        &targets,
        None,
    ))
}

/// One prediction. Classification: the top `label` and every label's probability. Multi-label:
/// the `labels` at or above the threshold and every label's probability. Regression: `value`.
#[derive(Debug, Clone, Serialize)]
pub struct Prediction {
    /// The image file (vision).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub input: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub label: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub labels: Option<Vec<String>>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub value: Option<f64>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub probabilities: Option<serde_json::Map<String, serde_json::Value>>,
}

pub fn predict(
    run_dir: &Path,
    input: &TextInput,
    batch_size: usize,
    backend: Backend,
    progress: &dyn Progress,
) -> Result<Vec<Prediction>, TrainError> {
    use crate::vision_tasks as vision;
    if vision::is_image_run(run_dir) || vision::is_vision_folder(run_dir) {
        return predict_images(run_dir, input, batch_size, backend, progress);
    }
    let (run, device) = load_run(run_dir, backend, progress)?;
    let task = run_task(&run.manifest)?;
    let examples = input.read(None)?;
    let tokens = TokenizedTexts::new(&run.tokenizer, &texts(&examples))?;
    progress.stage("predicting", examples.len());
    let outputs = outputs_of(&run.model, &tokens, batch_size, &device, progress);
    progress.finish_stage();
    let threshold = run.manifest.threshold.unwrap_or(0.5);
    Ok(predictions(task, &run.manifest.labels, threshold, &outputs))
}

/// Predictions for images, from a vision run or (with its own classifier) a vision model folder.
fn predict_images(
    dir: &Path,
    input: &TextInput,
    batch_size: usize,
    backend: Backend,
    progress: &dyn Progress,
) -> Result<Vec<Prediction>, TrainError> {
    use crate::vision_tasks as vision;
    let (task, labels, threshold, paths, outputs) = if vision::is_image_run(dir) {
        let (manifest, paths, outputs) = vision::predict_outputs(
            dir,
            &input.path,
            input.column.as_deref(),
            batch_size,
            backend,
            progress,
        )?;
        let task = task_named(&manifest.task)?;
        // Image runs are single-label or regression: no threshold.
        (task, manifest.labels, 0.5, paths, outputs)
    } else {
        // A pretrained folder's own classifier; its classes are named by index.
        let (paths, logits) = vision::embed_images(
            dir,
            &input.path,
            input.column.as_deref(),
            true,
            batch_size,
            backend,
            progress,
        )?;
        let outputs = rows_of(logits);
        let classes = outputs.first().map_or(0, Vec::len);
        let labels = (0..classes).map(|c| c.to_string()).collect();
        (Task::Classification, labels, 0.5, paths, outputs)
    };
    let mut predictions = predictions(task, &labels, threshold, &outputs);
    for (p, path) in predictions.iter_mut().zip(paths) {
        p.input = Some(path.to_string_lossy().to_string());
    }
    Ok(predictions)
}

/// Turns raw outputs into predictions for the task.
fn predictions(
    task: Task,
    labels: &[String],
    threshold: f64,
    outputs: &[Vec<f32>],
) -> Vec<Prediction> {
    let named = |row: &[f32]| -> serde_json::Map<String, serde_json::Value> {
        labels
            .iter()
            .zip(row)
            .map(|(l, &p)| (l.clone(), serde_json::json!(p)))
            .collect()
    };
    let empty = Prediction {
        input: None,
        label: None,
        labels: None,
        value: None,
        probabilities: None,
    };
    outputs
        .iter()
        .map(|row| match task {
            Task::Classification => {
                let probabilities = softmax_row(row);
                let top = argmax_rows(std::slice::from_ref(&probabilities))[0];
                Prediction {
                    label: Some(labels[top].clone()),
                    probabilities: Some(named(&probabilities)),
                    ..empty.clone()
                }
            }
            Task::MultiLabel => {
                let probabilities: Vec<f32> = row.iter().map(|&x| sigmoid(x)).collect();
                Prediction {
                    labels: Some(
                        labels
                            .iter()
                            .zip(&probabilities)
                            .filter(|(_, p)| **p as f64 >= threshold)
                            .map(|(l, _)| l.clone())
                            .collect(),
                    ),
                    probabilities: Some(named(&probabilities)),
                    ..empty.clone()
                }
            }
            Task::Regression => Prediction {
                value: Some(row[0] as f64),
                ..empty.clone()
            },
        })
        .collect()
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
    if crate::vision_tasks::is_vision_folder(model_dir) {
        // Globally average-pooled features of the image backbone.
        let (_, features) = crate::vision_tasks::embed_images(
            model_dir,
            &input.path,
            input.column.as_deref(),
            false,
            options.batch_size,
            backend,
            progress,
        )?;
        let [n, hidden] = features.dims();
        let values = features
            .into_data()
            .try_into_vec_as::<f32>()
            .expect("f32 data");
        return Ok(Embeddings {
            n,
            hidden,
            values,
            pooling: Pooling::Mean,
            normalize: false,
        });
    }
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
/// Writes the run's export folder (see [`crate::export`] and [`crate::vision_tasks::export`]) and
/// says what layout it has.
pub fn export(run_dir: &Path, out: &Path, progress: &dyn Progress) -> Result<String, TrainError> {
    if crate::vision_tasks::is_image_run(run_dir) {
        return crate::vision_tasks::export(run_dir, out);
    }
    let (run, _) = load_run(run_dir, Backend::Flex, progress)?;
    Ok(crate::export::export(run_dir, &run, out)?
        .describe()
        .to_string())
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
    let (weights, architecture) = if path.is_dir() && crate::vision_tasks::is_vision_folder(path) {
        let architecture = crate::vision_tasks::describe_folder(path);
        (path.join(run_dir::WEIGHTS), architecture)
    } else if path.is_dir() {
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
