//! The one path every backbone and modality takes: plan (`--dry-run`), train, evaluate, predict
//! and embed. What differs between text and images is behind [`crate::modality`], what differs
//! between tasks behind [`crate::task`], and what differs between architectures behind
//! graft-model's `Backbone`. Configs and inputs are read before a device is probed, so a typo
//! fails fast.

use std::path::{Path, PathBuf};
use std::time::Instant;

use burn::module::Module;
use burn::tensor::{Device, Tensor};
use graft_data::TextExample;
use graft_data::image::Augment;
use graft_model::{Backbone, Modality, ModelFolder, NativeHead, Pooling};
use serde::Serialize;

use crate::backend::{self, SelectedDevice};
use crate::bad_rows::{self, Screen, label_problem, row_problem};
use crate::classifier::{Classifier, extract_features, rows_of, select_rows};
use crate::config::{Backend, CacheMode, Config, HeadKind, LoraSection};
use crate::data::RunData;
use crate::error::{TrainError, TrainError as E};
use crate::feature_cache::{self, CacheStats, FeatureCache};
use crate::files::{self, TensorBytes, write_atomic, write_json_atomic, write_safetensors};
use crate::fit::{FitSpec, Resume, Split, fit, lr_groups, steps_per_epoch};
use crate::freezing::{ClassifierLayout, Describe, FreezeState, HeadOnly, ParamTable, stable_ids};
use crate::head::{Head, HeadSpec};
use crate::lora::{self, LoraSpec};
use crate::metrics::Report;
use crate::modality::{
    Encoded, EpochAugment, FeatureChoices, Input, Preparation, read_input, read_split,
};
use crate::plots;
use crate::progress::{EpochMetrics, Progress};
use crate::run_dir::{self, RunManifest};
use crate::task::{EvaluationPlot, Prediction, Task, TaskSpec};
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
        let native = if config.head.kind == HeadKind::Native {
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
        RunData::read(config, |path| read_split(&config.data, path))
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
        let settings = format!("{:?};{key}", self.preparation.pooling());
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
fn uses_cache(config: &Config) -> bool {
    config.freeze.always_frozen()
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

/// [`train`] once the folder is held and tracking started.
fn train_run(
    config: &Config,
    out: &Path,
    options: &TrainOptions,
    progress: &dyn Progress,
) -> Result<TrainReport, TrainError> {
    let started = Instant::now();
    let source = Source::open(config)?;
    let data = source.read_data(config)?;
    let SelectedDevice {
        device,
        description,
        ..
    } = backend::select(options.backend.unwrap_or(config.train.backend))?;
    progress.info(&format!("device: {description}"));
    device.seed(config.train.seed);
    // The weights are checked against config.json before the tokenizer is.
    let backbone = source.load(&device)?;
    let encoder = source.preparation.encoder(&source.folder)?;
    let task = data.spec.task;
    progress.info(&format!(
        "data: {} train, {} valid{}; {}: {}",
        data.train.len(),
        data.valid.len(),
        data.test
            .as_ref()
            .map_or(String::new(), |(_, t)| format!(", {} test", t.len())),
        task.outputs_noun(),
        data.spec.labels.join(", ")
    ));
    for skipped in &data.skipped {
        progress.info(&skipped.summary());
    }
    progress.stage("reading inputs", 0);
    let train_data = encoder.encode(&data.train)?;
    let valid_data = encoder.encode(&data.valid)?;
    let test_data = match &data.test {
        Some((_, examples)) => Some(encoder.encode(examples)?),
        None => None,
    };
    progress.finish_stage();

    let loss = data.loss(config)?;
    let metrics = |outputs: &[Vec<f32>]| data.valid_metrics(outputs);
    let head_spec = source.head_spec(config, backbone.feature_size(), data.spec.labels.len());
    let train_device = device.clone().autodiff();
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
    let lengths = train_data.lengths();
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
    };
    let eval_batch = config.train.eval_batch_size;
    let mut feature_seconds = 0.0;
    let mut cache_stats = CacheStats::default();
    let mut test_features = None;
    let mut lora_spec = None;
    let (mut model, history, best_epoch, stopped_early) = if cached {
        // The frozen backbone computes the same features every epoch: compute them once.
        let cache = source.cache(config, encoder.key())?;
        progress.info(&format!(
            "backbone frozen: features computed once, cached under {}",
            cache.root_dir().display()
        ));
        let feature_start = Instant::now();
        let total =
            train_data.len() + valid_data.len() + test_data.as_ref().map_or(0, Encoded::len);
        progress.stage("features", total);
        let mut lookup = |encoded: &Encoded| {
            let (features, stats) =
                cache.features(&backbone, encoded, eval_batch, &device, progress)?;
            cache_stats += stats;
            Ok::<_, TrainError>(features)
        };
        let d = &config.data;
        let train_x = lookup(&train_data)?;
        check_features(&train_x, &data.train, &d.train)?;
        let valid_x = lookup(&valid_data)?;
        check_features(&valid_x, &data.valid, d.valid.as_ref().unwrap_or(&d.train))?;
        if let (Some(encoded), Some((path, examples))) = (&test_data, &data.test) {
            let features = lookup(encoded)?;
            check_features(&features, examples, path)?;
            test_features = Some(features);
        }
        progress.finish_stage();
        feature_seconds = feature_start.elapsed().as_secs_f64();
        progress.info(&format!(
            "features: {} computed, {} read from the cache ({feature_seconds:.1}s)",
            cache_stats.computed, cache_stats.reused
        ));
        let outcome = fit(
            source.initial_head(&head_spec, config.train.seed, &train_device)?,
            |head, split, idx| match split {
                Split::Train { .. } => head.forward(select_rows(&train_x, idx, &device)),
                Split::Valid => head.forward(select_rows(&valid_x, idx, &device)),
            },
            &spec,
            &train_device,
            progress,
        )?;
        let model = Classifier {
            backbone,
            head: outcome.model,
        };
        (
            model,
            outcome.history,
            outcome.best_epoch,
            outcome.stopped_early,
        )
    } else {
        if config.train.cache == CacheMode::Auto && !config.freeze.always_frozen() {
            progress.info("feature cache off: the backbone trains, so its features change");
        } else if config.augment.is_active() {
            progress.info("feature cache off: augmentation changes the inputs every epoch");
        }
        let (backbone, adapters) = with_lora(backbone, config)?;
        let backbone = backbone.to_device(&train_device);
        // The adapters are made on the loading device; `train` puts them (and the base) under
        // autodiff, as moving a loaded weight does.
        let backbone = if adapters.is_some() {
            backbone.train()
        } else {
            backbone
        };
        lora_spec = adapters;
        let adapter = config.lora.as_ref().and_then(|l| l.adapter.as_deref());
        let head = match adapter.map(|dir| lora::saved_head(dir, &head_spec, &train_device)) {
            Some(Some(head)) => {
                progress.info("head: the adapter's saved classifier (modules_to_save)");
                head
            }
            _ => source.initial_head(&head_spec, config.train.seed, &train_device)?,
        };
        let model = Classifier { backbone, head };
        let augment = augment_of(config);
        let seed = config.train.seed;
        let outcome = fit(
            model,
            |model, split, idx| match split {
                Split::Train { epoch } => {
                    let augment = augment.as_ref().map(|augment| EpochAugment {
                        augment,
                        seed,
                        epoch,
                    });
                    model.forward(&train_data, idx, augment, &train_device)
                }
                Split::Valid => model.forward(&valid_data, idx, None, &device),
            },
            &spec,
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
    progress.info(&format!(
        "best epoch: {best_epoch} (by {})",
        config.train.monitor
    ));
    write_training_plot(out, &config.train.monitor, progress);
    // A LoRA run keeps its adapters in PEFT's layout and the merged backbone as its model.
    let adapter_tensors = lora_spec
        .as_ref()
        .map(|_| lora::peft_tensors(&model.backbone, head_spec.native.as_ref()));
    if lora_spec.is_some() {
        model.backbone = model.backbone.materialize();
    }
    if let Some((mean, std)) = data.standardization {
        // The saved model predicts raw values: fold the standardization into the last layer.
        model.head = model.head.rescale_output(std, mean);
    }

    // Artifacts.
    let d = &config.data;
    let multi_label = task == Task::MultiLabel;
    let manifest = RunManifest {
        graft_version: env!("CARGO_PKG_VERSION").into(),
        task: task.name().into(),
        architecture: model.backbone.architecture().describe(),
        labels: data.spec.labels.clone(),
        head: head_spec,
        backbone_source: config.model.backbone.clone(),
        input_column: match source.preparation.modality() {
            Modality::Text => Some(d.text_column.clone()),
            Modality::Image => d.image_column.clone(),
        },
        label_column: d.label_column.clone(),
        best_epoch: Some(best_epoch),
        threshold: multi_label.then_some(data.spec.threshold),
        label_separator: multi_label.then(|| d.label_separator.clone()),
        preparation: source.preparation.clone(),
        lora: lora_spec,
        skipped_rows: bad_rows::counts(&data.skipped),
    };
    run_dir::save(out, &manifest, &model, &source.folder.dir)?;
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
    write_atomic(&out.join("config.toml"), spec.config_text.as_bytes())?;

    let test = match (&data.test, &test_data) {
        (Some((path, examples)), Some(encoded)) => {
            let targets = data.spec.targets(examples, path)?;
            let outputs = match test_features {
                Some(features) => rows_of(model.head.valid().forward(features)),
                None => {
                    progress.stage("test", encoded.len());
                    let outputs = outputs_of(&model, encoded, eval_batch, &device, progress);
                    progress.finish_stage();
                    outputs
                }
            };
            let report = data.spec.report(&outputs, &targets, None);
            write_json_atomic(&out.join("eval.json"), &report)?;
            if let Some(plot) = data.spec.evaluation_plot(&report, &outputs, &targets) {
                save_plot(&out.join(plot.name), plot.image, progress);
            }
            Some(report)
        }
        _ => None,
    };
    Ok(TrainReport {
        run_dir: out.to_path_buf(),
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

fn check_batch_size(batch_size: usize) -> Result<(), TrainError> {
    if batch_size == 0 {
        return Err(E::Unsupported("the batch size must be at least 1".into()));
    }
    Ok(())
}

/// Selects the device and says which it is.
fn device_for(backend: Backend, progress: &dyn Progress) -> Result<Device, TrainError> {
    let selected = backend::select(backend)?;
    progress.info(&format!("device: {}", selected.description));
    Ok(selected.device)
}

/// A run's raw outputs on the examples of an input file.
fn run_outputs(
    run_dir: &Path,
    examples: &[TextExample],
    batch_size: usize,
    backend: Backend,
    progress: &dyn Progress,
) -> Result<Vec<Vec<f32>>, TrainError> {
    let device = device_for(backend, progress)?;
    let run = run_dir::load(run_dir, &device)?;
    let data = run.encoder.encode(examples)?;
    progress.stage("running", data.len());
    let outputs = outputs_of(&run.model, &data, batch_size, &device, progress);
    progress.finish_stage();
    Ok(outputs)
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

/// `training.png` in the run folder, from its `metrics.jsonl`. A picture that cannot be drawn
/// costs a warning, never the run.
fn write_training_plot(run_dir: &Path, monitor: &str, progress: &dyn Progress) {
    let path = run_dir.join("metrics.jsonl");
    let image = std::fs::read_to_string(&path)
        .map_err(|e| e.to_string())
        .and_then(|text| plots::History::parse(&text))
        .and_then(|history| plots::training_plot(&history, monitor));
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

/// An evaluation: the report and its picture (a confusion matrix, one per label for
/// multi-label, or predicted against true values).
pub struct Evaluation {
    pub report: Report,
    pub plot: Option<EvaluationPlot>,
}

/// Scores a run on labelled data (the run's input and label columns unless given).
pub fn evaluate(
    run_dir: &Path,
    input: &Input,
    label_column: Option<&str>,
    batch_size: usize,
    backend: Backend,
    progress: &dyn Progress,
) -> Result<Evaluation, TrainError> {
    check_batch_size(batch_size)?;
    let manifest = run_dir::read_manifest(run_dir)?;
    let spec = manifest.task_spec()?;
    let input = Input {
        path: input.path.clone(),
        column: input.column.clone().or(manifest.input_column.clone()),
    };
    let label_column = label_column.unwrap_or(&manifest.label_column);
    let modality = manifest.preparation.modality();
    let examples = read_input(modality, &input, Some(label_column))?;
    let examples = Screen::inputs().apply(&input.path, examples, |e| {
        row_problem(spec.task, e).or_else(|| label_problem(&spec, e))
    })?;
    let targets = spec.targets(&examples, &input.path)?;
    let outputs = run_outputs(run_dir, &examples, batch_size, backend, progress)?;
    let report = spec.report(&outputs, &targets, None);
    let plot = spec.evaluation_plot(&report, &outputs, &targets);
    Ok(Evaluation { report, plot })
}

/// Predictions for every input, in order: from a run, or from a pretrained model folder's own
/// classifier (its classes named by index).
pub fn predict(
    dir: &Path,
    input: &Input,
    batch_size: usize,
    backend: Backend,
    progress: &dyn Progress,
) -> Result<Vec<Prediction>, TrainError> {
    check_batch_size(batch_size)?;
    let (modality, examples, spec, outputs) = if run_dir::is_run(dir) {
        let manifest = run_dir::read_manifest(dir)?;
        let spec = manifest.task_spec()?;
        let input = Input {
            path: input.path.clone(),
            column: input.column.clone().or(manifest.input_column.clone()),
        };
        let modality = manifest.preparation.modality();
        let examples = read_input(modality, &input, None)?;
        let outputs = run_outputs(dir, &examples, batch_size, backend, progress)?;
        (modality, examples, spec, outputs)
    } else if lora::is_adapter(dir) {
        let (examples, spec, outputs) = adapter_outputs(dir, input, batch_size, backend, progress)?;
        (Modality::Text, examples, spec, outputs)
    } else {
        if dir.is_dir() && !dir.join("config.json").exists() {
            return Err(E::NotAModel {
                path: dir.to_path_buf(),
            });
        }
        let (modality, (examples, spec, outputs)) =
            pretrained_outputs(dir, input, batch_size, backend, progress)?;
        (modality, examples, spec, outputs)
    };
    let mut predictions = spec.predictions(&outputs);
    if modality == Modality::Image {
        for (p, example) in predictions.iter_mut().zip(examples) {
            p.input = Some(example.text);
        }
    }
    Ok(predictions)
}

/// Inputs, how to read the outputs, and the raw outputs `[n][k]`.
type Outputs = (Vec<TextExample>, TaskSpec, Vec<Vec<f32>>);

/// Outputs of a pretrained folder's own classifier: a vision network's, or a text family's
/// `...ForSequenceClassification` head (its transform and classifier, pooled as the family
/// pools), with the classes `id2label` names.
fn pretrained_outputs(
    dir: &Path,
    input: &Input,
    batch_size: usize,
    backend: Backend,
    progress: &dyn Progress,
) -> Result<(Modality, Outputs), TrainError> {
    let folder = ModelFolder::open(dir)?;
    let native = folder.native_head()?;
    let choices = match &native {
        Some(n) => FeatureChoices {
            pooling: Some(n.pooling),
            pooler: Some(n.use_pooler),
            normalize: Some(false),
            ..FeatureChoices::default()
        },
        None => FeatureChoices::default(),
    };
    let preparation = Preparation::resolve(&folder, &choices, dir)?;
    let pretrained = Pretrained {
        folder,
        preparation,
    };
    let folder = &pretrained.folder;
    let modality = pretrained.preparation.modality();
    let examples = read_input(modality, input, None)?;
    let device = device_for(backend, progress)?;
    let backbone = Backbone::load(folder, pretrained.preparation.pooling(), true, &device)?;
    let no_classifier = || E::Config {
        path: folder.config_path(),
        message: "the model has no classifier of its own; train a head with `graft train` and \
                  predict with the run folder"
            .into(),
    };
    let (transform, classifier) = match &native {
        Some(native) => {
            let classifier = native
                .saved_classifier(folder, &device)?
                .ok_or_else(no_classifier)?;
            let transform = native.saved_transform(folder, &device)?;
            if let (Some(spec), None) = (&native.transform, &transform) {
                return Err(E::Config {
                    path: folder.weights_path(),
                    message: format!(
                        "{}.weight is there but not the rest of the head ({}.weight)",
                        native.classifier, spec.dense
                    ),
                });
            }
            (transform, classifier)
        }
        None => {
            let classifier = backbone
                .architecture()
                .classifier()
                .ok_or_else(no_classifier)?;
            (None, classifier.clone())
        }
    };
    let head = Head {
        transform,
        layers: vec![classifier],
        dropout: burn::nn::DropoutConfig::new(0.0).init(),
    };
    let features = pretrained.features(&backbone, &examples, batch_size, &device, progress)?;
    let outputs = rows_of(head.forward(features));
    let classes = outputs.first().map_or(0, Vec::len);
    // transformers' rule: the config's problem_type, else regression for one output.
    let task = match folder.config.get("problem_type").and_then(|v| v.as_str()) {
        Some(name) => Task::named(name).map_err(|_| E::Config {
            path: folder.config_path(),
            message: format!(
                "problem_type \"{name}\" is not single_label_classification, \
                 multi_label_classification or regression"
            ),
        })?,
        None if native.is_some() && classes == 1 => Task::Regression,
        None => Task::Classification,
    };
    let spec = TaskSpec {
        task,
        labels: id2label(&folder.config, classes),
        threshold: 0.5,
        separator: "|".into(),
    };
    Ok((modality, (examples, spec, outputs)))
}

/// The class names of a `config.json` when it names all `classes`: transformers' `id2label`, or
/// timm's `label_names`; else the indices.
fn id2label(config: &serde_json::Value, classes: usize) -> Vec<String> {
    let transformers = config.get("id2label").and_then(|map| {
        (0..classes)
            .map(|i| map.get(i.to_string())?.as_str().map(String::from))
            .collect::<Option<Vec<_>>>()
    });
    let timm = || {
        let names = config.get("label_names")?.as_array()?;
        (names.len() == classes)
            .then(|| {
                names
                    .iter()
                    .map(|n| n.as_str().map(String::from))
                    .collect::<Option<Vec<_>>>()
            })
            .flatten()
    };
    transformers
        .or_else(timm)
        .unwrap_or_else(|| (0..classes).map(|c| c.to_string()).collect())
}

/// Outputs of a PEFT LoRA sequence-classification adapter on its base model, as
/// `PeftModel.from_pretrained(AutoModelForSequenceClassification.from_pretrained(BASE), DIR)`
/// computes them: the adapters merged into the base, the pooler, and the saved classifier.
fn adapter_outputs(
    dir: &Path,
    input: &Input,
    batch_size: usize,
    backend: Backend,
    progress: &dyn Progress,
) -> Result<Outputs, TrainError> {
    let adapter = lora::PeftAdapter::read(dir)?;
    let base = adapter.base_dir()?;
    let folder = ModelFolder::open(&base)?;
    let Some(native) = folder.native_head()? else {
        return Err(E::Unsupported(format!(
            "{} has no transformers sequence classifier to put the adapter on",
            base.display()
        )));
    };
    let choices = FeatureChoices {
        pooling: Some(native.pooling),
        pooler: Some(native.use_pooler),
        normalize: Some(false),
        ..FeatureChoices::default()
    };
    let preparation = Preparation::resolve(&folder, &choices, &base)?;
    let pretrained = Pretrained {
        folder,
        preparation,
    };
    let examples = read_input(Modality::Text, input, None)?;
    let device = device_for(backend, progress)?;
    let backbone = Backbone::load(
        &pretrained.folder,
        pretrained.preparation.pooling(),
        false,
        &device,
    )?;
    let Some((weight, _)) = adapter.saved_linear(&native.classifier) else {
        return Err(E::Config {
            path: adapter.weights.clone(),
            message: format!(
                "no {}.weight: the adapter does not save its classifier (modules_to_save = {:?})",
                native.classifier,
                native.modules()
            ),
        });
    };
    let output = weight.shape[0];
    let spec = HeadSpec {
        kind: HeadKind::Native,
        input: backbone.feature_size(),
        hidden: Vec::new(),
        output,
        dropout: 0.0,
        native: Some(native.clone()),
    };
    let head = adapter.head(&spec, &device).ok_or_else(|| E::Config {
        path: adapter.weights.clone(),
        message: format!(
            "the saved head does not fit {}: {}.weight must be [{output}, {}]{}",
            native.model,
            native.classifier,
            backbone.feature_size(),
            native.transform.as_ref().map_or(String::new(), |t| format!(
                " and {}.weight must be saved",
                t.dense
            ))
        ),
    })?;
    let (backbone, _) = lora::attach(backbone, &LoraSection::from_adapter(dir.to_path_buf()))?;
    let backbone = backbone.materialize();
    let features = pretrained.features(&backbone, &examples, batch_size, &device, progress)?;
    let outputs = rows_of(head.forward(features));
    // graft's exports name the classes in labels.json; otherwise they are numbered.
    let labels = std::fs::read_to_string(dir.join("labels.json"))
        .ok()
        .and_then(|text| serde_json::from_str::<Vec<String>>(&text).ok())
        .filter(|labels| labels.len() == output)
        .unwrap_or_else(|| (0..output).map(|c| c.to_string()).collect());
    let spec = TaskSpec {
        task: Task::Classification,
        labels,
        threshold: 0.5,
        separator: "|".into(),
    };
    Ok((examples, spec, outputs))
}

/// A pretrained model folder used as it is.
struct Pretrained {
    folder: ModelFolder,
    preparation: Preparation,
}

impl Pretrained {
    fn open(dir: &Path, choices: &FeatureChoices) -> Result<Self, TrainError> {
        let folder = ModelFolder::open(dir)?;
        let preparation = Preparation::resolve(&folder, choices, dir)?;
        Ok(Self {
            folder,
            preparation,
        })
    }

    /// Backbone features of `examples`, in order.
    fn features(
        &self,
        backbone: &Backbone,
        examples: &[TextExample],
        batch_size: usize,
        device: &Device,
        progress: &dyn Progress,
    ) -> Result<Tensor<2>, TrainError> {
        let data = self.preparation.encoder(&self.folder)?.encode(examples)?;
        progress.stage("embedding", data.len());
        let features = extract_features(backbone, &data, None, batch_size, device, progress);
        progress.finish_stage();
        Ok(features)
    }
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
    pub width: usize,
    /// Row-major `[n, width]`.
    pub values: Vec<f32>,
    /// Text: the pooling used; images: the architecture's own.
    pub pooling: Option<Pooling>,
    pub normalize: bool,
}

/// Embeds the inputs with a pretrained model folder as it is (no head). Text: pooled hidden
/// states (CLS is the raw `[CLS]` state, as sentence-transformers defines it); images: the
/// backbone's pooled features.
pub fn embed(
    model_dir: &Path,
    input: &Input,
    options: &EmbedOptions,
    backend: Backend,
    progress: &dyn Progress,
) -> Result<Embeddings, TrainError> {
    check_batch_size(options.batch_size)?;
    let choices = FeatureChoices {
        pooling: options.pooling,
        normalize: options.normalize,
        max_length: options.max_length,
        pooler: Some(false),
        ..FeatureChoices::default()
    };
    let pretrained = Pretrained::open(model_dir, &choices)?;
    let modality = pretrained.preparation.modality();
    let examples = read_input(modality, input, None)?;
    let mut pooling = pretrained.preparation.pooling();
    if let Some(normalize) = options.normalize {
        pooling.normalize = normalize;
    }
    let device = device_for(backend, progress)?;
    let mut backbone = Backbone::load(&pretrained.folder, pooling, false, &device)?;
    backbone.embedding = true;
    let features =
        pretrained.features(&backbone, &examples, options.batch_size, &device, progress)?;
    let [n, width] = features.dims();
    let values = features
        .into_data()
        .try_into_vec_as::<f32>()
        .expect("f32 data");
    Ok(Embeddings {
        n,
        width,
        values,
        pooling: (modality == Modality::Text).then_some(pooling.pooling),
        normalize: pooling.normalize,
    })
}

impl Embeddings {
    /// Writes one f32 tensor `embeddings` of shape `[n, width]`, atomically.
    pub fn save(&self, path: &Path) -> Result<(), TrainError> {
        let mut metadata = std::collections::HashMap::from([(
            "normalize".to_string(),
            self.normalize.to_string(),
        )]);
        if let Some(pooling) = self.pooling {
            metadata.insert("pooling".into(), pooling.name().into());
        }
        let tensor = TensorBytes::f32("embeddings", vec![self.n, self.width], &self.values);
        write_safetensors(path, &[tensor], Some(metadata))
    }
}
