//! Vision runs: an image backbone (EfficientNet-Lite, ResNet) with a new head, trained from an
//! image folder or a CSV/JSONL of image paths, and the run folder's evaluation, prediction,
//! embedding and export.
//!
//! The run folder holds `graft.json` (with `"modality": "image"`), the backbone's `config.json`
//! (at the trained input size), and `model.safetensors`: the backbone under its upstream names
//! (with `num_batches_tracked`, so PyTorch loads it strictly) plus `head.layers.N.*`.

use std::path::{Path, PathBuf};
use std::time::Instant;

use burn::module::Module;
use burn::store::{BurnToPyTorchAdapter, ModuleSnapshot};
use burn::tensor::{Device, Tensor, TensorData};
use graft_data::image::{Augment, Preprocess, load_rgb, read_image_folder, resolve_paths};
use graft_data::{DataFormat, LabelSet, TextExample, read_texts, train_valid_split};
use graft_model::WeightsIndex;
use graft_model::vision::{self, ResizeMode, VisionArchitecture, VisionBackbone, VisionConfig};
use image::RgbImage;
use rand::SeedableRng;
use rand::rngs::StdRng;
use serde::{Deserialize, Serialize};

use crate::backend::{self, SelectedDevice};
use crate::config::{Backend, CacheMode, Config, Format, Task};
use crate::files::{copy_atomic, write_atomic, write_json_atomic};
use crate::fit::{FitSpec, Split, fit};
use crate::freezing::{Describe, HeadOnly, VisionLayout};
use crate::head::{Head, HeadSpec};
use crate::loss::{Targets, TaskLoss};
use crate::metrics::Report;
use crate::progress::Progress;
use crate::tasks::{TrainOptions, TrainReport, report_of, rows, rows_of, task_loss_for};
use crate::{TrainError, TrainError as E};

/// A CNN backbone with a head grafted on.
#[derive(Module, Debug)]
pub struct ImageClassifier {
    pub backbone: VisionBackbone,
    pub head: Head,
}

impl ImageClassifier {
    pub fn forward(&self, images: Tensor<4>) -> Tensor<2> {
        self.head.forward(self.backbone.forward_features(images))
    }
}

/// What a vision run folder's `graft.json` holds.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct ImageRunManifest {
    pub graft_version: String,
    /// Always `image`.
    pub modality: String,
    pub task: String,
    pub architecture: String,
    pub labels: Vec<String>,
    pub head: HeadSpec,
    pub image_size: usize,
    pub backbone_source: PathBuf,
    pub image_column: Option<String>,
    pub label_column: String,
    pub best_epoch: Option<usize>,
}

/// Whether a run folder holds a vision run.
pub fn is_image_run(dir: &Path) -> bool {
    #[derive(Deserialize)]
    struct Modality {
        modality: Option<String>,
    }
    std::fs::read_to_string(dir.join(crate::run_dir::MANIFEST))
        .ok()
        .and_then(|t| serde_json::from_str::<Modality>(&t).ok())
        .and_then(|m| m.modality)
        .is_some_and(|m| m == "image")
}

/// Whether a model folder holds a vision model (its `config.json` names an architecture graft
/// knows as vision).
pub fn is_vision_folder(dir: &Path) -> bool {
    #[derive(Deserialize)]
    struct Arch {
        architecture: Option<String>,
    }
    std::fs::read_to_string(dir.join("config.json"))
        .ok()
        .and_then(|t| serde_json::from_str::<Arch>(&t).ok())
        .and_then(|a| a.architecture)
        .is_some_and(|a| a == "efficientnet_lite" || a == "resnet")
}

fn preprocess_of(config: &VisionConfig) -> Preprocess {
    Preprocess {
        image_size: config.image_size,
        resize_shorter: match config.resize {
            ResizeMode::Squash => None,
            ResizeMode::ShorterSideThenCenterCrop => {
                Some(config.resize_size.unwrap_or(config.image_size * 8 / 7))
            }
        },
        mean: config.mean,
        std: config.std,
    }
}

/// Decoded images, kept in memory for the whole run.
pub struct ImageSet {
    pub paths: Vec<PathBuf>,
    images: Vec<RgbImage>,
}

impl ImageSet {
    pub fn load(examples: &[TextExample]) -> Result<Self, TrainError> {
        let paths: Vec<PathBuf> = examples.iter().map(|e| PathBuf::from(&e.text)).collect();
        let images = paths
            .iter()
            .map(|p| load_rgb(p))
            .collect::<Result<Vec<_>, _>>()?;
        Ok(Self { paths, images })
    }

    pub fn len(&self) -> usize {
        self.images.len()
    }

    pub fn is_empty(&self) -> bool {
        self.images.is_empty()
    }

    /// A batch `[n, 3, size, size]`; with `augment`, example i of epoch e is transformed with a
    /// generator seeded from (seed, e, i), so a resumed run repeats it exactly.
    pub fn batch(
        &self,
        indices: &[usize],
        preprocess: &Preprocess,
        augment: Option<(&Augment, u64, usize)>,
        device: &Device,
    ) -> Tensor<4> {
        let size = preprocess.image_size;
        let mut values = Vec::with_capacity(indices.len() * 3 * size * size);
        for &i in indices {
            let image = &self.images[i];
            values.extend(match augment {
                Some((augment, seed, epoch)) => {
                    let mixed = seed
                        .wrapping_mul(0x9e3779b97f4a7c15)
                        .wrapping_add((epoch as u64) << 32)
                        .wrapping_add(i as u64);
                    preprocess.apply_augmented(image, augment, &mut StdRng::seed_from_u64(mixed))
                }
                None => preprocess.apply(image),
            });
        }
        Tensor::from_data(
            TensorData::new(values, [indices.len(), 3, size, size]),
            device,
        )
    }
}

/// Reads a split: an image folder, or a CSV/JSONL of image paths (relative to the file).
fn read_split(config: &Config, path: &Path) -> Result<Vec<TextExample>, TrainError> {
    let d = &config.data;
    Ok(match d.format {
        Format::ImageFolder => read_image_folder(path)?,
        Format::Csv | Format::Jsonl => {
            let format = if d.format == Format::Csv {
                DataFormat::Csv
            } else {
                DataFormat::Jsonl
            };
            let column = d.image_column.as_deref().unwrap_or("image");
            let mut examples = read_texts(path, format, column, Some(&d.label_column))?;
            resolve_paths(&mut examples, path);
            examples
        }
    })
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

/// Pooled backbone features of every image, in order, without gradients.
fn features_of(
    backbone: &VisionBackbone,
    images: &ImageSet,
    preprocess: &Preprocess,
    batch_size: usize,
    device: &Device,
    progress: &dyn Progress,
) -> Tensor<2> {
    let indices: Vec<usize> = (0..images.len()).collect();
    let chunks: Vec<Tensor<2>> = indices
        .chunks(batch_size)
        .map(|batch| {
            let features = backbone.forward_features(images.batch(batch, preprocess, None, device));
            progress.advance(batch.len());
            features
        })
        .collect();
    Tensor::cat(chunks, 0)
}

/// Opens the backbone folder at the config's input size, headless.
fn open_backbone(config: &Config) -> Result<VisionConfig, TrainError> {
    let dir = &config.model.backbone;
    let mut vision = VisionConfig::from_file(&dir.join("config.json"))?;
    if let Some(size) = config.model.image_size {
        vision.image_size = size;
    }
    Ok(vision)
}

fn load_backbone(
    config: &Config,
    vision_config: &VisionConfig,
    device: &Device,
) -> Result<VisionBackbone, TrainError> {
    let headless = VisionConfig {
        num_classes: 0,
        ..vision_config.clone()
    };
    let mut backbone = headless.init(device);
    vision::load_weights(
        &mut backbone,
        &config.model.backbone.join("model.safetensors"),
    )?;
    Ok(backbone)
}

/// What would train (see [`crate::plan`]), for a vision config.
pub fn plan(config: &Config) -> Result<crate::tasks::TrainPlan, TrainError> {
    #[allow(deprecated)]
    let device = Device::flex();
    let vision_config = open_backbone(config)?;
    let train = read_split(config, &config.data.train)?;
    let classes = match config.data.task {
        Task::Regression => 1,
        _ => LabelSet::from_examples(&train, &config.data.train)?.len(),
    };
    let backbone = load_backbone(config, &vision_config, &device)?;
    let head = HeadSpec::new(&config.head, backbone.feature_size(), classes)
        .init(config.train.seed, &device);
    let layout = VisionLayout::of(&backbone);
    let model = crate::freezing::stable_ids(ImageClassifier { backbone, head });
    let table = crate::freezing::ParamTable::of(&model, &layout);
    let n_train = match (&config.data.valid, config.data.valid_fraction) {
        (Some(_), _) => train.len(),
        (None, fraction) => {
            let (train_idx, _) =
                train_valid_split(train.len(), fraction.unwrap_or(0.1), config.train.seed);
            train_idx.len()
        }
    };
    let precompute = config.freeze.always_frozen()
        && !config.augment.is_active()
        && config.train.cache != CacheMode::Off;
    crate::tasks::plan_of(config, &table, n_train, precompute)
}

/// Trains an image classifier as `config` says (see [`crate::train`]).
pub fn train(
    config: &Config,
    options: &TrainOptions,
    progress: &dyn Progress,
) -> Result<TrainReport, TrainError> {
    let started = Instant::now();
    let SelectedDevice {
        device,
        description,
        ..
    } = backend::select(options.backend.unwrap_or(config.train.backend))?;
    progress.info(&format!("device: {description}"));
    device.seed(config.train.seed);
    let task = config.data.task;
    if task == Task::MultiLabel {
        return Err(E::Unsupported(
            "multi-label image data is not supported yet; use a text model or classification"
                .into(),
        ));
    }
    let vision_config = open_backbone(config)?;
    let preprocess = preprocess_of(&vision_config);
    let d = &config.data;

    // Data.
    let all_train = read_split(config, &d.train)?;
    let labels = match (&d.labels, task) {
        (_, Task::Regression) => vec![d.label_column.clone()],
        (Some(path), _) => LabelSet::from_file(path)?.names().to_vec(),
        (None, _) => LabelSet::from_examples(&all_train, &d.train)?
            .names()
            .to_vec(),
    };
    let (train_examples, valid_examples) = match &d.valid {
        Some(path) => (all_train, read_split(config, path)?),
        None => {
            let (train_idx, valid_idx) = train_valid_split(
                all_train.len(),
                d.valid_fraction.unwrap_or(0.1),
                config.train.seed,
            );
            let pick = |idx: &[usize]| idx.iter().map(|&i| all_train[i].clone()).collect();
            (pick(&train_idx), pick(&valid_idx))
        }
    };
    let encode = |examples: &[TextExample], source: &Path| -> Result<Targets, TrainError> {
        crate::tasks::encode_targets(task, &labels, &d.label_separator, examples, source)
    };
    let train_targets = encode(&train_examples, &d.train)?;
    let valid_targets = encode(&valid_examples, d.valid.as_deref().unwrap_or(&d.train))?;
    if let Targets::Classes(t) = &train_targets {
        LabelSet::new(labels.clone())
            .map_err(E::Unsupported)?
            .check_all_present(t, &d.train)?;
    }
    let test = match &d.test {
        Some(path) => {
            let examples = read_split(config, path)?;
            let targets = encode(&examples, path)?;
            Some((examples, targets))
        }
        None => None,
    };
    progress.info(&format!(
        "data: {} train, {} valid{} images at {}px; classes: {}",
        train_examples.len(),
        valid_examples.len(),
        test.as_ref()
            .map_or(String::new(), |(t, _)| format!(", {} test", t.len())),
        preprocess.image_size,
        labels.join(", ")
    ));
    progress.stage("decoding", 0);
    let train_images = ImageSet::load(&train_examples)?;
    let valid_images = ImageSet::load(&valid_examples)?;
    progress.finish_stage();

    let loss: TaskLoss = task_loss_for(config, &labels, &train_targets)?;
    let threshold = config.head.threshold;
    let metric_labels = labels.clone();
    let metric_targets = valid_targets.clone();
    let metrics = move |outputs: &[Vec<f32>]| {
        report_of(
            task,
            &metric_labels,
            threshold,
            outputs,
            &metric_targets,
            None,
        )
        .as_metrics()
    };
    let out = &config.output.dir;
    std::fs::create_dir_all(out).map_err(|source| E::Io {
        path: out.clone(),
        source,
    })?;
    let config_text = toml::to_string_pretty(config).expect("config serializes");
    let backbone = load_backbone(config, &vision_config, &device)?;
    let head_spec = HeadSpec::new(&config.head, backbone.feature_size(), labels.len());
    let train_device = device.clone().autodiff();
    let augment = augment_of(config);
    let eval_batch = config.train.eval_batch_size;
    let precompute =
        config.freeze.always_frozen() && augment.is_none() && config.train.cache != CacheMode::Off;
    progress.info(if config.freeze.train_batchnorm {
        "BatchNorm layers train inside frozen blocks (fastai's default): their weights and \
         running statistics change"
    } else {
        "frozen blocks keep their BatchNorm running statistics unchanged (inference mode)"
    });
    let layout = VisionLayout::of(&backbone);
    let describe: &dyn Describe = if precompute { &HeadOnly } else { &layout };
    let spec = FitSpec {
        train: &config.train,
        freeze: &config.freeze,
        loss: &loss,
        train_targets: &train_targets,
        valid_targets: &valid_targets,
        metrics: &metrics,
        describe,
        run_dir: out,
        lengths: None,
        config_text: config_text.clone(),
        resume: options.resume,
    };
    let mut feature_seconds = 0.0;
    let (model, history, best_epoch, stopped_early) = if precompute {
        progress.info("backbone frozen, no augmentation: features computed once");
        let t = Instant::now();
        progress.stage("features", train_images.len() + valid_images.len());
        let train_x = features_of(
            &backbone,
            &train_images,
            &preprocess,
            eval_batch,
            &device,
            progress,
        );
        let valid_x = features_of(
            &backbone,
            &valid_images,
            &preprocess,
            eval_batch,
            &device,
            progress,
        );
        progress.finish_stage();
        feature_seconds = t.elapsed().as_secs_f64();
        let outcome = fit(
            head_spec.init(config.train.seed, &train_device),
            |head, split, idx| match split {
                Split::Train { .. } => head.forward(rows(&train_x, idx, &device)),
                Split::Valid => head.forward(rows(&valid_x, idx, &device)),
            },
            &spec,
            &train_device,
            progress,
        )?;
        let model = ImageClassifier {
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
        let backbone = backbone.to_device(&train_device);
        let model = ImageClassifier {
            backbone,
            head: head_spec.init(config.train.seed, &train_device),
        };
        let seed = config.train.seed;
        let outcome = fit(
            model,
            |model, split, idx| match split {
                Split::Train { epoch } => model.forward(train_images.batch(
                    idx,
                    &preprocess,
                    augment.as_ref().map(|a| (a, seed, epoch)),
                    &train_device,
                )),
                Split::Valid => model.forward(valid_images.batch(idx, &preprocess, None, &device)),
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

    // Artifacts.
    let manifest = ImageRunManifest {
        graft_version: env!("CARGO_PKG_VERSION").into(),
        modality: "image".into(),
        task: task.name().into(),
        architecture: vision_config.name(),
        labels: labels.clone(),
        head: head_spec,
        image_size: vision_config.image_size,
        backbone_source: config.model.backbone.clone(),
        image_column: d.image_column.clone(),
        label_column: d.label_column.clone(),
        best_epoch: Some(best_epoch),
    };
    save_run(out, &manifest, &vision_config, &model)?;
    write_atomic(&out.join("config.toml"), config_text.as_bytes())?;
    let test = match test {
        Some((examples, targets)) => {
            let images = ImageSet::load(&examples)?;
            progress.stage("test", images.len());
            let outputs = classify(&model, &images, &preprocess, eval_batch, &device, progress);
            progress.finish_stage();
            let report = report_of(task, &labels, threshold, &outputs, &targets, None);
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
        cache: Default::default(),
        total_seconds: started.elapsed().as_secs_f64(),
    })
}

/// Raw outputs `[n][k]` of every image, in order.
fn classify(
    model: &ImageClassifier,
    images: &ImageSet,
    preprocess: &Preprocess,
    batch_size: usize,
    device: &Device,
    progress: &dyn Progress,
) -> Vec<Vec<f32>> {
    let model = model.valid();
    let features = features_of(
        &model.backbone,
        images,
        preprocess,
        batch_size,
        device,
        progress,
    );
    rows_of(model.head.forward(features))
}

/// The tensors of `module` in PyTorch layout under names from `rename`, plus `extra`, as one
/// safetensors file (atomic).
fn write_safetensors<M: Module>(
    module: &M,
    path: &Path,
    rename: impl Fn(&str) -> Option<String>,
    extra: Vec<(String, Vec<usize>, Vec<u8>, safetensors::Dtype)>,
) -> Result<(), TrainError> {
    let write_error = |message: String| E::Write {
        path: path.to_path_buf(),
        message,
    };
    let mut data: Vec<(String, Vec<usize>, Vec<u8>, safetensors::Dtype)> = Vec::new();
    for tensor in module.collect(None, Some(Box::new(BurnToPyTorchAdapter)), true) {
        let Some(name) = rename(&tensor.name) else {
            continue;
        };
        let bytes = tensor.to_bytes().map_err(|e| write_error(e.to_string()))?;
        data.push((
            name,
            tensor.shape.as_slice().to_vec(),
            bytes.to_vec(),
            safetensors::Dtype::F32,
        ));
    }
    data.extend(extra);
    let views: Vec<(String, safetensors::tensor::TensorView)> = data
        .iter()
        .map(|(name, shape, bytes, dtype)| {
            safetensors::tensor::TensorView::new(*dtype, shape.clone(), bytes)
                .map(|v| (name.clone(), v))
                .map_err(|e| write_error(format!("{name}: {e}")))
        })
        .collect::<Result<_, _>>()?;
    let bytes = safetensors::serialize(views, None).map_err(|e| write_error(e.to_string()))?;
    write_atomic(path, &bytes)
}

/// `num_batches_tracked` for every BatchNorm of the backbone (PyTorch's strict loading wants them).
fn batches_tracked(names: &[String]) -> Vec<(String, Vec<usize>, Vec<u8>, safetensors::Dtype)> {
    names
        .iter()
        .filter_map(|n| n.strip_suffix(".running_mean"))
        .map(|stem| {
            (
                format!("{stem}.num_batches_tracked"),
                vec![],
                0i64.to_le_bytes().to_vec(),
                safetensors::Dtype::I64,
            )
        })
        .collect()
}

fn backbone_name(backbone: &VisionBackbone, path: &str) -> Option<String> {
    let inner = path.strip_prefix("backbone.")?;
    Some(backbone.upstream_name(inner))
}

fn save_run(
    dir: &Path,
    manifest: &ImageRunManifest,
    vision_config: &VisionConfig,
    model: &ImageClassifier,
) -> Result<(), TrainError> {
    let headless = VisionConfig {
        num_classes: 0,
        ..vision_config.clone()
    };
    write_json_atomic(&dir.join("config.json"), &headless)?;
    let names: Vec<String> = model
        .backbone
        .collect(None, Some(Box::new(BurnToPyTorchAdapter)), true)
        .into_iter()
        .map(|t| model.backbone.upstream_name(&t.name))
        .collect();
    write_safetensors(
        model,
        &dir.join(crate::run_dir::WEIGHTS),
        |path| {
            if path.starts_with("head.") {
                Some(path.to_string())
            } else {
                backbone_name(&model.backbone, path)
            }
        },
        batches_tracked(&names),
    )?;
    write_json_atomic(&dir.join("labels.json"), &manifest.labels)?;
    write_json_atomic(&dir.join(crate::run_dir::MANIFEST), manifest)
}

/// A vision run folder loaded for inference.
pub struct LoadedImageRun {
    pub manifest: ImageRunManifest,
    pub config: VisionConfig,
    pub model: ImageClassifier,
}

fn read_manifest(dir: &Path) -> Result<ImageRunManifest, TrainError> {
    let path = dir.join(crate::run_dir::MANIFEST);
    let text = std::fs::read_to_string(&path).map_err(|source| E::Io {
        path: path.clone(),
        source,
    })?;
    serde_json::from_str(&text).map_err(|e| E::Config {
        path,
        message: e.to_string(),
    })
}

pub fn load_run(dir: &Path, device: &Device) -> Result<LoadedImageRun, TrainError> {
    let manifest = read_manifest(dir)?;
    let (config, backbone) = vision::load(dir, device)?;
    let weights_path = dir.join(crate::run_dir::WEIGHTS);
    let index = WeightsIndex::read(&weights_path)?;
    let head = crate::run_dir::load_head(&manifest.head, &weights_path, &index, device)?;
    Ok(LoadedImageRun {
        manifest,
        config,
        model: ImageClassifier { backbone, head },
    })
}

/// Images for `eval`, `predict` and `embed`: an image folder (labels from class folders), a
/// CSV/JSONL with an image column, one image file, or a text file listing image paths.
pub fn read_images(
    path: &Path,
    image_column: Option<&str>,
    label_column: Option<&str>,
) -> Result<Vec<TextExample>, TrainError> {
    if path.is_dir() {
        let has_class_folders = std::fs::read_dir(path)
            .map(|entries| entries.flatten().any(|e| e.path().is_dir()))
            .unwrap_or(false);
        if has_class_folders {
            return Ok(read_image_folder(path)?);
        }
        // A plain folder of images, in name order, without labels.
        let mut images: Vec<TextExample> = read_image_list(path)?;
        images.sort_by(|a, b| a.text.cmp(&b.text));
        return Ok(images);
    }
    let extension = path
        .extension()
        .and_then(|e| e.to_str())
        .map(str::to_ascii_lowercase);
    match extension.as_deref() {
        Some("png" | "jpg" | "jpeg") => Ok(vec![TextExample {
            text: path.to_string_lossy().to_string(),
            label: None,
            line: 0,
        }]),
        _ => {
            let format = DataFormat::from_extension(path);
            let column = image_column.unwrap_or("image");
            let mut examples = read_texts(path, format, column, label_column)?;
            resolve_paths(&mut examples, path);
            Ok(examples)
        }
    }
}

fn read_image_list(dir: &Path) -> Result<Vec<TextExample>, TrainError> {
    let entries = std::fs::read_dir(dir).map_err(|source| E::Io {
        path: dir.to_path_buf(),
        source,
    })?;
    let images: Vec<TextExample> = entries
        .flatten()
        .map(|e| e.path())
        .filter(|p| {
            p.extension()
                .and_then(|e| e.to_str())
                .is_some_and(|e| matches!(e.to_ascii_lowercase().as_str(), "png" | "jpg" | "jpeg"))
        })
        .map(|p| TextExample {
            text: p.to_string_lossy().to_string(),
            label: None,
            line: 0,
        })
        .collect();
    if images.is_empty() {
        return Err(E::Config {
            path: dir.to_path_buf(),
            message: "no images (.png, .jpg) in this folder".into(),
        });
    }
    Ok(images)
}

/// A run's manifest, the images it ran on, and its raw outputs for each.
struct RunOutputs {
    manifest: ImageRunManifest,
    examples: Vec<TextExample>,
    outputs: Vec<Vec<f32>>,
}

/// Loads a vision run and runs it on the images of `input`; with `label_column`, every image
/// must have a label (checked before any image is decoded).
fn run_on_images(
    run_dir: &Path,
    input: &Path,
    image_column: Option<&str>,
    label_column: Option<&str>,
    batch_size: usize,
    backend: Backend,
    progress: &dyn Progress,
) -> Result<RunOutputs, TrainError> {
    let selected = backend::select(backend)?;
    progress.info(&format!("device: {}", selected.description));
    let run = load_run(run_dir, &selected.device)?;
    let image_column = image_column.or(run.manifest.image_column.as_deref());
    let examples = read_images(input, image_column, label_column)?;
    if label_column.is_some() && examples.iter().any(|e| e.label.is_none()) {
        return Err(E::Config {
            path: input.to_path_buf(),
            message: "evaluation needs labels: an image folder or a CSV/JSONL with labels".into(),
        });
    }
    let images = ImageSet::load(&examples)?;
    progress.stage("running", images.len());
    let outputs = classify(
        &run.model,
        &images,
        &preprocess_of(&run.config),
        batch_size,
        &selected.device,
        progress,
    );
    progress.finish_stage();
    Ok(RunOutputs {
        manifest: run.manifest,
        examples,
        outputs,
    })
}

/// Scores a vision run on labelled images.
pub fn evaluate(
    run_dir: &Path,
    input: &Path,
    image_column: Option<&str>,
    label_column: Option<&str>,
    batch_size: usize,
    backend: Backend,
    progress: &dyn Progress,
) -> Result<Report, TrainError> {
    let manifest = read_manifest(run_dir)?;
    let label_column = label_column.unwrap_or(&manifest.label_column);
    let RunOutputs {
        manifest,
        examples,
        outputs,
    } = run_on_images(
        run_dir,
        input,
        image_column,
        Some(label_column),
        batch_size,
        backend,
        progress,
    )?;
    let task = crate::tasks::task_named(&manifest.task)?;
    let targets = crate::tasks::encode_targets(task, &manifest.labels, "|", &examples, input)?;
    Ok(report_of(
        task,
        &manifest.labels,
        0.5,
        &outputs,
        &targets,
        None,
    ))
}

/// A run's manifest, the image files, and the raw outputs for each.
pub type ImageOutputs = (ImageRunManifest, Vec<PathBuf>, Vec<Vec<f32>>);

/// Raw outputs of a vision run for images, with their paths.
pub fn predict_outputs(
    run_dir: &Path,
    input: &Path,
    image_column: Option<&str>,
    batch_size: usize,
    backend: Backend,
    progress: &dyn Progress,
) -> Result<ImageOutputs, TrainError> {
    let RunOutputs {
        manifest,
        examples,
        outputs,
    } = run_on_images(
        run_dir,
        input,
        image_column,
        None,
        batch_size,
        backend,
        progress,
    )?;
    let paths = examples
        .into_iter()
        .map(|e| PathBuf::from(e.text))
        .collect();
    Ok((manifest, paths, outputs))
}

/// Pooled features of images from a vision model folder, or the checkpoint classifier's logits
/// when `logits` is set (for a model folder with its own classes, such as ImageNet).
pub fn embed_images(
    model_dir: &Path,
    input: &Path,
    image_column: Option<&str>,
    logits: bool,
    batch_size: usize,
    backend: Backend,
    progress: &dyn Progress,
) -> Result<(Vec<PathBuf>, Tensor<2>), TrainError> {
    let selected = backend::select(backend)?;
    progress.info(&format!("device: {}", selected.description));
    let (config, backbone) = vision::load(model_dir, &selected.device)?;
    let classifier = match (logits, backbone.classifier()) {
        (false, _) => None,
        (true, Some(fc)) => Some(fc),
        (true, None) => {
            return Err(E::Config {
                path: model_dir.join("config.json"),
                message: "the model has no classifier (num_classes = 0)".into(),
            });
        }
    };
    let examples = read_images(input, image_column, None)?;
    let images = ImageSet::load(&examples)?;
    progress.stage("embedding", images.len());
    let features = features_of(
        &backbone,
        &images,
        &preprocess_of(&config),
        batch_size.max(1),
        &selected.device,
        progress,
    );
    progress.finish_stage();
    let output = match classifier {
        Some(fc) => fc.forward(features),
        None => features,
    };
    Ok((images.paths, output))
}

/// Exports a vision run in the upstream library's names with the new head as its classifier:
/// torchvision's (`fc`) for ResNet, timm's `tf_efficientnet_lite*` (`classifier`) for
/// EfficientNet-Lite. Only a linear head maps onto those classifiers. The folder is built beside
/// `out` and renamed into place.
pub fn export(run_dir: &Path, out: &Path) -> Result<String, TrainError> {
    let staging = crate::export::staging_dir(out)?;
    match write_export(run_dir, &staging) {
        Ok(layout) => {
            crate::export::publish(&staging, out)?;
            Ok(layout)
        }
        Err(e) => {
            let _ = std::fs::remove_dir_all(&staging);
            Err(e)
        }
    }
}

fn write_export(run_dir: &Path, out: &Path) -> Result<String, TrainError> {
    #[allow(deprecated)]
    let device = Device::flex();
    let run = load_run(run_dir, &device)?;
    if run.model.head.layers.len() != 1 {
        return Err(E::Unsupported(
            "torchvision and timm classifiers are a single linear layer; train the vision run \
             with [head] kind = \"linear\" to export it"
                .into(),
        ));
    }
    let (layout, classifier) = match run.config.architecture {
        VisionArchitecture::Resnet => ("torchvision", "fc"),
        VisionArchitecture::EfficientnetLite => ("timm", "classifier"),
    };
    let timm = TimmNames::of(&run.model.backbone);
    let rename = |path: &str| -> Option<String> {
        if let Some(rest) = path.strip_prefix("head.layers.0.") {
            return Some(format!("{classifier}.{rest}"));
        }
        let inner = path.strip_prefix("backbone.")?;
        Some(match run.config.architecture {
            VisionArchitecture::Resnet => graft_model::resnet::upstream_name(inner),
            VisionArchitecture::EfficientnetLite => timm.name(inner),
        })
    };
    let names: Vec<String> = run
        .model
        .backbone
        .collect(None, Some(Box::new(BurnToPyTorchAdapter)), true)
        .into_iter()
        .filter_map(|t| rename(&format!("backbone.{}", t.name)))
        .collect();
    std::fs::create_dir_all(out).map_err(|source| E::Io {
        path: out.to_path_buf(),
        source,
    })?;
    write_safetensors(
        &run.model,
        &out.join("model.safetensors"),
        rename,
        batches_tracked(&names),
    )?;
    // How to load it: the model to build, its classes and its preprocessing.
    let model_name = match run.config.architecture {
        VisionArchitecture::Resnet => format!(
            "torchvision.models.resnet{}(num_classes={})",
            run.config.depth.unwrap_or(0),
            run.manifest.labels.len()
        ),
        VisionArchitecture::EfficientnetLite => format!(
            "timm.create_model(\"tf_efficientnet_{}\", num_classes={})",
            run.config.variant.as_deref().unwrap_or("lite0"),
            run.manifest.labels.len()
        ),
    };
    write_json_atomic(
        &out.join("export.json"),
        &serde_json::json!({
            "layout": layout,
            "model": model_name,
            "labels": run.manifest.labels,
            "image_size": run.config.image_size,
            "mean": run.config.mean,
            "std": run.config.std,
            "resize": run.config.resize,
        }),
    )?;
    write_json_atomic(&out.join("labels.json"), &run.manifest.labels)?;
    copy_atomic(&run_dir.join("graft.json"), &out.join("graft.json"))?;
    Ok(format!(
        "{layout} ({} with {classifier})",
        run.config.name()
    ))
}

/// timm's `tf_efficientnet_lite*` names for this module tree: blocks grouped by stage, the first
/// stage a depthwise-separable block (`conv_dw`, `bn1`, `conv_pw`, `bn2`), the others inverted
/// residuals (`conv_pw`, `bn1`, `conv_dw`, `bn2`, `conv_pwl`, `bn3`).
struct TimmNames {
    /// (stage, index in stage) of each block.
    position: Vec<(usize, usize)>,
}

impl TimmNames {
    fn of(backbone: &VisionBackbone) -> Self {
        let layout = VisionLayout::of(backbone);
        let mut position = Vec::new();
        for (i, &stage) in layout.stage_of_block.iter().enumerate() {
            let index = if i > 0 && layout.stage_of_block[i - 1] == stage {
                position.last().map_or(0, |(_, j): &(usize, usize)| j + 1)
            } else {
                0
            };
            position.push((stage, index));
        }
        Self { position }
    }

    fn name(&self, path: &str) -> String {
        let segments: Vec<&str> = path.split('.').collect();
        let tail = |n: usize| segments[n..].join(".");
        match segments.as_slice() {
            ["conv_stem", ..] => format!("conv_stem.{}", tail(1)),
            ["bn0", ..] => format!("bn1.{}", tail(1)),
            ["conv_head", ..] => format!("conv_head.{}", tail(1)),
            ["bn1", ..] => format!("bn2.{}", tail(1)),
            ["blocks", i, part, ..] => {
                let (stage, index) = self.position[i.parse::<usize>().unwrap_or(0)];
                let separable = stage == 0;
                let renamed = match (*part, separable) {
                    ("depthwise_conv", true) => "conv_dw",
                    ("bn1", true) => "bn1",
                    ("project_conv", true) => "conv_pw",
                    ("bn2", true) => "bn2",
                    ("expand_conv", _) => "conv_pw",
                    ("bn0", _) => "bn1",
                    ("depthwise_conv", _) => "conv_dw",
                    ("bn1", _) => "bn2",
                    ("project_conv", _) => "conv_pwl",
                    ("bn2", _) => "bn3",
                    (other, _) => other,
                };
                format!("blocks.{stage}.{index}.{renamed}.{}", tail(3))
            }
            _ => path.to_string(),
        }
    }
}

/// A one-line description of a vision model folder or run, for `inspect`.
pub fn describe_folder(dir: &Path) -> Option<String> {
    let config = VisionConfig::from_file(&dir.join("config.json")).ok()?;
    Some(format!(
        "{} ({}px{})",
        config.name(),
        config.image_size,
        if config.num_classes > 0 {
            format!(", {} classes", config.num_classes)
        } else {
            String::new()
        }
    ))
}
