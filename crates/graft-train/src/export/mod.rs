//! Exporting a run as a folder the Python ecosystem loads as it is, one module per target format:
//! [`transformers`] (a sequence classifier), [`sentence_transformers`] (backbone, pooling and
//! `Dense` head modules), and [`vision`] (timm or torchvision state dicts). Which formats a run can
//! take is its architecture's word (graft-model's `Architecture::exports`); which one is used
//! follows the run's pooling: the pretrained pooler exports as transformers, other text pooling as
//! sentence-transformers, images as the architecture's vision library.
//!
//! The folder is built beside the destination and renamed into place, so an interrupted export
//! leaves the previous one intact.

mod onnx;
mod peft;
mod sentence_transformers;
mod transformers;
mod vision;

pub use sentence_transformers::write_modules as write_sentence_transformers_modules;

use std::path::Path;

use burn::tensor::Device;
use graft_model::{ExportFormat, ExportTarget};

use crate::error::{TrainError, TrainError as E};
use crate::files::{self, TensorBytes, copy_atomic, module_tensors};
use crate::modality::Preparation;
use crate::run_dir::{self, BACKBONE_FILES, LoadedRun, backbone_tensors};
use crate::task::Task;

/// Writes the export of the run in `run_dir` to `out` and says what layout it has. A LoRA run
/// exports as a PEFT adapter folder, or with `merge` as the plain folder with the adapters
/// folded into the weights. Something already at `out` is replaced only with `replace`.
pub fn export(
    run_dir: &Path,
    out: &Path,
    merge: bool,
    replace: bool,
) -> Result<String, TrainError> {
    check_destination(out, replace)?;
    #[allow(deprecated)]
    let device = Device::flex();
    let run = run_dir::load(run_dir, &device)?;
    if merge && run.manifest.lora.is_none() {
        return Err(E::Unsupported(format!(
            "{}: the run has no LoRA adapters to merge; export it without merging",
            run_dir.display()
        )));
    }
    let target = target_for(&run)?;
    let embedding = run.manifest.task == Task::Embedding;
    if run.manifest.pair_column.is_some()
        && !embedding
        && target.format == ExportFormat::SentenceTransformers
    {
        return Err(E::Unsupported(
            "a run on pairs of texts is a cross-encoder, which transformers loads as the \
             family's ...ForSequenceClassification (and sentence-transformers' CrossEncoder \
             from that folder): train it with [head] kind = \"native\" to export it so, or \
             export it as ONNX; the sentence-transformers layout encodes one text at a time"
                .into(),
        ));
    }
    let adapter = run.manifest.lora.is_some() && !merge;
    if adapter && run.manifest.task == Task::TokenClassification {
        return Err(E::Unsupported(
            "graft writes PEFT adapters for sequence classifiers; export this token \
             classifier's LoRA run merged instead"
                .into(),
        ));
    }
    if adapter && target.format != ExportFormat::Transformers {
        return Err(E::Unsupported(
            "a PEFT adapter for AutoModelForSequenceClassification classifies through the \
             family's own head ([head] kind = \"native\"); this run's head is graft's own: \
             export the merged model with --merge"
                .into(),
        ));
    }
    let staging = files::staging_dir(out, "export")?;
    let result = match target.format {
        ExportFormat::Transformers if adapter => peft::write(run_dir, &run, &target, &staging),
        ExportFormat::Transformers => transformers::write(run_dir, &run, &target, &staging),
        ExportFormat::SentenceTransformers => sentence_transformers::write(run_dir, &run, &staging),
        ExportFormat::Timm | ExportFormat::Torchvision => {
            vision::write(run_dir, &run, &target, &staging)
        }
    };
    match result {
        Ok(description) => {
            files::publish_dir(&staging, out)?;
            Ok(description)
        }
        Err(e) => {
            let _ = std::fs::remove_dir_all(&staging);
            Err(e)
        }
    }
}

/// The export format the run's head or pooling calls for, among those its architecture offers: a
/// native head exports as the family's transformers sequence classifier.
fn target_for(run: &LoadedRun) -> Result<ExportTarget, TrainError> {
    if run.manifest.task == Task::TokenClassification && run.manifest.head.native.is_none() {
        let token_head = run.folder.token_head()?.ok_or_else(|| {
            E::Unsupported(format!(
                "{} has no transformers token classifier graft writes",
                run.model.backbone.architecture().describe()
            ))
        })?;
        if token_head.transform.is_some() {
            return Err(E::Unsupported(format!(
                "transformers' {} puts its own layers before the classifier: train the run with \
                 [head] kind = \"native\" to export it",
                token_head.model
            )));
        }
        return Ok(ExportTarget {
            format: ExportFormat::Transformers,
            model: token_head.model,
            prefix: token_head.prefix,
            classifier: token_head.classifier,
            classifier_copies: Vec::new(),
        });
    }
    if let Some(native) = &run.manifest.head.native {
        return Ok(ExportTarget {
            format: ExportFormat::Transformers,
            model: native.model.clone(),
            prefix: native.prefix.clone(),
            classifier: native.classifier.clone(),
            classifier_copies: Vec::new(),
        });
    }
    let wanted: &[ExportFormat] = match &run.manifest.preparation {
        Preparation::Text {
            use_pooler: true, ..
        } => &[ExportFormat::Transformers],
        Preparation::Text { .. } => &[ExportFormat::SentenceTransformers],
        Preparation::Image { .. } => &[
            ExportFormat::Timm,
            ExportFormat::Torchvision,
            ExportFormat::Transformers,
        ],
    };
    let architecture = run.model.backbone.architecture();
    let at_size = run
        .manifest
        .preparation
        .image_transform()
        .and_then(|t| architecture.export_unavailable_at(t.image_size));
    if let Some(why) = architecture.export_unavailable().or(at_size) {
        return Err(E::Unsupported(format!(
            "{} has no export in timm's, torchvision's or transformers' layout: {why}; it \
             exports to ONNX",
            architecture.describe()
        )));
    }
    architecture
        .exports()
        .into_iter()
        .find(|t| wanted.contains(&t.format))
        .ok_or_else(|| {
            E::Unsupported(format!(
                "{} has no export layout for this run (its library's classifier reads other \
                 features than graft's head, or this pooling has none)",
                architecture.describe()
            ))
        })
}

/// Only a single linear layer maps onto the classifiers of transformers, timm and torchvision.
fn require_linear_head(run: &LoadedRun, layout: &str) -> Result<(), TrainError> {
    if run.model.head.layers.len() != 1 {
        return Err(E::Unsupported(format!(
            "{layout} classifiers are a single linear layer; train the run with [head] kind = \
             \"linear\" to export it"
        )));
    }
    Ok(())
}

/// The run's tensors in a target layout: the backbone in the format's names behind its prefix
/// (without a pooler the family's classifier does not have), the head as the format's classifier
/// (a native head's transform under its upstream names), `num_batches_tracked` for each BatchNorm.
fn classifier_tensors(
    run: &LoadedRun,
    target: &ExportTarget,
) -> Result<Vec<TensorBytes>, TrainError> {
    let backbone = &run.model.backbone;
    let architecture = backbone.architecture();
    let mut tensors = backbone_tensors(backbone, &target.prefix, |p| {
        architecture.export_name(target.format, p)
    })?;
    for tensor in &mut tensors {
        if let Some(shape) = architecture.export_shape(target.format, &tensor.name, &tensor.shape) {
            tensor.shape = shape;
        }
    }
    let token_classifier = run.manifest.task == Task::TokenClassification;
    if token_classifier
        || run
            .manifest
            .head
            .native
            .as_ref()
            .is_some_and(|n| !n.use_pooler)
    {
        let pooler = format!("{}pooler.", target.prefix);
        tensors.retain(|t| !t.name.starts_with(&pooler));
    }
    tensors.extend(head_tensors(run, target, "")?);
    Ok(tensors)
}

/// The head's tensors under `prefix` and the target's names: the single layer as its classifier,
/// a native transform under the family's names.
fn head_tensors(
    run: &LoadedRun,
    target: &ExportTarget,
    prefix: &str,
) -> Result<Vec<TensorBytes>, TrainError> {
    let transform = run
        .manifest
        .head
        .native
        .as_ref()
        .and_then(|n| n.transform.as_ref());
    let mut tensors = module_tensors(&run.model.head, |path| {
        if let Some(rest) = path.strip_prefix("layers.0.") {
            Some(format!("{prefix}{}.{rest}", target.classifier))
        } else {
            let inner = path.strip_prefix("transform.")?;
            transform.map(|spec| format!("{prefix}{}", spec.upstream_name(inner)))
        }
    })?;
    for copy in &target.classifier_copies {
        let head = format!("{prefix}{}.", target.classifier);
        let copies: Vec<TensorBytes> = tensors
            .iter()
            .filter_map(|t| {
                let rest = t.name.strip_prefix(&head)?;
                Some(TensorBytes {
                    name: format!("{prefix}{copy}.{rest}"),
                    ..t.clone()
                })
            })
            .collect();
        tensors.extend(copies);
    }
    Ok(tensors)
}

/// Something already at `out` is an error unless it is to be replaced.
fn check_destination(out: &Path, replace: bool) -> Result<(), TrainError> {
    let occupied =
        out.is_file() || std::fs::read_dir(out).is_ok_and(|mut entries| entries.next().is_some());
    if occupied && !replace {
        return Err(E::Occupied {
            path: out.to_path_buf(),
            holds: if run_dir::is_run(out) {
                "a graft run".into()
            } else {
                "files".into()
            },
            ways: "export to another folder, or replace it".into(),
        });
    }
    Ok(())
}

/// Writes the model at `path` (a run folder, a PEFT adapter or a pretrained folder) as an ONNX
/// folder at `out`; see [`onnx`].
pub fn export_onnx(path: &Path, out: &Path, replace: bool) -> Result<String, TrainError> {
    #[allow(deprecated)]
    let device = Device::flex();
    let model = crate::model::Model::open(path, &device)?;
    if model
        .task()
        .is_some_and(|t| t.task == Task::TokenClassification)
    {
        return Err(E::Unsupported(format!(
            "{}: ONNX export takes models with one output per input; a token classifier's is per \
             token (export it as transformers' ...ForTokenClassification instead)",
            path.display()
        )));
    }
    onnx::write(&model, out, replace)
}

/// transformers' `id2label` and `label2id` for `labels`, into a `config.json` object.
fn insert_label_maps(config: &mut serde_json::Map<String, serde_json::Value>, labels: &[String]) {
    use serde_json::{Value, json};
    let id2label = labels
        .iter()
        .enumerate()
        .map(|(i, l)| (i.to_string(), json!(l)))
        .collect();
    let label2id = labels
        .iter()
        .enumerate()
        .map(|(i, l)| (l.clone(), json!(i)))
        .collect();
    config.insert("id2label".into(), Value::Object(id2label));
    config.insert("label2id".into(), Value::Object(label2id));
}

/// Copies the tokenizer's files (and nothing else) from a model folder.
fn copy_tokenizer_files(dir: &Path, out: &Path) -> Result<(), TrainError> {
    for name in BACKBONE_FILES {
        let from = dir.join(name);
        if *name != "config.json" && *name != "preprocessor_config.json" && from.is_file() {
            copy_atomic(&from, &out.join(name))?;
        }
    }
    Ok(())
}

fn io(path: &Path) -> impl Fn(std::io::Error) -> TrainError + '_ {
    move |source| TrainError::Io {
        path: path.to_path_buf(),
        source,
    }
}

/// Copies the backbone's files (tokenizer, config) from the run folder.
fn copy_backbone_files(run_dir: &Path, out: &Path, skip_config: bool) -> Result<(), TrainError> {
    for name in BACKBONE_FILES {
        if skip_config && *name == "config.json" {
            continue;
        }
        let from = run_dir.join(name);
        if from.is_file() {
            copy_atomic(&from, &out.join(name))?;
        }
    }
    Ok(())
}
