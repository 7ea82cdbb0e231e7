//! The one training path every backbone and modality takes: plan (`--dry-run`) and train, from a
//! config to a run folder. What differs between text and images is behind [`crate::modality`],
//! what differs between tasks behind [`crate::task`], and what differs between architectures
//! behind graft-model's `Backbone`; inference on what it leaves is [`crate::model`]. Configs and
//! inputs are read before a device is probed, so a typo fails fast.

use std::path::{Path, PathBuf};
use std::time::Instant;

use burn::module::Module;
use burn::tensor::{Device, Tensor};
use graft_data::TextExample;
use graft_data::image::Augment;
use graft_model::{Backbone, Modality, ModelFolder, NativeHead};
use serde::Serialize;

use crate::backend::{self, SelectedDevice};
use crate::bad_rows;
use crate::classifier::{Classifier, extract_features, rows_of, select_rows, token_rows};
use crate::config::{Backend, CacheMode, Config, HeadKind, Task};
use crate::data::RunData;
use crate::error::{TrainError, TrainError as E};
use crate::feature_cache::{self, CacheStats, FeatureCache, Shard};
use crate::files::{self, write_atomic, write_json_atomic, write_safetensors};
use crate::fit::{FitSpec, Resume, Split, fit, lr_groups, steps_per_epoch};
use crate::freezing::{ClassifierLayout, Describe, FreezeState, HeadOnly, ParamTable, stable_ids};
use crate::head::{Head, HeadSpec};
use crate::lora::{self, LoraSpec};
use crate::loss::Targets;
use crate::metrics::Report;
use crate::modality::{
    Encoded, Encoder, EpochAugment, FeatureChoices, Preparation, each_text, read_split,
};
use crate::plots;
use crate::progress::{EpochMetrics, Progress, StepMetrics};
use crate::run_dir::{self, RunManifest};
use crate::tracking;

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
    /// Examples whose features were computed, and read back from the feature cache.
    pub cache: CacheStats,
    pub total_seconds: f64,
}

/// How `train` runs, besides the config.
#[derive(Debug, Clone, Default)]
pub struct TrainOptions {
    /// Overrides the config's backend.
    pub backend: Option<Backend>,
    pub resume: Resume,
    /// Replace a run already in the output folder (never done unasked).
    pub replace: bool,
    /// Compute the features a sharded pass left missing instead of refusing to train.
    pub compute_missing: bool,
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

/// A config's backbone folder and how its inputs are prepared.
struct Source {
    folder: ModelFolder,
    preparation: Preparation,
    /// `[head] kind = "native"`: the family's own head.
    native: Option<NativeHead>,
}

impl Source {
    fn open(config: &Config) -> Result<Self, TrainError> {
        let folder = ModelFolder::open(&config.model.backbone)?;
        let m = &config.model;
        let mut choices = FeatureChoices {
            pooling: m.pooling,
            normalize: m.normalize,
            max_length: m.max_length,
            pooler: m.pooler,
            image_size: m.image_size,
            crop_pct: m.crop_pct,
        };
        let tokens = config.data.task == Task::TokenClassification;
        if config.data.task == Task::Embedding {
            // sentence-transformers pools the hidden states; it has no module for a pooler.
            choices.pooler = Some(false);
        }
        if tokens {
            // Every token's last hidden state is classified: nothing is pooled or normalized.
            choices.pooler = Some(false);
            choices.normalize = Some(false);
        }
        let native = if config.head.kind == HeadKind::Native && tokens {
            let native = folder.token_head()?.ok_or_else(|| {
                config.key_error(
                    "head",
                    "kind",
                    &format!(
                        "{} has no token classifier of its own that graft builds",
                        folder.dir.display()
                    ),
                )
            })?;
            Some(native)
        } else if config.head.kind == HeadKind::Native {
            let native = folder.native_head()?.ok_or_else(|| {
                config.key_error(
                    "head",
                    "kind",
                    &format!(
                        "{} has no classification head of its own that graft builds (text \
                         families: BERT with a pooler, RoBERTa, XLM-R, CamemBERT, DistilBERT, \
                         ELECTRA, MPNet, DeBERTa-v2/v3, ModernBERT)",
                        folder.dir.display()
                    ),
                )
            })?;
            choices.pooling = Some(native.pooling);
            choices.pooler = Some(native.use_pooler);
            choices.normalize = Some(false);
            Some(native)
        } else {
            None
        };
        let preparation = Preparation::resolve(&folder, &choices, &config.source)?;
        let data_modality = if config.is_vision() {
            Modality::Image
        } else {
            Modality::Text
        };
        if preparation.modality() != data_modality {
            let reads = |m: Modality| match m {
                Modality::Text => "text",
                Modality::Image => "images",
            };
            return Err(config.key_error(
                "model",
                "backbone",
                &format!(
                    "{} reads {}, but [data] gives {}",
                    folder.dir.display(),
                    reads(preparation.modality()),
                    reads(data_modality)
                ),
            ));
        }
        Ok(Self {
            folder,
            preparation,
            native,
        })
    }

    fn head_spec(&self, config: &Config, features: usize, outputs: usize) -> HeadSpec {
        if config.data.task == Task::Embedding {
            return HeadSpec::none(features);
        }
        HeadSpec::new(&config.head, features, outputs, self.native.clone())
    }

    /// A new head: a native head's transform starts from the checkpoint's when it has one (a
    /// fine-tuned `...ForSequenceClassification`, ModernBERT's masked-LM head), as transformers
    /// loads it; the classifier is always new.
    fn initial_head(
        &self,
        spec: &HeadSpec,
        seed: u64,
        device: &Device,
    ) -> Result<Head, TrainError> {
        let mut head = spec.init(seed, device);
        if let Some(native) = &self.native
            && let Some(saved) = native.saved_transform(&self.folder, device)?
        {
            head.transform = Some(saved);
        }
        Ok(head)
    }

    fn read_data(&self, config: &Config) -> Result<RunData, TrainError> {
        RunData::read(config, |path| {
            read_split(&config.data, config.label_column(), path)
        })
    }

    fn load(&self, device: &Device) -> Result<Backbone, TrainError> {
        Ok(Backbone::load(
            &self.folder,
            self.preparation.pooling(),
            false,
            device,
        )?)
    }

    /// The files and settings that key the feature cache.
    fn cache(&self, config: &Config, key: String) -> Result<FeatureCache, TrainError> {
        let root = config
            .train
            .cache_dir
            .clone()
            .unwrap_or_else(feature_cache::default_root);
        let mut files = vec![self.folder.weights_path(), self.folder.config_path()];
        if let Ok(graft_model::Preprocessing::Text(text)) = self.folder.preprocessing() {
            files.push(text.tokenizer);
        }
        let precision = match config.train.precision {
            crate::config::Precision::F32 => String::new(),
            other => format!(";precision={other}"),
        };
        let settings = format!("{:?};{key}{precision}", self.preparation.pooling());
        FeatureCache::new(
            &root,
            &files,
            &settings,
            config.train.cache == CacheMode::Rebuild,
        )
    }
}

/// Whether a config trains the head on cached features: a backbone frozen for the whole run,
/// no augmentation, and the cache not off.
/// What one worker of a sharded feature pass did.
#[derive(Debug, Clone, Serialize)]
pub struct FeaturesReport {
    pub shard: String,
    /// The cache folder the features went to.
    pub cache_dir: PathBuf,
    pub computed: usize,
    pub reused: usize,
    pub device: String,
}

/// The feature pass of a frozen-backbone config, only its `shard`'s share (for one worker of N,
/// on a cluster): the features go to the config's cache, where `graft train` on the same config
/// finds them and trains the head without running the backbone.
pub fn compute_features(
    config: &Config,
    shard: Shard,
    backend: Option<Backend>,
    progress: &dyn Progress,
) -> Result<FeaturesReport, TrainError> {
    if !uses_cache(config) {
        return Err(TrainError::Unsupported(
            "the feature pass alone needs a config whose backbone stays frozen for the whole \
             run, without augmentation and with [train] cache on: otherwise its features change \
             and are not cached"
                .into(),
        ));
    }
    let source = Source::open(config)?;
    let data = source.read_data(config)?;
    let selected = backend::select(backend.unwrap_or(config.train.backend))?;
    progress.info(&format!("device: {}", selected.description));
    crate::precision::check_supported(&selected.device, config.train.precision)?;
    let device = selected.device;
    let backbone = source.load(&device)?;
    let encoder = source.preparation.encoder(&source.folder)?;
    let splits = Splits::encode(&encoder, &data, progress)?;
    let cache = source.cache(config, encoder.key())?;
    let computing = crate::precision::cast_model(&backbone, config.train.precision);
    let mut stats = CacheStats::default();
    let eval_batch = config.train.eval_batch_size;
    progress.stage(
        &format!("features, shard {}/{}", shard.index, shard.count),
        0,
    );
    for encoded in [
        Some(&splits.train),
        Some(&splits.valid),
        splits.test.as_ref(),
    ]
    .into_iter()
    .flatten()
    {
        stats += cache.fill(&computing, encoded, eval_batch, &device, progress, shard)?;
    }
    progress.finish_stage();
    Ok(FeaturesReport {
        shard: format!("{}/{}", shard.index, shard.count),
        cache_dir: cache.root_dir().to_path_buf(),
        computed: stats.computed,
        reused: stats.reused,
        device: selected.description,
    })
}

fn uses_cache(config: &Config) -> bool {
    // Token classification reads every token's state, not the pooled features the cache holds;
    // embedding training tunes the backbone.
    !matches!(
        config.data.task,
        Task::TokenClassification | Task::Embedding
    ) && config.freeze.always_frozen()
        && !config.augment.is_active()
        && config.train.cache != CacheMode::Off
}

fn augment_of(config: &Config) -> Option<Augment> {
    let a = &config.augment;
    a.is_active().then(|| Augment {
        crop_scale: a.crop_scale.map(|[l, h]| (l, h)),
        horizontal_flip: a.horizontal_flip,
        brightness: a.brightness,
        contrast: a.contrast,
        saturation: a.saturation,
    })
}

/// Builds the model a config describes and reports what would train, without training.
pub fn plan(config: &Config) -> Result<TrainPlan, TrainError> {
    let source = Source::open(config)?;
    let data = source.read_data(config)?;
    #[allow(deprecated)]
    let device = Device::flex();
    let backbone = source.load(&device)?;
    let spec = source.head_spec(config, backbone.feature_size(), data.spec.labels.len());
    let head = source.initial_head(&spec, config.train.seed, &device)?;
    let layout = ClassifierLayout::of(&backbone);
    let (backbone, _) = with_lora(backbone, config)?;
    let model = stable_ids(Classifier { backbone, head });
    let table = ParamTable::of(&model, &layout);
    plan_of(config, &table, data.train.len(), uses_cache(config))
}

/// The backbone with the config's LoRA adapters attached, if it asks for them.
fn with_lora(
    backbone: Backbone,
    config: &Config,
) -> Result<(Backbone, Option<LoraSpec>), TrainError> {
    let Some(section) = &config.lora else {
        return Ok((backbone, None));
    };
    let (backbone, spec) = lora::attach(backbone, section).map_err(|e| match e {
        E::Unsupported(message) => E::Config {
            path: config.source.clone(),
            message,
        },
        other => other,
    })?;
    Ok((backbone, Some(spec)))
}

/// The plan for a model's parameter table.
fn plan_of(
    config: &Config,
    table: &ParamTable,
    n_train: usize,
    feature_cache: bool,
) -> Result<TrainPlan, TrainError> {
    let at = |epoch| {
        table
            .frozen_at(&config.freeze, epoch)
            .map_err(|message| E::Config {
                path: config.source.clone(),
                message,
            })
    };
    let start = at(1)?;
    let later: Vec<(usize, FreezeState)> = config
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
    let count = |state: &FreezeState| -> usize {
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

/// Trains a head (and, where the config unfreezes it, the backbone), saves the run folder, and
/// evaluates on the test file if there is one. The run holds its output folder (a second run
/// into it is refused) and, when asked, is tracked in MLflow. A run already in the folder is
/// continued when resuming, replaced when `options.replace` says so (the new run is built beside
/// it and swapped in only once it is whole, so a failed or stopped replacement leaves the
/// earlier run as it was), and otherwise refused, naming it.
pub fn train(
    config: &Config,
    options: &TrainOptions,
    progress: &dyn Progress,
) -> Result<TrainReport, TrainError> {
    let dir = &config.output.dir;
    let lock = run_dir::lock(dir)?;
    let resuming = !matches!(options.resume, Resume::No);
    let staging = match run_dir::existing_run(dir) {
        Some(_) if resuming => None,
        Some(_) if options.replace => Some(replacement_dir(dir)?),
        Some(holds) => {
            return Err(E::Occupied {
                path: dir.clone(),
                holds,
                ways: "train into another [output] dir, resume it if it is unfinished, or \
                       replace it"
                    .into(),
            });
        }
        None => None,
    };
    let out = staging.as_deref().unwrap_or(dir);
    let tracker = tracking::Tracker::start(config, out, resuming, progress);
    let tracked = tracking::Tracked {
        inner: progress,
        tracker: tracker.as_ref(),
    };
    let result = train_run(config, out, options, &tracked);
    if let Some(tracker) = &tracker {
        let test = result.as_ref().ok().and_then(|r| r.test.as_ref());
        tracker.finish(test, result.is_ok(), progress);
    }
    match (staging, result) {
        (None, Ok(report)) => Ok(report),
        (None, Err(e)) => {
            lock.discard_if_unused(&[tracking::RECORD]);
            Err(e)
        }
        (Some(staging), Ok(report)) => {
            files::publish_dir(&staging, dir)?;
            progress.info(&format!("replaced the earlier run in {}", dir.display()));
            Ok(TrainReport {
                run_dir: dir.clone(),
                ..report
            })
        }
        (Some(staging), Err(e)) => {
            let _ = std::fs::remove_dir_all(&staging);
            let kept = format!(
                "; the earlier run in {} is unchanged (the replacement was discarded)",
                dir.display()
            );
            Err(match e {
                E::Interrupted { signal, .. } => E::Interrupted {
                    signal,
                    kept,
                    resumable: false,
                },
                E::Diverged {
                    what,
                    value,
                    epoch,
                    step,
                    lr,
                    ..
                } => E::Diverged {
                    what,
                    value,
                    epoch,
                    step,
                    lr,
                    kept,
                },
                other => other,
            })
        }
    }
}

/// The folder a replacing run is built in, beside `dir`: `.NAME.graft-new`. A stale one, left
/// by a replacement that was killed, is cleared first (the lock on `dir` keeps any other run out).
fn replacement_dir(dir: &Path) -> Result<PathBuf, TrainError> {
    let name = dir
        .file_name()
        .map_or("run".into(), |n| n.to_string_lossy().to_string());
    let staging = dir.with_file_name(format!(".{name}.graft-new"));
    if staging.exists() {
        std::fs::remove_dir_all(&staging).map_err(TrainError::io(&staging))?;
    }
    std::fs::create_dir_all(&staging).map_err(TrainError::io(&staging))?;
    Ok(staging)
}

/// [`train`] once the folder is held and tracking started: data and model, training, the run
/// folder, the test report.
fn train_run(
    config: &Config,
    out: &Path,
    options: &TrainOptions,
    progress: &dyn Progress,
) -> Result<TrainReport, TrainError> {
    let started = Instant::now();
    let source = Source::open(config)?;
    let mut data = source.read_data(config)?;
    let selected = backend::select(options.backend.unwrap_or(config.train.backend))?;
    let replicas = backend::replicas(&selected, config.train.devices)?;
    let SelectedDevice {
        device,
        description,
        ..
    } = selected;
    progress.info(&format!("device: {description}"));
    if !replicas.is_empty() {
        progress.info(&format!(
            "data parallel: each batch split over {} devices",
            config.train.devices
        ));
    }
    crate::precision::check_supported(&device, config.train.precision)?;
    if config.train.precision != crate::config::Precision::F32 {
        progress.info(&format!(
            "precision: {} compute, f32 weights{}",
            config.train.precision,
            if config.train.precision == crate::config::Precision::F16 {
                ", dynamic loss scaling"
            } else {
                ""
            }
        ));
    }
    let replicas: Vec<Device> = replicas.into_iter().map(Device::autodiff).collect();
    device.seed(config.train.seed);
    // The weights are checked against config.json before the tokenizer is.
    let backbone = source.load(&device)?;
    let mut encoder = source.preparation.encoder(&source.folder)?;
    if data.spec.task == Task::TokenClassification {
        encoder = encoder.for_words();
    }
    say_data(&data, progress);
    let splits = Splits::encode(&encoder, &data, progress)?;
    data.align_targets(&splits.train, &splits.valid, config.data.label_all_subwords);

    let loss = data.loss(config)?;
    let metrics = |outputs: &[Vec<f32>]| data.valid_metrics(outputs);
    let head_spec = source.head_spec(config, backbone.feature_size(), data.spec.labels.len());
    std::fs::create_dir_all(out).map_err(TrainError::io(out))?;
    let layout = ClassifierLayout::of(&backbone);
    if layout.has_batchnorm() {
        progress.info(if config.freeze.train_batchnorm {
            "BatchNorm layers train inside frozen blocks (fastai's default): their weights and \
             running statistics change"
        } else {
            "frozen blocks keep their BatchNorm running statistics unchanged (inference mode)"
        });
    }
    let lengths = splits
        .train
        .lengths()
        .map(|lengths| match &data.train_targets {
            // An embedding example is as long as its texts together.
            Targets::Texts(t) => lengths.chunks(t.texts).map(|c| c.iter().sum()).collect(),
            _ => lengths,
        });
    let cached = uses_cache(config);
    let describe: &dyn Describe = if cached { &HeadOnly } else { &layout };
    let spec = FitSpec {
        train: &config.train,
        freeze: &config.freeze,
        loss: &loss,
        train_targets: &data.train_targets,
        valid_targets: &data.valid_targets,
        metrics: &metrics,
        describe,
        run_dir: out,
        lengths: lengths.as_deref(),
        config_text: toml::to_string_pretty(config).expect("config serializes"),
        resume: options.resume,
        replicas: &replicas,
    };
    let run = Run {
        config,
        source: &source,
        data: &data,
        splits: &splits,
        head_spec: &head_spec,
        spec: &spec,
        device: &device,
        progress,
        compute_missing: options.compute_missing,
    };
    let mut trained = if cached {
        run.fit_on_features(backbone, &encoder)?
    } else {
        run.fit_end_to_end(backbone)?
    };
    progress.info(&format!(
        "best epoch: {} (by {})",
        trained.best_epoch, config.train.monitor
    ));
    let plotted = plots::History {
        epochs: trained.history.clone(),
        steps: std::mem::take(&mut trained.steps),
    };
    write_training_plot(out, &plotted, &config.train.monitor, progress);
    run.save(out, &mut trained)?;
    let test = run.test_report(out, &trained)?;
    Ok(TrainReport {
        run_dir: out.to_path_buf(),
        device: description,
        history: trained.history,
        best_epoch: trained.best_epoch,
        stopped_early: trained.stopped_early,
        test,
        feature_seconds: trained.feature_seconds,
        cache: trained.cache,
        total_seconds: started.elapsed().as_secs_f64(),
    })
}

/// The data's size and labels, and the rows left out.
fn say_data(data: &RunData, progress: &dyn Progress) {
    let outputs = match data.spec.labels.is_empty() {
        true => String::new(),
        false => format!(
            "; {}: {}",
            data.spec.task.logic().outputs_noun(),
            data.spec.labels.join(", ")
        ),
    };
    progress.info(&format!(
        "data: {} train, {} valid{}{outputs}",
        data.train.len(),
        data.valid.len(),
        data.test
            .as_ref()
            .map_or(String::new(), |(_, t)| format!(", {} test", t.len())),
    ));
    for skipped in &data.skipped {
        progress.info(&skipped.summary());
    }
}

/// The run's splits, encoded once (tokenized, or images decoded).
struct Splits {
    train: Encoded,
    valid: Encoded,
    test: Option<Encoded>,
}

impl Splits {
    fn encode(
        encoder: &Encoder,
        data: &RunData,
        progress: &dyn Progress,
    ) -> Result<Self, TrainError> {
        progress.stage("reading inputs", 0);
        // Embedding training embeds each text of a pair or triplet on its own.
        let texts = data.spec.task == Task::Embedding;
        let encode = |examples: &[TextExample]| match texts {
            true => encoder.encode(&each_text(examples)),
            false => encoder.encode(examples),
        };
        let splits = Splits {
            train: encode(&data.train)?,
            valid: encode(&data.valid)?,
            test: match &data.test {
                Some((_, examples)) => Some(encode(examples)?),
                None => None,
            },
        };
        progress.finish_stage();
        Ok(splits)
    }
}

/// What training left: the best epoch's model and how it got there.
struct Trained {
    model: Classifier,
    history: Vec<EpochMetrics>,
    steps: Vec<StepMetrics>,
    best_epoch: usize,
    stopped_early: bool,
    /// A run on cached features: the test split's, computed with the others.
    test_features: Option<Tensor<2>>,
    feature_seconds: f64,
    cache: CacheStats,
    /// A LoRA run's adapters.
    lora: Option<LoraSpec>,
}

/// What every step of one training run reads.
struct Run<'a> {
    config: &'a Config,
    source: &'a Source,
    data: &'a RunData,
    splits: &'a Splits,
    head_spec: &'a HeadSpec,
    spec: &'a FitSpec<'a>,
    device: &'a Device,
    progress: &'a dyn Progress,
    compute_missing: bool,
}

impl Run<'_> {
    /// A frozen backbone computes the same features every epoch: compute them once (or read
    /// them from the cache) and train the head on them.
    fn fit_on_features(
        &self,
        backbone: Backbone,
        encoder: &Encoder,
    ) -> Result<Trained, TrainError> {
        let (config, progress, device) = (self.config, self.progress, self.device);
        let cache = self
            .source
            .cache(config, encoder.key())?
            .compute_missing(self.compute_missing);
        progress.info(&format!(
            "backbone frozen: features computed once, cached under {}",
            cache.root_dir().display()
        ));
        let feature_start = Instant::now();
        let splits = self.splits;
        let total =
            splits.train.len() + splits.valid.len() + splits.test.as_ref().map_or(0, Encoded::len);
        progress.stage("features", total);
        let mut cache_stats = CacheStats::default();
        let eval_batch = config.train.eval_batch_size;
        // The features are computed in the run's precision (and cached apart from f32's).
        let computing = crate::precision::cast_model(&backbone, config.train.precision);
        let mut lookup = |encoded: &Encoded| {
            let (features, stats) =
                cache.features(&computing, encoded, eval_batch, device, progress)?;
            cache_stats += stats;
            Ok::<_, TrainError>(features)
        };
        let (d, data) = (&config.data, self.data);
        let train_x = lookup(&splits.train)?;
        check_features(&train_x, &data.train, &d.train)?;
        let valid_x = lookup(&splits.valid)?;
        check_features(&valid_x, &data.valid, d.valid.as_ref().unwrap_or(&d.train))?;
        let mut test_features = None;
        if let (Some(encoded), Some((path, examples))) = (&splits.test, &data.test) {
            let features = lookup(encoded)?;
            check_features(&features, examples, path)?;
            test_features = Some(features);
        }
        progress.finish_stage();
        let feature_seconds = feature_start.elapsed().as_secs_f64();
        progress.info(&format!(
            "features: {} computed, {} read from the cache ({feature_seconds:.1}s)",
            cache_stats.computed, cache_stats.reused
        ));
        let train_device = device.clone().autodiff();
        let outcome = fit(
            self.source
                .initial_head(self.head_spec, config.train.seed, &train_device)?,
            |head, split, idx, on| match split {
                Split::Train { .. } => {
                    let rows = select_rows(&train_x, idx, device);
                    head.forward(if on == device {
                        rows
                    } else {
                        rows.to_device(on)
                    })
                }
                Split::Valid => head.forward(select_rows(&valid_x, idx, device)),
            },
            self.spec,
            &train_device,
            progress,
        )?;
        Ok(Trained {
            model: Classifier {
                backbone,
                head: outcome.model,
            },
            history: outcome.history,
            steps: outcome.steps,
            best_epoch: outcome.best_epoch,
            stopped_early: outcome.stopped_early,
            test_features,
            feature_seconds,
            cache: cache_stats,
            lora: None,
        })
    }

    /// The backbone trains (in part, or through LoRA adapters), or augmentation changes the
    /// inputs every epoch: backbone and head run on every batch.
    fn fit_end_to_end(&self, backbone: Backbone) -> Result<Trained, TrainError> {
        let (config, progress, device) = (self.config, self.progress, self.device);
        if config.data.task == Task::Embedding && config.freeze.always_frozen() {
            progress.info(
                "embedding training with the whole backbone frozen: nothing changes the \
                 embeddings ([freeze] backbone = false trains them)",
            );
        } else if config.data.task == Task::TokenClassification && config.freeze.always_frozen() {
            progress.info(
                "token classification: the frozen backbone runs on every batch (the feature \
                 cache holds pooled features, not every token's)",
            );
        } else if config.train.cache == CacheMode::Auto && !config.freeze.always_frozen() {
            progress.info("feature cache off: the backbone trains, so its features change");
        } else if config.augment.is_active() {
            progress.info("feature cache off: augmentation changes the inputs every epoch");
        }
        let train_device = device.clone().autodiff();
        let (backbone, adapters) = with_lora(backbone, config)?;
        // Moving the backbone to the autodiff device does not put its weights under autodiff
        // (the device is the same one); `train` does, so that gradients reach every weight the
        // freeze state leaves trainable (and LoRA's adapters, made on the loading device).
        let backbone = backbone.to_device(&train_device).train();
        let adapter = config.lora.as_ref().and_then(|l| l.adapter.as_deref());
        let head = match adapter.map(|dir| lora::saved_head(dir, self.head_spec, &train_device)) {
            Some(Some(head)) => {
                progress.info("head: the adapter's saved classifier (modules_to_save)");
                head
            }
            _ => self
                .source
                .initial_head(self.head_spec, config.train.seed, &train_device)?,
        };
        let model = Classifier { backbone, head };
        let augment = augment_of(config);
        let seed = config.train.seed;
        let (train_data, valid_data) = (&self.splits.train, &self.splits.valid);
        let sentences = match (&self.data.train_targets, &self.data.valid_targets) {
            (Targets::Tokens(train), Targets::Tokens(valid)) => Some((train, valid)),
            _ => None,
        };
        let texts = match &self.data.train_targets {
            Targets::Texts(t) => Some(t.texts),
            _ => None,
        };
        let outcome = fit(
            model,
            |model, split, idx, on| match (split, sentences, texts) {
                (Split::Train { .. }, _, Some(m)) => model.forward_texts(train_data, idx, m, on),
                (Split::Valid, _, Some(m)) => model.forward_texts(valid_data, idx, m, device),
                (Split::Train { .. }, Some((train, _)), None) => {
                    model.forward_tokens(train_data, idx, train, on)
                }
                (Split::Valid, Some((_, valid)), None) => {
                    model.forward_tokens(valid_data, idx, valid, device)
                }
                (Split::Train { epoch }, None, None) => {
                    let augment = augment.as_ref().map(|augment| EpochAugment {
                        augment,
                        seed,
                        epoch,
                    });
                    model.forward(train_data, idx, augment, on)
                }
                (Split::Valid, None, None) => model.forward(valid_data, idx, None, device),
            },
            self.spec,
            &train_device,
            progress,
        )?;
        Ok(Trained {
            model: outcome.model,
            history: outcome.history,
            steps: outcome.steps,
            best_epoch: outcome.best_epoch,
            stopped_early: outcome.stopped_early,
            test_features: None,
            feature_seconds: 0.0,
            cache: CacheStats::default(),
            lora: adapters,
        })
    }

    /// The run folder: the model (a LoRA run's backbone merged, its adapters in PEFT's layout
    /// beside it), `graft.json` and the config.
    fn save(&self, out: &Path, trained: &mut Trained) -> Result<(), TrainError> {
        let (config, data, source) = (self.config, self.data, self.source);
        let model = &mut trained.model;
        let adapter_tensors = trained
            .lora
            .as_ref()
            .map(|_| lora::peft_tensors(&model.backbone, self.head_spec.native.as_ref()));
        if trained.lora.is_some() {
            model.backbone = model.backbone.clone().materialize();
        }
        if let Some((mean, std)) = data.standardization {
            // The saved model predicts raw values: fold the standardization into the last layer.
            model.head = model.head.clone().rescale_output(std, mean);
        }
        let d = &config.data;
        let task = data.spec.task;
        let label_lists = task.logic().label_lists();
        let manifest = RunManifest {
            graft_version: env!("CARGO_PKG_VERSION").into(),
            task,
            architecture: model.backbone.architecture().describe(),
            labels: data.spec.labels.clone(),
            head: self.head_spec.clone(),
            backbone_source: config.model.backbone.clone(),
            input_column: match source.preparation.modality() {
                Modality::Text => Some(d.text_column.clone()),
                Modality::Image => d.image_column.clone(),
            },
            pair_column: d.text_pair.clone(),
            negative_column: d.negative_column.clone(),
            label_column: d.label_column.clone(),
            best_epoch: Some(trained.best_epoch),
            threshold: label_lists.then_some(data.spec.threshold),
            label_separator: label_lists.then(|| d.label_separator.clone()),
            preparation: source.preparation.clone(),
            lora: trained.lora.clone(),
            skipped_rows: bad_rows::counts(&data.skipped),
        };
        run_dir::save(out, &manifest, model, &source.folder.dir)?;
        if task == Task::TokenClassification {
            save_word_tokenizer(out, source)?;
        }
        if task == Task::Embedding {
            // The run folder is then a sentence-transformers folder, and a backbone for a head.
            crate::export::write_sentence_transformers_modules(out, &manifest.preparation, model)?;
        }
        let adapter_path = out.join(lora::ADAPTER_WEIGHTS);
        match adapter_tensors {
            Some(tensors) => write_safetensors(&adapter_path, &tensors, None)?,
            None if adapter_path.exists() => {
                std::fs::remove_file(&adapter_path).map_err(|source| E::Io {
                    path: adapter_path.clone(),
                    source,
                })?
            }
            None => {}
        }
        write_atomic(&out.join("config.toml"), self.spec.config_text.as_bytes())
    }

    /// The test split's report (`eval.json`) and its picture, if the config has a test file.
    fn test_report(&self, out: &Path, trained: &Trained) -> Result<Option<Report>, TrainError> {
        let (Some((path, examples)), Some(encoded)) = (&self.data.test, &self.splits.test) else {
            return Ok(None);
        };
        let (spec, progress) = (&self.data.spec, self.progress);
        let targets = spec.targets(examples, path)?;
        let model = &trained.model;
        let eval_batch = self.config.train.eval_batch_size;
        let targets = targets.aligned(
            encoded.word_ids().unwrap_or_default(),
            self.config.data.label_all_subwords,
            &spec.labels,
        );
        let outputs = match &trained.test_features {
            _ if matches!(targets, Targets::Tokens(_)) => {
                progress.stage("test", encoded.len());
                let outputs = token_rows(model, encoded, &targets, eval_batch, self.device);
                progress.advance(encoded.len());
                progress.finish_stage();
                outputs
            }
            Some(features) => rows_of(model.head.valid().forward(features.clone())),
            None => {
                progress.stage("test", encoded.len());
                let outputs = outputs_of(model, encoded, eval_batch, self.device, progress);
                progress.finish_stage();
                outputs
            }
        };
        let report = spec.report(&outputs, &targets, None);
        write_json_atomic(&out.join("eval.json"), &report)?;
        if let Some(plot) = spec.evaluation_plot(&report, &outputs, &targets) {
            save_plot(&out.join(plot.name), plot.image, progress);
        }
        Ok(Some(report))
    }
}

/// Raw outputs `[n][k]` for every example, in order.
fn outputs_of(
    model: &Classifier,
    data: &Encoded,
    batch_size: usize,
    device: &Device,
    progress: &dyn Progress,
) -> Vec<Vec<f32>> {
    let model = model.valid();
    let features = extract_features(&model.backbone, data, None, batch_size, device, progress);
    rows_of(model.head.forward(features))
}

/// A token-classification run reads text as its words were read in training: its
/// `tokenizer.json` is the one set for words (a byte-level BPE marks every word as following a
/// space), and `tokenizer_config.json` says `add_prefix_space`, as transformers' recipe saves it.
fn save_word_tokenizer(out: &Path, source: &Source) -> Result<(), TrainError> {
    let Encoder::Words(words, text) = source.preparation.encoder(&source.folder)?.for_words()
    else {
        return Ok(());
    };
    let (json, original) = (words.to_json()?, text.to_json()?);
    if json == original {
        return Ok(());
    }
    write_atomic(&out.join("tokenizer.json"), json.as_bytes())?;
    let config_path = out.join("tokenizer_config.json");
    if let Ok(text) = std::fs::read_to_string(&config_path)
        && let Ok(serde_json::Value::Object(mut config)) = serde_json::from_str(&text)
    {
        config.insert("add_prefix_space".into(), serde_json::Value::Bool(true));
        write_json_atomic(&config_path, &serde_json::Value::Object(config))?;
    }
    Ok(())
}

/// Features must be finite: a NaN or infinite feature (weights that overflow, a cached shard
/// damaged on disk) is an error naming the example's file and line.
fn check_features(
    features: &Tensor<2>,
    examples: &[TextExample],
    source: &Path,
) -> Result<(), TrainError> {
    let bad = features.clone().is_finite().bool_not().any_dim(1);
    if !bad.clone().any().into_scalar::<bool>() {
        return Ok(());
    }
    let rows: Vec<bool> = bad.into_data().try_to_vec::<bool>().unwrap_or_default();
    let first = rows.iter().position(|&b| b).unwrap_or(0);
    // A table's file and line, or an image folder's image.
    let path = match examples.get(first) {
        Some(e) if e.line > 0 => PathBuf::from(format!("{}:{}", source.display(), e.line)),
        Some(e) => PathBuf::from(&e.text),
        None => source.to_path_buf(),
    };
    Err(E::Config {
        path,
        message: "the backbone's features of this example are NaN or infinite (corrupt weights, \
                  or values too large for f32); check the model folder, or rebuild the feature \
                  cache with [train] cache = \"rebuild\""
            .into(),
    })
}

/// `training.png` in the run folder, from the run's epoch and step metrics. A picture that
/// cannot be drawn costs a warning, never the run.
fn write_training_plot(
    run_dir: &Path,
    history: &plots::History,
    monitor: &str,
    progress: &dyn Progress,
) {
    let image = plots::training_plot(history, monitor);
    save_plot(&run_dir.join(plots::TRAINING_PLOT), image, progress);
}

/// Saves a drawn picture, or warns why there is none.
pub fn save_plot(path: &Path, image: Result<image::RgbImage, String>, progress: &dyn Progress) {
    if let Err(message) = image
        .map_err(TrainError::Unsupported)
        .and_then(|image| plots::save_png(path, &image))
    {
        progress.info(&format!("warning: no {}: {message}", path.display()));
    }
}
